"""Tests for the `stn_classifier` builder (ST-CNN and its baseline CNN)."""

import keras
import numpy as np
import pytest
from scipy.stats import spearmanr

from keras_attn.data import load_fashion_mnist
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
@pytest.mark.parametrize("attention", [True, None])
def test_small_inputs(input_shape, attention):
    model = stn_classifier(input_shape, 10, attention=attention)
    x = _x(input_shape)
    (probabilities,) = harness.run(model, x)
    assert probabilities.shape == (2, 10)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert model.get_layer("probabilities").dtype_policy.name == "float32"
    assert len(_transformers(model)) == int(bool(attention))


def test_baseline_is_the_same_cnn_without_transformer():
    full = stn_classifier((28, 28, 1), 10)
    base = stn_classifier((28, 28, 1), 10, attention=None)
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


def _translated(images, canvas, rng):
    """Each image pasted at a random position of a black canvas; also the
    object centre's offset from the canvas centre, (row, col), pixels."""
    n, h, w = images.shape
    corners = rng.integers(0, canvas - h + 1, size=(n, 2))
    out = np.zeros((n, canvas, canvas, 1), "float32")
    for i, (r, c) in enumerate(corners):
        out[i, r:r + h, c:c + w, 0] = images[i] / np.float32(255)
    return out, corners + (h - 1) / 2 - (canvas - 1) / 2


def test_trained_theta_follows_the_object():
    # What the transformer is for: after a little training on translated
    # objects, theta's translation tracks where the object is (an object to
    # the right -> tx > 0, sampling to the right). Measured here (keras
    # seeds 0-3): std of tx / ty 0.049-0.155, Spearman correlation with the
    # object's offset 0.68-0.89; with the former global-average-pooling
    # localisation net (seed 0) std 0.0008 / 0.0034, correlation 0.03 / 0.08.
    rng = np.random.default_rng(0)
    train, labels = load_fashion_mnist("train")
    x, _ = _translated(train[:1280], 48, rng)
    x_test, offsets = _translated(load_fashion_mnist("test")[0][:256], 48,
                                  rng)
    model = stn_classifier((48, 48, 1), 10, output_size=(24, 24))
    model.compile(keras.optimizers.Adam(1e-3),
                  "sparse_categorical_crossentropy")
    model.fit(x, labels[:1280], batch_size=32, epochs=1, verbose=0)
    layer = model.get_layer("spatial_transformer")
    _, theta = harness.to_numpy(layer(x_test, return_theta=True))
    tx, ty = theta[:, 0, 2], theta[:, 1, 2]
    assert tx.std() > 0.008 and ty.std() > 0.008, (tx.std(), ty.std())
    rho_x = spearmanr(tx, offsets[:, 1])[0]
    rho_y = spearmanr(ty, offsets[:, 0])[0]
    assert rho_x > 0.4 and rho_y > 0.4, (rho_x, rho_y)


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
@pytest.mark.parametrize("attention", [True, None])
def test_tflite_builtins_match(attention):
    model = stn_classifier((16, 16, 1), 5, attention=attention)
    harness.randomize_weights(model, seed=6, scale=0.2)
    harness.assert_tflite_matches(model, _x((16, 16, 1), seed=7))


def test_large_input_builds():
    model = stn_classifier((224, 224, 3), 1000)
    assert model.output_shape == (None, 1000)
    base = stn_classifier((224, 224, 3), 1000, attention=None)
    assert base.count_params() < model.count_params()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (28, 28)}, "stn_classifier: invalid `input_shape`"),
        ({"input_shape": (None, None, 1)},
         "stn_classifier: invalid `input_shape`"),
        ({"num_classes": 0}, "stn_classifier: invalid `num_classes`"),
        ({"num_classes": 2.0}, "stn_classifier: invalid `num_classes`"),
        ({"attention": 1}, "stn_classifier: invalid `attention`"),
        ({"transformer": 1}, "stn_classifier: invalid `transformer`"),
        ({"transformer": True, "attention": None},
         "stn_classifier: invalid `transformer`.*pass `attention` only"),
        ({"output_size": (0, 4)}, "stn_classifier: invalid `output_size`"),
        ({"output_size": 8}, "stn_classifier: invalid `output_size`"),
        ({"output_size": (8, 8), "attention": None},
         "stn_classifier: invalid `output_size`.*attention=None"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"input_shape": (28, 28, 1), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        stn_classifier(**args)
