import time

import numpy as np
import pytest

from keras_attn.data import CLASS_NAMES
from keras_attn.data import DatasetNotFoundError
from keras_attn.data import load_fashion_mnist


def test_fashion_mnist_test_split_is_the_real_data():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    # the published test split is balanced: 1,000 images per class
    assert np.bincount(labels).tolist() == [1000] * len(CLASS_NAMES)
    assert labels[:5].tolist() == [9, 2, 1, 1, 6]  # first labels of t10k
    assert 60 < images.mean() < 90 and images.max() == 255


def test_missing_files_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "keras_attn.data.fashion_mnist.DEFAULT_DIRS", (str(tmp_path),)
    )
    monkeypatch.delenv("KERAS_ATTN_FASHION_MNIST_DIR", raising=False)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="apt-get install"):
        load_fashion_mnist("train", directory=str(tmp_path / "nowhere"))
    assert time.perf_counter() - start < 1.0
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")


def test_reads_uncompressed_idx_from_env_dir(tmp_path, monkeypatch):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], np.uint8)
    header = bytes([0, 0, 8, 3]) + np.array([2, 28, 28], ">i4").tobytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(
        header + images.tobytes()
    )
    header = bytes([0, 0, 8, 1]) + np.array([2], ">i4").tobytes()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        header + labels.tobytes()
    )
    monkeypatch.setenv("KERAS_ATTN_FASHION_MNIST_DIR", str(tmp_path))
    x, y = load_fashion_mnist("test")
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [3, 7]
