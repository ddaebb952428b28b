"""Stand-alone self-attention ResNet on Fashion-MNIST (Ramachandran et al.,
NeurIPS 2019).

SASA-ResNet-26: every 3x3 conv of the bottleneck blocks is k x k local
self-attention with relative embeddings; `--stem attention` also replaces
the stem (`--no-attention`: the conv ResNet-26). `--width` scales the
channel counts (the paper's network is `--width 1`).

    python -m recipes.sasa_resnet --kernel-size 7 --width 0.25
"""

import keras

from . import common

# Measured, not assumed: see benchmarks/results/models.json.
JIT = False
JIT_NOTE = (
    "47.6 vs 68.3 training images/s with and without XLA (python -m "
    "benchmarks.models --steps 5 --rounds 3, idle 2-core CPU)"
)


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], jit=JIT, jit_note=JIT_NOTE)
    p.add_argument("--depth", type=int, default=26, choices=(26, 50))
    p.add_argument("--stem", default="conv", choices=("conv", "attention"))
    p.add_argument("--kernel-size", type=int, default=7)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--width", type=float, default=0.25)
    return p.parse_args(argv)


def builder(args):
    """`build(input_shape, num_classes)` of the model `args` ask for."""
    from keras_attn.models import sasa_resnet

    def build(input_shape, num_classes):
        return sasa_resnet(
            input_shape, num_classes, depth=args.depth, stem=args.stem,
            attention=True if args.attention else None,
            kernel_size=args.kernel_size,
            num_heads=args.heads, width=args.width,
        )

    return build


def main(argv=None):
    args = parse_args(argv)
    name = "sasa_resnet" if args.attention else "sasa_resnet_baseline"
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
