"""Fashion-MNIST from local IDX files, no download.

Debian's `dataset-fashion-mnist` package installs the original gzipped IDX
files in `/usr/share/datasets/fashion-mnist`. They are re-compressed, so
their checksums differ from the ones tensorflow-datasets registers; reading
the IDX format directly is both simpler and checksum-free. The pixels and
labels are the originals (Xiao et al., 2017, https://arxiv.org/abs/1708.07747).
"""

from __future__ import annotations

import gzip
import os

import numpy as np

DEFAULT_DIRS = ("/usr/share/datasets/fashion-mnist",)
ENV_VAR = "KERAS_ATTN_FASHION_MNIST_DIR"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on this machine and cannot be downloaded here."""


def _find(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    # IDX header: two zero bytes, a type code (0x08 = uint8), the rank, then
    # one big-endian int32 per dimension.
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    rank = data[3]
    dims = np.frombuffer(data, ">i4", count=rank, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(dims)


def data_dir(directory=None):
    """The first directory holding the Fashion-MNIST IDX files."""
    candidates = [directory] if directory else []
    if os.environ.get(ENV_VAR):
        candidates.append(os.environ[ENV_VAR])
    candidates.extend(DEFAULT_DIRS)
    for candidate in candidates:
        if candidate and _find(candidate, _FILES["test"][0]):
            return candidate
    raise DatasetNotFoundError(
        "Fashion-MNIST IDX files not found in "
        f"{[c for c in candidates if c]}. Install them with "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put "
        "the four *-ubyte(.gz) files from "
        "github.com/zalandoresearch/fashion-mnist in a directory and set "
        f"{ENV_VAR} to it."
    )


def load_fashion_mnist(split="train", directory=None):
    """Load one split of Fashion-MNIST.

    Args:
        split: `"train"` (60,000 images) or `"test"` (10,000 images).
        directory: where the IDX files are; defaults to `$KERAS_ATTN_
            FASHION_MNIST_DIR`, then Debian's install location.

    Returns:
        `(images, labels)`: uint8 `(N, 28, 28)` and int64 `(N,)`.

    Raises:
        DatasetNotFoundError: the files are not on this machine (the message
            says how to get them); nothing is downloaded.
    """
    if split not in _FILES:
        raise ValueError(
            f"load_fashion_mnist: invalid `split`; expected one of "
            f"{list(_FILES)}. Received: split={split!r}"
        )
    root = data_dir(directory)
    images_stem, labels_stem = _FILES[split]
    paths = [_find(root, images_stem), _find(root, labels_stem)]
    if None in paths:
        raise DatasetNotFoundError(
            f"Fashion-MNIST {split} split incomplete in {root}: need "
            f"{images_stem} and {labels_stem} (optionally .gz)."
        )
    images = _read_idx(paths[0])
    labels = _read_idx(paths[1]).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images, {len(labels)} labels")
    return images, labels
