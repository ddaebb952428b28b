"""What the TensorFlow data modules share: image input and stateless keys.

`ram_tasks`, `distortions` and `datasets` draw every random number from
stateless keys derived from `(seed, epoch)`, so a seed gives the same data
on every machine and run; each module uses its own `stream` numbers (the
order of an epoch, the placements, the RTS parameters, ...) so that their
draws stay independent.
"""

from __future__ import annotations

import tensorflow as tf

from keras_attn.utils.validation import fail


def as_float_images(function, images):
    """`(N, H, W)` or `(N, H, W, 1)` -> float32 `(N, H, W)` tensor.

    uint8 is scaled by 1/255; floating input is taken as already in [0, 1].
    """
    images = tf.convert_to_tensor(images)
    if images.shape.rank == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.shape.rank != 3:
        fail(function, "images", f"array of shape {tuple(images.shape)}",
             "shape (N, H, W) or (N, H, W, 1)")
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    if not images.dtype.is_floating:
        fail(function, "images", f"array of dtype {images.dtype.name}",
             "uint8 (scaled by 1/255) or floating point in [0, 1]")
    return tf.cast(images, tf.float32)


def epoch_key(seed, epoch, stream):
    """The int64 `(2,)` stateless key of `stream` in `epoch` for `seed`:
    `fold_in((seed, epoch), stream)`."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.cast(
        tf.random.experimental.stateless_fold_in(base, stream), tf.int64
    )


def element_key(key, index):
    """The int64 `(2,)` key of element `index` under `key` (an
    `epoch_key`): `fold_in(key, index)`."""
    return tf.cast(
        tf.random.experimental.stateless_fold_in(
            key, tf.cast(index, tf.int64)
        ),
        tf.int64,
    )


def known_batches(ds, examples, batch_size, drop_remainder, passes):
    """`ds` (batches of `passes` passes over `examples` examples; `None`:
    endless) with its cardinality stated.

    `flat_map` hides the count from tf.data; Keras then learns where a
    finite dataset ends only by running out of it, and warns ("Your input
    ran out of data") after every evaluation. Stating it lets Keras show
    the steps and start each pass on a fresh iterator.
    """
    if passes is None:
        count = tf.data.INFINITE_CARDINALITY
    elif drop_remainder:
        count = passes * examples // batch_size
    else:
        count = -(-passes * examples // batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(count))
