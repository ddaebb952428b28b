"""Real images for int8 calibration and for the parity figures.

`load_images(source, split, count, input_shape)` gives float32 images
`(count, H, W, C)` in [0, 1]:

- `source="fashion_mnist"`: Fashion-MNIST from the local IDX files
  (`keras_attn.data.fashion_mnist`, nothing downloaded). Calibration reads
  the `train` split and the parity figures the `test` split, so the images
  a model is checked on were never used to choose its quantization ranges.
  A model whose input is not 28 x 28 x 1 gets the images resized
  bilinearly and repeated over its channels (said in the description).
- `source` a path to `.npy` (an image array) or `.npz` (its first array,
  or the one named `images`): uint8 images are scaled by 1/255, float
  images must already be in [0, 1]; `(N, H, W)` gets a channel axis.
"""

from __future__ import annotations

import os

import numpy as np

SOURCES = ("fashion_mnist",)


def _fail(argument, value, expected):
    raise ValueError(
        f"load_images: invalid `{argument}`; expected {expected}. "
        f"Received: {argument}={value!r}"
    )


def _adapt(images, input_shape):
    """`(N, h, w, c)` float32 -> `(N, H, W, C)`: bilinear resize, then
    channels repeated (c = 1) or averaged (C = 1)."""
    height, width, channels = input_shape
    if images.shape[1:3] != (height, width):
        import tensorflow as tf

        images = tf.image.resize(images, (height, width),
                                 method="bilinear").numpy()
    if images.shape[-1] != channels:
        if images.shape[-1] == 1:
            images = np.repeat(images, channels, axis=-1)
        elif channels == 1:
            images = images.mean(axis=-1, keepdims=True)
        else:
            _fail("input_shape", input_shape,
                  f"1 or {images.shape[-1]} channels to match the images")
    return np.clip(images, 0.0, 1.0).astype("float32")


def _from_file(path):
    if path.endswith(".npz"):
        with np.load(path) as data:
            key = "images" if "images" in data.files else data.files[0]
            images = data[key]
    else:
        images = np.load(path)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        _fail("source", path, "an array of images (N, H, W[, C])")
    if images.dtype == np.uint8:
        return images.astype("float32") / 255.0
    images = images.astype("float32")
    if images.min() < 0 or images.max() > 1:
        _fail("source", path,
              "uint8 images, or float images in [0, 1] (the range the "
              "exported signature takes)")
    return images


def load_images(source, split, count, input_shape, start=0):
    """`(images, description)`: `count` float32 images `(count, H, W, C)` in
    [0, 1] from `source`, and a short text saying where they came from.

    Args:
        source: `"fashion_mnist"`, or a path to a `.npy` / `.npz` file.
        split: `"train"` (calibration) or `"test"` (parity); files have no
            splits: calibration takes the first `count` images of a file
            and parity the `count` after them.
        count: number of images (fewer if the source has fewer).
        input_shape: the model's `(H, W, C)`.
        start: index of the first image.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        _fail("count", count, "an integer >= 1")
    if source == "fashion_mnist":
        from keras_attn.data.fashion_mnist import load_fashion_mnist

        images, _ = load_fashion_mnist(split)
        images = images[start:start + count, ..., None]
        description = f"fashion_mnist {split}[{start}:{start + len(images)}]"
        images = images.astype("float32") / 255.0
    elif isinstance(source, (str, os.PathLike)) and str(source).endswith(
        (".npy", ".npz")
    ):
        path = str(source)
        if not os.path.exists(path):
            _fail("source", path, "an existing .npy or .npz file")
        images = _from_file(path)
        if split == "test":
            start += count if len(images) >= 2 * count else 0
        images = images[start:start + count]
        name = os.path.basename(path)
        description = f"{name}[{start}:{start + len(images)}]"
    else:
        _fail("source", source,
              f"one of {list(SOURCES)} or a path to a .npy / .npz file")
    if tuple(images.shape[1:]) != tuple(input_shape):
        description += (f", adapted from {tuple(images.shape[1:])} to "
                        f"{tuple(input_shape)}")
    return _adapt(images, tuple(input_shape)), description
