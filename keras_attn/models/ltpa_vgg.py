"""VGG with "Learn to Pay Attention" heads (Jetley et al., ICLR 2018).

Paper: https://arxiv.org/abs/1804.02391. Layout follows the reference code's
"attention before pooling" network (SaoYan/LearnToPayAttention `model1.py`,
`AttnVGG_before`): the first two max-pools of VGG-16 are removed so that the
local features of conv layer 7 keep the input resolution; max-pools follow
conv layers 7, 10 and 13 (local maps of 32x32, 16x16 and 8x8 for a 32x32
input), then two more conv layers, each followed by a max-pool, produce the
features of the global vector `g`.

Deviations from the reference code, and why:
- `g` ("FC-1") is global average pooling followed by `Dense(global_dim)` and
  ReLU, instead of a convolution whose kernel is `im_size / 32` wide (the
  reference has no activation there). The kernel size tied the network to one
  input size; with pooling the model accepts any input size (28x28, 32x32,
  224x224 all build).
- Max-pools use `"same"` padding, so odd sizes (28 -> 14 -> 7 -> 4 -> 2 -> 1)
  never shrink a map to zero; for powers of two this equals the reference.
- Convolutions carry no bias: each is followed by BatchNorm, whose offset
  makes a bias redundant.
- `head="indep"` averages the per-level *logits* (the paper averages the
  independent classifiers' predictions). Averaging logits keeps a single
  `logits` tensor for `from_logits` losses and equals a normalised geometric
  mean of the per-level probabilities.
- Property of the paper's formulation kept as is (the reference code shares
  it): with `compatibility="pc"` and `normalization="softmax"`, `<u, g>` is
  the same at every position and cancels in the softmax, so `g` does not
  influence the output and the layers that only feed `g` (conv 14-15 and
  FC-1) receive no gradient; they are dead weight in that (default, paper)
  configuration. `"dp"` or `"sigmoid"` make `g` matter.
- Attention maps are returned by every `LTPAAttention` layer and left in the
  graph: `model.get_layer("attention_7").output[1]` is the `(B, H, W)` map of
  level 7, and `keras_attn.models.attention_model(model)` collects them all.
"""

from __future__ import annotations

import keras

from keras_attn.layers.ltpa_attention import LTPAAttention
from keras_attn.models._common import attention_switch
from keras_attn.utils.validation import fail

_NAME = "ltpa_vgg"
# VGG-16 conv widths, layers 1..13, then the two conv layers that feed g.
_VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
_GLOBAL_WIDTHS = (512, 512)
# Max-pools after these conv layers (attention before pooling).
_POOL_AFTER = (7, 10, 13)
_HEADS = ("concat", "indep")
_COMPATIBILITIES = ("pc", "dp")
_NORMALIZATIONS = ("softmax", "sigmoid")


def _scaled(channels, width):
    return max(1, int(round(channels * width)))


def _check_arguments(input_shape, num_classes, compatibility, head,
                     attention_layers, normalization, global_dim, width):
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 3
        or not isinstance(input_shape[-1], int)
        or isinstance(input_shape[-1], bool)
        or input_shape[-1] < 1
    ):
        fail(_NAME, "input_shape", input_shape,
             "(height, width, channels) with known channels, channels last")
    for argument, value in (("num_classes", num_classes),
                            ("global_dim", global_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(_NAME, argument, value, "an integer >= 1")
    if (
        isinstance(width, bool)
        or not isinstance(width, (int, float))
        or not width > 0
    ):
        fail(_NAME, "width", width, "a number > 0")
    if compatibility not in _COMPATIBILITIES:
        fail(_NAME, "compatibility", compatibility,
             f"one of {list(_COMPATIBILITIES)}")
    if head not in _HEADS:
        fail(_NAME, "head", head, f"one of {list(_HEADS)}")
    if normalization not in _NORMALIZATIONS:
        fail(_NAME, "normalization", normalization,
             f"one of {list(_NORMALIZATIONS)}")
    allowed_layers = (
        "a sorted sequence of unique conv-layer indices, each an integer in "
        "1..13 (e.g. (7, 10, 13))"
    )
    if not isinstance(attention_layers, (list, tuple)):
        fail(_NAME, "attention_layers", attention_layers, allowed_layers)
    layers = tuple(attention_layers)
    if any(
        isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 13
        for k in layers
    ) or any(a >= b for a, b in zip(layers, layers[1:], strict=False)):
        fail(_NAME, "attention_layers", attention_layers, allowed_layers)
    return layers


def _conv_bn_relu(x, filters, name):
    x = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False, name=name
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def ltpa_vgg(input_shape, num_classes, compatibility="pc", head="concat",
             attention_layers=(7, 10, 13), normalization="softmax",
             attention=True, global_dim=512, width=1.0, name=None):
    """VGG-16-BN with Learn-to-Pay-Attention heads ("attention before pooling").

    Builds the network of
    [Jetley et al., 2018](https://arxiv.org/abs/1804.02391): thirteen 3x3
    conv-BN-ReLU layers (VGG-16 widths scaled by `width`) with max-pools after
    layers 7, 10 and 13, two further conv layers each followed by a max-pool,
    then global average pooling and `Dense(global_dim)` + ReLU giving the
    global feature `g` ("FC-1"). For every `k` in `attention_layers`, an
    `LTPAAttention` layer named `attention_{k}` attends over the (post-ReLU,
    pre-pooling) output of conv layer `k` guided by `g`; the local features
    are projected to `global_dim` when their width differs. Channels-last.

    Args:
        input_shape: `(height, width, channels)`; height and width may be
            `None` (any size works thanks to global pooling).
        num_classes: number of classes.
        compatibility: `"pc"` (`<u, l + g>`) or `"dp"` (`<l, g>`).
        head: `"concat"`: concatenate the attended vectors of all levels and
            classify them with one `Dense`; `"indep"`: one `Dense` per level,
            logits averaged.
        attention_layers: sorted unique 1-based conv-layer indices in 1..13
            carrying attention (paper: `(7, 10, 13)`, "att3").
        normalization: `"softmax"` over space or `"sigmoid"` gates.
        attention: `True` (the default) builds the attention heads; `None`
            the no-attention baseline: the same VGG and `g`, with the
            classifier on `g`. `attention_layers=()` does the same. `False`
            still means the baseline but is deprecated (a
            `DeprecationWarning`).
        global_dim: width of `g` (and of every attended vector).
        width: multiplier of every conv width (rounded, at least 1).
        name: model name; defaults to `"ltpa_vgg"` or `"vgg_baseline"`.

    Returns:
        A functional `keras.Model` mapping images to float32 class
        probabilities `(batch, num_classes)` (the layer before is `logits`).

    Raises:
        ValueError: on an invalid argument; the message names `ltpa_vgg`,
            the argument and the allowed values.

    Example:
    >>> import keras_attn
    >>> model = keras_attn.models.ltpa_vgg((32, 32, 3), 100)
    >>> model.get_layer("attention_7").output[1].shape
    (None, 32, 32)
    """
    attention = attention_switch(_NAME, attention)
    layers = _check_arguments(
        input_shape, num_classes, compatibility, head, attention_layers,
        normalization, global_dim, width,
    )
    use_attention = attention and bool(layers)
    inputs = keras.Input(tuple(input_shape), name="images")
    x = inputs
    local = {}
    for k, channels in enumerate(_VGG16_WIDTHS, start=1):
        x = _conv_bn_relu(x, _scaled(channels, width), f"conv{k}")
        local[k] = x
        if k in _POOL_AFTER:
            x = keras.layers.MaxPooling2D(
                2, padding="same", name=f"conv{k}_pool"
            )(x)
    for k, channels in enumerate(_GLOBAL_WIDTHS, start=14):
        x = _conv_bn_relu(x, _scaled(channels, width), f"conv{k}")
        x = keras.layers.MaxPooling2D(
            2, padding="same", name=f"conv{k}_pool"
        )(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    g = keras.layers.Dense(global_dim, activation="relu", name="fc1")(x)

    if not use_attention:
        logits = keras.layers.Dense(num_classes, name="logits")(g)
    else:
        attended = []
        for k in layers:
            g_a, _ = LTPAAttention(
                compatibility, normalization, name=f"attention_{k}"
            )([local[k], g])
            attended.append(g_a)
        if head == "concat":
            if len(attended) > 1:
                features = keras.layers.Concatenate(name="attention_concat")(
                    attended
                )
            else:
                features = attended[0]
            logits = keras.layers.Dense(num_classes, name="logits")(features)
        elif len(attended) == 1:
            logits = keras.layers.Dense(num_classes, name="logits")(
                attended[0]
            )
        else:
            per_level = [
                keras.layers.Dense(num_classes, name=f"logits_{k}")(g_a)
                for k, g_a in zip(layers, attended, strict=True)
            ]
            logits = keras.layers.Average(name="logits")(per_level)
    probabilities = keras.layers.Activation(
        "softmax", dtype="float32", name="probabilities"
    )(logits)
    if name is None:
        name = "ltpa_vgg" if use_attention else "vgg_baseline"
    return keras.Model(inputs, probabilities, name=name)
