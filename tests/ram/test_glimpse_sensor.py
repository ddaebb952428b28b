"""Tests for `keras_attn.ram.GlimpseSensor` against NumPy / SciPy crops."""

import keras
import numpy as np
import pytest
from keras import ops
from scipy import ndimage

from keras_attn.ram import GlimpseSensor
from tests import harness


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _images(shape, seed=0):
    return harness.random_inputs([shape], seed=seed)[0]


def to_normalised(u, size):
    """Pixel coordinate -> normalised coordinate (corners convention)."""
    return 2.0 * np.asarray(u, "float64") / (size - 1) - 1.0


def np_crop_glimpse(images, starts, glimpse_size, num_scales, scale_factor):
    """Zero-padded integer crops shrunk by block means.

    `starts[n] = (c0, r0)`: the first column / row of the FINEST patch;
    coarser patches share its centre, so they start `(P_i - P_0) / 2`
    pixels earlier (an integer in every case the tests use).
    """
    images = np.asarray(images, "float64")
    batch, height, width, channels = images.shape
    g = glimpse_size
    pad = g * scale_factor ** (num_scales - 1) + max(height, width) + 8
    padded = np.zeros((batch, height + 2 * pad, width + 2 * pad, channels))
    padded[:, pad:pad + height, pad:pad + width] = images
    out = np.zeros((batch, num_scales, g, g, channels))
    for n, (c0, r0) in enumerate(starts):
        for i in range(num_scales):
            side = g * scale_factor**i
            shift = (side - g) // 2
            assert (side - g) % 2 == 0
            r, c = r0 - shift + pad, c0 - shift + pad
            crop = padded[n, r:r + side, c:c + side]
            block = side // g
            out[n, i] = crop.reshape(g, block, g, block, channels).mean((1, 3))
    return out


def np_subpixel_glimpse(images, locations, glimpse_size, num_scales,
                        scale_factor):
    """Bilinear reads (scipy, zero outside) of every patch pixel, then block
    means. Pixel j of a side-P patch reads u + j - (P - 1) / 2."""
    images = np.asarray(images, "float64")
    batch, height, width, channels = images.shape
    g = glimpse_size
    out = np.zeros((batch, num_scales, g, g, channels))
    for n in range(batch):
        u = (locations[n, 0] + 1) * (width - 1) / 2
        v = (locations[n, 1] + 1) * (height - 1) / 2
        for i in range(num_scales):
            side = g * scale_factor**i
            offsets = np.arange(side) - (side - 1) / 2
            rows, cols = np.meshgrid(v + offsets, u + offsets, indexing="ij")
            crop = np.stack(
                [
                    ndimage.map_coordinates(
                        images[n, ..., c], [rows, cols], order=1,
                        mode="grid-constant", cval=0.0,
                    )
                    for c in range(channels)
                ],
                axis=-1,
            )
            block = side // g
            out[n, i] = crop.reshape(g, block, g, block, channels).mean((1, 3))
    return out


# ----------------------------------------------------------------------------
# Numerics


def test_even_glimpse_matches_integer_crops():
    # g=4, s=2: sides 4, 8, 16, all even, so a centre on a half pixel puts
    # every patch on integer pixels. H != W catches swapped axes.
    height, width = 20, 26
    images = _images((6, height, width, 3))
    starts = [(0, 0), (5, 7), (-3, 2), (22, 16), (24, -6), (-20, 30)]
    centres = np.array([(c0 + 1.5, r0 + 1.5) for c0, r0 in starts])
    locations = np.stack(
        [to_normalised(centres[:, 0], width),
         to_normalised(centres[:, 1], height)], axis=-1,
    ).astype("float32")
    assert (np.abs(locations) > 1).any(), "must test beyond the border"
    sensor = GlimpseSensor(glimpse_size=4, num_scales=3, scale_factor=2)
    out = _np(sensor(images, locations))
    assert out.shape == (6, 3, 4, 4, 3)
    ref = np_crop_glimpse(images, starts, 4, 3, 2)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    # The last patch lies entirely outside the image: all zeros.
    assert np.all(out[5] == 0)


def test_odd_glimpse_at_and_beyond_the_border():
    # g=3, s=3: sides 3, 9 (odd), so the centre sits on a pixel; x = +-1
    # is the centre of the first / last column exactly.
    height, width = 9, 13
    images = _images((7, height, width, 2), seed=1)
    locations = np.array(
        [[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.0, 0.0],
         [-1.5, -1.5], [1.5, 0.5], [-3.0, 2.5]], "float32",
    )
    u = (locations[:, 0] + 1) * (width - 1) / 2
    v = (locations[:, 1] + 1) * (height - 1) / 2
    assert np.allclose(u, np.round(u)) and np.allclose(v, np.round(v))
    starts = [
        (int(round(a)) - 1, int(round(b)) - 1)
        for a, b in zip(u, v, strict=True)
    ]
    sensor = GlimpseSensor(glimpse_size=3, num_scales=2, scale_factor=3)
    out = _np(sensor(images, locations))
    ref = np_crop_glimpse(images, starts, 3, 2, 3)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    # At x = y = -1 the fovea's centre pixel is the image's corner pixel.
    np.testing.assert_allclose(out[0, 0, 1, 1], images[0, 0, 0], atol=1e-6)
    assert np.all(out[6] == 0)


@pytest.mark.parametrize("glimpse_size,num_scales,scale_factor",
                         [(4, 3, 2), (5, 2, 2), (3, 1, 2), (2, 2, 3)])
def test_subpixel_locations_match_scipy(glimpse_size, num_scales,
                                        scale_factor):
    height, width = 11, 16
    images = _images((5, height, width, 2), seed=2)
    rng = np.random.default_rng(3)
    locations = rng.uniform(-1.4, 1.4, (5, 2)).astype("float32")
    sensor = GlimpseSensor(glimpse_size, num_scales, scale_factor)
    out = _np(sensor(images, locations))
    ref = np_subpixel_glimpse(images, locations.astype("float64"),
                              glimpse_size, num_scales, scale_factor)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_patch_is_centred_on_the_location():
    # A single bright pixel at the location lands at the centre of every
    # scale (odd sides): the fovea reads it at full value, coarser scales
    # at 1 / block^2 (its share of the centre block's mean).
    images = np.zeros((1, 15, 15, 1), "float32")
    images[0, 4, 10, 0] = 1.0
    location = np.array([[to_normalised(10, 15), to_normalised(4, 15)]],
                        "float32")
    out = _np(GlimpseSensor(3, 3, 3)(images, location))
    for i in range(3):
        centre = np.zeros((3, 3))
        centre[1, 1] = 1.0 / 9**i
        np.testing.assert_allclose(out[0, i, ..., 0], centre, atol=1e-6)


def test_gradient_reaches_the_image():
    images = keras.Input((10, 12, 2))
    locations = keras.Input((2,))
    sensor = GlimpseSensor(4, 2, 2)
    probe = keras.layers.Conv2D(2, 1, name="probe")
    model = keras.Model(
        [images, locations], sensor(probe(images), locations)
    )
    grads = harness.gradients(
        model, harness.random_inputs([(2, 10, 12, 2), (2, 2)], seed=4)
    )
    assert all(g is not None and np.any(g != 0) for g in grads.values())


# ----------------------------------------------------------------------------
# Keras contract


def test_output_shape_symbolic_and_eager():
    sensor = GlimpseSensor(glimpse_size=6, num_scales=2, scale_factor=2)
    model = harness.wrap(sensor, [(16, 20, 3), (2,)])
    assert tuple(model.output.shape) == (None, 2, 6, 6, 3)
    assert sensor.compute_output_shape((4, 16, 20, 3), (4, 2)) == (
        4, 2, 6, 6, 3
    )
    out = harness.run(model, harness.random_inputs([(4, 16, 20, 3), (4, 2)]))
    assert out[0].shape == (4, 2, 6, 6, 3)


def test_unknown_image_size():
    model = harness.wrap(GlimpseSensor(4, 2, 2), [(None, None, 2), (2,)])
    inputs = harness.random_inputs([(2, 10, 12, 2), (2, 2)], seed=7)
    np.testing.assert_allclose(
        harness.run(model, inputs)[0],
        _np(GlimpseSensor(4, 2, 2)(*inputs)), atol=1e-6,
    )


def test_config_and_keras_file_roundtrip(tmp_path):
    sensor = GlimpseSensor(glimpse_size=5, num_scales=2, scale_factor=3)
    harness.assert_config_roundtrip(sensor)
    model = harness.wrap(sensor, [(12, 10, 1), (2,)])
    inputs = harness.random_inputs([(2, 12, 10, 1), (2, 2)], seed=5)
    path = str(tmp_path / "sensor.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        harness.run(loaded, inputs)[0], harness.run(model, inputs)[0],
        atol=1e-6,
    )


def test_mixed_precision():
    harness.assert_mixed_precision(
        lambda **kw: GlimpseSensor(4, 2, 2, **kw), [(12, 14, 3), (2,)]
    )


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"glimpse_size": 0}, "glimpse_size"),
        ({"num_scales": 1.5}, "num_scales"),
        ({"scale_factor": 1.5}, "scale_factor"),
        ({"scale_factor": True}, "scale_factor"),
    ],
)
def test_bad_arguments_name_layer_and_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"GlimpseSensor.*{argument}"):
        GlimpseSensor(**kwargs)


@pytest.mark.parametrize(
    "shapes,argument",
    [
        ([(8, 8), (2,)], "images shape"),
        ([(1, 8, 3), (2,)], "images height"),
        ([(8, 8, 3), (3,)], "locations shape"),
    ],
)
def test_bad_shapes_name_layer_and_argument(shapes, argument):
    with pytest.raises(ValueError, match=f"GlimpseSensor.*{argument}"):
        harness.wrap(GlimpseSensor(2, 1, 2), shapes)


@pytest.mark.tf_only
def test_tflite_builtins_match():
    from keras_attn.export.tflite_runner import op_names

    model = harness.wrap(GlimpseSensor(4, 3, 2), [(20, 18, 2), (2,)])
    inputs = harness.random_inputs([(2, 20, 18, 2), (2, 2)], seed=6)
    flatbuffer = harness.assert_tflite_matches(model, inputs, atol=1e-5)
    assert not any("Flex" in name for name in op_names(flatbuffer))
