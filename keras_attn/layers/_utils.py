"""Helpers shared by the attention layers: argument checks and numerics.

Every check raises a `ValueError` that names the layer, the argument, what
was received and what is allowed, so users see the fix instead of a backend
trace. The numerics helpers compute gates and softmaxes in float32 even under
a `mixed_float16` policy, because float16 `exp` overflows at logits above ~11.
"""

from __future__ import annotations

import keras
from keras import ops


def fail(layer, argument, received, allowed):
    """Raise the package's standard `ValueError` for a bad argument."""
    name = layer if isinstance(layer, str) else type(layer).__name__
    raise ValueError(
        f"{name}: invalid `{argument}`; expected {allowed}. "
        f"Received: {argument}={received!r}"
    )


def check_positive_int(layer, argument, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(layer, argument, value, f"an integer >= {minimum}")
    return value


def check_positive_float(layer, argument, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(layer, argument, value, "a number > 0")
    if not value > 0:
        fail(layer, argument, value, "a number > 0")
    return float(value)


def check_bool(layer, argument, value):
    if not isinstance(value, bool):
        fail(layer, argument, value, "a bool (True or False)")
    return value


def check_odd_kernel(layer, argument, value):
    """Odd sizes keep `padding="same"` symmetric, so maps stay aligned."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(layer, argument, value, "an odd integer >= 1")
    if value % 2 == 0:
        fail(
            layer,
            argument,
            value,
            f"an odd integer >= 1 (e.g. {value + 1}) so that 'same' "
            "padding stays centred",
        )
    return value


def check_choice(layer, argument, value, choices):
    if value not in choices:
        fail(layer, argument, value, f"one of {list(choices)}")
    return value


def check_image_shape(layer, input_shape, argument="inputs"):
    """Check a channels-last image shape `(B, H, W, C)`; return C."""
    shape = tuple(input_shape)
    if len(shape) != 4:
        fail(
            layer,
            f"{argument} shape",
            shape,
            "rank 4 (batch, height, width, channels), channels last",
        )
    if shape[-1] is None:
        fail(
            layer,
            f"{argument} shape",
            shape,
            "a known channel dimension (the last axis must not be None)",
        )
    return int(shape[-1])


def check_activation(layer, argument, value):
    try:
        keras.activations.get(value)
    except (ValueError, TypeError):
        fail(layer, argument, value, "a Keras activation name or callable")
    return value


def sigmoid_f32(logits):
    """Sigmoid in float32: the gate keeps full precision under mixed float16."""
    return ops.sigmoid(ops.cast(logits, "float32"))


def gate_f32(activation, logits):
    """Apply a gate activation to float32 logits."""
    return keras.activations.get(activation)(ops.cast(logits, "float32"))


def spatial_softmax_f32(logits):
    """Softmax over all positions of `(B, H, W)` logits, in float32.

    Subtracting the per-image maximum (done by `ops.softmax`) keeps large
    logits finite; the result sums to one over space for every image.
    """
    logits = ops.cast(logits, "float32")
    shape = ops.shape(logits)
    flat = ops.reshape(logits, (shape[0], -1))  # (B, H*W)
    return ops.reshape(ops.softmax(flat, axis=-1), shape)
