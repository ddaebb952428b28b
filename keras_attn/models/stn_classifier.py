"""ST-CNN: a spatial transformer in front of a small CNN classifier.

Paper: Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer
Networks", NIPS 2015, https://arxiv.org/abs/1506.02025 (distorted MNIST
experiments, "ST-CNN" vs "CNN").

Layout: `SpatialTransformer` (affine, default conv localisation net, head
initialised to the identity) -> Conv 32 5x5 ReLU -> max-pool 2 -> Conv 64
5x5 ReLU -> max-pool 2 -> Flatten -> Dense 128 ReLU -> Dense `num_classes`
("logits") -> float32 softmax ("probabilities"). `transformer=False` gives the
baseline CNN: the same layers without the transformer.

Deviations, stated plainly: the paper's MNIST CNN widths, kernel sizes and
localisation nets differ per experiment (and are partly only described in
its appendix); the widths above are this package's choice, kept small. The
paper's projective and thin-plate-spline variants are not provided. Max-pools
use "same" padding so that odd sizes never shrink a map to zero. The
transformer's `theta` is computed with `return_theta=True` and left in the
graph, so `keras_attn.models.attention_model(model)` can expose it.
"""

from __future__ import annotations

import keras

from keras_attn.layers.spatial_transformer import SpatialTransformer
from keras_attn.utils.validation import fail

_NAME = "stn_classifier"


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_arguments(input_shape, num_classes, transformer, output_size):
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 3
        or not all(_is_size(v) for v in input_shape)
    ):
        fail(_NAME, "input_shape", input_shape,
             "(height, width, channels), all known ints >= 1, channels last")
    if not _is_size(num_classes):
        fail(_NAME, "num_classes", num_classes, "an integer >= 1")
    if not isinstance(transformer, bool):
        fail(_NAME, "transformer", transformer, "a bool (True or False)")
    if output_size is not None:
        if (
            not isinstance(output_size, (list, tuple))
            or len(output_size) != 2
            or not all(_is_size(v) for v in output_size)
        ):
            fail(_NAME, "output_size", output_size,
                 "None or (height, width), ints >= 1")
        if not transformer:
            fail(_NAME, "output_size", output_size,
                 "None when `transformer=False` (the baseline has no "
                 "transformer to resample with)")


def stn_classifier(input_shape, num_classes, transformer=True,
                   output_size=None):
    """Build the ST-CNN classifier of Jaderberg et al. (or its baseline).

    Args:
        input_shape: `(height, width, channels)`, channels last, all known.
        num_classes: integer >= 1, number of classes.
        transformer: `True` puts a `SpatialTransformer` (affine) in front of
            the CNN; `False` builds the baseline CNN alone.
        output_size: optional `(height, width)` of the transformer's output
            (the paper's down-sampling transformers); defaults to the input
            size. Only with `transformer=True`.

    Returns:
        A functional `keras.Model` mapping images to class probabilities
        (float32, output layer "probabilities"). With a transformer, the
        layer is named "spatial_transformer" and its `theta` `(B, 2, 3)` is
        its second output.

    Example:
    >>> import keras_attn
    >>> model = keras_attn.models.stn_classifier((28, 28, 1), 10)
    >>> model.output_shape
    (None, 10)
    """
    _check_arguments(input_shape, num_classes, transformer, output_size)
    inputs = keras.Input(tuple(input_shape))
    x = inputs
    if transformer:
        x, _ = SpatialTransformer(
            output_size=None if output_size is None else tuple(output_size),
            name="spatial_transformer",
        )(x, return_theta=True)
    for index, filters in enumerate((32, 64), start=1):
        x = keras.layers.Conv2D(
            filters, 5, padding="same", activation="relu",
            name=f"conv{index}",
        )(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{index}")(
            x
        )
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc")(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    outputs = keras.layers.Activation(
        "softmax", dtype="float32", name="probabilities"
    )(x)
    name = "st_cnn" if transformer else "cnn"
    return keras.Model(inputs, outputs, name=name)
