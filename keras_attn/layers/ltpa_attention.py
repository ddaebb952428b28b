"""Learn to Pay Attention (Jetley et al., ICLR 2018).

Paper: https://arxiv.org/abs/1804.02391. Reference code consulted:
SaoYan/LearnToPayAttention (`blocks.py`: `LinearAttentionBlock`,
`ProjectorBlock`), which implements the "pc" compatibility only.

Notes and deviations:
- When the local features `l` and the global vector `g` have different
  widths, `l` (not `g`) is projected to `g`'s width by a learnable 1x1 linear
  map without bias, as in the paper and in the reference `ProjectorBlock`
  (256 -> 512). All attention levels of a network then share `g`'s space, so
  the attended vectors they return are comparable and can be concatenated or
  classified by independent heads.
- "pc" is computed as `<u, l_i> + <u, g>`, which equals `<u, l_i + g>` and
  avoids broadcasting `g` over the whole feature map. A consequence of the
  paper's formula (shared by the reference code): with softmax
  normalisation `<u, g>` is the same at every position and cancels, so the
  "pc" softmax map depends on `l` only (g still matters under sigmoid, and
  always for "dp").
- The whole layer (projection, compatibility scores, attention map and
  attention-weighted pooling) computes in float32 even under
  `mixed_float16`, and only `g_a` is cast back to the compute dtype: the
  projection and the dot products of wide feature vectors overflow float16
  easily (an `inf` score turns the softmax into NaN), and float16 `exp`
  overflows above ~11. The layer is a small part of a network's cost.
- The layer always returns the pair `(g_a, attention)`; there is no
  `return_attention` switch because the map is part of the method's output
  (the reference code returns it too), and the pooled vector alone would
  hide it from visualisation tools.
- The returned map is the normalised attention `a` (softmax or sigmoid), not
  the raw scores `c` the reference code returns, because `a` is what weights
  the features (and, under softmax, sums to one over space).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attn.layers._numerics import spatial_softmax_f32
from keras_attn.utils.validation import check_choice
from keras_attn.utils.validation import check_image_shape
from keras_attn.utils.validation import fail

COMPATIBILITIES = ("pc", "dp")
NORMALIZATIONS = ("softmax", "sigmoid")


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(
        d is None or isinstance(d, int) for d in value
    )


@keras.saving.register_keras_serializable(package="keras_attn")
class LTPAAttention(keras.layers.Layer):
    """Trainable attention of local features guided by a global vector.

    Implements the attention module of
    [Jetley et al., 2018](https://arxiv.org/abs/1804.02391). Given local
    features `l_i` (one `C`-vector per spatial position `i`) and a global
    feature `g` of width `C'`, the local features are first projected to
    `g`'s space, `l̂_i = W l_i` (a learnable 1x1 map without bias, only when
    `C != C'`; otherwise `l̂_i = l_i`). A compatibility score is computed at
    every position, either "parametrised compatibility"
    `c_i = <u, l̂_i + g>` with a learnable `u` ("pc"), or the dot product
    `c_i = <l̂_i, g>` ("dp", no weights when `C == C'`). Scores are
    normalised either by a softmax over all `H*W` positions,
    `a = softmax(c)`, giving `g_a = sum_i a_i l̂_i`, or by an element-wise
    sigmoid, `a = sigmoid(c)`, giving `g_a = mean_i(a_i l̂_i)` (the reference
    code's `normalize_attn=False`). Channels-last only.

    Args:
        compatibility: `"pc"` (parametrised, `<u, l̂ + g>`) or `"dp"` (dot
            product, `<l̂, g>`).
        normalization: `"softmax"` (over all spatial positions; the map sums
            to one per image) or `"sigmoid"` (independent gates, average
            pooling).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list or tuple `[l, g]`: local features `l` of shape
            `(batch, height, width, C)` (height and width may be unknown) and
            a global feature vector `g` of shape `(batch, C')`.

    Returns:
        Always a tuple `(g_a, attention)`: `g_a` of shape `(batch, C')` in
        the layer's compute dtype (it lives in `g`'s space; it has `C'`
        channels whether or not `l` was projected, since `C' == C` when not),
        and `attention` of shape `(batch, height, width)` in float32.

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> layer = keras_attn.layers.LTPAAttention("pc", "softmax")
    >>> g_a, attention = layer([np.ones((2, 8, 8, 16)), np.ones((2, 32))])
    >>> tuple(g_a.shape), tuple(attention.shape)
    ((2, 32), (2, 8, 8))

    Reference:
        Jetley, Lord, Lee, Torr. "Learn to Pay Attention". ICLR 2018.
        https://arxiv.org/abs/1804.02391
    """

    attention_kinds = ("spatial",)
    # int8 export: a softmax over h*w positions falls below int8's 1/256
    # step; the estimator stays float32.
    int8_keeps_float = True

    def __init__(self, compatibility="pc", normalization="softmax", **kwargs):
        check_choice(self, "compatibility", compatibility, COMPATIBILITIES)
        check_choice(self, "normalization", normalization, NORMALIZATIONS)
        super().__init__(**kwargs)
        self.compatibility = compatibility
        self.normalization = normalization
        self.projection = None
        self.u = None

    def _split_shapes(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(_is_shape(s) for s in input_shape)
        ):
            fail(
                self,
                "inputs",
                input_shape,
                "a list [l, g] of two tensors: local features (B, H, W, C) "
                "and a global vector (B, C')",
            )
        local_shape, global_shape = (tuple(s) for s in input_shape)
        channels = check_image_shape(self, local_shape, "inputs[0]")
        if len(global_shape) != 2 or global_shape[-1] is None:
            fail(
                self,
                "inputs[1] shape",
                global_shape,
                "rank 2 (batch, channels) with a known channel dimension",
            )
        return local_shape, global_shape, channels, int(global_shape[-1])

    def build(self, input_shape):
        _, _, channels, global_channels = self._split_shapes(input_shape)
        if channels != global_channels:
            # Project l into g's space (not g into l's) so every level of a
            # network attends in one shared space, as in the paper.
            self.projection = self.add_weight(
                name="projection",
                shape=(channels, global_channels),
                initializer="glorot_uniform",
                # Read in float32 under mixed precision: the layer computes
                # in float32 (see the module docstring).
                autocast=False,
            )
        if self.compatibility == "pc":
            self.u = self.add_weight(
                name="u",
                shape=(global_channels, 1),
                initializer="glorot_uniform",
                autocast=False,
            )
        self.built = True

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            fail(
                self,
                "inputs",
                type(inputs).__name__,
                "a list [l, g] of two tensors",
            )
        local = ops.cast(inputs[0], "float32")
        global_ = ops.cast(inputs[1], "float32")
        if self.projection is not None:
            local = ops.matmul(local, self.projection)  # (B, H, W, C')
        if self.compatibility == "pc":
            scores = ops.squeeze(
                ops.matmul(local, self.u), axis=-1
            )  # (B, H, W)
            offset = ops.matmul(global_, self.u)  # (B, 1)
            scores = scores + offset[:, :, None]
        else:
            scores = ops.sum(
                local * global_[:, None, None, :], axis=-1
            )  # (B, H, W)
        if self.normalization == "softmax":
            attention = spatial_softmax_f32(scores)
            pooled = ops.sum(local * attention[..., None], axis=(1, 2))
        else:
            attention = ops.sigmoid(scores)
            pooled = ops.mean(local * attention[..., None], axis=(1, 2))
        # (B, C'), (B, H, W)
        return ops.cast(pooled, self.compute_dtype), attention

    def compute_output_shape(self, input_shape):
        local_shape, global_shape, _, _ = self._split_shapes(input_shape)
        return (
            (local_shape[0], global_shape[-1]),
            tuple(local_shape[:3]),
        )

    def compute_output_spec(self, inputs):
        if isinstance(inputs, (list, tuple)):
            shapes = [tuple(t.shape) for t in inputs]
        else:
            shapes = tuple(getattr(inputs, "shape", inputs))
        pooled_shape, map_shape = self.compute_output_shape(shapes)
        return (
            keras.KerasTensor(pooled_shape, dtype=self.compute_dtype),
            keras.KerasTensor(map_shape, dtype="float32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "compatibility": self.compatibility,
                "normalization": self.normalization,
            }
        )
        return config
