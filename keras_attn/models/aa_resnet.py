"""Attention-augmented ResNets: AA-ResNet (ImageNet) and AA-WRN (CIFAR).

Papers: Bello, Zoph, Vaswani, Shlens, Le, "Attention Augmented
Convolutional Networks", ICCV 2019, https://arxiv.org/abs/1904.09925;
Zagoruyko, Komodakis, "Wide Residual Networks", BMVC 2016,
https://arxiv.org/abs/1605.07146

The paper's CIFAR-100 setting (Sec. 4.1, as quoted by leaderj1001's
README): WRN-28-10 with "the first convolution of all residual blocks"
augmented with relative attention, Nh=8 heads, "a minimum of 20 dimensions
per head for the keys", and the key/value ratios that transcription gives
as "kappa=2, upsilon=0.2". We read them as kappa = 2 upsilon = 0.2, i.e.
`dk = 0.2 * Fout` (at least `20 * Nh`) and `dv = 0.1 * Fout`, as
leaderj1001's own AA-WRN code (`aa_k=0.2`, `aa_v=0.1`). Reason: the paper
reports AA-WRN-28-10 with FEWER parameters than the baseline (36.2M vs
36.3M). With the defaults here the counts are 36.34M (AA) vs 36.55M
(baseline, 100 classes), while `dk = 2 Fout, dv = 0.2 Fout` would give
41.2M. Not re-checked against the PDF.

The ImageNet setting (Sec. 3.3 and 4.2): since the `O(Nh (HW)^2)` memory
of the attention is prohibitive at high resolution, the paper augments
convolutions "starting from the last layer (with smallest spatial
dimension) until we hit memory constraints"; for ResNets it augments the
3x3 convolutions of the bottleneck blocks of the last three stages
(`augmented_stages=(2, 3, 4)` here), with the same `Nh = 8`, `kappa`,
`upsilon` and 20 key dimensions per head. The paper reports AA-ResNet-50
with 25.8M parameters against 25.6M for ResNet-50; `aa_resnet` gives
25,789,968 trainable parameters at 224x224 (the relative tables depend on the
input size). The stage choice is our reading of the paper, not checked
against released code (there is none).

Deviations, stated plainly:

- Depths are rounded to multiples of `num_heads`: `dk = Nh * max(
  min_key_dims_per_head, round(key_ratio * Fout / Nh))`,
  `dv = Nh * max(1, round(value_ratio * Fout / Nh))`.
- The attention-augmented conv has biases (the plain WRN convs have none);
  BN follows it, so they only add `Fout` parameters per block.
- `aa_resnet` reuses `keras_attn.models.resnet`'s backbone (post-activation
  blocks, stride on the 3x3 conv, BN after every conv), so the baseline
  `aa_resnet(..., attention=None)` is exactly `resnet(..., depth)`.
- In a strided block the attention runs on the stride-2 grid by striding
  its `q, k, v` 1x1 conv (see `AttentionAugmentedConv2D`).
- No dropout by default (WRN's dropout 0.3 is available through
  `dropout_rate`).
"""

from __future__ import annotations

import keras

from keras_attn.layers.attention_augmented_conv import AttentionAugmentedConv2D
from keras_attn.models import resnet as _resnet
from keras_attn.models._common import attention_switch
from keras_attn.models._common import check_input_shape
from keras_attn.models._common import pooled_classifier
from keras_attn.utils import validation

_NAME = "aa_wide_resnet"
_BN = {"epsilon": 1e-5, "momentum": 0.9}


def _ratio(argument, value, upper=None, builder=_NAME):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        validation.fail(builder, argument, value, "a number > 0")
    if not value > 0 or (upper is not None and not value < upper):
        bound = f" and < {upper}" if upper is not None else ""
        validation.fail(builder, argument, value, f"a number > 0{bound}")
    return float(value)


def attention_depths(filters, key_ratio=0.2, value_ratio=0.1, num_heads=8,
                     min_key_dims_per_head=20):
    """`(dk, dv)` of the augmented conv of a block with `filters` outputs."""
    dk = num_heads * max(
        min_key_dims_per_head, round(key_ratio * filters / num_heads)
    )
    dv = num_heads * max(1, round(value_ratio * filters / num_heads))
    return dk, dv


def _check_attention_arguments(builder, attention, key_ratio, value_ratio,
                               num_heads, min_key_dims_per_head, relative,
                               widths, fix):
    """Validate the attention arguments shared by the AA builders; with
    `attention` (a bool, from `attention_switch`), also that every
    augmented conv of `widths` filters keeps conv channels
    (`dv < filters`). `fix` ends that error's message."""
    _ratio("key_ratio", key_ratio, builder=builder)
    _ratio("value_ratio", value_ratio, upper=1, builder=builder)
    validation.check_positive_int(builder, "num_heads", num_heads)
    validation.check_positive_int(
        builder, "min_key_dims_per_head", min_key_dims_per_head
    )
    validation.check_bool(builder, "relative", relative)
    if not attention:
        return
    for filters in widths:
        _, dv = attention_depths(filters, key_ratio, value_ratio, num_heads,
                                 min_key_dims_per_head)
        if dv >= filters:
            validation.fail(
                builder, "value_ratio", value_ratio,
                f"dv < filters in every augmented conv; dv={dv} (a multiple "
                f"of num_heads={num_heads}) leaves no conv channels for "
                f"filters={filters}: {fix}",
            )


def _bn_relu(x, name):
    x = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _conv(x, filters, kernel_size, strides, name):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def aa_wide_resnet(
    input_shape,
    num_classes,
    depth=28,
    width=10,
    attention=True,
    key_ratio=0.2,
    value_ratio=0.1,
    num_heads=8,
    min_key_dims_per_head=20,
    relative=True,
    dropout_rate=0.0,
    name=None,
):
    """Wide ResNet whose blocks start with an attention-augmented conv.

    [Bello et al., 2019](https://arxiv.org/abs/1904.09925), Sec. 4.1: the
    first 3x3 conv of every residual block of a pre-activation
    [Wide ResNet](https://arxiv.org/abs/1605.07146) (WRN-`depth`-`width`:
    a 3x3 stem with 16 filters, three groups of `(depth - 4) / 6` blocks of
    widths `16 k, 32 k, 64 k`, the first block of groups 2 and 3 with stride
    2, 1x1 conv shortcuts where the shape changes, a final BN-ReLU, global
    average pooling) is replaced by `AttentionAugmentedConv2D` with
    `num_heads` heads, `dk = key_ratio * Fout` (at least
    `min_key_dims_per_head` per head) and `dv = value_ratio * Fout`
    (see `attention_depths`). `attention=None` builds the plain WRN
    baseline of the same backbone. A `Dense` named `"logits"` and a float32
    softmax named `"probabilities"` close the model.

    Attention layers are named `group{i}_block{j}_aa` (1-based) and called
    with `return_attention=True`, so `keras_attn.models.attention_model`
    can expose their weights `(batch, Nh, hw, hw)`. The attention over all
    positions costs `O((HW)^2)` memory: meant for CIFAR-size inputs.

    Args:
        input_shape: `(height, width, channels)`, channels last; height and
            width may be `None`.
        num_classes: integer >= 1.
        depth: integer `6n + 4` with `n >= 1` (10, 16, 22, 28, ...).
            Defaults to `28`.
        width: integer >= 1, widening factor `k`. Defaults to `10`.
        attention: `True` (the default) for AA-WRN, `None` for the
            baseline WRN. `False` still means the baseline but is
            deprecated (a `DeprecationWarning`).
        key_ratio: `kappa = dk / Fout`, number > 0. Defaults to `0.2`.
        value_ratio: `upsilon = dv / Fout`, number in (0, 1). Defaults to
            `0.1`.
        num_heads: integer >= 1, `Nh`. Defaults to `8`.
        min_key_dims_per_head: integer >= 1. Defaults to `20`.
        relative: whether the attention uses 2D relative logits. Defaults to
            `True`.
        dropout_rate: dropout between the two convs of a block, in [0, 1).
            Defaults to `0.0`.
        name: model name. Defaults to `"aa_wrn{depth}_{width}"` or
            `"wrn{depth}_{width}"`.

    Returns:
        A functional `keras.Model` mapping images to class probabilities
        `(batch, num_classes)` (float32).

    Raises:
        ValueError: for a bad argument, naming it, or when a block's `dv`
            would leave no conv channels.

    Example:
    >>> import keras_attn
    >>> model = keras_attn.models.aa_wide_resnet((32, 32, 3), 100)
    >>> model.output_shape
    (None, 100)
    """
    input_shape = check_input_shape(_NAME, input_shape)
    validation.check_positive_int(_NAME, "num_classes", num_classes)
    if (
        isinstance(depth, bool)
        or not isinstance(depth, int)
        or depth < 10
        or (depth - 4) % 6
    ):
        validation.fail(_NAME, "depth", depth, "an integer 6n + 4 >= 10")
    validation.check_positive_int(_NAME, "width", width)
    if (
        isinstance(dropout_rate, bool)
        or not isinstance(dropout_rate, (int, float))
        or not 0 <= dropout_rate < 1
    ):
        validation.fail(_NAME, "dropout_rate", dropout_rate,
                        "a number in [0, 1)")
    widths = (16 * width, 32 * width, 64 * width)
    attention = attention_switch(_NAME, attention)
    _check_attention_arguments(
        _NAME, attention, key_ratio, value_ratio, num_heads,
        min_key_dims_per_head, relative, widths,
        "lower num_heads or raise width",
    )
    if name is None:
        name = f"{'aa_' if attention else ''}wrn{depth}_{width}"

    blocks = (depth - 4) // 6
    inputs = keras.Input(input_shape)
    x = _conv(inputs, 16, 3, 1, "stem_conv")
    for i, filters in enumerate(widths, start=1):
        for j in range(1, blocks + 1):
            strides = 2 if (i > 1 and j == 1) else 1
            prefix = f"group{i}_block{j}"
            pre = _bn_relu(x, f"{prefix}_pre")
            if x.shape[-1] != filters or strides != 1:
                # Zagoruyko & Komodakis: the projection sees the
                # pre-activated input.
                shortcut = _conv(pre, filters, 1, strides, f"{prefix}_proj")
            else:
                shortcut = x
            if attention:
                dk, dv = attention_depths(
                    filters, key_ratio, value_ratio, num_heads,
                    min_key_dims_per_head,
                )
                y, _ = AttentionAugmentedConv2D(
                    filters, 3, dk, dv, num_heads, relative=relative,
                    strides=strides, name=f"{prefix}_aa",
                )(pre, return_attention=True)
            else:
                y = _conv(pre, filters, 3, strides, f"{prefix}_conv1")
            y = _bn_relu(y, f"{prefix}_mid")
            if dropout_rate:
                y = keras.layers.Dropout(
                    dropout_rate, name=f"{prefix}_dropout"
                )(y)
            y = _conv(y, filters, 3, 1, f"{prefix}_conv2")
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
    x = _bn_relu(x, "final")
    outputs = pooled_classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def aa_resnet(
    input_shape,
    num_classes,
    depth=50,
    attention=True,
    augmented_stages=None,
    key_ratio=0.2,
    value_ratio=0.1,
    num_heads=8,
    min_key_dims_per_head=20,
    relative=True,
    name=None,
):
    """ResNet whose 3x3 convs in the later stages are attention-augmented.

    [Bello et al., 2019](https://arxiv.org/abs/1904.09925), Sec. 4.2: the
    ResNet of `keras_attn.models.resnet` (same stem, stages and head) with
    the 3x3 conv of every bottleneck block (the first 3x3 conv of every
    basic block, for depths 18, 34 and the CIFAR depths) in
    `augmented_stages` replaced by `AttentionAugmentedConv2D`: `num_heads`
    heads, `dk = key_ratio * Fout` (at least `min_key_dims_per_head` per
    head) and `dv = value_ratio * Fout` (see `attention_depths`). The
    stride of a stage's first block applies to both the conv and the
    attention. `attention=None` builds the plain ResNet baseline.

    Attention layers are named `stage{i}_block{j}_{n}_aa` (`n = 2` for
    bottleneck blocks, `1` for basic blocks) and called with
    `return_attention=True`, so `keras_attn.models.attention_model` exposes
    their weights `(batch, Nh, hw, hw)`. Memory grows as `(HW)^2` per
    augmented layer: at 224x224, stage 2 attends over 28 x 28 = 784
    positions.

    Args:
        input_shape: `(height, width, channels)`, channels last; height and
            width may be `None`.
        num_classes: integer >= 1.
        depth: one of `keras_attn.models.resnet.supported_depths()`.
            Defaults to `50`.
        attention: `True` (the default) for AA-ResNet, `None` for the
            baseline. `False` still means the baseline but is deprecated (a
            `DeprecationWarning`).
        augmented_stages: 1-based stage numbers to augment. Defaults to
            every stage but the first: `(2, 3, 4)` for ImageNet depths,
            `(2, 3)` for CIFAR depths.
        key_ratio: `kappa = dk / Fout`, number > 0. Defaults to `0.2`.
        value_ratio: `upsilon = dv / Fout`, number in (0, 1). Defaults to
            `0.1`.
        num_heads: integer >= 1, `Nh`. Defaults to `8`.
        min_key_dims_per_head: integer >= 1. Defaults to `20`.
        relative: whether the attention uses 2D relative logits. Defaults to
            `True`.
        name: model name. Defaults to `"aa_resnet{depth}"` or
            `"resnet{depth}"`.

    Returns:
        A functional `keras.Model` mapping images to class probabilities
        `(batch, num_classes)` (float32).

    Raises:
        ValueError: for a bad argument, naming it, or when a block's `dv`
            would leave no conv channels.

    Example:
    >>> import keras_attn
    >>> model = keras_attn.models.aa_resnet((224, 224, 3), 1000)
    >>> model.output_shape
    (None, 1000)
    """
    name_ = "aa_resnet"
    input_shape = check_input_shape(name_, input_shape)
    validation.check_positive_int(name_, "num_classes", num_classes)
    depths = _resnet.supported_depths()
    if isinstance(depth, bool) or depth not in depths:
        validation.fail(name_, "depth", depth, f"one of {depths}")
    plan = _resnet.stage_plan(depth)
    stages = tuple(range(1, len(plan) + 1))
    if augmented_stages is None:
        augmented_stages = stages[1:]
    if (
        not isinstance(augmented_stages, (tuple, list))
        or not augmented_stages
        or any(
            isinstance(i, bool) or i not in stages for i in augmented_stages
        )
        or len(set(augmented_stages)) != len(augmented_stages)
    ):
        validation.fail(
            name_, "augmented_stages", augmented_stages,
            f"a non-empty tuple of distinct stage numbers from {stages}",
        )
    attention = attention_switch(name_, attention)
    _check_attention_arguments(
        name_, attention, key_ratio, value_ratio, num_heads,
        min_key_dims_per_head, relative,
        [plan[i - 1][1] for i in augmented_stages],
        "lower num_heads or value_ratio",
    )
    depth_args = (key_ratio, value_ratio, num_heads, min_key_dims_per_head)
    if name is None:
        name = f"{'aa_' if attention else ''}resnet{depth}"

    def augmented_conv(x, filters, strides, layer_name):
        dk, dv = attention_depths(filters, *depth_args)
        y, _ = AttentionAugmentedConv2D(
            filters, 3, dk, dv, num_heads, relative=relative,
            strides=strides, name=f"{layer_name}_aa",
        )(x, return_attention=True)
        return y

    def stage_conv(stage):
        if attention and stage in augmented_stages:
            return augmented_conv
        return None

    inputs = keras.Input(input_shape)
    x = _resnet.backbone(inputs, depth, stage_conv=stage_conv)
    outputs = pooled_classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name)
