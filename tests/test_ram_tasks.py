"""RAM tasks (Mnih et al. 2014, Sec. 4.1): canvases checked in NumPy."""

import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_attn.data import TASK_SPECS
from keras_attn.data import TASKS
from keras_attn.data import DatasetNotFoundError
from keras_attn.data import _common as data_common
from keras_attn.data import clutter
from keras_attn.data import load_fashion_mnist
from keras_attn.data import ram_task
from keras_attn.data import ram_tasks
from keras_attn.data import translate

pytestmark = pytest.mark.tf_only  # tf.data pipelines


@pytest.fixture(scope="module")
def test_split():
    images, labels = load_fashion_mnist("test")
    return images[:12], labels[:12]


def _collect(ds):
    batches = list(ds.as_numpy_iterator())
    return (np.concatenate([b[0] for b in batches]),
            np.concatenate([b[1] for b in batches]), batches)


def _find_placements(canvas, image):
    """All (row, col) where `canvas` is `image` inside and 0 outside."""
    s, h, w = canvas.shape[0], *image.shape
    found = []
    for r in range(s - h + 1):
        for c in range(s - w + 1):
            if not np.array_equal(canvas[r:r + h, c:c + w], image):
                continue
            outside = canvas.copy()
            outside[r:r + h, c:c + w] = 0
            if not outside.any():
                found.append((r, c))
    return found


def _numpy_clutter(pool, offsets, pieces, canvas_size, piece=8):
    """Independent reference: paste the image, then max in the pieces."""
    n, h, w = pool.shape
    out = np.zeros((n, canvas_size, canvas_size), np.float32)
    for i in range(n):
        r, c = offsets[i]
        out[i, r:r + h, c:c + w] = pool[i]
        for j, cr, cc, pr, pc in pieces[i]:
            crop = pool[j, cr:cr + piece, cc:cc + piece]
            window = out[i, pr:pr + piece, pc:pc + piece]
            np.maximum(window, crop, out=window)
    return out


@pytest.mark.parametrize("name", TASKS)
def test_shapes_dtypes_range_and_labels(name, test_split):
    size = TASK_SPECS[name].canvas_size
    x, y, batches = _collect(
        ram_task(name, "test", batch_size=5, limit=12, seed=0)
    )
    assert [b[0].shape for b in batches] == [
        (5, size, size, 1), (5, size, size, 1), (2, size, size, 1)
    ]
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() <= 1.0
    # test split: file order, real labels
    np.testing.assert_array_equal(y, test_split[1])
    # every canvas holds at least its own image's ink
    ink = test_split[0].reshape(12, -1).sum(1) / 255.0
    assert np.all(x.reshape(12, -1).sum(1) >= ink - 1e-3)


def test_centered_is_the_image(test_split):
    x, _, _ = _collect(ram_task("centered28", "test", batch_size=12,
                                limit=12))
    np.testing.assert_array_equal(x[..., 0], test_split[0] / np.float32(255))


def test_translated_digit_intact_at_one_position(test_split):
    images = test_split[0].astype(np.float32) / np.float32(255)
    x, _, _ = _collect(ram_task("translated60", "test", batch_size=12,
                                limit=12, seed=5))
    found = [_find_placements(x[i, ..., 0], images[i]) for i in range(12)]
    assert all(len(f) == 1 for f in found), found
    # the pure function draws the same positions, and reports them
    canvas, params = translate(test_split[0], 60, seed=5, return_params=True)
    np.testing.assert_array_equal(canvas, x)
    assert [tuple(o) for o in params["offsets"]] == [f[0] for f in found]
    assert params["offsets"].min() >= 0 and params["offsets"].max() <= 32
    assert len({tuple(o) for o in params["offsets"]}) > 6  # spread out


@pytest.mark.parametrize("name", ["cluttered60", "cluttered100"])
def test_cluttered_matches_independent_reference(name, test_split):
    size, k = TASK_SPECS[name]
    pool = test_split[0].astype(np.float32) / np.float32(255)
    canvas, params = clutter(test_split[0], size, k, seed=3,
                             return_params=True)
    offsets, pieces = params["offsets"], params["pieces"]
    assert canvas.shape == (12, size, size, 1) and pieces.shape == (12, k, 5)
    assert np.all(pieces[..., 0] != np.arange(12)[:, None])  # OTHER images
    assert pieces[..., 0].min() >= 0 and pieces[..., 0].max() < 12
    assert pieces[..., 1:3].min() >= 0 and pieces[..., 1:3].max() <= 20
    assert pieces[..., 3:].min() >= 0 and pieces[..., 3:].max() <= size - 8
    np.testing.assert_array_equal(
        canvas[..., 0], _numpy_clutter(pool, offsets, pieces, size)
    )
    for i in range(12):
        (r, c), got = offsets[i], canvas[i, ..., 0]
        # the digit is all there (clutter only brightens it)...
        assert np.all(got[r:r + 28, c:c + 28] >= pool[i])
        # ...and every other lit pixel lies in one of the pasted pieces
        digit = np.zeros_like(got)
        digit[r:r + 28, c:c + 28] = pool[i]
        covered = np.zeros(got.shape, bool)
        for _, _, _, pr, pc in pieces[i]:
            covered[pr:pr + 8, pc:pc + 8] = True
        assert not np.any((got > digit) & ~covered)
    # the pipeline renders the same canvases for the test split
    x, _, _ = _collect(ram_task(name, "test", batch_size=5, limit=12,
                                seed=3))
    np.testing.assert_array_equal(x, canvas)


def test_clutter_actually_adds_pixels(test_split):
    plain = translate(test_split[0], 60, seed=4)
    cluttered = clutter(test_split[0], 60, 4, seed=4)
    assert np.all(cluttered >= plain)
    assert (cluttered > plain).sum() > 12 * 20


def test_same_seed_same_stream_different_seed_different():
    def stream(seed):
        return _collect(ram_task("cluttered60", "train", batch_size=4,
                                 limit=16, seed=seed, epochs=2))[:2]

    a, b, c = stream(1), stream(1), stream(2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_train_redraws_each_epoch_test_is_fixed():
    def epochs(split, **kwargs):
        x, y, _ = _collect(ram_task("translated60", split, batch_size=8,
                                    limit=8, seed=0, epochs=2, **kwargs))
        return x[:8], x[8:], y[:8], y[8:]

    first, second, y1, y2 = epochs("train", shuffle=False)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first, second)  # new placements
    first, second, y1, y2 = epochs("test")
    np.testing.assert_array_equal(first, second)
    first, second, y1, y2 = epochs("train")  # shuffled: new order too
    assert sorted(y1) == sorted(y2)
    # resuming at epoch 1 gives the second epoch
    resumed, _, _ = _collect(ram_task("translated60", "train", batch_size=8,
                                      limit=8, seed=0, first_epoch=1))
    np.testing.assert_array_equal(resumed, second)


def test_train_split_is_a_permutation_of_real_images():
    images, labels = load_fashion_mnist("train")
    x, y, _ = _collect(ram_task("centered28", "train", batch_size=10,
                                limit=10, seed=7))
    images = images[:10].astype(np.float32) / np.float32(255)
    match = [
        [i for i in range(10) if np.array_equal(x[k, ..., 0], images[i])]
        for k in range(10)
    ]
    order = [m[0] for m in match]
    assert all(len(m) == 1 for m in match) and sorted(order) == list(range(10))
    assert order != list(range(10))
    np.testing.assert_array_equal(y, labels[order])


def test_repeats_forever_with_epochs_none():
    ds = ram_task("translated60", "train", batch_size=4, limit=6,
                  epochs=None)
    assert len(list(ds.take(7))) == 7  # 28 examples from 6 images


def test_mnist_through_tfds_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tempfile.TemporaryDirectory() as empty, \
            tfds.testing.mock_data(num_examples=9):
        x, y, _ = _collect(ram_task("cluttered60", "test", batch_size=4,
                                    source="mnist", limit=6,
                                    data_dir=empty))
    assert x.shape == (6, 60, 60, 1) and y.dtype == np.int32
    assert 0 <= x.min() and x.max() <= 1 and np.all((0 <= y) & (y < 10))


def test_mnist_missing_fails_fast_with_instructions(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="download=True"):
        ram_task("translated60", "train", source="mnist",
                 data_dir=str(tmp_path))
    assert time.perf_counter() - start < 10.0
    assert list(tmp_path.iterdir()) == []


def test_any_array_source_sklearn_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    images = (digits.images[:10] / 16.0).astype(np.float32)  # 8x8 in [0, 1]
    canvas, params = translate(images, 20, seed=0, return_params=True)
    assert canvas.shape == (10, 20, 20, 1)
    for i, (r, c) in enumerate(params["offsets"]):
        assert _find_placements(canvas[i, ..., 0], images[i]) == [(r, c)]
    x, y, _ = _collect(ram_task("cluttered60", "test", batch_size=10,
                                source=(images, digits.target[:10])))
    assert x.shape == (10, 60, 60, 1)
    np.testing.assert_array_equal(y, digits.target[:10])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="cluttered30"), "name"),
        (dict(split="validation"), "split"),
        (dict(source="cifar10"), "source"),
        (dict(batch_size=0), "batch_size"),
        (dict(epochs=0), "epochs"),
        (dict(shuffle="yes"), "shuffle"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"name": "translated60", "limit": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        ram_task(**kwargs)


def test_bad_array_arguments():
    images = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="canvas_size"):
        translate(images, 20)
    with pytest.raises(ValueError, match="other images"):
        clutter(images[:1], 60, 4)
    with pytest.raises(ValueError, match="num_clutter"):
        clutter(np.zeros((3, 6, 6), np.uint8), 20, 2)
    with pytest.raises(ValueError, match="images"):
        translate(np.zeros((3, 28), np.uint8), 60)


@pytest.mark.parametrize("seed, epoch", [(0, 0), (3, 2), (-(2**63), 7)])
def test_vectorised_keys_equal_per_index_fold_in(seed, epoch):
    # `_element_keys` builds all keys at once from `fold_in(key, i) ==
    # [c(key), i]`; it must equal the per-index fold_in the module
    # documents, bit for bit (draws of existing seeds must not change).
    rng = np.random.default_rng(0)
    index = np.concatenate([np.arange(300),
                            rng.integers(0, 2**31 - 1, 50)]).astype(np.int32)
    got = ram_tasks._element_keys(seed, epoch, tf.constant(index)).numpy()
    base = data_common.epoch_key(seed, epoch, ram_tasks._PLACEMENT_STREAM)
    want = np.stack([
        tf.random.experimental.stateless_fold_in(
            base, tf.constant(int(i), tf.int64)).numpy()
        for i in index
    ])
    assert got.dtype == np.int64 and got.shape == (len(index), 2)
    np.testing.assert_array_equal(got, want)


def test_traced_draws_equal_per_element_draws(test_split):
    # `clutter` draws with one traced map_fn; each row must be `_draw` of
    # its own key, run alone.
    images = test_split[0]
    _, params = clutter(images, 60, 4, seed=3, epoch=2, return_params=True)
    index = tf.range(12, dtype=tf.int32)
    keys = ram_tasks._element_keys(3, 2, index)
    for i in range(12):
        offset, pieces = ram_tasks._draw(keys[i], index[i], 28, 28, 60, 4, 12)
        np.testing.assert_array_equal(params["offsets"][i], offset.numpy())
        np.testing.assert_array_equal(params["pieces"][i], pieces.numpy())


def test_translate_no_images():
    canvas, params = translate(np.zeros((0, 28, 28), np.uint8), 60,
                               return_params=True)
    assert canvas.shape == (0, 60, 60, 1) and canvas.dtype == np.float32
    assert params["offsets"].shape == (0, 2)
    assert params["offsets"].dtype == np.int32
