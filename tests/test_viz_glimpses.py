"""Glimpse boxes and pictures (keras_attn.viz)."""

import sys

import numpy as np
import pytest
from keras import ops

from keras_attn.ops import affine_grid
from keras_attn.ops import bilinear_sample
from keras_attn.viz import draw_glimpses
from keras_attn.viz import glimpse_boxes

H, W = 30, 50  # non-square on purpose


def _pixel_under(locations):
    """(column, row) that the sampler reads at each (x, y), via the ops.

    Ramp images whose value is the column (row) index, sampled bilinearly at
    a 1x1 grid translated to the location: the "corners" convention as
    `affine_grid` implements it, not as `glimpse_boxes` restates it.
    """
    loc = np.asarray(locations, np.float32).reshape(-1, 2)
    n = len(loc)
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, :, 2] = loc
    cols = np.broadcast_to(np.arange(W, dtype=np.float32), (H, W))
    rows = np.broadcast_to(np.arange(H, dtype=np.float32)[:, None], (H, W))
    ramp = np.stack([cols, rows], -1)[None].repeat(n, 0)
    grid = affine_grid(ops.convert_to_tensor(theta), 1, 1)
    out = ops.convert_to_numpy(bilinear_sample(ramp, grid))
    return out.reshape(n, 2)


def test_boxes_follow_the_affine_grid_convention():
    locations = np.array([[[-1, -1], [1, 1], [0, 0], [-1, 1],
                           [0.3, -0.6]]], np.float32)
    boxes = glimpse_boxes(locations, (H, W, 1), glimpse_size=8,
                          num_scales=3, scale_factor=2)
    assert boxes.shape == (1, 5, 3, 4)
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    expected = _pixel_under(locations)
    for k in range(3):
        np.testing.assert_allclose(centres[0, :, k], expected, atol=1e-4)
        side = 8 * 2**k
        np.testing.assert_allclose(boxes[0, :, k, 2] - boxes[0, :, k, 0],
                                   side)
        np.testing.assert_allclose(boxes[0, :, k, 3] - boxes[0, :, k, 1],
                                   side)


def test_boxes_by_hand_including_beyond_the_border():
    # column u = (x + 1) (W - 1) / 2, row v = (y + 1) (H - 1) / 2
    locations = np.array([[[-1, -1], [1, 1], [0, 0], [1.5, -2]]])
    boxes = glimpse_boxes(locations, (H, W), glimpse_size=6, num_scales=2,
                          scale_factor=1.5)
    centres = [(0, 0), (49, 29), (24.5, 14.5), (61.25, -14.5)]
    for step, (u, v) in enumerate(centres):
        for k, half in enumerate([3.0, 4.5]):
            np.testing.assert_allclose(
                boxes[0, step, k], [u - half, v - half, u + half, v + half]
            )


def test_png_written_with_expected_size(tmp_path):
    mpl_image = pytest.importorskip("matplotlib.image")
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, H, W, 1)).astype(np.float32)
    locations = rng.uniform(-1.2, 1.2, size=(3, 4, 2))
    path = tmp_path / "glimpses.png"
    figure = draw_glimpses(images, locations, path=str(path), labels=[1, 2, 3],
                           predictions=[1, 5, 3], columns=2, panel_size=2,
                           dpi=40)
    assert path.stat().st_size > 1000
    picture = mpl_image.imread(str(path))
    assert picture.shape[:2] == (2 * 2 * 40, 2 * 2 * 40)  # rows, columns
    assert picture[..., :3].std() > 0.05
    drawn = [ax for ax in figure.axes if ax.images]
    assert len(drawn) == 3
    # 4 steps x 3 scales boxes, larger scales lighter
    rectangles = drawn[0].patches
    assert len(rectangles) == 12
    widths = [r.get_width() for r in rectangles[:3]]
    alphas = [r.get_alpha() for r in rectangles[:3]]
    assert widths == [8, 16, 32] and alphas == sorted(alphas, reverse=True)
    assert drawn[1].get_title() == "label 2 / pred 5"


def test_returns_figure_without_path_for_2d_images():
    figure = draw_glimpses(np.zeros((2, H, W), np.uint8),
                           np.zeros((2, 1, 2)))
    assert len([ax for ax in figure.axes if ax.images]) == 2


@pytest.mark.parametrize(
    "images, locations, kwargs, match",
    [
        ((2, H, W), (2, 3), {}, "locations"),
        ((2, H, W), (2, 3, 3), {}, "locations"),
        ((2, H, W), (3, 3, 2), {}, "locations"),
        ((H, W), (1, 3, 2), {}, "images"),
        ((2, H, W, 2), (2, 3, 2), {}, "images"),
        ((2, H, W), (2, 3, 2), {"labels": [1, 2, 3]}, "labels"),
        ((2, H, W), (2, 3, 2), {"glimpse_size": 0}, "glimpse_size"),
        ((2, H, W), (2, 3, 2), {"scale_factor": -1}, "scale_factor"),
    ],
)
def test_bad_shapes_raise(images, locations, kwargs, match):
    with pytest.raises(ValueError, match=match):
        draw_glimpses(np.zeros(images), np.zeros(locations), **kwargs)


def test_bad_box_arguments_raise():
    with pytest.raises(ValueError, match="image_shape"):
        glimpse_boxes(np.zeros((1, 2, 2)), (H,))
    with pytest.raises(ValueError, match="locations"):
        glimpse_boxes(np.zeros((2, 2)), (H, W))
    with pytest.raises(ValueError, match="locations"):
        glimpse_boxes(np.full((1, 1, 2), np.nan), (H, W))
    with pytest.raises(ValueError, match="num_scales"):
        glimpse_boxes(np.zeros((1, 1, 2)), (H, W), num_scales=0)


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install keras_attn\[viz\]"):
        draw_glimpses(np.zeros((1, H, W)), np.zeros((1, 1, 2)))
