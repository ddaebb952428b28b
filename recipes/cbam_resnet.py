"""CBAM-ResNet on Fashion-MNIST (Woo et al., ECCV 2018).

Trains a CIFAR-style ResNet with a CBAM block on every residual branch (or,
with `--no-attention`, the same ResNet without it), evaluates on the test
split, draws the CBAM spatial maps beside Grad-CAM, and exports SavedModel +
TFLite (builtin ops) under `--output-dir/cbam_resnet[_baseline]/`.

    python -m recipes.cbam_resnet                 # default: 1 epoch, 60k images
    python -m recipes.cbam_resnet --no-attention  # the baseline
"""

import keras

from . import common

# Measured, not assumed: see benchmarks/results/models.json.
JIT = False
JIT_NOTE = (
    "410.5 vs 527.7 training images/s with and without XLA (python -m "
    "benchmarks.models --steps 5 --rounds 3, idle 2-core CPU)"
    "; XLA also fails under --strategy mirrored, which the main job's "
    "tests exercise"
)


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], jit=JIT, jit_note=JIT_NOTE)
    p.add_argument("--depth", type=int, default=20, help="6n+2: 20, 32, 56")
    return p.parse_args(argv)


def builder(args):
    """`build(input_shape, num_classes)` of the model `args` ask for."""
    from keras_attn.models import resnet

    def build(input_shape, num_classes):
        return resnet(input_shape, num_classes, args.depth,
                      attention="cbam" if args.attention else None)

    return build


def main(argv=None):
    args = parse_args(argv)
    name = "cbam_resnet" if args.attention else "cbam_resnet_baseline"
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
    # The last block's output and its CBAM spatial map (`_2`), 7x7 on 28x28.
    last = "stage3_block3"
    pictures = common.grad_cam_pictures(f"{last}_out", f"{last}_cbam_2")
    return common.write_outputs(run, model, history, scores, pictures=pictures)


if __name__ == "__main__":
    main()
