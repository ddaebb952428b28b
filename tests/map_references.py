"""Loop references for the attention-map reductions, shared by the tests of
`keras_attn.ops.map_reduction` and of its NumPy face in `keras_attn.viz`.

Each walks queries and keys one by one: the attention a pixel receives,
averaged over heads and queries (so a map sums to 1 when every query's
weights do).
"""

import numpy as np


def global_reference(weights, height, width):
    """`(B, Nh, HW, HW)` -> `(B, H, W)`: mean weight each key receives."""
    expected = np.zeros((weights.shape[0], height, width))
    for b in range(weights.shape[0]):
        for i in range(height):
            for j in range(width):
                expected[b, i, j] = weights[b, :, :, i * width + j].mean()
    return expected


def local_reference(weights, k):
    """`(B, H, W, heads, k*k)` windows centred on each query (neighbour
    `a * k + c` at offset `(a - k//2, c - k//2)`) -> `(B, H, W)`."""
    batch, height, width = weights.shape[:3]
    expected = np.zeros((batch, height, width))
    for i in range(height):
        for j in range(width):
            for a in range(k):
                for c in range(k):
                    u, v = i + a - k // 2, j + c - k // 2
                    if 0 <= u < height and 0 <= v < width:
                        expected[:, u, v] += weights[:, i, j, :,
                                                     a * k + c].mean(-1)
    return expected / (height * width)


def block_reference(weights, k):
    """`(B, H, W, k*k)` attention inside each query's `k x k` block (key
    `a * k + c` at the block's row `a`, column `c`) -> `(B, H, W)`."""
    batch, height, width = weights.shape[:3]
    expected = np.zeros((batch, height, width))
    for i in range(height):
        for j in range(width):
            for a in range(k):
                for c in range(k):
                    u, v = i // k * k + a, j // k * k + c
                    if u < height and v < width:
                        expected[:, u, v] += weights[:, i, j, a * k + c]
    return expected / (height * width)
