"""Attention-augmented Wide ResNet on Fashion-MNIST (Bello et al., ICCV 2019).

AA-WRN: the first conv of every block is an `AttentionAugmentedConv2D`
with 2D relative logits (`--no-attention`: the plain WRN). The paper's
CIFAR network is WRN-28-10; the default here is WRN-10-2 with 4 heads,
sized for a CPU.

    python -m recipes.aa_resnet --depth 28 --width 10 --heads 8
"""

import keras

from . import common

# Measured, not assumed: see benchmarks/results/models.json.
JIT = False
JIT_NOTE = (
    "59.5 vs 80.3 training images/s with and without XLA (python -m "
    "benchmarks.models --steps 5 --rounds 3, idle 2-core CPU)"
)


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], jit=JIT, jit_note=JIT_NOTE)
    p.add_argument("--depth", type=int, default=10, help="6n+4")
    p.add_argument("--width", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--min-key-dims-per-head", type=int, default=8)
    return p.parse_args(argv)


def builder(args):
    """`build(input_shape, num_classes)` of the model `args` ask for."""
    from keras_attn.models import aa_wide_resnet

    def build(input_shape, num_classes):
        return aa_wide_resnet(
            input_shape, num_classes, depth=args.depth, width=args.width,
            attention=True if args.attention else None,
            num_heads=args.heads,
            min_key_dims_per_head=args.min_key_dims_per_head,
        )

    return build


def main(argv=None):
    args = parse_args(argv)
    name = "aa_wrn" if args.attention else "aa_wrn_baseline"
    # Seed, mixed precision, strategy, run folder, data (validation held
    # out of the training split) and callbacks.
    run = common.setup(args, name)

    with run.scope():
        model = builder(args)(run.input_shape, run.num_classes)
        model.compile(
            optimizer=keras.optimizers.Adam(args.lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=common.jit_compile(args),
        )
    common.prepare_fit(model, run)

    history = model.fit(
        run.train,
        validation_data=run.val,
        epochs=args.epochs,
        steps_per_epoch=run.steps_per_epoch,
        callbacks=run.callbacks,
        shuffle=False,  # the data pipeline shuffles, every epoch anew
    )
    scores = model.evaluate(run.test, return_dict=True)
    return common.write_outputs(run, model, history, scores)


if __name__ == "__main__":
    main()
