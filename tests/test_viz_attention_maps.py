"""Attention-map reductions and pictures (keras_attn.viz.attention_maps).

Reductions are checked against loops over queries and keys on the maps real
layers return; pictures by their PNG size and panel count.
"""

import sys

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn import layers
from keras_attn import models
from keras_attn.viz import compare_with_grad_cam
from keras_attn.viz import overlay_maps
from keras_attn.viz import plot_model_attention
from keras_attn.viz import plot_stn
from keras_attn.viz import reduce_attention
from keras_attn.viz import spatial_attention_maps
from keras_attn.viz.plotting import resize_bilinear
from tests.map_references import block_reference
from tests.map_references import global_reference
from tests.map_references import local_reference

H, W = 8, 6  # non-square on purpose


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), np.float64)


def _x(shape=(2, H, W, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(
        np.float32
    )


def test_global_is_mean_attention_received_per_key():
    layer = layers.AttentionAugmentedConv2D(16, 3, 8, 8, num_heads=2)
    _, weights = layer(_x(), return_attention=True)
    weights = _numpy(weights)
    assert weights.shape == (2, 2, H * W, H * W)
    reduced = reduce_attention(weights, "global", grid=(H, W))
    np.testing.assert_allclose(reduced, global_reference(weights, H, W),
                               atol=1e-7)
    np.testing.assert_allclose(reduced.sum((1, 2)), 1, atol=1e-5)
    with pytest.raises(ValueError, match="grid"):
        reduce_attention(weights, "global")  # 48 keys: not a square
    with pytest.raises(ValueError, match="grid"):
        reduce_attention(weights, "global", grid=(5, 5))


def test_local_is_attention_received_from_every_window():
    k = 3
    layer = layers.LocalSelfAttention2D(8, kernel_size=k, num_heads=2)
    _, weights = layer(_x(seed=1), return_attention=True)
    weights = _numpy(weights)
    assert weights.shape == (2, H, W, 2, k * k)
    reduced = reduce_attention(weights, "local")
    np.testing.assert_allclose(reduced, local_reference(weights, k),
                               atol=1e-7)
    # Masked neighbours carry no weight: nothing is lost at the border.
    np.testing.assert_allclose(reduced.sum((1, 2)), 1, atol=1e-5)


def test_block_is_attention_received_inside_each_block():
    k = 4  # W = 6 is not a multiple of 4: padded, masked blocks
    layer = layers.AttentionStem(8, kernel_size=k)
    _, weights = layer(_x(seed=2), return_attention=True)
    weights = _numpy(weights)
    assert weights.shape == (2, H, W, k * k)
    reduced = reduce_attention(weights, "block")
    np.testing.assert_allclose(reduced, block_reference(weights, k),
                               atol=1e-7)
    np.testing.assert_allclose(reduced.sum((1, 2)), 1, atol=1e-5)


def test_spatial_mask_and_non_spatial_kinds():
    _, channel, spatial = layers.CBAM(reduction=1)(_x(), return_attention=True)
    spatial = _numpy(spatial)
    assert spatial.shape == (2, H, W) and _numpy(channel).shape == (2, 3)
    np.testing.assert_array_equal(reduce_attention(spatial, "spatial"),
                                  spatial)
    np.testing.assert_array_equal(
        reduce_attention(spatial[..., None], "spatial"), spatial
    )
    assert reduce_attention(channel, "channel") is None
    assert reduce_attention(np.zeros((2, 2, 3)), "none") is None
    mask = np.random.default_rng(0).random((2, H, W, 5))
    np.testing.assert_allclose(reduce_attention(mask, "mask"),
                               mask.mean(-1), atol=1e-7)
    with pytest.raises(ValueError, match="kind"):
        reduce_attention(spatial, "channels")
    with pytest.raises(ValueError, match="attention"):
        reduce_attention(mask, "spatial")
    with pytest.raises(ValueError, match="k\\*k"):
        reduce_attention(np.zeros((1, H, W, 2, 8)), "local")


def _hand_built_model():
    inputs = keras.Input((H, W, 3))
    x, _ = layers.AttentionAugmentedConv2D(16, 3, 8, 8, num_heads=2,
                                           name="aa")(inputs,
                                                      return_attention=True)
    x, _ = layers.LocalSelfAttention2D(8, kernel_size=3, name="sasa")(
        x, return_attention=True
    )
    x, _ = layers.SqueezeExcite(reduction=2, name="se")(
        x, return_attention=True
    )
    g = keras.layers.GlobalAveragePooling2D()(x)
    g_a, _ = layers.LTPAAttention(name="ltpa")([x, g])
    x = keras.layers.Dense(3, name="logits")(g_a)
    x = keras.layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, x)


def test_spatial_attention_maps_of_a_hand_built_model():
    model = _hand_built_model()
    images = _x(seed=3)
    maps, skipped = spatial_attention_maps(model, images)
    assert list(maps) == ["aa", "sasa", "ltpa"] and skipped == {"se": "channel"}
    raw = models.attention_model(model)([images])
    # AA's grid comes from the layer's output (8 x 6, not a square).
    np.testing.assert_allclose(
        maps["aa"], reduce_attention(_numpy(raw["aa"]), "global", (H, W))
    )
    np.testing.assert_allclose(maps["sasa"],
                               reduce_attention(_numpy(raw["sasa"]), "local"))
    np.testing.assert_allclose(maps["ltpa"], _numpy(raw["ltpa"]))
    for m in maps.values():
        assert m.shape == (2, H, W)


def test_resize_matches_keras():
    maps = np.random.default_rng(0).random((2, 3, 5))
    ours = resize_bilinear(maps, 8, 7)
    theirs = ops.image.resize(maps[..., None].astype("float32"), (8, 7),
                              interpolation="bilinear")
    np.testing.assert_allclose(ours, _numpy(theirs)[..., 0], atol=1e-5)


def _png(path, rows, columns, panel_size, dpi):
    mpl_image = pytest.importorskip("matplotlib.image")
    picture = mpl_image.imread(str(path))
    assert picture.shape[:2] == (round(rows * panel_size * dpi),
                                 round(columns * panel_size * dpi))
    assert picture[..., :3].std() > 0.05
    return picture


def _drawn(figure):
    return [ax for ax in figure.axes if ax.images]


def test_overlay_maps_png(tmp_path):
    pytest.importorskip("matplotlib")
    images = np.random.default_rng(0).random((3, 20, 16, 3))
    maps = [np.random.default_rng(1).random((3, 5, 4)),
            np.random.default_rng(2).random((3, 20, 16, 1))]
    path = tmp_path / "overlay.png"
    figure = overlay_maps(images, maps, path=str(path), titles=["a", "b"],
                          panel_size=1, dpi=40)
    _png(path, 3, 3, 1, 40)
    drawn = _drawn(figure)
    assert len(drawn) == 9
    # image panels have one picture, map panels the image and a heat map
    assert sorted(len(ax.images) for ax in drawn) == [1] * 3 + [2] * 6
    assert drawn[1].get_title() == "a"
    single = overlay_maps(images[..., 0], maps[0])  # one map, 2D images
    assert len(_drawn(single)) == 6
    with pytest.raises(ValueError, match="maps\\[0\\]"):
        overlay_maps(images, [maps[0][:2]])
    with pytest.raises(ValueError, match="titles"):
        overlay_maps(images, maps, titles=["a"])


def test_plot_model_attention_png(tmp_path):
    pytest.importorskip("matplotlib")
    model = models.resnet((16, 16, 3), 3, 20, attention="cbam")
    images = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)
    maps, skipped = spatial_attention_maps(model, images)
    assert len(maps) == len(skipped) == 9  # CBAM: spatial and channel
    assert all(name.endswith("_2") for name in maps)
    path = tmp_path / "attention.png"
    figure = plot_model_attention(model, images, path=str(path),
                                  panel_size=0.5, dpi=40)
    _png(path, 2, 1 + len(maps), 0.5, 40)
    assert len(_drawn(figure)) == 2 * (1 + len(maps))
    assert any("not drawn" in text.get_text() for text in figure.texts)


def test_compare_with_grad_cam_png(tmp_path):
    pytest.importorskip("matplotlib")
    if keras.backend.backend() == "jax":
        pytest.skip("grad_cam needs tf.GradientTape or torch.autograd")
    model = _hand_built_model()
    path = tmp_path / "compare.png"
    figure = compare_with_grad_cam(model, _x(seed=4), "sasa", path=str(path),
                                   panel_size=1, dpi=40)
    _png(path, 2, 3, 1, 40)
    drawn = _drawn(figure)
    assert len(drawn) == 6
    assert drawn[1].get_title() == "ltpa"  # last spatial map by default
    assert drawn[2].get_title() == "Grad-CAM sasa"
    figure = compare_with_grad_cam(model, _x(seed=4), "sasa",
                                   attention_layer="aa")
    assert _drawn(figure)[1].get_title() == "aa"
    with pytest.raises(ValueError, match="attention_layer.*'ltpa'"):
        compare_with_grad_cam(model, _x(), "sasa", attention_layer="se")


def test_plot_stn_png(tmp_path):
    pytest.importorskip("matplotlib")
    images = np.random.default_rng(0).random((3, 28, 28, 1))
    warped = np.random.default_rng(1).random((3, 14, 14))
    path = tmp_path / "stn.png"
    figure = plot_stn(images, warped, path=str(path), panel_size=1, dpi=50)
    _png(path, 3, 2, 1, 50)
    assert len(_drawn(figure)) == 6
    with pytest.raises(ValueError, match="warped"):
        plot_stn(images, warped[:2])


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"keras_attn\[viz\]"):
        overlay_maps(np.zeros((1, 4, 4)), np.zeros((1, 2, 2)))
    with pytest.raises(ImportError, match=r"keras_attn\[viz\]"):
        plot_stn(np.zeros((1, 4, 4)), np.zeros((1, 2, 2)))
