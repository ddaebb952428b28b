"""Differentiable image operations written in `keras.ops` (any backend)."""
from keras_attn.ops.map_reduction import reduce_attention_map
from keras_attn.ops.spatial_sampling import affine_grid
from keras_attn.ops.spatial_sampling import bilinear_sample

__all__ = ["affine_grid", "bilinear_sample", "reduce_attention_map"]
