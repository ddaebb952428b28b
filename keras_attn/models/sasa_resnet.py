"""Stand-alone self-attention ResNet (SASA-ResNet-26 / -50).

Paper: Ramachandran, Parmar, Vaswani, Bello, Levskaya, Shlens, "Stand-Alone
Self-Attention in Vision Models", NeurIPS 2019,
https://arxiv.org/abs/1906.05909 (Sec. 4: every 3x3 spatial convolution of
a bottleneck ResNet is replaced by local self-attention with spatial extent
`k = 7` and 8 heads; stride 2 by a 2x2 average pooling after the
attention; optionally the stem is attention too).

Choices the paper leaves open, and deviations, stated plainly:

- Blocks per stage: ResNet-26 `[1, 2, 4, 1]`, ResNet-50 `[3, 4, 6, 3]`
  (widths 64/128/256/512, 4x expansion). The attention replaces the 3x3
  conv of every block; BN and ReLU follow it as they followed the conv.
- Shortcuts: 1x1 conv + BN projections where the shape changes. In the
  attention model a strided projection is a 2x2 average pooling ("valid")
  followed by a stride-1 1x1 conv, so that it floors odd sizes exactly as
  the attention branch's 2x2 pooling does (a stride-2 1x1 conv with "same"
  padding would round 7 -> 4 while the branch gives 3). The conv baseline
  (`attention=None`) keeps the usual stride-2 1x1 projection and stride-2
  3x3 conv ("ResNet v1.5", as `keras_attn.models.resnet`).
- `stem="conv"`: as `keras_attn.models.resnet`, the stem depends on the input
  size: `min(height, width) < 64` gets a 3x3 stride-1 conv and no pooling;
  larger or unknown (`None`) sizes get a 7x7/2 conv + 3x3/2 max-pool.
- `stem="attention"`: `AttentionStem` (attention inside each 4x4 block,
  spatially-aware values with 4 mixtures, as the paper) + BN + ReLU; for
  large or unknown sizes then a 4x4 stride-4 max-pool (the paper's "4x4
  max pool", giving the same 4x reduction as the conv stem), for inputs
  `< 64` pixels no pooling. The attention blocks and the pooling windows
  coincide when the size is a multiple of 4 (e.g. 224); otherwise "same"
  pooling pads both sides while the blocks start at the top-left pixel.
  The attention stem runs at full input resolution, so it is expensive on
  224x224 inputs.
- `width` scales all channel counts; each scaled width is rounded to a
  multiple of `lcm(num_heads, 2)` (the attention needs `filters` divisible by
  the heads and even for its row/column relative embeddings), at least one
  such multiple. The baseline uses the same rounded widths.
- Parameters: the conv-stem SASA-ResNet-50 with 1000 classes has 18.0M
  trainable parameters here (see the tests), the baseline 25.6M, as the
  paper's 18.0M / 25.6M.
"""

from __future__ import annotations

import math

import keras

from keras_attn.layers.attention_stem import AttentionStem
from keras_attn.layers.local_self_attention import LocalSelfAttention2D
from keras_attn.models._common import attention_switch
from keras_attn.models._common import check_input_shape
from keras_attn.models._common import conv_bn
from keras_attn.models._common import pooled_classifier
from keras_attn.utils import validation

_NAME = "sasa_resnet"
# depth -> bottleneck blocks per stage
_DEPTHS = {26: (1, 2, 4, 1), 50: (3, 4, 6, 3)}
_WIDTHS = (64, 128, 256, 512)
_EXPANSION = 4
_SMALL_INPUT = 64  # below this, no stride-2 stem and no pooling
_STEM_KERNEL = 4  # the paper's attention-stem spatial extent
_STEM_MIXTURES = 4  # the paper's number of value mixtures
_BN = {"epsilon": 1e-5, "momentum": 0.9}


def supported_depths():
    """The depths `sasa_resnet` builds, sorted."""
    return sorted(_DEPTHS)


def scaled_width(channels, width, num_heads):
    """`channels * width` rounded to a multiple of `lcm(num_heads, 2)`."""
    step = math.lcm(num_heads, 2)
    return step * max(1, round(channels * width / step))


def _bn(x, name, relu=True):
    x = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def _block(x, width, strides, attention, kernel_size, num_heads, name):
    out_channels = width * _EXPANSION
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        if attention and strides != 1:
            # Floor odd sizes like the attention branch's 2x2 pooling.
            shortcut = keras.layers.AveragePooling2D(
                2, padding="valid", name=f"{name}_shortcut_pool"
            )(x)
            shortcut = conv_bn(
                shortcut, out_channels, 1, 1, f"{name}_shortcut", relu=False
            )
        else:
            shortcut = conv_bn(
                x, out_channels, 1, strides, f"{name}_shortcut", relu=False
            )
    y = conv_bn(x, width, 1, 1, f"{name}_1")
    if attention:
        layer = LocalSelfAttention2D(
            width,
            kernel_size,
            num_heads=num_heads,
            strides=strides,
            name=f"{name}_sasa",
        )
        # Maps stay in the graph so `attention_model` can expose them.
        y = layer(y, return_attention=True)[0]
        y = _bn(y, f"{name}_2")
    else:
        y = conv_bn(y, width, 3, strides, f"{name}_2")
    y = conv_bn(y, out_channels, 1, 1, f"{name}_3", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _stem(inputs, stem, filters, small):
    if stem == "conv":
        if small:
            return conv_bn(inputs, filters, 3, 1, "stem")
        x = conv_bn(inputs, filters, 7, 2, "stem")
        return keras.layers.MaxPooling2D(
            3, strides=2, padding="same", name="stem_pool"
        )(x)
    layer = AttentionStem(
        filters,
        kernel_size=_STEM_KERNEL,
        num_mixtures=_STEM_MIXTURES,
        name="stem_sasa",
    )
    x = _bn(layer(inputs, return_attention=True)[0], "stem")
    if small:
        return x
    return keras.layers.MaxPooling2D(
        _STEM_KERNEL, strides=_STEM_KERNEL, padding="same", name="stem_pool"
    )(x)


def sasa_resnet(
    input_shape,
    num_classes,
    depth=26,
    stem="conv",
    attention=True,
    kernel_size=7,
    num_heads=8,
    width=1.0,
    name=None,
):
    """A bottleneck ResNet whose spatial convolutions are local attention.

    [Ramachandran et al., 2019](https://arxiv.org/abs/1906.05909): in every
    bottleneck block the 3x3 conv is replaced by
    `LocalSelfAttention2D(filters, kernel_size, num_heads, strides)`,
    `y_ij = sum_{ab in N_k(ij)} softmax_ab(q_ij . (k_ab + r_{a-i, b-j})) v_ab`
    per head, followed by BN and ReLU; a strided block pools the attention
    output with a 2x2 average pooling. `attention=None` is the plain conv
    ResNet of the same depth and widths. Channels-last inputs only.

    - `depth=26`: blocks per stage `[1, 2, 4, 1]`; `depth=50`:
      `[3, 4, 6, 3]`; widths 64/128/256/512 (times `width`), 4x expansion.
    - `stem="conv"`: 3x3 stride-1 conv for inputs smaller than 64 pixels,
      else (also for `None` sizes) 7x7/2 conv + 3x3/2 max-pool.
      `stem="attention"`: `AttentionStem` (4x4 blocks, 4 value mixtures) +
      BN + ReLU, then a 4x4/4 max-pool unless the input is smaller than 64
      pixels.

    Attention layers are called with `return_attention=True` (their maps
    stay in the graph for `keras_attn.models.attention_model`) and are named
    `stage{i}_block{j}_sasa` (1-based) and `stem_sasa`. Global average
    pooling, a `Dense` named `"logits"` and a float32 softmax named
    `"probabilities"` close the model.

    Args:
        input_shape: `(height, width, channels)`, channels last; height and
            width may be `None`.
        num_classes: integer >= 1, number of classes.
        depth: `26` or `50`. Defaults to `26`.
        stem: `"conv"` or `"attention"`. Defaults to `"conv"`.
        attention: `True` (the default) builds the attention blocks; `None`
            the conv baseline (the stem follows `stem` either way). `False`
            still means the baseline but is deprecated (a
            `DeprecationWarning`).
        kernel_size: odd integer >= 1, the attention window side. Defaults to
            `7` (the paper's).
        num_heads: integer >= 1, attention heads. Defaults to `8`.
        width: number > 0 scaling every channel count; scaled counts are
            rounded to a multiple of `lcm(num_heads, 2)`. Defaults to `1.0`.
        name: model name. Defaults to `"sasa_resnet{depth}"` (attention),
            plus `"_attention_stem"` for the attention stem, or
            `"resnet{depth}"` for the baseline.

    Returns:
        A functional `keras.Model` mapping images to class probabilities
        `(batch, num_classes)` (float32).

    Raises:
        ValueError: for a bad `input_shape`, `num_classes`, `depth`, `stem`,
            `attention`, `kernel_size`, `num_heads`, `width` or `name`.

    Example:
    >>> import keras_attn
    >>> model = keras_attn.models.sasa_resnet((32, 32, 3), 10, width=0.25)
    >>> model.output_shape
    (None, 10)
    """
    input_shape = check_input_shape(_NAME, input_shape)
    validation.check_positive_int(_NAME, "num_classes", num_classes)
    if isinstance(depth, bool) or depth not in _DEPTHS:
        validation.fail(_NAME, "depth", depth, f"one of {supported_depths()}")
    if not isinstance(stem, str):
        validation.fail(_NAME, "stem", stem, "one of ['conv', 'attention']")
    validation.check_choice(_NAME, "stem", stem, ("conv", "attention"))
    attention = attention_switch(_NAME, attention)
    validation.check_odd_kernel(_NAME, "kernel_size", kernel_size)
    validation.check_positive_int(_NAME, "num_heads", num_heads)
    width = validation.check_positive_float(_NAME, "width", width)
    if name is not None and not isinstance(name, str):
        validation.fail(_NAME, "name", name, "None or a string")
    if name is None:
        name = f"sasa_resnet{depth}" if attention else f"resnet{depth}"
        if stem == "attention":
            name += "_attention_stem"

    inputs = keras.Input(input_shape)
    height, width_px = input_shape[:2]
    small = (
        height is not None
        and width_px is not None
        and min(height, width_px) < _SMALL_INPUT
    )
    widths = [scaled_width(w, width, num_heads) for w in _WIDTHS]
    x = _stem(inputs, stem, widths[0], small)
    for i, (stage_width, num_blocks) in enumerate(
        zip(widths, _DEPTHS[depth], strict=True), start=1
    ):
        for j in range(1, num_blocks + 1):
            strides = 2 if (i > 1 and j == 1) else 1
            x = _block(
                x,
                stage_width,
                strides,
                attention,
                kernel_size,
                num_heads,
                f"stage{i}_block{j}",
            )
    outputs = pooled_classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name)
