"""Expose the attention maps a model computes, for plotting.

Model builders in `keras_attn.models` call every attention layer with its
maps switched on and keep them in the graph; this module turns them into the
outputs of a second model that shares the weights of the first.
"""

from __future__ import annotations

import keras


def _is_keras_attn_layer(layer):
    return type(layer).__module__.startswith("keras_attn.layers")


def attention_outputs(model):
    """`{name: symbolic map}` for every attention map in `model`.

    A layer returning one map contributes `layer.name`; a layer returning
    several (CBAM: channel and spatial) contributes `layer.name_1`,
    `layer.name_2`, ... in the order the layer returns them.
    """
    maps = {}
    for layer in model.layers:
        if not _is_keras_attn_layer(layer) or not layer._inbound_nodes:
            continue
        outputs = layer.output
        if not isinstance(outputs, (list, tuple)):
            continue
        extra = list(outputs)[1:]
        if len(extra) == 1:
            maps[layer.name] = extra[0]
        else:
            for i, tensor in enumerate(extra, start=1):
                maps[f"{layer.name}_{i}"] = tensor
    return maps


def attention_model(model):
    """A model mapping `model.inputs` to a dict of its attention maps.

    Args:
        model: a functional model built by `keras_attn.models` (or any
            functional model calling keras_attn layers with their maps on).

    Returns:
        A `keras.Model` whose outputs are `{name: map}`, float32.

    Raises:
        ValueError: if the model computes no attention map (for example a
            no-attention baseline).

    Example:
    >>> model = keras_attn.models.resnet((32, 32, 3), 10, 20, attention="cbam")
    >>> maps = keras_attn.models.attention_model(model)(images)
    >>> maps["stage1_block1_cbam_2"].shape  # spatial map (B, 32, 32)
    """
    maps = attention_outputs(model)
    if not maps:
        raise ValueError(
            f"attention_model: model {model.name!r} computes no attention map "
            "(is it a no-attention baseline?). Build it with attention on."
        )
    return keras.Model(model.inputs, maps, name=f"{model.name}_attention")
