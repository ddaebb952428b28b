"""Does the map find the object? NumPy localisation metrics for attention.

Used by `benchmarks.fidelity` to score attention maps, spatial-transformer
crops and RAM glimpses against the known position of the object (the
28 x 28 image pasted on a translated / cluttered canvas).

Papers: Zhang, Bargal, Lin, Brandt, Shen, Sclaroff, "Top-down Neural
Attention by Excitation Backprop", ECCV 2016 / IJCV 2018 (the pointing game,
Sec. 5.1: a hit when the map's maximum lies on the object, with a 15 px
tolerance); Wang et al., "Score-CAM", CVPR-W 2020 (Sec. 4.2, the
energy-based pointing game: the share of the map's mass inside the box);
Jaderberg et al., "Spatial Transformer Networks", NIPS 2015 (Eq. 1);
Mnih et al., "Recurrent Models of Visual Attention", NIPS 2014 (glimpses).

Conventions (all functions):

- A box is `[top, left, bottom, right]` in image pixels, EDGE coordinates:
  pixel `(r, c)` covers `[r, r + 1) x [c, c + 1)`, so bottom / right are
  exclusive and a box covering rows 3..30 inclusive is `[3, ., 31, .]`.
  The whole `H x W` image is `[0, 0, H, W]`. Boxes are float64 `(N, 4)`.
- A pixel is inside a box when its CENTRE `(r + 0.5, c + 0.5)` is, with
  the box half-open (`top <= r + 0.5 < bottom`); for integer boxes that is
  exactly rows `top .. bottom - 1`. Fractional boxes (from `stn_box`) are
  not split into partial pixels.
- Maps are `(N, h, w)` (or `(N, h, w, 1)`); a map of another size than the
  image is resized by `resize_maps` (bilinear, half-pixel centres, no
  antialiasing, as `keras.ops.image.resize`) before it is scored.
- Normalised coordinates (theta of a spatial transformer, RAM locations)
  follow `keras_attn.ops.affine_grid` ("corners", `align_corners=True`):
  `-1` / `+1` are the centres of the first / last pixel, `x` is the column
  and `y` the row; pixel-centre index `u = (x + 1) (W - 1) / 2`, which is
  edge coordinate `u + 0.5`.

    hits = pointing_game(maps, boxes, image_size=(60, 60))   # (N,)
    share = energy_in_box(maps, boxes, (60, 60))              # (N,)
    iou = box_iou(stn_box(theta, (60, 60)), boxes)            # (N,)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from keras_attn.utils.validation import fail
from keras_attn.viz.plotting import check_images
from keras_attn.viz.plotting import figure_grid
from keras_attn.viz.plotting import min_max_scale
from keras_attn.viz.plotting import require_matplotlib
from keras_attn.viz.plotting import resize_bilinear
from keras_attn.viz.plotting import show_image

# --- argument checks ------------------------------------------------------


def _check_size(function, argument, size):
    """`(H, W)` as two Python ints >= 1."""
    if not isinstance(size, (tuple, list, np.ndarray)) or len(size) != 2 or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
        for d in size
    ):
        fail(function, argument, size, "(height, width), integers >= 1")
    return int(size[0]), int(size[1])


def _stack(function, argument, array, expected):
    """`array` as float64 `(N, h, w)` (a trailing channel of 1 dropped)."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or 0 in array.shape:
        fail(function, argument, f"array of shape {array.shape}", expected)
    return array


def _check_maps(function, maps):
    maps = _stack(function, "maps", maps,
                  "shape (N, h, w) or (N, h, w, 1): one map per image")
    if not np.all(np.isfinite(maps)):
        fail(function, "maps", "non-finite values", "finite numbers")
    return maps


def _check_boxes(function, boxes, n=None, argument="boxes"):
    """`(N, 4)` float64; one `(4,)` box is repeated for every image."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim == 1 and boxes.shape == (4,) and n is not None:
        boxes = np.broadcast_to(boxes, (n, 4))
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or (
        n is not None and len(boxes) != n
    ):
        rows = "N" if n is None else n
        fail(function, argument, f"array of shape {boxes.shape}",
             f"shape ({rows}, 4) of [top, left, bottom, right] pixels")
    if not np.all(np.isfinite(boxes)):
        fail(function, argument, "non-finite values", "finite numbers")
    return boxes


def _at_image_size(function, maps, image_size):
    maps = _check_maps(function, maps)
    if image_size is None:
        return maps
    height, width = _check_size(function, "image_size", image_size)
    return resize_maps(maps, height, width)


# --- maps -----------------------------------------------------------------


def resize_maps(maps, height, width):
    """`(N, h, w)` -> float64 `(N, height, width)`, bilinear.

    Half-pixel centres without antialiasing, as
    `keras.ops.image.resize(..., "bilinear")` (the NumPy resize of
    `keras_attn.viz`); a map already `height x width` is returned as is.
    """
    name = "resize_maps"
    maps = _check_maps(name, maps)
    height, width = _check_size(name, "(height, width)", (height, width))
    if maps.shape[1:] == (height, width):
        return maps
    return resize_bilinear(maps, height, width)


def uniform_map(n, image_size):
    """`n` constant maps `(n, H, W)`, each summing to 1 (a chance baseline:
    every pixel is a maximum)."""
    name = "uniform_map"
    _check_count(name, n)
    height, width = _check_size(name, "image_size", image_size)
    return np.full((n, height, width), 1.0 / (height * width))


def centre_prior(n, image_size):
    """`n` copies of an isotropic Gaussian on the image centre, `(n, H, W)`.

    The centre is `((H - 1) / 2, (W - 1) / 2)` in pixel-centre indices (the
    middle of the image); sigma is a quarter of the SHORTER side, in pixels
    in both directions (isotropic in pixels for non-square images). Each
    map sums to 1. A "look at the middle" baseline: a model that puts the
    object anywhere should beat it.
    """
    name = "centre_prior"
    _check_count(name, n)
    height, width = _check_size(name, "image_size", image_size)
    sigma = min(height, width) / 4.0
    rows = np.arange(height) - (height - 1) / 2.0
    cols = np.arange(width) - (width - 1) / 2.0
    gauss = np.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2)
                   / (2.0 * sigma**2))
    return np.broadcast_to(gauss / gauss.sum(), (n, height, width)).copy()


def _check_count(function, n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        fail(function, "n", n, "an integer >= 0")


# --- pixels in boxes ------------------------------------------------------


def _inside_1d(boxes, lo, hi, size):
    """`(N, size)` bool: pixel centres `i + 0.5` in `[boxes[:, lo],
    boxes[:, hi])`."""
    centres = np.arange(size) + 0.5
    return (centres >= boxes[:, lo, None]) & (centres < boxes[:, hi, None])


def _box_distance(rows, cols, boxes):
    """Euclidean distance from points (edge coordinates) to the closed
    boxes, 0 inside; all arrays broadcast against `boxes[..., 0]`."""
    dy = np.maximum(np.maximum(boxes[..., 0] - rows, rows - boxes[..., 2]), 0)
    dx = np.maximum(np.maximum(boxes[..., 1] - cols, cols - boxes[..., 3]), 0)
    return np.hypot(dy, dx)


def _points_hit(rows, cols, boxes, tolerance):
    """Points (edge coordinates) inside the half-open boxes, or within
    `tolerance` pixels (Euclidean) of them when `tolerance > 0`."""
    inside = ((rows >= boxes[..., 0]) & (rows < boxes[..., 2])
              & (cols >= boxes[..., 1]) & (cols < boxes[..., 3]))
    if tolerance > 0:
        inside |= _box_distance(rows, cols, boxes) <= tolerance
    return inside


def pointing_game(maps, boxes, image_size=None, tolerance=0):
    """Per image 1.0 if the map's maximum falls on the object, else 0.0.

    The pointing game of Zhang et al. (2016): the map (resized to
    `image_size` when given and different) points at its maximum pixel;
    a hit when that pixel's centre lies in the box, or within `tolerance`
    pixels of it (Euclidean distance to the box, i.e. the box grown by
    `tolerance` with rounded corners; the paper uses 15 px, the default
    here is 0).

    Ties: when several pixels share the maximum, the FIRST in row-major
    order (`np.argmax`) points. A CONSTANT map (every pixel a maximum,
    e.g. `uniform_map`) scores the expected hit of a pixel drawn uniformly:
    the share of pixels that would hit, i.e. box area / image area for an
    integer box inside the image. Constancy is judged on the map before
    resizing (resizing can add rounding noise).

    Args:
        maps: `(N, h, w)` or `(N, h, w, 1)` maps, any sign.
        boxes: `(N, 4)` `[top, left, bottom, right]` in image pixels (or
            one `(4,)` box for all).
        image_size: `(H, W)` of the images; `None`: the maps are already at
            image size.
        tolerance: pixels >= 0.

    Returns:
        float64 `(N,)` in `[0, 1]` (0 or 1 except for constant maps).
    """
    name = "pointing_game"
    if isinstance(tolerance, bool) or not isinstance(
        tolerance, (int, float, np.number)
    ) or not tolerance >= 0:
        fail(name, "tolerance", tolerance, "a number of pixels >= 0")
    raw = _check_maps(name, maps)
    constant = raw.max(axis=(1, 2)) == raw.min(axis=(1, 2))
    maps = _at_image_size(name, raw, image_size)
    n, height, width = maps.shape
    boxes = _check_boxes(name, boxes, n)
    flat = maps.reshape(n, -1).argmax(axis=1)
    rows, cols = np.divmod(flat, width)
    hits = _points_hit(rows + 0.5, cols + 0.5, boxes, tolerance)
    hits = hits.astype(np.float64)
    for i in np.flatnonzero(constant):
        # Expected value over all pixels: the share of them that hit.
        grid_rows = np.arange(height)[:, None] + 0.5
        grid_cols = np.arange(width)[None, :] + 0.5
        hits[i] = _points_hit(grid_rows, grid_cols, boxes[i],
                              tolerance).mean()
    return hits


def energy_in_box(maps, boxes, image_size=None):
    """Share of each map's mass that lies inside the box.

    The energy-based pointing game of Score-CAM (Wang et al. 2020):
    negatives are clipped to 0, the map is resized to `image_size` (when
    given and different), and the mass of the pixels whose centres lie in
    the box is divided by the total. A map that is 0 everywhere (after
    clipping) scores as a uniform map would: the share of pixels inside
    the box (box area / image area for an integer box inside the image).

    Args:
        maps: `(N, h, w)` or `(N, h, w, 1)`.
        boxes: `(N, 4)` `[top, left, bottom, right]` in image pixels.
        image_size: `(H, W)`; `None`: the maps are at image size.

    Returns:
        float64 `(N,)` in `[0, 1]`.
    """
    name = "energy_in_box"
    maps = np.maximum(_check_maps(name, maps), 0.0)
    maps = _at_image_size(name, maps, image_size)
    n, height, width = maps.shape
    boxes = _check_boxes(name, boxes, n)
    in_rows = _inside_1d(boxes, 0, 2, height)  # (N, H)
    in_cols = _inside_1d(boxes, 1, 3, width)  # (N, W)
    inside = np.einsum("nhw,nh,nw->n", maps, in_rows, in_cols)
    total = maps.sum(axis=(1, 2))
    uniform = in_rows.mean(axis=1) * in_cols.mean(axis=1)
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, inside / safe, uniform)


# --- boxes ----------------------------------------------------------------


def box_iou(a, b):
    """Intersection over union of matching rows of two `(N, 4)` box arrays
    (`[top, left, bottom, right]`; a `(4,)` box is repeated). Boxes with
    bottom < top count as empty; two empty boxes have IoU 0.

    Returns float64 `(N,)`."""
    name = "box_iou"
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = len(a) if a.ndim == 2 else len(b) if b.ndim == 2 else 1
    a = _check_boxes(name, a, n, argument="a")
    b = _check_boxes(name, b, n, argument="b")

    def area(box):
        return (np.maximum(box[:, 2] - box[:, 0], 0)
                * np.maximum(box[:, 3] - box[:, 1], 0))

    top = np.maximum(a[:, 0], b[:, 0])
    left = np.maximum(a[:, 1], b[:, 1])
    bottom = np.minimum(a[:, 2], b[:, 2])
    right = np.minimum(a[:, 3], b[:, 3])
    inter = np.maximum(bottom - top, 0) * np.maximum(right - left, 0)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def stn_box(theta, image_size, output_size=None, clip=False):
    """The box of input pixels a spatial transformer with `theta` reads.

    The output grid of `keras_attn.ops.affine_grid(theta, h, w)` has its
    corners at normalised `(x_t, y_t) = (+-1, +-1)` (0 along an axis of
    size 1); since the map is affine, the extremes of the whole grid are
    the images of those corners, `(x_s, y_s) = theta @ (x_t, y_t, 1)`.
    Their bounding box, in pixel-centre indices `u = (x_s + 1) (W - 1) / 2`,
    `v = (y_s + 1) (H - 1) / 2`, spans the sampled centres; the returned
    box is the pixels AROUND those centres, `[v_min, u_min, v_max + 1,
    u_max + 1]` in edge coordinates. So the identity reads the whole image
    `[0, 0, H, W]`, and a transform whose samples run over the centres of
    rows 3..30 gives `[3, ., 31, .]`, as a tight object box would.

    Args:
        theta: `(N, 2, 3)` or `(N, 6)` affine matrices `[[a, b, tx],
            [c, d, ty]]` (the `theta` a `SpatialTransformer` returns).
        image_size: `(H, W)` of the INPUT image.
        output_size: `(h, w)` of the transformer's output; only an axis of
            size 1 changes the box (its single sample sits at 0). Default:
            `image_size`.
        clip: clip the box to `[0, 0, H, W]` (by default a box may run past
            the border, where the sampler reads zeros).

    Returns:
        float64 `(N, 4)` `[top, left, bottom, right]`.
    """
    name = "stn_box"
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim not in (2, 3) or theta.shape[1:] not in ((2, 3), (6,)):
        fail(name, "theta", f"array of shape {theta.shape}",
             "shape (N, 2, 3) or (N, 6)")
    theta = theta.reshape(-1, 6)
    height, width = _check_size(name, "image_size", image_size)
    out_h, out_w = (height, width) if output_size is None else _check_size(
        name, "output_size", output_size)
    xs = np.array([-1.0, 1.0]) if out_w > 1 else np.zeros(1)
    ys = np.array([-1.0, 1.0]) if out_h > 1 else np.zeros(1)
    x_t, y_t = (g.ravel() for g in np.meshgrid(xs, ys))  # corners (K,)
    x_s = theta[:, 0:1] * x_t + theta[:, 1:2] * y_t + theta[:, 2:3]
    y_s = theta[:, 3:4] * x_t + theta[:, 4:5] * y_t + theta[:, 5:6]
    u = (x_s + 1.0) * (width - 1) / 2.0  # (N, K) column centres
    v = (y_s + 1.0) * (height - 1) / 2.0  # (N, K) row centres
    boxes = np.stack([v.min(axis=1), u.min(axis=1),
                      v.max(axis=1) + 1.0, u.max(axis=1) + 1.0], axis=1)
    if clip:
        boxes = np.clip(boxes, 0.0, [height, width, height, width])
    return boxes


def glimpse_hits(locations, boxes, image_size):
    """Per image, the share of RAM's glimpse centres that fall in the box.

    Args:
        locations: `(N, T, 2)` glimpse centres `(x, y)` in `[-1, 1]`,
            x = COLUMN first, as `keras_attn.ram` and
            `keras_attn.viz.glimpse_boxes` use them (pixel-centre index
            `u = (x + 1) (W - 1) / 2`, so `(0, 0)` is the middle of the
            image and `(-1, -1)` the centre of the top-left pixel).
        boxes: `(N, 4)` `[top, left, bottom, right]` in image pixels.
        image_size: `(H, W)`.

    Returns:
        float64 `(N,)` in `[0, 1]`: hits / T.
    """
    name = "glimpse_hits"
    locations = np.asarray(locations, dtype=np.float64)
    if locations.ndim != 3 or locations.shape[-1] != 2 or (
        locations.shape[1] == 0
    ):
        fail(name, "locations", f"array of shape {locations.shape}",
             "shape (N, T, 2) holding (x, y) in [-1, 1], T >= 1")
    if not np.all(np.isfinite(locations)):
        fail(name, "locations", "non-finite values", "finite numbers")
    height, width = _check_size(name, "image_size", image_size)
    boxes = _check_boxes(name, boxes, len(locations))
    cols = (locations[..., 0] + 1.0) * (width - 1) / 2.0 + 0.5
    rows = (locations[..., 1] + 1.0) * (height - 1) / 2.0 + 0.5
    return _points_hit(rows, cols, boxes[:, None, :], 0).mean(axis=1)


def boxes_from_offsets(offsets, height=28, width=28):
    """Boxes of `height x width` images pasted at `offsets`.

    Args:
        offsets: `(N, 2)` `[row, col]` of each image's top-left pixel on
            the canvas (as `keras_attn.data.ram_tasks.clutter(...,
            return_params=True)` returns them).
        height, width: size of the pasted image.

    Returns:
        float64 `(N, 4)` `[row, col, row + height, col + width]`.
    """
    name = "boxes_from_offsets"
    offsets = _check_offsets(name, offsets)
    _check_size(name, "(height, width)", (height, width))
    return np.concatenate([offsets, offsets + [height, width]], axis=1)


def _check_offsets(function, offsets, n=None):
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.ndim != 2 or offsets.shape[1] != 2 or (
        n is not None and len(offsets) != n
    ):
        rows = "N" if n is None else n
        fail(function, "offsets", f"array of shape {offsets.shape}",
             f"shape ({rows}, 2) of [row, col] top-left pixels")
    return offsets


def tight_boxes(images, offsets=None, threshold=0.1):
    """The box of each object's bright pixels, optionally moved by offsets.

    Args:
        images: `(N, h, w)` or `(N, h, w, 1)` SOURCE images (e.g. the
            28 x 28 digits, before they are pasted).
        offsets: `(N, 2)` `[row, col]` where each image's top-left pixel
            lands on the canvas; `None`: boxes in the image's own pixels.
        threshold: a pixel belongs to the object when it is above
            `threshold * max` of its image (in `[0, 1)`).

    Returns:
        float64 `(N, 4)`: the smallest box holding every such pixel
        (`[first row, first col, last row + 1, last col + 1]` + offset).

    Raises:
        ValueError: an image with no positive pixel (no object to box).
    """
    name = "tight_boxes"
    images = _stack(name, "images", images, "shape (N, h, w) or (N, h, w, 1)")
    if isinstance(threshold, bool) or not isinstance(
        threshold, (int, float, np.number)
    ) or not 0 <= threshold < 1:
        fail(name, "threshold", threshold, "a number in [0, 1)")
    peak = images.max(axis=(1, 2))
    empty = np.flatnonzero(~(peak > 0))
    if len(empty):
        first = int(empty[0])
        fail(name, "images", f"image {first} with max {peak[first]}",
             "images with at least one positive pixel (an object to box)")
    mask = images > threshold * peak[:, None, None]
    rows, cols = mask.any(axis=2), mask.any(axis=1)  # (N, h), (N, w)

    def span(any_):
        first = any_.argmax(axis=1)
        last = any_.shape[1] - 1 - any_[:, ::-1].argmax(axis=1)
        return first, last + 1

    top, bottom = span(rows)
    left, right = span(cols)
    boxes = np.stack([top, left, bottom, right], axis=1).astype(np.float64)
    if offsets is not None:
        offsets = _check_offsets(name, offsets, len(images))
        boxes += np.concatenate([offsets, offsets], axis=1)
    return boxes


# --- pictures -------------------------------------------------------------


def draw_maps_with_boxes(images, maps, boxes, path=None, titles=None,
                         alpha=0.5, cmap="jet", panel_size=1.6, dpi=100):
    """A PNG grid: one row per kind of map, one column per image.

    Each panel is the image with the map resized to it (bilinear, min-max
    scaled per panel as in `keras_attn.viz.overlay_maps`) overlaid with
    opacity `alpha`, and the box drawn as a white rectangle.

    Args:
        images: `(N, H, W)`, `(N, H, W, 1)` or `(N, H, W, 3)`.
        maps: mapping name -> `(N, h, w)` maps, drawn as rows in its order
            (e.g. `{"attention": a, "centre prior": centre_prior(N, (H, W))}`).
        boxes: `(N, 4)` `[top, left, bottom, right]` in pixels, or `None`.
        path: write the PNG there when given.
        titles: one title per image (column headings), or `None`.
        alpha, cmap, panel_size, dpi: as in `overlay_maps`.

    Returns:
        The `matplotlib.figure.Figure` (Agg, never shown).
    """
    name = "draw_maps_with_boxes"
    require_matplotlib(name)
    from matplotlib import patches

    images = check_images(name, images)
    n, height, width = images.shape[:3]
    if not isinstance(maps, Mapping) or not maps:
        fail(name, "maps", type(maps).__name__,
             "a non-empty dict name -> (N, h, w) maps, one row each")
    resized = {}
    for key, value in maps.items():
        value = _check_maps(name, value)
        if len(value) != n:
            fail(name, f"maps[{key!r}]", f"array of shape {value.shape}",
                 f"({n}, h, w): one map per image")
        resized[key] = resize_maps(value, height, width)
    if boxes is not None:
        boxes = _check_boxes(name, boxes, n)
    if titles is not None and len(titles) != n:
        fail(name, "titles", titles, f"{n} titles, one per image")
    if not 0 <= alpha <= 1:
        fail(name, "alpha", alpha, "a number in [0, 1]")
    figure, axes = figure_grid(name, len(resized), n, panel_size, dpi)
    for row, (key, value) in enumerate(resized.items()):
        for col in range(n):
            ax = axes[row, col]
            show_image(ax, images[col])
            ax.imshow(min_max_scale(value[col]), cmap=cmap, alpha=alpha, vmin=0,
                      vmax=1, interpolation="bilinear")
            if boxes is not None:
                top, left, bottom, right = boxes[col]
                # imshow puts pixel centres on integers: edge coordinate e
                # is drawn at e - 0.5.
                ax.add_patch(patches.Rectangle(
                    (left - 0.5, top - 0.5), right - left, bottom - top,
                    fill=False, edgecolor="white", linewidth=1.2))
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
            if row == 0 and titles is not None:
                ax.set_title(str(titles[col]), fontsize=7)
        first = axes[row, 0]
        first.text(-0.06, 0.5, str(key), transform=first.transAxes,
                   rotation=90, ha="right", va="center", fontsize=7)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.02, top=0.92,
                           wspace=0.04, hspace=0.06)
    if path is not None:
        figure.savefig(path, format="png", dpi=dpi)
    return figure
