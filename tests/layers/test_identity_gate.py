"""Tests for `keras_attn.layers.IdentityGate`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.layers import CBAM
from keras_attn.layers import IdentityGate
from keras_attn.layers import SqueezeExcite
from tests import harness

SHAPE = (6, 6, 8)


def _x(seed=0):
    return harness.random_inputs([(2, *SHAPE)], seed=seed, scale=2.0)[0]


def test_starts_as_the_identity_bit_for_bit():
    gate = IdentityGate(CBAM(reduction=2, kernel_size=3))
    x = _x()
    y, channel_map, spatial_map = gate(x, return_attention=True)
    # Exactly x (not merely close): 0 * (A(x) - x) adds nothing.
    np.testing.assert_array_equal(harness.to_numpy(y)[0], x)
    assert tuple(channel_map.shape) == (2, 8)
    assert tuple(spatial_map.shape) == (2, 6, 6)
    # Its maps are the wrapped layer's, for viz and export.
    assert gate.attention_kinds == ("channel", "spatial")
    assert IdentityGate(keras.layers.Identity()).attention_kinds is None


def test_gate_interpolates_between_input_and_attention():
    inner = SqueezeExcite(reduction=2)
    gate = IdentityGate(inner)
    x = _x(1)
    gate(x)
    harness.randomize_weights(inner, seed=2)
    attended = harness.to_numpy(inner(x))[0]
    for g in (1.0, 0.3):
        gate.gate.assign(g)
        y = harness.to_numpy(gate(x))[0]
        np.testing.assert_allclose(y, x + g * (attended - x), atol=1e-5)
    ones = IdentityGate(SqueezeExcite(reduction=2), gate_initializer="ones")
    ones(x)
    assert float(ops.convert_to_numpy(ones.gate)) == 1.0


def test_gate_gets_a_gradient_at_zero_and_attention_weights_do_not():
    model = harness.wrap(IdentityGate(SqueezeExcite(reduction=2)), SHAPE)
    grads = harness.gradients(model, _x(3))
    gate = [g for path, g in grads.items() if path.endswith("gate")]
    assert len(gate) == 1 and abs(float(np.asarray(gate[0]))) > 0
    others = [g for path, g in grads.items() if not path.endswith("gate")]
    assert others and all(np.all(np.asarray(g) == 0) for g in others)


def test_config_and_keras_file_roundtrip(tmp_path):
    gate = IdentityGate(CBAM(reduction=2, kernel_size=3), name="g")
    harness.assert_config_roundtrip(gate)
    model = harness.wrap(gate, SHAPE, return_attention=True)
    gate.gate.assign(0.7)
    harness.randomize_weights(gate.attention, seed=4)
    harness.assert_keras_file_roundtrip(model, [_x(5)], tmp_path)


def test_mixed_precision_keeps_maps_and_gate_in_float32():
    harness.assert_mixed_precision(
        lambda dtype: IdentityGate(CBAM(reduction=2, kernel_size=3,
                                        dtype=dtype), dtype=dtype),
        SHAPE, call_kwargs={"return_attention": True},
        float32_outputs=(1, 2))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="^IdentityGate: invalid `attention`"):
        IdentityGate("se")
    subclass = type("MyGate", (IdentityGate,), {})
    with pytest.raises(ValueError, match="^MyGate: invalid `attention`"):
        subclass("se")
    with pytest.raises(ValueError, match="invalid `gate_initializer`"):
        IdentityGate(SqueezeExcite(), gate_initializer="no_such_init")
    changes_shape = IdentityGate(keras.layers.Conv2D(3, 1))
    with pytest.raises(ValueError, match="IdentityGate: invalid `attention`"
                                         ".*its input's shape"):
        changes_shape(_x())
    no_maps = IdentityGate(keras.layers.Identity())
    with pytest.raises(ValueError, match="invalid `return_attention`"):
        no_maps(_x(), return_attention=True)
