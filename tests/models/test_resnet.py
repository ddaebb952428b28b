"""Tests for `keras_attn.models.resnet`."""

import keras
import numpy as np
import pytest

from keras_attn.layers import CBAM
from keras_attn.layers import SqueezeExcite
from keras_attn.models import attention_model
from keras_attn.models import resnet
from tests import harness

SMALL_SHAPES = [(32, 32, 3), (28, 28, 1)]
ATTENTIONS = [None, "se", "cbam"]


# ----------------------------------------------------------------------------
# Independent parameter counts, from the block widths.


def _conv_bn(cin, cout, k, trainable_only):
    bn = 2 if trainable_only else 4  # gamma, beta (+ moving mean, variance)
    return k * k * cin * cout + bn * cout


def _plan(depth):
    """Per block: (kind, in_channels, width, out_channels, stride)."""
    if depth in (20, 32, 44, 56, 110):
        kind, widths, blocks = "basic", (16, 32, 64), [(depth - 2) // 6] * 3
    else:
        kind, blocks = {
            18: ("basic", (2, 2, 2, 2)),
            34: ("basic", (3, 4, 6, 3)),
            50: ("bottleneck", (3, 4, 6, 3)),
            101: ("bottleneck", (3, 4, 23, 3)),
        }[depth]
        widths = (64, 128, 256, 512)
    expansion = 4 if kind == "bottleneck" else 1
    cin, out = widths[0], []
    for stage, (width, n) in enumerate(zip(widths, blocks, strict=True)):
        for j in range(n):
            stride = 2 if stage > 0 and j == 0 else 1
            out.append((kind, cin, width, width * expansion, stride))
            cin = width * expansion
    return widths[0], out


def expected_params(depth, channels, num_classes, trainable_only=False):
    stem_width, blocks = _plan(depth)
    k_stem = 3 if depth in (20, 32, 44, 56, 110) else 7
    total = _conv_bn(channels, stem_width, k_stem, trainable_only)
    for kind, cin, width, cout, stride in blocks:
        if kind == "basic":
            total += _conv_bn(cin, width, 3, trainable_only)
            total += _conv_bn(width, width, 3, trainable_only)
        else:
            total += _conv_bn(cin, width, 1, trainable_only)
            total += _conv_bn(width, width, 3, trainable_only)
            total += _conv_bn(width, cout, 1, trainable_only)
        if stride != 1 or cin != cout:
            total += _conv_bn(cin, cout, 1, trainable_only)
    return total + blocks[-1][3] * num_classes + num_classes


def se_extra(depth, units):
    """SE (with biases) on every block's output channels C."""
    return sum(2 * c * units(c) + units(c) + c for *_, c, _ in _plan(depth)[1])


def cbam_extra(depth, reduction=16, kernel_size=7):
    total = 0
    for *_, c, _ in _plan(depth)[1]:
        hidden = max(1, c // reduction)
        total += 2 * c * hidden + hidden + c  # shared channel MLP
        total += kernel_size * kernel_size * 2 + 1  # spatial conv
    return total


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _keras_attn_layers(model):
    return [
        layer
        for layer in model.layers
        if type(layer).__module__.startswith("keras_attn.layers")
    ]


def _perturb_batchnorm(model, seed=0):
    # Non-default BN statistics, so saving/export must carry them.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n),
                    0.1 * rng.standard_normal(n),
                    0.1 * rng.standard_normal(n),
                    rng.uniform(0.5, 2.0, n),
                ]
            )


# ----------------------------------------------------------------------------
# Small inputs


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("input_shape", SMALL_SHAPES)
def test_small_input_outputs_probabilities(input_shape, attention):
    model = resnet(input_shape, 10, 20, attention=attention)
    assert model.output_shape == (None, 10)
    assert model.get_layer("probabilities").dtype_policy.name == "float32"
    x = harness.random_inputs([(2, *input_shape)], seed=1)[0]
    probs = harness.run(model, x)[0]
    assert probs.shape == (2, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    # 3x3 stride-1 stem, no max-pool: the last stage sees H/4 x W/4.
    names = [layer.name for layer in model.layers]
    assert "stem_pool" not in names
    last = model.get_layer("stage3_block3_out").output.shape
    assert tuple(last[1:3]) == tuple(-(-s // 4) for s in input_shape[:2])


@pytest.mark.parametrize("input_shape", SMALL_SHAPES)
def test_baseline_has_no_attention_and_fewer_params(input_shape):
    models = {a: resnet(input_shape, 10, 20, attention=a) for a in ATTENTIONS}
    baseline = models[None]
    assert _keras_attn_layers(baseline) == []
    expected = expected_params(20, input_shape[-1], 10)
    assert baseline.count_params() == expected
    for attention in ("se", "cbam"):
        assert baseline.count_params() < models[attention].count_params()
    cbam = models["cbam"].count_params() - baseline.count_params()
    assert cbam == cbam_extra(20)


@pytest.mark.parametrize(
    ("attention_kwargs", "units"),
    [
        (None, lambda c: max(1, int(np.floor(c * 0.25 + 0.5)))),
        ({"reduction": 16}, lambda c: max(1, c // 16)),
        ({"ratio": 0.5}, lambda c: max(1, int(np.floor(c * 0.5 + 0.5)))),
    ],
)
def test_se_extra_parameters_match_block_widths(attention_kwargs, units):
    baseline = resnet((32, 32, 3), 10, 20)
    se = resnet((32, 32, 3), 10, 20, "se", attention_kwargs)
    assert se.count_params() - baseline.count_params() == se_extra(20, units)


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_attention_layers_named_and_maps_in_graph(attention):
    model = resnet((32, 32, 3), 10, 20, attention=attention)
    layers = _keras_attn_layers(model)
    expected = [
        f"stage{i}_block{j}_{attention}" for i in (1, 2, 3) for j in (1, 2, 3)
    ]
    assert sorted(layer.name for layer in layers) == sorted(expected)
    cls = {"se": SqueezeExcite, "cbam": CBAM}[attention]
    assert all(type(layer) is cls for layer in layers)
    maps = attention_model(model)
    x = harness.random_inputs([(2, 32, 32, 3)], seed=2)[0]
    values = {
        k: keras.ops.convert_to_numpy(v)
        for k, v in maps(x, training=False).items()
    }
    if attention == "se":
        assert values["stage2_block1_se"].shape == (2, 32)
    else:
        assert values["stage2_block1_cbam_1"].shape == (2, 32)
        assert values["stage2_block1_cbam_2"].shape == (2, 16, 16)
        assert values["stage3_block3_cbam_2"].shape == (2, 8, 8)
    assert len(values) == 9 * (2 if attention == "cbam" else 1)
    assert all(v.dtype == np.float32 for v in values.values())


def test_attention_as_class_instance_and_true():
    template = CBAM(reduction=4, kernel_size=3)
    by_instance = resnet((28, 28, 1), 5, 20, attention=template)
    layers = _keras_attn_layers(by_instance)
    assert len(layers) == 9 and len({id(layer) for layer in layers}) == 9
    assert all(layer.kernel_size == 3 for layer in layers)
    assert layers[0].name.endswith("_cbam")
    by_class = resnet((28, 28, 1), 5, 20, CBAM, {"reduction": 4})
    # Same MLPs; the 7x7 spatial conv has 2 * (49 - 9) more weights.
    assert by_class.count_params() - by_instance.count_params() == 9 * 80
    by_true = resnet((28, 28, 1), 5, 20, attention=True)
    assert by_true.name == "resnet20_se"
    layers = _keras_attn_layers(by_true)
    assert all(type(layer) is SqueezeExcite for layer in layers)


@pytest.mark.parametrize(
    ("input_shape", "pooled"),
    [((63, 63, 3), False), ((64, 64, 3), True), ((None, None, 3), True)],
)
def test_stem_depends_on_input_size(input_shape, pooled):
    model = resnet(input_shape, 4, 20)
    names = [layer.name for layer in model.layers]
    assert ("stem_pool" in names) is pooled
    kernel = model.get_layer("stem_conv").kernel.shape
    assert tuple(kernel[:2]) == ((7, 7) if pooled else (3, 3))


def test_variable_input_size():
    model = resnet((None, None, 3), 4, 20, attention="cbam")
    for size in (64, 72):
        x = harness.random_inputs([(1, size, size, 3)], seed=3)[0]
        probs = harness.run(model, x)[0]
        assert probs.shape == (1, 4)
        np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)


def test_imagenet_depth_on_small_input():
    model = resnet((32, 32, 3), 10, 18, attention="se")
    baseline = resnet((32, 32, 3), 10, 18)
    assert (
        baseline.count_params()
        == expected_params(18, 3, 10) - (7 * 7 - 3 * 3) * 3 * 64
    )  # the small-input stem is 3x3
    extra = se_extra(18, lambda c: max(1, int(np.floor(c * 0.25 + 0.5))))
    assert model.count_params() - baseline.count_params() == extra
    x = harness.random_inputs([(1, 32, 32, 3)], seed=4)[0]
    assert harness.run(model, x)[0].shape == (1, 10)


def test_mixed_precision_outputs_float32_probabilities():
    keras.config.set_dtype_policy("mixed_float16")
    model = resnet((28, 28, 1), 10, 20, attention="cbam")
    x = harness.random_inputs([(2, 28, 28, 1)], seed=5, scale=1e3)[0]
    probs = harness.run(model, x)[0]
    assert probs.dtype == np.float32 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-3)
    assert all(w.dtype == "float32" for w in model.weights)


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_gradients_reach_all_weights(attention):
    model = resnet((28, 28, 1), 10, 20, attention=attention)
    x = harness.random_inputs([(2, 28, 28, 1)], seed=6)[0]
    harness.assert_gradients_reach_all_weights(model, x)


# ----------------------------------------------------------------------------
# Saving and export


@pytest.mark.parametrize(
    ("input_shape", "attention"),
    [((32, 32, 3), "cbam"), ((28, 28, 1), "se")],
)
def test_keras_file_roundtrip(input_shape, attention, tmp_path):
    model = resnet(input_shape, 10, 20, attention=attention)
    _perturb_batchnorm(model)
    x = harness.random_inputs([(2, *input_shape)], seed=7)[0]
    harness.assert_keras_file_roundtrip(model, x, tmp_path, atol=1e-5)


@pytest.mark.tf_only
def test_tflite_builtins_match_cbam():
    model = resnet((32, 32, 3), 10, 20, attention="cbam")
    _perturb_batchnorm(model, seed=1)
    x = harness.random_inputs([(2, 32, 32, 3)], seed=8)[0]
    harness.assert_tflite_matches(model, x)


# ----------------------------------------------------------------------------
# 224x224: ImageNet configuration (build and count only)


def test_resnet50_imagenet_parameter_count():
    model = resnet((224, 224, 3), 1000, 50)
    assert model.output_shape == (None, 1000)
    assert model.get_layer("stem_pool").output.shape[1:3] == (56, 56)
    assert model.get_layer("stage4_block3_out").output.shape[1:] == (
        7,
        7,
        2048,
    )
    # torchvision's resnet50 (no conv bias): 25,557,032 parameters.
    assert _trainable(model) == 25_557_032
    # Keras also counts BN moving mean/variance: 2 x 26,560 channels.
    assert model.count_params() == 25_557_032 + 53_120
    assert model.count_params() == expected_params(50, 3, 1000)


def test_se_resnet50_parameter_count():
    # timm's seresnet50 (SE reduction 16, biased MLP): 28,088,024, the
    # paper's "28.1M".
    model = resnet((224, 224, 3), 1000, 50, "se", {"reduction": 16})
    assert _trainable(model) == 28_088_024
    assert _trainable(model) - 25_557_032 == se_extra(50, lambda c: c // 16)


# ----------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 21}, "resnet: invalid `depth`.*18, 20, 32"),
        ({"depth": 8}, "resnet: invalid `depth`"),
        ({"depth": "50"}, "resnet: invalid `depth`"),
        ({"depth": True}, "resnet: invalid `depth`"),
        ({"num_classes": 0}, "resnet: invalid `num_classes`"),
        ({"num_classes": 2.5}, "resnet: invalid `num_classes`"),
        ({"input_shape": (32, 32)}, "resnet: invalid `input_shape`"),
        ({"input_shape": (1, 32, 32, 3)}, "resnet: invalid `input_shape`"),
        ({"input_shape": (32, 32, None)}, "resnet: invalid `input_shape`"),
        ({"input_shape": (0, 32, 3)}, "resnet: invalid `input_shape`"),
        ({"input_shape": "32x32"}, "resnet: invalid `input_shape`"),
        ({"attention": "eca"}, "resnet: invalid `attention`.*'cbam'"),
        ({"attention": 3}, "resnet: invalid `attention`"),
        (
            {"attention": "se", "attention_kwargs": {"reduction": 0}},
            "resnet: .*SqueezeExcite: invalid `reduction`",
        ),
        (
            {"attention": "se", "attention_kwargs": [("reduction", 4)]},
            "resnet: invalid `attention_kwargs`",
        ),
        (
            {"attention": "cbam", "attention_kwargs": {"bogus": 1}},
            "resnet: invalid `attention` or `attention_kwargs`",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"input_shape": (32, 32, 3), "num_classes": 10, "depth": 20}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        resnet(**arguments)
