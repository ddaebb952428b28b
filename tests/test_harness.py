"""The shared checks fail when they should (a check that cannot fail is a
defect, so each one is shown failing on a broken layer)."""

import keras
import numpy as np
import pytest

from tests import harness


class _Unregistered(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


class _DeadWeight(keras.layers.Layer):
    def build(self, input_shape):
        self.used = self.add_weight(shape=(), initializer="ones", name="used")
        self.unused = self.add_weight(shape=(), initializer="ones",
                                      name="unused")

    def call(self, x):
        return x * self.used


class _ExtraConfig(keras.layers.Layer):
    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return x * self.scale

    def get_config(self):
        # Keras records simple __init__ arguments by itself; forgetting one
        # in an override is the bug the check must catch.
        config = super().get_config()
        config.pop("scale", None)
        return config


def test_keras_file_roundtrip_fails_for_unregistered_layer(tmp_path):
    model = harness.wrap(_Unregistered(), (4, 4, 2))
    x = harness.random_inputs([(1, 4, 4, 2)])[0]
    with pytest.raises(AssertionError, match="reload failed"):
        harness.assert_keras_file_roundtrip(model, x, tmp_path)


def test_gradient_check_finds_unused_weight():
    model = harness.wrap(_DeadWeight(), (4, 4, 2))
    x = harness.random_inputs([(2, 4, 4, 2)])[0]
    with pytest.raises(AssertionError, match="unused"):
        harness.assert_gradients_reach_all_weights(model, x)


def test_config_check_finds_missing_init_argument():
    with pytest.raises(AssertionError, match="scale"):
        harness.assert_config_roundtrip(_ExtraConfig(scale=3.0))


@pytest.mark.tf_only
def test_tflite_check_compares_outputs(monkeypatch):
    model = harness.wrap(keras.layers.Dense(3), (5,))
    x = harness.random_inputs([(2, 5)])[0]
    harness.assert_tflite_matches(model, x)
    real_run = harness.run
    monkeypatch.setattr(
        harness, "run", lambda m, i: [o + 1e-3 for o in real_run(m, i)]
    )
    with pytest.raises(AssertionError):
        harness.assert_tflite_matches(model, x)


def test_mixed_precision_check_finds_float16_map():
    class _HalfMap(keras.layers.Layer):
        def call(self, x):
            return x, keras.ops.mean(x, axis=-1)

    with pytest.raises(AssertionError, match="float32"):
        harness.assert_mixed_precision(
            lambda **kw: _HalfMap(**kw), (4, 4, 2), float32_outputs=(1,)
        )


def test_random_inputs_are_seeded():
    a = harness.random_inputs([(2, 3)], seed=5)[0]
    b = harness.random_inputs([(2, 3)], seed=5)[0]
    np.testing.assert_array_equal(a, b)
