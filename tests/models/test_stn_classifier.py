"""Tests for the `stn_classifier` builder (ST-CNN and its baseline CNN)."""

import numpy as np
import pytest

from keras_attn.layers import SpatialTransformer
from keras_attn.models import attention_model
from keras_attn.models import stn_classifier
from tests import harness


def _x(shape, seed=0, batch=2):
    return harness.random_inputs([(batch, *shape)], seed=seed)[0]


def _transformers(model):
    return [
        layer for layer in model.layers
        if isinstance(layer, SpatialTransformer)
    ]


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("transformer", [True, False])
def test_small_inputs(input_shape, transformer):
    model = stn_classifier(input_shape, 10, transformer=transformer)
    x = _x(input_shape)
    (probabilities,) = harness.run(model, x)
    assert probabilities.shape == (2, 10)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert model.get_layer("probabilities").dtype_policy.name == "float32"
    assert len(_transformers(model)) == int(transformer)


def test_baseline_is_the_same_cnn_without_transformer():
    full = stn_classifier((28, 28, 1), 10)
    base = stn_classifier((28, 28, 1), 10, transformer=False)
    assert base.count_params() < full.count_params()
    transformer = full.get_layer("spatial_transformer")
    assert full.count_params() - base.count_params() == (
        transformer.count_params()
    )
    assert not _transformers(base)
    # Untrained transformer = identity: same CNN weights, same predictions.
    for layer in base.layers:
        if layer.weights:
            full.get_layer(layer.name).set_weights(layer.get_weights())
    x = _x((28, 28, 1), seed=1)
    np.testing.assert_allclose(
        harness.run(full, x)[0], harness.run(base, x)[0], atol=1e-6, rtol=0
    )


def test_output_size_and_theta_in_graph():
    model = stn_classifier((28, 28, 1), 10, output_size=(20, 20))
    transformer = model.get_layer("spatial_transformer")
    assert tuple(transformer.output[0].shape) == (None, 20, 20, 1)
    assert tuple(model.get_layer("conv1").output.shape) == (None, 20, 20, 32)
    maps = attention_model(model)
    outs = maps(_x((28, 28, 1)))
    (theta,) = harness.to_numpy(list(outs.values()))
    np.testing.assert_allclose(theta, np.tile(np.eye(2, 3), (2, 1, 1)))


def test_gradients_reach_all_weights():
    model = stn_classifier((16, 16, 1), 5)
    harness.randomize_weights(model, seed=2, scale=0.2)
    harness.assert_gradients_reach_all_weights(model, _x((16, 16, 1), seed=3))


def test_keras_file_roundtrip(tmp_path):
    model = stn_classifier((16, 16, 1), 5, output_size=(12, 12))
    harness.randomize_weights(model, seed=4, scale=0.2)
    harness.assert_keras_file_roundtrip(model, _x((16, 16, 1), seed=5),
                                        tmp_path)


@pytest.mark.tf_only
@pytest.mark.parametrize("transformer", [True, False])
def test_tflite_builtins_match(transformer):
    model = stn_classifier((16, 16, 1), 5, transformer=transformer)
    harness.randomize_weights(model, seed=6, scale=0.2)
    harness.assert_tflite_matches(model, _x((16, 16, 1), seed=7))


def test_large_input_builds():
    model = stn_classifier((224, 224, 3), 1000)
    assert model.output_shape == (None, 1000)
    base = stn_classifier((224, 224, 3), 1000, transformer=False)
    assert base.count_params() < model.count_params()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (28, 28)}, "stn_classifier: invalid `input_shape`"),
        ({"input_shape": (None, None, 1)},
         "stn_classifier: invalid `input_shape`"),
        ({"num_classes": 0}, "stn_classifier: invalid `num_classes`"),
        ({"num_classes": 2.0}, "stn_classifier: invalid `num_classes`"),
        ({"transformer": 1}, "stn_classifier: invalid `transformer`"),
        ({"output_size": (0, 4)}, "stn_classifier: invalid `output_size`"),
        ({"output_size": 8}, "stn_classifier: invalid `output_size`"),
        ({"output_size": (8, 8), "transformer": False},
         "stn_classifier: invalid `output_size`.*transformer=False"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"input_shape": (28, 28, 1), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        stn_classifier(**args)
