"""ResNet with optional attention on every residual branch.

Papers: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016, https://arxiv.org/abs/1512.03385; the attention placement of
SE-ResNet (Hu et al., https://arxiv.org/abs/1709.01507, Fig. 3) and
CBAM-ResNet (Woo et al., https://arxiv.org/abs/1807.06521, Fig. 3): the
attention module rescales the residual branch just before the addition.

Deviations, stated plainly:

- CIFAR depths (6n+2) use 1x1 conv + BN projection shortcuts where the
  shape changes (the paper's option B); the paper's CIFAR models use
  parameter-free zero-padding shortcuts (option A). Option B adds ~4% more
  parameters to ResNet-20.
- ImageNet depths put the stride-2 of a bottleneck block on the 3x3 conv
  ("ResNet v1.5", as torchvision), not on the first 1x1 conv. Convolutions
  have no bias (BN follows each), so ResNet-50 with 1000 classes has
  25,557,032 trainable parameters, as torchvision's `resnet50`;
  `count_params()` adds the 53,120 BN moving statistics (25,610,152).
- The stem depends on the input size, not on the depth: inputs smaller than
  64 pixels get a 3x3 stride-1 conv and no max-pool, so 28x28 / 32x32
  images are not downsampled 4x at once; larger or unknown (`None`) sizes
  get the ImageNet 7x7/2 conv + 3x3/2 max-pool stem.
"""

from __future__ import annotations

import inspect

import keras

from keras_attn.layers.attention_factory import get_attention
from keras_attn.layers.attention_factory import registered_name
from keras_attn.models._common import check_input_shape
from keras_attn.models._common import conv_bn
from keras_attn.models._common import pooled_classifier
from keras_attn.models._common import warn_false_baseline
from keras_attn.utils import validation

# depth -> blocks per stage (3 stages of basic blocks, widths 16/32/64)
_CIFAR_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}
_CIFAR_WIDTHS = (16, 32, 64)
# depth -> (block type, blocks per stage); widths 64/128/256/512
_IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_IMAGENET_WIDTHS = (64, 128, 256, 512)
_EXPANSION = 4  # bottleneck output channels = 4 x width
_SMALL_INPUT = 64  # below this, no stride-2 stem and no max-pool


def supported_depths():
    """The depths `resnet` builds, sorted."""
    return sorted({*_CIFAR_DEPTHS, *_IMAGENET_DEPTHS})


def stage_plan(depth):
    """`[(block type, width, num_blocks), ...]` for each stage of the
    ResNet of `depth` (one of `supported_depths()`): `"basic"` blocks of
    widths 16, 32, 64 for the CIFAR depths, `"basic"` or `"bottleneck"`
    blocks of widths 64 to 512 for the ImageNet ones."""
    if depth in _CIFAR_DEPTHS:
        return [("basic", w, _CIFAR_DEPTHS[depth]) for w in _CIFAR_WIDTHS]
    kind, blocks = _IMAGENET_DEPTHS[depth]
    return [(kind, w, n) for w, n in zip(_IMAGENET_WIDTHS, blocks, strict=True)]


def _attention_tag(attention):
    """Short name used in layer names: `se`, `cbam`, ... or the class."""
    if attention is True:
        return "se"
    if isinstance(attention, str):
        return attention.lower()
    cls = attention if isinstance(attention, type) else type(attention)
    return registered_name(cls) or cls.__name__.lower()


def _attend(x, attention, attention_kwargs, name):
    if attention is None:
        return x
    layer = get_attention(attention, **{**attention_kwargs, "name": name})
    params = inspect.signature(layer.call).parameters
    if "return_attention" in params:
        # Maps stay in the graph so `attention_model` can expose them.
        return layer(x, return_attention=True)[0]
    return layer(x)


def _block(x, kind, width, strides, attention, attention_kwargs, name,
           conv=None):
    """A basic or bottleneck block. `conv`, if given, replaces its first 3x3
    convolution (see `conv_bn`)."""
    out_channels = width * _EXPANSION if kind == "bottleneck" else width
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = conv_bn(
            x, out_channels, 1, strides, f"{name}_shortcut", relu=False
        )
    if kind == "basic":
        y = conv_bn(x, width, 3, strides, f"{name}_1", conv=conv)
        y = conv_bn(y, width, 3, 1, f"{name}_2", relu=False)
    else:
        y = conv_bn(x, width, 1, 1, f"{name}_1")
        y = conv_bn(y, width, 3, strides, f"{name}_2", conv=conv)
        y = conv_bn(y, out_channels, 1, 1, f"{name}_3", relu=False)
    tag = _attention_tag(attention) if attention is not None else ""
    y = _attend(y, attention, attention_kwargs, f"{name}_{tag}")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def backbone(inputs, depth, attention=None, attention_kwargs=None,
             stage_conv=None):
    """Stem and residual stages of `resnet`, without the classifier.

    `stage_conv(stage)` (1-based) may return a `conv(x, filters, strides,
    name)` that replaces the first 3x3 conv of every block of that stage,
    or `None` to keep the plain conv. Inputs are validated by the callers.
    """
    plan = stage_plan(depth)
    height, width = inputs.shape[1:3]
    small = (
        height is not None
        and width is not None
        and min(height, width) < _SMALL_INPUT
    )
    stem_width = plan[0][1]
    if small:
        x = conv_bn(inputs, stem_width, 3, 1, "stem")
    else:
        x = conv_bn(inputs, stem_width, 7, 2, "stem")
        x = keras.layers.MaxPooling2D(
            3, strides=2, padding="same", name="stem_pool"
        )(x)
    for i, (kind, stage_width, num_blocks) in enumerate(plan, start=1):
        conv = stage_conv(i) if stage_conv is not None else None
        for j in range(1, num_blocks + 1):
            strides = 2 if (i > 1 and j == 1) else 1
            x = _block(
                x,
                kind,
                stage_width,
                strides,
                attention,
                attention_kwargs or {},
                f"stage{i}_block{j}",
                conv=conv,
            )
    return x


def resnet(
    input_shape,
    num_classes,
    depth,
    attention=None,
    attention_kwargs=None,
    name=None,
):
    """A ResNet classifier with optional attention in every residual block.

    [He et al., 2016](https://arxiv.org/abs/1512.03385). Every residual block
    applies `attention` to its residual branch after the last BN and before
    the addition, as SE-ResNet
    ([Hu et al., 2018](https://arxiv.org/abs/1709.01507)) and CBAM-ResNet
    ([Woo et al., 2018](https://arxiv.org/abs/1807.06521)) do;
    `attention=None` is the no-attention baseline of the same backbone.

    - CIFAR depths 20, 32, 44, 56, 110 (6n+2): three stages of n basic
      blocks, widths 16/32/64.
    - ImageNet depths 18, 34 (basic blocks) and 50, 101, 152 (bottleneck
      blocks, 4x expansion), widths 64/128/256/512.

    The stem depends on the input size: if `min(height, width) < 64`, a 3x3
    stride-1 conv without max-pool (for 28x28 and 32x32 images); otherwise,
    including unknown (`None`) sizes, a 7x7 stride-2 conv and a 3x3 stride-2
    max-pool. The stem has as many filters as the first stage. Every conv is
    followed by BN (and ReLU); shortcuts are 1x1 conv + BN projections where
    the shape changes. Global average pooling, a `Dense` named `"logits"` and
    a float32 softmax named `"probabilities"` close the model.

    Attention layers are called with `return_attention=True` when they
    support it (their maps stay in the graph for
    `keras_attn.models.attention_model`) and are named
    `stage{i}_block{j}_{tag}` (1-based), `tag` being the registry name
    (`se`, `cbam`, ...) or the lower-cased class name.

    Args:
        input_shape: `(height, width, channels)`, channels last; height and
            width may be `None`.
        num_classes: integer >= 1, number of classes.
        depth: one of `supported_depths()`: 18, 20, 32, 34, 44, 50, 56, 101,
            110, 152.
        attention: `None` (the default) builds the no-attention baseline;
            otherwise anything `keras_attn.layers.get_attention` accepts:
            `"se"`, `"cbam"`, `"channel"`, `"spatial"`, `True` (SE), a layer
            class or a layer instance (used as a template: each block gets
            a fresh copy). `False` still means the baseline but is
            deprecated (a `DeprecationWarning`): pass `None`.
        attention_kwargs: optional dict of constructor arguments for each
            attention layer, e.g. `{"reduction": 16}`.
        name: model name. Defaults to `"resnet{depth}"` plus `"_{tag}"`.

    Returns:
        A functional `keras.Model` mapping images to class probabilities
        `(batch, num_classes)` (float32).

    Raises:
        ValueError: for an unsupported `depth`, `num_classes < 1`, a bad
            `input_shape`, or an unknown `attention` / `attention_kwargs`.

    Example:
    >>> import keras_attn
    >>> model = keras_attn.models.resnet((32, 32, 3), 10, 20, "cbam")
    >>> model.output_shape
    (None, 10)
    """
    input_shape = check_input_shape("resnet", input_shape)
    validation.check_positive_int("resnet", "num_classes", num_classes)
    if isinstance(depth, bool) or depth not in supported_depths():
        validation.fail("resnet", "depth", depth,
                        f"one of {supported_depths()}")
    if attention is False:
        warn_false_baseline("resnet")
        attention = None
    if attention_kwargs is None:
        attention_kwargs = {}
    if not isinstance(attention_kwargs, dict):
        validation.fail(
            "resnet", "attention_kwargs", attention_kwargs, "None or a dict"
        )
    try:
        # Fail here, with the builder's name, not inside the first block.
        get_attention(attention, **attention_kwargs)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"resnet: invalid `attention` or `attention_kwargs`; {error}"
        ) from error
    if name is None:
        name = f"resnet{depth}"
        if attention is not None:
            name += f"_{_attention_tag(attention)}"

    inputs = keras.Input(input_shape)
    x = backbone(inputs, depth, attention, attention_kwargs)
    outputs = pooled_classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name)
