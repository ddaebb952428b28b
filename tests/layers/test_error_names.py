"""Every layer names itself one way in its argument errors: by its class.

Layers pass `self` to `keras_attn.utils.validation`, which writes
`type(self).__name__` (see its module docstring), so the message starts with
the class name, and a subclass is named as itself rather than as the class
it extends.
"""

import pytest

from keras_attn import layers
from keras_attn import ram

# (class, constructor arguments with one bad value, the bad argument)
BAD_ARGUMENTS = [
    (layers.AttentionAugmentedConv2D, dict(filters=1, kernel_size=3,
                                           key_depth=8, value_depth=8,
                                           num_heads=1), "filters"),
    (layers.AttentionStem, dict(filters=0), "filters"),
    (layers.CBAM, dict(reduction=0), "reduction"),
    (layers.ChannelAttention, dict(reduction=0), "reduction"),
    (layers.LocalSelfAttention2D, dict(filters=0, kernel_size=3), "filters"),
    (layers.LTPAAttention, dict(compatibility="cos"), "compatibility"),
    (layers.PreActBottleneck, dict(filters=6), "filters"),
    (layers.ResidualAttentionModule, dict(filters=6), "filters"),
    (layers.SpatialAttention, dict(kernel_size=4), "kernel_size"),
    (layers.SpatialTransformer, dict(transform="projective"), "transform"),
    (layers.SqueezeExcite, dict(reduction=0), "reduction"),
    (ram.GlimpseSensor, dict(glimpse_size=0), "glimpse_size"),
    (ram.GlimpseNetwork, dict(units=0), "units"),
    (ram.CoreNetwork, dict(units=0), "units"),
    (ram.LocationNetwork, dict(hidden_units=-1), "hidden_units"),
    (ram.RecurrentAttentionModel, dict(num_classes=1), "num_classes"),
]


@pytest.mark.parametrize(
    "cls, kwargs, argument", BAD_ARGUMENTS, ids=lambda v: getattr(
        v, "__name__", None)
)
def test_error_names_the_class(cls, kwargs, argument):
    with pytest.raises(ValueError,
                       match=f"^{cls.__name__}: invalid `{argument}`"):
        cls(**kwargs)


@pytest.mark.parametrize(
    "cls, kwargs, argument", BAD_ARGUMENTS, ids=lambda v: getattr(
        v, "__name__", None)
)
def test_subclass_errors_name_the_subclass(cls, kwargs, argument):
    subclass = type(f"My{cls.__name__}", (cls,), {})
    with pytest.raises(ValueError,
                       match=f"^My{cls.__name__}: invalid `{argument}`"):
        subclass(**kwargs)
