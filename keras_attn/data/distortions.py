"""Distorted-digit tasks of the Spatial Transformer paper, on any images.

Paper: Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer
Networks", NIPS 2015, https://arxiv.org/abs/1506.02025 (Sec. 4.1).

`rts(images)` gives the paper's "rotated, scaled and translated" (RTS) task:
each image is rotated by a random angle in `[-45, 45]` degrees, scaled by a
random factor in `[0.7, 1.2]` and placed at a random location of a 42x42
black canvas.

    canvases, params = rts(images, seed=1, epoch=e, return_params=True)
    model.fit(canvases, labels)

Geometry. Rows grow downwards, columns to the right. A positive angle turns
the image counter-clockwise as displayed (so `angle=90` gives
`np.rot90(image)`). The image's centre `((H - 1) / 2, (W - 1) / 2)` goes to
`centers[i]` on the canvas; canvas pixel `(row, col)`, at `(dr, dc)` from
the centre, reads the image with bilinear interpolation (zero outside) at
`((cos a dr + sin a dc) / s + (H - 1) / 2, (cos a dc - sin a dr) / s +
(W - 1) / 2)` for angle `a` and scale `s`.

Randomness. As in `keras_attn.data.ram_tasks`: every draw is a pure
function of `(seed, epoch, index)`, the index of the image in `images`
(key `fold_in(fold_in((seed, epoch), 2), index)`, stream 2 so the draws are
independent of `translate` / `clutter` with the same seed). Draw a new
epoch's canvases with `epoch=e`.

Deviations, stated plainly:

- The angle and the scale are uniform in their ranges (the paper gives the
  ranges only).
- The centre is placed at `corner + ((H - 1) / 2, (W - 1) / 2)`, `corner`
  integer, uniform over the positions that keep the transformed ink (the
  transformed bounding rectangle of the image's nonzero pixels, widened by
  the one pixel that bilinear interpolation reaches) inside the canvas; the
  blank margins of the image may leave it. So with `max_angle=0` and
  `scale_range=(1, 1)` the task is an exact integer translation. Along an
  axis where the transformed ink cannot fit, the image is centred and
  cropped: at the defaults, 0.7% of Fashion-MNIST's training images (whose
  ink often fills the 28x28 frame, unlike MNIST digits) lose some ink that
  way, none more than 1.4% of it.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf

from keras_attn.data._common import as_float_images
from keras_attn.data._common import element_key
from keras_attn.data._common import epoch_key
from keras_attn.utils.validation import check_int
from keras_attn.utils.validation import fail

# Stream of the (seed, epoch) key used by `rts` (ram_tasks uses 0 and 1).
_RTS_STREAM = 2
# A pixel belongs to the object's box when it exceeds this fraction of the
# canvas's maximum (faint interpolation fringes do not widen the box).
BOX_THRESHOLD = 0.05
# Images rendered per NumPy batch: bounds the memory of the sampling arrays
# (~40 MB of float64 coordinates per 2048 images on a 42x42 canvas).
_CHUNK = 2048


def _check_number(function, argument, value, low, high):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        fail(function, argument, value, f"a number in [{low}, {high}]")
    return float(value)


def _check_scale_range(function, scale_range):
    ok = (
        isinstance(scale_range, (tuple, list))
        and len(scale_range) == 2
        and all(
            not isinstance(v, bool)
            and isinstance(v, numbers.Real)
            and math.isfinite(v)
            and v > 0
            for v in scale_range
        )
        and scale_range[0] <= scale_range[1]
    )
    if not ok:
        fail(function, "scale_range", scale_range,
             "(low, high), finite numbers with 0 < low <= high")
    return float(scale_range[0]), float(scale_range[1])


@tf.function(
    input_signature=[tf.TensorSpec([None, 2], tf.int64)], autograph=False
)
def _draw_uniforms(keys):
    # A traced map_fn: eager map_fn (as ram_tasks' `_element_keys`) takes
    # minutes for 60,000 keys, and tf.vectorized_map falls back to a
    # while_loop with warnings for the stateless random ops.
    return tf.map_fn(
        lambda key: tf.random.stateless_uniform([4], seed=key,
                                                dtype=tf.float64),
        keys, fn_output_signature=tf.float64, parallel_iterations=64,
    )


def _uniforms(seed, epoch, n):
    """`(n, 4)` float64 uniforms in [0, 1): angle, scale, row, col.

    Row `i` is drawn with the key `fold_in(fold_in((seed, epoch), 2), i)`.
    `fold_in(key, i)` is `[c, i]` with `c` a function of `key` alone, so
    the `n` keys are built at once and equal the per-element ones.
    """
    base = epoch_key(seed, epoch, _RTS_STREAM)
    first = element_key(base, 0)[0]
    index = tf.range(n, dtype=tf.int64)
    keys = tf.stack([tf.fill([n], first), index], axis=-1)
    return _draw_uniforms(keys).numpy()


def _object_extent(images, angles, scales):
    """Bounds `(n, 2)` lo and hi of the transformed object, relative to the
    image centre's position on the canvas, (row, col).

    Bilinear interpolation reads pixel `(i, j)` only at points within one
    pixel of it (in each axis); so every nonzero canvas pixel maps to a
    point in the `2 x 2` square around some nonzero image pixel, and the
    transformed squares around the nonzero pixels bound the object.
    """
    n, height, width = images.shape
    rows = np.arange(height) - (height - 1) / 2
    cols = np.arange(width) - (width - 1) / 2
    ink = images > 0
    any_ink = ink.any(axis=(1, 2))
    # Extremes of the nonzero pixels' centres along each axis; the rotated
    # hull of these is within the rotated bounding rectangle, whose
    # corners give the extent.
    row_ink, col_ink = ink.any(axis=2), ink.any(axis=1)
    top = np.where(any_ink, rows[np.argmax(row_ink, axis=1)], 0.0)
    bottom = np.where(any_ink, rows[height - 1 - np.argmax(
        row_ink[:, ::-1], axis=1)], 0.0)
    left = np.where(any_ink, cols[np.argmax(col_ink, axis=1)], 0.0)
    right = np.where(any_ink, cols[width - 1 - np.argmax(
        col_ink[:, ::-1], axis=1)], 0.0)
    corner_r = np.stack([top - 1, top - 1, bottom + 1, bottom + 1], -1)
    corner_c = np.stack([left - 1, right + 1, left - 1, right + 1], -1)
    a = np.deg2rad(angles)[:, None]
    s = scales[:, None]
    # Forward map (counter-clockwise as displayed, rows down).
    out_r = s * (np.cos(a) * corner_r - np.sin(a) * corner_c)
    out_c = s * (np.sin(a) * corner_r + np.cos(a) * corner_c)
    lo = np.stack([out_r.min(1), out_c.min(1)], -1)
    hi = np.stack([out_r.max(1), out_c.max(1)], -1)
    return lo, hi


def _place(lo, hi, u, image_size, canvas_size):
    """Integer canvas position `(n, 2)` of the image's top-left corner:
    uniform (from `u` in [0, 1)) over those keeping `[lo, hi]` inside."""
    half = (np.asarray(image_size, np.float64) - 1) / 2
    # The object is the OPEN interval center + (lo, hi): a point exactly
    # one pixel from every nonzero image pixel reads 0. Its canvas pixels
    # are all inside [0, S - 1] iff center + lo >= -1 and center + hi <= S.
    # The 1e-9 absorbs rounding in the corner map.
    first = np.ceil(-1 - half - lo - 1e-9).astype(np.int64)
    last = np.floor(canvas_size - half - hi + 1e-9).astype(np.int64)
    count = last - first + 1
    drawn = first + np.minimum(np.floor(u * count), count - 1).astype(
        np.int64)
    centred = np.round((canvas_size - np.asarray(image_size)) / 2).astype(
        np.int64)
    return np.where(count >= 1, drawn, centred)


def _warp(images, angles, scales, centers, canvas_size):
    """Render `(n, S, S)` float32 canvases (bilinear, zeros outside).

    Canvas pixel `p` reads the image at `R(-angle) (p - center) / scale +
    image centre`, angles in degrees, counter-clockwise as displayed.
    """
    n, height, width = images.shape
    # One pixel of zeros on every side: the 4 neighbours of any clipped
    # coordinate then index inside the padded image.
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    flat = padded.reshape(-1)
    pw = width + 2
    grid_r, grid_c = np.meshgrid(np.arange(canvas_size, dtype=np.float64),
                                 np.arange(canvas_size, dtype=np.float64),
                                 indexing="ij")
    grid_r, grid_c = grid_r.reshape(1, -1), grid_c.reshape(1, -1)
    a = np.deg2rad(angles)[:, None]
    cos, sin = np.cos(a), np.sin(a)
    dr = grid_r - centers[:, 0:1]
    dc = grid_c - centers[:, 1:2]
    inv = 1.0 / scales[:, None]
    src_r = (cos * dr + sin * dc) * inv + (height - 1) / 2
    src_c = (cos * dc - sin * dr) * inv + (width - 1) / 2
    # Beyond one pixel outside the image everything reads the zero border.
    src_r = np.clip(src_r, -1.0, float(height))
    src_c = np.clip(src_c, -1.0, float(width))
    r0 = np.minimum(np.floor(src_r), height - 1)
    c0 = np.minimum(np.floor(src_c), width - 1)
    fr = (src_r - r0).astype(np.float32)
    fc = (src_c - c0).astype(np.float32)
    base = (np.arange(n)[:, None] * (height + 2) * pw
            + (r0.astype(np.int64) + 1) * pw + c0.astype(np.int64) + 1)
    top = flat[base] * (1 - fc) + flat[base + 1] * fc
    bottom = flat[base + pw] * (1 - fc) + flat[base + pw + 1] * fc
    out = top * (1 - fr) + bottom * fr
    return out.reshape(n, canvas_size, canvas_size).astype(np.float32)


def _boxes(canvases):
    """Tight `[top, left, bottom, right]` (bottom / right exclusive) of the
    pixels above `BOX_THRESHOLD` of each canvas's maximum; NaN if blank."""
    peak = canvases.max(axis=(1, 2), keepdims=True)
    mask = (canvases > BOX_THRESHOLD * peak) & (peak > 0)
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    size = canvases.shape[1]
    boxes = np.stack([
        np.argmax(rows, axis=1),
        np.argmax(cols, axis=1),
        size - np.argmax(rows[:, ::-1], axis=1),
        size - np.argmax(cols[:, ::-1], axis=1),
    ], -1).astype(np.float32)
    boxes[~rows.any(axis=1)] = np.nan
    return boxes


def rts(images, canvas_size=42, max_angle=45.0, scale_range=(0.7, 1.2),
        seed=0, epoch=0, return_params=False):
    """Rotate, scale and translate each image onto a black canvas (RTS).

    The RTS task of Jaderberg et al. 2015, Sec. 4.1 (module docstring for
    the geometry and the randomness).

    Args:
        images: `(N, H, W)` or `(N, H, W, 1)`; uint8 (scaled by 1/255) or
            floats in `[0, 1]`.
        canvas_size: side `S >= max(H, W)` of the square canvas (42 in the
            paper).
        max_angle: angles are uniform in `[-max_angle, max_angle]` degrees,
            positive counter-clockwise as displayed; `0 <= max_angle <= 180`.
        scale_range: `(low, high)`, scales uniform in it, `0 < low <= high`.
        seed, epoch: integers; the draws of image `i` depend on `(seed,
            epoch, i)` only.
        return_params: also return the drawn transforms.

    Returns:
        float32 `(N, S, S, 1)` numpy canvases in `[0, 1]`; with
        `return_params`, `(canvases, params)` with float32 arrays
        `params["angles"]` `(N,)` degrees, `params["scales"]` `(N,)`,
        `params["centers"]` `(N, 2)` `[row, col]` of the image's centre on
        the canvas, and `params["boxes"]` `(N, 4)` `[top, left, bottom,
        right]` in canvas pixels, bottom and right exclusive
        (`canvas[top:bottom, left:right]`): the tight box of the pixels
        above `BOX_THRESHOLD` (0.05) times the canvas's maximum, within the
        canvas (NaN for a blank image).

    Example:
    >>> import numpy as np
    >>> import keras_attn.data
    >>> images = np.ones((8, 28, 28), "uint8")  # e.g. Fashion-MNIST's
    >>> canvases = keras_attn.data.rts(images)
    >>> canvases.shape
    (8, 42, 42, 1)
    """
    name = "rts"
    pool = as_float_images(name, images).numpy()
    n, height, width = pool.shape
    canvas_size = check_int(name, "canvas_size", canvas_size, 1)
    if canvas_size < max(height, width):
        fail(name, "canvas_size", canvas_size,
             f"an integer >= the image size {height}x{width}")
    max_angle = _check_number(name, "max_angle", max_angle, 0.0, 180.0)
    low, high = _check_scale_range(name, scale_range)
    seed = check_int(name, "seed", seed, -(2**63))
    epoch = check_int(name, "epoch", epoch, 0)

    u = _uniforms(seed, epoch, n) if n else np.zeros((0, 4))
    angles = max_angle * (2 * u[:, 0] - 1)
    scales = low + (high - low) * u[:, 1]
    lo, hi = _object_extent(pool, angles, scales)
    corner = _place(lo, hi, u[:, 2:4], (height, width), canvas_size)
    centers = corner + (np.array([height, width], np.float64) - 1) / 2
    canvases = np.concatenate(
        [
            _warp(pool[i:i + _CHUNK], angles[i:i + _CHUNK],
                  scales[i:i + _CHUNK], centers[i:i + _CHUNK], canvas_size)
            for i in range(0, n, _CHUNK)
        ] or [np.zeros((0, canvas_size, canvas_size), np.float32)]
    )
    # Bilinear weights sum to 1, but float rounding may leave 1 + 1e-7.
    canvases = np.clip(canvases, 0.0, 1.0)[..., None]
    if not return_params:
        return canvases
    return canvases, {
        "angles": angles.astype(np.float32),
        "scales": scales.astype(np.float32),
        "centers": centers.astype(np.float32),
        "boxes": _boxes(canvases[..., 0]),
    }
