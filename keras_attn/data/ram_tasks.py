"""The image tasks of the Recurrent Attention Model, generated on the fly.

Paper: Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual
Attention", NIPS 2014, https://arxiv.org/abs/1406.6247 (Sec. 4.1).

Tasks (`TASK_SPECS[name] = TaskSpec(canvas_size, num_clutter)`):

- `"centered28"`: the 28x28 image itself (canvas 28, no clutter).
- `"translated60"`: the image at a uniformly random integer position fully
  inside a 60x60 black canvas.
- `"cluttered60"`: translated 60x60 plus 4 pieces of 8x8 pixels, each
  cropped at a random position from a random OTHER image of the same split
  and pasted at a random position of the canvas.
- `"cluttered100"`: the same on a 100x100 canvas with 8 pieces.

`ram_task(name, split)` returns a batched, prefetched `tf.data.Dataset` of
`(images, labels)`: float32 `(batch, S, S, 1)` in `[0, 1]` and int32
`(batch,)`. The canvases are drawn inside the pipeline from the 28x28
originals with stateless random ops; `translate` and `clutter` do the same on
any array of images (e.g. sklearn's 8x8 digits) and can return the drawn
positions.

    ds = ram_task("cluttered60", "train", batch_size=64, seed=1, epochs=None)
    model.fit(ds, steps_per_epoch=60000 // 64, epochs=10)
    test = ram_task("cluttered60", "test", batch_size=256)

Randomness. Every draw is a pure function of `(seed, epoch, index)`: the
index of the image in the split, the epoch counted from `first_epoch`. The
placements of element `index` use the key `fold_in(fold_in((seed, e), 1),
index)` and the epoch's order `stateless_shuffle(range(n), fold_in((seed,
e), 0))`, where `e` is the epoch when `redraw` is on and 0 otherwise. So a
given seed gives the same stream on every machine and every run, and
`translate(images[:n], S, seed=s)` equals the unshuffled pipeline's canvases
for the same images. Defaults: the train split is shuffled and re-drawn every
epoch (fresh positions and clutter, as generated data should be); the test
split is in file order with placements fixed per index, so test figures are
comparable between runs. `epochs=None` repeats forever (give Keras
`steps_per_epoch`); with the default `epochs=1` the dataset is one pass and
iterating it again repeats the same pass.

Deviations, stated plainly:

- Clutter is combined with the canvas by pixelwise maximum (the paper says
  the pieces are "added"). A plain sum would saturate above 1 where a piece
  overlaps the digit; with the maximum the digit's own pixels are never
  darkened and values stay in `[0, 1]`. Clutter may still overlap (and
  brighten the background of) the digit, as in the paper.
- The clutter sources are drawn from the same split (after `limit`), never
  the image itself; the crop is uniform over the positions where the 8x8
  piece lies fully inside the source image. Pieces are therefore often
  empty or nearly empty black corners, as in the paper's generator.
- `source="mnist"` reads MNIST through tensorflow-datasets from a prepared
  `data_dir`; nothing is downloaded unless `download=True` (see
  `load_source`). Fashion-MNIST, the default, is read from local files.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from keras_attn.data._common import as_float_images
from keras_attn.data._common import element_key
from keras_attn.data._common import epoch_key
from keras_attn.data._common import known_batches
from keras_attn.data.fashion_mnist import DatasetNotFoundError
from keras_attn.data.fashion_mnist import load_fashion_mnist
from keras_attn.utils.validation import check_int
from keras_attn.utils.validation import fail

TaskSpec = collections.namedtuple("TaskSpec", ["canvas_size", "num_clutter"])

TASK_SPECS = {
    "centered28": TaskSpec(28, 0),
    "translated60": TaskSpec(60, 0),
    "cluttered60": TaskSpec(60, 4),
    "cluttered100": TaskSpec(100, 8),
}
TASKS = tuple(TASK_SPECS)
SOURCES = ("fashion_mnist", "mnist")
SPLITS = ("train", "test")
PIECE_SIZE = 8

# Independent streams derived from one (seed, epoch) key.
_ORDER_STREAM = 0
_PLACEMENT_STREAM = 1


def _fold_in_indices(key, indices):
    """`element_key(key, i)` for every `i` of `indices`, `(n, 2)` int64.

    `stateless_fold_in(key, i)` is `stack([uniform(key), i])` in TF's
    source, the first entry a function of `key` (and of `i`'s dtype, int64
    here) alone; so all the keys are built at once, bit-identical to the
    per-index ones (tests compare them), instead of one op per index.
    """
    indices = tf.cast(indices, tf.int64)
    first = element_key(key, 0)[0]
    return tf.stack([tf.broadcast_to(first, tf.shape(indices)), indices],
                    axis=-1)


def _element_keys(seed, epoch, indices):
    base = epoch_key(seed, epoch, _PLACEMENT_STREAM)
    return _fold_in_indices(base, indices)


def _randint(key, shape, upper):
    """Uniform integers in `[0, upper)` (upper may be a scalar tensor)."""
    return tf.random.stateless_uniform(
        shape, seed=key, minval=0, maxval=tf.cast(upper, tf.int32),
        dtype=tf.int32,
    )


def _draw(key, index, height, width, canvas_size, num_clutter, num_images):
    """Placement parameters of one example, int32.

    Returns `offset` `(2,)` (row, col) of the image on the canvas and
    `pieces` `(num_clutter, 5)`: source index, crop row, crop col, paste
    row, paste col.
    """
    keys = tf.random.experimental.stateless_split(key, 7)
    offset = tf.stack([
        _randint(keys[0], [], canvas_size - height + 1),
        _randint(keys[1], [], canvas_size - width + 1),
    ])
    k = num_clutter
    # Uniform over the OTHER images: draw in [0, n-1) and skip `index`.
    other = _randint(keys[2], [k], num_images - 1)
    other = other + tf.cast(other >= tf.cast(index, tf.int32), tf.int32)
    pieces = tf.stack([
        other,
        _randint(keys[3], [k], height - PIECE_SIZE + 1),
        _randint(keys[4], [k], width - PIECE_SIZE + 1),
        _randint(keys[5], [k], canvas_size - PIECE_SIZE + 1),
        _randint(keys[6], [k], canvas_size - PIECE_SIZE + 1),
    ], axis=-1)
    return offset, pieces


@tf.function(
    input_signature=[tf.TensorSpec([None, 2], tf.int64),
                     tf.TensorSpec([None], tf.int32)]
    + [tf.TensorSpec([], tf.int32)] * 5,
    autograph=False,
)
def _draw_all(keys, index, height, width, canvas_size, num_clutter,
              num_images):
    """`_draw` of every `(keys[i], index[i])`: offsets `(n, 2)` and pieces
    `(n, num_clutter, 5)` (the sizes as int32 tensors, one trace for all).

    A traced map_fn: an eager one runs Python per element (minutes for a
    split), and tf.vectorized_map falls back to a while loop for the
    stateless random ops. The ops and their inputs are those of `_draw`,
    so the values are too.
    """
    offsets, pieces = tf.map_fn(
        lambda a: _draw(a[0], a[1], height, width, canvas_size,
                        num_clutter, num_images),
        (keys, index), fn_output_signature=(tf.int32, tf.int32),
        parallel_iterations=64,
    )
    n = tf.shape(index)[0]
    return (tf.reshape(offsets, [n, 2]),
            tf.reshape(pieces, [n, num_clutter, 5]))


def _to_float(images):
    # The pool stays uint8 (a quarter of the memory); convert what is used.
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return images


def _window_indices(batch, start_row, start_col, height, width):
    """`(n, height, width, 3)` indices [b, start_row + i, start_col + j]."""
    rows = start_row[:, None, None] + tf.range(height)[None, :, None]
    cols = start_col[:, None, None] + tf.range(width)[None, None, :]
    shape = tf.stack([tf.shape(batch)[0], height, width])
    return tf.stack([
        tf.broadcast_to(batch[:, None, None], shape),
        tf.broadcast_to(rows, shape),
        tf.broadcast_to(cols, shape),
    ], axis=-1)


def _render(pool, index, offset, pieces, canvas_size, height, width):
    """Canvases `(B, S, S)` from the parameters of `_draw` (batched).

    Scatters, not one-hot matmuls: they move only the pasted pixels, and a
    matmul may run in TF32 on a GPU and round the pixel values.
    """
    batch = tf.shape(index)[0]
    where = _window_indices(
        tf.range(batch), offset[:, 0], offset[:, 1], height, width
    )
    canvas = tf.scatter_nd(
        where, _to_float(tf.gather(pool, index)),
        tf.stack([batch, canvas_size, canvas_size]),
    )
    num_clutter = pieces.shape[1]
    if num_clutter:
        flat = tf.reshape(pieces, [-1, 5])
        crops = tf.gather_nd(pool, _window_indices(
            flat[:, 0], flat[:, 1], flat[:, 2], PIECE_SIZE, PIECE_SIZE
        ))
        owner = tf.repeat(tf.range(batch), num_clutter)
        where = _window_indices(
            owner, flat[:, 3], flat[:, 4], PIECE_SIZE, PIECE_SIZE
        )
        canvas = tf.tensor_scatter_nd_max(canvas, where, _to_float(crops))
    return canvas


def _check_geometry(function, height, width, canvas_size, num_clutter, n):
    canvas_size = check_int(function, "canvas_size", canvas_size, 1)
    num_clutter = check_int(function, "num_clutter", num_clutter, 0)
    if canvas_size < max(height, width):
        fail(function, "canvas_size", canvas_size,
             f"an integer >= the image size {height}x{width}")
    if num_clutter and min(height, width) < PIECE_SIZE:
        fail(function, "num_clutter", num_clutter,
             f"0 for images smaller than the {PIECE_SIZE}x{PIECE_SIZE} "
             f"clutter pieces (images are {height}x{width})")
    if num_clutter and n < 2:
        fail(function, "images", f"{n} image(s)",
             "at least 2 images, so that clutter comes from other images")
    return canvas_size, num_clutter


def clutter(images, canvas_size, num_clutter, seed=0, epoch=0,
            return_params=False):
    """Place each image at a random position of a larger canvas, add clutter.

    Args:
        images: `(N, H, W)` or `(N, H, W, 1)`; uint8 (scaled by 1/255) or
            floats in `[0, 1]`.
        canvas_size: side `S >= max(H, W)` of the square canvas.
        num_clutter: number of 8x8 pieces from other images of `images`
            (0 for translation only).
        seed, epoch: integers; the draws of image `i` depend on `(seed,
            epoch, i)` only (as in `ram_task`'s unshuffled pipeline).
        return_params: also return the drawn positions.

    Returns:
        float32 `(N, S, S, 1)` numpy canvases; with `return_params`,
        `(canvases, {"offsets": (N, 2) [row, col] of the image's top-left
        pixel, "pieces": (N, num_clutter, 5) [source index, crop row, crop
        col, paste row, paste col]})`, all int32.
    """
    name = "clutter"
    pool = as_float_images(name, images)
    n, height, width = (int(d) for d in pool.shape)
    canvas_size, num_clutter = _check_geometry(
        name, height, width, canvas_size, num_clutter, n
    )
    seed = check_int(name, "seed", seed, -(2**63))
    epoch = check_int(name, "epoch", epoch, 0)
    index = tf.range(n, dtype=tf.int32)
    keys = _element_keys(seed, epoch, index)
    if n:
        offsets, pieces = _draw_all(keys, index, height, width, canvas_size,
                                    num_clutter, n)
    else:  # map_fn cannot stack zero elements of a shape known at run time
        offsets = tf.zeros([0, 2], tf.int32)
        pieces = tf.zeros([0, num_clutter, 5], tf.int32)
    pieces = tf.ensure_shape(pieces, [n, num_clutter, 5])
    canvas = _render(pool, index, offsets, pieces, canvas_size, height,
                     width)[..., None].numpy()
    if return_params:
        return canvas, {"offsets": offsets.numpy(), "pieces": pieces.numpy()}
    return canvas


def translate(images, canvas_size, seed=0, epoch=0, return_params=False):
    """`clutter(images, canvas_size, 0, ...)`: random placement only."""
    out = clutter(images, canvas_size, 0, seed=seed, epoch=epoch,
                  return_params=return_params)
    if return_params:
        canvas, params = out
        return canvas, {"offsets": params["offsets"]}
    return out


def load_source(source="fashion_mnist", split="train", limit=None,
                data_dir=None, download=False):
    """Images uint8 `(N, 28, 28)` and labels int32 `(N,)` of a source.

    `"fashion_mnist"` reads the local IDX files (`load_fashion_mnist`;
    `data_dir` is their directory). `"mnist"` goes through
    tensorflow-datasets from `data_dir` (default `~/tensorflow_datasets`);
    it downloads only with `download=True`, and otherwise fails at once with
    `DatasetNotFoundError` when the prepared data are missing. A tuple
    `(images, labels)` of arrays is passed through (any image size).
    """
    name = "load_source"
    if split not in SPLITS:
        fail(name, "split", split, f"one of {list(SPLITS)}")
    if limit is not None:
        limit = check_int(name, "limit", limit, 1)
    if isinstance(source, (tuple, list)) and len(source) == 2:
        images, labels = (np.asarray(a) for a in source)
        if len(images) != len(labels):
            fail(name, "source", f"{len(images)} images, {len(labels)} "
                 "labels", "(images, labels) of the same length")
    elif source == "fashion_mnist":
        images, labels = load_fashion_mnist(split, directory=data_dir)
    elif source == "mnist":
        images, labels = _load_tfds_mnist(split, limit, data_dir, download)
    else:
        fail(name, "source", source,
             f"one of {list(SOURCES)} or a tuple (images, labels)")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels.astype(np.int32)


def _load_tfds_mnist(split, limit, data_dir, download):
    import tensorflow_datasets as tfds

    tfds_split = split if limit is None else f"{split}[:{limit}]"
    try:
        ds = tfds.load("mnist", split=tfds_split, as_supervised=True,
                       data_dir=data_dir, download=download)
    except AssertionError as error:
        # tfds signals "not prepared and download=False" with an assertion.
        raise DatasetNotFoundError(
            f"MNIST is not prepared in tensorflow-datasets' data_dir "
            f"({data_dir or '~/tensorflow_datasets'}) and this machine does "
            "not download it (download=False). On a machine with internet "
            "run `python -c \"import tensorflow_datasets as tfds; "
            "tfds.load('mnist')\"`, copy ~/tensorflow_datasets/mnist to "
            "this machine and pass its parent as data_dir; or call with "
            "download=True where the network is reachable; or use "
            "source='fashion_mnist', which is read from local files."
        ) from error
    if limit is not None:
        ds = ds.take(limit)  # tfds.testing.mock_data ignores split slices
    images, labels = [], []
    for x, y in ds.batch(8192).as_numpy_iterator():
        images.append(x[..., 0])
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def ram_task(name, split="train", batch_size=64, seed=0,
             source="fashion_mnist", shuffle=None, limit=None, epochs=1,
             first_epoch=0, redraw=None, drop_remainder=False,
             data_dir=None, download=False):
    """Batched `tf.data.Dataset` of one RAM task (module docstring).

    Args:
        name: one of `TASKS`.
        split: `"train"` or `"test"`.
        batch_size: examples per batch.
        seed: integer; same seed, same stream.
        source: `"fashion_mnist"` (local files), `"mnist"` (tfds, no
            download unless `download=True`), or `(images, labels)` arrays.
        shuffle: shuffle the order each epoch; default True for train,
            False for test.
        limit: use only the first `limit` images of the split (they are
            also the only clutter sources).
        epochs: passes in the dataset, or None to repeat forever.
        first_epoch: epoch number of the first pass (to resume a run).
        redraw: draw new placements each epoch; default True for train,
            False for test (placements fixed per image index).
        drop_remainder: drop the last incomplete batch (of the whole stream).
        data_dir, download: passed to `load_source`.

    Returns:
        Prefetched dataset of `(images float32 (B, S, S, 1) in [0, 1],
        labels int32 (B,))`.
    """
    function = "ram_task"
    if name not in TASK_SPECS:
        fail(function, "name", name, f"one of {list(TASKS)}")
    batch_size = check_int(function, "batch_size", batch_size, 1)
    seed = check_int(function, "seed", seed, -(2**63))
    first_epoch = check_int(function, "first_epoch", first_epoch, 0)
    if epochs is not None:
        epochs = check_int(function, "epochs", epochs, 1)
    shuffle = split == "train" if shuffle is None else shuffle
    redraw = split == "train" if redraw is None else redraw
    for argument, value in (("shuffle", shuffle), ("redraw", redraw),
                            ("drop_remainder", drop_remainder)):
        if not isinstance(value, bool):
            fail(function, argument, value, "a bool (True or False)")
    images, labels = load_source(source, split, limit, data_dir, download)
    canvas_size, num_clutter = TASK_SPECS[name]
    pool = tf.convert_to_tensor(images)
    if pool.dtype != tf.uint8:
        pool = as_float_images(function, pool)
    elif pool.shape.rank == 4 and pool.shape[-1] == 1:
        pool = pool[..., 0]
    if pool.shape.rank != 3:
        fail(function, "source", f"images of shape {tuple(pool.shape)}",
             "images of shape (N, H, W) or (N, H, W, 1)")
    n, height, width = (int(d) for d in pool.shape)
    canvas_size, num_clutter = _check_geometry(
        function, height, width, canvas_size, num_clutter, n
    )
    labels = tf.convert_to_tensor(labels, tf.int32)

    def one_epoch(epoch):
        key_epoch = epoch if redraw else tf.zeros_like(epoch)
        order = tf.range(n, dtype=tf.int32)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(
                order, epoch_key(seed, key_epoch, _ORDER_STREAM)
            )
        placement = epoch_key(seed, key_epoch, _PLACEMENT_STREAM)
        return tf.data.Dataset.from_tensor_slices(
            (order, _fold_in_indices(placement, order))
        )

    def draw(index, key):
        offset, pieces = _draw(key, index, height, width, canvas_size,
                               num_clutter, n)
        return index, offset, pieces

    def render(index, offset, pieces):
        canvas = _render(pool, index, offset, pieces, canvas_size,
                         height, width)
        return canvas[..., None], tf.gather(labels, index)

    epoch_numbers = (
        tf.data.Dataset.range(first_epoch, first_epoch + epochs)
        if epochs is not None
        else tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
    )
    ds = epoch_numbers.flat_map(one_epoch)
    ds = ds.map(draw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(render, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = known_batches(ds, n, batch_size, drop_remainder, epochs)
    return ds.prefetch(tf.data.AUTOTUNE)
