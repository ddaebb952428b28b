"""Localisation metrics of benchmarks._localization on hand-checkable cases.

Boxes are `[top, left, bottom, right]` edge coordinates (bottom / right
exclusive); the STN box is checked against `keras_attn.ops.affine_grid`'s
own grid, and the glimpse convention against `viz.glimpse_boxes`.
"""

import numpy as np
import pytest
from keras import ops

from benchmarks import _localization as loc
from keras_attn.ops import affine_grid
from keras_attn.viz import glimpse_boxes

H, W = 12, 10  # non-square on purpose


def _peak(row, col, shape=(H, W)):
    m = np.zeros((1, *shape))
    m[0, row, col] = 1.0
    return m


BOX = np.array([[3.0, 2.0, 7.0, 6.0]])  # rows 3..6, cols 2..5


def test_pointing_game_peak_inside_and_outside():
    assert loc.pointing_game(_peak(3, 2), BOX).tolist() == [1.0]
    assert loc.pointing_game(_peak(6, 5), BOX).tolist() == [1.0]
    # bottom / right are exclusive
    assert loc.pointing_game(_peak(7, 5), BOX).tolist() == [0.0]
    assert loc.pointing_game(_peak(6, 6), BOX).tolist() == [0.0]
    assert loc.pointing_game(_peak(0, 0), BOX).tolist() == [0.0]


def test_pointing_game_tolerance_is_euclidean_distance_to_box():
    # Pixel (9, 5): centre (9.5, 5.5) lies 2.5 below the box bottom (7).
    assert loc.pointing_game(_peak(9, 5), BOX, tolerance=2).tolist() == [0.0]
    assert loc.pointing_game(_peak(9, 5), BOX, tolerance=3).tolist() == [1.0]
    # Pixel (9, 8): 2.5 below and 2.5 right of the corner: 3.54 away.
    assert loc.pointing_game(_peak(9, 8), BOX, tolerance=3.5).tolist() == [0.0]
    assert loc.pointing_game(_peak(9, 8), BOX, tolerance=3.6).tolist() == [1.0]


def test_pointing_game_ties_take_first_row_major_maximum():
    m = _peak(0, 0)
    m[0, 4, 3] = 1.0  # a second maximum, inside; the first is outside
    assert loc.pointing_game(m, BOX).tolist() == [0.0]
    assert loc.pointing_game(m[:, ::-1, ::-1], [[0, 0, 2, 2]]).tolist() == [
        0.0]  # flipped: (7, 6) comes first now


def test_pointing_game_constant_map_scores_area_ratio():
    maps = np.concatenate([loc.uniform_map(1, (H, W)), np.zeros((1, H, W))])
    hits = loc.pointing_game(maps, np.repeat(BOX, 2, axis=0))
    np.testing.assert_allclose(hits, [16 / 120, 16 / 120])


def test_pointing_game_resizes_small_maps_to_the_image():
    # A 3x3 map peaked in the centre cell of a 12x12 image: the maximum
    # lands in rows/cols 4..7.
    small = np.zeros((1, 3, 3))
    small[0, 1, 1] = 1.0
    assert loc.pointing_game(small, [[4, 4, 8, 8]],
                             image_size=(12, 12)).tolist() == [1.0]
    assert loc.pointing_game(small, [[0, 0, 4, 4]],
                             image_size=(12, 12)).tolist() == [0.0]
    # a NumPy shape works as image_size too
    assert loc.pointing_game(small, [[4, 4, 8, 8]],
                             image_size=np.zeros((1, 12, 12)).shape[1:3]
                             ).tolist() == [1.0]


def test_pointing_game_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pointing_game.*image_size"):
        loc.pointing_game(_peak(0, 0), BOX, 15)
    with pytest.raises(ValueError, match="pointing_game.*boxes"):
        loc.pointing_game(_peak(0, 0), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="pointing_game.*tolerance"):
        loc.pointing_game(_peak(0, 0), BOX, tolerance=-1)


def test_energy_in_box_all_inside_uniform_zero_and_half():
    inside = np.zeros((1, H, W))
    inside[0, 3:7, 2:6] = np.random.default_rng(0).random((4, 4)) + 0.1
    np.testing.assert_allclose(loc.energy_in_box(inside, BOX), [1.0])
    np.testing.assert_allclose(
        loc.energy_in_box(loc.uniform_map(1, (H, W)), BOX), [16 / 120])
    np.testing.assert_allclose(
        loc.energy_in_box(np.zeros((1, H, W)), BOX), [16 / 120])
    # Negatives are clipped: they neither add nor subtract mass.
    half = _peak(3, 2) + _peak(0, 0) - 5 * _peak(11, 9)
    np.testing.assert_allclose(loc.energy_in_box(half, BOX), [0.5])


def test_energy_in_box_resizes_constant_map_to_area_ratio():
    np.testing.assert_allclose(
        loc.energy_in_box(np.ones((1, 3, 3)), [[0, 0, 6, 6]],
                          image_size=(12, 12)), [0.25])


def test_centre_prior_and_uniform_map():
    prior = loc.centre_prior(2, (H, W))
    assert prior.shape == (2, H, W)
    np.testing.assert_allclose(prior.sum(axis=(1, 2)), 1.0)
    # symmetric about the centre, peak in the middle 2x2 pixels
    np.testing.assert_allclose(prior[0], prior[0, ::-1, ::-1])
    assert loc.pointing_game(prior[:1], [[5, 4, 7, 6]]).tolist() == [1.0]
    # isotropic: sigma = min(H, W) / 4 = 2.5 in both directions; pixel
    # (5, 4) is half a pixel from the centre on each axis, (5, 2) and
    # (3, 4) are 2.5 pixels away on one of them.
    centre = prior[0, 5, 4]
    ratio = np.exp(-(2.5**2 - 0.5**2) / (2 * 2.5**2))
    np.testing.assert_allclose(prior[0, 5, 2] / centre, ratio)
    np.testing.assert_allclose(prior[0, 3, 4] / centre, ratio)
    uniform = loc.uniform_map(3, (H, W))
    assert uniform.shape == (3, H, W)
    np.testing.assert_allclose(uniform, 1 / 120)


def test_resize_maps_matches_keras_bilinear():
    maps = np.random.default_rng(1).random((2, 4, 5))
    ours = loc.resize_maps(maps, H, W)
    theirs = ops.convert_to_numpy(ops.image.resize(
        maps[..., None].astype(np.float32), (H, W),
        interpolation="bilinear", antialias=False))[..., 0]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_array_equal(loc.resize_maps(maps, 4, 5), maps)


def test_box_iou_identical_disjoint_half():
    a = np.array([[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 0, 0]])
    b = np.array([[0, 0, 4, 4], [5, 5, 8, 8], [0, 2, 4, 6], [0, 0, 0, 0]])
    # half-overlapping: intersection 8, union 24
    np.testing.assert_allclose(loc.box_iou(a, b), [1.0, 0.0, 1 / 3, 0.0])
    np.testing.assert_allclose(loc.box_iou([0, 0, 4, 4], [[0, 0, 2, 4]]),
                               [0.5])


def test_stn_box_identity_is_whole_image():
    theta = np.array([[[1.0, 0, 0], [0, 1.0, 0]]])
    np.testing.assert_allclose(loc.stn_box(theta, (H, W)),
                               [[0, 0, H, W]])
    np.testing.assert_allclose(loc.stn_box(theta.reshape(1, 6), (H, W),
                                           output_size=(3, 3)),
                               [[0, 0, H, W]])


def test_stn_box_centred_zoom_by_half():
    # Scale 0.5 on a 29x29 image: samples span pixel centres 7..21.
    theta = np.array([[[0.5, 0, 0], [0, 0.5, 0]]])
    np.testing.assert_allclose(loc.stn_box(theta, (29, 29)),
                               [[7, 7, 22, 22]])
    # shifted right by a quarter of the width: centres 14..28 in columns
    theta = np.array([[[0.5, 0, 0.5], [0, 0.5, 0]]])
    np.testing.assert_allclose(loc.stn_box(theta, (29, 29)),
                               [[7, 14, 22, 29]])
    np.testing.assert_allclose(
        loc.stn_box(np.array([[[0.5, 0, 1.0], [0, 0.5, 0]]]), (29, 29),
                    clip=True), [[7, 21, 22, 29]])


def test_stn_box_equals_affine_grid_extremes():
    rng = np.random.default_rng(2)
    theta = rng.normal(0, 0.6, (5, 2, 3))  # rotations, shears, shifts
    for out in ((7, 9), (1, 5), (6, 1)):
        grid = np.asarray(ops.convert_to_numpy(
            affine_grid(theta, *out)), np.float64)
        u = (grid[..., 0] + 1) * (W - 1) / 2
        v = (grid[..., 1] + 1) * (H - 1) / 2
        expected = np.stack([v.min(axis=(1, 2)), u.min(axis=(1, 2)),
                             v.max(axis=(1, 2)) + 1,
                             u.max(axis=(1, 2)) + 1], axis=1)
        np.testing.assert_allclose(
            loc.stn_box(theta, (H, W), output_size=out), expected,
            atol=1e-9)


def test_glimpse_hits_centre_and_corners():
    # (x, y) = (column, row): (-1, -1) top-left centre, (1, -1) top-right.
    locations = np.array([[[0, 0], [-1, -1], [1, -1], [1, 1]]], np.float64)
    # Centre of a 12x10 image is (row 6.0, col 5.0) in edge coordinates.
    assert loc.glimpse_hits(locations, [[5, 4, 7, 6]], (H, W)).tolist() == [
        0.25]
    assert loc.glimpse_hits(locations, [[0, 0, 1, 1]], (H, W)).tolist() == [
        0.25]  # top-left pixel
    assert loc.glimpse_hits(locations, [[0, 0, 1, W]], (H, W)).tolist() == [
        0.5]  # the whole top row: both top corners
    assert loc.glimpse_hits(locations, [[0, 0, H, W]], (H, W)).tolist() == [
        1.0]
    # Same centre as viz.glimpse_boxes (centres at integers there).
    centre = glimpse_boxes(locations, (H, W), num_scales=1)[0, :, 0]
    cols = (centre[:, 0] + centre[:, 2]) / 2 + 0.5
    rows = (centre[:, 1] + centre[:, 3]) / 2 + 0.5
    np.testing.assert_allclose(rows, [6, 0.5, 0.5, H - 0.5])
    np.testing.assert_allclose(cols, [5, 0.5, W - 0.5, W - 0.5])


def test_boxes_from_offsets_and_tight_boxes():
    np.testing.assert_allclose(
        loc.boxes_from_offsets([[3, 5], [0, 0]]),
        [[3, 5, 31, 33], [0, 0, 28, 28]])
    images = np.zeros((2, 28, 28, 1))
    images[0, 3:25, 4:20] = 1.0  # rows 3..24, cols 4..19
    images[0, 10, 25] = 0.05  # below threshold * max: not the object
    images[1, 0, 27] = 0.5
    np.testing.assert_allclose(loc.tight_boxes(images),
                               [[3, 4, 25, 20], [0, 27, 1, 28]])
    np.testing.assert_allclose(
        loc.tight_boxes(images, offsets=[[10, 1], [2, 3]]),
        [[13, 5, 35, 21], [2, 30, 3, 31]])
    with pytest.raises(ValueError, match="tight_boxes.*image 1"):
        loc.tight_boxes(np.zeros((2, 4, 4)) + [[[1]], [[0]]])


def test_draw_maps_with_boxes_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    n = 3
    images = np.random.default_rng(3).random((n, H, W))
    maps = {"attention": np.random.default_rng(4).random((n, 3, 3)),
            "centre prior": loc.centre_prior(n, (H, W))}
    path = tmp_path / "maps.png"
    figure = loc.draw_maps_with_boxes(images, maps, np.repeat(BOX, n, 0),
                                      path, titles=["a", "b", "c"])
    assert path.stat().st_size > 1000
    assert len(figure.axes) == 2 * n
    assert len(figure.axes[0].patches) == 1
    with pytest.raises(ValueError, match="draw_maps_with_boxes.*maps"):
        loc.draw_maps_with_boxes(images, [maps["attention"]], None)
