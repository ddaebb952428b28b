"""Affine sampling grids and a differentiable bilinear sampler.

Paper: Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer
Networks", NIPS 2015, https://arxiv.org/abs/1506.02025

The grid generator (paper Eq. 1) maps every target pixel `(x_t, y_t)` of a
regular grid to a source location `(x_s, y_s) = theta @ (x_t, y_t, 1)`; the
sampler (paper Eqs. 3-5) reads the source image there with bilinear
interpolation. Both are built from `keras.ops` gathers (no
`keras.ops.image.affine_transform`, which gives no gradient to the transform
and needs a Flex op in TFLite), so the output is differentiable with respect
to the image AND the grid, and TFLite conversion uses builtin ops only.

Coordinate convention ("corners", PyTorch `align_corners=True`): normalised
coordinates `-1` and `+1` are the CENTRES of the first and last pixel, i.e.
pixel column `i` of a width-`W` image sits at `x = -1 + 2 i / (W - 1)`.
Along an axis of size 1 the single pixel sits at `0`.

Deviations, stated plainly:

- Pixel coordinates within `1e-6 * size` of an integer (size = W for
  columns, H for rows; ~5x the float32 rounding error of
  `(x + 1) (W - 1) / 2`) are snapped onto it in the forward pass only
  (straight-through: the gradient is untouched). Without this the identity
  transform mixes ~1e-7 of a neighbour into each pixel instead of
  reproducing the image exactly. The change of value is at most
  `1e-6 * size` times the local intensity step.
- Bilinear interpolation is not differentiable with respect to the
  coordinates at integer pixel positions; there the one-sided (right)
  derivative is returned, as in the reference TF and PyTorch samplers.
- `padding="border"` clamps the coordinates to the image, so the gradient
  with respect to a coordinate outside the image is 0 (as PyTorch).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_attn.utils import validation

PADDINGS = ("zeros", "border")

# Snap tolerance per pixel of axis length (see the module docstring).
_SNAP = 1e-6


def _work_dtype(x):
    # float64 stays float64 (for finite-difference checks); anything else
    # is computed in float32, which keeps pixel coordinates exact enough
    # under mixed float16.
    return "float64" if _dtype(x) == "float64" else "float32"


def _dtype(x):
    if not hasattr(x, "dtype"):
        return "float32"
    return keras.backend.standardize_dtype(x.dtype)


def _base_coords(size):
    if size == 1:
        return np.zeros((1,), "float64")
    return np.linspace(-1.0, 1.0, size)


def affine_grid(theta, height, width):
    """Sampling grid of an affine transform, in normalised coordinates.

    The target grid has `height x width` points at the pixel centres of the
    output, normalised to `[-1, 1]` with the "corners" convention
    (`align_corners=True`: `-1` / `+1` are the centres of the first / last
    pixel). Each target point `(x_t, y_t)` is mapped to the source point
    `(x_s, y_s) = theta @ (x_t, y_t, 1)` (Jaderberg et al., Eq. 1).

    Args:
        theta: affine matrices, shape `(batch, 2, 3)` or `(batch, 6)`
            (row-major `[[a, b, tx], [c, d, ty]]`).
        height: integer >= 1, grid height.
        width: integer >= 1, grid width.

    Returns:
        Grid of shape `(batch, height, width, 2)` holding `(x, y)` source
        coordinates (x = column, y = row), normalised, in float32 (float64
        if `theta` is float64).

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> theta = np.array([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]])  # identity
    >>> grid = keras_attn.ops.affine_grid(theta, 4, 5)
    >>> tuple(grid.shape)
    (1, 4, 5, 2)
    """
    name = "affine_grid"
    validation.check_positive_int(name, "height", height)
    validation.check_positive_int(name, "width", width)
    shape = tuple(theta.shape)
    if shape[1:] not in ((2, 3), (6,)):
        validation.fail(
            name, "theta shape", shape, "(batch, 2, 3) or (batch, 6)"
        )
    dtype = _work_dtype(theta)
    theta = ops.reshape(ops.cast(theta, dtype), (-1, 6))  # (B, 6)
    xs, ys = np.meshgrid(_base_coords(width), _base_coords(height))
    # Target points flattened row-major over (h, w): (1, h*w) each.
    xs = ops.convert_to_tensor(xs.reshape(1, -1).astype(dtype))
    ys = ops.convert_to_tensor(ys.reshape(1, -1).astype(dtype))
    # Written out instead of a matmul: elementwise ops keep float64 on every
    # backend (torch's matmul here returns float32) and stay TFLite builtins.
    x_s = theta[:, 0:1] * xs + theta[:, 1:2] * ys + theta[:, 2:3]
    y_s = theta[:, 3:4] * xs + theta[:, 4:5] * ys + theta[:, 5:6]
    grid = ops.stack([x_s, y_s], axis=-1)  # (B, h*w, 2)
    return ops.reshape(grid, (-1, height, width, 2))


def _snap(coords, size):
    nearest = ops.round(coords)
    tolerance = _SNAP * ops.cast(size, coords.dtype)
    close = ops.less(ops.abs(nearest - coords), tolerance)
    offset = ops.where(close, nearest - coords, ops.zeros_like(coords))
    return coords + ops.stop_gradient(offset)


def bilinear_sample(images, grid, padding="zeros"):
    """Sample images at normalised `(x, y)` points with bilinear weights.

    Normalised coordinates follow the "corners" convention of
    `affine_grid`: `x = -1` / `+1` are the centres of the first / last
    column, so pixel coordinates are `u = (x + 1) (W - 1) / 2`,
    `v = (y + 1) (H - 1) / 2`. The output is
    `sum_{n, m} U[n, m] max(0, 1 - |u - m|) max(0, 1 - |v - n|)`
    (Jaderberg et al., Eq. 5), computed from the 4 neighbours gathered from
    the flattened image, so it is differentiable with respect to both the
    images and the grid. Channels-last only.

    Args:
        images: tensor of shape `(batch, H, W, channels)`.
        grid: tensor of shape `(batch, h, w, 2)`, `(x, y)` normalised source
            coordinates (e.g. from `affine_grid`).
        padding: `"zeros"`: every neighbour outside the image counts as 0
            (so a point half a pixel outside reads half the edge value);
            `"border"`: coordinates are clamped to the image, repeating the
            edge pixels.

    Returns:
        Tensor of shape `(batch, h, w, channels)` in the dtype of `images`.
        The interpolation runs in float32 (float64 if `grid` is float64).

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> grid = keras_attn.ops.affine_grid(np.eye(2, 3)[None], 8, 8)
    >>> out = keras_attn.ops.bilinear_sample(np.ones((1, 16, 16, 3)), grid)
    >>> tuple(out.shape)
    (1, 8, 8, 3)
    """
    name = "bilinear_sample"
    validation.check_choice(name, "padding", padding, PADDINGS)
    if len(images.shape) != 4:
        validation.fail(
            name,
            "images shape",
            tuple(images.shape),
            "rank 4 (batch, height, width, channels), channels last",
        )
    if len(grid.shape) != 4 or grid.shape[-1] != 2:
        validation.fail(
            name, "grid shape", tuple(grid.shape), "(batch, h, w, 2)"
        )
    out_dtype = _dtype(images)
    dtype = _work_dtype(grid)
    images = ops.cast(images, dtype)
    grid = ops.cast(grid, dtype)

    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    gshape = ops.shape(grid)
    out_h, out_w = gshape[1], gshape[2]
    h_max = ops.cast(height - 1, dtype)
    w_max = ops.cast(width - 1, dtype)
    u = (grid[..., 0] + 1.0) * (w_max * 0.5)  # (B, h, w) column
    v = (grid[..., 1] + 1.0) * (h_max * 0.5)  # (B, h, w) row
    # A NaN coordinate (e.g. from a diverged theta) reads as outside /
    # the first pixel instead of producing an out-of-range gather index.
    u = ops.where(ops.not_equal(u, u), ops.full_like(u, -2.0), u)
    v = ops.where(ops.not_equal(v, v), ops.full_like(v, -2.0), v)
    if padding == "border":
        u = ops.clip(u, 0.0, w_max)
        v = ops.clip(v, 0.0, h_max)
    else:
        # Beyond one pixel outside every neighbour has weight 0 anyway;
        # clipping there keeps huge coordinates from overflowing int32.
        u = ops.clip(u, -2.0, w_max + 2.0)
        v = ops.clip(v, -2.0, h_max + 2.0)
    u = _snap(u, width)
    v = _snap(v, height)
    u0 = ops.floor(u)
    v0 = ops.floor(v)
    # Weights come from the continuous coordinates, not the integer
    # indices: that is where the gradient with respect to the grid flows.
    du = u - u0
    dv = v - v0
    corners = [
        (u0, v0, (1.0 - du) * (1.0 - dv)),
        (u0 + 1.0, v0, du * (1.0 - dv)),
        (u0, v0 + 1.0, (1.0 - du) * dv),
        (u0 + 1.0, v0 + 1.0, du * dv),
    ]
    # Row offset of each image in the flattened (B*H*W, C) pixel table.
    offsets = ops.arange(batch, dtype="int32") * (height * width)
    offsets = ops.reshape(offsets, (-1, 1, 1))  # (B, 1, 1)
    table = ops.reshape(images, (-1, channels))  # (B*H*W, C)
    output = None
    for cu, cv, weight in corners:
        if padding == "zeros":
            inside = (
                ops.greater_equal(cu, 0.0)
                & ops.less_equal(cu, w_max)
                & ops.greater_equal(cv, 0.0)
                & ops.less_equal(cv, h_max)
            )
            # Masking the weight (not clamping the index alone) makes an
            # outside neighbour count as 0.
            weight = weight * ops.cast(inside, dtype)
        # Clamped indices only keep the gather in range; an outside
        # neighbour already has weight 0 (zeros) or equals the edge
        # (border, where u and v were clamped).
        iu = ops.cast(ops.clip(cu, 0.0, w_max), "int32")
        iv = ops.cast(ops.clip(cv, 0.0, h_max), "int32")
        index = offsets + iv * width + iu  # (B, h, w)
        values = ops.take(table, ops.reshape(index, (-1,)), axis=0)
        values = ops.reshape(values, (batch, out_h, out_w, channels))
        term = values * weight[..., None]
        output = term if output is None else output + term
    return ops.cast(output, out_dtype)
