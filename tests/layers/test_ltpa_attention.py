"""Tests for `LTPAAttention` (Learn to Pay Attention, Jetley et al. 2018)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.layers import LTPAAttention
from tests import harness

COMBOS = [
    (compatibility, normalization)
    for compatibility in ("pc", "dp")
    for normalization in ("softmax", "sigmoid")
]
# (C, C'): equal widths (no projection) and l projected to g's width.
WIDTHS = [(4, 4), (4, 6)]


def _numpy(variable):
    return None if variable is None else np.asarray(
        ops.convert_to_numpy(variable), dtype="float64"
    )


def reference(layer, local, global_):
    """Independent NumPy LTPA from the layer's own weights (float64)."""
    local = np.asarray(local, dtype="float64")
    global_ = np.asarray(global_, dtype="float64")
    projection = _numpy(layer.projection)
    if projection is not None:
        local = np.einsum("bhwc,cd->bhwd", local, projection)
    if layer.compatibility == "pc":
        u = _numpy(layer.u)[:, 0]
        # c_i = <u, l_i + g>, written literally (the layer splits the sum).
        scores = np.einsum("bhwd,d->bhw", local + global_[:, None, None], u)
    else:
        scores = np.einsum("bhwd,bd->bhw", local, global_)
    if layer.normalization == "softmax":
        flat = scores.reshape(scores.shape[0], -1)
        flat = np.exp(flat - flat.max(axis=1, keepdims=True))
        attention = (flat / flat.sum(axis=1, keepdims=True)).reshape(
            scores.shape
        )
        pooled = np.einsum("bhw,bhwd->bd", attention, local)
    else:
        attention = 0.5 * (1.0 + np.tanh(0.5 * scores))  # stable sigmoid
        pooled = np.einsum("bhw,bhwd->bd", attention, local) / (
            scores.shape[1] * scores.shape[2]
        )
    return pooled, attention


def _inputs(channels, global_channels, size=(5, 6), seed=0, scale=1.0):
    return harness.random_inputs(
        [(2, *size, channels), (2, global_channels)], seed=seed, scale=scale
    )


def _model(layer, channels, global_channels, size=(5, 6)):
    return harness.wrap(layer, [(*size, channels), (global_channels,)])


@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("compatibility,normalization", COMBOS)
def test_matches_numpy_reference(compatibility, normalization, widths):
    channels, global_channels = widths
    layer = LTPAAttention(compatibility, normalization)
    model = _model(layer, channels, global_channels)
    inputs = _inputs(channels, global_channels)
    pooled, attention = harness.run(model, inputs)
    want_pooled, want_attention = reference(layer, *inputs)
    assert pooled.shape == (2, global_channels)
    assert attention.shape == (2, 5, 6)
    assert attention.dtype == np.float32
    np.testing.assert_allclose(pooled, want_pooled, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(attention, want_attention, atol=1e-5, rtol=0)


@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("compatibility,normalization", COMBOS)
def test_attention_map_range(compatibility, normalization, widths):
    layer = LTPAAttention(compatibility, normalization)
    _, attention = harness.to_numpy(layer(_inputs(*widths, seed=4)))
    if normalization == "softmax":
        np.testing.assert_allclose(attention.sum(axis=(1, 2)), 1.0, atol=1e-6)
    assert (attention >= 0).all() and (attention <= 1).all()
    # random inputs give a non-uniform map, or attention does nothing
    assert attention.std(axis=(1, 2)).min() > 1e-4


@pytest.mark.parametrize(
    "compatibility,widths,expected",
    [
        ("dp", (4, 4), {}),
        ("dp", (4, 6), {"projection": (4, 6)}),
        ("pc", (4, 4), {"u": (4, 1)}),
        ("pc", (4, 6), {"projection": (4, 6), "u": (6, 1)}),
    ],
)
def test_weights(compatibility, widths, expected):
    layer = LTPAAttention(compatibility)
    layer(_inputs(*widths))
    got = {w.name: tuple(w.shape) for w in layer.weights}
    assert got == expected
    assert len(layer.trainable_weights) == len(expected)


def test_dp_without_projection_is_weight_free_dot_product():
    # C == C' and "dp": nothing to learn, the output is fixed by l and g.
    local, global_ = _inputs(4, 4, seed=2)
    scores = np.einsum("bhwc,bc->bhw", local, global_)
    flat = np.exp(scores.reshape(2, -1) - scores.reshape(2, -1).max(1)[:, None])
    attention = (flat / flat.sum(1, keepdims=True)).reshape(scores.shape)
    pooled, got_attention = harness.to_numpy(
        LTPAAttention("dp", "softmax")([local, global_])
    )
    np.testing.assert_allclose(got_attention, attention, atol=1e-5)
    np.testing.assert_allclose(
        pooled, np.einsum("bhw,bhwc->bc", attention, local), atol=1e-5
    )


@pytest.mark.parametrize("normalization", ["softmax", "sigmoid"])
def test_pc_global_term(normalization):
    # <u, l_i + g> = <u, l_i> + <u, g>: under softmax the g term is a
    # constant shift and cancels (a property of the paper's "pc"), under
    # sigmoid it changes the gates.
    layer = LTPAAttention("pc", normalization)
    local, global_ = _inputs(4, 4, seed=6)
    _, first = harness.to_numpy(layer([local, global_]))
    _, second = harness.to_numpy(layer([local, global_ + 3.0]))
    if normalization == "softmax":
        np.testing.assert_allclose(first, second, atol=1e-6)
    else:
        assert np.abs(first - second).max() > 1e-3


@pytest.mark.parametrize("compatibility,normalization", COMBOS)
def test_variable_spatial_size(compatibility, normalization):
    layer = LTPAAttention(compatibility, normalization)
    model = _model(layer, 3, 5, size=(None, None))
    assert tuple(model.outputs[1].shape) == (None, None, None)
    for seed, size in ((0, (4, 7)), (1, (9, 3))):
        inputs = _inputs(3, 5, size=size, seed=seed)
        pooled, attention = harness.run(model, inputs)
        want_pooled, want_attention = reference(layer, *inputs)
        assert attention.shape == (2, *size)
        np.testing.assert_allclose(pooled, want_pooled, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(attention, want_attention, atol=1e-5)


def test_output_shape_and_spec():
    layer = LTPAAttention("pc")
    assert layer.compute_output_shape([(2, 5, 6, 4), (2, 6)]) == (
        (2, 6),
        (2, 5, 6),
    )
    pooled, attention = layer([keras.Input((None, 7, 4)), keras.Input((6,))])
    assert tuple(pooled.shape) == (None, 6)
    assert tuple(attention.shape) == (None, None, 7)
    assert pooled.dtype == "float32" and attention.dtype == "float32"


@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("compatibility,normalization", COMBOS)
def test_mixed_precision(compatibility, normalization, widths):
    channels, global_channels = widths
    harness.assert_mixed_precision(
        lambda **kw: LTPAAttention(compatibility, normalization, **kw),
        [(5, 6, channels), (global_channels,)],
        float32_outputs=(1,),
    )


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("compatibility,normalization", COMBOS)
def test_large_logits(compatibility, normalization, widths, dtype):
    # Scores reach ~1e8 (dp) / ~1e4 (pc): far beyond float16 and float32 exp.
    layer = LTPAAttention(compatibility, normalization, dtype=dtype)
    inputs = _inputs(*widths, seed=5, scale=1e4)
    pooled, attention = layer(inputs)
    want = "float16" if dtype == "mixed_float16" else "float32"
    assert keras.backend.standardize_dtype(pooled.dtype) == want
    assert keras.backend.standardize_dtype(attention.dtype) == "float32"
    pooled, attention = harness.to_numpy((pooled, attention))
    assert np.isfinite(pooled.astype("float32")).all()
    assert np.isfinite(attention).all()
    if normalization == "softmax":
        np.testing.assert_allclose(attention.sum(axis=(1, 2)), 1.0, atol=1e-6)
    if dtype == "float32":
        want_pooled, want_attention = reference(layer, *inputs)
        np.testing.assert_allclose(attention, want_attention, atol=1e-5)
        np.testing.assert_allclose(pooled, want_pooled, rtol=1e-4, atol=1e-1)


@pytest.mark.parametrize("compatibility,normalization", COMBOS)
def test_config_roundtrip(compatibility, normalization):
    harness.assert_config_roundtrip(
        LTPAAttention(compatibility, normalization, name="ltpa")
    )


@pytest.mark.parametrize(
    "compatibility,normalization", [("pc", "softmax"), ("dp", "sigmoid")]
)
def test_keras_file_roundtrip(compatibility, normalization, tmp_path):
    model = _model(LTPAAttention(compatibility, normalization), 4, 6)
    harness.assert_keras_file_roundtrip(model, _inputs(4, 6), tmp_path)


@pytest.mark.parametrize(
    "widths,compatibility",
    [((4, 6), "dp"), ((4, 4), "pc"), ((4, 6), "pc")],
)
@pytest.mark.parametrize("normalization", ["softmax", "sigmoid"])
def test_gradients_reach_all_weights(widths, compatibility, normalization):
    model = _model(LTPAAttention(compatibility, normalization), *widths)
    harness.assert_gradients_reach_all_weights(model, _inputs(*widths))


@pytest.mark.tf_only
@pytest.mark.parametrize("compatibility,normalization", COMBOS)
def test_jit_matches_eager(compatibility, normalization):
    model = _model(LTPAAttention(compatibility, normalization), 4, 6)
    harness.assert_jit_matches_eager(model, _inputs(4, 6))


@pytest.mark.tf_only
@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("compatibility,normalization", COMBOS)
def test_tflite_matches(compatibility, normalization, widths):
    model = _model(LTPAAttention(compatibility, normalization), *widths)
    harness.assert_tflite_matches(model, _inputs(*widths))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"compatibility": "additive"}, "LTPAAttention.*`compatibility`"),
        ({"compatibility": None}, "LTPAAttention.*`compatibility`"),
        ({"normalization": "relu"}, "LTPAAttention.*`normalization`"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LTPAAttention(**kwargs)


@pytest.mark.parametrize(
    "shapes,match",
    [
        ([(8, 8, 4)], "LTPAAttention.*`inputs`"),
        ([(8, 8, 4), (4,), (4,)], "LTPAAttention.*`inputs`"),
        ([(8, 4), (4,)], r"LTPAAttention.*`inputs\[0\] shape`.*rank 4"),
        ([(8, 8, None), (4,)], r"LTPAAttention.*`inputs\[0\] shape`.*known"),
        ([(8, 8, 4), (2, 4)], r"LTPAAttention.*`inputs\[1\] shape`.*rank 2"),
        ([(8, 8, 4), (None,)], r"LTPAAttention.*`inputs\[1\] shape`.*known"),
    ],
)
def test_bad_inputs(shapes, match):
    inputs = [keras.Input(s) for s in shapes]
    with pytest.raises(ValueError, match=match):
        LTPAAttention()(inputs if len(inputs) > 1 else inputs[0])


def test_single_tensor_after_build():
    layer = LTPAAttention()
    local, global_ = _inputs(4, 4)
    layer([local, global_])
    with pytest.raises(ValueError, match="LTPAAttention.*`inputs`"):
        layer(local)
