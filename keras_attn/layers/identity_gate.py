"""IdentityGate: an attention module that starts as the identity.

Papers: the attention modules it wraps, e.g. Hu, Shen, Albanie, Sun, Wu,
"Squeeze-and-Excitation Networks", CVPR 2018,
https://arxiv.org/abs/1709.01507, and Woo, Park, Lee, Kweon, "CBAM:
Convolutional Block Attention Module", ECCV 2018,
https://arxiv.org/abs/1807.06521. The zero-initialised residual gate
follows Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018,
https://arxiv.org/abs/1711.07971 (Sec. 4.1: the block's last BatchNorm
scale starts at zero "so that the non-local block can be inserted into
any pre-trained networks while maintaining its initial behavior"), and
Bachlechner et al., "ReZero is All You Need", 2020,
https://arxiv.org/abs/2003.04887 (a scalar residual weight starting at 0).

`y = x + g * (A(x) - x)` with a learnable scalar `g` initialised at 0:
at initialisation `y = x` exactly (the same bits, since `0 * d = 0` for
every finite `d`), so inserting the module into a trained model leaves its
predictions unchanged; fine-tuning then moves `g` (its gradient is
`sum((A(x) - x) * dL/dy)`, non-zero from the first step) and, once `g` is
off zero, the attention's own weights. At `g = 1` the module is `A`
itself, as in the papers. Shapes: `(B, H, W, C) -> (B, H, W, C)`.

`keras_attn.models.add_attention` inserts these into existing models.
"""

from __future__ import annotations

import inspect

import keras
from keras import ops

from keras_attn.utils import validation


def _returns_maps(layer):
    """Whether `layer.call` takes `return_attention` (keras_attn layers)."""
    try:
        params = inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False
    return "return_attention" in params


@keras.saving.register_keras_serializable(package="keras_attn")
class IdentityGate(keras.layers.Layer):
    """Gate an attention module so that it starts as the identity.

    `y = x + g * (A(x) - x)` where `A` is the wrapped attention layer
    (`A(x)` is its refined output, e.g. SE's `x * s`) and `g` a learnable
    scalar initialised by `gate_initializer` (zeros: `y = x` at
    initialisation). The zero start is the one of non-local blocks
    ([Wang et al., 2018](https://arxiv.org/abs/1711.07971)) and ReZero
    ([Bachlechner et al., 2020](https://arxiv.org/abs/2003.04887)), applied
    to SE ([Hu et al., 2018](https://arxiv.org/abs/1709.01507)) or CBAM
    ([Woo et al., 2018](https://arxiv.org/abs/1807.06521)) modules, so they
    can be added to pretrained models without changing their outputs.
    The gate is stored in float32 and cast to the compute dtype; the
    wrapped layer computes its maps in float32 under mixed precision (all
    keras_attn attention layers do).

    Args:
        attention: a `keras.layers.Layer` whose output has its input's shape
            (e.g. `keras_attn.layers.SqueezeExcite()`). Tracked as
            `self.attention`; saved and loaded with the gate.
        gate_initializer: initializer of the scalar gate `g`. Defaults to
            `"zeros"` (the identity start); `"ones"` gives the bare
            attention.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor `(batch, height, width, channels)` (any shape the
            wrapped layer keeps).
        return_attention: if `True`, also return the wrapped layer's maps
            (only for layers that take `return_attention`, as keras_attn's
            attention layers do).

    Returns:
        `y` of the input's shape, or `(y, *maps)` with `return_attention=True`
        (SE: its `(B, C)` gate; CBAM: `(B, C)` and `(B, H, W)`), the maps of
        `A` itself, not scaled by `g`.

    Example:
    >>> import keras
    >>> import numpy as np
    >>> import keras_attn
    >>> gate = keras_attn.layers.IdentityGate(keras_attn.layers.CBAM(4))
    >>> y, mc, ms = gate(np.ones((2, 8, 8, 16)), return_attention=True)
    >>> bool((keras.ops.convert_to_numpy(y) == 1.0).all())  # the identity
    True
    >>> tuple(mc.shape), tuple(ms.shape)
    ((2, 16), (2, 8, 8))

    Reference:
    - [Wang et al., 2018](https://arxiv.org/abs/1711.07971)
    - [Hu et al., 2018](https://arxiv.org/abs/1709.01507)
    - [Woo et al., 2018](https://arxiv.org/abs/1807.06521)
    """

    @property
    def attention_kinds(self):
        """The wrapped layer's `attention_kinds` (what each map it returns
        is; see `keras_attn.ops.map_reduction`), or `None`."""
        return getattr(self.attention, "attention_kinds", None)

    def __init__(self, attention, gate_initializer="zeros", **kwargs):
        if not isinstance(attention, keras.layers.Layer):
            validation.fail(
                self,
                "attention",
                attention,
                "a keras.layers.Layer instance whose output has its "
                "input's shape, e.g. keras_attn.layers.SqueezeExcite()",
            )
        try:
            initializer = keras.initializers.get(gate_initializer)
        except (ValueError, TypeError):
            validation.fail(self, "gate_initializer",
                            gate_initializer,
                            "a Keras initializer name or instance, e.g. "
                            "'zeros'")
        super().__init__(**kwargs)
        self.attention = attention
        self.gate_initializer = initializer
        self.returns_maps = _returns_maps(attention)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if not self.attention.built:
            self.attention.build(input_shape)
        try:
            output_shape = self.attention.compute_output_shape(input_shape)
        except NotImplementedError:
            output_shape = input_shape
        if tuple(output_shape) != input_shape:
            validation.fail(
                self,
                "attention",
                f"{type(self.attention).__name__} mapping {input_shape} to "
                f"{tuple(output_shape)}",
                "a layer whose output has its input's shape (an attention "
                "module that rescales its input)",
            )
        self.gate = self.add_weight(
            name="gate",
            shape=(),
            initializer=self.gate_initializer,
            trainable=True,
            dtype="float32",
        )

    def _check_return_attention(self, return_attention):
        if return_attention and not self.returns_maps:
            validation.fail(
                self,
                "return_attention",
                return_attention,
                f"False: the wrapped {type(self.attention).__name__} "
                "returns no attention maps",
            )

    def call(self, inputs, return_attention=False):
        self._check_return_attention(return_attention)
        if self.returns_maps:
            outputs = self.attention(inputs, return_attention=True)
            attended, maps = outputs[0], tuple(outputs[1:])
        else:
            attended, maps = self.attention(inputs), ()
        gate = ops.cast(self.gate, inputs.dtype)
        delta = ops.cast(attended, inputs.dtype) - inputs
        outputs = inputs + gate * delta
        if return_attention:
            return (outputs, *maps)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, return_attention=False):
        self._check_return_attention(return_attention)
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention:
            return outputs
        spec = self.attention.compute_output_spec(inputs,
                                                  return_attention=True)
        return (outputs, *tuple(spec)[1:])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "attention": keras.saving.serialize_keras_object(
                    self.attention
                ),
                "gate_initializer": keras.initializers.serialize(
                    self.gate_initializer
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["attention"] = keras.saving.deserialize_keras_object(
            config["attention"]
        )
        return cls(**config)
