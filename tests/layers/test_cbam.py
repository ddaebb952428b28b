"""Tests for `keras_attn.layers.{ChannelAttention, SpatialAttention, CBAM}`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.layers import CBAM
from keras_attn.layers import ChannelAttention
from keras_attn.layers import SpatialAttention
from keras_attn.layers import cbam as cbam_module
from tests import harness

SHAPE = (8, 10, 12)  # (H, W, C); H != W catches transposed maps


def _np(variable):
    return np.asarray(ops.convert_to_numpy(variable), dtype="float64")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ----------------------------------------------------------------------------
# NumPy references (paper Eqs. 1-3), parameterised by the combination rules
# so the tests can show that the wrong rules give a different answer.


def np_channel(x, w0, b0, w1, b1, combine="sum"):
    x = np.asarray(x, "float64")

    def mlp(z):
        return np.maximum(z @ w0 + b0, 0.0) @ w1 + b1

    avg, mx = x.mean(axis=(1, 2)), x.max(axis=(1, 2))  # (B, C)
    if combine == "sum":  # the paper: MLP(avg) + MLP(max)
        logits = mlp(avg) + mlp(mx)
    elif combine == "mlp_of_sum":
        logits = mlp(avg + mx)
    elif combine == "avg_only":
        logits = mlp(avg)
    else:  # "mean": averaged MLP outputs
        logits = 0.5 * (mlp(avg) + mlp(mx))
    mc = _sigmoid(logits)
    return x * mc[:, None, None, :], mc


def np_conv_same(feature, kernel, bias):
    """Cross-correlation with odd `kernel` (k, k, Cin, 1), 'same' padding."""
    k = kernel.shape[0]
    p = k // 2
    padded = np.pad(feature, ((0, 0), (p, p), (p, p), (0, 0)))
    height, width = feature.shape[1:3]
    out = np.zeros(feature.shape[:3])
    for di in range(k):
        for dj in range(k):
            window = padded[:, di : di + height, dj : dj + width, :]
            out += window @ kernel[di, dj, :, 0]
    return out + bias[0]


def np_spatial(x, kernel, bias, order="avg_max"):
    x = np.asarray(x, "float64")
    avg = x.mean(axis=-1, keepdims=True)
    mx = x.max(axis=-1, keepdims=True)
    pair = [avg, mx] if order == "avg_max" else [mx, avg]
    ms = _sigmoid(np_conv_same(np.concatenate(pair, axis=-1), kernel, bias))
    return x * ms[..., None], ms


def channel_weights(layer):
    return (
        _np(layer.mlp_hidden.kernel),
        _np(layer.mlp_hidden.bias),
        _np(layer.mlp_output.kernel),
        _np(layer.mlp_output.bias),
    )


def spatial_weights(layer):
    return _np(layer.conv.kernel), _np(layer.conv.bias)


def np_cbam(layer, x):
    refined, mc = np_channel(x, *channel_weights(layer.channel_attention))
    y, ms = np_spatial(refined, *spatial_weights(layer.spatial_attention))
    return y, mc, ms


def _built(cls, shape=SHAPE, seed=0, **kwargs):
    layer = cls(**kwargs)
    layer.build((None, *shape))
    harness.randomize_weights(layer, seed)
    return layer


def _x(shape=SHAPE, seed=1, batch=2, scale=2.0):
    return harness.random_inputs([(batch, *shape)], seed=seed, scale=scale)[0]


def _close(a, b):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------
# Numerics


@pytest.mark.parametrize("reduction", [1, 4, 16])
def test_channel_attention_matches_numpy(reduction):
    layer = _built(ChannelAttention, reduction=reduction)
    x = _x()
    y, mc = harness.to_numpy(layer(x, return_attention=True))
    y_ref, mc_ref = np_channel(x, *channel_weights(layer))
    _close(mc, mc_ref)
    _close(y, y_ref)
    assert mc.shape == (2, SHAPE[-1]) and mc.std() > 1e-2
    hidden = max(1, SHAPE[-1] // reduction)
    assert tuple(layer.mlp_hidden.kernel.shape) == (SHAPE[-1], hidden)


def test_channel_attention_without_bias():
    layer = _built(ChannelAttention, reduction=4, use_bias=False)
    assert len(layer.weights) == 2
    x = _x()
    zeros = (np.zeros(3), np.zeros(SHAPE[-1]))
    w0, w1 = _np(layer.mlp_hidden.kernel), _np(layer.mlp_output.kernel)
    y_ref, mc_ref = np_channel(x, w0, zeros[0], w1, zeros[1])
    y, mc = harness.to_numpy(layer(x, return_attention=True))
    _close(y, y_ref)
    _close(mc, mc_ref)


@pytest.mark.parametrize("combine", ["mlp_of_sum", "avg_only", "mean"])
def test_channel_attention_rejects_wrong_combination(combine):
    # The paper sums the shared MLP applied to each pooled descriptor; the
    # plausible alternatives give clearly different maps.
    layer = _built(ChannelAttention, reduction=4)
    x = _x()
    _, mc = harness.to_numpy(layer(x, return_attention=True))
    _, wrong = np_channel(x, *channel_weights(layer), combine=combine)
    assert np.abs(mc - wrong).max() > 1e-2


@pytest.mark.parametrize("kernel_size", [1, 3, 7])
def test_spatial_attention_matches_numpy(kernel_size):
    layer = _built(SpatialAttention, kernel_size=kernel_size)
    x = _x()
    y, ms = harness.to_numpy(layer(x, return_attention=True))
    y_ref, ms_ref = np_spatial(x, *spatial_weights(layer))
    _close(ms, ms_ref)
    _close(y, y_ref)
    assert ms.shape == (2, *SHAPE[:2]) and ms.std() > 1e-2
    assert tuple(layer.conv.kernel.shape) == (kernel_size, kernel_size, 2, 1)


@pytest.mark.parametrize("size", [(8, 10), (3, 5), (1, 9)])
@pytest.mark.parametrize("conv_path", ["banded", "conv"])
@pytest.mark.parametrize("kernel_size", [1, 3, 7])
def test_spatial_both_conv_paths_match_numpy(monkeypatch, kernel_size,
                                             conv_path, size):
    # Static sizes up to `_BANDED_MAX_SIZE` use the matmul form of the conv,
    # larger ones the conv layer itself; both must be the paper's conv, also
    # when the kernel is larger than the map (all-padding taps).
    if conv_path == "conv":
        monkeypatch.setattr(cbam_module, "_BANDED_MAX_SIZE", 0)
    shape = (*size, 6)
    layer = _built(SpatialAttention, shape=shape, kernel_size=kernel_size)
    x = _x(shape=shape, seed=13)
    y, ms = harness.to_numpy(layer(x, return_attention=True))
    y_ref, ms_ref = np_spatial(x, *spatial_weights(layer))
    _close(ms, ms_ref)
    _close(y, y_ref)


@pytest.mark.parametrize("kernel_size", [1, 7])
def test_spatial_descriptor_order_is_avg_then_max(kernel_size):
    # With random conv weights, [max, avg] (the official code's order) is a
    # different function of the same weights.
    layer = _built(SpatialAttention, kernel_size=kernel_size)
    x = _x()
    _, ms = harness.to_numpy(layer(x, return_attention=True))
    _, swapped = np_spatial(x, *spatial_weights(layer), order="max_avg")
    assert np.abs(ms - swapped).max() > 1e-2
    # Porting official weights: swapping the conv's input channels makes the
    # two orders agree exactly.
    kernel, bias = spatial_weights(layer)
    _, ported = np_spatial(x, kernel[:, :, ::-1], bias, order="max_avg")
    _close(ms, ported)


def test_cbam_matches_numpy():
    layer = _built(CBAM, reduction=4, kernel_size=5)
    x = _x()
    y, mc, ms = harness.to_numpy(layer(x, return_attention=True))
    y_ref, mc_ref, ms_ref = np_cbam(layer, x)
    _close(mc, mc_ref)
    _close(ms, ms_ref)
    _close(y, y_ref)


def test_cbam_is_channel_then_spatial_sublayers():
    cbam = _built(CBAM, reduction=4, kernel_size=3)
    assert cbam.channel_attention.name == "channel_attention"
    assert cbam.spatial_attention.name == "spatial_attention"
    assert isinstance(cbam.channel_attention, ChannelAttention)
    assert isinstance(cbam.spatial_attention, SpatialAttention)
    channel = ChannelAttention(reduction=4)
    spatial = SpatialAttention(kernel_size=3)
    channel.build((None, *SHAPE))
    spatial.build((None, *SHAPE))
    channel.set_weights(cbam.channel_attention.get_weights())
    spatial.set_weights(cbam.spatial_attention.get_weights())
    x = _x()
    y, mc, ms = harness.to_numpy(cbam(x, return_attention=True))
    refined, mc2 = channel(x, return_attention=True)
    y2, ms2 = spatial(refined, return_attention=True)
    for a, b in zip((y, mc, ms), harness.to_numpy((y2, mc2, ms2)), strict=True):
        _close(a, b)
    # The other order (spatial first) is a different function.
    y_other = harness.to_numpy(channel(spatial(x)))[0]
    assert np.abs(y - y_other).max() > 1e-2


# ----------------------------------------------------------------------------
# Channel permutations: pooling over channels is order-free, the MLP is not.


def _perm(seed=3):
    return np.random.default_rng(seed).permutation(SHAPE[-1])


def test_spatial_map_ignores_channel_order():
    layer = _built(SpatialAttention, kernel_size=3)
    x, perm = _x(), _perm()
    y, ms = harness.to_numpy(layer(x, return_attention=True))
    y_p, ms_p = harness.to_numpy(layer(x[..., perm], return_attention=True))
    _close(ms_p, ms)
    _close(y_p, y[..., perm])


def test_channel_map_follows_channel_order_only_with_its_weights():
    layer = _built(ChannelAttention, reduction=4)
    x, perm = _x(), _perm()
    _, mc = harness.to_numpy(layer(x, return_attention=True))
    _, mc_p = harness.to_numpy(layer(x[..., perm], return_attention=True))
    # Same weights: the MLP ties each weight to a channel position.
    assert np.abs(mc_p - mc[:, perm]).max() > 1e-2
    # Permuting the MLP's input rows and output columns makes it equivariant.
    w0, b0, w1, b1 = layer.get_weights()
    layer.set_weights([w0[perm], b0, w1[:, perm], b1[perm]])
    _, mc_w = harness.to_numpy(layer(x[..., perm], return_attention=True))
    _close(mc_w, mc[:, perm])


def test_cbam_spatial_map_depends_on_channel_order_through_mc():
    cbam = _built(CBAM, reduction=4, kernel_size=3)
    x, perm = _x(), _perm()
    _, mc, ms = harness.to_numpy(cbam(x, return_attention=True))
    _, _, ms_p = harness.to_numpy(cbam(x[..., perm], return_attention=True))
    assert np.abs(ms_p - ms).max() > 1e-3
    w0, b0, w1, b1 = cbam.channel_attention.get_weights()
    cbam.channel_attention.set_weights([w0[perm], b0, w1[:, perm], b1[perm]])
    _, mc_w, ms_w = harness.to_numpy(cbam(x[..., perm], return_attention=True))
    _close(ms_w, ms)
    _close(mc_w, mc[:, perm])


# ----------------------------------------------------------------------------
# Shapes, dtypes, serialization, gradients, export


LAYERS = {
    "channel": (lambda **kw: ChannelAttention(reduction=4, **kw), (1,)),
    "spatial": (lambda **kw: SpatialAttention(kernel_size=3, **kw), (1,)),
    "cbam": (lambda **kw: CBAM(reduction=4, kernel_size=3, **kw), (1, 2)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_shapes_and_mixed_precision(name):
    make, float32_outputs = LAYERS[name]
    harness.assert_mixed_precision(
        make, SHAPE, {"return_attention": True}, float32_outputs
    )
    layer = make()
    outs = layer(keras.Input(SHAPE), return_attention=True)
    assert tuple(outs[0].shape) == (None, *SHAPE)
    expected_maps = {
        "channel": [(None, SHAPE[-1])],
        "spatial": [(None, *SHAPE[:2])],
        "cbam": [(None, SHAPE[-1]), (None, *SHAPE[:2])],
    }[name]
    assert [tuple(m.shape) for m in outs[1:]] == expected_maps
    assert all(o.dtype == "float32" for o in outs)
    assert layer.compute_output_shape((None, *SHAPE)) == (None, *SHAPE)
    single = make()(keras.Input(SHAPE))
    assert tuple(single.shape) == (None, *SHAPE)


@pytest.mark.parametrize(
    "layer",
    [
        ChannelAttention(),
        ChannelAttention(reduction=2, use_bias=False),
        SpatialAttention(),
        SpatialAttention(kernel_size=3),
        CBAM(),
        CBAM(reduction=8, kernel_size=5),
    ],
)
def test_config_roundtrip(layer):
    harness.assert_config_roundtrip(layer)


def _all_three_model(shape=SHAPE, seed=0):
    # One model with every layer, maps as outputs: one file, one process.
    inputs = keras.Input(shape)
    x, mc = ChannelAttention(reduction=4)(inputs, return_attention=True)
    x, ms = SpatialAttention(kernel_size=3)(x, return_attention=True)
    y, mc2, ms2 = CBAM(reduction=2, kernel_size=5)(x, return_attention=True)
    model = keras.Model(inputs, [y, mc, ms, mc2, ms2])
    harness.randomize_weights(model, seed)
    return model


def test_keras_file_roundtrip(tmp_path):
    model = _all_three_model()
    harness.assert_keras_file_roundtrip(model, _x(seed=4), tmp_path)


def test_gradients_reach_all_weights():
    model = _all_three_model(seed=5)
    harness.assert_gradients_reach_all_weights(model, _x(seed=6))


@pytest.mark.tf_only
def test_jit_matches_eager():
    harness.assert_jit_matches_eager(_all_three_model(), _x(seed=7))


@pytest.mark.tf_only
def test_tflite_builtins_match():
    harness.assert_tflite_matches(_all_three_model(), _x(seed=8))


def test_variable_spatial_size():
    layer = CBAM(reduction=4, kernel_size=3)
    model = harness.wrap(layer, (None, None, SHAPE[-1]), return_attention=True)
    harness.randomize_weights(model, seed=9)
    for size in [(5, 7), (11, 6)]:
        x = _x(shape=(*size, SHAPE[-1]), seed=10)
        got = harness.run(model, x)
        for g, r in zip(got, np_cbam(layer, x), strict=True):
            _close(g, r)
        assert got[2].shape == (2, *size)


# ----------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ChannelAttention(reduction=0), "ChannelAttention.*`reduc"),
        (lambda: ChannelAttention(reduction=1.5), "ChannelAttention.*`reduc"),
        (lambda: ChannelAttention(use_bias=1), "ChannelAttention.*`use_bias`"),
        (lambda: SpatialAttention(kernel_size=4), "SpatialAttention.*odd"),
        (lambda: SpatialAttention(kernel_size=0), "SpatialAttention.*kernel"),
        (lambda: SpatialAttention(kernel_size=-3), "SpatialAttention.*kernel"),
        (lambda: SpatialAttention(kernel_size=True), "SpatialAttention.*kern"),
        (lambda: CBAM(reduction=0), "CBAM: invalid `reduction`"),
        (lambda: CBAM(reduction="16"), "CBAM: invalid `reduction`"),
        (lambda: CBAM(kernel_size=6), "CBAM: invalid `kernel_size`.*odd"),
        (lambda: CBAM(kernel_size=0), "CBAM: invalid `kernel_size`"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("cls", [ChannelAttention, SpatialAttention, CBAM])
@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((None, 8, 12), "invalid `inputs shape`.*rank 4"),
        ((None, 8, 8, None), "invalid `inputs shape`.*known channel"),
    ],
)
def test_bad_input_shape(cls, shape, match):
    with pytest.raises(ValueError, match=f"{cls.__name__}: {match}"):
        cls().build(shape)
    with pytest.raises(ValueError, match=f"{cls.__name__}: {match}"):
        cls()(keras.Input(shape[1:]))


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_large_inputs_stay_finite(dtype, name):
    make, _ = LAYERS[name]
    layer = make(dtype=dtype)
    x = _x(seed=11, scale=1e4)
    layer.build(x.shape)
    harness.randomize_weights(layer, seed=12)
    outs = harness.to_numpy(layer(x, return_attention=True))
    for out in outs:
        assert np.isfinite(out.astype("float32")).all()
    for attention_map in outs[1:]:
        assert attention_map.dtype == np.float32
        assert attention_map.min() >= 0.0 and attention_map.max() <= 1.0
