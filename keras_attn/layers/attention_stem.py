"""Attention stem with spatially-aware value mixtures (SASA stem).

Paper: Ramachandran, Parmar, Vaswani, Bello, Levskaya, Shlens, "Stand-Alone
Self-Attention in Vision Models", NeurIPS 2019,
https://arxiv.org/abs/1906.05909 (Sec. 3.2, attention stem)

Every pixel attends to its `k x k` window like `LocalSelfAttention2D`, but
the value of neighbour `(a, b)` of the window is a position-dependent
mixture of `m` value projections,
`v_ab = (sum_m p(a, b, m) W_V^m) x_ab`,
`p(a, b, m) = softmax_m((emb_row(a) + emb_col(b)) . nu^m)`, with window-
aligned row and column embeddings and one embedding `nu^m` per mixture, so
the stem sees the spatial layout that low-level features need. Choices the
paper leaves open or that differ from the PyTorch port (leaderj1001), stated
plainly:

- One head: logits `q_p . k_j` are summed over all `filters` channels (the
  port takes the softmax per channel, its issues #10, #16, #24). No
  relative logits: spatial information enters through the value mixtures,
  as in the port's `AttentionStem`.
- The window for an even `kernel_size` (the paper's 4) follows "same"
  padding: row/column offsets run from `-((k - 1) // 2)` to `k // 2`.
  Neighbours outside the image are masked out of the softmax.
- The embeddings have `filters` channels (as in the port). BatchNorm and the
  4x4 max pooling of the paper's stem are left to the model builder.
- Logits, softmaxes and weighted sums run in float32 under mixed precision.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attn.layers import _utils
from keras_attn.layers.local_self_attention import _MASK_LOGIT
from keras_attn.layers.local_self_attention import _one_hot_window_kernel
from keras_attn.layers.local_self_attention import gather_neighbours


@keras.saving.register_keras_serializable(package="keras_attn")
class AttentionStem(keras.layers.Layer):
    """SASA attention stem: local attention with spatially-mixed values.

    [Ramachandran et al., 2019](https://arxiv.org/abs/1906.05909), Sec. 3.2:
    `y_p = sum_j softmax_j(q_p . k_j) v_j` over the `k x k` window of `p`,
    with `v_j = sum_m p(a, b, m) (x_j W_V^m)` for `j` at window position
    `(a, b)` and `p(a, b, m) = softmax_m((emb_row[a] + emb_col[b]) . nu^m)`.
    `q`, `k` and the `W_V^m` are 1x1 projections to `filters` channels
    without bias. Neighbours outside the image are masked out. Channels-last
    inputs only; any spatial size.

    Args:
        filters: integer >= 1, output channels.
        kernel_size: integer >= 1, window side `k`; even sizes use "same"
            alignment (offsets `-((k - 1) // 2) .. k // 2`). Defaults to `4`
            (the paper's).
        num_mixtures: integer >= 1, number `m` of value projections.
            Defaults to `4`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.
        return_attention: if `True`, also return the attention weights.

    Returns:
        `y` of shape `(batch, height, width, filters)`, or `(y, weights)`
        with `return_attention=True`: `weights` of shape
        `(batch, height, width, kernel_size**2)` in float32 (neighbour
        `a * kernel_size + b`; masked neighbours have weight 0).

    Example:
    >>> layer = keras_attn.layers.AttentionStem(16, kernel_size=4)
    >>> y, w = layer(np.ones((2, 8, 8, 3)), return_attention=True)
    >>> y.shape, w.shape  # (2, 8, 8, 16), (2, 8, 8, 16)

    Reference:
    - [Ramachandran et al., 2019](https://arxiv.org/abs/1906.05909)
    """

    def __init__(self, filters, kernel_size=4, num_mixtures=4, **kwargs):
        name = "AttentionStem"
        _utils.check_positive_int(name, "filters", filters)
        _utils.check_positive_int(name, "kernel_size", kernel_size)
        _utils.check_positive_int(name, "num_mixtures", num_mixtures)
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.num_mixtures = num_mixtures

    def build(self, input_shape):
        channels = _utils.check_image_shape(self, input_shape)
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
        self._key_window = _one_hot_window_kernel(k, self.filters)
        self._value_window = _one_hot_window_kernel(
            k, self.filters * self.num_mixtures
        )
        self._mask_window = _one_hot_window_kernel(k, 1)

    def _neighbours(self, x, kernel):
        return gather_neighbours(x, kernel, self.kernel_size)

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

    def call(self, inputs, return_attention=False):
        window = self.kernel_size * self.kernel_size
        shape = ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]

        q = ops.cast(self.query(inputs), "float32")
        q = ops.reshape(q, (-1, 1, self.filters))  # (P, 1, filters)
        keys = ops.cast(
            self._neighbours(self.key(inputs), self._key_window), "float32"
        )  # (P, filters, k*k)
        logits = ops.matmul(q, keys)  # (P, 1, k*k)

        ones = ops.ones_like(ops.cast(inputs[..., :1], "float32"))
        valid = self._neighbours(ones, self._mask_window)  # (P, 1, k*k)
        logits = ops.where(valid > 0.5, logits, _MASK_LOGIT)
        # The centre is always in the window and in the image, so the
        # maximum is a real logit; `* valid` makes masked weights exactly 0.
        weights = ops.softmax(logits, axis=-1) * valid  # (P, 1, k*k)

        values = ops.cast(
            self._neighbours(self.value(inputs), self._value_window),
            "float32",
        )
        values = ops.reshape(
            values, (-1, self.num_mixtures, self.filters, window)
        )  # (P, m, filters, k*k)
        mix = self.mixture_weights()[None, :, None, :]  # (1, m, 1, k*k)
        values = ops.sum(values * mix, axis=1)  # (P, filters, k*k)
        outputs = ops.matmul(values, ops.transpose(weights, (0, 2, 1)))
        outputs = ops.reshape(
            outputs, (batch, height, width, self.filters)
        )  # from (P, filters, 1)
        outputs = ops.cast(outputs, self.compute_dtype)
        if return_attention:
            weights = ops.reshape(weights, (batch, height, width, window))
            return outputs, weights
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
