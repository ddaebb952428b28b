"""Squeeze-and-Excitation (SE) channel gating.

Paper: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks",
CVPR 2018 / TPAMI 2019, https://arxiv.org/abs/1709.01507

Follows the paper: global average pooling ("squeeze"), a two-layer
bottleneck MLP with ReLU and a sigmoid gate ("excitation"), and channel-wise
rescaling of the input. Differences from the paper, stated plainly:

- The bottleneck width is set by `ratio` (a fraction of the channels, as in
  timm / EfficientNet, default 0.25) unless an integer `reduction` (the
  paper's `r`, e.g. 16) is given; an explicit `reduction` wins. No rounding
  to a multiple of 8 (timm's `rd_divisor`) is applied.
- The MLP layers have biases by default (the paper's equations omit them,
  the official Caffe models and timm use them); `use_bias=False` drops them.
- The gate may be any Keras activation, e.g. `"hard_sigmoid"` as in
  MobileNetV3.
- Squeeze pooling and the gate run in float32 under mixed precision.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_attn.layers import _numerics
from keras_attn.utils import validation


def _serialize_activation(activation):
    # Strings and serialized dicts are JSON-ready; callables are not.
    if isinstance(activation, (str, dict)):
        return activation
    return keras.activations.serialize(activation)


@keras.saving.register_keras_serializable(package="keras_attn")
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-Excitation: gate every channel by a learned weight.

    [Hu et al., 2018](https://arxiv.org/abs/1709.01507) summarise each
    channel by global average pooling, `z = mean_{h,w} x`, feed the channel
    descriptor through a bottleneck MLP and a gate,
    `s = gate(W2 act(W1 z + b1) + b2)`, and rescale the input channel-wise,
    `y = x * s`. The bottleneck has `max(1, C // reduction)` units when
    `reduction` is given (it wins over `ratio`), else
    `max(1, round(C * ratio))` units (halves rounded up). Channels-last
    inputs only.

    Args:
        ratio: float > 0, bottleneck width as a fraction of the input
            channels. Ignored when `reduction` is given. Defaults to `0.25`.
        reduction: optional integer >= 1, the paper's reduction ratio `r`
            (bottleneck `C // r`). Takes precedence over `ratio`.
        activation: activation of the bottleneck layer (Keras name or
            callable). Defaults to `"relu"`.
        gate: gate activation, e.g. `"sigmoid"` (paper) or
            `"hard_sigmoid"`. Defaults to `"sigmoid"`.
        use_bias: whether the two MLP layers have biases.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.
        return_attention: if `True`, also return the channel gate.

    Returns:
        `y` of the input's shape, or `(y, gate)` with `return_attention=True`,
        `gate` of shape `(batch, channels)` in float32.

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> layer = keras_attn.layers.SqueezeExcite(reduction=16)
    >>> y, gate = layer(np.ones((2, 8, 8, 32)), return_attention=True)
    >>> tuple(y.shape), tuple(gate.shape)
    ((2, 8, 8, 32), (2, 32))

    Reference:
    - [Hu et al., 2018](https://arxiv.org/abs/1709.01507)
    """

    attention_kinds = ("channel",)

    def __init__(
        self,
        ratio=0.25,
        reduction=None,
        activation="relu",
        gate="sigmoid",
        use_bias=True,
        **kwargs,
    ):
        validation.check_positive_float(self, "ratio", ratio)
        if reduction is not None:
            validation.check_positive_int(self, "reduction", reduction)
        validation.check_activation(self, "activation", activation)
        validation.check_activation(self, "gate", gate)
        validation.check_bool(self, "use_bias", use_bias)
        super().__init__(**kwargs)
        self.ratio = ratio
        self.reduction = reduction
        self.activation = activation
        self.gate = gate
        self.use_bias = use_bias

    def bottleneck_units(self, channels):
        """Width of the bottleneck layer for `channels` input channels."""
        if self.reduction is not None:
            return max(1, channels // self.reduction)
        return max(1, int(math.floor(channels * self.ratio + 0.5)))

    def build(self, input_shape):
        channels = validation.check_image_shape(self, input_shape)
        units = self.bottleneck_units(channels)
        self.reduce = keras.layers.Dense(
            units,
            activation=self.activation,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name="reduce",
        )
        self.expand = keras.layers.Dense(
            channels,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name="expand",
        )
        self.reduce.build((input_shape[0], channels))
        self.expand.build((input_shape[0], units))

    def call(self, inputs, return_attention=False):
        # Pool in float32: a float16 sum over H*W can overflow.
        squeezed = ops.mean(ops.cast(inputs, "float32"), axis=(1, 2))  # (B, C)
        logits = self.expand(self.reduce(squeezed))  # (B, C)
        gate = _numerics.gate_f32(self.gate, logits)  # (B, C) float32
        scale = ops.cast(gate, inputs.dtype)[:, None, None, :]  # (B,1,1,C)
        outputs = inputs * scale
        if return_attention:
            return outputs, gate
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, return_attention=False):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention:
            return outputs
        gate = keras.KerasTensor(
            (inputs.shape[0], inputs.shape[-1]), dtype="float32"
        )
        return outputs, gate

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "ratio": self.ratio,
                "reduction": self.reduction,
                "activation": _serialize_activation(self.activation),
                "gate": _serialize_activation(self.gate),
                "use_bias": self.use_bias,
            }
        )
        return config
