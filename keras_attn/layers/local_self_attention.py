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
- No neighbourhood tensor is built. The unfold of the popular ports (and
  of `keras.ops.image.extract_patches`) copies keys and values `k * k`
  times, `2 k^2 C` floats per pixel. Without `return_attention`, the layer
  runs a loop (`keras.ops.fori_loop`) over the `k * k` window offsets with
  an online softmax (running maximum, denominator and weighted sum, as in
  memory-efficient attention): each step reads one shifted slice of the
  zero-padded keys and values, and the state is `C + 2 * num_heads` floats
  per pixel. With `return_attention=True` the `num_heads * k^2` weights per
  pixel are returned, so the loop is unrolled and keeps the logits.
  `benchmarks/layers.py --suite sasa` measures both against an unfold. The
  backward pass keeps each step's slices, so training memory stays close
  to the unfold's; the saving is at inference.
- Every op (PAD, SLICE, MUL, SUM, SOFTMAX, WHILE) is a TFLite builtin.
- The relative term `q . r` is one matmul of `q` with the `k * k`
  embeddings, since `r` depends on the offset only.
- Logits, softmax and the weighted sum of values run in float32 under mixed
  precision; the 1x1 projections run in the compute dtype.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_attn.layers import _utils

# Added to the logits of neighbours outside the image. Far below any finite
# float32 logit the layer can produce, yet finite so that no `inf - inf`
# appears; the masked weights are then zeroed exactly (see `call`).
_MASK_LOGIT = -1e30


def _one_hot_window_kernel(kernel_size, channels):
    """Depthwise kernel `(k, k, C, k*k)` copying neighbour `(a, b)` of every
    channel into output channel `c * k*k + a*k + b`."""
    window = kernel_size * kernel_size
    kernel = np.zeros((kernel_size, kernel_size, channels, window), "float32")
    for a in range(kernel_size):
        for b in range(kernel_size):
            kernel[a, b, :, a * kernel_size + b] = 1.0
    return kernel


def gather_neighbours(x, kernel, kernel_size):
    """`(B, H, W, C)` -> `(B*H*W, C, k*k)` zero-padded neighbourhoods.

    A depthwise conv with a one-hot `_one_hot_window_kernel` converts to a
    builtin TFLite DEPTHWISE_CONV_2D and needs a `C*k^4` constant, far less
    than `extract_patches`' `(k^2 C)^2`.
    """
    window = kernel_size * kernel_size
    kernel = ops.convert_to_tensor(kernel, dtype=x.dtype)
    patches = ops.depthwise_conv(x, kernel, 1, padding="same")
    return ops.reshape(patches, (-1, ops.shape(x)[-1], window))


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
    >>> layer = keras_attn.layers.LocalSelfAttention2D(16, 3, num_heads=2)
    >>> y, w = layer(np.ones((2, 8, 8, 4)), return_attention=True)
    >>> y.shape, w.shape  # (2, 8, 8, 16), (2, 8, 8, 2, 9)

    Reference:
    - [Ramachandran et al., 2019](https://arxiv.org/abs/1906.05909)
    """

    def __init__(
        self,
        filters,
        kernel_size=7,
        num_heads=8,
        strides=1,
        relative=True,
        **kwargs,
    ):
        name = "LocalSelfAttention2D"
        _utils.check_positive_int(name, "filters", filters)
        _utils.check_odd_kernel(name, "kernel_size", kernel_size)
        _utils.check_positive_int(name, "num_heads", num_heads)
        _utils.check_positive_int(name, "strides", strides)
        _utils.check_choice(name, "strides", strides, (1, 2))
        _utils.check_bool(name, "relative", relative)
        if filters % num_heads:
            _utils.fail(
                name,
                "filters",
                filters,
                f"a multiple of num_heads={num_heads}",
            )
        if relative and filters % 2:
            _utils.fail(
                name,
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

    def build(self, input_shape):
        channels = _utils.check_image_shape(self, input_shape)
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
        """`(num_heads, d, k*k)` float32: `r[n]` for `n = a*k + b` is
        `concat(rel_rows[a], rel_cols[b])`, split into heads."""
        k = self.kernel_size
        rows = ops.repeat(ops.cast(self.rel_rows, "float32"), k, axis=0)
        cols = ops.tile(ops.cast(self.rel_cols, "float32"), (k, 1))
        rel = ops.concatenate([rows, cols], axis=-1)  # (k*k, filters)
        depth = self.filters // self.num_heads
        rel = ops.reshape(rel, (k * k, self.num_heads, depth))
        return ops.transpose(rel, (1, 2, 0))  # (heads, d, k*k)

    def _valid(self, height, width):
        """`(H, W, k*k)` float32, 1 where neighbour `n` of a pixel lies
        inside the image. Built from index arithmetic, not from data."""
        k = self.kernel_size
        offsets = ops.arange(k, dtype="int32") - k // 2

        def inside(size):
            pos = ops.arange(size, dtype="int32")[:, None] + offsets[None]
            return ops.cast(
                ops.logical_and(pos >= 0, pos < size), "float32"
            )  # (size, k)

        rows = inside(height)[:, None, :, None]  # (H, 1, k, 1)
        cols = inside(width)[None, :, None, :]  # (1, W, 1, k)
        return ops.reshape(rows * cols, (height, width, k * k))

    def call(self, inputs, return_attention=False):
        heads = self.num_heads
        depth = self.filters // heads
        k = self.kernel_size
        half = k // 2
        shape = ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]
        split = (batch, height, width, heads, depth)
        pad = [[0, 0], [half, half], [half, half], [0, 0]]

        q = ops.reshape(ops.cast(self.query(inputs), "float32"), split)
        keys = ops.pad(ops.cast(self.key(inputs), "float32"), pad)
        values = ops.pad(ops.cast(self.value(inputs), "float32"), pad)
        rel = None
        if self.relative:
            # q . r per offset: (P, heads, 1, d) @ (heads, d, k*k). Rank 4,
            # which TFLite converts to BATCH_MATMUL (rank 6 it does not).
            rel = ops.matmul(
                ops.reshape(q, (-1, heads, 1, depth)),
                self._relative_embeddings(),
            )
            rel = ops.reshape(rel, (batch, height, width, heads, k * k))
        valid = self._valid(height, width)[None, :, :, None, :]

        if return_attention:
            outputs, weights = self._unrolled(q, keys, values, rel, valid)
        else:
            outputs, weights = self._streamed(q, keys, values, rel, valid)
        outputs = ops.reshape(outputs, (batch, height, width, self.filters))
        outputs = ops.cast(outputs, self.compute_dtype)
        if self.strides == 2:
            outputs = ops.average_pool(outputs, 2, 2, padding="valid")
        if return_attention:
            return outputs, weights
        return outputs

    def _unrolled(self, q, keys, values, rel, valid):
        """All `k*k` logits at once: returns the weights too."""
        k = self.kernel_size
        shape = ops.shape(q)

        def shifted(padded, a, b):
            # Neighbour at offset (a - k//2, b - k//2) of every pixel.
            window = padded[:, a:, b:, :][:, : shape[1], : shape[2], :]
            return ops.reshape(window, shape)

        logits = ops.stack(
            [
                ops.sum(q * shifted(keys, a, b), axis=-1)
                for a in range(k)
                for b in range(k)
            ],
            axis=-1,
        )  # (B, H, W, heads, k*k)
        if rel is not None:
            logits = logits + rel
        logits = ops.where(valid > 0.5, logits, _MASK_LOGIT)
        # The centre is always valid, so the max is a real logit and the
        # masked terms underflow; multiplying by `valid` makes them exactly 0
        # even if every real logit were below _MASK_LOGIT.
        weights = ops.softmax(logits, axis=-1) * valid
        outputs = None
        for a in range(k):
            for b in range(k):
                n = a * k + b
                term = weights[..., n : n + 1] * shifted(values, a, b)
                outputs = term if outputs is None else outputs + term
        return outputs, weights

    def _streamed(self, q, keys, values, rel, valid):
        """Online softmax over the `k*k` offsets, one offset per step."""
        k = self.kernel_size
        shape = ops.shape(q)  # (B, H, W, heads, d)
        size = (shape[0], shape[1], shape[2], ops.shape(keys)[-1])

        def shifted(padded, n):
            start = (0, n // k, n % k, 0)
            return ops.reshape(ops.slice(padded, start, size), shape)

        def step(n, state):
            running_max, denominator, total = state
            logit = ops.sum(q * shifted(keys, n), axis=-1)  # (B,H,W,heads)
            if rel is not None:
                logit = logit + ops.take(rel, n, axis=-1)
            inside = ops.take(valid, n, axis=-1)  # (1, H, W, 1)
            logit = ops.where(inside > 0.5, logit, _MASK_LOGIT)
            new_max = ops.maximum(running_max, logit)
            rescale = ops.exp(running_max - new_max)
            # `* inside`: an outside neighbour adds exactly 0, even while
            # the running maximum is still _MASK_LOGIT.
            weight = ops.exp(logit - new_max) * inside
            denominator = denominator * rescale + weight
            total = (total * rescale[..., None]
                     + weight[..., None] * shifted(values, n))
            return new_max, denominator, total

        state = (
            ops.full(shape[:4], _MASK_LOGIT, "float32"),
            ops.zeros(shape[:4], "float32"),
            ops.zeros(shape, "float32"),
        )
        _, denominator, total = ops.fori_loop(0, k * k, step, state)
        # The centre is always inside, so the denominator is >= its weight.
        return total / denominator[..., None], None

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
            }
        )
        return config
