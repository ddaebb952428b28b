"""Grad-CAM (keras_attn.viz.grad_cam) against a NumPy derivation.

For a head `A -> GlobalAveragePooling -> Dense (logits)`, the logit
`y^c = sum_k W[k, c] mean_ij A^k_ij + b_c`, so `dy^c / dA^k_ij = W[k, c] /
(h w)` everywhere, Eq. 1 gives `alpha_k^c = W[k, c] / (h w)` and Eq. 2
`L^c = ReLU(sum_k W[k, c] A^k) / (h w)`, computed here from the model's own
weights and feature maps, with an independent NumPy bilinear resize.
"""

import keras
import numpy as np
import pytest

from keras_attn.viz import grad_cam

pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="grad_cam needs tf.GradientTape or torch.autograd",
)


def _model(image_shape=(8, 12, 2), strides=1, classes=3, logits=True):
    inputs = keras.Input(image_shape)
    x = keras.layers.Conv2D(5, 3, strides=strides, padding="same",
                            name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(classes, name="logits" if logits else "scores")(x)
    if logits:
        x = keras.layers.Activation("softmax", dtype="float32",
                                    name="probabilities")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(1)
    model.set_weights([rng.standard_normal(w.shape) * 0.7
                       for w in model.get_weights()])
    return model


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _resize(maps, height, width):
    """Bilinear with half-pixel centres, one output pixel at a time."""
    batch, h, w = maps.shape
    out = np.zeros((batch, height, width))
    for i in range(height):
        y = min(max((i + 0.5) * h / height - 0.5, 0.0), h - 1)
        y0 = int(np.floor(y))
        y1, fy = min(y0 + 1, h - 1), y - np.floor(y)
        for j in range(width):
            x = min(max((j + 0.5) * w / width - 0.5, 0.0), w - 1)
            x0 = int(np.floor(x))
            x1, fx = min(x0 + 1, w - 1), x - np.floor(x)
            out[:, i, j] = (
                (1 - fy) * ((1 - fx) * maps[:, y0, x0] + fx * maps[:, y0, x1])
                + fy * ((1 - fx) * maps[:, y1, x0] + fx * maps[:, y1, x1])
            )
    return out


def _reference(model, images, classes, head="logits"):
    features = keras.Model(model.inputs,
                           model.get_layer("features").output)(images)
    a = _numpy(features)
    kernel = _numpy(model.get_layer(head).kernel)  # (K, n)
    h, w = a.shape[1:3]
    cams = np.stack([
        np.maximum(np.einsum("hwk,k->hw", a[b], kernel[:, c]), 0) / (h * w)
        for b, c in enumerate(classes)
    ])
    cams = _resize(cams, *images.shape[1:3])
    peak = cams.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cams / np.where(peak > 0, peak, 1), 0)


def _images(shape=(4, 8, 12, 2), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(
        np.float32
    )


def test_matches_numpy_for_predicted_class():
    model = _model()
    images = _images()
    cam = grad_cam(model, images, "features")
    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    predicted = np.argmax(_numpy(logits(images)), axis=-1)
    assert cam.shape == (4, 8, 12) and cam.dtype == np.float32
    np.testing.assert_allclose(cam, _reference(model, images, predicted),
                               atol=1e-5)
    assert cam.min() >= 0 and np.allclose(cam.max(axis=(1, 2)), 1)


def test_resized_from_strided_features():
    model = _model(strides=2)  # features (4, 6) on an 8 x 12 image
    images = _images(seed=3)
    for c in range(3):
        cam = grad_cam(model, images, "features", class_index=c)
        np.testing.assert_allclose(
            cam, _reference(model, images, [c] * 4), atol=1e-5
        )


def test_per_image_class_index_and_classes_differ():
    model = _model()
    images = _images(seed=5)
    classes = np.array([2, 0, 1, 2])
    cam = grad_cam(model, images, "features", class_index=classes)
    np.testing.assert_allclose(cam, _reference(model, images, classes),
                               atol=1e-5)
    other = grad_cam(model, images, "features", class_index=[0, 1, 2, 0])
    assert np.abs(cam - other).max() > 0.1


def test_model_without_logits_layer_uses_its_output():
    model = _model(logits=False)
    images = _images(seed=7)
    cam = grad_cam(model, images, "features", class_index=1)
    np.testing.assert_allclose(
        cam, _reference(model, images, [1] * 4, head="scores"), atol=1e-5
    )


def test_map_that_is_negative_everywhere_is_zero():
    model = _model()
    kernel = model.get_layer("features").kernel
    bias = model.get_layer("features").bias
    dense = model.get_layer("logits").kernel
    # A = 1 everywhere on every channel and W[:, 0] < 0: ReLU leaves 0.
    kernel.assign(np.zeros(kernel.shape))
    bias.assign(np.ones(bias.shape))
    dense.assign(-np.abs(_numpy(dense)))
    cam = grad_cam(model, _images(), "features", class_index=0)
    assert np.all(cam == 0) and np.all(np.isfinite(cam))


def test_keras_attn_model():
    from keras_attn import models

    model = models.resnet((16, 16, 3), 3, 20, attention="cbam")
    images = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)
    # A keras_attn layer with its maps on returns (y, maps...): y is used.
    cam = grad_cam(model, images, "stage3_block3_cbam")
    assert cam.shape == (2, 16, 16)
    assert cam.min() >= 0 and cam.max() <= 1 + 1e-6


def test_bad_arguments_raise():
    model = _model()
    images = _images()
    with pytest.raises(ValueError, match="layer_name.*'features'"):
        grad_cam(model, images, "conv_does_not_exist")
    with pytest.raises(ValueError, match="4D"):
        grad_cam(model, images, "pool")
    with pytest.raises(ValueError, match="class_index"):
        grad_cam(model, images, "features", class_index=3)
    with pytest.raises(ValueError, match="class_index"):
        grad_cam(model, images, "features", class_index=[0, 1])
    with pytest.raises(ValueError, match="images"):
        grad_cam(model, images[0], "features")
