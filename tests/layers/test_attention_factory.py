"""Tests for `keras_attn.layers.get_attention` / `available_attentions`."""

import re

import keras
import numpy as np
import pytest

from keras_attn.layers import CBAM
from keras_attn.layers import ChannelAttention
from keras_attn.layers import SpatialAttention
from keras_attn.layers import SqueezeExcite
from keras_attn.layers import available_attentions
from keras_attn.layers import get_attention
from tests import harness

SHAPE = (6, 6, 8)
EXPECTED = {
    "cbam": CBAM,
    "channel": ChannelAttention,
    "se": SqueezeExcite,
    "spatial": SpatialAttention,
}
# Number of maps each layer returns with return_attention=True.
NUM_MAPS = {"cbam": 2, "channel": 1, "se": 1, "spatial": 1}


def test_available_attentions_sorted_and_complete():
    assert available_attentions() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_name_builds_runs_and_serializes(name):
    layer = get_attention(name)
    assert type(layer) is EXPECTED[name]
    x = harness.random_inputs([(2, *SHAPE)], seed=1)[0]
    outs = harness.to_numpy(layer(x, return_attention=True))
    assert outs[0].shape == x.shape
    assert len(outs) == 1 + NUM_MAPS[name]
    assert all(np.isfinite(o).all() for o in outs)
    harness.assert_config_roundtrip(layer)


def test_every_name_survives_keras_file(tmp_path):
    # All registered layers in one model: one file, one reload process.
    inputs = keras.Input(SHAPE)
    x, outputs = inputs, []
    for name in available_attentions():
        x, *maps = get_attention(name, name=f"attn_{name}")(
            x, return_attention=True
        )
        outputs.extend(maps)
    model = keras.Model(inputs, [x, *outputs])
    harness.randomize_weights(model)
    x = harness.random_inputs([(2, *SHAPE)], seed=2)[0]
    harness.assert_keras_file_roundtrip(model, x, tmp_path)


@pytest.mark.parametrize("identifier", ["SE", "Cbam", "CHANNEL", "Spatial"])
def test_names_are_case_insensitive(identifier):
    assert type(get_attention(identifier)) is EXPECTED[identifier.lower()]


def test_kwargs_reach_the_constructor():
    layer = get_attention("se", reduction=8, gate="hard_sigmoid", name="x")
    assert (layer.reduction, layer.gate, layer.name) == (8, "hard_sigmoid", "x")
    cbam = get_attention("cbam", reduction=2, kernel_size=3)
    assert (cbam.reduction, cbam.kernel_size) == (2, 3)


@pytest.mark.parametrize("identifier", [None, False])
def test_none_and_false_mean_no_attention(identifier):
    assert get_attention(identifier) is None
    assert get_attention(identifier, reduction=4) is None


def test_true_means_squeeze_excite():
    layer = get_attention(True, reduction=4)
    assert type(layer) is SqueezeExcite and layer.reduction == 4


def test_layer_class_is_instantiated():
    layer = get_attention(CBAM, kernel_size=3)
    assert type(layer) is CBAM and layer.kernel_size == 3
    assert get_attention(CBAM) is not get_attention(CBAM)


def test_layer_instance_is_a_fresh_template_copy():
    template = CBAM(reduction=2, kernel_size=3, name="template")
    template.build((None, *SHAPE))
    first = get_attention(template)
    second = get_attention(template, kernel_size=5)
    assert first is not template and second is not first
    assert not first.built and not second.built
    assert first.name != template.name and first.name != second.name
    expected = {**template.get_config(), "name": first.name}
    assert first.get_config() == expected
    assert (second.reduction, second.kernel_size) == (2, 5)
    # Copies can sit in one model (unique names) and own their weights.
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, second(first(inputs)))
    assert len(first.weights) == len(template.weights)
    assert len(model.weights) == 2 * len(template.weights)
    assert not set(map(id, first.weights)) & set(map(id, template.weights))
    named = get_attention(template, name="stage1_block1_cbam")
    assert named.name == "stage1_block1_cbam"


def test_unknown_name_lists_available_names():
    names = re.escape(str(available_attentions()))
    with pytest.raises(ValueError, match=f"get_attention: .*{names}"):
        get_attention("eca")
    with pytest.raises(ValueError, match="Received: identifier='eca'"):
        get_attention("eca")


@pytest.mark.parametrize("identifier", [3, 0.5, "", object(), keras.layers])
def test_unsupported_identifier_type(identifier):
    with pytest.raises(ValueError, match="get_attention: invalid `identifier`"):
        get_attention(identifier)


def test_bad_layer_arguments_name_the_layer():
    with pytest.raises(ValueError, match="SqueezeExcite: invalid `ratio`"):
        get_attention("se", ratio=0)
    with pytest.raises(ValueError, match="CBAM: invalid `kernel_size`"):
        get_attention("cbam", kernel_size=4)
