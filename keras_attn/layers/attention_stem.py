"""Attention stem with spatially-aware value mixtures (SASA stem).

Paper: Ramachandran, Parmar, Vaswani, Bello, Levskaya, Shlens, "Stand-Alone
Self-Attention in Vision Models", NeurIPS 2019,
https://arxiv.org/abs/1906.05909 (Sec. 3.2, "Replacing the convolutional
stem")

The paper's stem "performs self-attention within each 4 x 4 spatial block
of the original image, followed by batch normalization and a 4 x 4 max
pool". The image is cut into non-overlapping `k x k` blocks (aligned with
the max-pool windows); every pixel attends to the `k * k` pixels of its
own block, and the value of the pixel at block position `(a, b)` is a
position-dependent mixture of `m` value projections,
`v_ab = (sum_m p(a, b, m) W_V^m) x_ab`,
`p(a, b, m) = softmax_m((emb_row(a) + emb_col(b)) . nu^m)`, with
"pooling-window aligned" row and column embeddings and one embedding
`nu^m` per mixture, so the stem sees the spatial layout that low-level
features need. Choices the paper leaves open or that differ from the
PyTorch port (leaderj1001), stated plainly:

- The port slides a `k x k` window around every pixel (its
  `AttentionStem` unfolds with padding) and indexes the embeddings by the
  offset from the query. Here the blocks do not overlap and `(a, b)` is the
  position inside the block, as the paper's text says.
- One head: logits `q_p . k_j` are summed over all `filters` channels (the
  port takes the softmax per channel, its issues #10, #16, #24). No
  relative logits: spatial information enters through the value mixtures.
- A size that is not a multiple of `k` is zero-padded at the bottom and
  right to the next multiple (as "same" max pooling pads), and the padded
  pixels are masked out of the softmax.
- The embeddings have `filters` channels (as in the port). BatchNorm and the
  4x4 max pooling of the paper's stem are left to the model builder
  (`keras_attn.models.sasa_resnet`).
- Logits, softmaxes and weighted sums run in float32 under mixed precision.
  Every matmul is rank 3 and every transpose rank 5, which TFLite converts
  to builtins.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attn.layers._numerics import MASK_LOGIT
from keras_attn.utils import validation


@keras.saving.register_keras_serializable(package="keras_attn")
class AttentionStem(keras.layers.Layer):
    """SASA attention stem: block-local attention with spatially-mixed values.

    [Ramachandran et al., 2019](https://arxiv.org/abs/1906.05909), Sec. 3.2:
    for pixel `p` in the `k x k` block `B(p)`,
    `y_p = sum_{j in B(p)} softmax_j(q_p . k_j) v_j`, with
    `v_j = sum_m p(a, b, m) (x_j W_V^m)` for `j` at block position `(a, b)`
    and `p(a, b, m) = softmax_m((emb_row[a] + emb_col[b]) . nu^m)`.
    `q`, `k` and the `W_V^m` are 1x1 projections to `filters` channels
    without bias. Blocks start at the top-left pixel; pixels of a block
    that fall outside the image are masked out. Channels-last inputs only;
    any spatial size.

    Args:
        filters: integer >= 1, output channels.
        kernel_size: integer >= 1, block side `k`. Defaults to `4` (the
            paper's).
        num_mixtures: integer >= 1, number `m` of value projections.
            Defaults to `4`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.
        return_attention: if `True`, also return the attention weights.

    Returns:
        `y` of shape `(batch, height, width, filters)`, or `(y, weights)`
        with `return_attention=True`: `weights` of shape
        `(batch, height, width, kernel_size**2)` in float32: entry
        `a * kernel_size + b` is the weight of the pixel at position
        `(a, b)` of the pixel's block (0 where that lies outside the image).

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> layer = keras_attn.layers.AttentionStem(16, kernel_size=4)
    >>> y, w = layer(np.ones((2, 8, 8, 3)), return_attention=True)
    >>> tuple(y.shape), tuple(w.shape)
    ((2, 8, 8, 16), (2, 8, 8, 16))

    Reference:
    - [Ramachandran et al., 2019](https://arxiv.org/abs/1906.05909)
    """

    attention_kinds = ("block",)
    # int8 export: softmax weights below int8's 1/256 step; stays float32.
    int8_keeps_float = True

    def __init__(self, filters, kernel_size=4, num_mixtures=4, **kwargs):
        validation.check_positive_int(self, "filters", filters)
        validation.check_positive_int(self, "kernel_size", kernel_size)
        validation.check_positive_int(self, "num_mixtures", num_mixtures)
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.num_mixtures = num_mixtures

    def build(self, input_shape):
        channels = validation.check_image_shape(self, input_shape)
        shape = (*tuple(input_shape)[:3], channels)
        widths = {
            "query": self.filters,
            "key": self.filters,
            "value": self.filters * self.num_mixtures,
        }
        for role, width in widths.items():
            conv = keras.layers.Conv2D(
                width, 1, use_bias=False, dtype=self.dtype_policy, name=role
            )
            conv.build(shape)
            setattr(self, role, conv)
        init = keras.initializers.RandomNormal(stddev=1.0)
        k = self.kernel_size
        self.emb_rows = self.add_weight(
            shape=(k, self.filters), initializer=init, name="emb_rows"
        )
        self.emb_cols = self.add_weight(
            shape=(k, self.filters), initializer=init, name="emb_cols"
        )
        self.emb_mix = self.add_weight(
            shape=(self.num_mixtures, self.filters),
            initializer=init,
            name="emb_mix",
        )

    def mixture_weights(self):
        """`p(a, b, m)` as a float32 `(num_mixtures, k*k)` tensor, softmax
        over the mixtures, column `a*k + b`."""
        k = self.kernel_size
        rows = ops.repeat(ops.cast(self.emb_rows, "float32"), k, axis=0)
        cols = ops.tile(ops.cast(self.emb_cols, "float32"), (k, 1))
        position = rows + cols  # (k*k, filters)
        logits = ops.matmul(ops.cast(self.emb_mix, "float32"),
                            ops.transpose(position))  # (m, k*k)
        return ops.softmax(logits, axis=0)

    def _blocks(self, x, rows, cols):
        """`(B, rows*k, cols*k, C)` -> `(B*rows*cols, k*k, C)`, pixel
        `(a, b)` of a block at index `a*k + b`."""
        k = self.kernel_size
        channels = ops.shape(x)[-1]
        x = ops.reshape(x, (-1, k, cols, k, channels))
        x = ops.transpose(x, (0, 2, 1, 3, 4))  # (B*rows, cols, k, k, C)
        return ops.reshape(x, (-1, k * k, channels))

    def _unblocks(self, x, rows, cols):
        """Inverse of `_blocks`: `(B*rows*cols, k*k, C)` -> image."""
        k = self.kernel_size
        channels = ops.shape(x)[-1]
        x = ops.reshape(x, (-1, cols, k, k, channels))
        x = ops.transpose(x, (0, 2, 1, 3, 4))  # (B*rows, k, cols, k, C)
        return ops.reshape(x, (-1, rows * k, cols * k, channels))

    def call(self, inputs, return_attention=False):
        k = self.kernel_size
        shape = ops.shape(inputs)
        height, width = shape[1], shape[2]
        rows, cols = (height + k - 1) // k, (width + k - 1) // k
        pad = [[0, 0], [0, rows * k - height], [0, cols * k - width], [0, 0]]
        x = ops.pad(inputs, pad)

        q = ops.cast(self._blocks(self.query(x), rows, cols), "float32")
        keys = ops.cast(self._blocks(self.key(x), rows, cols), "float32")
        logits = ops.matmul(q, ops.transpose(keys, (0, 2, 1)))  # (N, kk, kk)

        # 1 for pixels inside the image, 0 for the bottom/right padding;
        # from index arithmetic, so no data is gathered.
        inside_rows = ops.cast(
            ops.arange(rows * k, dtype="int32") < height, "float32"
        )
        inside_cols = ops.cast(
            ops.arange(cols * k, dtype="int32") < width, "float32"
        )
        inside = inside_rows[None, :, None, None] * inside_cols[
            None, None, :, None
        ]  # (1, rows*k, cols*k, 1)
        valid = self._blocks(inside, rows, cols)  # (rows*cols, k*k, 1)
        valid = ops.reshape(valid, (1, rows * cols, 1, k * k))
        logits = ops.reshape(logits, (-1, rows * cols, k * k, k * k))
        logits = ops.where(valid > 0.5, logits, MASK_LOGIT)
        # A block always holds its own query pixel, so the maximum is a real
        # logit for every pixel inside the image; `* valid` makes masked
        # weights exactly 0.
        weights = ops.softmax(logits, axis=-1) * valid
        weights = ops.reshape(weights, (-1, k * k, k * k))

        values = ops.cast(self._blocks(self.value(x), rows, cols), "float32")
        values = ops.reshape(
            values, (-1, k * k, self.num_mixtures, self.filters)
        )
        mix = ops.transpose(self.mixture_weights())  # (k*k, m)
        values = ops.sum(values * mix[None, :, :, None], axis=2)
        outputs = ops.matmul(weights, values)  # (N, k*k, filters)
        outputs = self._unblocks(outputs, rows, cols)[:, :height, :width]
        outputs = ops.cast(outputs, self.compute_dtype)
        if return_attention:
            weights = self._unblocks(weights, rows, cols)
            return outputs, weights[:, :height, :width]
        return outputs

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.filters)

    def compute_output_spec(self, inputs, return_attention=False):
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_attention:
            return outputs
        weights = keras.KerasTensor(
            (*inputs.shape[:3], self.kernel_size**2), dtype="float32"
        )
        return outputs, weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "num_mixtures": self.num_mixtures,
            }
        )
        return config
