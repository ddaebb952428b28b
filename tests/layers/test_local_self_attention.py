"""Tests for `keras_attn.layers.LocalSelfAttention2D` (SASA)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.layers import LocalSelfAttention2D
from tests import harness

SHAPE = (6, 5, 4)  # (H, W, C); H != W catches transposed windows
FILTERS = 8


def _np(variable):
    return np.asarray(ops.convert_to_numpy(variable), dtype="float64")


# ----------------------------------------------------------------------------
# NumPy reference (paper Eq. 3) with explicit per-pixel, per-head loops.
# `mode` selects variants that the layer must NOT match:
#   "paper"       - logits summed over each head's channels, borders masked;
#   "per_channel" - the PyTorch port's bug: softmax per channel (no sum);
#   "zero_pad"    - out-of-image neighbours are zero keys/values, not masked.


def np_sasa(layer, x, mode="paper"):
    x = np.asarray(x, "float64")
    wq = _np(layer.query.kernel)[0, 0]  # (C, filters)
    wk = _np(layer.key.kernel)[0, 0]
    wv = _np(layer.value.kernel)[0, 0]
    q, k, v = x @ wq, x @ wk, x @ wv  # (B, H, W, filters)
    ks, heads, filters = layer.kernel_size, layer.num_heads, layer.filters
    depth, pad = filters // heads, layer.kernel_size // 2
    if layer.relative:
        rows, cols = _np(layer.rel_rows), _np(layer.rel_cols)
    batch, height, width = x.shape[:3]
    out = np.zeros((batch, height, width, filters))
    weights = np.zeros((batch, height, width, heads, ks * ks))
    for n in range(batch):
        for i in range(height):
            for j in range(width):
                for h in range(heads):
                    ch = slice(h * depth, (h + 1) * depth)
                    logits, vals, idx = [], [], []
                    for a in range(ks):
                        for b in range(ks):
                            ii, jj = i + a - pad, j + b - pad
                            inside = 0 <= ii < height and 0 <= jj < width
                            if not inside and mode != "zero_pad":
                                continue
                            key = k[n, ii, jj] if inside else np.zeros(filters)
                            val = v[n, ii, jj] if inside else np.zeros(filters)
                            if layer.relative:
                                key = key + np.concatenate([rows[a], cols[b]])
                            prod = q[n, i, j, ch] * key[ch]
                            logits.append(
                                prod if mode == "per_channel" else prod.sum()
                            )
                            vals.append(val[ch])
                            idx.append(a * ks + b)
                    logits = np.array(logits)  # (m,) or (m, depth)
                    e = np.exp(logits - logits.max(axis=0))
                    att = e / e.sum(axis=0)
                    vals = np.array(vals)  # (m, depth)
                    if mode == "per_channel":
                        out[n, i, j, ch] = (att * vals).sum(axis=0)
                    else:
                        out[n, i, j, ch] = att @ vals
                        weights[n, i, j, h, idx] = att
    if layer.strides == 2:
        h2, w2 = height // 2, width // 2
        out = out[:, : 2 * h2, : 2 * w2].reshape(
            batch, h2, 2, w2, 2, filters
        ).mean(axis=(2, 4))
    return out, weights


def _built(shape=SHAPE, seed=0, **kwargs):
    kwargs = {"filters": FILTERS, "kernel_size": 3, "num_heads": 2, **kwargs}
    layer = LocalSelfAttention2D(**kwargs)
    layer.build((None, *shape))
    harness.randomize_weights(layer, seed)
    return layer


def _x(shape=SHAPE, seed=1, batch=2, scale=1.0):
    return harness.random_inputs([(batch, *shape)], seed=seed, scale=scale)[0]


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(a, b, atol=atol, rtol=0)


# ----------------------------------------------------------------------------
# Numerics


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_heads": 1},
        {"num_heads": 4, "relative": False},
        {"kernel_size": 5, "num_heads": 2},
        {"kernel_size": 1},
        {"strides": 2},
    ],
)
def test_matches_numpy_reference(options):
    layer = _built(**options)
    x = _x()
    y, w = harness.to_numpy(layer(x, return_attention=True))
    y_ref, w_ref = np_sasa(layer, x)
    _close(harness.to_numpy(layer(x))[0], y_ref)
    _close(y, y_ref)
    _close(w, w_ref)
    assert y.shape == y_ref.shape and y.std() > 1e-2
    ks = layer.kernel_size
    assert w.shape == (2, *SHAPE[:2], layer.num_heads, ks * ks)


@pytest.mark.parametrize(
    ("shape", "options"),
    [
        # Blocks that do not divide the image, halos of 2 and 3 blocks
        # (k - 1 > block), one-pixel blocks, blocks larger than the image.
        ((7, 5, 4), {"kernel_size": 3, "block_size": 2}),
        ((7, 5, 4), {"kernel_size": 5, "block_size": 2, "strides": 2}),
        ((9, 6, 4), {"kernel_size": 7, "block_size": 3, "num_heads": 4}),
        ((5, 8, 4), {"kernel_size": 5, "block_size": 1}),
        ((6, 9, 4), {"kernel_size": 3, "block_size": 4, "relative": False}),
        ((3, 4, 4), {"kernel_size": 7, "block_size": 8}),
        ((11, 10, 4), {"kernel_size": 5, "block_size": 4, "strides": 2}),
        ((13, 10, 4), {"kernel_size": 7, "block_size": 3, "num_heads": 4}),
        # An axis no longer than a halo (b + k - 1) is one block with the
        # whole axis as keys: both axes, and one axis beside a blocked one.
        ((7, 7, 4), {"kernel_size": 7}),
        ((7, 14, 4), {"kernel_size": 7}),
        ((12, 5, 4), {"kernel_size": 3, "block_size": 2, "strides": 2}),
    ],
)
def test_every_block_size_matches_numpy_reference(shape, options):
    layer = _built(shape=shape, **options)
    x = _x(shape=shape, seed=20)
    y, w = harness.to_numpy(layer(x, return_attention=True))
    y_ref, w_ref = np_sasa(layer, x)
    _close(y, y_ref)
    _close(w, w_ref)
    _close(harness.to_numpy(layer(x))[0], y_ref)
    assert w.shape == (2, *shape[:2], layer.num_heads,
                       layer.kernel_size**2)


def test_gradients_do_not_depend_on_block_size():
    # Different block sizes move data through different halos; the
    # backward pass of every one must be the same function's.
    grads = []
    for block in (1, 2, 5):
        inputs = keras.Input((7, 6, 4))
        layer = LocalSelfAttention2D(FILTERS, 5, num_heads=2,
                                     block_size=block, name="sasa")
        model = keras.Model(inputs, layer(inputs))
        harness.randomize_weights(model, seed=21)
        grads.append(harness.gradients(model, _x(shape=(7, 6, 4), seed=22)))
    assert len(grads[0]) == 5
    for other in grads[1:]:
        assert sorted(other) == sorted(grads[0])
        for path, grad in other.items():
            _close(grad, grads[0][path], atol=1e-4)


def test_logits_are_summed_over_head_channels_not_per_channel():
    # The popular PyTorch port takes the softmax per channel (heads =
    # channels); with 2 heads of 4 channels that is a different function.
    layer = _built(num_heads=2)
    x = _x(seed=2)
    y = harness.to_numpy(layer(x))[0]
    buggy, _ = np_sasa(layer, x, mode="per_channel")
    assert np.abs(y - buggy).max() > 1e-2
    # ... which the layer reproduces only when every channel is a head.
    per_channel = _built(num_heads=FILTERS)
    per_channel.set_weights(layer.get_weights())
    _close(harness.to_numpy(per_channel(x))[0], buggy)


def test_borders_are_masked_not_zero_padded():
    layer = _built()
    x = _x(seed=3)
    y, w = harness.to_numpy(layer(x, return_attention=True))
    padded, _ = np_sasa(layer, x, mode="zero_pad")
    border = np.ones(SHAPE[:2], bool)
    border[1:-1, 1:-1] = False
    assert np.abs(y - padded)[:, border].max() > 1e-2
    # Away from the border the window is full and the two agree.
    _close(y[:, 1:-1, 1:-1], padded[:, 1:-1, 1:-1])


def test_masked_neighbours_have_zero_weight_and_weights_sum_to_one():
    layer = _built(kernel_size=5)
    _, w = harness.to_numpy(layer(_x(seed=4), return_attention=True))
    assert w.dtype == np.float32
    _close(w.sum(axis=-1), np.ones(w.shape[:-1]))
    height, width = SHAPE[:2]
    for i in range(height):
        for j in range(width):
            for a in range(5):
                for b in range(5):
                    ii, jj = i + a - 2, j + b - 2
                    inside = 0 <= ii < height and 0 <= jj < width
                    weight = w[:, i, j, :, a * 5 + b]
                    if inside:
                        assert (weight > 0).all()
                    else:
                        assert (weight == 0.0).all()


@pytest.mark.parametrize("axis", [1, 2])
def test_interior_is_translation_equivariant(axis):
    layer = _built(shape=(9, 8, 4), kernel_size=3)
    x = _x(shape=(9, 8, 4), seed=5)
    shifted = np.roll(x, 1, axis=axis)
    y = harness.to_numpy(layer(x))[0]
    y_s = harness.to_numpy(layer(shifted))[0]
    # Pixels whose window stays away from the border (and from the wrapped
    # row/column) in both images; a pad of 1 for k=3, plus the shift.
    inner = [slice(None)] * 4
    outer = [slice(None)] * 4
    size = x.shape[axis]
    inner[axis] = slice(2, size - 1)
    outer[axis] = slice(1, size - 2)
    _close(y_s[tuple(inner)], y[tuple(outer)])
    # Not trivially equal: the output really changes with position.
    assert np.abs(y_s - y).max() > 1e-2


def test_output_ignores_pixels_outside_the_window():
    layer = _built(shape=(7, 7, 4), kernel_size=3)
    x = _x(shape=(7, 7, 4), seed=6)
    perturbed = x.copy()
    perturbed[:, 0, 0] += 5.0
    y = harness.to_numpy(layer(x))[0]
    y_p = harness.to_numpy(layer(perturbed))[0]
    near = np.zeros((7, 7), bool)
    near[:2, :2] = True  # pixels whose 3x3 window contains (0, 0)
    _close(y_p[:, ~near], y[:, ~near], atol=1e-6)
    # Every pixel whose window holds (0, 0) changes (in some channel).
    change = np.abs(y_p[:, near] - y[:, near]).max(axis=-1)  # (B, 4)
    assert change.min() > 1e-3


def test_relative_embeddings_are_row_then_column_halves():
    layer = _built(num_heads=2)
    assert tuple(layer.rel_rows.shape) == (3, FILTERS // 2)
    assert tuple(layer.rel_cols.shape) == (3, FILTERS // 2)
    # Swapping the row and column tables is a different function (H != W
    # makes the difference show at borders and in the interior alike).
    x = _x(seed=7)
    y = harness.to_numpy(layer(x))[0]
    rows, cols = layer.rel_rows.numpy(), layer.rel_cols.numpy()
    layer.rel_rows.assign(cols)
    layer.rel_cols.assign(rows)
    assert np.abs(harness.to_numpy(layer(x))[0] - y).max() > 1e-2


def test_without_relative_has_only_projections():
    layer = _built(relative=False)
    assert sorted(w.path.split("/")[-2] for w in layer.weights) == [
        "key",
        "query",
        "value",
    ]


# ----------------------------------------------------------------------------
# Shapes, dtypes, serialization, gradients, export


def _make(**kw):
    return LocalSelfAttention2D(FILTERS, 3, num_heads=2, **kw)


def _make_strided(**kw):
    return LocalSelfAttention2D(FILTERS, 3, num_heads=4, strides=2, **kw)


@pytest.mark.parametrize("make", [_make, _make_strided])
def test_shapes_and_mixed_precision(make):
    harness.assert_mixed_precision(make, SHAPE, {"return_attention": True},
                                   (1,))
    layer = make()
    y, w = layer(keras.Input(SHAPE), return_attention=True)
    out_hw = SHAPE[:2] if layer.strides == 1 else (3, 2)
    assert tuple(y.shape) == (None, *out_hw, FILTERS)
    assert tuple(w.shape) == (None, *SHAPE[:2], layer.num_heads, 9)
    assert w.dtype == "float32"
    assert layer.compute_output_shape((None, *SHAPE)) == (
        None,
        *out_hw,
        FILTERS,
    )
    eager = harness.to_numpy(layer(_x(), return_attention=True))
    assert eager[0].shape == (2, *out_hw, FILTERS)
    assert tuple(make()(keras.Input(SHAPE)).shape) == y.shape


def test_mixed_precision_matches_float32():
    layer32 = _built()
    layer16 = LocalSelfAttention2D(FILTERS, 3, num_heads=2,
                                   dtype="mixed_float16")
    layer16.build((None, *SHAPE))
    layer16.set_weights(layer32.get_weights())
    x = _x(seed=8)
    y32, w32 = harness.to_numpy(layer32(x, return_attention=True))
    y16, w16 = harness.to_numpy(layer16(x, return_attention=True))
    assert y16.dtype == np.float16 and w16.dtype == np.float32
    assert all(v.dtype == "float32" for v in layer16.weights)
    _close(y16.astype("float32"), y32, atol=5e-2)
    _close(w16, w32, atol=5e-2)


@pytest.mark.parametrize(
    "layer",
    [
        LocalSelfAttention2D(16),
        LocalSelfAttention2D(
            12, kernel_size=5, num_heads=3, strides=2, relative=True
        ),
        LocalSelfAttention2D(9, kernel_size=1, num_heads=3, relative=False),
        LocalSelfAttention2D(8, kernel_size=3, num_heads=2, block_size=3),
    ],
)
def test_config_roundtrip(layer):
    harness.assert_config_roundtrip(layer)
    assert set(layer.get_config()) >= {
        "filters",
        "kernel_size",
        "num_heads",
        "strides",
        "relative",
        "block_size",
    }


def _model(shape=SHAPE, seed=0, maps=True, block_size=None):
    """Two stacked layers, with (`maps=True`) or without their attention
    weights as outputs."""
    inputs = keras.Input(shape)
    first = LocalSelfAttention2D(FILTERS, 3, num_heads=2, name="sasa1",
                                 block_size=block_size)
    second = LocalSelfAttention2D(FILTERS, 3, num_heads=4, strides=2,
                                  name="sasa2", block_size=block_size)
    if maps:
        x, w1 = first(inputs, return_attention=True)
        y, w2 = second(x, return_attention=True)
        outputs = [y, w1, w2]
    else:
        outputs = second(first(inputs))
    model = keras.Model(inputs, outputs)
    harness.randomize_weights(model, seed)
    return model


@pytest.mark.parametrize("maps", [True, False])
def test_keras_file_roundtrip(tmp_path, maps):
    harness.assert_keras_file_roundtrip(_model(maps=maps), _x(seed=9),
                                        tmp_path)


@pytest.mark.parametrize("maps", [True, False])
def test_gradients_reach_all_weights(maps):
    model = _model(seed=10, maps=maps)
    paths = [w.path for w in model.trainable_weights]
    assert sum("rel_rows" in p for p in paths) == 2
    assert sum("rel_cols" in p for p in paths) == 2
    harness.assert_gradients_reach_all_weights(model, _x(seed=11))


def test_trains_under_jit_compile():
    # XLA on TensorFlow, jax.jit on JAX (torch's jit_compile is
    # torch.compile, which Keras runs as plain eager here).
    model = keras.Sequential([
        keras.Input((9, 7, 4)),
        LocalSelfAttention2D(FILTERS, 5, num_heads=2, block_size=2),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=harness.BACKEND != "torch",
    )
    x = _x(shape=(9, 7, 4), seed=23, batch=8)
    y = np.arange(8) % 3
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    changed = [np.abs(a - b).max() > 0
               for a, b in zip(before, model.get_weights(), strict=True)]
    assert all(changed)


@pytest.mark.tf_only
@pytest.mark.parametrize("maps", [True, False])
@pytest.mark.parametrize("block_size", [None, 2])
def test_jit_matches_eager(maps, block_size):
    harness.assert_jit_matches_eager(
        _model(maps=maps, block_size=block_size), _x(seed=12))


@pytest.mark.tf_only
@pytest.mark.parametrize("maps", [True, False])
@pytest.mark.parametrize("block_size", [None, 2])
def test_tflite_builtins_match(maps, block_size):
    harness.assert_tflite_matches(
        _model(maps=maps, block_size=block_size), _x(seed=13))


@pytest.mark.parametrize("block_size", [None, 3])
def test_variable_spatial_size(block_size):
    layer = LocalSelfAttention2D(FILTERS, 3, num_heads=2,
                                 block_size=block_size)
    model = harness.wrap(layer, (None, None, SHAPE[-1]),
                         return_attention=True)
    harness.randomize_weights(model, seed=14)
    for size in [(5, 7), (8, 4)]:
        x = _x(shape=(*size, SHAPE[-1]), seed=15)
        got = harness.run(model, x)
        for g, r in zip(got, np_sasa(layer, x), strict=True):
            _close(g, r)
        assert got[1].shape == (2, *size, 2, 9)
        _close(harness.to_numpy(layer(x))[0], got[0])


# ----------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"filters": 0}, "`filters`"),
        ({"filters": 8.0}, "`filters`"),
        ({"filters": 12, "num_heads": 8}, "`filters`.*multiple of num_heads"),
        ({"filters": 9, "num_heads": 3}, "`filters`.*even"),
        ({"filters": 8, "kernel_size": 4}, "`kernel_size`.*odd"),
        ({"filters": 8, "kernel_size": 0}, "`kernel_size`"),
        ({"filters": 8, "num_heads": 0}, "`num_heads`"),
        ({"filters": 8, "strides": 3}, "`strides`"),
        ({"filters": 8, "strides": True}, "`strides`"),
        ({"filters": 8, "strides": 1.0}, "`strides`"),
        ({"filters": 8, "relative": 1}, "`relative`"),
        ({"filters": 8, "block_size": 0}, "`block_size`"),
        ({"filters": 8, "block_size": 2.0}, "`block_size`"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"LocalSelfAttention2D: .*{match}"):
        LocalSelfAttention2D(**kwargs)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((None, 8, 12), "invalid `inputs shape`.*rank 4"),
        ((None, 8, 8, None), "invalid `inputs shape`.*known channel"),
    ],
)
def test_bad_input_shape(shape, match):
    with pytest.raises(ValueError, match=f"LocalSelfAttention2D: {match}"):
        LocalSelfAttention2D(8, 3, num_heads=2).build(shape)
    with pytest.raises(ValueError, match=f"LocalSelfAttention2D: {match}"):
        LocalSelfAttention2D(8, 3, num_heads=2)(keras.Input(shape[1:]))


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_large_inputs_stay_finite(dtype):
    layer = LocalSelfAttention2D(FILTERS, 3, num_heads=2, dtype=dtype)
    layer.build((None, *SHAPE))
    # Harness-scale weights: |q|, |k| reach ~4e4 (still float16-finite), so
    # the logits (~1e9) would overflow anything but a float32 softmax.
    harness.randomize_weights(layer, seed=16)
    x = _x(seed=17, scale=1e4)
    y, w = harness.to_numpy(layer(x, return_attention=True))
    assert np.isfinite(y.astype("float32")).all()
    assert w.dtype == np.float32 and np.isfinite(w).all()
    _close(w.sum(axis=-1), np.ones(w.shape[:-1]))
    assert w.min() >= 0.0 and w.max() <= 1.0
    # Near-one-hot weights: the softmax really saw huge logits.
    assert w.max(axis=-1).mean() > 0.9


def test_axes_no_longer_than_a_halo_are_one_unpadded_block():
    # The layout the exactness tests above cover: at the default b=4, k=7
    # a 7-pixel axis is one block with its 7 pixels as keys (not a padded
    # 10-pixel halo), an 11-pixel axis is three blocks of 4 with halos.
    layer = LocalSelfAttention2D(FILTERS, 7, num_heads=2)
    assert layer._blocks(7, 7) == (7, 1, 7, 0, 0)
    assert layer._blocks(10, 10) == (10, 1, 10, 0, 0)
    assert layer._blocks(11, 11) == (4, 3, 10, 3, 6)
    assert layer._blocks(7, None)[:3] == (4, 2, 10)  # size unknown
