"""Tests for `keras_attn.models.aa_wide_resnet`."""

import math

import keras
import numpy as np
import pytest

from keras_attn.layers import AttentionAugmentedConv2D
from keras_attn.models import aa_resnet
from keras_attn.models import aa_wide_resnet
from keras_attn.models import attention_model
from keras_attn.models.aa_resnet import attention_depths
from tests import harness

# A tiny AA-WRN-10-1: one block per group, widths 16/32/64, 2 heads.
TINY = {"depth": 10, "width": 1, "num_heads": 2, "min_key_dims_per_head": 2}


def _tiny(input_shape=(16, 16, 3), num_classes=5, **kwargs):
    return aa_wide_resnet(input_shape, num_classes, **{**TINY, **kwargs})


def _x(shape=(16, 16, 3), batch=2, seed=1):
    return harness.random_inputs([(batch, *shape)], seed=seed)[0]


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def expected_trainable(input_shape, num_classes, depth, width, attention,
                       num_heads=8, key_ratio=0.2, value_ratio=0.1,
                       min_dims=20):
    """Trainable parameters, counted from the WRN / AA definitions."""
    height, width_px, channels = input_shape
    total = 9 * channels * 16  # stem
    cin = 16
    for i, filters in enumerate((16 * width, 32 * width, 64 * width)):
        for j in range((depth - 4) // 6):
            strides = 2 if i > 0 and j == 0 else 1
            height = math.ceil(height / strides)
            width_px = math.ceil(width_px / strides)
            total += 2 * cin  # pre-activation BN
            if cin != filters or strides != 1:
                total += cin * filters  # 1x1 projection
            if attention:
                dk = num_heads * max(
                    min_dims, round(key_ratio * filters / num_heads)
                )
                dv = num_heads * max(
                    1, round(value_ratio * filters / num_heads)
                )
                total += (9 * cin + 1) * (filters - dv)  # conv part
                total += (cin + 1) * (2 * dk + dv)  # qkv
                total += (dv + 1) * dv  # attention output
                total += (2 * height - 1 + 2 * width_px - 1) * dk // num_heads
            else:
                total += 9 * cin * filters
            total += 2 * filters + 9 * filters * filters  # mid BN, conv2
            cin = filters
    return total + 2 * cin + cin * num_classes + num_classes


def test_paper_depths_for_wrn_28_10():
    # kappa = 0.2, upsilon = 0.1, >= 20 key dims per head, Nh = 8.
    assert [attention_depths(f) for f in (160, 320, 640)] == [
        (160, 16),
        (160, 32),
        (160, 64),
    ]
    assert attention_depths(64, num_heads=2, min_key_dims_per_head=2) == (
        12, 6,
    )


@pytest.mark.parametrize("input_shape", [(32, 32, 3), (28, 28, 1)])
@pytest.mark.parametrize("attention", [True, None])
def test_small_inputs_output_probabilities(input_shape, attention):
    model = _tiny(input_shape, 7, attention=attention)
    probs = harness.run(model, _x(input_shape))[0]
    assert probs.shape == (2, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert _trainable(model) == expected_trainable(
        input_shape, 7, 10, 1, attention, num_heads=2, min_dims=2
    )


def test_baseline_has_no_attention():
    aa, plain = _tiny(), _tiny(attention=None)
    aa_layers = [
        layer for layer in aa.layers
        if isinstance(layer, AttentionAugmentedConv2D)
    ]
    assert [layer.name for layer in aa_layers] == [
        "group1_block1_aa", "group2_block1_aa", "group3_block1_aa",
    ]
    assert [layer.strides for layer in aa_layers] == [1, 2, 2]
    assert not any(
        isinstance(layer, AttentionAugmentedConv2D) for layer in plain.layers
    )
    # As in the paper, augmenting does not add parameters here: the dv
    # channels removed from each 3x3 conv outweigh the 1x1 q, k, v convs.
    assert aa.count_params() < plain.count_params()
    assert aa.name == "aa_wrn10_1" and plain.name == "wrn10_1"
    with pytest.raises(ValueError):
        attention_model(plain)


def test_paper_wrn_28_10_parameter_counts():
    # Paper, CIFAR-100: baseline 36.3M, AA-WRN 36.2M parameters, i.e. the
    # augmented model is slightly smaller.
    aa = aa_wide_resnet((32, 32, 3), 100)
    plain = aa_wide_resnet((32, 32, 3), 100, attention=None)
    assert _trainable(aa) == expected_trainable((32, 32, 3), 100, 28, 10, True)
    assert _trainable(plain) == expected_trainable(
        (32, 32, 3), 100, 28, 10, False
    )
    assert 36.0e6 < aa.count_params() < plain.count_params() < 36.6e6


def test_attention_maps_in_graph():
    model = _tiny(relative=False)
    maps = attention_model(model)(_x())
    assert sorted(maps) == [
        "group1_block1_aa", "group2_block1_aa", "group3_block1_aa",
    ]
    for name, tokens in zip(sorted(maps), (256, 64, 16), strict=True):
        m = np.asarray(keras.ops.convert_to_numpy(maps[name]))
        assert m.shape == (2, 2, tokens, tokens) and m.dtype == np.float32
        np.testing.assert_allclose(m.sum(axis=-1), 1.0, atol=1e-5)


def test_variable_input_size():
    model = _tiny((None, None, 3))
    for size in [(16, 16), (12, 20)]:
        probs = harness.run(model, _x((*size, 3)))[0]
        assert probs.shape == (2, 5)
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)


def test_gradients_reach_all_weights():
    model = _tiny((8, 8, 3), dropout_rate=0.2)
    harness.assert_gradients_reach_all_weights(model, _x((8, 8, 3)))


def test_keras_file_roundtrip(tmp_path):
    model = _tiny((12, 12, 3))
    harness.assert_keras_file_roundtrip(
        model, _x((12, 12, 3), seed=2), tmp_path, atol=1e-5
    )


@pytest.mark.tf_only
def test_tflite_builtins_match():
    model = _tiny((12, 12, 3))
    harness.assert_tflite_matches(model, _x((12, 12, 3), batch=1, seed=3))


def test_224_build():
    model = _tiny((224, 224, 3), 1000)
    assert model.output_shape == (None, 1000)
    assert _trainable(model) == expected_trainable(
        (224, 224, 3), 1000, 10, 1, True, num_heads=2, min_dims=2
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (32, 32)}, "`input_shape`"),
        ({"input_shape": (32, 32, None)}, "`input_shape`"),
        ({"num_classes": 0}, "`num_classes`"),
        ({"depth": 12}, "`depth`.*6n \\+ 4"),
        ({"depth": 4}, "`depth`"),
        ({"width": 0}, "`width`"),
        ({"attention": "aa"}, "`attention`"),
        ({"key_ratio": 0}, "`key_ratio`"),
        ({"value_ratio": 1.0}, "`value_ratio`"),
        ({"num_heads": 16}, "`value_ratio`.*dv < filters"),
        ({"min_key_dims_per_head": 0}, "`min_key_dims_per_head`"),
        ({"relative": None}, "`relative`"),
        ({"dropout_rate": 1.0}, "`dropout_rate`"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"input_shape": (32, 32, 3), "num_classes": 10, **TINY, **kwargs}
    with pytest.raises(ValueError, match=f"aa_wide_resnet: invalid {match}"):
        aa_wide_resnet(**args)


# ----------------------------------------------------------------------------
# aa_resnet: the ImageNet setting (bottleneck blocks, last three stages)

TINY_RESNET = {"num_heads": 2, "min_key_dims_per_head": 2}


def _aa_layers(model):
    return [
        layer for layer in model.layers
        if isinstance(layer, AttentionAugmentedConv2D)
    ]


def _augmented_delta(filters, height, width, num_heads=8, key_ratio=0.2,
                     value_ratio=0.1, min_dims=20):
    """Trainable parameters an augmented 3x3 conv (Fin = Fout = filters,
    output grid height x width) adds over the plain bias-free conv."""
    dk = num_heads * max(min_dims, round(key_ratio * filters / num_heads))
    dv = num_heads * max(1, round(value_ratio * filters / num_heads))
    added = (9 * filters + 1) * (filters - dv)  # conv part, with bias
    added += (filters + 1) * (2 * dk + dv)  # qkv 1x1
    added += (dv + 1) * dv  # attention output projection
    added += (2 * height - 1 + 2 * width - 1) * dk // num_heads  # relative
    return added - 9 * filters * filters


def test_aa_resnet50_parameters_match_definition_and_paper():
    aa = aa_resnet((224, 224, 3), 1000)
    plain = aa_resnet((224, 224, 3), 1000, attention=None)
    # The baseline is resnet-50 (torchvision's count, see test_resnet).
    assert _trainable(plain) == 25_557_032
    # Stages 2-4 (widths 128/256/512, 4/6/3 blocks) at 28/14/7 pixels.
    delta = sum(
        blocks * _augmented_delta(width, size, size)
        for width, blocks, size in ((128, 4, 28), (256, 6, 14), (512, 3, 7))
    )
    assert _trainable(aa) == _trainable(plain) + delta
    # Paper, Table 2: AA-ResNet-50 25.8M parameters (ResNet-50: 25.6M).
    assert abs(_trainable(aa) - 25.8e6) < 0.05e6
    names = [layer.name for layer in _aa_layers(aa)]
    assert len(names) == 13 and names[0] == "stage2_block1_2_aa"
    assert not any(name.startswith("stage1") for name in names)
    assert aa.name == "aa_resnet50" and plain.name == "resnet50"


def test_aa_resnet_tiny_basic_blocks():
    model = aa_resnet((32, 32, 3), 7, depth=18, **TINY_RESNET)
    layers = _aa_layers(model)
    assert [layer.name for layer in layers] == [
        f"stage{i}_block{j}_1_aa" for i in (2, 3, 4) for j in (1, 2)
    ]
    assert [layer.strides for layer in layers] == [2, 1] * 3
    probs = harness.run(model, _x((32, 32, 3)))[0]
    assert probs.shape == (2, 7)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    maps = attention_model(model)(_x((32, 32, 3)))
    m = np.asarray(keras.ops.convert_to_numpy(maps["stage4_block2_1_aa"]))
    assert m.shape == (2, 2, 16, 16)
    np.testing.assert_allclose(m.sum(axis=-1), 1.0, atol=1e-5)


def test_aa_resnet_cifar_depth_and_chosen_stages():
    model = aa_resnet((16, 16, 3), 4, depth=20, **TINY_RESNET)
    # CIFAR depths have three stages; the default skips the first.
    assert {layer.name.split("_")[0] for layer in _aa_layers(model)} == {
        "stage2", "stage3",
    }
    only_last = aa_resnet(
        (16, 16, 3), 4, depth=20, augmented_stages=(3,), **TINY_RESNET
    )
    assert {layer.name.split("_")[0] for layer in _aa_layers(only_last)} == {
        "stage3",
    }


def test_aa_resnet_gradients_and_roundtrip(tmp_path):
    model = aa_resnet(
        (16, 16, 3), 3, depth=18, augmented_stages=(3, 4), **TINY_RESNET
    )
    x = _x((16, 16, 3), seed=3)
    harness.assert_gradients_reach_all_weights(model, x)
    harness.assert_keras_file_roundtrip(model, x, tmp_path, atol=1e-5)


def test_aa_resnet_unknown_size():
    model = aa_resnet((None, None, 3), 5, depth=18, **TINY_RESNET)
    probs = harness.run(model, _x((64, 80, 3)))[0]
    assert probs.shape == (2, 5)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"depth": 51}, "depth"),
        ({"augmented_stages": (5,)}, "augmented_stages"),
        ({"augmented_stages": ()}, "augmented_stages"),
        ({"augmented_stages": (2, 2)}, "augmented_stages"),
        ({"augmented_stages": 2}, "augmented_stages"),
        ({"value_ratio": 1.0}, "value_ratio"),
        ({"key_ratio": 0}, "key_ratio"),
        ({"num_heads": 0}, "num_heads"),
        ({"attention": "yes"}, "attention"),
        ({"num_heads": 128}, "value_ratio"),  # stage 2: dv = 128 filters
    ],
)
def test_aa_resnet_bad_arguments(kwargs, argument):
    args = {"depth": 18, **kwargs}
    with pytest.raises(ValueError, match=f"^aa_resnet.*{argument}"):
        aa_resnet((32, 32, 3), 10, **args)
