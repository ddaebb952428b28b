"""Glimpse sensor: the multi-resolution "retina" of the Recurrent Attention
Model.

Paper: Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual
Attention", NIPS 2014, https://arxiv.org/abs/1406.6247 (Sec. 3.1, "Sensor").

The sensor `rho(x_t, l_{t-1})` extracts `k` square patches centred at the
location `l` from the image; patch `i` (0-based) is `s^i` times wider than
the first, and every patch is resized to `g x g`, so the sensor sees a
high-resolution fovea and a low-resolution periphery.

How the patches are computed (exactly "crop, then shrink by block mean"):

- A location `(x, y)` in `[-1, 1]^2` is a point of the image in the "corners"
  convention of `keras_attn.ops` (`x = -1` / `+1` are the centres of the
  first / last column): pixel column `u = (x + 1) (W - 1) / 2`, row
  `v = (y + 1) (H - 1) / 2`. `x` is horizontal, `y` vertical.
- Patch `i` has side `P_i = g s^i` pixels and is centred at `(u, v)`: its
  pixel `j` (0-based) reads column `u + j - (P_i - 1) / 2`. It is read with
  the bilinear sampler (`affine_grid` with the scaled translation
  `theta_i = [[(P_i - 1) / (W - 1), 0, x], [0, (P_i - 1) / (H - 1), y]]`,
  then `bilinear_sample(..., padding="zeros")`), so every point outside the
  image reads 0, and a location whose patch starts on an integer pixel
  reproduces the crop exactly.
- The `P_i x P_i` patch is shrunk to `g x g` by the mean of each
  `s^i x s^i` block (area resizing), which equals cropping at full
  resolution then down-scaling by averaging.

Built from gathers and means only: no `tf.image.extract_glimpse` (not
convertible to TFLite, not even with Flex ops), no Python loop over the
batch. Runs on every Keras backend.

Shapes: images `(batch, H, W, C)` (channels last, `H, W >= 2`), locations
`(batch, 2)` as `(x, y)`; output `(batch, num_scales, g, g, C)`.

Usage:
>>> import numpy as np
>>> from keras_attn.ram import GlimpseSensor
>>> images, locations = np.ones((2, 28, 28, 1)), np.zeros((2, 2))
>>> sensor = GlimpseSensor(glimpse_size=8, num_scales=3, scale_factor=2)
>>> patches = sensor(images, locations)
>>> tuple(patches.shape)  # (batch, num_scales, g, g, C)
(2, 3, 8, 8, 1)

Deviations, stated plainly:

- `scale_factor` must be an integer (the paper uses 2), so that the block
  mean is exact; the paper does not say how patches are resized.
- For an even patch side the centre of the patch lies between pixels, so
  at a location on a pixel centre the patch reads half-pixel positions
  (each value averages two neighbours per axis). The geometry stays exactly
  centred, which `tf.image.extract_glimpse` (window starting at
  `centre - P / 2`) is not.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attn.ops.spatial_sampling import affine_grid
from keras_attn.ops.spatial_sampling import bilinear_sample
from keras_attn.utils import validation


@keras.saving.register_keras_serializable(package="keras_attn")
class GlimpseSensor(keras.layers.Layer):
    """Multi-resolution retina `rho(x, l)` of the Recurrent Attention Model.

    [Mnih et al., 2014](https://arxiv.org/abs/1406.6247): `num_scales`
    square patches centred at `l`, of sides `g, g s, g s^2, ...` pixels, each
    reduced to `g x g` by block averaging. See the module docstring for the
    exact coordinate convention; outside the image reads 0.

    Args:
        glimpse_size: integer `g >= 1`, side of every output patch.
        num_scales: integer `k >= 1`, number of patches.
        scale_factor: integer `s >= 1`, ratio of consecutive patch sides.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: images `(batch, H, W, C)`, channels last, `H, W >= 2`, or
            the list `[images, locations]`.
        locations: `(batch, 2)`, `(x, y)` in `[-1, 1]` (values beyond are
            allowed and read zero padding); omit it when `inputs` is a
            list.

    Returns:
        `(batch, num_scales, g, g, C)` in the layer's compute dtype.

    Example:
    >>> import numpy as np
    >>> from keras_attn.ram import GlimpseSensor
    >>> sensor = GlimpseSensor(glimpse_size=8, num_scales=3)
    >>> tuple(sensor(np.ones((2, 28, 28, 1)), np.zeros((2, 2))).shape)
    (2, 3, 8, 8, 1)
    """

    # int8 export: int8 glimpse coordinates move in 1/8-pixel steps.
    int8_keeps_float = True

    def __init__(self, glimpse_size=8, num_scales=3, scale_factor=2,
                 **kwargs):
        validation.check_positive_int(self, "glimpse_size", glimpse_size)
        validation.check_positive_int(self, "num_scales", num_scales)
        validation.check_positive_int(self, "scale_factor", scale_factor)
        super().__init__(**kwargs)
        self.glimpse_size = glimpse_size
        self.num_scales = num_scales
        self.scale_factor = scale_factor

    @property
    def patch_sizes(self):
        """Side in image pixels of every patch, finest first."""
        return [
            self.glimpse_size * self.scale_factor**i
            for i in range(self.num_scales)
        ]

    def _check_shapes(self, images_shape, locations_shape):
        validation.check_image_shape(self, images_shape, "images")
        for axis, label in ((1, "height"), (2, "width")):
            size = images_shape[axis]
            if size is not None and size < 2:
                validation.fail(
                    self, f"images {label}", size,
                    "an image at least 2 pixels high and wide",
                )
        if len(locations_shape) != 2 or locations_shape[-1] != 2:
            validation.fail(
                self, "locations shape", tuple(locations_shape),
                "(batch, 2) holding (x, y)",
            )

    def _split(self, inputs, locations):
        # Accept `sensor(images, locations)` and `sensor([images,
        # locations])` (the form functional models and `harness.wrap` use).
        if locations is None:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
                validation.fail(
                    self, "inputs", type(inputs).__name__,
                    "sensor(images, locations) or sensor([images, "
                    "locations])",
                )
            return inputs[0], inputs[1]
        return inputs, locations

    def build(self, inputs_shape, locations_shape=None):
        images_shape, locations_shape = self._split(
            inputs_shape, locations_shape
        )
        self._check_shapes(tuple(images_shape), tuple(locations_shape))
        self.built = True

    def call(self, inputs, locations=None):
        images, locations = self._split(inputs, locations)
        # The sampler works in float32 (coordinates in float16 would be off
        # by a pixel on large images); the result goes back to the compute
        # dtype at the end.
        images = ops.cast(images, "float32")
        locations = ops.cast(locations, "float32")
        shape = ops.shape(images)
        height, width = images.shape[1], images.shape[2]
        if height is None or width is None:
            height, width = shape[1], shape[2]
        channels = images.shape[3]
        g = self.glimpse_size
        x = locations[:, 0:1]
        y = locations[:, 1:2]
        zero = ops.zeros_like(x)
        patches = []
        for patch in self.patch_sizes:
            sx = ops.cast((patch - 1) / (width - 1), "float32") + zero
            sy = ops.cast((patch - 1) / (height - 1), "float32") + zero
            theta = ops.concatenate([sx, zero, x, zero, sy, y], axis=-1)
            grid = affine_grid(theta, patch, patch)
            crop = bilinear_sample(images, grid, padding="zeros")
            block = patch // g
            if block > 1:
                # (B, g, block, g, block, C): mean of each block = area
                # down-scaling of the crop.
                crop = ops.reshape(crop, (-1, g, block, g, block, channels))
                crop = ops.mean(crop, axis=(2, 4))
            patches.append(crop)
        out = ops.stack(patches, axis=1)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, inputs_shape, locations_shape=None):
        images_shape, _ = self._split(inputs_shape, locations_shape)
        g = self.glimpse_size
        return (images_shape[0], self.num_scales, g, g, images_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            glimpse_size=self.glimpse_size,
            num_scales=self.num_scales,
            scale_factor=self.scale_factor,
        )
        return config

