"""Stand-alone local self-attention (SASA) over k x k neighbourhoods.

Paper: Ramachandran, Parmar, Vaswani, Bello, Levskaya, Shlens, "Stand-Alone
Self-Attention in Vision Models", NeurIPS 2019,
https://arxiv.org/abs/1906.05909

Follows the paper's Eq. 3: every pixel attends to the `k x k` memory block
centred on it, with logits `q_p . (k_j + r_{j-p})` summed over the channels
of each head, where `r` is a row-offset embedding (half the channels)
concatenated with a column-offset embedding (the other half). Differences
from the paper and the popular PyTorch port (leaderj1001), stated plainly:

- The port computes `q * k` elementwise and takes the softmax per channel
  (its issues #10, #16, #24), i.e. every channel is its own head. Here the
  logits are summed over the head's `filters // num_heads` channels, as in
  the paper.
- Neighbours outside the image are masked out of the softmax (weight exactly
  0). The port zero-pads keys, so border pixels attend to padding with logit
  `q . r`; the paper does not say how borders are handled.
- Logits are not scaled by `1 / sqrt(d)` (neither the paper's equation nor
  the port scales them).
- With `strides=2`, 2x2 average pooling ("valid", odd sizes are floored)
  follows the attention, as the paper describes.
- Computed as blocked matrix products (HaloNet's layout, Vaswani et al.,
  CVPR 2021, made exact): the zero-padded image is cut into `b x b` query
  blocks; each block's queries attend, in one batched matmul, to the
  `(b + k - 1)^2` keys and values of the block's halo, and a mask keeps for
  every query exactly its own `k x k` window (and drops out-of-image
  neighbours). The relative term `q . r` is one small matmul of the queries
  with the `k` row and `k` column embeddings, moved to halo coordinates by
  a pad/reshape skew (the `rel_to_abs` trick of Bello et al.) whose padding
  value is the mask; the row and column terms are spread over the halo by
  one matmul with a constant 0/1 matrix (on CPU, 10 % faster forward than
  two broadcast adds). Nothing is looped over, so the layer compiles under
  XLA (`jit_compile=True`) and JAX `jit`, and every op (PAD, RESHAPE,
  SLICE, CONCATENATION, TRANSPOSE, BATCH_MATMUL, FULLY_CONNECTED, ADD,
  SOFTMAX, GATHER for the returned weights) is a TFLite builtin. The halo
  holds `((b + k - 1) / b)^2` copies of the keys and values (6.25x at
  `b=4, k=7`) where an unfold holds `k^2` (49x); the logits are
  `(b + k - 1)^2 / k^2` times the window's (2x), the price of dense
  matmuls. `block_size` (default `DEFAULT_BLOCK_SIZE`, chosen by
  `python -m benchmarks.layers --suite sasa_blocks`) trades the two.
  An axis of known size no longer than a halo (`<= b + k - 1`) is a single
  block whose keys are the whole axis, unpadded: the small maps of a
  ResNet's last stages (7x7: 49 keys per query instead of 100).
- Logits, softmax and the weighted sum of values run in float32 under mixed
  precision; the 1x1 projections run in the compute dtype.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_attn.layers._numerics import MASK_LOGIT
from keras_attn.utils import validation

# Query block side `b`: the fastest of 3, 4, 6, 8 for k=7 and close to the
# best of 2, 3, 4 for k=3 and 5, on 2 CPU cores at 2x56x56x64 with 8 heads
# (`python -m benchmarks.layers --suite sasa_blocks`).
DEFAULT_BLOCK_SIZE = 4


def _skew(x, fill):
    """`(M, n, k)` -> `(M, n, n + k - 1)` with `out[m, i, i + a] = x[m, i, a]`
    and `fill` elsewhere: window offsets to halo coordinates.

    Padding every row to `n + k` and re-reading the flat buffer with rows of
    `n + k - 1` shifts row `i` right by `i` (the `rel_to_abs` trick).
    """
    shape = ops.shape(x)
    rows, n, k = shape[0], shape[1], shape[2]
    x = ops.pad(x, [[0, 0], [0, 0], [0, n]], constant_values=fill)
    x = ops.slice(ops.reshape(x, (rows, n * (n + k))), (0, 0),
                  (rows, n * (n + k - 1)))
    return ops.reshape(x, (rows, n, n + k - 1))


def _clip_halo(x, block, halo, k):
    """`(M, block, block + k - 1)` skewed logits -> `(M, block, halo)`: on a
    whole-axis block (`halo == block`, keys unpadded) the skew's first and
    last `k // 2` columns are the padding and are dropped."""
    if halo == block + k - 1:
        return x
    return ops.slice(x, (0, 0, k // 2), (ops.shape(x)[0], block, halo))


def _outer_sum_matrix(rows, cols):
    """`(rows + cols, rows * cols)` float32 0/1 matrix `E` with
    `([r, c] @ E)[u * cols + v] = r[u] + c[v]`."""
    u, v = np.divmod(np.arange(rows * cols), cols)
    matrix = np.zeros((rows + cols, rows * cols), "float32")
    matrix[u, np.arange(rows * cols)] = 1.0
    matrix[rows + v, np.arange(rows * cols)] = 1.0
    return matrix


def _halo(x, block, blocks, halo):
    """`(R, (blocks + m - 1) * block, C')` -> `(R, blocks, halo, C')`: the
    `halo` consecutive rows starting at every multiple of `block`.

    Overlapping windows without a gather: `m` shifted views of the
    non-overlapping blocks, the last one cut short, are concatenated.
    """
    shape = ops.shape(x)
    chunks = 1 + math.ceil((halo - block) / block)
    x = ops.reshape(x, (shape[0], blocks + chunks - 1, block, shape[2]))
    # `ops.slice`, not `x[...]`: its gradient is one PAD, where TF's
    # StridedSliceGrad fills and scatters (measured 40 % of a training
    # step before this change).
    views = [
        ops.slice(x, (0, s, 0, 0), (shape[0], blocks,
                                    min(block, halo - s * block), shape[2]))
        for s in range(chunks)
    ]
    return views[0] if chunks == 1 else ops.concatenate(views, axis=2)


@keras.saving.register_keras_serializable(package="keras_attn")
class LocalSelfAttention2D(keras.layers.Layer):
    """Stand-alone self-attention over each pixel's `k x k` neighbourhood.

    [Ramachandran et al., 2019](https://arxiv.org/abs/1906.05909), Eq. 3:
    for pixel `p`, head `h` and neighbour `j` in the `k x k` block `N_k(p)`,
    `y_p^h = sum_j softmax_j(q_p^h . (k_j^h + r_{j-p}^h)) v_j^h`, with
    `q = x W_Q`, `k = x W_K`, `v = x W_V` (1x1 projections to `filters`
    channels, no bias) split into `num_heads` heads of
    `filters // num_heads` channels, and `r_{(da, db)}` the concatenation of
    a learned row embedding `rel_rows[da]` (`filters // 2` channels) and a
    column embedding `rel_cols[db]` (`filters // 2` channels). Neighbours
    outside the image are masked out of the softmax. With `strides=2` a 2x2
    average pooling follows. Channels-last inputs only; any spatial size.

    Args:
        filters: integer >= 1, output channels (of q, k and v). Must be a
            multiple of `num_heads`, and even when `relative=True`.
        kernel_size: odd integer >= 1, the side `k` of the attention window.
            Defaults to `7` (the paper's choice).
        num_heads: integer >= 1, number of attention heads. Defaults to `8`.
        strides: `1` or `2`; `2` adds 2x2 average pooling after the
            attention. Defaults to `1`.
        relative: whether to add the relative position embeddings to the
            keys. Defaults to `True`.
        block_size: `None` or integer >= 1, the side `b` of the query blocks
            the computation is cut into (clipped to the image). It changes
            speed and memory, not the result. `None` (default) uses
            `DEFAULT_BLOCK_SIZE`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.
        return_attention: if `True`, also return the attention weights.

    Returns:
        `y` of shape `(batch, height', width', filters)` (`height' = height`,
        or `height // 2` with `strides=2`), or `(y, weights)` with
        `return_attention=True`: `weights` of shape
        `(batch, height, width, num_heads, kernel_size**2)` in float32 (before
        pooling; neighbour `a * kernel_size + b` sits at row offset
        `a - kernel_size // 2`, column offset `b - kernel_size // 2`; masked
        neighbours have weight 0).

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> layer = keras_attn.layers.LocalSelfAttention2D(16, 3, num_heads=2)
    >>> y, w = layer(np.ones((2, 8, 8, 4)), return_attention=True)
    >>> tuple(y.shape), tuple(w.shape)
    ((2, 8, 8, 16), (2, 8, 8, 2, 9))

    Reference:
    - [Ramachandran et al., 2019](https://arxiv.org/abs/1906.05909)
    """

    attention_kinds = ("local",)
    # int8 export: nearly one-hot softmaxes over unscaled logits; float32.
    int8_keeps_float = True

    def __init__(
        self,
        filters,
        kernel_size=7,
        num_heads=8,
        strides=1,
        relative=True,
        block_size=None,
        **kwargs,
    ):
        validation.check_positive_int(self, "filters", filters)
        validation.check_odd_kernel(self, "kernel_size", kernel_size)
        validation.check_positive_int(self, "num_heads", num_heads)
        validation.check_positive_int(self, "strides", strides)
        validation.check_choice(self, "strides", strides, (1, 2))
        validation.check_bool(self, "relative", relative)
        if block_size is not None:
            validation.check_positive_int(self, "block_size", block_size)
        if filters % num_heads:
            validation.fail(
                self,
                "filters",
                filters,
                f"a multiple of num_heads={num_heads}",
            )
        if relative and filters % 2:
            validation.fail(
                self,
                "filters",
                filters,
                "an even number when relative=True (row and column "
                "embeddings take half the channels each)",
            )
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.num_heads = num_heads
        self.strides = strides
        self.relative = relative
        self.block_size = block_size

    def build(self, input_shape):
        channels = validation.check_image_shape(self, input_shape)
        shape = tuple(input_shape)
        for role in ("query", "key", "value"):
            conv = keras.layers.Conv2D(
                self.filters,
                1,
                use_bias=False,
                dtype=self.dtype_policy,
                name=role,
            )
            conv.build((*shape[:3], channels))
            setattr(self, role, conv)
        if self.relative:
            half = self.filters // 2
            init = keras.initializers.RandomNormal(stddev=1.0)
            self.rel_rows = self.add_weight(
                shape=(self.kernel_size, half),
                initializer=init,
                name="rel_rows",
            )
            self.rel_cols = self.add_weight(
                shape=(self.kernel_size, half),
                initializer=init,
                name="rel_cols",
            )

    def _relative_embeddings(self):
        """`(num_heads, d, 2k)` float32: row embeddings `[..., :k]` and
        column embeddings `[..., k:]`, each zero outside its half of the
        channels, so `q . r_{(a, b)} = (q @ E)[a] + (q @ E)[k + b]` per
        head. Zero without relative embeddings."""
        k, heads = self.kernel_size, self.num_heads
        depth = self.filters // heads
        if not self.relative:
            return ops.zeros((heads, depth, 2 * k), "float32")
        zeros = ops.zeros((k, self.filters // 2), "float32")
        rows = ops.concatenate(
            [ops.cast(self.rel_rows, "float32"), zeros], axis=-1
        )
        cols = ops.concatenate(
            [zeros, ops.cast(self.rel_cols, "float32")], axis=-1
        )
        table = ops.concatenate([rows, cols], axis=0)  # (2k, filters)
        table = ops.reshape(table, (2 * k, heads, depth))
        return ops.transpose(table, (1, 2, 0))

    def _blocks(self, size, static_size):
        """`(block, blocks, halo, pad_before, pad_after)` along an axis of
        `size` pixels: the query block side and count, the key halo side
        and the keys' padding.

        An axis no longer than one halo (`b + k - 1`, 10 pixels at the
        default b=4, k=7) is one block whose keys are the whole axis,
        unpadded: at 7x7 that is 49 keys per query instead of 100, and no
        padded queries.
        """
        k = self.kernel_size
        block = self.block_size or DEFAULT_BLOCK_SIZE
        if static_size is not None and static_size <= block + k - 1:
            return static_size, 1, static_size, 0, 0
        blocks = (size + block - 1) // block
        halo = block + k - 1
        chunks = 1 + math.ceil((halo - block) / block)
        return (block, blocks, halo, k // 2,
                (blocks + chunks - 1) * block - size - k // 2)

    def _window_bias(self, size, block, blocks):
        """`(1, blocks, 1, block * k)` float32: 0 where offset `a` of the
        query at position `i` of block `n` lands inside the image
        (`0 <= n*block + i + a - k//2 < size`), `MASK_LOGIT` elsewhere.
        Index arithmetic only, no data."""
        k = self.kernel_size
        n = ops.arange(blocks, dtype="int32")[:, None, None]
        i = ops.arange(block, dtype="int32")[None, :, None]
        a = ops.arange(k, dtype="int32")[None, None, :]
        pos = n * block + i + a - k // 2
        inside = ops.logical_and(pos >= 0, pos < size)
        bias = ops.where(inside, 0.0, MASK_LOGIT)
        return ops.reshape(ops.cast(bias, "float32"),
                           (1, blocks, 1, block * k))

    def _project(self, inputs):
        """q, k and v in one batched matmul, heads first:
        `(3 * heads, B*H*W, d)` float32.

        Head-major from the start, so that blocking and halos move whole
        rows and the big tensors are never transposed to split heads.
        """
        heads, depth = self.num_heads, self.filters // self.num_heads
        shape = ops.shape(inputs)
        kernels = ops.concatenate(
            [self.query.kernel, self.key.kernel, self.value.kernel], axis=-1
        )  # (1, 1, C, 3F)
        kernels = ops.cast(ops.reshape(kernels, (shape[-1], -1)),
                           self.compute_dtype)
        x = ops.reshape(ops.cast(inputs, self.compute_dtype), (-1, shape[-1]))
        qkv = ops.reshape(ops.matmul(x, kernels), (-1, 3 * heads, depth))
        return ops.transpose(ops.cast(qkv, "float32"), (1, 0, 2))

    def call(self, inputs, return_attention=False):
        heads = self.num_heads
        depth = self.filters // heads
        k = self.kernel_size
        shape = ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]
        bh, rows, hh, top, bottom = self._blocks(height, inputs.shape[1])
        bw, cols, hw, left, right = self._blocks(width, inputs.shape[2])
        groups = heads * batch  # every (head, image) pair is independent
        n_blocks = groups * rows * cols
        queries, keys = bh * bw, hh * hw

        # Split along a static axis of 3: sizes stay known with any batch.
        qkv = ops.reshape(self._project(inputs),
                          (3, groups, height, width, depth))
        q, kv = ops.split(qkv, [1], axis=0)
        kv = ops.reshape(kv, (2 * groups, height, width, depth))
        q = ops.reshape(q, (groups, height, width, depth))

        # Blocks are ordered (head, image, column block, row block): the
        # order the halos come out in below without a transpose.
        # Queries: (G, rows*bh, cols*bw, d) -> (G*cols*rows, bh*bw, d).
        q = ops.pad(q, [[0, 0], [0, rows * bh - height],
                        [0, cols * bw - width], [0, 0]])
        q = ops.reshape(q, (groups, rows, bh, cols, bw * depth))
        q = ops.transpose(q, (0, 3, 1, 2, 4))
        q = ops.reshape(q, (n_blocks, queries, depth))

        # Keys and values together: the halo of every block.
        padded_w = left + width + right
        kv = ops.pad(kv, [[0, 0], [top, bottom], [left, right], [0, 0]])
        # Columns first, while the rows are not yet duplicated; one
        # transpose of the column halos (2.5x the keys and values at b=4,
        # k=7) then lets the row halo (6.25x) come out block-contiguous.
        kv = ops.reshape(kv, (-1, padded_w, depth))
        kv = _halo(kv, bw, cols, hw)  # (2G H', cols, hw, d)
        kv = ops.reshape(kv, (2 * groups, -1, cols, hw * depth))
        kv = ops.transpose(kv, (0, 2, 1, 3))  # (2G, cols, H', hw d)
        kv = ops.reshape(kv, (2 * groups * cols, -1, hw * depth))
        kv = _halo(kv, bh, rows, hh)  # (2G cols, rows, hh, hw d)
        kv = ops.reshape(kv, (2, n_blocks, keys, depth))
        keys_, values = (ops.reshape(t, (n_blocks, keys, depth))
                         for t in ops.split(kv, 2, axis=0))

        # q . r for the k row and k column offsets, masked where the window
        # leaves the image, then skewed into halo coordinates; the skew's
        # padding masks the halo positions outside each query's window.
        rel = ops.matmul(
            ops.reshape(q, (heads, -1, queries, depth)),
            self._relative_embeddings()[:, None],
        )  # (heads, B*cols*rows, Q, 2k)
        rel = ops.reshape(rel, (groups * cols, rows, bh, bw, 2 * k))
        rel_rows, rel_cols = ops.split(rel, 2, axis=-1)
        rel_rows = ops.transpose(rel_rows, (0, 1, 3, 2, 4))
        rel_rows = ops.reshape(rel_rows, (-1, rows, bw, bh * k))
        rel_rows = rel_rows + self._window_bias(height, bh, rows)
        rel_rows = _skew(ops.reshape(rel_rows, (-1, bh, k)), MASK_LOGIT)
        rel_rows = _clip_halo(rel_rows, bh, hh, k)
        rel_rows = ops.reshape(rel_rows, (groups * cols, rows, bw, bh, hh))
        rel_rows = ops.transpose(rel_rows, (0, 1, 3, 2, 4))
        rel_rows = ops.reshape(rel_rows, (-1, hh))
        rel_cols = ops.reshape(rel_cols, (groups, cols, -1, bw * k))
        rel_cols = rel_cols + self._window_bias(width, bw, cols)
        rel_cols = _skew(ops.reshape(rel_cols, (-1, bw, k)), MASK_LOGIT)
        rel_cols = _clip_halo(rel_cols, bw, hw, k)
        rel_cols = ops.reshape(rel_cols, (-1, hw))
        # The outer sum `rows[u] + cols[v]` over the halo as one matmul with
        # a constant 0/1 matrix: on CPU the two broadcast adds it replaces
        # cost 3x a plain add of the same size (TF/Eigen broadcasting).
        bias = ops.matmul(ops.concatenate([rel_rows, rel_cols], axis=-1),
                          _outer_sum_matrix(hh, hw))  # (n*Q, K)

        # A transpose of the last two axes folds into the matmul (TF's
        # grappler sets adj_y; XLA's dot_general takes any layout).
        logits = ops.matmul(q, ops.transpose(keys_, (0, 2, 1)))  # (n, Q, K)
        logits = ops.reshape(logits, (-1, keys)) + bias
        logits = ops.reshape(logits, (n_blocks, queries, keys))
        # Every query inside the image sees its own pixel, so the maximum is
        # a real logit and masked weights underflow to exactly 0. Queries in
        # the bottom/right padding may see nothing; they are cut off below.
        weights = ops.softmax(logits, axis=-1)
        outputs = ops.matmul(weights, values)  # (G*cols*rows, Q, d)

        def unblock(t, channels):
            """`(G*cols*rows, bh*bw, c)` -> `(B, H, W, heads * c)`."""
            t = ops.reshape(t, (groups, cols, rows, bh, bw * channels))
            t = ops.transpose(t, (0, 2, 3, 1, 4))
            t = ops.reshape(t, (heads, batch, rows * bh, cols * bw,
                                channels))
            t = ops.slice(t, (0, 0, 0, 0, 0),
                          (heads, batch, height, width, channels))
            t = ops.reshape(t, (heads, -1, channels))
            t = ops.transpose(t, (1, 0, 2))
            return ops.reshape(t, (batch, height, width, heads * channels))

        outputs = ops.cast(unblock(outputs, depth), self.compute_dtype)
        if self.strides == 2:
            outputs = ops.average_pool(outputs, 2, 2, padding="valid")
        if not return_attention:
            return outputs
        # Each query's k*k window out of its halo row: one gather with
        # constant indices `(i + a) * hw + (j + b)` in query `(i, j)`'s row.
        i, j, a, b = np.meshgrid(np.arange(bh), np.arange(bw), np.arange(k),
                                 np.arange(k), indexing="ij")
        full_h, full_w = bh + k - 1, bw + k - 1
        index = (i * bw + j) * full_h * full_w + (i + a) * full_w + (j + b)
        if (hh, hw) != (full_h, full_w):
            # A whole-axis halo back in window coordinates: zero weight for
            # the neighbours outside the image, as on a padded halo.
            weights = ops.reshape(weights, (n_blocks, queries, hh, hw))
            weights = ops.pad(weights, [[0, 0], [0, 0],
                                        [(full_h - hh) // 2] * 2,
                                        [(full_w - hw) // 2] * 2])
        weights = ops.reshape(weights, (n_blocks, -1))
        weights = ops.take(weights, index.reshape(-1).astype("int32"),
                           axis=1)
        weights = unblock(weights, k * k)
        return outputs, ops.reshape(
            weights, (batch, height, width, heads, k * k)
        )

    def compute_output_shape(self, input_shape):
        batch, height, width = tuple(input_shape)[:3]
        if self.strides == 2:
            height = None if height is None else height // 2
            width = None if width is None else width // 2
        return (batch, height, width, self.filters)

    def compute_output_spec(self, inputs, return_attention=False):
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_attention:
            return outputs
        weights = keras.KerasTensor(
            (*inputs.shape[:3], self.num_heads, self.kernel_size**2),
            dtype="float32",
        )
        return outputs, weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "num_heads": self.num_heads,
                "strides": self.strides,
                "relative": self.relative,
                "block_size": self.block_size,
            }
        )
        return config
