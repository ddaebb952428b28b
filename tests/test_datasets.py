"""`load(name, split)`: offline files, tfds (mocked), augmentation, failures.

The augmented CIFAR/SVHN images are checked against NumPy crops of the
zero-padded originals, so a wrong offset, flip or padding fails.
"""

import contextlib
import time

import numpy as np
import pytest

from keras_attn.data import DATASETS
from keras_attn.data import TASKS
from keras_attn.data import DatasetNotFoundError
from keras_attn.data import dataset_info
from keras_attn.data import load
from keras_attn.data import load_arrays
from keras_attn.data import load_fashion_mnist
from keras_attn.data import ram_task

pytestmark = pytest.mark.tf_only  # tf.data pipelines

tfds = pytest.importorskip("tensorflow_datasets")


@contextlib.contextmanager
def mocked(num_examples=20):
    # An empty data_dir too: mock_data must be what answers, never a real
    # prepared copy on the machine.
    import tempfile

    with tempfile.TemporaryDirectory() as empty, \
            tfds.testing.mock_data(num_examples=num_examples):
        yield empty


def _collect(ds):
    batches = list(ds.as_numpy_iterator())
    return (np.concatenate([b[0] for b in batches]),
            np.concatenate([b[1] for b in batches]), batches)


def _as_float(images):
    return images.astype(np.float32) / np.float32(255)


def _placements(augmented, original, pad=4):
    """Every (row, col, mirrored) whose crop of the padded original matches."""
    h, w, _ = original.shape
    padded = np.pad(_as_float(original), ((pad, pad), (pad, pad), (0, 0)))
    found = []
    for r in range(2 * pad + 1):
        for c in range(2 * pad + 1):
            crop = padded[r:r + h, c:c + w]
            for mirrored, candidate in ((0, crop), (1, crop[:, ::-1])):
                if np.array_equal(candidate, augmented):
                    found.append((r, c, mirrored))
    return found


def test_fashion_mnist_offline_from_debian_files():
    images, labels = load_fashion_mnist("test")
    x, y, batches = _collect(load("fashion_mnist", "test", batch_size=5,
                                  limit=12))
    assert [b[0].shape for b in batches] == [(5, 28, 28, 1)] * 2 + [
        (2, 28, 28, 1)]
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], _as_float(images[:12]))
    np.testing.assert_array_equal(y, labels[:12])
    assert x.min() == 0.0 and x.max() == 1.0

    # train: shuffled (a permutation of the same examples), no augmentation,
    # incomplete last batch dropped
    images, labels = load_fashion_mnist("train")
    x, y, batches = _collect(load("fashion_mnist", batch_size=4, limit=10,
                                  seed=7))
    assert [b[0].shape[0] for b in batches] == [4, 4]
    order = [
        [i for i in range(10) if np.array_equal(x[k, ..., 0],
                                                _as_float(images[i]))]
        for k in range(8)
    ]
    assert all(len(o) == 1 for o in order)
    order = [o[0] for o in order]
    assert len(set(order)) == 8 and order != list(range(8))
    np.testing.assert_array_equal(y, labels[order])


def test_fashion_mnist_falls_back_to_tfds_then_fails_with_both_hints(
        tmp_path, monkeypatch):
    monkeypatch.setattr("keras_attn.data.fashion_mnist.DEFAULT_DIRS",
                        (str(tmp_path / "no-debian"),))
    monkeypatch.delenv("KERAS_ATTN_FASHION_MNIST_DIR", raising=False)
    with mocked() as empty:
        x, y, _ = _collect(load("fashion_mnist", "test", batch_size=8,
                                limit=8, data_dir=empty))
    assert x.shape == (8, 28, 28, 1) and np.all((0 <= y) & (y < 10))
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as error:
        load("fashion_mnist", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 5.0
    assert "apt-get install dataset-fashion-mnist" in str(error.value)
    assert "download=True" in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100",
                                  "svhn_cropped"])
def test_tfds_datasets_shapes_range_labels_and_info(name):
    spec = dataset_info(name)
    with mocked() as empty:
        originals, labels = load_arrays(name, "test", limit=12,
                                        data_dir=empty)
        x, y, batches = _collect(load(name, "test", batch_size=5, limit=12,
                                      data_dir=empty))
    assert [b[0].shape for b in batches] == [(5, *spec.input_shape)] * 2 + [
        (2, *spec.input_shape)]
    assert x.dtype == np.float32 and y.dtype == np.int32
    # test split: file order, no augmentation, pixels / 255
    np.testing.assert_array_equal(x, _as_float(originals))
    np.testing.assert_array_equal(y, labels)
    assert np.all((0 <= y) & (y < spec.num_classes))
    assert len(spec.class_names) == spec.num_classes
    assert len(set(spec.class_names)) == spec.num_classes


def test_cifar100_class_names_are_the_sorted_fine_labels():
    names = dataset_info("cifar100").class_names
    assert len(names) == 100 and list(names) == sorted(names)
    assert {"trout", "apple", "worm", "maple_tree"} <= set(names)


def test_digits_are_not_augmented():
    with mocked() as empty:
        plain, _, _ = _collect(load("mnist", "train", batch_size=8, limit=16,
                                    shuffle=False, augment=False,
                                    data_dir=empty))
        augmented, _, _ = _collect(load("mnist", "train", batch_size=8,
                                        limit=16, shuffle=False,
                                        data_dir=empty))
    np.testing.assert_array_equal(plain, augmented)


@pytest.mark.parametrize("name, flips", [("cifar10", True),
                                         ("svhn_cropped", False)])
def test_crop_and_flip_match_numpy_crops_of_padded_originals(name, flips):
    with mocked() as empty:
        originals, labels = load_arrays(name, "train", limit=16,
                                        data_dir=empty)
        x, y, _ = _collect(load(name, "train", batch_size=8, limit=16,
                                shuffle=False, seed=3, data_dir=empty))
        again, _, _ = _collect(load(name, "train", batch_size=8, limit=16,
                                    shuffle=False, seed=3, data_dir=empty))
        other, _, _ = _collect(load(name, "train", batch_size=8, limit=16,
                                    shuffle=False, seed=4, data_dir=empty))
    np.testing.assert_array_equal(y, labels)
    found = [_placements(x[i], originals[i]) for i in range(16)]
    assert all(len(f) == 1 for f in found), found
    draws = [f[0] for f in found]
    assert len({d[:2] for d in draws}) > 5  # crops are spread out
    mirrored = sum(d[2] for d in draws)
    if flips:
        assert 0 < mirrored < 16
    else:
        assert mirrored == 0  # SVHN: digits are never mirrored
    np.testing.assert_array_equal(x, again)  # same seed, same batches
    assert not np.array_equal(x, other)


def test_epochs_redraw_and_resume():
    def epochs(**kwargs):
        return load("cifar10", "train", batch_size=8, limit=8, seed=1,
                    data_dir=empty, **kwargs)

    with mocked() as empty:
        stream = [b for b in epochs(repeat=True).take(3).as_numpy_iterator()]
        one_pass, _, _ = _collect(epochs())
        second, _, _ = _collect(epochs(first_epoch=1))
    np.testing.assert_array_equal(stream[0][0], one_pass)
    np.testing.assert_array_equal(stream[1][0], second)
    assert not np.array_equal(stream[0][0], stream[1][0])
    # shuffled each epoch: same examples, new order
    assert sorted(stream[0][1]) == sorted(stream[1][1])


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_dataset_fails_fast_and_writes_nothing(name, tmp_path):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="download=True") as error:
        load(name, "train", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 5.0
    assert f"tfds.load('{name}')" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_download_removes_only_what_it_created(tmp_path, monkeypatch):
    (tmp_path / "downloads").mkdir()  # the user's earlier downloads
    (tmp_path / "downloads" / "keep").write_text("x")

    def broken_download(name, data_dir=None, **kwargs):
        partial = tmp_path / name / "3.0.2.incomplete"
        partial.mkdir(parents=True)
        (partial / "shard-0").write_bytes(b"half")
        raise OSError("network unreachable")

    monkeypatch.setattr(tfds, "load", broken_download)
    with pytest.raises(DatasetNotFoundError, match="network unreachable"):
        load("cifar10", data_dir=str(tmp_path), download=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]
    assert (tmp_path / "downloads" / "keep").exists()


def test_ram_tasks_delegate_to_ram_task():
    # test split: Fashion-MNIST files; train (shuffled, redrawn, last batch
    # dropped): MNIST through mocked tfds, which reads only `limit` images
    x, y, _ = _collect(load("cluttered60", "test", batch_size=4, limit=10,
                            seed=2))
    rx, ry, _ = _collect(ram_task("cluttered60", "test", batch_size=4,
                                  limit=10, seed=2))
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)
    assert x.shape == (10, *dataset_info("cluttered60").input_shape)
    with mocked() as empty:
        x, y, _ = _collect(load("translated60", "train", batch_size=4,
                                limit=10, seed=5, source="mnist",
                                data_dir=empty))
        rx, ry, _ = _collect(ram_task("translated60", "train", batch_size=4,
                                      limit=10, seed=5, source="mnist",
                                      data_dir=empty, drop_remainder=True))
    assert x.shape == (8, 60, 60, 1) and y.dtype == np.int32
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)


def test_info_covers_every_name_without_reading_data():
    for name in DATASETS:
        spec = dataset_info(name)
        assert spec.num_examples["train"] > spec.num_examples["test"] > 0
        assert len(spec.input_shape) == 3
    assert set(TASKS) <= set(DATASETS)
    assert dataset_info("cifar10").augmentation == "crop+flip"
    assert dataset_info("svhn_cropped").augmentation == "crop"
    assert dataset_info("mnist").augmentation == "none"
    assert dataset_info("cluttered100").input_shape == (100, 100, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="imagenet"), "name"),
        (dict(split="validation"), "split"),
        (dict(batch_size=0), "batch_size"),
        (dict(limit=0), "limit"),
        (dict(augment="yes"), "augment"),
        (dict(name="cluttered60", source="cifar10"), "source"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load(**{"limit": 4, **kwargs})


def test_skip_and_limit_take_disjoint_slices_offline():
    # A validation slice held out of the training split (`limit=v`) and the
    # training images after it (`skip=v`) share no image.
    images, labels = load_fashion_mnist("train")
    val, _, _ = _collect(load("fashion_mnist", "train", batch_size=8,
                              limit=20, shuffle=False,
                              drop_remainder=False))
    train, train_y, _ = _collect(load("fashion_mnist", "train",
                                      batch_size=8, skip=20, limit=40,
                                      drop_remainder=False))
    np.testing.assert_array_equal(val[..., 0], _as_float(images[:20]))
    # Shuffled, but exactly the images [20, 60).
    order = np.sort(train_y)
    np.testing.assert_array_equal(order, np.sort(labels[20:60]))
    seen = {x.tobytes() for x in train}
    assert seen == {x.tobytes() for x in _as_float(images[20:60, ..., None])}
    assert not seen & {x.tobytes() for x in val}


def test_skip_and_limit_through_tfds_mock_data():
    with mocked(num_examples=30) as empty:
        whole, whole_y = load_arrays("mnist", "train", data_dir=empty)
        head, _ = load_arrays("mnist", "train", limit=10, data_dir=empty)
        tail, tail_y = load_arrays("mnist", "train", skip=10, limit=15,
                                   data_dir=empty)
        rest, _ = load_arrays("mnist", "train", skip=10, data_dir=empty)
    np.testing.assert_array_equal(head, whole[:10])
    np.testing.assert_array_equal(tail, whole[10:25])
    np.testing.assert_array_equal(tail_y, whole_y[10:25])
    np.testing.assert_array_equal(rest, whole[10:])
    assert not {x.tobytes() for x in head} & {x.tobytes() for x in tail}


def test_finite_datasets_state_their_batches():
    # Keras reads the cardinality: without it every evaluation of a finite
    # dataset ends with "Your input ran out of data".
    import tensorflow as tf

    assert int(load("fashion_mnist", "test", batch_size=5,
                    limit=12).cardinality()) == 3
    assert int(load("fashion_mnist", "train", batch_size=5,
                    limit=12).cardinality()) == 2
    assert int(load("fashion_mnist", "train", batch_size=5, limit=12,
                    repeat=True).cardinality()) == tf.data.INFINITE_CARDINALITY
    assert int(ram_task("translated60", "test", batch_size=4,
                        limit=6).cardinality()) == 2
    with pytest.raises(ValueError, match="skip"):
        load("fashion_mnist", "train", skip=-1)
