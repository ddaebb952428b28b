"""Differentiable image operations written in `keras.ops` (any backend)."""
from keras_attn.ops.spatial_sampling import affine_grid
from keras_attn.ops.spatial_sampling import bilinear_sample

__all__ = ["affine_grid", "bilinear_sample"]
