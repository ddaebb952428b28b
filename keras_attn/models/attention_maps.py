"""Expose the attention maps a model computes, for plotting.

Model builders in `keras_attn.models` call every attention layer with its
maps switched on and keep them in the graph; this module turns them into the
outputs of a second model that shares the weights of the first.
"""

from __future__ import annotations

import keras


def _is_keras_attn_layer(layer):
    return type(layer).__module__.startswith("keras_attn.layers")


def attention_map_layers(model):
    """`[(name, layer, index)]` for every attention map in `model`.

    In model order, one entry per map: `name` is the map's key in
    `attention_outputs`, `layer` the keras_attn layer computing it and
    `index` the map's position among the maps that layer returns (0 for the
    first: CBAM's channel map; 1 for its spatial map).
    """
    found = []
    for layer in model.layers:
        if not _is_keras_attn_layer(layer) or not layer._inbound_nodes:
            continue
        outputs = layer.output
        if not isinstance(outputs, (list, tuple)):
            continue
        extra = len(outputs) - 1
        if extra == 1:
            found.append((layer.name, layer, 0))
        else:
            found.extend(
                (f"{layer.name}_{i + 1}", layer, i) for i in range(extra)
            )
    return found


def attention_outputs(model):
    """`{name: symbolic map}` for every attention map in `model`.

    A layer returning one map contributes `layer.name`; a layer returning
    several (CBAM: channel and spatial) contributes `layer.name_1`,
    `layer.name_2`, ... in the order the layer returns them.
    """
    return {
        name: list(layer.output)[index + 1]
        for name, layer, index in attention_map_layers(model)
    }


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
    >>> import numpy as np
    >>> import keras_attn
    >>> model = keras_attn.models.resnet((32, 32, 3), 10, 20, attention="cbam")
    >>> maps = keras_attn.models.attention_model(model)(np.ones((2, 32, 32, 3)))
    >>> tuple(maps["stage1_block1_cbam_2"].shape)  # a spatial map
    (2, 32, 32)
    """
    maps = attention_outputs(model)
    if not maps:
        raise ValueError(
            f"attention_model: model {model.name!r} computes no attention map "
            "(is it a no-attention baseline?). Build it with attention on."
        )
    return keras.Model(model.inputs, maps, name=f"{model.name}_attention")
