"""Pieces the model builders share: the attention switch, input-shape
checks, conv-BN-ReLU and the classifier head."""

from __future__ import annotations

import warnings

import keras

from keras_attn.utils import validation

# torchvision's BN settings (momentum 0.1 there is 0.9 in Keras terms)
BN = {"epsilon": 1e-5, "momentum": 0.9}


def warn_false_baseline(builder, argument="attention", stacklevel=3):
    """The `DeprecationWarning` for the old baseline spelling
    `{argument}=False`: every builder now takes `attention=None` for its
    no-attention baseline. `stacklevel=3` points at the builder's caller
    when this is called from the builder's body."""
    warnings.warn(
        f"{builder}: `{argument}=False` is deprecated; pass "
        "`attention=None` for the no-attention baseline of the same "
        "backbone.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def attention_switch(builder, attention):
    """Whether a builder with one kind of attention builds it.

    `True` (the builders' default) is the attention model, `None` its
    no-attention baseline of the same backbone. `False` still means the
    baseline, with a `DeprecationWarning` (pass `None`); anything else is
    the package's `ValueError` naming `builder`. Call it from the builder's
    body, so that the warning points at the builder's caller.

    Returns:
        `True` to build the attention, `False` for the baseline.
    """
    if attention is True:
        return True
    if attention is None:
        return False
    if attention is False:
        warn_false_baseline(builder, stacklevel=4)
        return False
    validation.fail(
        builder,
        "attention",
        attention,
        "True (the attention model, the default) or None (its "
        "no-attention baseline)",
    )


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
        validation.fail(builder, "input_shape", input_shape, allowed)
    height, width, channels = input_shape
    spatial_ok = all(d is None or _is_size(d) for d in (height, width))
    if not (spatial_ok and _is_size(channels)):
        validation.fail(builder, "input_shape", input_shape, allowed)
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


def conv_bn(x, filters, kernel_size, strides, name, relu=True, conv=None):
    """Conv, BN and optional ReLU, named `{name}_conv`, `{name}_bn` and
    `{name}_relu`. `conv(x, filters, strides, name)`, if given, replaces the
    plain convolution (how `aa_resnet` augments it)."""
    if conv is not None:
        x = conv(x, filters, strides, name)
    else:
        x = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"{name}_conv",
        )(x)
    x = keras.layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x
