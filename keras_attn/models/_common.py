"""Pieces every model builder shares: input-shape checks and the head."""

from __future__ import annotations

import keras

from keras_attn.layers import _utils


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_input_shape(builder, input_shape):
    """A channels-last `(height, width, channels)` with known channels;
    height and width may be `None`. Returns it as a tuple."""
    allowed = (
        "a tuple (height, width, channels), channels last, with a known "
        "channel count and positive (or None) height and width"
    )
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        _utils.fail(builder, "input_shape", input_shape, allowed)
    height, width, channels = input_shape
    spatial_ok = all(d is None or _is_size(d) for d in (height, width))
    if not (spatial_ok and _is_size(channels)):
        _utils.fail(builder, "input_shape", input_shape, allowed)
    return tuple(input_shape)


def pooled_classifier(x, num_classes, pool_name="avg_pool"):
    """Global average pooling, `Dense` logits named `logits`, and a float32
    softmax named `probabilities` (float32 so mixed-precision models still
    return probabilities that sum to one)."""
    x = keras.layers.GlobalAveragePooling2D(name=pool_name)(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.layers.Activation(
        "softmax", dtype="float32", name="probabilities"
    )(x)
