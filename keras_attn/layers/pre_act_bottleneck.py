"""Pre-activation bottleneck residual unit.

The building block of the Residual Attention Network
([Wang et al., 2017](https://arxiv.org/abs/1704.06904)), taken from
"Identity Mappings in Deep Residual Networks"
([He et al., 2016](https://arxiv.org/abs/1603.05027)).

Deviations from the reference code:
- Convolutions use Keras' `padding="same"`. For a stride-2 3x3 convolution on
  an even-sized input TensorFlow pads one pixel at the bottom/right only,
  whereas the PyTorch port (tengshaofeng/ResidualAttentionNetwork-pytorch)
  pads one pixel on every side; output sizes agree, pixel alignment differs
  by half a pixel.
- The projection shortcut is used when the channel count changes *or* the
  stride is not 1 (as in the PyTorch port); it reads the pre-activated input,
  as in the pre-activation ResNet.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attn.utils.validation import check_image_shape
from keras_attn.utils.validation import check_positive_int
from keras_attn.utils.validation import fail


def check_bottleneck_filters(layer, filters):
    """`filters` of a `PreActBottleneck`: an integer >= 4 divisible by 4,
    since the bottleneck runs at `filters // 4` channels. `layer` names the
    caller in the error (see `keras_attn.utils.validation.fail`)."""
    check_positive_int(layer, "filters", filters, minimum=4)
    if filters % 4:
        fail(
            layer,
            "filters",
            filters,
            "an integer >= 4 divisible by 4 (the bottleneck uses filters/4 "
            f"channels), e.g. {filters + 4 - filters % 4}",
        )
    return filters


@keras.saving.register_keras_serializable(package="keras_attn")
class PreActBottleneck(keras.layers.Layer):
    """Pre-activation bottleneck residual unit (channels last only).

    Computes `y = shortcut(x) + F(x)` with the residual branch
    `F = BN-ReLU-Conv1x1(filters/4)-BN-ReLU-Conv3x3(filters/4, strides)-
    BN-ReLU-Conv1x1(filters)`, as in the pre-activation ResNet
    ([He et al., 2016](https://arxiv.org/abs/1603.05027)) used by the
    Residual Attention Network
    ([Wang et al., 2017](https://arxiv.org/abs/1704.06904)). The shortcut is
    the identity when the input has `filters` channels and `strides == 1`;
    otherwise it is a bias-free 1x1 convolution (with `strides`) applied to
    the first BN-ReLU output. Convolutions have no bias (each is followed by
    batch normalization or the residual sum) and use `he_normal`
    initialization.

    Args:
        filters: number of output channels; an integer >= 4 divisible by 4
            (the bottleneck has `filters // 4` channels).
        strides: stride of the 3x3 convolution (and of the projection), an
            integer >= 1.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        inputs: a `(batch, height, width, channels)` tensor.
        training: Python bool; batch normalization uses batch statistics
            when True and its moving averages otherwise.

    Returns:
        A `(batch, ceil(height / strides), ceil(width / strides), filters)`
        tensor.

    Example:
    >>> import numpy as np
    >>> import keras_attn
    >>> unit = keras_attn.layers.PreActBottleneck(64, strides=2)
    >>> tuple(unit(np.ones((2, 16, 16, 32))).shape)
    (2, 8, 8, 64)

    Reference:
        [He et al., 2016](https://arxiv.org/abs/1603.05027),
        [Wang et al., 2017](https://arxiv.org/abs/1704.06904)
    """

    def __init__(self, filters, strides=1, **kwargs):
        check_bottleneck_filters(self, filters)
        check_positive_int(self, "strides", strides)
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides

    def _bn(self, name):
        return keras.layers.BatchNormalization(
            epsilon=1e-5, name=name, dtype=self.dtype_policy
        )

    def _conv(self, filters, kernel_size, strides, name):
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=name,
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        channels = check_image_shape(self, input_shape)
        shape = tuple(input_shape)
        mid = self.filters // 4
        self.bn1 = self._bn("bn1")
        self.conv1 = self._conv(mid, 1, 1, "conv1")
        self.bn2 = self._bn("bn2")
        self.conv2 = self._conv(mid, 3, self.strides, "conv2")
        self.bn3 = self._bn("bn3")
        self.conv3 = self._conv(self.filters, 1, 1, "conv3")
        self.bn1.build(shape)
        self.conv1.build(shape)
        mid_shape = shape[:-1] + (mid,)
        self.bn2.build(mid_shape)
        self.conv2.build(mid_shape)
        out_shape = self.compute_output_shape(shape)
        strided_mid = out_shape[:-1] + (mid,)
        self.bn3.build(strided_mid)
        self.conv3.build(strided_mid)
        self.use_projection = channels != self.filters or self.strides != 1
        if self.use_projection:
            self.shortcut = self._conv(
                self.filters, 1, self.strides, "shortcut"
            )
            self.shortcut.build(shape)
        else:
            self.shortcut = None

    def call(self, inputs, training=None):
        pre = ops.relu(self.bn1(inputs, training=training))
        x = self.conv1(pre)
        x = self.conv2(ops.relu(self.bn2(x, training=training)))
        x = self.conv3(ops.relu(self.bn3(x, training=training)))
        shortcut = self.shortcut(pre) if self.use_projection else inputs
        return x + ops.cast(shortcut, x.dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width = tuple(input_shape)[:3]

        def down(size):
            # "same" padding: ceil(size / strides)
            return None if size is None else -(-size // self.strides)

        return (batch, down(height), down(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides})
        return config
