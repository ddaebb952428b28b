"""CBAM: Convolutional Block Attention Module.

Paper: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module",
ECCV 2018, https://arxiv.org/abs/1807.06521

This module follows the paper's equations, not the official code
(Jongchan/attention-module), where the two differ:

- Spatial descriptor order is `[avg, max]` (paper Eq. 3:
  `[AvgPool(F); MaxPool(F)]`). The official code concatenates
  `[max, mean]`; with learned weights the order is only a relabelling of the
  two conv input channels, but it matters when porting weights.
- The spatial 7x7 conv is followed directly by the sigmoid, as in the paper.
  The official code adds BatchNorm (no conv bias) before the sigmoid; here
  the conv has a bias and there is no BatchNorm.
- The channel MLP uses biases (as the official `nn.Linear`); the shared MLP
  is applied to both pooled descriptors, so the output bias is counted twice
  exactly as in `mlp(avg) + mlp(max)` of the official code.

Channel then spatial attention in sequence (the paper's best ordering).
Pooling and sigmoids run in float32 under mixed precision.

Speed. The spatial branch's `kernel_size` conv has two input channels and one
output channel, a shape TensorFlow's CPU conv kernels serve badly: at
`(32, 32, 32, 64)` on 2 CPU threads that one conv took about 14 of CBAM's
26 ms forward and 42 of its 104 ms forward+backward, and depthwise or
per-channel convs were slower still. When the spatial size is known when the
layer is traced and at most `_BANDED_MAX_SIZE`, the conv is computed instead
as two matrix products with the same kernel and bias (see `_banded_conv`): a
banded `(2W, kW)` matrix built from the kernel applies every horizontal
tap, a constant 0/1 `(H, kH)` matrix shifts and sums the `k` rows. That
spends `O(W + H)` multiply-adds per pixel instead of `2k^2`, but a dense
matmul runs far closer to the CPU's peak than this conv does: about 3 / 8 ms
instead of 14 / 42 ms at the size above (XLA gains too). Larger or unknown
spatial sizes keep the conv. The channel MLP runs once on the stacked
`[avg; max]` descriptors instead of twice. Same weights, same names and
shapes, same function up to float rounding.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from keras_attn.layers import _numerics
from keras_attn.utils import validation

# Largest height and width for which `SpatialAttention` replaces its conv by
# banded matrix products. Their cost per pixel grows with the size (the conv's
# does not): on 2 CPU threads with TensorFlow they were still ahead forward
# and backward at 160x160, behind forward (ahead forward+backward) at 224.
_BANDED_MAX_SIZE = 160


@functools.lru_cache(maxsize=64)
def _shift_bands(size, kernel_size):
    """`(k, size, size)` 0/1 array, `[j, i_in, i_out] = 1` iff
    `i_in == i_out + j - k // 2` (zero rows/columns are the "same" padding).
    """
    bands = np.zeros((kernel_size, size, size), "float32")
    out = np.arange(size)
    for j in range(kernel_size):
        src = out + j - kernel_size // 2
        inside = (src >= 0) & (src < size)
        bands[j, src[inside], out[inside]] = 1.0
    return bands


@functools.lru_cache(maxsize=64)
def _row_sum_matrix(height, kernel_size):
    """`(H, H*k)` 0/1 matrix; times `(B, H*k, W)` rows `(h', i)` gives
    `out[h] = sum_i rows[h + i - k // 2, i]` (the vertical taps)."""
    bands = _shift_bands(height, kernel_size)  # [i, h', h]
    return np.ascontiguousarray(
        np.transpose(bands, (2, 1, 0)).reshape(height, height * kernel_size)
    )


@keras.saving.register_keras_serializable(package="keras_attn")
class ChannelAttention(keras.layers.Layer):
    """CBAM channel attention: a shared MLP on average- and max-pooled maps.

    [Woo et al., 2018](https://arxiv.org/abs/1807.06521), Eq. 2:
    `Mc = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))` with the shared
    `MLP(z) = W1 relu(W0 z + b0) + b1`, `W0: C -> max(1, C // reduction)`,
    `W1: -> C`; the output is `y = x * Mc` broadcast over space.
    Channels-last inputs only.

    Args:
        reduction: integer >= 1, MLP reduction ratio `r`. Defaults to `16`.
        use_bias: whether the MLP layers have biases. Defaults to `True`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.
        return_attention: if `True`, also return the channel map `Mc`.

    Returns:
        `y` of the input's shape, or `(y, Mc)` with `return_attention=True`,
        `Mc` of shape `(batch, channels)` in float32.

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> layer = keras_attn.layers.ChannelAttention(reduction=4)
    >>> y, mc = layer(np.ones((2, 8, 8, 16)), return_attention=True)
    >>> tuple(y.shape), tuple(mc.shape)
    ((2, 8, 8, 16), (2, 16))

    Reference:
    - [Woo et al., 2018](https://arxiv.org/abs/1807.06521)
    """

    attention_kinds = ("channel",)

    def __init__(self, reduction=16, use_bias=True, **kwargs):
        validation.check_positive_int(self, "reduction", reduction)
        validation.check_bool(self, "use_bias", use_bias)
        super().__init__(**kwargs)
        self.reduction = reduction
        self.use_bias = use_bias

    def build(self, input_shape):
        channels = validation.check_image_shape(self, input_shape)
        hidden = max(1, channels // self.reduction)
        self.mlp_hidden = keras.layers.Dense(
            hidden,
            activation="relu",
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name="mlp_hidden",
        )
        self.mlp_output = keras.layers.Dense(
            channels,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name="mlp_output",
        )
        self.mlp_hidden.build((input_shape[0], channels))
        self.mlp_output.build((input_shape[0], hidden))

    def _mlp(self, descriptor):
        return self.mlp_output(self.mlp_hidden(descriptor))

    def call(self, inputs, return_attention=False):
        # Pool in float32: a float16 sum over H*W can overflow.
        x32 = ops.cast(inputs, "float32")
        avg = ops.mean(x32, axis=(1, 2))  # (B, C)
        mx = ops.max(x32, axis=(1, 2))  # (B, C)
        # One pass of the shared MLP over both descriptors halves its op
        # count (forward and backward); the sum stays MLP(avg) + MLP(max).
        both = ops.cast(self._mlp(ops.stack([avg, mx])), "float32")
        logits = both[0] + both[1]  # (B, C)
        channel_map = _numerics.sigmoid_f32(logits)  # (B, C) float32
        scale = ops.cast(channel_map, inputs.dtype)[:, None, None, :]
        outputs = inputs * scale
        if return_attention:
            return outputs, channel_map
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, return_attention=False):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention:
            return outputs
        channel_map = keras.KerasTensor(
            (inputs.shape[0], inputs.shape[-1]), dtype="float32"
        )
        return outputs, channel_map

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction, "use_bias": self.use_bias})
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class SpatialAttention(keras.layers.Layer):
    """CBAM spatial attention: a conv over channel-pooled average/max maps.

    [Woo et al., 2018](https://arxiv.org/abs/1807.06521), Eq. 3:
    `Ms = sigmoid(conv_kxk([AvgPool_c(x); MaxPool_c(x)]))`, where the two
    channel-pooled maps are stacked in the order `[avg, max]` and the conv has
    one filter and `"same"` padding; the output is `y = x * Ms` broadcast over
    channels. No BatchNorm (see the module docstring). Channels-last inputs
    only; any spatial size.

    Args:
        kernel_size: odd integer >= 1, size of the square conv kernel.
            Defaults to `7` (the paper's best).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.
        return_attention: if `True`, also return the spatial map `Ms`.

    Returns:
        `y` of the input's shape, or `(y, Ms)` with `return_attention=True`,
        `Ms` of shape `(batch, height, width)` in float32.

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> layer = keras_attn.layers.SpatialAttention(kernel_size=7)
    >>> y, ms = layer(np.ones((2, 8, 8, 16)), return_attention=True)
    >>> tuple(y.shape), tuple(ms.shape)
    ((2, 8, 8, 16), (2, 8, 8))

    Reference:
    - [Woo et al., 2018](https://arxiv.org/abs/1807.06521)
    """

    attention_kinds = ("spatial",)

    def __init__(self, kernel_size=7, **kwargs):
        validation.check_odd_kernel(self, "kernel_size", kernel_size)
        super().__init__(**kwargs)
        self.kernel_size = kernel_size

    def build(self, input_shape):
        validation.check_image_shape(self, input_shape)
        self.conv = keras.layers.Conv2D(
            1,
            self.kernel_size,
            padding="same",
            dtype=self.dtype_policy,
            name="conv",
        )
        self.conv.build((*tuple(input_shape)[:3], 2))

    def _banded_conv(self, avg, mx, height, width):
        """`self.conv([avg, mx])[..., 0]` as two matmuls, `(B, H, W)` maps.

        Horizontal taps: `rows[b, h, i, w] = sum_{c, j} d[b, h, w + j - p, c]
        kernel[i, j, c]` is `[avg | max] (B, H, 2W) @ band (2W, kW)`, `band`
        gathering the kernel along the diagonals (zero outside: the "same"
        padding). Vertical taps: `out[b, h] = sum_i rows[b, h + i - p, i]` is
        a constant 0/1 `(H, H*k)` matrix times `rows` seen as `(B, H*k, W)`.
        """
        k = self.kernel_size
        dtype = self.compute_dtype
        kernel = ops.cast(self.conv.kernel[..., 0], dtype)  # (k, k, 2) [i,j,c]
        shifts = ops.convert_to_tensor(_shift_bands(width, k), dtype)
        band = ops.einsum("ijc,jvw->cviw", kernel, shifts)  # (2, W, k, W)
        band = ops.reshape(band, (2 * width, k * width))
        pair = ops.cast(ops.concatenate([avg, mx], axis=-1), dtype)  # (B,H,2W)
        rows = ops.matmul(pair, band)  # (B, H, k*W), [h', (i, w)]
        rows = ops.reshape(rows, (-1, height * k, width))  # [(h', i), w]
        row_sum = ops.convert_to_tensor(_row_sum_matrix(height, k), dtype)
        logits = ops.matmul(row_sum, rows)  # (B, H, W)
        return logits + ops.cast(self.conv.bias[0], dtype)

    def call(self, inputs, return_attention=False):
        x32 = ops.cast(inputs, "float32")
        height, width = inputs.shape[1], inputs.shape[2]
        if (
            height is not None
            and width is not None
            and max(height, width) <= _BANDED_MAX_SIZE
        ):
            avg = ops.mean(x32, axis=-1)  # (B, H, W)
            mx = ops.max(x32, axis=-1)  # (B, H, W)
            logits = self._banded_conv(avg, mx, height, width)
        else:
            avg = ops.mean(x32, axis=-1, keepdims=True)  # (B, H, W, 1)
            mx = ops.max(x32, axis=-1, keepdims=True)  # (B, H, W, 1)
            descriptor = ops.concatenate([avg, mx], axis=-1)  # (B, H, W, 2)
            logits = self.conv(descriptor)[..., 0]  # (B, H, W)
        spatial_map = _numerics.sigmoid_f32(logits)  # (B, H, W) float32
        scale = ops.cast(spatial_map, inputs.dtype)[..., None]  # (B,H,W,1)
        outputs = inputs * scale
        if return_attention:
            return outputs, spatial_map
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, return_attention=False):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention:
            return outputs
        spatial_map = keras.KerasTensor(inputs.shape[:3], dtype="float32")
        return outputs, spatial_map

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size})
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class CBAM(keras.layers.Layer):
    """Convolutional Block Attention Module: channel then spatial attention.

    [Woo et al., 2018](https://arxiv.org/abs/1807.06521), Eq. 1:
    `x' = Mc(x) * x`, `y = Ms(x') * x'`, with `Mc` from `ChannelAttention`
    (shared MLP on average- and max-pooled descriptors, summed, sigmoid) and
    `Ms` from `SpatialAttention` (`kernel_size` conv on the `[avg, max]`
    channel-pooled maps, sigmoid). The two are applied in sequence, channel
    first, the paper's best arrangement. The sublayers are
    `self.channel_attention` and `self.spatial_attention`. Channels-last
    inputs only.

    Args:
        reduction: integer >= 1, channel-MLP reduction ratio. Defaults to
            `16`.
        kernel_size: odd integer >= 1, spatial conv size. Defaults to `7`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.
        return_attention: if `True`, also return both maps.

    Returns:
        `y` of the input's shape, or `(y, Mc, Ms)` with
        `return_attention=True`: `Mc` of shape `(batch, channels)` and `Ms` of
        shape `(batch, height, width)`, both float32.

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> layer = keras_attn.layers.CBAM(reduction=4)
    >>> y, mc, ms = layer(np.ones((2, 8, 8, 16)), return_attention=True)
    >>> tuple(y.shape), tuple(mc.shape), tuple(ms.shape)
    ((2, 8, 8, 16), (2, 16), (2, 8, 8))

    Reference:
    - [Woo et al., 2018](https://arxiv.org/abs/1807.06521)
    """

    attention_kinds = ("channel", "spatial")

    def __init__(self, reduction=16, kernel_size=7, **kwargs):
        validation.check_positive_int(self, "reduction", reduction)
        validation.check_odd_kernel(self, "kernel_size", kernel_size)
        super().__init__(**kwargs)
        self.reduction = reduction
        self.kernel_size = kernel_size

    def build(self, input_shape):
        validation.check_image_shape(self, input_shape)
        self.channel_attention = ChannelAttention(
            reduction=self.reduction,
            dtype=self.dtype_policy,
            name="channel_attention",
        )
        self.spatial_attention = SpatialAttention(
            kernel_size=self.kernel_size,
            dtype=self.dtype_policy,
            name="spatial_attention",
        )
        self.channel_attention.build(input_shape)
        self.spatial_attention.build(input_shape)

    def call(self, inputs, return_attention=False):
        refined, channel_map = self.channel_attention(
            inputs, return_attention=True
        )
        outputs, spatial_map = self.spatial_attention(
            refined, return_attention=True
        )
        if return_attention:
            return outputs, channel_map, spatial_map
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, return_attention=False):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention:
            return outputs
        channel_map = keras.KerasTensor(
            (inputs.shape[0], inputs.shape[-1]), dtype="float32"
        )
        spatial_map = keras.KerasTensor(inputs.shape[:3], dtype="float32")
        return outputs, channel_map, spatial_map

    def get_config(self):
        config = super().get_config()
        config.update(
            {"reduction": self.reduction, "kernel_size": self.kernel_size}
        )
        return config
