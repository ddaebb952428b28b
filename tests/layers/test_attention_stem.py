"""Tests for `keras_attn.layers.AttentionStem` (SASA stem)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.layers import AttentionStem
from tests import harness

SHAPE = (6, 5, 3)  # (H, W, C); H != W catches transposed windows
FILTERS = 4


def _np(variable):
    return np.asarray(ops.convert_to_numpy(variable), dtype="float64")


def np_mixture(layer):
    """`p[m, a, b] = softmax_m((emb_rows[a] + emb_cols[b]) . emb_mix[m])`."""
    rows, cols = _np(layer.emb_rows), _np(layer.emb_cols)
    mix = _np(layer.emb_mix)
    ks, m = layer.kernel_size, layer.num_mixtures
    p = np.zeros((m, ks, ks))
    for a in range(ks):
        for b in range(ks):
            logits = np.array([(rows[a] + cols[b]) @ mix[i] for i in range(m)])
            e = np.exp(logits - logits.max())
            p[:, a, b] = e / e.sum()
    return p


def np_stem(layer, x, mix="spatial"):
    """Explicit per-pixel loops over each pixel's k x k block (blocks start
    at the top-left corner). `mix="uniform"` averages the value projections
    instead of mixing them by block position."""
    x = np.asarray(x, "float64")
    wq = _np(layer.query.kernel)[0, 0]  # (C, F)
    wk = _np(layer.key.kernel)[0, 0]
    wv = _np(layer.value.kernel)[0, 0]  # (C, m*F)
    ks, m, filters = layer.kernel_size, layer.num_mixtures, layer.filters
    p = np_mixture(layer)
    if mix == "uniform":
        p = np.full_like(p, 1.0 / m)
    q, k = x @ wq, x @ wk
    v = (x @ wv).reshape(*x.shape[:3], m, filters)
    batch, height, width = x.shape[:3]
    out = np.zeros((batch, height, width, filters))
    weights = np.zeros((batch, height, width, ks * ks))
    for n in range(batch):
        for i in range(height):
            for j in range(width):
                top, left = (i // ks) * ks, (j // ks) * ks
                logits, vals, idx = [], [], []
                for a in range(ks):
                    for b in range(ks):
                        ii, jj = top + a, left + b
                        if not (ii < height and jj < width):
                            continue
                        logits.append(q[n, i, j] @ k[n, ii, jj])
                        vals.append(p[:, a, b] @ v[n, ii, jj])  # (F,)
                        idx.append(a * ks + b)
                logits = np.array(logits)
                e = np.exp(logits - logits.max())
                att = e / e.sum()
                out[n, i, j] = att @ np.array(vals)
                weights[n, i, j, idx] = att
    return out, weights


def _built(shape=SHAPE, seed=0, **kwargs):
    kwargs = {"filters": FILTERS, **kwargs}
    layer = AttentionStem(**kwargs)
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
        {"kernel_size": 3, "num_mixtures": 2},
        {"kernel_size": 2, "num_mixtures": 3},
        {"kernel_size": 1, "num_mixtures": 1},
    ],
)
def test_matches_numpy_reference(options):
    layer = _built(**options)
    x = _x()
    y, w = harness.to_numpy(layer(x, return_attention=True))
    y_ref, w_ref = np_stem(layer, x)
    _close(y, y_ref)
    _close(w, w_ref)
    assert y.shape == (2, *SHAPE[:2], FILTERS) and y.std() > 1e-2
    assert w.shape == (2, *SHAPE[:2], layer.kernel_size**2)


def test_mixture_weights_match_numpy_and_sum_to_one():
    layer = _built(kernel_size=4, num_mixtures=4)
    p = harness.to_numpy(layer.mixture_weights())[0]  # (m, k*k)
    _close(p, np_mixture(layer).reshape(4, 16))
    _close(p.sum(axis=0), np.ones(16))
    # Spatially varying: different window positions mix differently.
    assert p.std(axis=1).max() > 1e-2


def test_values_depend_on_window_position():
    # Averaging the value projections uniformly is a different function.
    layer = _built(kernel_size=3, num_mixtures=3)
    x = _x(seed=2)
    y = harness.to_numpy(layer(x))[0]
    uniform, _ = np_stem(layer, x, mix="uniform")
    assert np.abs(y - uniform).max() > 1e-2


def test_one_mixture_is_plain_attention_inside_each_block():
    # With m = 1 the mixture is 1 everywhere: softmax(Q K^T) V per block,
    # written with matrices (a second, vectorised reference).
    stem = _built(shape=(4, 6, 3), kernel_size=2, num_mixtures=1)
    x = _x(shape=(4, 6, 3), seed=3)
    y, w = harness.to_numpy(stem(x, return_attention=True))
    wq, wk, wv = (_np(c.kernel)[0, 0] for c in (stem.query, stem.key,
                                                 stem.value))
    for n in range(2):
        for bi in range(2):
            for bj in range(3):
                block = np.asarray(x, "float64")[
                    n, 2 * bi:2 * bi + 2, 2 * bj:2 * bj + 2
                ].reshape(4, 3)
                logits = (block @ wq) @ (block @ wk).T
                att = np.exp(logits - logits.max(axis=1, keepdims=True))
                att /= att.sum(axis=1, keepdims=True)
                got = y[n, 2 * bi:2 * bi + 2, 2 * bj:2 * bj + 2]
                _close(got.reshape(4, FILTERS), att @ (block @ wv))
                got_w = w[n, 2 * bi:2 * bi + 2, 2 * bj:2 * bj + 2]
                _close(got_w.reshape(4, 4), att)


def test_block_alignment_and_masking():
    # k = 4 on 6 x 5: blocks start at rows 0, 4 and columns 0, 4; pixels of
    # a block beyond the image get weight exactly 0.
    layer = _built(kernel_size=4)
    _, w = harness.to_numpy(layer(_x(seed=4), return_attention=True))
    _close(w.sum(axis=-1), np.ones(w.shape[:-1]))
    height, width = SHAPE[:2]
    for i in range(height):
        for j in range(width):
            for a in range(4):
                for b in range(4):
                    ii, jj = (i // 4) * 4 + a, (j // 4) * 4 + b
                    inside = ii < height and jj < width
                    weight = w[:, i, j, a * 4 + b]
                    assert (weight > 0).all() if inside else (
                        (weight == 0.0).all()
                    )


def test_output_ignores_pixels_outside_the_block():
    layer = _built(shape=(7, 7, 3), kernel_size=4)
    x = _x(shape=(7, 7, 3), seed=5)
    perturbed = x.copy()
    perturbed[:, 6, 6] += 5.0
    y = harness.to_numpy(layer(x))[0]
    y_p = harness.to_numpy(layer(perturbed))[0]
    near = np.zeros((7, 7), bool)
    near[4:, 4:] = True  # the 4 x 4 block holding (6, 6)
    _close(y_p[:, ~near], y[:, ~near], atol=1e-6)
    change = np.abs(y_p[:, near] - y[:, near]).max(axis=-1)
    assert change.min() > 1e-3


# ----------------------------------------------------------------------------
# Shapes, dtypes, serialization, gradients, export


def _make(**kw):
    return AttentionStem(FILTERS, kernel_size=4, num_mixtures=3, **kw)


def test_shapes_and_mixed_precision():
    harness.assert_mixed_precision(_make, SHAPE, {"return_attention": True},
                                   (1,))
    layer = _make()
    y, w = layer(keras.Input(SHAPE), return_attention=True)
    assert tuple(y.shape) == (None, *SHAPE[:2], FILTERS)
    assert tuple(w.shape) == (None, *SHAPE[:2], 16)
    assert w.dtype == "float32"
    assert layer.compute_output_shape((None, *SHAPE)) == (
        None,
        *SHAPE[:2],
        FILTERS,
    )
    assert tuple(_make()(keras.Input(SHAPE)).shape) == y.shape


@pytest.mark.parametrize(
    "layer",
    [AttentionStem(16), AttentionStem(8, kernel_size=3, num_mixtures=2)],
)
def test_config_roundtrip(layer):
    harness.assert_config_roundtrip(layer)


def _model(shape=SHAPE, seed=0):
    inputs = keras.Input(shape)
    y, w = AttentionStem(FILTERS, 4, 3, name="stem")(
        inputs, return_attention=True
    )
    model = keras.Model(inputs, [y, w])
    harness.randomize_weights(model, seed)
    return model


def test_keras_file_roundtrip(tmp_path):
    harness.assert_keras_file_roundtrip(_model(), _x(seed=6), tmp_path)


def test_gradients_reach_all_weights():
    model = _model(seed=7)
    names = sorted(w.path.split("/")[-1] for w in model.trainable_weights)
    assert {"emb_rows", "emb_cols", "emb_mix"} <= set(names)
    harness.assert_gradients_reach_all_weights(model, _x(seed=8))


@pytest.mark.tf_only
def test_jit_matches_eager():
    harness.assert_jit_matches_eager(_model(), _x(seed=9))


@pytest.mark.tf_only
def test_tflite_builtins_match():
    harness.assert_tflite_matches(_model(), _x(seed=10))


def test_variable_spatial_size():
    layer = AttentionStem(FILTERS, 4, 2)
    model = harness.wrap(layer, (None, None, SHAPE[-1]),
                         return_attention=True)
    harness.randomize_weights(model, seed=11)
    for size in [(5, 7), (8, 4), (3, 2)]:
        x = _x(shape=(*size, SHAPE[-1]), seed=12)
        got = harness.run(model, x)
        for g, r in zip(got, np_stem(layer, x), strict=True):
            _close(g, r)


# ----------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"filters": 0}, "`filters`"),
        ({"filters": 4.0}, "`filters`"),
        ({"filters": 4, "kernel_size": 0}, "`kernel_size`"),
        ({"filters": 4, "kernel_size": True}, "`kernel_size`"),
        ({"filters": 4, "num_mixtures": 0}, "`num_mixtures`"),
        ({"filters": 4, "num_mixtures": "4"}, "`num_mixtures`"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"AttentionStem: invalid {match}"):
        AttentionStem(**kwargs)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((None, 8, 12), "invalid `inputs shape`.*rank 4"),
        ((None, 8, 8, None), "invalid `inputs shape`.*known channel"),
    ],
)
def test_bad_input_shape(shape, match):
    with pytest.raises(ValueError, match=f"AttentionStem: {match}"):
        AttentionStem(4).build(shape)
    with pytest.raises(ValueError, match=f"AttentionStem: {match}"):
        AttentionStem(4)(keras.Input(shape[1:]))


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_large_inputs_stay_finite(dtype):
    layer = AttentionStem(FILTERS, 4, 3, dtype=dtype)
    layer.build((None, *SHAPE))
    harness.randomize_weights(layer, seed=13)
    x = _x(seed=14, scale=1e4)
    y, w = harness.to_numpy(layer(x, return_attention=True))
    assert np.isfinite(y.astype("float32")).all()
    assert w.dtype == np.float32 and np.isfinite(w).all()
    _close(w.sum(axis=-1), np.ones(w.shape[:-1]))
    assert w.max(axis=-1).mean() > 0.9
