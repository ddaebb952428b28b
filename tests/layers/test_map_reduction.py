"""What each layer's maps are (`attention_kinds`), and the one reduction of
them to `(B, h, w)` (`keras_attn.ops.reduce_attention_map`), on every
backend, against loops over queries and keys."""

import inspect

import numpy as np
import pytest
from keras import ops

import keras_attn
from keras_attn.ops import map_reduction
from keras_attn.ops.map_reduction import reduce_attention_map
from tests.map_references import block_reference
from tests.map_references import local_reference

H, W = 5, 7


def _layer_classes():
    import keras_attn.layers as layers_package

    found = {obj for obj in vars(layers_package).values()
             if inspect.isclass(obj)
             and issubclass(obj, keras_attn.layers.ResidualAttentionModule
                            .__mro__[1])}
    return sorted(found, key=lambda c: c.__name__)


def _returns_attention(cls):
    parameters = inspect.signature(cls.call).parameters
    return "return_attention" in parameters or "return_theta" in parameters


@pytest.mark.parametrize("cls", _layer_classes(), ids=lambda c: c.__name__)
def test_every_layer_that_returns_maps_declares_their_kinds(cls):
    kinds = getattr(cls, "attention_kinds", None)
    if cls.__name__ == "IdentityGate":  # a wrapper: its inner layer's kinds
        cbam = keras_attn.layers.CBAM(reduction=2)
        assert cls(cbam).attention_kinds == cbam.attention_kinds
        return
    if cls.__name__ == "LTPAAttention" or _returns_attention(cls):
        assert kinds, f"{cls.__name__} returns maps but declares no kinds"
        assert set(kinds) <= set(map_reduction.KINDS), kinds
    else:
        assert kinds is None, cls.__name__


def test_declared_kinds_match_the_maps_returned():
    x = np.random.default_rng(0).random((2, 8, 8, 4), "float32")
    cbam = keras_attn.layers.CBAM(reduction=2)
    _, *maps = cbam(x, return_attention=True)
    assert len(maps) == len(cbam.attention_kinds) == 2
    for attention, kind in zip(maps, cbam.attention_kinds, strict=True):
        reduced = reduce_attention_map(attention, kind)
        assert (reduced is None) == (kind == "channel")
    sasa = keras_attn.layers.LocalSelfAttention2D(4, 3, num_heads=2)
    _, weights = sasa(x, return_attention=True)
    assert tuple(reduce_attention_map(
        weights, *sasa.attention_kinds).shape) == (2, 8, 8)


def test_local_and_block_match_loops():
    rng = np.random.default_rng(1)
    local = rng.random((2, H, W, 3, 9)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(reduce_attention_map(local, "local")),
        local_reference(local, 3), atol=1e-6)
    block = rng.random((2, H, W, 16)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(reduce_attention_map(block, "block")),
        block_reference(block, 4), atol=1e-6)


def test_global_mask_spatial():
    rng = np.random.default_rng(2)
    weights = rng.random((2, 3, H * W, H * W)).astype("float32")
    got = ops.convert_to_numpy(reduce_attention_map(weights, "global",
                                                    grid=(H, W)))
    np.testing.assert_allclose(
        got, weights.mean((1, 2)).reshape(2, H, W), atol=1e-6)
    mask = rng.random((2, H, W, 6)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(reduce_attention_map(mask, "mask")),
        mask.mean(-1), atol=1e-6)
    spatial = rng.random((2, H, W, 1)).astype("float32")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(reduce_attention_map(spatial, "spatial")),
        spatial[..., 0])
    assert reduce_attention_map(spatial[:, 0, 0], "channel") is None


@pytest.mark.parametrize("kind, shape, grid, match", [
    ("pixels", (2, H, W), None, "kind"),
    ("spatial", (2, H, W, 3), None, "attention"),
    ("local", (2, H, W, 2, 8), None, "k\\*k"),
    ("global", (2, 1, 35, 35), None, "grid"),
    ("global", (2, 1, 35, 35), (6, 6), "grid"),
])
def test_bad_layouts_name_the_argument(kind, shape, grid, match):
    with pytest.raises(ValueError, match=f"reduce_attention_map.*{match}"):
        reduce_attention_map(np.zeros(shape, "float32"), kind, grid)
