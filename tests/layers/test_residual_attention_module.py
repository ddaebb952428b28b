"""Tests for `ResidualAttentionModule` (Wang et al., 2017)."""

import keras
import numpy as np
import pytest

from keras_attn.layers import PreActBottleneck
from keras_attn.layers import ResidualAttentionModule
from tests import harness
from tests.layers.test_pre_act_bottleneck import np_bn
from tests.layers.test_pre_act_bottleneck import np_conv
from tests.layers.test_pre_act_bottleneck import np_max_pool
from tests.layers.test_pre_act_bottleneck import np_resize_bilinear
from tests.layers.test_pre_act_bottleneck import np_unit
from tests.layers.test_pre_act_bottleneck import randomize_batch_norm
from tests.layers.test_pre_act_bottleneck import relu

ACTIVATIONS = ("mixed", "channel", "spatial")


# ----------------------------------------------------------------------------
# NumPy reference (float64), written from the paper's description


def np_mask_activation(x, mode):
    if mode == "mixed":
        return 1.0 / (1.0 + np.exp(-x))
    if mode == "channel":
        return x / np.sqrt(np.sum(x**2, axis=-1, keepdims=True) + 1e-12)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = np.sqrt(((x - mean) ** 2).mean(axis=(1, 2), keepdims=True) + 1e-5)
    return 1.0 / (1.0 + np.exp(-(x - mean) / std))


def np_module(x, layer):
    """`(H, M)` of a built module, from its sublayers' weights."""
    mode, r, skips = layer.mask_activation, layer.r, layer.num_skips

    def units(group, level, y):
        for unit in group[level * r : (level + 1) * r]:
            y = np_unit(y, unit)
        return y

    for unit in layer.pre_units:
        x = np_unit(x, unit)
    trunk = x
    for unit in layer.trunk_units:
        trunk = np_unit(trunk, unit)

    y = units(layer.down_units, 0, np_max_pool(x))
    skip_outputs = []
    for level in range(skips):
        skip_outputs.append(np_unit(y, layer.skip_units[level]))
        y = units(layer.down_units, level + 1, np_max_pool(y))
    for level in reversed(range(skips)):
        y = units(layer.up_units, level + 1, y)
        skip = skip_outputs[level]
        y = np_resize_bilinear(y, skip.shape[1:3]) + skip
    y = units(layer.up_units, 0, y)
    y = np_resize_bilinear(y, trunk.shape[1:3])
    kernel1 = keras.ops.convert_to_numpy(layer.mask_conv1.kernel)
    kernel2 = keras.ops.convert_to_numpy(layer.mask_conv2.kernel)
    y = np_conv(relu(np_bn(y, layer.mask_bn1)), kernel1.astype("float64"))
    y = np_conv(relu(np_bn(y, layer.mask_bn2)), kernel2.astype("float64"))
    mask = np_mask_activation(y, mode)

    h = mask * trunk if layer.naive else (1.0 + mask) * trunk
    for unit in layer.post_units:
        h = np_unit(h, unit)
    return h, mask


def _module(filters=8, **kwargs):
    kwargs.setdefault("num_skips", 1)
    return ResidualAttentionModule(filters, **kwargs)


def _built(layer, shape, seed=0):
    layer.build(shape)
    randomize_batch_norm(layer, seed=seed)
    return layer


def _assert_matches_reference(layer, x, outputs):
    h, mask = np_module(x.astype("float64"), layer)
    got_h, got_mask = outputs
    assert got_h.shape == h.shape and got_mask.shape == mask.shape
    np.testing.assert_allclose(got_mask, mask, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got_h, h, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------
# Reference tests


@pytest.mark.parametrize("mask_activation", ACTIVATIONS)
@pytest.mark.parametrize("size", [(12, 12), (13, 11)])
def test_matches_numpy_reference(mask_activation, size):
    layer = _module(8, mask_activation=mask_activation)
    x = harness.random_inputs([(2, *size, 4)], seed=1)[0]
    _built(layer, x.shape, seed=2)
    outputs = harness.to_numpy(
        layer(x, training=False, return_attention=True)
    )
    _assert_matches_reference(layer, x, outputs)
    assert outputs[1].dtype == np.float32


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_skips": 0, "p": 0, "t": 1},  # p=0: no projection needed
        {"num_skips": 2, "r": 2, "mask_activation": "spatial"},
        {"num_skips": 1, "naive": True},  # NAL ablation: H = M * T
        {"num_skips": 2, "p": 2, "mask_activation": "channel"},
    ],
)
def test_matches_numpy_reference_options(kwargs):
    channels = 8 if kwargs.get("p", 1) == 0 else 4
    layer = _module(8, **kwargs)
    x = harness.random_inputs([(2, 11, 10, channels)], seed=3)[0]
    _built(layer, x.shape, seed=4)
    outputs = harness.to_numpy(
        layer(x, training=False, return_attention=True)
    )
    _assert_matches_reference(layer, x, outputs)


def test_naive_differs_from_residual():
    x = harness.random_inputs([(2, 8, 8, 8)], seed=5)[0]
    outs = []
    for naive in (False, True):
        keras.utils.set_random_seed(0)
        layer = _built(_module(8, naive=naive), x.shape, seed=6)
        outs.append(harness.to_numpy(layer(x, training=False))[0])
    assert not np.allclose(outs[0], outs[1], atol=1e-3)


def test_unit_counts_follow_p_t_r_num_skips():
    layer = _built(_module(8, p=2, t=3, r=2, num_skips=2), (2, 16, 16, 4))
    assert len(layer.pre_units) == len(layer.post_units) == 2
    assert len(layer.trunk_units) == 3
    assert len(layer.skip_units) == 2
    assert len(layer.down_units) == len(layer.up_units) == 2 * 3
    units = [
        sub for sub in layer._flatten_layers(include_self=False)
        if isinstance(sub, PreActBottleneck)
    ]
    assert len(units) == 2 + 3 + 2 + 2 + 12


# ----------------------------------------------------------------------------
# Properties of the three mask activations


def _mask(mask_activation, x, scale_logits=1.0):
    layer = _built(_module(8, mask_activation=mask_activation), x.shape)
    if scale_logits != 1.0:
        kernel = keras.ops.convert_to_numpy(layer.mask_conv2.kernel)
        layer.mask_conv2.kernel.assign(kernel * scale_logits)
    return harness.to_numpy(
        layer(x, training=False, return_attention=True)
    )


def test_mixed_mask_in_open_unit_interval():
    x = harness.random_inputs([(2, 12, 12, 4)], seed=7)[0]
    # Untrained logits reach ~40, where float32 sigmoid rounds to 1.0;
    # shrinking the last mask kernel keeps them where (0, 1) is exact.
    _, mask = _mask("mixed", x, scale_logits=0.05)
    assert mask.min() > 0.0 and mask.max() < 1.0
    assert mask.std() > 1e-2  # not a constant gate
    _, saturated = _mask("mixed", x)
    assert saturated.min() >= 0.0 and saturated.max() <= 1.0


def test_channel_mask_has_unit_norm_over_channels():
    x = harness.random_inputs([(2, 12, 12, 4)], seed=8)[0]
    _, mask = _mask("channel", x)
    np.testing.assert_allclose(
        np.linalg.norm(mask, axis=-1), 1.0, atol=1e-5
    )
    assert mask.min() < 0.0  # f2 keeps signs (no sigmoid)


def test_spatial_mask_is_sigmoid_of_standardized_map():
    x = harness.random_inputs([(2, 12, 12, 4)], seed=9)[0]
    _, mask = _mask("spatial", x)
    logits = np.log(mask.astype("float64") / (1.0 - mask))  # inverse sigmoid
    np.testing.assert_allclose(logits.mean(axis=(1, 2)), 0.0, atol=1e-4)
    # The epsilon in the std only matters for near-constant channels.
    np.testing.assert_allclose(logits.std(axis=(1, 2)), 1.0, atol=1e-3)


@pytest.mark.parametrize("mask_activation", ACTIVATIONS)
def test_huge_mask_logits_stay_bounded(mask_activation):
    x = harness.random_inputs([(2, 8, 8, 4)], seed=10)[0]
    h, mask = _mask(mask_activation, x, scale_logits=1e6)
    assert np.isfinite(h).all() and np.isfinite(mask).all()
    lower = -1.0 if mask_activation == "channel" else 0.0
    assert mask.min() >= lower and mask.max() <= 1.0


# ----------------------------------------------------------------------------
# Harness checks


def test_variable_spatial_size():
    layer = _module(8, num_skips=2, mask_activation="spatial")
    model = harness.wrap(layer, (None, None, 4), return_attention=True)
    randomize_batch_norm(layer, seed=11)
    for size in ((12, 12), (9, 14)):
        x = harness.random_inputs([(2, *size, 4)], seed=size[1])[0]
        _assert_matches_reference(layer, x, harness.run(model, x))


def test_output_shape_and_spec():
    layer = _module(8)
    assert layer.compute_output_shape((None, 9, None, 4)) == (None, 9, None, 8)
    out, mask = layer(keras.Input((9, 7, 4)), return_attention=True)
    assert tuple(out.shape) == tuple(mask.shape) == (None, 9, 7, 8)
    assert keras.backend.standardize_dtype(mask.dtype) == "float32"
    single = _module(8)(keras.Input((None, None, 4)))
    assert tuple(single.shape) == (None, None, None, 8)


@pytest.mark.parametrize("mask_activation", ACTIVATIONS)
def test_mixed_precision(mask_activation):
    harness.assert_mixed_precision(
        lambda **kw: _module(8, mask_activation=mask_activation, **kw),
        (12, 12, 4),
        call_kwargs={"return_attention": True},
        float32_outputs=(1,),
    )


def test_config_roundtrip():
    harness.assert_config_roundtrip(
        _module(12, p=2, t=1, r=2, num_skips=0, mask_activation="channel",
                naive=True, name="ram")
    )


def test_keras_file_roundtrip(tmp_path):
    layer = _module(8, mask_activation="spatial")
    model = harness.wrap(layer, (None, None, 4), return_attention=True)
    randomize_batch_norm(layer, seed=12)
    x = harness.random_inputs([(2, 11, 9, 4)])[0]
    harness.assert_keras_file_roundtrip(model, x, tmp_path)


@pytest.mark.parametrize("mask_activation", ACTIVATIONS)
def test_gradients_reach_all_weights(mask_activation):
    model = harness.wrap(
        _module(8, mask_activation=mask_activation), (8, 8, 4),
        return_attention=True,
    )
    x = harness.random_inputs([(2, 8, 8, 4)])[0]
    harness.assert_gradients_reach_all_weights(model, x)


@pytest.mark.tf_only
def test_jit_matches_eager():
    layer = _module(8, mask_activation="spatial")
    model = harness.wrap(layer, (12, 10, 4), return_attention=True)
    randomize_batch_norm(layer, seed=13)
    harness.assert_jit_matches_eager(
        model, harness.random_inputs([(2, 12, 10, 4)])[0]
    )


@pytest.mark.tf_only
@pytest.mark.parametrize("mask_activation", ACTIVATIONS)
def test_tflite_matches(mask_activation):
    from keras_attn.export.tflite_runner import op_names

    layer = _module(8, mask_activation=mask_activation)
    model = harness.wrap(layer, (13, 11, 4), return_attention=True)
    randomize_batch_norm(layer, seed=14)
    flatbuffer = harness.assert_tflite_matches(
        model, harness.random_inputs([(1, 13, 11, 4)])[0]
    )
    ops_used = op_names(flatbuffer)
    assert "RESIZE_BILINEAR" in ops_used
    assert not any("Flex" in op for op in ops_used)


@pytest.mark.parametrize(
    "dtype,input_scale",
    [
        ("float32", 1e4),
        # At 1e4 the module's exact output exceeds float16's maximum (65504)
        # whatever the attention does (the residual trunk alone grows it to
        # ~1e5), so the float16 run uses 1e3 inputs and makes the *mask
        # logits* huge instead (x1e4 on the last mask kernel: ~1e8, far past
        # float16 range), which is what the float32 gate must survive.
        ("mixed_float16", 1e3),
    ],
)
@pytest.mark.parametrize("mask_activation", ACTIVATIONS)
def test_large_inputs_stay_finite(dtype, input_scale, mask_activation):
    layer = _module(8, mask_activation=mask_activation, dtype=dtype)
    x = harness.random_inputs([(2, 8, 8, 4)], scale=input_scale)[0]
    layer.build(x.shape)
    if dtype == "mixed_float16":
        kernel = keras.ops.convert_to_numpy(layer.mask_conv2.kernel)
        layer.mask_conv2.kernel.assign(kernel * 1e4)
    out, mask = layer(x, return_attention=True)
    assert keras.backend.standardize_dtype(mask.dtype) == "float32"
    out = harness.to_numpy(keras.ops.cast(out, "float32"))[0]
    mask = harness.to_numpy(mask)[0]
    assert np.isfinite(out).all() and np.isfinite(mask).all()
    assert np.abs(mask).max() <= 1.0


# ----------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"filters": 6}, "filters"),
        ({"filters": 0}, "filters"),
        ({"filters": "8"}, "filters"),
        ({"filters": 8, "p": -1}, "p"),
        ({"filters": 8, "t": 0}, "t"),
        ({"filters": 8, "r": 0}, "r"),
        ({"filters": 8, "r": 1.0}, "r"),
        ({"filters": 8, "num_skips": -1}, "num_skips"),
        ({"filters": 8, "mask_activation": "softmax"}, "mask_activation"),
        ({"filters": 8, "mask_activation": None}, "mask_activation"),
        ({"filters": 8, "naive": 1}, "naive"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(
        ValueError, match=rf"ResidualAttentionModule: invalid `{argument}`"
    ):
        ResidualAttentionModule(**kwargs)


@pytest.mark.parametrize(
    "shape", [(None, 8, 8), (None, 8, 8, 4, 1), (None, 8, 8, None)]
)
def test_invalid_input_shape(shape):
    with pytest.raises(
        ValueError, match=r"ResidualAttentionModule: invalid `inputs shape`"
    ):
        _module(8).build(shape)


def test_p_zero_needs_matching_channels():
    with pytest.raises(
        ValueError,
        match=r"ResidualAttentionModule: invalid `p`.*p >= 1 when the input "
        r"has 4 channels and filters=8",
    ):
        _module(8, p=0).build((None, 8, 8, 4))
    _module(8, p=0).build((None, 8, 8, 8))  # matching channels are fine
