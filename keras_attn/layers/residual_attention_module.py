"""Residual Attention Network: the attention module.

"Residual Attention Network for Image Classification", Wang et al., CVPR 2017,
https://arxiv.org/abs/1704.06904

Status and deviations from the paper and the reference code:
- The soft-mask branch up-samples bilinearly to the *run-time* spatial size of
  the tensor it is added to (`keras.ops.image.resize(..., size=ops.shape(skip)
  [1:3])`). The most-used PyTorch port (tengshaofeng/ResidualAttentionNetwork-
  pytorch) hard-codes `UpsamplingBilinear2d(size=...)`, which ties each module
  to one input size; here any input size works, including odd sizes and
  `(None, None, C)` inputs.
- Bilinear resizing uses half-pixel centres (TensorFlow `tf.image.resize`
  semantics, PyTorch `align_corners=False`); the PyTorch port's
  `UpsamplingBilinear2d` uses `align_corners=True`.
- The top-down path adds only the skip-branch output after each up-sample,
  as described in the paper (§3.2, Fig. 2). The PyTorch port additionally adds
  the bottom-up tensor before the skip unit and, at the top, the trunk
  output; those extra sums are not used here.
- Max-pooling uses `padding="same"` (the port pads one pixel on every side);
  output sizes agree (`ceil(size / 2)`).
- The two 1x1 convolutions of the mask head have no bias, as in the port.
  The second one (it produces the mask logits) always runs in float32, so a
  `mixed_float16` policy cannot overflow the logits.
- The mixed mask is a sigmoid, as in the paper (§3.3) and the PyTorch port;
  the official Caffe deploy prototxt (fwang91/residual-attention-network
  `model/Attention-92-deploy.prototxt`) ends its mask with a TanH instead.
- Attention residual learning `H = (1 + M) * T` is the default; the naive
  attention learning (NAL) ablation of the paper, `H = M * T`, is available
  with `naive=True`.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attn.layers.pre_act_bottleneck import PreActBottleneck
from keras_attn.layers.pre_act_bottleneck import check_bottleneck_filters
from keras_attn.utils.validation import check_bool
from keras_attn.utils.validation import check_choice
from keras_attn.utils.validation import check_image_shape
from keras_attn.utils.validation import check_positive_int
from keras_attn.utils.validation import fail

MASK_ACTIVATIONS = ("mixed", "channel", "spatial")
# Keeps the channel-wise L2 norm and the spatial standard deviation away
# from zero (a constant feature map would otherwise divide by zero).
CHANNEL_EPSILON = 1e-12
SPATIAL_EPSILON = 1e-5


def mask_activation_f32(logits, mode):
    """The paper's mask activations (§3.3), computed in float32.

    Args:
        logits: `(batch, height, width, channels)` soft-mask logits.
        mode: `"mixed"` (f1, sigmoid per element), `"channel"` (f2, L2
            normalization over channels at every position) or `"spatial"`
            (f3, sigmoid of each channel standardized over its spatial
            positions, per image).

    Returns:
        A float32 tensor with the shape of `logits`.
    """
    x = ops.cast(logits, "float32")
    if mode == "mixed":
        return ops.sigmoid(x)
    if mode == "channel":
        norm = ops.sqrt(
            ops.sum(ops.square(x), axis=-1, keepdims=True) + CHANNEL_EPSILON
        )  # (B, H, W, 1)
        return x / norm
    mean = ops.mean(x, axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
    var = ops.mean(ops.square(x - mean), axis=(1, 2), keepdims=True)
    return ops.sigmoid((x - mean) / ops.sqrt(var + SPATIAL_EPSILON))


@keras.saving.register_keras_serializable(package="keras_attn")
class ResidualAttentionModule(keras.layers.Layer):
    """Attention module of the Residual Attention Network (channels last).

    Following [Wang et al., 2017](https://arxiv.org/abs/1704.06904), the
    input first goes through `p` pre-activation bottleneck units
    (`PreActBottleneck`). A trunk branch of `t` units gives features `T(x)`.
    A soft-mask branch, a bottom-up/top-down hourglass, gives `M(x)`: a 3x3
    stride-2 max-pool and `r` units, then for each of `num_skips` levels a
    skip unit, another max-pool and `r` units; the top-down path mirrors it
    with `r` units and a bilinear up-sample to the run-time size of the
    matching skip tensor, to which the skip-unit output is added; a final up-
    sample restores the trunk size, followed by BN-ReLU-Conv1x1-BN-ReLU-
    Conv1x1 and the mask activation (computed in float32):
    mixed `f1 = sigmoid(x)`, channel `f2 = x / ||x||_2` (over channels at
    each position) or spatial `f3 = sigmoid((x - mean_c) / std_c)` (mean and
    standard deviation of each channel over the spatial positions of each
    image). The output is attention residual learning (Eq. 3)
    `H(x) = (1 + M(x)) * T(x)`, followed by `p` more units. With
    `naive=True` the module computes the paper's naive attention learning
    ablation `H(x) = M(x) * T(x)` instead.

    Args:
        filters: channels of every unit and of the output; an integer >= 4
            divisible by 4. The input may have a different channel count when
            `p >= 1` (the first pre-processing unit projects).
        p: pre- and post-processing units, an integer >= 0.
        t: trunk-branch units, an integer >= 1.
        r: units between adjacent pooling / up-sampling steps of the mask
            branch, an integer >= 1.
        num_skips: number of skip connections (= number of max-pools minus
            one) of the mask branch, an integer >= 0. The paper uses 2, 1 and
            0 for the 56x56, 28x28 and 14x14 stages of Attention-56.
        mask_activation: `"mixed"`, `"channel"` or `"spatial"`.
        naive: bool; use `H = M * T` (NAL ablation) instead of
            `H = (1 + M) * T`.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        inputs: a `(batch, height, width, channels)` tensor.
        training: Python bool, forwarded to batch normalization.
        return_attention: bool; when True also return the soft mask.

    Returns:
        `H` of shape `(batch, height, width, filters)` in the compute dtype,
        or the tuple `(H, M)` when `return_attention=True`, where the mask
        `M` has shape `(batch, height, width, filters)` and dtype float32.

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> module = keras_attn.layers.ResidualAttentionModule(32, num_skips=1)
    >>> h, mask = module(np.ones((2, 16, 16, 32)), return_attention=True)
    >>> tuple(h.shape), tuple(mask.shape)
    ((2, 16, 16, 32), (2, 16, 16, 32))

    Reference:
        [Wang et al., 2017](https://arxiv.org/abs/1704.06904)
    """

    attention_kinds = ("mask",)

    def __init__(
        self,
        filters,
        p=1,
        t=2,
        r=1,
        num_skips=1,
        mask_activation="mixed",
        naive=False,
        **kwargs,
    ):
        check_bottleneck_filters(self, filters)
        check_positive_int(self, "p", p, minimum=0)
        check_positive_int(self, "t", t, minimum=1)
        check_positive_int(self, "r", r, minimum=1)
        check_positive_int(self, "num_skips", num_skips, minimum=0)
        check_choice(self, "mask_activation", mask_activation, MASK_ACTIVATIONS)
        check_bool(self, "naive", naive)
        super().__init__(**kwargs)
        self.filters = filters
        self.p = p
        self.t = t
        self.r = r
        self.num_skips = num_skips
        self.mask_activation = mask_activation
        self.naive = naive

    def _units(self, count, prefix):
        return [
            PreActBottleneck(
                self.filters, name=f"{prefix}_{i}", dtype=self.dtype_policy
            )
            for i in range(count)
        ]

    def build(self, input_shape):
        channels = check_image_shape(self, input_shape)
        if self.p == 0 and channels != self.filters:
            fail(
                self,
                "p",
                self.p,
                f"p >= 1 when the input has {channels} channels and "
                f"filters={self.filters} (the first pre-processing unit "
                "projects the channels); or give the input `filters` "
                "channels",
            )
        shape = tuple(input_shape)
        unit_shape = shape[:-1] + (self.filters,)

        def pooled(s):
            return s[:1] + tuple(
                None if d is None else -(-d // 2) for d in s[1:3]
            ) + s[3:]

        self.pre_units = self._units(self.p, "pre")
        self.trunk_units = self._units(self.t, "trunk")
        self.post_units = self._units(self.p, "post")
        # Mask branch, flat lists of `r` units per level (Keras tracks flat
        # lists of layers): level i of down_units runs after the (i+1)-th
        # max-pool, skip_units[i] branches off after it, and level i of
        # up_units mirrors it on the way back up.
        self.down_units = [
            unit
            for i in range(self.num_skips + 1)
            for unit in self._units(self.r, f"mask_down{i}")
        ]
        self.skip_units = [
            PreActBottleneck(
                self.filters, name=f"mask_skip{i}", dtype=self.dtype_policy
            )
            for i in range(self.num_skips)
        ]
        self.up_units = [
            unit
            for i in range(self.num_skips + 1)
            for unit in self._units(self.r, f"mask_up{i}")
        ]
        self.mask_bn1 = keras.layers.BatchNormalization(
            epsilon=1e-5, name="mask_bn1", dtype=self.dtype_policy
        )
        self.mask_conv1 = keras.layers.Conv2D(
            self.filters, 1, use_bias=False, kernel_initializer="he_normal",
            name="mask_conv1", dtype=self.dtype_policy,
        )
        self.mask_bn2 = keras.layers.BatchNormalization(
            epsilon=1e-5, name="mask_bn2", dtype=self.dtype_policy
        )
        # The mask logits come out of this convolution: running it in
        # float32 (under any policy) keeps large logits from overflowing
        # float16, where "channel" and "spatial" would turn inf into NaN.
        self.mask_conv2 = keras.layers.Conv2D(
            self.filters, 1, use_bias=False, kernel_initializer="he_normal",
            name="mask_conv2", dtype="float32",
        )

        current = shape
        for unit in self.pre_units:
            unit.build(current)
            current = unit_shape
        for unit in self.trunk_units + self.post_units:
            unit.build(unit_shape)
        current = unit_shape
        for level in range(self.num_skips + 1):
            current = pooled(current)
            for unit in self._level(self.down_units, level):
                unit.build(current)
            if level < self.num_skips:
                self.skip_units[level].build(current)
            for unit in self._level(self.up_units, level):
                unit.build(current)
        for layer in (
            self.mask_bn1, self.mask_conv1, self.mask_bn2, self.mask_conv2
        ):
            layer.build(unit_shape)

    def _level(self, units, level):
        return units[level * self.r : (level + 1) * self.r]

    def _mask_logits(self, x, training):
        def run(units, y):
            for unit in units:
                y = unit(y, training=training)
            return y

        y = ops.max_pool(x, 3, 2, padding="same")
        y = run(self._level(self.down_units, 0), y)
        skips = []
        for level in range(self.num_skips):
            skips.append(self.skip_units[level](y, training=training))
            # The skip output is added back at this level's (pre-pool) size.
            y = ops.max_pool(y, 3, 2, padding="same")
            y = run(self._level(self.down_units, level + 1), y)
        for level in reversed(range(self.num_skips)):
            y = run(self._level(self.up_units, level + 1), y)
            skip = skips[level]
            y = self._upsample(y, skip) + skip
        y = run(self._level(self.up_units, 0), y)
        y = self._upsample(y, x)
        y = self.mask_conv1(ops.relu(self.mask_bn1(y, training=training)))
        y = self.mask_conv2(ops.relu(self.mask_bn2(y, training=training)))
        return y

    @staticmethod
    def _upsample(x, like):
        # Run-time target size: never hard-coded, so any input size works.
        size = ops.shape(like)[1:3]
        return ops.cast(
            ops.image.resize(x, size=size, interpolation="bilinear"),
            like.dtype,
        )

    def call(self, inputs, training=None, return_attention=False):
        x = inputs
        for unit in self.pre_units:
            x = unit(x, training=training)
        trunk = x
        for unit in self.trunk_units:
            trunk = unit(trunk, training=training)
        mask = mask_activation_f32(
            self._mask_logits(x, training), self.mask_activation
        )
        gate = mask if self.naive else 1.0 + mask
        x = ops.cast(gate * ops.cast(trunk, "float32"), self.compute_dtype)
        for unit in self.post_units:
            x = unit(x, training=training)
        if return_attention:
            return x, mask
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.filters,)

    def compute_output_spec(self, inputs, return_attention=False, **kwargs):
        shape = self.compute_output_shape(inputs.shape)
        out = keras.KerasTensor(shape, dtype=self.compute_dtype)
        if return_attention:
            return out, keras.KerasTensor(shape, dtype="float32")
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "p": self.p,
                "t": self.t,
                "r": self.r,
                "num_skips": self.num_skips,
                "mask_activation": self.mask_activation,
                "naive": self.naive,
            }
        )
        return config
