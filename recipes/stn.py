"""Spatial transformer classifier on Fashion-MNIST (Jaderberg et al., NIPS
2015).

The paper's ST-CNN: an affine spatial transformer in front of a small CNN
(`--no-attention`: the CNN alone). Draws input / warped-input pairs
(`stn.png`) for the fixed test images.

    python -m recipes.stn --epochs 2
"""

import os

import keras

from . import common


def _warped_pictures(model, images, labels, out):
    from keras_attn.viz import plot_stn

    try:
        layer = model.get_layer("spatial_transformer")
    except ValueError:
        return []
    # The transformer reads the model input directly (see stn_classifier).
    warped = keras.ops.convert_to_numpy(layer(images))
    path = os.path.join(out, "stn.png")
    plot_stn(images, warped, path=path)
    return [path]


# Measured, not assumed: see benchmarks/results/models.json.
JIT = False
JIT_NOTE = (
    "1,242 vs 1,969 training images/s with and without XLA (python -m "
    "benchmarks.models --steps 5 --rounds 3, idle 2-core CPU)"
)


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], jit=JIT, jit_note=JIT_NOTE)
    return p.parse_args(argv)


def builder(args):
    """`build(input_shape, num_classes)` of the model `args` ask for."""
    from keras_attn.models import stn_classifier

    def build(input_shape, num_classes):
        return stn_classifier(input_shape, num_classes,
                              attention=True if args.attention else None)

    return build


def main(argv=None):
    args = parse_args(argv)
    name = "stn" if args.attention else "stn_baseline"
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
    return common.write_outputs(run, model, history, scores,
                                pictures=_warped_pictures)


if __name__ == "__main__":
    main()
