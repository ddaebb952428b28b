"""SE-ResNet on Fashion-MNIST (Hu et al., CVPR 2018).

A CIFAR-style ResNet with a squeeze-and-excitation block on every residual
branch (`--no-attention`: the same ResNet without it).

    python -m recipes.se_resnet --depth 20 --reduction 16
"""

import keras

from . import common

# Measured, not assumed: see benchmarks/results/models.json.
JIT = False
JIT_NOTE = (
    "434.8 vs 515.0 training images/s with and without XLA (python -m "
    "benchmarks.models --steps 5 --rounds 3, idle 2-core CPU)"
)


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], jit=JIT, jit_note=JIT_NOTE)
    p.add_argument("--depth", type=int, default=20, help="6n+2: 20, 32, 56")
    p.add_argument("--reduction", type=int, default=16)
    return p.parse_args(argv)


def builder(args):
    """`build(input_shape, num_classes)` of the model `args` ask for."""
    from keras_attn.models import resnet

    def build(input_shape, num_classes):
        return resnet(input_shape, num_classes, args.depth,
                      attention="se" if args.attention else None,
                      attention_kwargs={"reduction": args.reduction})

    return build


def main(argv=None):
    args = parse_args(argv)
    name = "se_resnet" if args.attention else "se_resnet_baseline"
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
