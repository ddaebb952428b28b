"""Fashion-MNIST as NumPy batches, for training on JAX or torch without
TensorFlow (the recipes' path off the TensorFlow backend).

`fashion_mnist_splits` cuts the training split into a validation slice and
the training images after it, as `keras_attn.data.load(..., skip=)` does on
tf.data; `ArrayBatches` serves them to `model.fit`.

Example:
>>> from keras_attn.data.array_batches import ArrayBatches
>>> from keras_attn.data.array_batches import fashion_mnist_splits
>>> splits = fashion_mnist_splits({"train": 256, "val": 64, "test": 32})
>>> batches = ArrayBatches(*splits["train"], 100, shuffle_seed=0)
>>> len(batches), batches[0][0].shape
(2, (100, 28, 28, 1))
"""

from __future__ import annotations

import keras
import numpy as np

from keras_attn.data.fashion_mnist import load_fashion_mnist


def fashion_mnist_splits(counts):
    """`{split: (images, labels)}` for `train`, `val` and `test`: `val` is
    the first `counts["val"]` training images, `train` the
    `counts["train"]` after them, `test` the first `counts["test"]` test
    images. Images float32 in [0, 1] with a channel axis, labels int32."""

    def scaled(x, y):
        return x[..., None].astype("float32") / 255.0, y.astype("int32")

    x, y = load_fashion_mnist("train")
    val = counts["val"]
    train = slice(val, val + counts["train"])
    test_x, test_y = load_fashion_mnist("test")
    return {"train": scaled(x[train], y[train]),
            "val": scaled(x[:val], y[:val]),
            "test": scaled(test_x[:counts["test"]], test_y[:counts["test"]])}


class ArrayBatches(keras.utils.PyDataset):
    """Batches of NumPy arrays; with `shuffle_seed` a new order every epoch
    and only whole batches (as the recipes' tf.data training stream)."""

    def __init__(self, x, y, batch_size, shuffle_seed=None):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng = (np.random.default_rng(shuffle_seed)
                    if shuffle_seed is not None else None)
        self.order = np.arange(len(x))
        self.on_epoch_end()

    def __len__(self):
        if self.rng is not None:
            return max(1, len(self.x) // self.batch_size)
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        rows = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        if self.rng is not None:
            self.order = self.rng.permutation(len(self.x))
