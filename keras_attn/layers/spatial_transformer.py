"""Spatial Transformer: a learned affine warp of the input image.

Paper: Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer
Networks", NIPS 2015, https://arxiv.org/abs/1506.02025

A localisation network regresses the transform parameters from the input,
the grid generator maps the output grid through the transform (Eq. 1) and a
bilinear sampler reads the input there (Eq. 5); see
`keras_attn.ops.affine_grid` / `keras_attn.ops.bilinear_sample` for the
coordinate convention (normalised, "corners" / `align_corners=True`).

Follows the paper; choices and deviations stated plainly:

- The transform head (a `Dense` appended to the localisation network) starts
  at the identity (zero kernel, identity bias), as in the paper's appendix
  and every working port, so an untrained transformer passes the input
  through unchanged (exactly, see the sampler's snapping note).
- Parametrisations: `"affine"` (6 parameters, paper Eq. 1), `"similarity"`
  (scale, angle, tx, ty) and `"translation_scale"` (the paper's "attention"
  transform `[[s, 0, tx], [0, s, ty]]`). The paper's projective and
  thin-plate-spline transforms are not implemented.
- The default localisation net resizes the input (bilinear) to 32x32
  (`LOCALIZATION_SIZE`), then Conv 8 5x5 ReLU, max-pool 2, Conv 10 5x5
  ReLU, max-pool 2, Flatten, Dense 32 tanh: in the spirit of the PyTorch
  STN tutorial; the paper's nets vary per experiment. The paper's nets keep
  the spatial layout (fully connected layers on the image or on a small conv
  feature map), and so does this one: to move the window onto the object,
  theta must depend on *where* the object is, and Flatten keeps that while
  global average pooling (this package's earlier default) discards it: with
  it, theta came out the same for every image. The fixed resize (not
  pooling at the end) lets it run on any input size, and is a TFLite
  builtin (`RESIZE_BILINEAR`).
- The default localisation net, the transform head and the sampler run in
  float32 under mixed precision (sampling coordinates in float16 would be
  off by up to a pixel on large images, and float16 features overflow on
  large inputs); the warped image is cast back to the compute dtype. A
  user-given localisation net keeps its own dtype policy.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attn import ops as attn_ops
from keras_attn.ops.spatial_sampling import PADDINGS
from keras_attn.utils import validation

TRANSFORMS = ("affine", "similarity", "translation_scale")
_IDENTITY = {
    "affine": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    "similarity": [1.0, 0.0, 0.0, 0.0],  # scale, angle, tx, ty
    "translation_scale": [1.0, 0.0, 0.0],  # scale, tx, ty
}


def _check_output_size(layer, value):
    if value is None:
        return None
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for v in value
        )
    )
    if not ok:
        validation.fail(
            layer, "output_size", value, "None or (height, width), ints >= 1"
        )
    return tuple(value)


# The default localisation net sees the input resized to this fixed grid.
LOCALIZATION_SIZE = 32


def _default_localization(dtype):
    """Conv net that keeps *where* things are, on any input size.

    Resizing to a fixed grid (rather than global pooling at the end) makes
    the flattened feature size independent of the input size, and Flatten
    keeps the position of every feature: the head can regress a translation
    only from features that move with the object. Global average pooling of
    a translation-equivariant conv stack is (away from the borders) the same
    wherever the object sits, so theta could not follow it.
    """
    return keras.Sequential(
        [
            # Bilinear without antialiasing: a TFLite builtin
            # (RESIZE_BILINEAR); antialiasing or "area" are not. Coarse
            # position is all the head needs, so aliasing on large inputs is
            # an acceptable cost.
            keras.layers.Resizing(
                LOCALIZATION_SIZE, LOCALIZATION_SIZE,
                interpolation="bilinear", dtype=dtype,
            ),
            keras.layers.Conv2D(8, 5, activation="relu", dtype=dtype),
            keras.layers.MaxPooling2D(2, dtype=dtype),  # 28 -> 14
            keras.layers.Conv2D(10, 5, activation="relu", dtype=dtype),
            keras.layers.MaxPooling2D(2, dtype=dtype),  # 10 -> 5
            keras.layers.Flatten(dtype=dtype),  # 5 * 5 * 10 = 250
            # tanh, not ReLU: a ReLU unit that turns negative on every
            # input gets no gradient again. The former default ended with
            # 97% of these outputs at zero after 3 epochs of cluttered60,
            # and theta the same for every image. A tanh unit keeps a
            # gradient wherever it is not saturated, and with Keras'
            # default init (Glorot uniform, zero bias) the units start in
            # the linear range: mean |output| ~0.1 on [0, 1] images. Measured
            # once (150 steps of 64 on cluttered60, seed 0): with ReLU here
            # 3 of 32 units ended dead and 51% test accuracy, with tanh
            # none saturated and 57%.
            keras.layers.Dense(32, activation="tanh", dtype=dtype),
        ],
        name="localization",
    )


@keras.saving.register_keras_serializable(package="keras_attn")
class SpatialTransformer(keras.layers.Layer):
    """Spatial Transformer: warp the input by a transform regressed from it.

    [Jaderberg et al., 2015](https://arxiv.org/abs/1506.02025): a
    localisation net `f_loc` and a linear head give `theta = W f_loc(U) + b`;
    every output pixel `(x_t, y_t)` reads the input `U` at
    `(x_s, y_s) = theta @ (x_t, y_t, 1)` (Eq. 1) with bilinear
    interpolation (Eq. 5), in normalised coordinates where `-1` / `+1` are
    the centres of the first / last pixel. The head starts at the identity,
    so an untrained layer returns its input. Channels-last inputs only.

    Args:
        localization: optional Keras layer or model mapping the input images
            `(batch, H, W, C)` to features `(batch, F)`. Defaults to a small
            conv net (see the module docstring).
        output_size: optional `(height, width)` of the output. Defaults to
            the input size (then it must be known when the layer is built).
        transform: `"affine"` (6 parameters), `"similarity"` (scale `s`,
            angle `a`, `tx`, `ty`: `[[s cos a, -s sin a, tx],
            [s sin a, s cos a, ty]]`) or `"translation_scale"` (`s`, `tx`,
            `ty`: `[[s, 0, tx], [0, s, ty]]`). Defaults to `"affine"`.
        padding: `"zeros"` (outside the input reads 0) or `"border"` (edge
            pixels repeat). Defaults to `"zeros"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.
        return_theta: if `True`, also return the affine matrices.

    Returns:
        The warped images `(batch, out_height, out_width, channels)`, or
        `(output, theta)` with `return_theta=True`, `theta` of shape
        `(batch, 2, 3)` in float32.

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> layer = keras_attn.layers.SpatialTransformer(output_size=(16, 16))
    >>> y, theta = layer(np.ones((2, 28, 28, 1)), return_theta=True)
    >>> tuple(y.shape), tuple(theta.shape)
    ((2, 16, 16, 1), (2, 2, 3))

    Reference:
    - [Jaderberg et al., 2015](https://arxiv.org/abs/1506.02025)
    """

    attention_kinds = ("none",)  # theta: not a map over pixels
    # int8 export: int8 sampling coordinates move in 1/8-pixel steps.
    int8_keeps_float = True

    def __init__(
        self,
        localization=None,
        output_size=None,
        transform="affine",
        padding="zeros",
        **kwargs,
    ):
        if localization is not None and not isinstance(
            localization, keras.layers.Layer
        ):
            validation.fail(
                self, "localization", localization,
                "None or a Keras layer / model mapping images to (batch, F)",
            )
        output_size = _check_output_size(self, output_size)
        validation.check_choice(self, "transform", transform, TRANSFORMS)
        validation.check_choice(self, "padding", padding, PADDINGS)
        super().__init__(**kwargs)
        self.localization = localization
        self.output_size = output_size
        self.transform = transform
        self.padding = padding

    @property
    def num_parameters(self):
        """Number of transform parameters the head regresses."""
        return len(_IDENTITY[self.transform])

    def _target_size(self, input_shape):
        if self.output_size is not None:
            return self.output_size
        return tuple(input_shape[1:3])

    def build(self, input_shape):
        validation.check_image_shape(self, input_shape)
        if self.output_size is None and None in tuple(input_shape[1:3]):
            validation.fail(
                self,
                "output_size",
                None,
                "(height, width) when the input size is not known at build "
                f"(input shape {tuple(input_shape)})",
            )
        if self.localization is None:
            # float32 even under mixed precision: it is small, and float16
            # overflow or rounding in its features would move every sample.
            self.localization = _default_localization("float32")
            self._owns_localization = True
        if not self.localization.built:
            self.localization.build(tuple(input_shape))
        features = self.localization.compute_output_shape(tuple(input_shape))
        if len(features) != 2 or features[-1] is None:
            validation.fail(
                self,
                "localization",
                f"a net with output shape {tuple(features)}",
                "a net whose output is (batch, features), features known",
            )
        # float32 head: theta sets sampling coordinates, which float16
        # would round by up to a pixel on large images.
        self.head = keras.layers.Dense(
            self.num_parameters,
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(
                _IDENTITY[self.transform]
            ),
            dtype="float32",
            name="transform_head",
        )
        self.head.build((input_shape[0], int(features[-1])))

    def theta_from_parameters(self, params):
        """The `(batch, 2, 3)` affine matrices of head outputs `params`."""
        params = ops.cast(params, "float32")
        if self.transform == "affine":
            return ops.reshape(params, (-1, 2, 3))
        zero = ops.zeros_like(params[:, 0])
        if self.transform == "similarity":
            scale, angle = params[:, 0], params[:, 1]
            tx, ty = params[:, 2], params[:, 3]
            cos, sin = scale * ops.cos(angle), scale * ops.sin(angle)
            rows = [cos, -sin, tx, sin, cos, ty]
        else:
            scale, tx, ty = params[:, 0], params[:, 1], params[:, 2]
            rows = [scale, zero, tx, zero, scale, ty]
        return ops.reshape(ops.stack(rows, axis=-1), (-1, 2, 3))

    def call(self, inputs, return_theta=False):
        features = self.localization(inputs)
        params = self.head(ops.cast(features, "float32"))
        theta = self.theta_from_parameters(params)  # (B, 2, 3) float32
        if self.output_size is not None:
            height, width = self.output_size
        else:
            height, width = inputs.shape[1], inputs.shape[2]
        grid = attn_ops.affine_grid(theta, height, width)  # (B, h, w, 2)
        outputs = attn_ops.bilinear_sample(
            ops.cast(inputs, "float32"), grid, padding=self.padding
        )
        outputs = ops.cast(outputs, self.compute_dtype)
        if return_theta:
            return outputs, theta
        return outputs

    def compute_output_shape(self, input_shape):
        height, width = self._target_size(input_shape)
        return (input_shape[0], height, width, input_shape[-1])

    def compute_output_spec(self, inputs, return_theta=False):
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_theta:
            return outputs
        theta = keras.KerasTensor((inputs.shape[0], 2, 3), dtype="float32")
        return outputs, theta

    def get_config(self):
        config = super().get_config()
        localization = None
        if not getattr(self, "_owns_localization", False):
            localization = self.localization
        config.update(
            {
                "localization": None
                if localization is None
                else keras.saving.serialize_keras_object(localization),
                "output_size": None
                if self.output_size is None
                else list(self.output_size),
                "transform": self.transform,
                "padding": self.padding,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("localization") is not None:
            config["localization"] = keras.saving.deserialize_keras_object(
                config["localization"]
            )
        return cls(**config)
