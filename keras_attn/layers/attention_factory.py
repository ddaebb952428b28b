"""Attention factory: build an attention layer from a short spec.

A timm-style registry (`timm/layers/create_attn.py`) in Keras form: model
builders take an `attention=` argument (`None`, `"se"`, `"cbam"`, a layer
class or a layer instance) and call `get_attention` once per block. Unlike
timm no channel count is passed: Keras layers infer it in `build`.
"""

from __future__ import annotations

import keras

from keras_attn.layers.cbam import CBAM
from keras_attn.layers.cbam import ChannelAttention
from keras_attn.layers.cbam import SpatialAttention
from keras_attn.layers.squeeze_excite import SqueezeExcite
from keras_attn.utils import validation

_REGISTRY = {
    "se": SqueezeExcite,
    "cbam": CBAM,
    "channel": ChannelAttention,
    "spatial": SpatialAttention,
}


def available_attentions():
    """The registered attention names, sorted."""
    return sorted(_REGISTRY)


def registered_name(layer_class):
    """The name `layer_class` is registered under (`SqueezeExcite` ->
    `"se"`), or `None` for a class not in the registry."""
    for name, registered in _REGISTRY.items():
        if registered is layer_class:
            return name
    return None


def get_attention(identifier, **kwargs):
    """A new attention layer for `identifier`, or `None` for no attention.

    Args:
        identifier: what to build.
            - `None` or `False`: no attention, returns `None`.
            - `True`: `SqueezeExcite` (as timm).
            - a registered name (case-insensitive), see
              `available_attentions()`: `"se"`, `"cbam"`, `"channel"`,
              `"spatial"`.
            - a `keras.layers.Layer` subclass: instantiated with `**kwargs`.
            - a `keras.layers.Layer` instance: used as a template. A fresh,
              unbuilt layer is made from its `get_config()` (with its `name`
              dropped and `**kwargs` overriding the config), so one spec can
              be used for many blocks without sharing weights. To share one
              layer (and its weights), call the instance yourself instead.
        **kwargs: constructor arguments (e.g. `reduction=16`, `name=...`);
            ignored when `identifier` is `None` or `False`.

    Returns:
        A new `keras.layers.Layer`, or `None`.

    Raises:
        ValueError: for an unknown name or an unsupported identifier type.

    Example:
    >>> import keras_attn
    >>> keras_attn.layers.get_attention("se", reduction=16)
    <SqueezeExcite name=..., built=False>
    >>> keras_attn.layers.get_attention(None) is None  # no attention
    True
    >>> keras_attn.layers.get_attention(keras_attn.layers.CBAM(reduction=8))
    <CBAM name=..., built=False>
    """
    if identifier is None or identifier is False:
        return None
    if identifier is True:
        return SqueezeExcite(**kwargs)
    if isinstance(identifier, str):
        cls = _REGISTRY.get(identifier.lower())
        if cls is None:
            validation.fail(
                "get_attention",
                "identifier",
                identifier,
                f"None, a bool, a Layer class or instance, or one of "
                f"{available_attentions()}",
            )
        return cls(**kwargs)
    if isinstance(identifier, type) and issubclass(
        identifier, keras.layers.Layer
    ):
        return identifier(**kwargs)
    if isinstance(identifier, keras.layers.Layer):
        config = identifier.get_config()
        config.pop("name", None)
        config.update(kwargs)
        return type(identifier).from_config(config)
    validation.fail(
        "get_attention",
        "identifier",
        identifier,
        f"None, a bool, a Layer class or instance, or one of "
        f"{available_attentions()}",
    )
