"""Tests for `keras_attn.models.sasa_resnet`."""

import keras
import numpy as np
import pytest

from keras_attn.layers import AttentionStem
from keras_attn.layers import LocalSelfAttention2D
from keras_attn.models import attention_model
from keras_attn.models import sasa_resnet
from keras_attn.models.sasa_resnet import scaled_width
from tests import harness

# A tiny SASA-ResNet-26: widths 4/8/16/32 (x4 expansion), 2 heads, 3x3 windows.
TINY = {"depth": 26, "width": 1 / 16, "num_heads": 2, "kernel_size": 3}
BLOCKS = {26: (1, 2, 4, 1), 50: (3, 4, 6, 3)}


def _tiny(input_shape=(16, 16, 3), num_classes=5, **kwargs):
    return sasa_resnet(input_shape, num_classes, **{**TINY, **kwargs})


def _x(shape=(16, 16, 3), batch=2, seed=1):
    return harness.random_inputs([(batch, *shape)], seed=seed)[0]


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _names(depth):
    return [
        f"stage{i}_block{j}_sasa"
        for i, n in enumerate(BLOCKS[depth], start=1)
        for j in range(1, n + 1)
    ]


def expected_trainable(channels, num_classes, depth, attention, stem="conv",
                       small=True, width=1.0, num_heads=8, kernel_size=7):
    """Trainable parameters, counted from the ResNet / SASA definitions."""
    widths = [scaled_width(w, width, num_heads) for w in (64, 128, 256, 512)]
    cin = widths[0]
    if stem == "conv":
        total = (9 if small else 49) * channels * cin + 2 * cin
    else:
        # q, k, 4 value mixtures; row, column and mixture embeddings; BN.
        total = 6 * channels * cin + (4 + 4 + 4) * cin + 2 * cin
    for i, (w, blocks) in enumerate(zip(widths, BLOCKS[depth], strict=True)):
        for j in range(blocks):
            out = 4 * w
            if cin != out or (i > 0 and j == 0):
                total += cin * out + 2 * out  # 1x1 projection + BN
            total += cin * w + 2 * w  # 1x1 reduce + BN
            if attention:
                total += 3 * w * w + kernel_size * w  # q, k, v; rel rows/cols
            else:
                total += 9 * w * w
            total += 2 * w  # BN after the spatial op
            total += w * out + 2 * out  # 1x1 expand + BN
            cin = out
    return total + cin * num_classes + num_classes


def test_scaled_width():
    assert scaled_width(64, 1.0, 8) == 64
    assert scaled_width(64, 1 / 16, 2) == 4
    assert scaled_width(64, 0.01, 8) == 8  # at least one multiple
    assert scaled_width(100, 1.0, 3) == 102  # multiple of lcm(3, 2) = 6


@pytest.mark.parametrize("input_shape", [(32, 32, 3), (28, 28, 1)])
@pytest.mark.parametrize("stem", ["conv", "attention"])
@pytest.mark.parametrize("attention", [True, None])
def test_small_inputs_output_probabilities(input_shape, stem, attention):
    model = _tiny(input_shape, 7, stem=stem, attention=attention)
    probs = harness.run(model, _x(input_shape))[0]
    assert probs.shape == (2, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert _trainable(model) == expected_trainable(
        input_shape[-1], 7, 26, attention, stem, width=1 / 16, num_heads=2,
        kernel_size=3,
    )
    # No pooling in the small-input stems: 28 -> 28 -> 14 -> 7 -> 3 with
    # attention (2x2 "valid" pooling floors), 7 -> 4 with strided convs.
    side = input_shape[0] // 8 if attention else -(-input_shape[0] // 8)
    final = model.get_layer("stage4_block1_out").output.shape
    assert final[1:3] == (side, side)


def test_baseline_has_no_attention():
    sasa, plain = _tiny(), _tiny(attention=None)
    layers = [
        layer for layer in sasa.layers
        if isinstance(layer, LocalSelfAttention2D)
    ]
    assert [layer.name for layer in layers] == _names(26)
    assert [layer.strides for layer in layers] == [1, 2, 1, 2, 1, 1, 1, 2]
    assert {(layer.kernel_size, layer.num_heads) for layer in layers} == {
        (3, 2)
    }
    assert not any(
        isinstance(layer, (LocalSelfAttention2D, AttentionStem))
        for layer in plain.layers
    )
    assert sasa.count_params() < plain.count_params()
    assert sasa.name == "sasa_resnet26" and plain.name == "resnet26"
    with pytest.raises(ValueError):
        attention_model(plain)


@pytest.mark.parametrize("stem", ["conv", "attention"])
def test_attention_maps_collected(stem):
    model = _tiny(stem=stem)
    maps = attention_model(model)(_x())
    expected = _names(26) + (["stem_sasa"] if stem == "attention" else [])
    assert sorted(maps) == sorted(expected)
    # Maps are taken before each block's pooling: 16 16 | 16 8 | 8 4 4 4 | 4.
    sizes = [16, 16, 8, 8, 4, 4, 4, 4]
    for name, size in zip(_names(26), sizes, strict=True):
        m = np.asarray(keras.ops.convert_to_numpy(maps[name]))
        assert m.shape == (2, size, size, 2, 9) and m.dtype == np.float32
        np.testing.assert_allclose(m.sum(axis=-1), 1.0, atol=1e-5)
    if stem == "attention":
        m = np.asarray(keras.ops.convert_to_numpy(maps["stem_sasa"]))
        assert m.shape == (2, 16, 16, 16) and m.dtype == np.float32
        np.testing.assert_allclose(m.sum(axis=-1), 1.0, atol=1e-5)


def test_odd_sizes_and_variable_input():
    # Unknown sizes get the 4x-reducing ImageNet stem; 100x75 -> 25x19 ->
    # 12x9 -> 6x4 -> 3x2: the pooled shortcuts must floor odd sizes like
    # the attention branch (a stride-2 "same" 1x1 conv would round up).
    model = _tiny((None, None, 1))
    for size in [(64, 64), (100, 75)]:
        probs = harness.run(model, _x((*size, 1)))[0]
        assert probs.shape == (2, 5)
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)


def test_gradients_reach_all_weights():
    model = _tiny((8, 8, 3), stem="attention")
    harness.assert_gradients_reach_all_weights(model, _x((8, 8, 3)))


def test_keras_file_roundtrip(tmp_path):
    model = _tiny((12, 12, 3), stem="attention")
    harness.randomize_weights(model, seed=4)
    harness.assert_keras_file_roundtrip(
        model, _x((12, 12, 3), seed=2), tmp_path, atol=1e-5
    )


@pytest.mark.tf_only
def test_tflite_builtins_match():
    # The attention stem: covers AttentionStem and LocalSelfAttention2D.
    model = _tiny((8, 8, 3), stem="attention")
    harness.assert_tflite_matches(model, _x((8, 8, 3), batch=1, seed=3))


@pytest.mark.parametrize("stem", ["conv", "attention"])
def test_224_build_large_stem(stem):
    model = _tiny((224, 224, 3), 1000, stem=stem)
    assert model.output_shape == (None, 1000)
    # Both large stems reduce 224 -> 56 before stage 1.
    assert model.get_layer("stem_pool").output.shape[1:3] == (56, 56)
    assert _trainable(model) == expected_trainable(
        3, 1000, 26, True, stem, small=False, width=1 / 16, num_heads=2,
        kernel_size=3,
    )


@pytest.mark.parametrize(
    ("depth", "attention", "paper_millions"),
    [(50, True, 18.0), (50, None, 25.6), (26, True, 10.3), (26, None, 13.7)],
)
def test_paper_parameter_counts(depth, attention, paper_millions):
    # Paper, Table 1 (ImageNet): ResNet-26 13.7M -> 10.3M, ResNet-50 25.6M
    # -> 18.0M (conv stem + attention).
    model = sasa_resnet((224, 224, 3), 1000, depth=depth, attention=attention)
    count = _trainable(model)
    assert count == expected_trainable(
        3, 1000, depth, attention, small=False
    )
    assert abs(count / 1e6 - paper_millions) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (32, 32)}, "`input_shape`"),
        ({"input_shape": (32, 32, None)}, "`input_shape`"),
        ({"num_classes": 0}, "`num_classes`"),
        ({"depth": 38}, "`depth`.*\\[26, 50\\]"),
        ({"depth": True}, "`depth`"),
        ({"stem": "patch"}, "`stem`"),
        ({"stem": None}, "`stem`"),
        ({"attention": "sasa"}, "`attention`"),
        ({"kernel_size": 4}, "`kernel_size`"),
        ({"num_heads": 0}, "`num_heads`"),
        ({"width": 0}, "`width`"),
        ({"width": "wide"}, "`width`"),
        ({"name": 3}, "`name`"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"input_shape": (32, 32, 3), "num_classes": 10, **TINY, **kwargs}
    with pytest.raises(ValueError, match=f"sasa_resnet: invalid {match}"):
        sasa_resnet(**args)
