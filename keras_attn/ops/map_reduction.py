"""One `(B, h, w)` map per image from any keras_attn layer's attention.

Every attention layer declares what each map it returns is, in its class
attribute `attention_kinds` (one entry per map, in order). This module is
the one reduction from those layouts to a per-pixel map, written in
`keras.ops`, so the same code draws the maps (`keras_attn.viz`), serves them
(`export`'s `attention_maps` output, inside the SavedModel and TFLite graph)
and scores them (`benchmarks`). Kinds and layouts:

- `"spatial"` `(B, h, w)` or `(B, h, w, 1)`: LTPA's softmax map (Jetley et
  al., 2018, Eq. 2-3), CBAM's `M_s` (Woo et al., 2018, Eq. 3). Kept.
- `"mask"` `(B, h, w, C)`: the residual-attention soft mask `M` (Wang et al.,
  2017, Eq. 1). Mean over channels.
- `"global"` `(B, heads, h*w, h*w)`, queries on axis 2: AA's per-head
  `softmax(QK^T)` (Bello et al., 2019, Eq. 1). The attention each key
  position receives, averaged over heads and queries, on the `(h, w)` grid.
- `"local"` `(B, h, w, heads, k*k)`, neighbour `a*k + b` at offset
  `(a - k//2, b - k//2)`: SASA (Ramachandran et al., 2019, Eq. 2). The same
  quantity: the weight each position receives from the queries whose window
  holds it, divided by `h*w`, mean over heads (for a window as large as the
  image it equals `"global"`).
- `"block"` `(B, h, w, k*k)`: the attention stem (same paper, Sec. 3.2);
  as `"local"`, within each non-overlapping `k x k` block.
- `"channel"` `(B, C)` / `(B, 1, 1, C)` (SE, CBAM's `M_c`) and `"none"`
  (a transformer's `theta`, a glimpse location): not spatial.

    >>> import numpy as np
    >>> from keras_attn.ops import reduce_attention_map
    >>> m = reduce_attention_map(np.ones((2, 4, 4, 8), "float32"), "mask")
    >>> tuple(m.shape)
    (2, 4, 4)
"""

import math

from keras import ops

KINDS = ("spatial", "mask", "global", "local", "block", "channel", "none")
SPATIAL_KINDS = KINDS[:5]
LAYOUTS = {
    "spatial": "(B, h, w) or (B, h, w, 1)",
    "mask": "(B, h, w, C)",
    "global": "(B, heads, h*w, h*w)",
    "local": "(B, h, w, heads, k*k)",
    "block": "(B, h, w, k*k)",
}
_RANKS = {"spatial": (3, 4), "mask": (4,), "global": (4,), "local": (5,),
          "block": (4,)}


def map_kinds(layer):
    """What each map `layer` returns is: its `attention_kinds` (a class
    attribute, or a property of a wrapper layer), or `None` for a layer
    that declares nothing."""
    kinds = getattr(layer, "attention_kinds", None)
    return tuple(kinds) if kinds is not None else None


def check_layout(kind, shape, grid=None):
    """`ValueError` unless `shape` is a layout `kind` can be reduced from;
    returns the `(h, w)` query grid for `"global"` (else `None`)."""
    name = "reduce_attention_map"
    if kind not in KINDS:
        raise ValueError(f"{name}: invalid `kind`; expected one of {KINDS}. "
                         f"Received: kind={kind!r}")
    if kind not in SPATIAL_KINDS:
        return None
    shape = tuple(shape)
    if len(shape) not in _RANKS[kind] or (
            kind == "spatial" and len(shape) == 4 and shape[-1] != 1):
        raise ValueError(
            f"{name}: invalid `attention`; expected shape {LAYOUTS[kind]} "
            f"for kind={kind!r}. Received: attention of shape {shape}")
    if kind in ("local", "block"):
        k = math.isqrt(int(shape[-1]))
        if k * k != shape[-1]:
            raise ValueError(
                f"{name}: invalid `attention`; expected a last axis of k*k "
                f"neighbour weights for an integer k. Received: last axis "
                f"of length {shape[-1]}")
    if kind != "global":
        return None
    length = int(shape[-1])
    if grid is None:
        side = math.isqrt(length)
        grid = (side, length // side) if side * side == length else None
    if grid is None or int(grid[0]) * int(grid[1]) != length:
        raise ValueError(
            f"{name}: invalid `grid`; expected (h, w) with h * w == {length} "
            f"(the number of keys). Received: grid={grid!r}")
    return int(grid[0]), int(grid[1])


def reduce_attention_map(attention, kind, grid=None):
    """One float32 `(B, h, w)` map per image (`None` for a non-spatial kind).

    Args:
        attention: a layer's map, in the layout of `kind` (module docstring).
        kind: one of `KINDS`.
        grid: `(h, w)` of the query grid, for `"global"`; `None` takes the
            square root of the number of keys.

    Returns:
        A float32 tensor `(B, h, w)`, or `None` for `"channel"`/`"none"`.
    """
    grid = check_layout(kind, ops.shape(attention), grid)
    if kind not in SPATIAL_KINDS:
        return None
    a = ops.cast(attention, "float32")
    if kind == "spatial":
        return a[..., 0] if len(a.shape) == 4 else a
    if kind == "mask":
        return ops.mean(a, axis=-1)
    if kind == "global":
        received = ops.mean(a, axis=(1, 2))  # (B, h*w)
        return ops.reshape(received, (-1, grid[0], grid[1]))
    height, width = int(a.shape[1]), int(a.shape[2])
    k = math.isqrt(int(a.shape[-1]))
    if kind == "local":
        weights = ops.mean(a, axis=3)  # (B, h, w, k*k)
        # Position (i, j) receives neighbour (r, c) of the query at
        # (i - dr, j - dc), dr = r - k//2: one shifted copy per neighbour,
        # zero where that query lies outside the image.
        padded = ops.pad(weights, [[0, 0], [k, k], [k, k], [0, 0]])
        total = None
        for row in range(k):
            for col in range(k):
                top, left = k - (row - k // 2), k - (col - k // 2)
                part = padded[:, top:top + height, left:left + width,
                              row * k + col]
                total = part if total is None else total + part
        return total / float(height * width)
    # "block": sum each block position over the blocks' queries, then put
    # position a*k + b back at pixel (a, b) of its block.
    rows, cols = -(-height // k), -(-width // k)
    padded = ops.pad(a, [[0, 0], [0, rows * k - height],
                         [0, cols * k - width], [0, 0]])
    blocks = ops.reshape(padded, (-1, rows, k, cols, k, k * k))
    summed = ops.sum(blocks, axis=(2, 4))  # (B, rows, cols, k*k)
    received = ops.reshape(summed, (-1, rows, cols, k, k))
    received = ops.reshape(ops.transpose(received, (0, 1, 3, 2, 4)),
                           (-1, rows * k, cols * k))
    return received[:, :height, :width] / float(height * width)
