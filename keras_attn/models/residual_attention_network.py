"""Residual Attention Network: Attention-56 and Attention-92.

"Residual Attention Network for Image Classification", Wang et al., CVPR 2017,
https://arxiv.org/abs/1704.06904. Layout follows the paper's Table 2 and the
official Caffe prototxts (fwang91/residual-attention-network
`Attention-{56,92}-deploy.prototxt`) as ported to PyTorch by
tengshaofeng/ResidualAttentionNetwork-pytorch (`ResidualAttentionModel_56`,
`ResidualAttentionModel_92`, `ResidualAttentionModel_92_32input_update`).

Two input regimes, chosen from the input size:
- ImageNet variant (`min(height, width) >= 64`, or unknown spatial size):
  7x7/2 conv 64 + BN-ReLU + 3x3/2 max-pool; unit 256; stage 1 (mask with two
  skips, i.e. three max-pools: 56 -> 28 -> 14 -> 7 at 224x224); unit 512 /2;
  stage 2 (one skip); unit 1024 /2; stage 3 (no skip); three units 2048, the
  first with stride 2; BN-ReLU; global average pooling; classifier.
- Small-input variant (`min(height, width) < 64`, e.g. CIFAR 32x32 or MNIST
  28x28), as in the port's "92_32input" model: 3x3 conv 32 (stride 1, no
  pool); unit 128; stage 1 with one skip (32 -> 16 -> 8: two skips would
  take the mask down to 2x2, too coarse to be useful); unit 256 /2; stage 2
  with no skip (16 -> 8, same choice as the port's
  `AttentionModule_stage2_cifar`, so that the lowest mask resolution stays
  8x8 as in stage 1); unit 512 /2; stage 3 with no skip (8 -> 4; the port's
  stage-3 CIFAR module has no pooling at all, ours keeps the module's single
  max-pool); three units 1024 (stride 1); BN-ReLU; pooling; classifier.

Attention-56 has one attention module per stage, Attention-92 has 1, 2 and 3
(paper Table 2). Every module uses p=1, t=2, r=1.

Deviations, stated honestly:
- Classification uses global average pooling instead of the port's fixed
  `AvgPool2d(7)` / `AvgPool2d(8)`, so every input size works.
- Module differences (half-pixel bilinear resizing to run-time sizes, no
  extra bottom-up/trunk sums in the mask) are listed in
  `keras_attn/layers/residual_attention_module.py`.
- `width` (not in the paper) scales every channel count so that tests and CPU
  recipes can use thin networks.

Size check at 224x224 with 1000 classes: Attention-56 has 31,883,432
parameters (31,810,728 trainable plus BN moving statistics), the paper
reports 31.9M. Attention-92 has 52,599,976 (52,466,344 trainable) against
the paper's 51.3M, 2.3% more; each module here has the same unit counts as
the reference prototxt/port, and the gap was not traced further.
"""

from __future__ import annotations

import keras

from keras_attn.layers.pre_act_bottleneck import PreActBottleneck
from keras_attn.layers.residual_attention_module import MASK_ACTIVATIONS
from keras_attn.layers.residual_attention_module import ResidualAttentionModule
from keras_attn.models._common import attention_switch
from keras_attn.models._common import pooled_classifier
from keras_attn.utils.validation import fail

_NAME = "residual_attention_network"
# Attention modules per stage (paper Table 2).
_STAGES = {56: (1, 1, 1), 92: (1, 2, 3)}
# Soft-mask skip connections per stage for each input regime (module docs).
_SKIPS = {"imagenet": (2, 1, 0), "small": (1, 0, 0)}
# Stem width, then the unit width before each stage and of the final units.
_WIDTHS = {
    "imagenet": (64, (256, 512, 1024), 2048),
    "small": (32, (128, 256, 512), 1024),
}
_SMALL_INPUT = 64
# Units per module: p pre-processing, t trunk, p post-processing.
_P, _T, _R = 1, 2, 1


def _scaled(channels, width):
    # Bottleneck units need a multiple of 4 channels (filters // 4 inside).
    return max(4, 4 * int(round(channels * width / 4)))


def _check_arguments(input_shape, num_classes, depth, mask_activation,
                     width):
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 3
        or not isinstance(input_shape[-1], int)
        or isinstance(input_shape[-1], bool)
        or input_shape[-1] < 1
        or any(
            d is not None and (
                isinstance(d, bool) or not isinstance(d, int) or d < 1
            )
            for d in input_shape[:2]
        )
    ):
        fail(_NAME, "input_shape", input_shape,
             "(height, width, channels) with known channels, channels last")
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or num_classes < 1
    ):
        fail(_NAME, "num_classes", num_classes, "an integer >= 1")
    if isinstance(depth, bool) or depth not in _STAGES:
        fail(_NAME, "depth", depth, f"one of {sorted(_STAGES)}")
    if mask_activation not in MASK_ACTIVATIONS:
        fail(_NAME, "mask_activation", mask_activation,
             f"one of {list(MASK_ACTIVATIONS)}")
    if (
        isinstance(width, bool)
        or not isinstance(width, (int, float))
        or not width > 0
    ):
        fail(_NAME, "width", width, "a number > 0")


def _variant(input_shape):
    height, width = input_shape[:2]
    if height is None or width is None:
        return "imagenet"
    return "small" if min(height, width) < _SMALL_INPUT else "imagenet"


def residual_attention_network(input_shape, num_classes, depth=56,
                               mask_activation="mixed", attention=True,
                               width=1.0, name=None):
    """Residual Attention Network (Attention-56 / Attention-92).

    Builds the network of
    [Wang et al., 2017](https://arxiv.org/abs/1704.06904): a pre-activation
    bottleneck ResNet (`keras_attn.layers.PreActBottleneck`) whose three
    stages carry `ResidualAttentionModule`s (p=1, t=2, r=1), one per stage
    for Attention-56 and 1, 2, 3 for Attention-92. Inputs with
    `min(height, width) >= 64` (or unknown spatial size) get the ImageNet
    stem (7x7/2 conv + 3x3/2 max-pool, widths 256-512-1024-2048, soft masks
    with 2, 1, 0 skips); smaller inputs (28x28, 32x32) get the CIFAR stem of
    the reference port's "92_32input" model (3x3 conv, no pool, widths
    128-256-512-1024, soft masks with 1, 0, 0 skips). Channels-last.

    Attention modules are named `stage{i}_attention{j}` (1-based) and called
    with `return_attention=True`; their float32 soft masks stay in the graph
    (`model.get_layer("stage1_attention1").output[1]`), so
    `keras_attn.models.attention_model(model)` can expose them.

    Args:
        input_shape: `(height, width, channels)`; height/width may be `None`
            (the ImageNet stem is then used; the soft masks resize at run
            time, so any size works).
        num_classes: number of classes, an integer >= 1.
        depth: `56` or `92`.
        mask_activation: `"mixed"`, `"channel"` or `"spatial"` (paper §3.3).
        attention: `True` (the default) builds the attention network;
            `None` its no-attention baseline of the same backbone: every
            attention module is replaced by its trunk only (`p + t + p` = 4
            residual units), so depth and trunk match. `False` still means
            the baseline but is deprecated (a `DeprecationWarning`).
        width: multiplier of every channel count (not in the paper; default
            1.0). Counts are rounded to a multiple of 4, at least 4, because
            the bottleneck uses `filters // 4` channels. E.g. `width=1/16`
            gives a CIFAR model with widths 4-8-16-32-64.
        name: model name; defaults to `"attention_{depth}"` or
            `"attention_{depth}_baseline"`.

    Returns:
        A functional `keras.Model` mapping images to float32 class
        probabilities `(batch, num_classes)` (the layer before is `logits`).

    Raises:
        ValueError: on an invalid argument; the message names
            `residual_attention_network`, the argument and the allowed
            values.

    Example:
    >>> import keras_attn
    >>> model = keras_attn.models.residual_attention_network((32, 32, 3), 10)
    >>> model.get_layer("stage1_attention1").output[1].shape
    (None, 32, 32, 128)
    """
    attention = attention_switch(_NAME, attention)
    _check_arguments(input_shape, num_classes, depth, mask_activation, width)
    variant = _variant(input_shape)
    stem_width, stage_widths, final_width = _WIDTHS[variant]
    if name is None:
        name = f"attention_{depth}" + ("" if attention else "_baseline")

    inputs = keras.Input(tuple(input_shape))
    stem = _scaled(stem_width, width)
    if variant == "imagenet":
        x = keras.layers.Conv2D(
            stem, 7, strides=2, padding="same", use_bias=False,
            kernel_initializer="he_normal", name="stem_conv",
        )(inputs)
    else:
        x = keras.layers.Conv2D(
            stem, 3, padding="same", use_bias=False,
            kernel_initializer="he_normal", name="stem_conv",
        )(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if variant == "imagenet":
        x = keras.layers.MaxPooling2D(
            3, strides=2, padding="same", name="stem_pool"
        )(x)

    for stage, (modules, skips, channels) in enumerate(
        zip(_STAGES[depth], _SKIPS[variant], stage_widths, strict=True),
        start=1,
    ):
        filters = _scaled(channels, width)
        # The first stage keeps the stem's resolution; later stages halve it.
        x = PreActBottleneck(
            filters, strides=1 if stage == 1 else 2, name=f"stage{stage}_unit"
        )(x)
        for j in range(1, modules + 1):
            if attention:
                x, _ = ResidualAttentionModule(
                    filters, p=_P, t=_T, r=_R, num_skips=skips,
                    mask_activation=mask_activation,
                    name=f"stage{stage}_attention{j}",
                )(x, return_attention=True)
            else:
                for k in range(_P + _T + _P):
                    x = PreActBottleneck(
                        filters, name=f"stage{stage}_trunk{j}_unit{k}"
                    )(x)

    filters = _scaled(final_width, width)
    for k in range(3):
        # ImageNet: 14x14 -> 7x7 here; the small variant is already at 8x8.
        strides = 2 if variant == "imagenet" and k == 0 else 1
        x = PreActBottleneck(filters, strides=strides, name=f"final_unit{k}")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="final_bn")(x)
    x = keras.layers.ReLU(name="final_relu")(x)
    outputs = pooled_classifier(x, num_classes, pool_name="pool")
    return keras.Model(inputs, outputs, name=name)
