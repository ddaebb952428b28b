"""Tests for `keras_attn.layers.SpatialTransformer`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.data import load_fashion_mnist
from keras_attn.layers import SpatialTransformer
from keras_attn.layers import spatial_transformer
from tests import harness
from tests.layers.test_spatial_sampling import SCIPY_MODE
from tests.layers.test_spatial_sampling import np_affine_grid
from tests.layers.test_spatial_sampling import scipy_sample

SHAPE = (8, 10, 3)  # (H, W, C); H != W catches transposed grids


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _x(shape=SHAPE, seed=1, batch=2, scale=1.0):
    return harness.random_inputs([(batch, *shape)], seed=seed, scale=scale)[0]


def small_localization(name="custom_loc"):
    return keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, padding="same", activation="tanh"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(6, activation="tanh"),
        ],
        name=name,
    )


def _built(shape=SHAPE, seed=0, head_scale=0.04, **kwargs):
    """A built layer with random localization and head weights."""
    layer = SpatialTransformer(**kwargs)
    layer.build((None, *shape))
    harness.randomize_weights(layer.localization, seed, scale=0.2)
    kernel, bias = layer.head.get_weights()
    rng = np.random.default_rng(seed + 100)
    layer.head.set_weights(
        [head_scale * rng.standard_normal(kernel.shape),
         bias + 0.2 * rng.standard_normal(bias.shape)]
    )
    return layer


def np_theta(params, transform):
    params = np.asarray(params, "float64")
    if transform == "affine":
        return params.reshape(-1, 2, 3)
    if transform == "similarity":
        s, a, tx, ty = params.T
        rows = [s * np.cos(a), -s * np.sin(a), tx,
                s * np.sin(a), s * np.cos(a), ty]
    else:
        s, tx, ty = params.T
        rows = [s, 0 * s, tx, 0 * s, s, ty]
    return np.stack(rows, -1).reshape(-1, 2, 3)


def np_transformer(layer, x, output_size=None):
    """Reference from the layer's weights: localization features (Keras
    sublayer), then head, theta, grid and sampling in NumPy / SciPy."""
    features = _np(layer.localization(x))
    kernel, bias = (_np(w) for w in layer.head.weights)
    theta = np_theta(features @ kernel + bias, layer.transform)
    height, width = output_size or x.shape[1:3]
    grid = np_affine_grid(theta, height, width)
    return scipy_sample(x, grid, SCIPY_MODE[layer.padding]), theta


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(a, b, atol=atol, rtol=0)


# ----------------------------------------------------------------------------
# Numerics


@pytest.mark.parametrize("transform", ["affine", "similarity",
                                       "translation_scale"])
def test_untrained_layer_is_identity_exactly(transform):
    layer = SpatialTransformer(transform=transform)
    x = _x()
    layer.build(x.shape)
    # Whatever the localization net computes, the zero-kernel head ignores it.
    harness.randomize_weights(layer.localization, seed=3)
    y, theta = harness.to_numpy(layer(x, return_theta=True))
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(theta, np.tile(np.eye(2, 3), (2, 1, 1)))


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("transform", ["affine", "similarity",
                                       "translation_scale"])
def test_matches_numpy_reference(transform, padding):
    layer = _built(transform=transform, padding=padding)
    x = _x()
    y, theta = harness.to_numpy(layer(x, return_theta=True))
    y_ref, theta_ref = np_transformer(layer, x)
    np.testing.assert_allclose(theta, theta_ref, atol=1e-5, rtol=1e-5)
    _close(y, y_ref)
    assert theta.dtype == np.float32
    # A real warp: theta moved well away from the identity.
    assert 0.1 < np.abs(theta - np.eye(2, 3)).max() < 1.0
    # ... that depends on the image through the localization net.
    assert np.abs(theta[0] - theta[1]).max() > 1e-3


@pytest.mark.parametrize(
    ("transform", "bias", "theta"),
    [
        ("affine", [0.9, 0.2, 0.1, -0.3, 1.2, -0.2],
         [[0.9, 0.2, 0.1], [-0.3, 1.2, -0.2]]),
        ("similarity", [1.5, np.pi / 6, 0.25, -0.5],
         [[1.5 * np.cos(np.pi / 6), -1.5 * np.sin(np.pi / 6), 0.25],
          [1.5 * np.sin(np.pi / 6), 1.5 * np.cos(np.pi / 6), -0.5]]),
        ("translation_scale", [0.5, -0.25, 0.4],
         [[0.5, 0.0, -0.25], [0.0, 0.5, 0.4]]),
    ],
)
def test_known_head_bias_gives_theta(transform, bias, theta):
    layer = SpatialTransformer(transform=transform, output_size=(5, 6))
    x = _x()
    layer.build(x.shape)
    kernel = layer.head.get_weights()[0]
    assert not kernel.any()  # identity init: zero kernel
    layer.head.set_weights([kernel, np.array(bias, "float32")])
    y, got = harness.to_numpy(layer(x, return_theta=True))
    _close(got, np.tile(np.array(theta)[None], (2, 1, 1)), atol=1e-6)
    grid = np_affine_grid(np.array([theta] * 2), 5, 6)
    _close(y, scipy_sample(x, grid, "grid-constant"))


def test_identity_bias_per_transform():
    for transform, bias in [
        ("affine", [1, 0, 0, 0, 1, 0]),
        ("similarity", [1, 0, 0, 0]),
        ("translation_scale", [1, 0, 0]),
    ]:
        layer = SpatialTransformer(transform=transform)
        layer.build((None, *SHAPE))
        assert layer.num_parameters == len(bias)
        np.testing.assert_array_equal(layer.head.get_weights()[1], bias)


@pytest.mark.parametrize("output_size", [(4, 5), (12, 7)])
def test_output_size(output_size):
    layer = _built(output_size=output_size)
    x = _x()
    y = harness.to_numpy(layer(x))[0]
    assert y.shape == (2, *output_size, SHAPE[-1])
    _close(y, np_transformer(layer, x, output_size)[0])
    # Untrained: a corner-aligned resampling of the whole image.
    plain = SpatialTransformer(output_size=output_size)
    y = harness.to_numpy(plain(x))[0]
    grid = np_affine_grid(np.tile(np.eye(2, 3), (2, 1, 1)), *output_size)
    _close(y, scipy_sample(x, grid, "grid-constant"))
    assert plain.compute_output_shape((None, *SHAPE)) == (
        None, *output_size, SHAPE[-1]
    )


def test_custom_localization_is_used():
    loc = small_localization()
    layer = SpatialTransformer(localization=loc)
    layer.build((None, *SHAPE))
    assert layer.localization is loc
    assert tuple(layer.head.kernel.shape) == (6, 6)
    harness.randomize_weights(layer, seed=4, scale=0.3)
    x = _x()
    _close(harness.to_numpy(layer(x))[0], np_transformer(layer, x)[0])


def test_default_localization_features_move_with_the_object():
    # theta can follow the object only if the localisation features do. The
    # former default (global average pooling over a conv stack) gave the
    # same features wherever the object sat: relative change 0.02-0.04 here,
    # against 0.7-1.2 for the default, over several initialisations.
    images = load_fashion_mnist("test")[0][:8].astype("float32") / 255
    near = np.zeros((8, 48, 48, 1), "float32")
    far = np.zeros_like(near)
    near[:, 4:32, 4:32, 0] = images
    far[:, 16:44, 16:44, 0] = images
    layer = SpatialTransformer()
    layer.build(near.shape)
    f_near, f_far = (_np(layer.localization(x)) for x in (near, far))
    assert f_near.shape == (8, 32)
    change = np.linalg.norm(f_near - f_far, axis=1) / np.linalg.norm(
        f_near, axis=1
    )
    assert change.min() > 0.3, change


def test_default_localization_sees_a_fixed_grid_on_any_size():
    size = spatial_transformer.LOCALIZATION_SIZE
    for shape in [(None, 8, 10, 3), (None, 60, 60, 1), (None, None, None, 2)]:
        layer = SpatialTransformer(output_size=(4, 4))
        layer.build(shape)
        loc = layer.localization
        assert loc.layers[0].compute_output_shape(shape)[1:3] == (size, size)
        assert loc.compute_output_shape(shape) == (None, 32)
        assert tuple(layer.head.kernel.shape) == (32, 6)
    # float32 under mixed precision, like the head and the sampler.
    layer = SpatialTransformer(dtype="mixed_float16")
    layer.build((None, *SHAPE))
    assert {sub.compute_dtype for sub in layer.localization.layers} == {
        "float32"
    }


# ----------------------------------------------------------------------------
# Shapes, dtypes, serialization, gradients, export


@pytest.mark.parametrize("transform", ["affine", "translation_scale"])
def test_shapes_and_mixed_precision(transform):
    harness.assert_mixed_precision(
        lambda **kw: SpatialTransformer(transform=transform, **kw),
        SHAPE,
        {"return_theta": True},
        float32_outputs=(1,),
    )
    layer = SpatialTransformer(output_size=(4, 6), dtype="mixed_float16")
    x = _x()
    y, theta = layer(x, return_theta=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert keras.backend.standardize_dtype(theta.dtype) == "float32"
    assert layer.head.compute_dtype == "float32"
    out, th = SpatialTransformer()(keras.Input(SHAPE), return_theta=True)
    assert tuple(out.shape) == (None, *SHAPE)
    assert tuple(th.shape) == (None, 2, 3)
    assert SpatialTransformer()(keras.Input(SHAPE)).shape == (None, *SHAPE)


def test_mixed_precision_identity_is_exact_in_float16():
    layer = SpatialTransformer(dtype="mixed_float16")
    x = _x().astype("float16")
    y = harness.to_numpy(layer(x))[0]
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize(
    "layer",
    [
        SpatialTransformer(),
        SpatialTransformer(output_size=(4, 5), transform="similarity",
                           padding="border"),
        SpatialTransformer(localization=small_localization(),
                           transform="translation_scale"),
    ],
)
def test_config_roundtrip(layer):
    harness.assert_config_roundtrip(layer)
    config = layer.get_config()
    assert set(config) >= {"localization", "output_size", "transform",
                           "padding"}


def test_config_of_built_default_layer_has_no_localization():
    layer = SpatialTransformer()
    layer.build((None, *SHAPE))
    assert layer.get_config()["localization"] is None


def _model(shape=SHAPE, seed=0):
    inputs = keras.Input(shape)
    x, theta1 = SpatialTransformer(
        localization=small_localization(), transform="similarity",
        padding="border", name="st_custom",
    )(inputs, return_theta=True)
    y, theta2 = SpatialTransformer(output_size=(6, 5), name="st_default")(
        x, return_theta=True
    )
    model = keras.Model(inputs, [y, theta1, theta2])
    harness.randomize_weights(model, seed, scale=0.3)
    return model


def test_keras_file_roundtrip(tmp_path):
    harness.assert_keras_file_roundtrip(_model(), _x(seed=4), tmp_path)


def test_gradients_reach_all_weights():
    model = _model(seed=5)
    names = {w.path.split("/")[0] for w in model.trainable_weights}
    assert {"st_custom", "st_default"} <= names
    paths = [w.path for w in model.trainable_weights]
    assert any("custom_loc" in p for p in paths)
    assert any("localization" in p for p in paths)
    harness.assert_gradients_reach_all_weights(model, _x(seed=6))


def test_untrained_head_still_gets_gradient():
    # Zero kernel: no gradient into the localization net yet, but the head
    # itself must learn from the first step.
    layer = SpatialTransformer()
    model = harness.wrap(layer, SHAPE)
    grads = harness.gradients(model, _x(seed=7))
    head = {p: g for p, g in grads.items() if "transform_head" in p}
    assert len(head) == 2
    assert all(np.abs(g).max() > 1e-3 for g in head.values())


@pytest.mark.tf_only
def test_jit_matches_eager():
    harness.assert_jit_matches_eager(_model(), _x(seed=8))


@pytest.mark.tf_only
def test_tflite_builtins_match():
    harness.assert_tflite_matches(_model(), _x(seed=9))


def test_variable_spatial_size():
    layer = SpatialTransformer(output_size=(5, 6))
    model = harness.wrap(layer, (None, None, SHAPE[-1]), return_theta=True)
    harness.randomize_weights(model, seed=10, scale=0.3)
    for size in [(7, 9), (12, 6)]:
        x = _x(shape=(*size, SHAPE[-1]), seed=11)
        y, theta = harness.run(model, x)
        y_ref, theta_ref = np_transformer(layer, x, (5, 6))
        _close(theta, theta_ref)
        _close(y, y_ref)


# ----------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SpatialTransformer(transform="projective"),
         "SpatialTransformer: invalid `transform`.*affine"),
        (lambda: SpatialTransformer(padding="reflect"),
         "SpatialTransformer: invalid `padding`.*zeros"),
        (lambda: SpatialTransformer(output_size=(0, 4)),
         "SpatialTransformer: invalid `output_size`"),
        (lambda: SpatialTransformer(output_size=8),
         "SpatialTransformer: invalid `output_size`"),
        (lambda: SpatialTransformer(output_size=(4, 4, 4)),
         "SpatialTransformer: invalid `output_size`"),
        (lambda: SpatialTransformer(output_size=(4.0, 4)),
         "SpatialTransformer: invalid `output_size`"),
        (lambda: SpatialTransformer(localization="conv"),
         "SpatialTransformer: invalid `localization`"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((None, 8, 12), "invalid `inputs shape`.*rank 4"),
        ((None, 8, 8, None), "invalid `inputs shape`.*known channel"),
        ((None, None, None, 3), "invalid `output_size`"),
    ],
)
def test_bad_input_shape(shape, match):
    with pytest.raises(ValueError, match=f"SpatialTransformer: {match}"):
        SpatialTransformer().build(shape)
    with pytest.raises(ValueError, match=f"SpatialTransformer: {match}"):
        SpatialTransformer()(keras.Input(shape[1:]))


def test_localization_must_output_vectors():
    loc = keras.Sequential([keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="SpatialTransformer: invalid "
                                         "`localization`.*batch, features"):
        SpatialTransformer(localization=loc).build((None, *SHAPE))


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_large_inputs_stay_finite(dtype):
    layer = SpatialTransformer(dtype=dtype)
    x = _x(seed=12, scale=1e4)
    layer.build(x.shape)
    harness.randomize_weights(layer, seed=13)
    y, theta = harness.to_numpy(layer(x, return_theta=True))
    assert np.isfinite(y.astype("float32")).all()
    assert np.isfinite(theta).all() and theta.dtype == np.float32
