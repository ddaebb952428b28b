"""RTS task of the STN paper (Jaderberg et al. 2015, Sec. 4.1), checked in
NumPy / SciPy."""

import numpy as np
import pytest
from scipy import ndimage

import keras_attn.data
from keras_attn.data import distortions
from keras_attn.data import load_fashion_mnist
from keras_attn.data import rts

pytestmark = pytest.mark.tf_only  # stateless TensorFlow random draws


@pytest.fixture(scope="module")
def test_images():
    return load_fashion_mnist("test")[0][:300]


def _arrow(size=28):
    """An image with no symmetry: a bar from the centre to the right edge
    of the upper half, and a dot below the centre."""
    image = np.zeros((size, size), np.float32)
    image[size // 2 - 2:size // 2, size // 2:size - 4] = 1.0
    image[size // 2 + 5, size // 2 - 1] = 0.5
    return image


def _scipy_render(image, angle, scale, center, rows, cols):
    """Independent reference: `ndimage.map_coordinates` (order 1, zeros
    outside) at the points of `rows x cols` mapped back into the image."""
    a = np.deg2rad(angle)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    dr, dc = r - center[0], c - center[1]
    half = (np.array(image.shape) - 1) / 2
    src_r = (np.cos(a) * dr + np.sin(a) * dc) / scale + half[0]
    src_c = (np.cos(a) * dc - np.sin(a) * dr) / scale + half[1]
    return ndimage.map_coordinates(image.astype(np.float64), [src_r, src_c],
                                   order=1, mode="grid-constant", cval=0.0)


def test_shapes_dtypes_range_and_input_forms(test_images):
    x = test_images[:20]
    canvases, params = rts(x, seed=1, return_params=True)
    assert canvases.shape == (20, 42, 42, 1) and canvases.dtype == np.float32
    assert canvases.min() == 0.0 and canvases.max() <= 1.0
    shapes = {k: (v.shape, v.dtype) for k, v in params.items()}
    assert shapes == {
        "angles": ((20,), np.float32), "scales": ((20,), np.float32),
        "centers": ((20, 2), np.float32), "boxes": ((20, 4), np.float32),
    }
    # uint8 (N, H, W) and float (N, H, W, 1) in [0, 1] are the same task.
    floats = (x.astype(np.float32) / np.float32(255))[..., None]
    np.testing.assert_array_equal(rts(floats, seed=1), canvases)
    np.testing.assert_array_equal(
        rts(x, canvas_size=60, seed=1).shape, (20, 60, 60, 1)
    )
    assert keras_attn.data.rts is distortions.rts
    assert "rts" in dir(keras_attn.data)


def test_draws_are_a_function_of_seed_epoch_and_index(test_images):
    x = test_images[:12]
    canvases, params = rts(x, seed=7, epoch=2, return_params=True)
    again, params_again = rts(x, seed=7, epoch=2, return_params=True)
    np.testing.assert_array_equal(again, canvases)
    # Image i's draws do not depend on the other images.
    head, params_head = rts(x[:5], seed=7, epoch=2, return_params=True)
    np.testing.assert_array_equal(head, canvases[:5])
    for key in params:
        np.testing.assert_array_equal(params_head[key], params[key][:5])
        np.testing.assert_array_equal(params_again[key], params[key])
    # Another epoch or seed draws new transforms for every image.
    for kwargs in ({"seed": 7, "epoch": 3}, {"seed": 8, "epoch": 2}):
        _, other = rts(x, return_params=True, **kwargs)
        assert np.all(other["angles"] != params["angles"])
        assert np.all(other["scales"] != params["scales"])


def test_angles_and_scales_cover_their_ranges(test_images):
    _, params = rts(test_images, seed=2, return_params=True)
    angles, scales = params["angles"], params["scales"]
    assert np.all(np.abs(angles) <= 45) and np.all(scales >= 0.7)
    assert np.all(scales <= 1.2)
    # Uniform draws over 300 images reach near both ends of each range.
    assert angles.min() < -40 and angles.max() > 40
    assert scales.min() < 0.75 and scales.max() > 1.15
    _, params = rts(test_images[:50], max_angle=10, scale_range=(0.9, 1.1),
                    seed=2, return_params=True)
    assert np.all(np.abs(params["angles"]) <= 10)
    assert params["scales"].min() >= 0.9 and params["scales"].max() <= 1.1


def test_matches_scipy_reference_and_nothing_is_cut(test_images):
    # Ink within the central 20x20 (like MNIST digits): every transformed
    # image fits on the 42x42 canvas, so the task must never crop one.
    x = test_images[:40].astype(np.float32) / np.float32(255)
    x[:, :4], x[:, -4:], x[:, :, :4], x[:, :, -4:] = 0, 0, 0, 0
    canvases, params = rts(x, seed=3, return_params=True)
    wide = np.arange(-30, 72)  # the canvas and 30 pixels around it
    inner = slice(30, 72)
    for i in range(len(x)):
        reference = _scipy_render(x[i], params["angles"][i],
                                  params["scales"][i], params["centers"][i],
                                  wide, wide)
        np.testing.assert_allclose(canvases[i, ..., 0], reference[inner,
                                   inner], atol=1e-5)
        outside = reference.copy()
        outside[inner, inner] = 0
        assert not outside.any(), f"image {i} cut by the canvas edge"
    # ... and the placements spread over the canvas.
    centers = params["centers"]
    assert np.ptp(centers[:, 0]) > 8 and np.ptp(centers[:, 1]) > 8


def test_boxes_hold_the_mass_and_are_tight(test_images):
    canvases, params = rts(test_images, seed=4, return_params=True)
    canvases = canvases[..., 0]
    threshold = distortions.BOX_THRESHOLD * canvases.max(axis=(1, 2))
    for i, (top, left, bottom, right) in enumerate(
        params["boxes"].astype(int)
    ):
        canvas = canvases[i]
        assert 0 <= top < bottom <= 42 and 0 <= left < right <= 42
        inside = canvas[top:bottom, left:right]
        assert inside.sum() >= 0.95 * canvas.sum()
        outside = canvas.copy()
        outside[top:bottom, left:right] = 0
        assert outside.max() <= threshold[i]
        # Tight: every edge row / column of the box holds object pixels.
        for edge in (inside[0], inside[-1], inside[:, 0], inside[:, -1]):
            assert edge.max() > threshold[i]
    np.testing.assert_array_equal(params["boxes"], np.round(params["boxes"]))


def test_blank_image_has_nan_box():
    images = np.zeros((2, 28, 28), np.uint8)
    images[1, 10:14, 10:14] = 255
    canvases, params = rts(images, return_params=True)
    assert not canvases[0].any()
    assert np.isnan(params["boxes"][0]).all()
    assert np.isfinite(params["boxes"][1]).all()


def test_no_rotation_no_scaling_is_an_exact_translation(test_images):
    x = test_images[:200]
    canvases, params = rts(x, max_angle=0, scale_range=(1, 1), seed=5,
                           return_params=True)
    assert not params["angles"].any() and np.all(params["scales"] == 1)
    corners = params["centers"] - 13.5
    np.testing.assert_array_equal(corners, np.round(corners))
    corners = corners.astype(int)
    # The blank margins of an image may leave the canvas, its ink never.
    pad = 28
    expected = np.zeros((200, 42 + 2 * pad, 42 + 2 * pad), np.float32)
    for i, (r, c) in enumerate(corners + pad):
        expected[i, r:r + 28, c:c + 28] = x[i] / np.float32(255)
    inner = slice(pad, pad + 42)
    np.testing.assert_array_equal(canvases[..., 0], expected[:, inner, inner])
    assert canvases.sum() == expected.sum()
    # Positions are spread over all that keep the ink inside, including
    # those where the image's frame leaves the canvas.
    assert corners.min() < 0 and corners.max() > 42 - 28
    assert len({tuple(rc) for rc in corners}) > 100


@pytest.mark.parametrize(("angle", "k"), [(90.0, 1), (-90.0, -1),
                                          (180.0, 2)])
def test_rotation_sign_matches_rot90(angle, k):
    # Positive angles turn counter-clockwise as displayed, as np.rot90.
    image = _arrow()[None]
    center = np.array([[13.5, 13.5]])
    got = distortions._warp(image, np.array([angle]), np.array([1.0]),
                            center, 28)
    np.testing.assert_allclose(got[0], np.rot90(image[0], k), atol=1e-5)


def test_returned_angle_is_the_displayed_rotation():
    # Through the public function: the bar's direction from the image
    # centre turns by the returned angle, counter-clockwise on screen.
    images = np.repeat(_arrow()[None], 60, axis=0)
    images[:, 16:] = 0  # keep the bar only
    canvases, params = rts(images, canvas_size=60, max_angle=180,
                           scale_range=(1, 1), seed=6, return_params=True)
    rows, cols = np.mgrid[:60, :60]
    for i in range(60):
        canvas = canvases[i, ..., 0]
        mass = canvas.sum()
        dr = (canvas * rows).sum() / mass - params["centers"][i, 0]
        dc = (canvas * cols).sum() / mass - params["centers"][i, 1]
        before = np.degrees(np.arctan2(1.5, 6.5))  # bar centroid, rows up
        seen = np.degrees(np.arctan2(-dr, dc))  # rows grow downwards
        turn = (seen - before - params["angles"][i] + 180) % 360 - 180
        assert abs(turn) < 2.0, (i, params["angles"][i], seen)


def test_too_large_object_is_centred():
    images = np.ones((3, 28, 28), np.float32)
    canvases, params = rts(images, canvas_size=30, max_angle=45,
                           scale_range=(1.2, 1.2), return_params=True)
    np.testing.assert_array_equal(params["centers"],
                                  np.full((3, 2), 14.5, np.float32))
    assert canvases.shape == (3, 30, 30, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"canvas_size": 20}, r"rts: invalid `canvas_size`.*>= the image "
                              r"size 28x28"),
        ({"canvas_size": 0}, "rts: invalid `canvas_size`.*>= 1"),
        ({"canvas_size": 42.0}, "rts: invalid `canvas_size`"),
        ({"max_angle": -5}, r"rts: invalid `max_angle`.*\[0.0, 180.0\]"),
        ({"max_angle": 200}, "rts: invalid `max_angle`"),
        ({"max_angle": float("nan")}, "rts: invalid `max_angle`"),
        ({"max_angle": True}, "rts: invalid `max_angle`"),
        ({"scale_range": (1.2, 0.7)}, "rts: invalid `scale_range`.*low <= "
                                      "high"),
        ({"scale_range": (0, 1)}, "rts: invalid `scale_range`.*0 < low"),
        ({"scale_range": 1.0}, "rts: invalid `scale_range`"),
        ({"scale_range": (1.0,)}, "rts: invalid `scale_range`"),
        ({"seed": 1.5}, "rts: invalid `seed`"),
        ({"epoch": -1}, "rts: invalid `epoch`.*>= 0"),
        ({"images": np.zeros((2, 28, 28, 3), np.uint8)},
         r"rts: invalid `images`.*\(N, H, W\)"),
        ({"images": np.zeros((2, 28, 28), np.int32)},
         "rts: invalid `images`.*uint8"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"images": np.zeros((2, 28, 28), np.uint8), **kwargs}
    with pytest.raises(ValueError, match=match):
        rts(**args)
