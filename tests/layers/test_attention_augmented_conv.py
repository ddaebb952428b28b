"""Tests for `keras_attn.layers.AttentionAugmentedConv2D`."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.layers import AttentionAugmentedConv2D
from keras_attn.layers.attention_augmented_conv import attention_logits
from keras_attn.layers.attention_augmented_conv import rel_to_abs
from tests import harness

SHAPE = (6, 5, 3)  # (H, W, C); H != W catches swapped axes


def _np(variable):
    return np.asarray(ops.convert_to_numpy(variable), dtype="float64")


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(a, b, atol=atol, rtol=0)


def _x(shape=SHAPE, seed=1, batch=2, scale=1.0):
    return harness.random_inputs([(batch, *shape)], seed=seed, scale=scale)[0]


# ----------------------------------------------------------------------------
# NumPy references. The relative logits are built the naive way: the full
# (H, W, H, W, d) embedding tensor r_ij = rel_h[x_j - x_i + H - 1] +
# rel_w[y_j - y_i + W - 1], then q_i . (k_j + r_ij).


def np_embeddings(rel_h, rel_w, height, width, sign=1):
    xs, ys = np.arange(height), np.arange(width)
    dx = sign * (xs[None, :] - xs[:, None]) + height - 1  # (x_i, x_j)
    dy = sign * (ys[None, :] - ys[:, None]) + width - 1  # (y_i, y_j)
    emb_h = rel_h[dx][:, None, :, None, :]  # (H, 1, H, 1, d)
    emb_w = rel_w[dy][None, :, None, :, :]  # (1, W, 1, W, d)
    return emb_h + emb_w  # (H, W, H, W, d)


def np_logits(q, k, rel_h=None, rel_w=None, sign=1):
    """q, k: (B, Nh, H, W, d) -> (B, Nh, HW, HW)."""
    b, n, height, width, d = q.shape
    logits = np.einsum("bnxyd,bnuvd->bnxyuv", q, k)
    if rel_h is not None:
        emb = np_embeddings(rel_h, rel_w, height, width, sign)
        logits = logits + np.einsum("bnxyd,xyuvd->bnxyuv", q, emb)
    return logits.reshape(b, n, height * width, height * width)


def np_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def np_conv(x, kernel, bias, strides=1):
    """TensorFlow 'same' cross-correlation (extra padding at the end)."""
    k = kernel.shape[0]
    _, height, width, _ = x.shape
    out_h, out_w = math.ceil(height / strides), math.ceil(width / strides)
    pad_h = max((out_h - 1) * strides + k - height, 0)
    pad_w = max((out_w - 1) * strides + k - width, 0)
    padded = np.pad(
        x,
        (
            (0, 0),
            (pad_h // 2, pad_h - pad_h // 2),
            (pad_w // 2, pad_w - pad_w // 2),
            (0, 0),
        ),
    )
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for di in range(k):
        for dj in range(k):
            window = padded[
                :,
                di : di + (out_h - 1) * strides + 1 : strides,
                dj : dj + (out_w - 1) * strides + 1 : strides,
                :,
            ]
            out += window @ kernel[di, dj]
    return out + bias


def np_resize_rows(table, length):
    """Bilinear, half-pixel centres, clamped at the borders."""
    old = table.shape[0]
    src = (np.arange(length) + 0.5) * old / length - 0.5
    return np.stack(
        [np.interp(src, np.arange(old), col) for col in table.T], axis=1
    )


def np_layer(layer, x, sign=1):
    """Full layer in NumPy from the layer's own weights."""
    x = np.asarray(x, "float64")
    dk, dv = layer.key_channels, layer.value_channels
    heads, s = layer.num_heads, layer.strides
    conv = np_conv(x, _np(layer.conv.kernel), _np(layer.conv.bias), s)
    qkv = x[:, ::s, ::s] @ _np(layer.qkv.kernel)[0, 0] + _np(layer.qkv.bias)
    b, height, width, _ = qkv.shape

    def heads_of(t):
        t = t.reshape(b, height, width, heads, -1)
        return t.transpose(0, 3, 1, 2, 4)  # (B, Nh, H, W, d)

    q = heads_of(qkv[..., :dk]) * (dk // heads) ** -0.5
    k = heads_of(qkv[..., dk : 2 * dk])
    v = heads_of(qkv[..., 2 * dk :]).reshape(b, heads, height * width, -1)
    rel_h = rel_w = None
    if layer.relative:
        rel_h, rel_w = _np(layer.rel_h), _np(layer.rel_w)
        if rel_h.shape[0] != 2 * height - 1:
            rel_h = np_resize_rows(rel_h, 2 * height - 1)
        if rel_w.shape[0] != 2 * width - 1:
            rel_w = np_resize_rows(rel_w, 2 * width - 1)
    weights = np_softmax(np_logits(q, k, rel_h, rel_w, sign))
    out = weights @ v  # (B, Nh, HW, dv / Nh)
    out = out.reshape(b, heads, height, width, -1).transpose(0, 2, 3, 1, 4)
    out = out.reshape(b, height, width, dv)
    out = out @ _np(layer.attention_output.kernel)[0, 0]
    out = out + _np(layer.attention_output.bias)
    return np.concatenate([conv, out], axis=-1), weights


def _built(shape=SHAPE, seed=0, **kwargs):
    kwargs = {
        "filters": 8, "kernel_size": 3, "key_depth": 4, "value_depth": 4,
        "num_heads": 2, **kwargs,
    }
    layer = AttentionAugmentedConv2D(**kwargs)
    layer.build((None, *shape))
    harness.randomize_weights(layer, seed)
    return layer


# ----------------------------------------------------------------------------
# Relative logits


@pytest.mark.parametrize("length", [1, 2, 5])
def test_rel_to_abs_is_the_offset_lookup(length):
    x = harness.random_inputs([(3, length, 2 * length - 1)], seed=2)[0]
    got = harness.to_numpy(rel_to_abs(x))[0]
    i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    _close(got, x[:, i, j - i + length - 1])


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (4, 4), (5, 2)])
def test_relative_logits_match_naive_embeddings(size):
    height, width = size
    d = 3
    q, k, rel_h, rel_w = harness.random_inputs(
        [(2, 2, height, width, d), (2, 2, height, width, d),
         (2 * height - 1, d), (2 * width - 1, d)],
        seed=3,
    )
    got = harness.to_numpy(attention_logits(q, k, rel_h, rel_w))[0]
    _close(got, np_logits(q, k, rel_h, rel_w))
    content = harness.to_numpy(attention_logits(q, k))[0]
    _close(content, np_logits(q, k))
    if height > 1 and width > 1:
        # Offsets are key minus query: the opposite sign, or the two
        # tables swapped, give different logits.
        assert np.abs(got - np_logits(q, k, rel_h, rel_w, sign=-1)).max() > 0.1
    if height == width > 1:
        swapped = np_logits(q, k, rel_w, rel_h)
        assert np.abs(got - swapped).max() > 0.1


# ----------------------------------------------------------------------------
# Full layer


@pytest.mark.parametrize(
    ("relative", "strides", "heads", "shape"),
    [
        (True, 1, 2, SHAPE),
        (True, 1, 1, (4, 7, 2)),
        (True, 2, 2, SHAPE),
        (True, 2, 2, (7, 4, 3)),
        (False, 1, 2, SHAPE),
        (False, 2, 1, (5, 5, 3)),
    ],
)
def test_layer_matches_numpy(relative, strides, heads, shape):
    layer = _built(
        shape, relative=relative, strides=strides, num_heads=heads
    )
    x = _x(shape)
    y, w = harness.to_numpy(layer(x, return_attention=True))
    y_ref, w_ref = np_layer(layer, x)
    _close(w, w_ref)
    _close(y, y_ref)
    out_h, out_w = (math.ceil(n / strides) for n in shape[:2])
    assert y.shape == (2, out_h, out_w, 8)
    assert w.shape == (2, heads, out_h * out_w, out_h * out_w)
    _close(w.sum(axis=-1), np.ones(w.shape[:-1]))
    assert w.min() >= 0.0 and w.std() > 1e-3
    if relative:
        # The relative terms change the result, with the paper's sign.
        _, wrong = np_layer(layer, x, sign=-1)
        assert np.abs(w - wrong).max() > 1e-3


@pytest.mark.parametrize(
    ("relative", "strides", "shape"),
    [(True, 1, SHAPE), (True, 2, (7, 4, 3)), (False, 1, SHAPE)],
)
def test_output_without_maps_matches_numpy(relative, strides, shape):
    # Without `return_attention` the layer takes the hand-differentiated
    # `attend` path instead of materialising the maps as an output.
    layer = _built(shape, relative=relative, strides=strides)
    x = _x(shape, seed=13)
    y_ref, _ = np_layer(layer, x)
    _close(ops.convert_to_numpy(layer(x)), y_ref)


@pytest.mark.parametrize("relative", [True, False])
def test_fast_gradient_matches_autodiff(relative):
    # `attend` has a hand-written gradient; the `return_attention` path is
    # plain autodiff of the same function. Same layer, same loss on `y`.
    layer = _built(relative=relative)
    inputs = keras.Input(SHAPE)
    fast = keras.Model(inputs, layer(inputs))
    reference = keras.Model(inputs, layer(inputs, return_attention=True)[0])
    x = _x(seed=14)
    got = harness.gradients(fast, x)
    want = harness.gradients(reference, x)
    assert got.keys() == want.keys()
    assert sum("rel_" in path for path in got) == (2 if relative else 0)
    for path, g in got.items():
        scale = max(np.abs(want[path]).max(), 1.0)
        np.testing.assert_allclose(
            g, want[path], atol=1e-5 * scale, rtol=0, err_msg=path
        )


def test_relative_false_is_plain_multi_head_attention():
    layer = _built(relative=False)
    assert not any("rel_" in v.path for v in layer.weights)
    x = _x(seed=4)
    y, w = harness.to_numpy(layer(x, return_attention=True))
    # Plain MHA from the fused qkv kernel: per head softmax(q k^T / sqrt(d)).
    kernel, bias = _np(layer.qkv.kernel)[0, 0], _np(layer.qkv.bias)
    tokens = x.reshape(2, -1, SHAPE[-1]).astype("float64")  # (B, HW, C)
    heads_out = []
    for h in range(2):
        q = tokens @ kernel[:, 2 * h : 2 * h + 2] + bias[2 * h : 2 * h + 2]
        k = tokens @ kernel[:, 4 + 2 * h : 6 + 2 * h] + bias[4 + 2 * h :][:2]
        v = tokens @ kernel[:, 8 + 2 * h : 10 + 2 * h] + bias[8 + 2 * h :][:2]
        a = np_softmax(q @ k.transpose(0, 2, 1) / np.sqrt(2.0))
        _close(w[:, h], a)
        heads_out.append(a @ v)
    mha = np.concatenate(heads_out, axis=-1) @ _np(
        layer.attention_output.kernel
    )[0, 0] + _np(layer.attention_output.bias)
    conv = np_conv(x, _np(layer.conv.kernel), _np(layer.conv.bias))
    _close(y[..., :4], conv)
    _close(y[..., 4:], mha.reshape(2, *SHAPE[:2], 4))


def test_fractional_depths_and_weight_shapes():
    layer = AttentionAugmentedConv2D(20, 3, 0.4, 0.2, 2)
    layer.build((None, 8, 6, 3))
    assert (layer.key_channels, layer.value_channels) == (8, 4)
    assert tuple(layer.conv.kernel.shape) == (3, 3, 3, 16)
    assert tuple(layer.qkv.kernel.shape) == (1, 1, 3, 20)
    assert tuple(layer.attention_output.kernel.shape) == (1, 1, 4, 4)
    assert tuple(layer.rel_h.shape) == (15, 4)
    assert tuple(layer.rel_w.shape) == (11, 4)
    strided = AttentionAugmentedConv2D(8, 3, 4, 4, 2, strides=2)
    strided.build((None, 9, 6, 3))
    assert tuple(strided.rel_h.shape) == (9, 2)
    assert tuple(strided.rel_w.shape) == (5, 2)
    unknown = AttentionAugmentedConv2D(8, 3, 4, 4, 2)
    unknown.build((None, None, 6, 3))
    assert tuple(unknown.rel_h.shape) == (31, 2)
    assert tuple(unknown.rel_w.shape) == (11, 2)
    sized = AttentionAugmentedConv2D(8, 3, 4, 4, 2, relative_size=(3, 4))
    sized.build((None, 8, 8, 3))
    assert tuple(sized.rel_h.shape) == (5, 2)
    assert tuple(sized.rel_w.shape) == (7, 2)


@pytest.mark.parametrize("size", [(4, 3), (9, 8)])
def test_resized_tables_match_numpy(size):
    # Tables built for 6x5, used at a smaller and a larger grid.
    layer = _built()
    x = _x((*size, SHAPE[-1]), seed=5)
    y, w = harness.to_numpy(layer(x, return_attention=True))
    y_ref, w_ref = np_layer(layer, x)
    _close(w, w_ref)
    _close(y, y_ref)


def test_variable_spatial_size():
    layer = AttentionAugmentedConv2D(8, 3, 4, 4, 2, relative_size=(5, 4))
    model = harness.wrap(layer, (None, None, SHAPE[-1]), return_attention=True)
    harness.randomize_weights(model, seed=9)
    for size in [(5, 4), (7, 6)]:
        x = _x((*size, SHAPE[-1]), seed=10)
        got = harness.run(model, x)
        for g, r in zip(got, np_layer(layer, x), strict=True):
            _close(g, r)
        assert got[1].shape == (2, 2, size[0] * size[1], size[0] * size[1])


# ----------------------------------------------------------------------------
# Shapes, dtypes, serialization, gradients, export


def _make(**kwargs):
    return AttentionAugmentedConv2D(8, 3, 4, 4, 2, **kwargs)


@pytest.mark.parametrize("strides", [1, 2])
def test_shapes_and_mixed_precision(strides):
    harness.assert_mixed_precision(
        lambda **kw: _make(strides=strides, **kw),
        SHAPE,
        {"return_attention": True},
        (1,),
    )
    layer = _make(strides=strides)
    y, w = layer(keras.Input(SHAPE), return_attention=True)
    out_h, out_w = (math.ceil(n / strides) for n in SHAPE[:2])
    assert tuple(y.shape) == (None, out_h, out_w, 8)
    assert tuple(w.shape) == (None, 2, out_h * out_w, out_h * out_w)
    assert y.dtype == "float32" and w.dtype == "float32"
    assert layer.compute_output_shape((None, *SHAPE)) == (
        None, out_h, out_w, 8,
    )
    y2, w2 = _make(strides=strides)(
        keras.Input((None, None, 3)), return_attention=True
    )
    assert tuple(y2.shape) == (None, None, None, 8)
    assert tuple(w2.shape) == (None, 2, None, None)
    single = _make(strides=strides)(keras.Input(SHAPE))
    assert tuple(single.shape) == (None, out_h, out_w, 8)


@pytest.mark.parametrize(
    "layer",
    [
        _make(),
        _make(relative=False, strides=2),
        _make(relative_size=(3, 7)),
        AttentionAugmentedConv2D(20, 1, 0.4, 0.2, 2, name="aa"),
    ],
)
def test_config_roundtrip(layer):
    harness.assert_config_roundtrip(layer)


def _model(shape=SHAPE, seed=0):
    inputs = keras.Input(shape)
    x, w1 = _make(name="aa_rel")(inputs, return_attention=True)
    y, w2 = AttentionAugmentedConv2D(
        6, 3, 4, 2, 2, strides=2, relative_size=(2, 4), name="aa_resized"
    )(x, return_attention=True)
    z = _make(relative=False, name="aa_plain")(y)
    model = keras.Model(inputs, [z, w1, w2])
    harness.randomize_weights(model, seed)
    return model


def test_keras_file_roundtrip(tmp_path):
    harness.assert_keras_file_roundtrip(_model(), _x(seed=4), tmp_path)


def test_gradients_reach_all_weights():
    model = _model(seed=5)
    paths = [w.path for w in model.trainable_weights]
    assert sum("rel_h" in p or "rel_w" in p for p in paths) == 4
    harness.assert_gradients_reach_all_weights(model, _x(seed=6))


@pytest.mark.tf_only
def test_jit_matches_eager():
    harness.assert_jit_matches_eager(_model(), _x(seed=7))


@pytest.mark.tf_only
def test_tflite_builtins_match():
    # The second layer's tables are resized (RESIZE_BILINEAR) at run time.
    harness.assert_tflite_matches(_model(), _x(seed=8))


# ----------------------------------------------------------------------------
# Validation and numerics


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"filters": 1}, "invalid `filters`"),
        ({"filters": 8.0}, "invalid `filters`"),
        ({"kernel_size": 2}, "invalid `kernel_size`.*odd"),
        ({"num_heads": 0}, "invalid `num_heads`"),
        ({"key_depth": 3}, "invalid `key_depth`.*multiple of num_heads"),
        ({"key_depth": 0}, "invalid `key_depth`"),
        ({"key_depth": "4"}, "invalid `key_depth`"),
        ({"key_depth": -0.5}, "invalid `key_depth`"),
        ({"value_depth": 8}, "invalid `value_depth`.*dv < filters"),
        ({"value_depth": 0.99}, "invalid `value_depth`.*dv < filters"),
        ({"value_depth": 3}, "invalid `value_depth`.*multiple of num_heads"),
        ({"num_heads": 4, "key_depth": 2}, "invalid `key_depth`"),
        ({"relative": 1}, "invalid `relative`"),
        ({"strides": 0}, "invalid `strides`"),
        ({"relative_size": 4}, "invalid `relative_size`"),
        ({"relative_size": (4, 0)}, "invalid `relative_size`"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {
        "filters": 8, "kernel_size": 3, "key_depth": 4, "value_depth": 4,
        "num_heads": 2, **kwargs,
    }
    with pytest.raises(ValueError, match=f"AttentionAugmentedConv2D: {match}"):
        AttentionAugmentedConv2D(**kwargs)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((None, 8, 3), "invalid `inputs shape`.*rank 4"),
        ((None, 8, 8, None), "invalid `inputs shape`.*known channel"),
    ],
)
def test_bad_input_shape(shape, match):
    with pytest.raises(ValueError, match=f"AttentionAugmentedConv2D: {match}"):
        _make().build(shape)
    with pytest.raises(ValueError, match=f"AttentionAugmentedConv2D: {match}"):
        _make()(keras.Input(shape[1:]))


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_large_logits_stay_finite(dtype):
    layer = _make(dtype=dtype)
    layer.build((None, *SHAPE))
    # Under float16 the convs themselves are linear and would overflow on
    # 1e4 inputs with unit weights; small weights keep the convs in range
    # while q.k (~1e4 per term) still far exceeds the float16 maximum.
    harness.randomize_weights(
        layer, seed=12, scale=0.5 if dtype == "float32" else 0.01
    )
    x = _x(seed=11, scale=1e4)
    y, w = harness.to_numpy(layer(x, return_attention=True))
    assert np.isfinite(y.astype("float32")).all()
    assert w.dtype == np.float32 and np.isfinite(w).all()
    assert w.min() >= 0.0 and w.max() <= 1.0
    _close(w.sum(axis=-1), np.ones(w.shape[:-1]))
    # The logits are far beyond the float16 range: the softmax is peaked.
    assert w.max() > 0.99
