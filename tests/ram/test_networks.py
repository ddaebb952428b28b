"""Tests for the RAM networks (`keras_attn.ram.networks`) against NumPy
computations from the layers' own weights."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.ram import BaselineNetwork
from keras_attn.ram import CoreNetwork
from keras_attn.ram import GlimpseNetwork
from keras_attn.ram import LocationNetwork
from tests import harness


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _w(layer):
    return [_np(w) for w in layer.weights]


def relu(x):
    return np.maximum(x, 0.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)


def _is_zero(g):
    return g is None or not np.any(g)


# ----------------------------------------------------------------------------
# Numerics


def test_glimpse_network_matches_numpy():
    net = GlimpseNetwork(what_units=6, where_units=5, units=7)
    glimpses, locations = harness.random_inputs([(3, 2, 4, 4, 2), (3, 2)])
    out = _np(net([glimpses, locations]))
    harness.randomize_weights(net, seed=1)
    out = _np(net([glimpses, locations]))
    w1, b1 = _w(net.what)
    w2, b2 = _w(net.where)
    w3, b3 = _w(net.what_out)
    (w4,) = _w(net.where_out)
    h_g = relu(glimpses.reshape(3, -1) @ w1 + b1)
    h_l = relu(locations @ w2 + b2)
    assert out.shape == (3, 7)
    _close(out, relu(h_g @ w3 + b3 + h_l @ w4))


def test_rnn_core_is_the_papers_rectifier_rnn():
    core = CoreNetwork(units=6, core="rnn")
    g, h = harness.random_inputs([(4, 5), (4, 6)], seed=2)
    core(g, [h])
    harness.randomize_weights(core, seed=3)
    out, states = core(g, [h])
    kernel, recurrent, bias = _w(core.cell)
    ref = relu(g @ kernel + h @ recurrent + bias)
    _close(_np(out), ref)
    assert len(states) == 1
    _close(_np(states[0]), ref)


def test_lstm_core_matches_numpy():
    core = CoreNetwork(units=3, core="lstm")
    g, h, c = harness.random_inputs([(4, 5), (4, 3), (4, 3)], seed=4)
    core(g, [h, c])
    harness.randomize_weights(core, seed=5)
    out, (h_new, c_new) = core(g, [h, c])
    kernel, recurrent, bias = _w(core.cell)
    z = g @ kernel + h @ recurrent + bias
    i, f, cc, o = np.split(z, 4, axis=-1)  # Keras gate order
    c_ref = sigmoid(f) * c + sigmoid(i) * np.tanh(cc)
    h_ref = sigmoid(o) * np.tanh(c_ref)
    _close(_np(out), h_ref)
    _close(_np(h_new), h_ref)
    _close(_np(c_new), c_ref)


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_initial_states_are_zero_with_the_batch_size(core):
    net = CoreNetwork(units=4, core=core)
    states = net.initial_states(np.ones((3, 5, 6, 2), "float32"))
    assert len(states) == (1 if core == "rnn" else 2)
    for s in states:
        assert _np(s).shape == (3, 4) and not np.any(_np(s))


@pytest.mark.parametrize("hidden_units", [0, 5])
def test_location_network_matches_numpy(hidden_units):
    net = LocationNetwork(hidden_units=hidden_units)
    h = harness.random_inputs([(4, 6)], seed=6, scale=2.0)[0]
    net(h)
    harness.randomize_weights(net, seed=7, scale=1.0)
    out = _np(net(h))
    x = h
    if hidden_units:
        w, b = _w(net.hidden)
        x = relu(x @ w + b)
    w, b = _w(net.head)
    _close(out, np.tanh(x @ w + b))
    assert out.shape == (4, 2) and np.all(np.abs(out) <= 1)


def test_baseline_network_matches_numpy():
    net = BaselineNetwork()
    h = harness.random_inputs([(4, 6)], seed=8)[0]
    net(h)
    harness.randomize_weights(net, seed=9)
    w, b = _w(net.head)
    _close(_np(net(h)), h @ w + b)


@pytest.mark.parametrize(
    "head", [LocationNetwork, BaselineNetwork], ids=lambda c: c.__name__
)
def test_heads_send_no_gradient_into_their_input(head):
    # A Dense before the head stands in for the core: the stop-gradient
    # must leave it without gradient while the head itself learns.
    inputs = keras.Input((5,))
    features = keras.layers.Dense(6, name="core_stand_in")(inputs)
    model = keras.Model(inputs, head()(features))
    grads = harness.gradients(model, harness.random_inputs([(3, 5)]))
    for path, g in grads.items():
        if "core_stand_in" in path:
            assert _is_zero(g), path
        else:
            assert not _is_zero(g), path


def test_glimpse_network_gradients_reach_all_weights():
    net = GlimpseNetwork(what_units=4, where_units=3, units=5)
    model = harness.wrap(net, [(2, 3, 3, 1), (2,)])
    harness.assert_gradients_reach_all_weights(
        model, harness.random_inputs([(4, 2, 3, 3, 1), (4, 2)], seed=10)
    )


# ----------------------------------------------------------------------------
# Keras contract


@pytest.mark.parametrize(
    "layer",
    [
        GlimpseNetwork(what_units=3, where_units=4, units=5),
        CoreNetwork(units=7, core="lstm"),
        CoreNetwork(units=7, core="rnn"),
        LocationNetwork(hidden_units=3),
        BaselineNetwork(),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_roundtrip(layer):
    harness.assert_config_roundtrip(layer)


def test_keras_file_roundtrip(tmp_path):
    glimpses = keras.Input((2, 3, 3, 1))
    locations = keras.Input((2,))
    g = GlimpseNetwork(what_units=4, where_units=3, units=5)(
        [glimpses, locations]
    )
    core = CoreNetwork(units=6, core="lstm")
    h, _ = core(g, core.initial_states(g))
    outputs = [LocationNetwork(hidden_units=2)(h), BaselineNetwork()(h)]
    model = keras.Model([glimpses, locations], outputs)
    harness.randomize_weights(model, seed=11)
    inputs = harness.random_inputs([(3, 2, 3, 3, 1), (3, 2)], seed=12)
    path = str(tmp_path / "nets.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for got, want in zip(harness.run(loaded, inputs),
                         harness.run(model, inputs), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_outputs_are_float32_under_mixed_precision():
    harness.assert_mixed_precision(
        lambda **kw: LocationNetwork(**kw), (6,), float32_outputs=(0,)
    )
    harness.assert_mixed_precision(
        lambda **kw: BaselineNetwork(**kw), (6,), float32_outputs=(0,)
    )
    harness.assert_mixed_precision(
        lambda **kw: GlimpseNetwork(4, 3, 5, **kw),
        [(2, 3, 3, 1), (2,)], float32_outputs=(0,),
    )


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: GlimpseNetwork(what_units=0), "GlimpseNetwork.*what_units"),
        (lambda: GlimpseNetwork(units=2.5), "GlimpseNetwork.*units"),
        (lambda: CoreNetwork(core="gru"), "CoreNetwork.*core"),
        (lambda: CoreNetwork(units=-1), "CoreNetwork.*units"),
        (lambda: LocationNetwork(hidden_units=-1),
         "LocationNetwork.*hidden_units"),
    ],
)
def test_bad_arguments_name_layer_and_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_glimpse_network_rejects_bad_location_shape():
    with pytest.raises(ValueError, match="GlimpseNetwork.*locations shape"):
        harness.wrap(GlimpseNetwork(), [(2, 3, 3, 1), (3,)])
