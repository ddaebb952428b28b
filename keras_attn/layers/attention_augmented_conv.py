"""Attention Augmented Convolution.

Paper: Bello, Zoph, Vaswani, Shlens, Le, "Attention Augmented Convolutional
Networks", ICCV 2019, https://arxiv.org/abs/1904.09925

The layer follows the paper's Eq. 1-5 and its appendix code (one 1x1 conv
for `q, k, v`, heads split over channels, queries scaled by
`(dk / Nh) ** -0.5`, 2D relative logits from per-axis tables through the
pad/reshape/slice `rel_to_abs` trick). Where this differs from the paper or
the popular ports, on purpose:

- The relative logits are BROADCAST over the other spatial axis and added to
  the content logits, instead of `tile`-d to `(HW, HW)` first (the appendix
  code and leaderj1001's `repeat`): same result, no extra `(HW)^2` tensors
  per axis (leaderj1001#12/#13). No `(HW)^2 x d` embedding tensor is ever
  built.
- Variable spatial size: the tables `rel_h (2H-1, dk/Nh)` and
  `rel_w (2W-1, dk/Nh)` are created at build for the attention grid of the
  build shape (or `relative_size`, or 16x16 when the build shape has `None`
  spatial dims). When the grid at call time differs, each table is resized
  to the needed length `2H-1` / `2W-1` with bilinear interpolation
  (`keras.ops.image.resize`, half-pixel centres), as keras-hub's ViTDet does
  for its relative position tables. The paper (fixed 32x32 / 224x224 inputs)
  never needs this; the interpolated tables are an approximation whose
  quality depends on training at the target size.
- Strides: with `strides=s > 1` the `q, k, v` 1x1 conv itself is strided
  (it samples every `s`-th position, like `x[:, ::s, ::s]`), so the attention
  runs on the same `ceil(H/s) x ceil(W/s)` grid as the strided conv. The
  paper does not spell out its downsampling; leaderj1001 strides a
  `kernel_size` qkv conv instead. A strided 1x1 conv is the cheapest exact
  choice (no extra parameters, TFLite CONV_2D) but ignores the skipped
  positions in the attention branch.
- Logits, softmax and the weighted sum of values run in float32 under mixed
  precision (the float16 `q.k` overflows above 65504); the result is cast
  back to the compute dtype before the output 1x1 conv.
- `key_depth` / `value_depth` accept an int (channels) or a float (a
  fraction of `filters`, as titu1994's `depth_k=0.2`), resolved with
  `round`.
- Speed: without `return_attention` the attention runs through `attend`, the
  same forward ops with a hand-written gradient (`keras.ops.custom_gradient`,
  all three backends). On CPU every `(HW)^2` tensor is memory-bound and the
  per-head depths are tiny (5 and 4 channels here), so cost is set by how
  often the `(B, Nh, HW, HW)` tensors are written and how they are read. An
  op-level TensorFlow profile of forward+backward (2x32x32x64, dk=40, dv=32,
  Nh=8) showed autodiff spending most of it in the gradient w.r.t. `v`
  (`P^T g`, a batched matmul reading the `(HW, HW)` operand transposed: 860
  of 2450 op-ms) and `k` (`dS^T q`, 240 op-ms), in negating the full-size
  gradient of the `- (-S_H)` term (130) and in the three-op softmax gradient
  (230). `attend` reads both as `(g^T P)^T` and `(q^T dS)^T`, folds
  `rowsum(dP * P) = g . out` into one extra column of the `dP = g v^T`
  matmul (so `dS = P * dP'` is the only full-size write after `dP`) and
  reduces the relative-logit gradients directly. Forward values are
  unchanged (the ops are the same); the maps for `return_attention=True` go
  through plain autodiff. Measured on the idle 2-core CPU, old and new
  layer in one process (plain `tf.function`, fastest of 10 alternating
  calls, 2x32x32x64): forward+backward 366 -> 260 ms, forward unchanged
  (133 -> 135 ms). `python -m benchmarks.layers --suite speed` puts it at
  22.5-23.9x a `Conv2D(64, 3)` forward+backward (15x forward; idle
  2-core CPU, 2026-12-05); under `jit_compile=True` it is slower (28x /
  26x: XLA's CPU dot emitter handles these skinny batched matmuls worse
  than Eigen), so plain `tf.function` is the layer's best setting on
  TensorFlow; JAX `jit` gives 43-47x / 30-32x of JAX's own conv. Peak
  memory of forward+backward falls too
  (`python -m benchmarks.layers --suite aa_memory --quick`, 16x16 grid:
  6.0 -> 3.9 MiB relative, 5.9 -> 3.9 MiB plain). The floor
  is the forward: the `q k^T`, two broadcast adds, softmax and `P v` each
  make a full pass over `B Nh (HW)^2` floats. Reproduce with a script
  that times the layer and the conv alternately in `tf.function`, or
  profile per op with `RunOptions(trace_level=FULL_TRACE)` on the concrete
  function's graph.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_attn.utils import validation

DEFAULT_RELATIVE_SIZE = 16


def _resolve_depth(layer, argument, value, filters):
    """An int depth as is; a float as a fraction of `filters`. `layer` names
    the caller in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        validation.fail(
            layer, argument, value,
            "an integer number of channels or a float fraction of `filters`",
        )
    if isinstance(value, float):
        if not value > 0:
            validation.fail(layer, argument, value,
                            "a fraction > 0 of `filters`")
        return int(round(value * filters))
    return validation.check_positive_int(layer, argument, value)


def rel_to_abs(x):
    """Relative to absolute indexing (the paper's appendix).

    `x[..., l, m]` holds the logit of query `l` for relative offset
    `m - (L - 1)`; the result `out[..., l, j] = x[..., l, j - l + L - 1]`.

    Args:
        x: tensor `(N, L, 2L - 1)`.

    Returns:
        Tensor `(N, L, L)`.
    """
    shape = ops.shape(x)
    n, length = shape[0], shape[1]
    x = ops.pad(x, [[0, 0], [0, 0], [0, 1]])  # (N, L, 2L)
    flat = ops.reshape(x, (n, -1))  # (N, 2L^2)
    # L - 1 zeros make the length (L + 1)(2L - 1); the reshape then shifts
    # every row one step left, which aligns relative and absolute indices.
    flat = ops.pad(flat, [[0, 0], [0, length - 1]])
    final = ops.reshape(flat, (n, length + 1, 2 * length - 1))
    return final[:, :length, length - 1:]  # (N, L, L)


def relative_logits_1d(q, table):
    """Relative logits along the last spatial axis of `q`.

    Args:
        q: float tensor `(B, Nh, X, Y, d)`.
        table: `(2Y - 1, d)` embeddings of the offsets `-(Y-1) .. Y-1`.

    Returns:
        `(B, Nh, X, Y, Y)`: `out[b, n, x, y, y'] = q[b, n, x, y] .
        table[y' - y + Y - 1]`.
    """
    shape = ops.shape(q)
    logits = ops.einsum("bhxyd,md->bhxym", q, table)  # (B, Nh, X, Y, 2Y-1)
    logits = ops.reshape(logits, (-1, shape[3], 2 * shape[3] - 1))
    logits = rel_to_abs(logits)  # (B*Nh*X, Y, Y)
    return ops.reshape(logits, (shape[0], shape[1], shape[2], shape[3], -1))


def attention_logits(q, k, rel_h=None, rel_w=None):
    """Content logits `q.k` plus, with tables, the 2D relative logits.

    Args:
        q: scaled queries `(B, Nh, H, W, d)`.
        k: keys `(B, Nh, H, W, d)`.
        rel_h: `None` or `(2H - 1, d)` table of vertical offsets.
        rel_w: `None` or `(2W - 1, d)` table of horizontal offsets.

    Returns:
        `(B, Nh, HW, HW)` logits, queries on axis 2 in row-major order:
        `q_i . k_j + q_i . rel_h[x_j - x_i + H - 1] +
        q_i . rel_w[y_j - y_i + W - 1]`.
    """
    shape = ops.shape(q)
    batch, heads, height, width = shape[0], shape[1], shape[2], shape[3]
    flat_q = ops.reshape(q, (batch, heads, height * width, -1))
    flat_k = ops.reshape(k, (batch, heads, height * width, -1))
    logits = ops.einsum("bnqd,bnkd->bnqk", flat_q, flat_k)  # (B,Nh,L,L)
    if rel_h is None:
        return logits
    # S_W[x, y, y'] and S_H[x, y, x'] are broadcast over the other key axis
    # (never tiled); batch and heads are merged to keep every tensor rank 5
    # for TFLite.
    logits_w = relative_logits_1d(q, rel_w)  # (B, Nh, H, W, W)
    logits_w = ops.reshape(logits_w, (-1, height, width, 1, width))
    q_t = ops.transpose(q, (0, 1, 3, 2, 4))  # (B, Nh, W, H, d)
    # -S_H, from the negated table. `(content + S_W) - (-S_H)` keeps one
    # full-size tensor alive per step: written as a sum of three, TF's
    # graph optimiser regroups it to `content + (S_W + S_H)` and the
    # broadcast `S_W + S_H` costs one more (HW)^2 tensor (measured by
    # `benchmarks/layers.py --suite aa_memory`).
    neg_logits_h = relative_logits_1d(q_t, -rel_h)  # (B, Nh, W, H, H)
    neg_logits_h = ops.reshape(neg_logits_h, (-1, width, height, height))
    neg_logits_h = ops.transpose(neg_logits_h, (0, 2, 1, 3))
    neg_logits_h = ops.reshape(neg_logits_h, (-1, height, width, height, 1))
    logits = ops.reshape(logits, (-1, height, width, height, width))
    logits = (logits + logits_w) - neg_logits_h  # (B*Nh, H, W, H, W)
    return ops.reshape(logits, (batch, heads, height * width, height * width))


def _fused_attention(relative):
    """`softmax(q k^T [+ S_W + S_H]) v` with a hand-written gradient.

    Autodiff of the same ops is correct but slow on CPU: TensorFlow lowers
    the gradients w.r.t. `v` and `k` to batched matmuls that read the
    `(L, L)` operand transposed (`adj_x`), several times slower than the
    untransposed read; it negates the full-size gradient of the `- (-S_H)`
    term before reducing it; and the softmax gradient allocates three
    full-size temporaries. Here every full-size operand is read as stored
    and the backward pass allocates one `(L, L)` tensor per head.
    """

    @ops.custom_gradient
    def attend(q, k, v, *relative_logits):
        # q, k: (B, Nh, L, d); v: (B, Nh, L, dv); optional S_W (N, H, W, 1, W)
        # and -S_H (N, H, W, H, 1), N = B * Nh.
        shape = ops.shape(q)
        logits = ops.matmul(q, ops.swapaxes(k, -1, -2))  # (B, Nh, L, L)
        if relative:
            logits_w, neg_logits_h = relative_logits
            rel_shape = ops.shape(logits_w)
            height, width = rel_shape[1], rel_shape[2]
            logits = ops.reshape(logits, (-1, height, width, height, width))
            # `- (-S_H)`: see `attention_logits` (no broadcast S_W + S_H).
            logits = (logits + logits_w) - neg_logits_h
            logits = ops.reshape(logits, (shape[0], shape[1], shape[2], -1))
        weights = ops.softmax(logits, axis=-1)
        out = ops.matmul(weights, v)  # (B, Nh, L, dv)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            # Softmax backward needs `dP - rowsum(dP * P)`, and
            # `rowsum(dP * P)_i = g_i . out_i`: one extra column of the
            # `dP = g v^T` matmul subtracts it with no full-size pass.
            row = ops.sum(upstream * out, axis=-1, keepdims=True)
            g_aug = ops.concatenate([upstream, -row], axis=-1)
            v_aug = ops.concatenate([v, ops.ones_like(v[..., :1])], axis=-1)
            d_logits = weights * ops.matmul(g_aug, ops.swapaxes(v_aug, -1, -2))
            d_q = ops.matmul(d_logits, k)
            # (x^T D)^T rather than D^T x: the (L, L) operand read as stored.
            d_k = ops.swapaxes(
                ops.matmul(ops.swapaxes(q, -1, -2), d_logits), -1, -2
            )
            d_v = ops.swapaxes(
                ops.matmul(ops.swapaxes(upstream, -1, -2), weights), -1, -2
            )
            if not relative:
                return d_q, d_k, d_v
            d_logits = ops.reshape(d_logits, (-1, height, width, height, width))
            d_logits_w = ops.sum(d_logits, axis=3, keepdims=True)
            d_neg_logits_h = -ops.sum(d_logits, axis=4, keepdims=True)
            return d_q, d_k, d_v, d_logits_w, d_neg_logits_h

        return out, grad

    return attend


def attend(q, k, v, rel_h=None, rel_w=None):
    """Attention output for `attention_logits(q, k, rel_h, rel_w)`.

    Same value as `softmax(attention_logits(...)) @ v`, with the faster
    gradient of `_fused_attention`; the attention maps are not returned.

    Args:
        q: scaled queries `(B, Nh, H, W, d)`.
        k: keys `(B, Nh, H, W, d)`.
        v: values `(B, Nh, H, W, dv)`.
        rel_h: `None` or `(2H - 1, d)` table of vertical offsets.
        rel_w: `None` or `(2W - 1, d)` table of horizontal offsets.

    Returns:
        `(B, Nh, HW, dv)`, queries in row-major order.
    """
    shape = ops.shape(q)
    batch, heads, height, width = shape[0], shape[1], shape[2], shape[3]
    flat = [
        ops.reshape(t, (batch, heads, height * width, -1)) for t in (q, k, v)
    ]
    if rel_h is None:
        return _fused_attention(False)(*flat)
    logits_w = relative_logits_1d(q, rel_w)  # (B, Nh, H, W, W)
    logits_w = ops.reshape(logits_w, (-1, height, width, 1, width))
    neg_logits_h = relative_logits_1d(
        ops.transpose(q, (0, 1, 3, 2, 4)), -rel_h
    )  # (B, Nh, W, H, H)
    neg_logits_h = ops.reshape(neg_logits_h, (-1, width, height, height))
    neg_logits_h = ops.transpose(neg_logits_h, (0, 2, 1, 3))
    neg_logits_h = ops.reshape(neg_logits_h, (-1, height, width, height, 1))
    return _fused_attention(True)(*flat, logits_w, neg_logits_h)


def _resize_table(table, length):
    """Bilinearly resample a `(L0, d)` table to `(length, d)` rows."""
    image = table[None, :, None, :]  # (1, L0, 1, d): rows as image height
    resized = ops.image.resize(
        image, (length, 1), interpolation="bilinear", antialias=False,
        data_format="channels_last",
    )
    return resized[0, :, 0, :]  # (length, d)


@keras.saving.register_keras_serializable(package="keras_attn")
class AttentionAugmentedConv2D(keras.layers.Layer):
    """Convolution concatenated with 2D multi-head self-attention.

    [Bello et al., 2019](https://arxiv.org/abs/1904.09925), Eq. 5:
    `AAConv(X) = Concat[Conv(X), MHA(X)]`, where `Conv` has
    `filters - dv` output channels (`"same"` padding, `strides`) and
    `MHA(X) = Concat[O_1, ..., O_Nh] W_O` (a 1x1 conv `dv -> dv`) with, for
    every head `h` (Eq. 1-4),
    `O_h = softmax((X W_q)(X W_k)^T / sqrt(dk/Nh) + S_H + S_W) (X W_v)`
    over all `HW` positions. `W_q, W_k, W_v` are one 1x1 conv with
    `2 dk + dv` channels; `S_H[i, j] = q_i . r^H_{j_x - i_x}` and
    `S_W[i, j] = q_i . r^W_{j_y - i_y}` are 2D relative logits read from
    learned tables `rel_h (2H-1, dk/Nh)` and `rel_w (2W-1, dk/Nh)` (skipped
    with `relative=False`). With `strides > 1` the attention runs on the
    strided grid (see the module docstring). The relative tables are resized
    by bilinear interpolation when the spatial size at call time differs from
    the one they were built for. Channels-last inputs only; `H != W` and
    variable spatial sizes are supported.

    Args:
        filters: integer >= 2, total output channels `Fout`.
        kernel_size: odd integer >= 1, size of the square conv kernel.
        key_depth: `dk`, channels of the queries and keys: an integer, or a
            float fraction of `filters` (the paper's `kappa`). Must be a
            multiple of `num_heads`.
        value_depth: `dv`, channels of the attention output: an integer with
            `0 < dv < filters`, or a float fraction of `filters` (the paper's
            `upsilon`). Must be a multiple of `num_heads`.
        num_heads: integer >= 1, number of heads `Nh`.
        relative: whether to add the 2D relative position logits. Defaults
            to `True`.
        strides: integer >= 1, stride of the conv and of the attention grid.
            Defaults to `1`.
        relative_size: `None` or `(height, width)` of the attention grid the
            relative tables are created for. `None` takes it from the build
            input shape (after striding), or 16 for a `None` dimension.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.
        return_attention: if `True`, also return the attention weights.

    Returns:
        `y` of shape `(batch, ceil(height / strides), ceil(width / strides),
        filters)` (conv channels first, then the `dv` attention channels), or
        `(y, weights)` with `return_attention=True`, `weights` of shape
        `(batch, num_heads, h * w, h * w)` in float32 for the attention grid
        `h x w` (rows: queries, summing to one).

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> layer = keras_attn.layers.AttentionAugmentedConv2D(16, 3, 8, 4, 2)
    >>> y, w = layer(np.ones((2, 8, 6, 3)), return_attention=True)
    >>> tuple(y.shape), tuple(w.shape)
    ((2, 8, 6, 16), (2, 2, 48, 48))

    Reference:
    - [Bello et al., 2019](https://arxiv.org/abs/1904.09925)
    """

    attention_kinds = ("global",)
    # int8 export: the softmax over h*w keys falls below int8's 1/256 step,
    # so the attention stays float32; the plain conv branch, concatenated
    # and never attended, holds most weights and goes int8.
    int8_keeps_float = True
    int8_sublayers = ("conv",)

    def __init__(
        self,
        filters,
        kernel_size,
        key_depth,
        value_depth,
        num_heads,
        relative=True,
        strides=1,
        relative_size=None,
        **kwargs,
    ):
        validation.check_positive_int(self, "filters", filters, minimum=2)
        validation.check_odd_kernel(self, "kernel_size", kernel_size)
        validation.check_positive_int(self, "num_heads", num_heads)
        validation.check_bool(self, "relative", relative)
        validation.check_positive_int(self, "strides", strides)
        dk = _resolve_depth(self, "key_depth", key_depth, filters)
        dv = _resolve_depth(self, "value_depth", value_depth, filters)
        if dk < num_heads or dk % num_heads:
            validation.fail(
                self, "key_depth", key_depth,
                f"a multiple of num_heads={num_heads} (resolved dk={dk})",
            )
        if not 0 < dv < filters:
            validation.fail(
                self, "value_depth", value_depth,
                f"0 < dv < filters={filters} so that the conv keeps at "
                f"least one channel (resolved dv={dv})",
            )
        if dv % num_heads:
            validation.fail(
                self, "value_depth", value_depth,
                f"a multiple of num_heads={num_heads} (resolved dv={dv})",
            )
        if relative_size is not None:
            if not isinstance(relative_size, (list, tuple)) or len(
                relative_size
            ) != 2:
                validation.fail(
                    self, "relative_size", relative_size,
                    "None or a pair (height, width) of integers >= 1",
                )
            for value in relative_size:
                validation.check_positive_int(self, "relative_size", value)
            relative_size = tuple(relative_size)
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.key_depth = key_depth
        self.value_depth = value_depth
        self.num_heads = num_heads
        self.relative = relative
        self.strides = strides
        self.relative_size = relative_size
        self.key_channels = dk
        self.value_channels = dv

    def _grid(self, height, width):
        def down(n):
            return None if n is None else math.ceil(n / self.strides)

        return down(height), down(width)

    def build(self, input_shape):
        validation.check_image_shape(self, input_shape)
        input_shape = tuple(input_shape)
        dk, dv = self.key_channels, self.value_channels
        self.conv = keras.layers.Conv2D(
            self.filters - dv,
            self.kernel_size,
            strides=self.strides,
            padding="same",
            dtype=self.dtype_policy,
            name="conv",
        )
        # One 1x1 conv for q, k, v (the paper's `compute_flat_qkv`); striding
        # it puts the attention on the conv's output grid.
        self.qkv = keras.layers.Conv2D(
            2 * dk + dv,
            1,
            strides=self.strides,
            padding="same",
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.attention_output = keras.layers.Conv2D(
            dv, 1, dtype=self.dtype_policy, name="attention_output"
        )
        self.conv.build(input_shape)
        self.qkv.build(input_shape)
        grid = self._grid(*input_shape[1:3])
        self.attention_output.build((input_shape[0], *grid, dv))
        if self.relative:
            if self.relative_size is not None:
                height, width = self.relative_size
            else:
                height, width = (
                    DEFAULT_RELATIVE_SIZE if n is None else n for n in grid
                )
            depth = dk // self.num_heads
            init = keras.initializers.RandomNormal(stddev=depth**-0.5)
            self.rel_h = self.add_weight(
                shape=(2 * height - 1, depth), initializer=init, name="rel_h"
            )
            self.rel_w = self.add_weight(
                shape=(2 * width - 1, depth), initializer=init, name="rel_w"
            )

    def _table(self, table, static_length, length):
        # Resize only when the size is not statically the built one: under
        # TensorFlow a `None` size is resized symbolically (identity when the
        # lengths agree), under torch the shapes are always concrete.
        built = table.shape[0]
        if static_length is not None and 2 * static_length - 1 == built:
            return ops.cast(table, "float32")
        return _resize_table(ops.cast(table, "float32"), 2 * length - 1)

    def call(self, inputs, return_attention=False):
        dk, dv, heads = self.key_channels, self.value_channels, self.num_heads
        conv_out = self.conv(inputs)  # (B, h, w, filters - dv)
        qkv = self.qkv(inputs)  # (B, h, w, 2 dk + dv)
        static_h, static_w = qkv.shape[1], qkv.shape[2]
        shape = ops.shape(qkv)
        batch, height, width = shape[0], shape[1], shape[2]
        # float32 from here: q.k overflows float16 for large activations.
        qkv = ops.cast(qkv, "float32")

        def split_heads(t, depth):
            t = ops.reshape(t, (batch, height, width, heads, depth // heads))
            return ops.transpose(t, (0, 3, 1, 2, 4))  # (B, Nh, h, w, d)

        q = split_heads(qkv[..., :dk], dk) * (dk // heads) ** -0.5
        k = split_heads(qkv[..., dk : 2 * dk], dk)
        v = split_heads(qkv[..., 2 * dk :], dv)
        if self.relative:
            rel_h = self._table(self.rel_h, static_h, height)
            rel_w = self._table(self.rel_w, static_w, width)
        else:
            rel_h = rel_w = None
        if return_attention:
            # The maps are an output here: plain autodiff through them.
            logits = attention_logits(q, k, rel_h, rel_w)  # (B, Nh, L, L)
            flat_v = ops.reshape(v, (batch, heads, height * width, -1))
            weights = ops.softmax(logits, axis=-1)  # (B, Nh, L, L) float32
            attended = ops.einsum("bnqk,bnkd->bnqd", weights, flat_v)
        else:
            attended = attend(q, k, v, rel_h, rel_w)
        attended = ops.reshape(
            attended, (batch, heads, height, width, dv // heads)
        )
        attended = ops.transpose(attended, (0, 2, 3, 1, 4))  # (B,h,w,Nh,d)
        attended = ops.reshape(attended, (batch, height, width, dv))
        attended = self.attention_output(
            ops.cast(attended, self.compute_dtype)
        )
        outputs = ops.concatenate(
            [conv_out, ops.cast(attended, conv_out.dtype)], axis=-1
        )
        if return_attention:
            return outputs, weights
        return outputs

    def compute_output_shape(self, input_shape):
        height, width = self._grid(*tuple(input_shape)[1:3])
        return (input_shape[0], height, width, self.filters)

    def compute_output_spec(self, inputs, return_attention=False):
        shape = self.compute_output_shape(inputs.shape)
        outputs = keras.KerasTensor(shape, dtype=self.compute_dtype)
        if not return_attention:
            return outputs
        height, width = shape[1:3]
        length = None if height is None or width is None else height * width
        weights = keras.KerasTensor(
            (shape[0], self.num_heads, length, length), dtype="float32"
        )
        return outputs, weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "key_depth": self.key_depth,
                "value_depth": self.value_depth,
                "num_heads": self.num_heads,
                "relative": self.relative,
                "strides": self.strides,
                "relative_size": None
                if self.relative_size is None
                else list(self.relative_size),
            }
        )
        return config
