"""Numerics shared by the attention layers.

Gates and softmaxes are computed in float32 even under a `mixed_float16`
policy, because float16 `exp` overflows at logits above ~11.
"""

from __future__ import annotations

import keras
from keras import ops

# Added to the logits of positions a softmax must ignore (neighbours outside
# the window or the image). Far below any finite float32 logit a layer can
# produce, yet finite, so that no `inf - inf` appears: a masked weight is
# `exp(-1e30 - max)`, exactly 0.
MASK_LOGIT = -1e30


def sigmoid_f32(logits):
    """Sigmoid in float32: the gate keeps full precision under mixed float16."""
    return ops.sigmoid(ops.cast(logits, "float32"))


def gate_f32(activation, logits):
    """Apply a gate activation to float32 logits."""
    return keras.activations.get(activation)(ops.cast(logits, "float32"))


def spatial_softmax_f32(logits):
    """Softmax over all positions of `(B, H, W)` logits, in float32.

    Subtracting the per-image maximum (done by `ops.softmax`) keeps large
    logits finite; the result sums to one over space for every image.
    """
    logits = ops.cast(logits, "float32")
    shape = ops.shape(logits)
    flat = ops.reshape(logits, (shape[0], -1))  # (B, H*W)
    return ops.reshape(ops.softmax(flat, axis=-1), shape)
