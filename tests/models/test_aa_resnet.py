"""Tests for `keras_attn.models.aa_wide_resnet`."""

import math

import keras
import numpy as np
import pytest

from keras_attn.layers import AttentionAugmentedConv2D
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
@pytest.mark.parametrize("attention", [True, False])
def test_small_inputs_output_probabilities(input_shape, attention):
    model = _tiny(input_shape, 7, attention=attention)
    probs = harness.run(model, _x(input_shape))[0]
    assert probs.shape == (2, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert _trainable(model) == expected_trainable(
        input_shape, 7, 10, 1, attention, num_heads=2, min_dims=2
    )


def test_baseline_has_no_attention():
    aa, plain = _tiny(), _tiny(attention=False)
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
    plain = aa_wide_resnet((32, 32, 3), 100, attention=False)
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
