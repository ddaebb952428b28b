"""`serve_image_bytes` decodes PNG, JPEG (also CMYK), BMP, GIF and WebP to
the model's channel count, 1 or 3: TensorFlow's BMP, GIF and WebP decoders
and a CMYK JPEG refuse `channels=1`, so those decode to their own channels
and are converted (`export.serving_graph.ServingGraph.decode_images`)."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_attn.export.serving_graph import ServingGraph

pytestmark = pytest.mark.tf_only

SIDE = 8
# A smooth gray ramp: formats that store colour keep it (nearly) exactly.
GRAY = np.add.outer(np.arange(SIDE), np.arange(SIDE)).astype(np.uint8) * 16


def _graph(channels):
    inputs = keras.Input((SIDE, SIDE, channels))
    x = keras.layers.Flatten()(inputs)
    return ServingGraph(keras.Model(
        inputs, keras.layers.Dense(3, activation="softmax")(x)))


def _encode(mode, fmt, **options):
    image = Image.fromarray(GRAY).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


LOSSLESS = [("L", "PNG", {}), ("LA", "PNG", {}), ("RGBA", "PNG", {}),
            ("RGB", "BMP", {}), ("L", "BMP", {}), ("RGB", "GIF", {}),
            ("RGB", "WEBP", {"lossless": True}),
            ("RGBA", "WEBP", {"lossless": True})]
LOSSY = [("L", "JPEG", {"quality": 100}), ("RGB", "JPEG", {"quality": 100}),
         ("CMYK", "JPEG", {"quality": 100})]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "mode, fmt, options", LOSSLESS + LOSSY,
    ids=[f"{fmt}-{mode}" for mode, fmt, _ in LOSSLESS + LOSSY])
def test_every_format_decodes_to_the_model_channels(channels, mode, fmt,
                                                    options):
    data = _encode(mode, fmt, **options)
    decoded = _graph(channels).decode_images(tf.constant([data])).numpy()
    assert decoded.shape == (1, SIDE, SIDE, channels)
    want = np.repeat(GRAY[None, ..., None] / 255.0, channels, axis=-1)
    # Gray through RGB and back rounds by at most a grey level. JPEG, even
    # at quality 100, moves this 8x8 ramp's steps by up to 9 levels (the
    # same for L, RGB and CMYK files: the loss is the format's, not the
    # conversion's).
    bound = 1.5 / 255 if (mode, fmt, options) in LOSSLESS else 12 / 255
    np.testing.assert_allclose(decoded, want, atol=bound)


def test_a_gif_gives_its_first_frame():
    frames = [Image.fromarray(GRAY).convert("RGB"),
              Image.fromarray(255 - GRAY).convert("RGB")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    decoded = _graph(1).decode_images(tf.constant([buffer.getvalue()]))
    np.testing.assert_allclose(decoded.numpy()[0, ..., 0], GRAY / 255.0,
                               atol=1.5 / 255)
