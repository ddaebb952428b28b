"""Tests for `keras_attn.layers.SqueezeExcite`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.layers import SqueezeExcite
from tests import harness

SHAPE = (8, 8, 12)  # (H, W, C) without batch


def _np(variable):
    return np.asarray(ops.convert_to_numpy(variable), dtype="float64")


_NP_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "silu": lambda z: z / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "hard_sigmoid": lambda z: np.clip(z + 3.0, 0.0, 6.0) / 6.0,
}


def reference(layer, x):
    """NumPy SE from the layer's own weights: returns (y, gate)."""
    x = np.asarray(x, "float64")
    z = x.mean(axis=(1, 2))  # (B, C)
    h = z @ _np(layer.reduce.kernel)
    if layer.use_bias:
        h = h + _np(layer.reduce.bias)
    h = _NP_ACTIVATIONS[layer.activation](h)
    s = h @ _np(layer.expand.kernel)
    if layer.use_bias:
        s = s + _np(layer.expand.bias)
    gate = _NP_ACTIVATIONS[layer.gate](s)  # (B, C)
    return x * gate[:, None, None, :], gate


def _built(shape=SHAPE, seed=0, **kwargs):
    layer = SqueezeExcite(**kwargs)
    layer.build((None, *shape))
    harness.randomize_weights(layer, seed)
    return layer


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"reduction": 4},
        {"ratio": 0.5, "activation": "silu"},
        {"reduction": 3, "gate": "hard_sigmoid"},
        {"ratio": 0.25, "use_bias": False, "gate": "tanh"},
    ],
)
def test_matches_numpy_reference(kwargs):
    layer = _built(**kwargs)
    x = harness.random_inputs([(2, *SHAPE)], seed=1, scale=2.0)[0]
    y, gate = harness.to_numpy(layer(x, return_attention=True))
    y_ref, gate_ref = reference(layer, x)
    np.testing.assert_allclose(gate, gate_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=0)
    # The gate must actually vary, else the test proves little.
    assert gate.std() > 1e-2
    plain = harness.to_numpy(layer(x))
    assert len(plain) == 1
    np.testing.assert_allclose(plain[0], y, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("channels", "ratio", "reduction", "units"),
    [
        (16, 0.25, None, 4),
        (16, 0.25, 4, 4),
        (16, 0.5, 8, 2),  # an explicit reduction wins over ratio
        (10, 0.25, None, 3),  # 2.5 rounds half up
        (10, 0.22, None, 2),
        (3, 0.25, None, 1),
        (2, 0.1, None, 1),  # never below one unit
        (8, 0.25, 16, 1),  # 8 // 16 == 0 -> one unit
        (32, 0.25, 16, 2),
        (12, 0.25, 5, 2),  # floor division
    ],
)
def test_bottleneck_width(channels, ratio, reduction, units):
    layer = SqueezeExcite(ratio=ratio, reduction=reduction)
    layer.build((None, 4, 4, channels))
    assert layer.bottleneck_units(channels) == units
    assert tuple(layer.reduce.kernel.shape) == (channels, units)
    assert tuple(layer.expand.kernel.shape) == (units, channels)
    bias = 1 if layer.use_bias else 0
    assert layer.count_params() == 2 * channels * units + bias * (
        units + channels
    )


def test_use_bias_false_has_no_bias():
    layer = _built(use_bias=False, reduction=4)
    assert len(layer.weights) == 2
    assert layer.count_params() == 2 * 12 * 3


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_shapes_and_mixed_precision(gate):
    harness.assert_mixed_precision(
        lambda **kw: SqueezeExcite(reduction=4, gate=gate, **kw),
        SHAPE,
        {"return_attention": True},
        float32_outputs=(1,),
    )
    layer = SqueezeExcite(gate=gate)
    inputs = keras.Input(SHAPE)
    y, g = layer(inputs, return_attention=True)
    assert tuple(y.shape) == (None, *SHAPE)
    assert tuple(g.shape) == (None, SHAPE[-1])
    assert (y.dtype, g.dtype) == ("float32", "float32")
    assert layer.compute_output_shape((None, *SHAPE)) == (None, *SHAPE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"ratio": 0.5, "reduction": 4, "activation": "silu"},
        {"gate": "hard_sigmoid", "use_bias": False},
        {"activation": keras.activations.swish},
    ],
)
def test_config_roundtrip(kwargs):
    harness.assert_config_roundtrip(SqueezeExcite(**kwargs))


def _model(shape=SHAPE, seed=0, **kwargs):
    model = harness.wrap(SqueezeExcite(**kwargs), shape, return_attention=True)
    harness.randomize_weights(model, seed)
    return model


def test_keras_file_roundtrip(tmp_path):
    model = _model(reduction=4, gate="hard_sigmoid")
    x = harness.random_inputs([(2, *SHAPE)], seed=2)
    harness.assert_keras_file_roundtrip(model, x[0], tmp_path)


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_gradients_reach_all_weights(gate):
    model = _model(reduction=3, gate=gate, seed=4)
    x = harness.random_inputs([(2, *SHAPE)], seed=5)[0]
    harness.assert_gradients_reach_all_weights(model, x)


@pytest.mark.tf_only
def test_jit_matches_eager():
    model = _model(reduction=4)
    x = harness.random_inputs([(2, *SHAPE)], seed=6)[0]
    harness.assert_jit_matches_eager(model, x)


@pytest.mark.tf_only
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_tflite_builtins_match(gate):
    model = _model(reduction=4, gate=gate)
    x = harness.random_inputs([(2, *SHAPE)], seed=7)[0]
    harness.assert_tflite_matches(model, x)


def test_variable_spatial_size():
    layer = SqueezeExcite(reduction=4)
    model = harness.wrap(layer, (None, None, 12), return_attention=True)
    harness.randomize_weights(model, seed=8)
    for size in [(5, 7), (9, 4)]:
        x = harness.random_inputs([(2, *size, 12)], seed=9)[0]
        y, gate = harness.run(model, x)
        y_ref, gate_ref = reference(layer, x)
        assert y.shape == (2, *size, 12)
        np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(gate, gate_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": 0}, "SqueezeExcite: invalid `ratio`"),
        ({"ratio": -0.25}, "SqueezeExcite: invalid `ratio`"),
        ({"ratio": "0.25"}, "SqueezeExcite: invalid `ratio`"),
        ({"reduction": 0}, "SqueezeExcite: invalid `reduction`"),
        ({"reduction": -4}, "SqueezeExcite: invalid `reduction`"),
        ({"reduction": 2.5}, "SqueezeExcite: invalid `reduction`"),
        ({"activation": "nope"}, "SqueezeExcite: invalid `activation`"),
        ({"gate": "nope"}, "SqueezeExcite: invalid `gate`"),
        ({"use_bias": "yes"}, "SqueezeExcite: invalid `use_bias`"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SqueezeExcite(**kwargs)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((None, 8, 12), "SqueezeExcite: invalid `inputs shape`.*rank 4"),
        ((None, 2, 8, 8, 12), "SqueezeExcite: invalid `inputs shape`"),
        ((None, 8, 8, None), "SqueezeExcite: invalid `inputs shape`.*known"),
    ],
)
def test_bad_input_shape(shape, match):
    with pytest.raises(ValueError, match=match):
        SqueezeExcite().build(shape)
    with pytest.raises(ValueError, match=match):
        SqueezeExcite()(keras.Input(shape[1:]))


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_large_inputs_stay_finite(dtype, gate):
    layer = SqueezeExcite(reduction=4, gate=gate, dtype=dtype)
    x = harness.random_inputs([(2, *SHAPE)], seed=10, scale=1e4)[0]
    layer.build(x.shape)
    harness.randomize_weights(layer, seed=11)
    y, g = harness.to_numpy(layer(x, return_attention=True))
    assert np.isfinite(y.astype("float32")).all()
    assert np.isfinite(g).all() and g.dtype == np.float32
    assert g.min() >= 0.0 and g.max() <= 1.0
