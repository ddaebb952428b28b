"""Tests for `PreActBottleneck`, plus the NumPy reference building blocks
(convolution, batch norm, max-pool, bilinear resize) shared with the
residual attention tests."""

import keras
import numpy as np
import pytest

from keras_attn.layers import PreActBottleneck
from tests import harness

BN_EPSILON = 1e-5  # PyTorch / Caffe default, used by the reference port


# ----------------------------------------------------------------------------
# NumPy reference (float64), TensorFlow "same" padding conventions


def same_padding(size, kernel, stride):
    """Output size and (before, after) padding of TF/Keras "same"."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def np_conv(x, kernel, stride=1):
    """`padding="same"` convolution by explicit shifted matmuls."""
    k = kernel.shape[0]
    oh, top, bottom = same_padding(x.shape[1], k, stride)
    ow, left, right = same_padding(x.shape[2], k, stride)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out = np.zeros((x.shape[0], oh, ow, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            patch = xp[:, i : i + stride * (oh - 1) + 1 : stride,
                       j : j + stride * (ow - 1) + 1 : stride, :]
            out += patch @ np.asarray(kernel[i, j], "float64")
    return out


def np_max_pool(x, size=3, stride=2):
    """`padding="same"` max-pool (padding never wins: it is -inf)."""
    oh, top, bottom = same_padding(x.shape[1], size, stride)
    ow, left, right = same_padding(x.shape[2], size, stride)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
                constant_values=-np.inf)
    out = np.full((x.shape[0], oh, ow, x.shape[3]), -np.inf)
    for i in range(size):
        for j in range(size):
            out = np.maximum(
                out,
                xp[:, i : i + stride * (oh - 1) + 1 : stride,
                   j : j + stride * (ow - 1) + 1 : stride, :],
            )
    return out


def _bilinear_taps(in_size, out_size):
    # Half-pixel centres, no antialiasing: tf.image.resize (TF2) bilinear,
    # torch interpolate(align_corners=False).
    src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    floor = np.floor(src)
    lower = np.clip(floor, 0, in_size - 1).astype(int)
    upper = np.clip(np.ceil(src), 0, in_size - 1).astype(int)
    return lower, upper, src - floor


def np_resize_bilinear(x, size):
    lo, hi, wy = _bilinear_taps(x.shape[1], size[0])
    x = (x[:, lo] * (1 - wy)[None, :, None, None]
         + x[:, hi] * wy[None, :, None, None])
    lo, hi, wx = _bilinear_taps(x.shape[2], size[1])
    return (x[:, :, lo] * (1 - wx)[None, None, :, None]
            + x[:, :, hi] * wx[None, None, :, None])


def np_bn(x, bn):
    gamma, beta, mean, var = (np.asarray(w, "float64")
                              for w in bn.get_weights())
    return (x - mean) / np.sqrt(var + BN_EPSILON) * gamma + beta


def relu(x):
    return np.maximum(x, 0.0)


def np_unit(x, unit):
    """Pre-activation bottleneck from the layer's own weights."""
    pre = relu(np_bn(x, unit.bn1))
    y = np_conv(pre, _np(unit.conv1.kernel))
    y = np_conv(relu(np_bn(y, unit.bn2)), _np(unit.conv2.kernel),
                unit.strides)
    y = np_conv(relu(np_bn(y, unit.bn3)), _np(unit.conv3.kernel))
    if x.shape[-1] != unit.filters or unit.strides != 1:
        shortcut = np_conv(pre, _np(unit.shortcut.kernel), unit.strides)
    else:
        shortcut = x
    return y + shortcut


def _np(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), "float64")


def randomize_batch_norm(layer, seed=0):
    """Random gamma/beta/moving statistics for every BN inside `layer`, so
    that a wrong normalization formula changes the output."""
    rng = np.random.default_rng(seed)
    values = []
    for w, value in zip(layer.weights, layer.get_weights(), strict=True):
        kind = w.path.rsplit("/", 1)[-1]
        if kind in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif kind in ("beta", "moving_mean"):
            value = rng.normal(0.0, 0.3, value.shape)
        values.append(np.asarray(value, "float32"))
    layer.set_weights(values)


# ----------------------------------------------------------------------------
# Reference tests


def _layer(filters=8, strides=1, **kwargs):
    return PreActBottleneck(filters, strides=strides, **kwargs)


@pytest.mark.parametrize(
    "channels,filters,strides,size",
    [
        (8, 8, 1, (10, 10)),  # identity shortcut
        (4, 8, 1, (10, 10)),  # projection: channels change
        (8, 8, 2, (10, 10)),  # projection: stride (even size)
        (4, 16, 2, (9, 7)),  # odd sizes: asymmetric "same" padding
    ],
)
def test_matches_numpy_reference(channels, filters, strides, size):
    layer = _layer(filters, strides)
    x = harness.random_inputs([(2, *size, channels)])[0]
    layer.build(x.shape)
    randomize_batch_norm(layer, seed=1)
    got = harness.to_numpy(layer(x, training=False))[0]
    want = np_unit(x.astype("float64"), layer)
    assert got.shape == want.shape == (
        2, -(-size[0] // strides), -(-size[1] // strides), filters
    )
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert (layer.shortcut is not None) == (
        channels != filters or strides != 1
    )


def test_numpy_resize_matches_keras():
    # The reference resize is itself pinned to Keras, up and down (no
    # antialiasing), including sizes that are not integer multiples.
    x = harness.random_inputs([(2, 5, 3, 2)])[0]
    for size in ((9, 7), (13, 4), (2, 2), (10, 6)):
        got = keras.ops.convert_to_numpy(
            keras.ops.image.resize(x, size, interpolation="bilinear")
        )
        want = np_resize_bilinear(x.astype("float64"), size)
        assert got.shape == want.shape == (2, *size, 2)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_numpy_resize_half_pixel_by_hand():
    # 1-D case worked by hand: [0, 1] -> 4 samples at source coordinates
    # -0.25, 0.25, 0.75, 1.25 (half-pixel centres), clamped at the borders.
    x = np.array([0.0, 1.0]).reshape(1, 2, 1, 1)
    got = np_resize_bilinear(x, (4, 1))[0, :, 0, 0]
    np.testing.assert_allclose(got, [0.0, 0.25, 0.75, 1.0])


def test_training_uses_batch_statistics():
    layer = _layer(8)
    x = harness.random_inputs([(4, 8, 8, 8)], scale=3.0)[0] + 5.0
    layer.build(x.shape)
    randomize_batch_norm(layer, seed=2)
    inference = harness.to_numpy(layer(x, training=False))[0]
    training = harness.to_numpy(layer(x, training=True))[0]
    assert not np.allclose(inference, training, atol=1e-3)


# ----------------------------------------------------------------------------
# Harness checks


def test_variable_spatial_size():
    layer = _layer(16, strides=2)
    model = harness.wrap(layer, (None, None, 4))
    randomize_batch_norm(layer, seed=3)
    for size in ((8, 8), (11, 5)):
        x = harness.random_inputs([(2, *size, 4)], seed=size[0])[0]
        got = harness.run(model, x)[0]
        np.testing.assert_allclose(
            got, np_unit(x.astype("float64"), layer), atol=1e-5, rtol=1e-5
        )


def test_output_shape_and_spec():
    layer = _layer(12, strides=2)
    assert layer.compute_output_shape((None, 9, None, 4)) == (
        None, 5, None, 12
    )
    out = layer(keras.Input((9, 7, 4)))
    assert tuple(out.shape) == (None, 5, 4, 12)


def test_mixed_precision():
    harness.assert_mixed_precision(
        lambda **kw: _layer(8, strides=2, **kw), (8, 8, 4)
    )


def test_config_roundtrip():
    harness.assert_config_roundtrip(_layer(12, strides=2, name="unit"))


def test_keras_file_roundtrip(tmp_path):
    layer = _layer(8, strides=2)
    model = harness.wrap(layer, (8, 8, 4))
    randomize_batch_norm(layer, seed=4)
    x = harness.random_inputs([(2, 8, 8, 4)])[0]
    harness.assert_keras_file_roundtrip(model, x, tmp_path)


@pytest.mark.parametrize("channels,strides", [(8, 1), (4, 2)])
def test_gradients_reach_all_weights(channels, strides):
    model = harness.wrap(_layer(8, strides=strides), (8, 8, channels))
    x = harness.random_inputs([(2, 8, 8, channels)])[0]
    harness.assert_gradients_reach_all_weights(model, x)


@pytest.mark.tf_only
def test_jit_matches_eager():
    layer = _layer(8, strides=2)
    model = harness.wrap(layer, (8, 8, 4))
    randomize_batch_norm(layer, seed=5)
    harness.assert_jit_matches_eager(
        model, harness.random_inputs([(2, 8, 8, 4)])[0]
    )


@pytest.mark.tf_only
def test_tflite_matches():
    layer = _layer(8, strides=2)
    model = harness.wrap(layer, (9, 9, 4))
    randomize_batch_norm(layer, seed=6)
    harness.assert_tflite_matches(
        model, harness.random_inputs([(1, 9, 9, 4)])[0]
    )


@pytest.mark.parametrize(
    "dtype,scale",
    [
        ("float32", 1e4),
        # A unit adds its residual branch to its input, so 1e4 inputs give
        # exact outputs near float16's maximum (65504) that may overflow
        # under any correct implementation; the unit has no gate logits to
        # protect, so float16 is checked one decade lower.
        ("mixed_float16", 1e3),
    ],
)
def test_large_inputs_stay_finite(dtype, scale):
    layer = _layer(8, dtype=dtype)
    x = harness.random_inputs([(2, 8, 8, 8)], scale=scale)[0]
    out = harness.to_numpy(keras.ops.cast(layer(x), "float32"))[0]
    assert np.isfinite(out).all()


# ----------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"filters": 6}, "filters"),
        ({"filters": 2}, "filters"),
        ({"filters": 8.0}, "filters"),
        ({"filters": True}, "filters"),
        ({"filters": 8, "strides": 0}, "strides"),
        ({"filters": 8, "strides": 1.5}, "strides"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(
        ValueError, match=rf"PreActBottleneck: invalid `{argument}`"
    ):
        PreActBottleneck(**kwargs)


def test_divisibility_message_suggests_a_fix():
    with pytest.raises(ValueError, match=r"divisible by 4.*e\.g\. 12"):
        PreActBottleneck(10)


@pytest.mark.parametrize(
    "shape", [(None, 8, 8), (None, 8, 8, 4, 1), (None, 8, 8, None)]
)
def test_invalid_input_shape(shape):
    with pytest.raises(
        ValueError, match=r"PreActBottleneck: invalid `inputs shape`"
    ):
        _layer(8).build(shape)
