"""Tests for `keras_attn.ops.{affine_grid, bilinear_sample}`."""

import keras
import numpy as np
import pytest
from keras import ops
from scipy import ndimage

from keras_attn.ops import affine_grid
from keras_attn.ops import bilinear_sample
from tests import harness

BACKEND = keras.backend.backend()
SCIPY_MODE = {"zeros": "grid-constant", "border": "nearest"}


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _image(shape=(2, 6, 7, 3), seed=0):
    return harness.random_inputs([shape], seed=seed)[0]


# ----------------------------------------------------------------------------
# Independent NumPy / SciPy references


def np_affine_grid(theta, height, width):
    """Grid of `theta @ (x, y, 1)` with x, y the corner-aligned centres."""
    theta = np.asarray(theta, "float64").reshape(-1, 2, 3)
    xs = np.array([-1.0 + 2.0 * i / (width - 1) for i in range(width)])
    ys = np.array([-1.0 + 2.0 * j / (height - 1) for j in range(height)])
    grid = np.zeros((theta.shape[0], height, width, 2))
    for b in range(theta.shape[0]):
        for j in range(height):
            for i in range(width):
                grid[b, j, i] = theta[b] @ np.array([xs[i], ys[j], 1.0])
    return grid


def to_pixels(grid, height, width):
    """Normalised (x, y) -> scipy (row, col) pixel coordinates."""
    cols = (grid[..., 0] + 1.0) * (width - 1) / 2.0
    rows = (grid[..., 1] + 1.0) * (height - 1) / 2.0
    return rows, cols


def scipy_sample(images, grid, mode):
    images = np.asarray(images, "float64")
    rows, cols = to_pixels(grid, *images.shape[1:3])
    out = np.zeros((*grid.shape[:3], images.shape[-1]))
    for b in range(images.shape[0]):
        for c in range(images.shape[-1]):
            out[b, ..., c] = ndimage.map_coordinates(
                images[b, ..., c], [rows[b], cols[b]], order=1, mode=mode,
                cval=0.0,
            )
    return out


TRANSFORMS = {
    # x' = x + 0.3, y' = y - 0.45: shifts by fractions of a pixel too.
    "translation": [[1.0, 0.0, 0.3], [0.0, 1.0, -0.45]],
    "zoom_out": [[1.35, 0.0, 0.05], [0.0, 1.35, -0.1]],
    "zoom_in": [[0.55, 0.0, 0.1], [0.0, 0.7, 0.2]],
    "rotation": [
        [np.cos(0.6), -np.sin(0.6), 0.1],
        [np.sin(0.6), np.cos(0.6), -0.2],
    ],
    "shear": [[0.9, 0.4, -0.2], [-0.3, 1.1, 0.3]],
}


# ----------------------------------------------------------------------------
# Grid


def test_affine_grid_matches_numpy_and_corner_convention():
    theta = np.array([TRANSFORMS["shear"], TRANSFORMS["rotation"]], "float32")
    grid = _np(affine_grid(theta, 4, 5))
    np.testing.assert_allclose(
        grid, np_affine_grid(theta, 4, 5), atol=1e-6, rtol=0
    )
    identity = _np(affine_grid(np.eye(2, 3, dtype="float32")[None], 4, 5))
    assert identity.shape == (1, 4, 5, 2)
    # -1 and +1 are the centres of the first and last pixels.
    np.testing.assert_allclose(identity[0, 0, 0], [-1.0, -1.0])
    np.testing.assert_allclose(identity[0, -1, -1], [1.0, 1.0])
    np.testing.assert_allclose(identity[0, 0, :, 0], np.linspace(-1, 1, 5))
    np.testing.assert_allclose(identity[0, :, 0, 1], np.linspace(-1, 1, 4))
    # (batch, 6) is the same as (batch, 2, 3).
    flat = _np(affine_grid(theta.reshape(2, 6), 4, 5))
    np.testing.assert_array_equal(flat, grid)


def test_affine_grid_size_one_axis_is_centre():
    grid = _np(affine_grid(np.eye(2, 3, dtype="float32")[None], 1, 3))
    np.testing.assert_allclose(grid[0, 0, :, 1], 0.0)
    np.testing.assert_allclose(grid[0, 0, :, 0], [-1.0, 0.0, 1.0])


# ----------------------------------------------------------------------------
# Sampler vs scipy


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_identity_reproduces_input_exactly(padding):
    for shape in [(2, 6, 7, 3), (1, 13, 11, 2), (2, 1, 5, 1)]:
        images = _image(shape)
        theta = np.tile(np.eye(2, 3, dtype="float32")[None], (shape[0], 1, 1))
        grid = affine_grid(theta, *shape[1:3])
        out = harness.to_numpy(bilinear_sample(images, grid, padding))[0]
        np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_match_scipy(name, padding):
    images = _image()
    theta = np.array([TRANSFORMS[name]] * 2, "float32")
    grid = _np(affine_grid(theta, 5, 9))
    out = _np(bilinear_sample(images, grid.astype("float32"), padding))
    ref = scipy_sample(images, grid, SCIPY_MODE[padding])
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    rows, cols = to_pixels(grid, 6, 7)
    outside = (rows < 0) | (rows > 5) | (cols < 0) | (cols > 6)
    if name in ("zoom_out", "rotation", "shear", "translation"):
        assert outside.any(), "the test must sample outside the image"
    # Interior points agree with scipy's plain "constant" mode as well.
    inside = ~outside
    plain = scipy_sample(images, grid, "constant")
    np.testing.assert_allclose(
        out[inside], plain[inside], atol=1e-5, rtol=0
    )


def test_zeros_padding_interpolates_towards_zero_outside():
    # Half a pixel left of column 0: one neighbour inside (weight 1/2), one
    # outside (weight 1/2, value 0). scipy's "constant" mode would return 0
    # there (no interpolation beyond the edge); "grid-constant" is ours.
    images = _image((1, 4, 5, 2))
    cols = np.array([-0.5, -0.25, 4.5, 2.0, -1.0, 5.0, -3.0])
    rows = np.array([1.0, 2.0, 3.0, -0.5, 2.0, 1.0, 1.0])
    grid = np.stack([cols * 2 / 4 - 1, rows * 2 / 3 - 1], -1)[None, None]
    out = _np(bilinear_sample(images, grid.astype("float32"), "zeros"))[0, 0]
    x = images[0].astype("float64")
    np.testing.assert_allclose(out[0], 0.5 * x[1, 0], atol=1e-6)
    np.testing.assert_allclose(out[1], 0.75 * x[2, 0], atol=1e-6)
    np.testing.assert_allclose(out[2], 0.5 * x[3, 4], atol=1e-6)
    np.testing.assert_allclose(out[3], 0.5 * x[0, 2], atol=1e-6)
    np.testing.assert_array_equal(out[4:], 0.0)
    border = _np(bilinear_sample(images, grid.astype("float32"), "border"))
    border = border[0, 0]
    np.testing.assert_allclose(border[0], x[1, 0], atol=1e-6)
    np.testing.assert_allclose(border[2], x[3, 4], atol=1e-6)
    np.testing.assert_allclose(border[4], x[2, 0], atol=1e-6)
    np.testing.assert_allclose(border[5], x[1, 4], atol=1e-6)
    np.testing.assert_allclose(border[6], x[1, 0], atol=1e-6)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_random_points_match_scipy(padding):
    rng = np.random.default_rng(5)
    images = _image((2, 5, 6, 2), seed=2)
    grid = rng.uniform(-1.6, 1.6, (2, 4, 3, 2))
    out = _np(bilinear_sample(images, grid.astype("float32"), padding))
    ref = scipy_sample(images, grid.astype("float32"), SCIPY_MODE[padding])
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_non_finite_and_huge_coordinates_are_safe(padding):
    images = _image((1, 4, 5, 2))
    x = images[0]
    grid = np.array(
        [[[[np.nan, 0.0], [1e30, 0.0], [-1e30, -1e30], [np.inf, np.nan]]]],
        "float32",
    )
    out = _np(bilinear_sample(images, grid, padding))[0, 0]
    assert np.isfinite(out).all()
    if padding == "zeros":
        np.testing.assert_array_equal(out, 0.0)
    else:  # NaN reads as the first pixel, +-huge as the edge
        _close_rows = [x[1, 0] * 0.5 + x[2, 0] * 0.5, x[1, 4] * 0.5
                       + x[2, 4] * 0.5, x[0, 0], x[0, 4]]
        np.testing.assert_allclose(out, np.array(_close_rows), atol=1e-6)


def test_output_dtype_follows_images():
    grid = affine_grid(np.eye(2, 3, dtype="float32")[None], 3, 3)
    out = bilinear_sample(np.ones((1, 4, 4, 2), "float16"), grid)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"


# ----------------------------------------------------------------------------
# Gradients: float64 central differences vs the backend's autodiff


def autodiff(fn, args):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            value = fn(*tensors)
        return [np.asarray(g) for g in tape.gradient(value, tensors)]
    if BACKEND == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        fn(*tensors).backward()
        return [t.grad.numpy() for t in tensors]
    if BACKEND == "jax":
        import jax

        return [
            np.asarray(g)
            for g in jax.grad(fn, argnums=tuple(range(len(args))))(*args)
        ]
    raise NotImplementedError(BACKEND)


def finite_differences(fn, args, eps=1e-6, max_entries=16):
    """Central differences on (at most `max_entries` random) entries of each
    argument; unchecked entries are NaN."""
    rng = np.random.default_rng(0)
    grads = []
    for k, arg in enumerate(args):
        grad = np.full_like(arg, np.nan)
        entries = list(np.ndindex(arg.shape))
        if len(entries) > max_entries:
            keep = rng.choice(len(entries), max_entries, replace=False)
            entries = [entries[i] for i in keep]
        for idx in entries:
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            grad[idx] = (float(_np(fn(*plus))) - float(_np(fn(*minus)))) / (
                2 * eps
            )
        grads.append(grad)
    return grads


def _off_integer(pixels, margin=0.05):
    frac = np.abs(pixels - np.round(pixels))
    return frac.min() > margin


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_gradients_wrt_images_and_grid(padding):
    rng = np.random.default_rng(7)
    images = rng.standard_normal((1, 4, 5, 2))
    # Pixel positions away from integers (bilinear has kinks there),
    # partly outside the image.
    cols = rng.uniform(-1.0, 5.0, (1, 3, 3))
    rows = rng.uniform(-1.0, 4.0, (1, 3, 3))
    cols = np.where(_frac_ok(cols), cols, cols + 0.3)
    rows = np.where(_frac_ok(rows), rows, rows + 0.3)
    assert _off_integer(cols) and _off_integer(rows)
    grid = np.stack([cols * 2 / 4 - 1, rows * 2 / 3 - 1], -1)
    proj = rng.standard_normal((1, 3, 3, 2))

    def fn(img, g):
        return ops.sum(
            bilinear_sample(img, g, padding) * ops.convert_to_tensor(proj)
        )

    auto = autodiff(fn, [images, grid])
    numeric = finite_differences(fn, [images, grid], max_entries=18)
    for a, n in zip(auto, numeric, strict=True):
        checked = ~np.isnan(n)
        assert checked.sum() >= min(a.size, 16)
        np.testing.assert_allclose(a[checked], n[checked], atol=1e-6,
                                   rtol=1e-5)
    assert np.abs(auto[1]).max() > 1e-2  # the grid gets a real gradient


def _frac_ok(x, margin=0.05):
    return np.abs(x - np.round(x)) > margin


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_gradients_wrt_theta_and_images(padding):
    rng = np.random.default_rng(8)
    images = rng.standard_normal((2, 5, 6, 2))
    # A transform near the identity (scaled up so some points fall outside)
    # whose sampling points all avoid integer pixel positions.
    while True:
        theta = np.eye(2, 3)[None] * 1.15 + rng.uniform(-0.2, 0.2, (2, 2, 3))
        rows, cols = to_pixels(np_affine_grid(theta, 3, 4), 5, 6)
        if _off_integer(rows, 0.02) and _off_integer(cols, 0.02):
            break
    assert _off_integer(rows, 0.02) and _off_integer(cols, 0.02)
    assert (cols < 0).any() or (cols > 5).any() or (rows < 0).any()
    proj = rng.standard_normal((2, 3, 4, 2))

    def fn(img, th):
        return ops.sum(
            bilinear_sample(img, affine_grid(th, 3, 4), padding)
            * ops.convert_to_tensor(proj)
        )

    auto = autodiff(fn, [images, theta])
    numeric = finite_differences(fn, [images, theta])
    for a, n in zip(auto, numeric, strict=True):
        checked = ~np.isnan(n)
        assert checked.sum() >= min(a.size, 16)
        np.testing.assert_allclose(a[checked], n[checked], atol=1e-6,
                                   rtol=1e-5)
    assert np.abs(auto[1]).max() > 1e-2


# ----------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: affine_grid(np.zeros((2, 3, 3)), 4, 4),
         "affine_grid: invalid `theta shape`"),
        (lambda: affine_grid(np.zeros((2, 4)), 4, 4),
         "affine_grid: invalid `theta shape`"),
        (lambda: affine_grid(np.zeros((2, 6)), 0, 4),
         "affine_grid: invalid `height`"),
        (lambda: affine_grid(np.zeros((2, 6)), 4, 2.0),
         "affine_grid: invalid `width`"),
        (lambda: bilinear_sample(np.zeros((1, 4, 4, 1)), np.zeros((1, 2, 2, 2)),
                                 padding="reflect"),
         r"bilinear_sample: invalid `padding`.*\['zeros', 'border'\]"),
        (lambda: bilinear_sample(np.zeros((4, 4, 1)), np.zeros((1, 2, 2, 2))),
         "bilinear_sample: invalid `images shape`.*rank 4"),
        (lambda: bilinear_sample(np.zeros((1, 4, 4, 1)),
                                 np.zeros((1, 2, 2, 3))),
         "bilinear_sample: invalid `grid shape`"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
