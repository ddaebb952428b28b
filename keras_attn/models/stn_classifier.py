"""ST-CNN: a spatial transformer in front of a small CNN classifier.

Paper: Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer
Networks", NIPS 2015, https://arxiv.org/abs/1506.02025 (distorted MNIST
experiments, "ST-CNN" vs "CNN").

Layout: `SpatialTransformer` (affine, default conv localisation net, head
initialised to the identity) -> Conv 32 5x5 ReLU -> max-pool 2 -> Conv 64
5x5 ReLU -> max-pool 2 -> Flatten -> Dense 128 ReLU -> Dense `num_classes`
("logits") -> float32 softmax ("probabilities"). `attention=None` gives the
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

import warnings

import keras

from keras_attn.layers.spatial_transformer import SpatialTransformer
from keras_attn.models._common import attention_switch
from keras_attn.utils.validation import fail

_NAME = "stn_classifier"
# `transformer=` is the old name of `attention=`; a sentinel tells "not
# passed" from any value.
_NOT_PASSED = object()


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_arguments(input_shape, num_classes, attention, output_size):
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 3
        or not all(_is_size(v) for v in input_shape)
    ):
        fail(_NAME, "input_shape", input_shape,
             "(height, width, channels), all known ints >= 1, channels last")
    if not _is_size(num_classes):
        fail(_NAME, "num_classes", num_classes, "an integer >= 1")
    if output_size is not None:
        if (
            not isinstance(output_size, (list, tuple))
            or len(output_size) != 2
            or not all(_is_size(v) for v in output_size)
        ):
            fail(_NAME, "output_size", output_size,
                 "None or (height, width), ints >= 1")
        if not attention:
            fail(_NAME, "output_size", output_size,
                 "None when `attention=None` (the baseline has no "
                 "transformer to resample with)")


def _resolve_transformer(attention, transformer):
    """`attention` from the deprecated `transformer=` spelling, which
    warns; called from `stn_classifier`'s body (the warning's stacklevel
    points at its caller)."""
    if transformer is _NOT_PASSED:
        return attention
    if attention is not True:
        fail(_NAME, "transformer", transformer,
             "no value when `attention` is given: `transformer=` is the "
             "deprecated name of `attention=`; pass `attention` only")
    if not isinstance(transformer, bool):
        fail(_NAME, "transformer", transformer,
             "True or False (deprecated: pass `attention=True` or "
             "`attention=None`)")
    warnings.warn(
        f"{_NAME}: `transformer=` is deprecated; pass `attention=None` for "
        "the baseline CNN (`attention=True`, the default, is the ST-CNN).",
        DeprecationWarning,
        stacklevel=3,
    )
    return True if transformer else None


def stn_classifier(input_shape, num_classes, attention=True,
                   output_size=None, *, transformer=_NOT_PASSED):
    """Build the ST-CNN classifier of Jaderberg et al. (or its baseline).

    Args:
        input_shape: `(height, width, channels)`, channels last, all known.
        num_classes: integer >= 1, number of classes.
        attention: `True` (the default) puts a `SpatialTransformer`
            (affine) in front of the CNN; `None` builds the baseline CNN
            alone. `False` still means the baseline but is deprecated (a
            `DeprecationWarning`).
        output_size: optional `(height, width)` of the transformer's output
            (the paper's down-sampling transformers); defaults to the input
            size. Only with `attention=True`.
        transformer: deprecated name of `attention` (`True` or `False`),
            with a `DeprecationWarning`; pass `attention` instead.

    Returns:
        A functional `keras.Model` mapping images to class probabilities
        (float32, output layer "probabilities"). With a transformer, the
        layer is named "spatial_transformer" and its `theta` `(B, 2, 3)` is
        its second output.

    Raises:
        ValueError: on an invalid argument; the message names
            `stn_classifier`, the argument and the allowed values.

    Example:
    >>> import keras_attn
    >>> model = keras_attn.models.stn_classifier((28, 28, 1), 10)
    >>> model.output_shape
    (None, 10)
    """
    attention = attention_switch(
        _NAME, _resolve_transformer(attention, transformer)
    )
    _check_arguments(input_shape, num_classes, attention, output_size)
    inputs = keras.Input(tuple(input_shape))
    x = inputs
    if attention:
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
    name = "st_cnn" if attention else "cnn"
    return keras.Model(inputs, outputs, name=name)
