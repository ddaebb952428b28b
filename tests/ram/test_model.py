"""Tests for `keras_attn.ram.RecurrentAttentionModel`: REINFORCE gradients
against a hand-written computation, gradient isolation of the hybrid loss,
metrics, evaluation policies, serialization and export.

The model trains with `tf.GradientTape` and a `tfp` policy: TensorFlow only.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.ram import RecurrentAttentionModel
from tests import harness

pytestmark = pytest.mark.tf_only

SHAPE = (12, 14, 2)  # (H, W, C); H != W
BATCH = 6
STEPS = 3


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _model(core="rnn", location_hidden_units=0, seed=0, **kwargs):
    kwargs = {
        "num_classes": 3,
        "num_glimpses": STEPS,
        "glimpse_size": 4,
        "num_scales": 2,
        "what_units": 6,
        "where_units": 5,
        "glimpse_units": 8,
        "core_units": 7,
        "core": core,
        "location_hidden_units": location_hidden_units,
        "location_std": 0.2,
        "reinforce_weight": 0.7,
        "seed": 1,
        **kwargs,
    }
    model = RecurrentAttentionModel(**kwargs)
    model.build((None, *SHAPE))
    # Random weights (biases included) make rewards, baselines and
    # locations non-trivial.
    harness.randomize_weights(model, seed=seed, scale=0.5)
    return model


def _data(seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, *SHAPE)).astype("float32")
    labels = rng.integers(0, 3, batch).astype("int32")
    return images, labels


def _noise(seed=0, batch=BATCH):
    rng = np.random.default_rng(seed + 100)
    return rng.standard_normal((batch, STEPS, 2)).astype("float32")


def _group(model, layer):
    return [v for v in model.trainable_variables
            if v.path.startswith(f"{model.name}/{layer.name}/")]


def _is_zero(g):
    return g is None or not np.any(_np(g))


def gaussian_log_density(x, mean, std):
    """Closed-form `sum_xy log N(x; mean, std^2)` (no tfp)."""
    import tensorflow as tf

    z = (x - mean) / std
    return tf.reduce_sum(
        -0.5 * z**2 - math.log(std) - 0.5 * math.log(2.0 * math.pi), axis=-1
    )


# ----------------------------------------------------------------------------
# REINFORCE


@pytest.mark.parametrize("core,hidden", [("rnn", 0), ("lstm", 4)])
def test_reinforce_gradient_matches_hand_computation(core, hidden):
    import tensorflow as tf

    model = _model(core, hidden)
    images, labels = _data()
    noise = _noise()
    loc_vars = model.location_network.trainable_variables
    with tf.GradientTape() as tape:
        terms = model.compute_ram_losses(images, labels, noise=noise)
    got = tape.gradient(terms["reinforce_loss"], loc_vars)

    # Hand computation: mu_t = tanh(head(relu(hidden(h_t)))) from the
    # recorded states, the actually drawn (unclipped) locations, and the
    # loss -lambda mean_b sum_t (R - b_t) log N(l_t; mu_t, sigma^2).
    h = tf.constant(_np(terms["hidden"]), "float32")  # (B, T, U)
    raw = tf.constant(_np(terms["raw_locations"]), "float32")
    advantage = tf.constant(
        _np(terms["rewards"])[:, None] - _np(terms["baselines"]), "float32"
    )
    with tf.GradientTape() as tape:
        x = h
        if hidden:
            w, b = model.location_network.hidden.weights
            x = tf.nn.relu(tf.einsum("btu,uv->btv", x, w) + b)
        w, b = model.location_network.head.weights
        mu = tf.tanh(tf.einsum("btu,uv->btv", x, w) + b)
        log_pi = gaussian_log_density(raw, mu, model.location_std)
        loss = -model.reinforce_weight * tf.reduce_mean(
            tf.reduce_sum(advantage * log_pi, axis=1)
        )
    want = tape.gradient(loss, loc_vars)
    np.testing.assert_allclose(
        _np(terms["reinforce_loss"]), _np(loss), rtol=1e-5, atol=1e-6
    )
    assert len(got) == (4 if hidden else 2)
    for g, w in zip(got, want, strict=True):
        assert np.any(_np(w) != 0)
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-4, atol=1e-6)
    # The recorded means are those of the hand computation.
    np.testing.assert_allclose(_np(terms["means"]), _np(mu), atol=1e-6)


def test_sampled_locations_follow_the_injected_noise():
    model = _model()
    images, labels = _data()
    noise = _noise()
    terms = model.compute_ram_losses(images, labels, noise=noise)
    np.testing.assert_allclose(
        _np(terms["raw_locations"]),
        _np(terms["means"]) + model.location_std * noise, atol=1e-6,
    )


def test_log_prob_is_of_the_unclipped_sample():
    model = _model()
    images, labels = _data()
    noise = _noise()
    noise[:, 0] = [30.0, -40.0]  # 6 and 8 sigma: far outside [-1, 1]
    terms = model.compute_ram_losses(images, labels, noise=noise)
    raw = _np(terms["raw_locations"])
    means = _np(terms["means"])
    assert np.all(raw[:, 0, 0] > 1) and np.all(raw[:, 0, 1] < -1)
    # The sensor sees the clipped location ...
    np.testing.assert_allclose(
        _np(terms["locations"]), np.clip(raw, -1, 1), atol=0
    )
    # ... the policy scores the drawn one.
    std = model.location_std
    z = (raw - means) / std
    want = np.sum(-0.5 * z**2 - np.log(std) - 0.5 * np.log(2 * np.pi), -1)
    np.testing.assert_allclose(_np(terms["log_pi"]), want, rtol=1e-5)
    assert np.all(_np(terms["log_pi"])[:, 0] < -1000)


def test_hybrid_loss_gradient_paths():
    import tensorflow as tf

    model = _model("lstm", 8)
    images, labels = _data()
    with tf.GradientTape(persistent=True) as tape:
        terms = model.compute_ram_losses(images, labels, noise=_noise())
    groups = {
        "location": _group(model, model.location_network),
        "baseline": _group(model, model.baseline_network),
        "core": _group(model, model.core_network),
        "glimpse": _group(model, model.glimpse_network),
        "classifier": _group(model, model.classifier),
    }
    assert sum(len(v) for v in groups.values()) == len(
        model.trainable_variables
    )
    learns_from = {
        "reinforce_loss": {"location"},
        "baseline_loss": {"baseline"},
        "classification_loss": {"core", "glimpse", "classifier"},
    }
    for term, learners in learns_from.items():
        for group, variables in groups.items():
            grads = tape.gradient(terms[term], variables)
            for v, g in zip(variables, grads, strict=True):
                if group in learners:
                    assert not _is_zero(g), f"{term} -> {v.path}"
                else:
                    assert _is_zero(g), f"{term} must not reach {v.path}"
    del tape


def test_reward_and_term_shapes():
    model = _model()
    images, labels = _data()
    terms = model.compute_ram_losses(images, labels, noise=_noise())
    rewards = _np(terms["rewards"])
    assert rewards.shape == (BATCH,)
    assert set(np.unique(rewards)) <= {0.0, 1.0}
    want = (np.argmax(_np(terms["logits"]), -1) == labels).astype(float)
    np.testing.assert_array_equal(rewards, want)
    for key in ("baselines", "log_pi", "advantages"):
        assert _np(terms[key]).shape == (BATCH, STEPS), key
    for key in ("means", "raw_locations", "locations"):
        assert _np(terms[key]).shape == (BATCH, STEPS, 2), key
    np.testing.assert_allclose(
        _np(terms["advantages"]),
        rewards[:, None] - _np(terms["baselines"]), atol=1e-6,
    )
    np.testing.assert_allclose(
        _np(terms["baseline_loss"]),
        np.mean((rewards[:, None] - _np(terms["baselines"])) ** 2),
        rtol=1e-5,
    )
    total = sum(_np(terms[k]) for k in
                ("classification_loss", "reinforce_loss", "baseline_loss"))
    np.testing.assert_allclose(_np(terms["loss"]), total, rtol=1e-5)
    assert float(_np(terms["reward"])) == pytest.approx(rewards.mean())


def test_monte_carlo_accuracy_averages_probabilities():
    model = _model()
    images, labels = _data()
    samples = 4
    noise = np.concatenate([_noise(s) for s in range(samples)])
    terms = model.compute_ram_losses(
        images, labels, samples=samples, noise=noise
    )
    probs = _np(ops.softmax(terms["logits"], axis=-1))
    probs = probs.reshape(samples, BATCH, -1).mean(0)
    want = np.mean(np.argmax(probs, -1) == labels)
    assert float(_np(terms["accuracy"])) == pytest.approx(want)
    assert _np(terms["rewards"]).shape == (samples * BATCH,)


# ----------------------------------------------------------------------------
# Training loop, metrics, policies


def test_fit_and_evaluate_log_the_metrics():
    model = _model()
    images, labels = _data(batch=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [_np(w) for w in model.location_network.weights]
    # Graph mode for fit (train_step must trace); evaluate eagerly, which
    # is cheaper than a second trace here.
    history = model.fit(images, labels, batch_size=4, epochs=2, verbose=0)
    names = {"loss", "accuracy", "reward", "classification_loss",
             "reinforce_loss", "baseline_loss"}
    assert names <= set(history.history)
    for values in history.history.values():
        assert len(values) == 2 and np.isfinite(values).all()
    model.run_eagerly = True
    logs = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert names <= set(logs)
    after = [_np(w) for w in model.location_network.weights]
    assert any(np.any(a != b) for a, b in zip(after, before, strict=True))


def test_evaluation_policies():
    model = _model()
    images, labels = _data(batch=8)
    # Eager: tracing one graph per policy costs more than these few steps.
    model.compile(optimizer="adam", run_eagerly=True)
    model.eval_samples = 3
    accuracies = model.evaluate_policies(images, labels, batch_size=4)
    assert set(accuracies) == {"mean", "sample", "random"}
    assert all(0.0 <= a <= 1.0 for a in accuracies.values())
    assert model.eval_policy == "mean"
    # The mean policy is deterministic and equals predict / __call__.
    probs = _np(model(images))
    mean_logs = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert mean_logs["accuracy"] == pytest.approx(
        np.mean(np.argmax(probs, -1) == labels)
    )
    assert accuracies["mean"] == pytest.approx(mean_logs["accuracy"])
    # A tf.data pipeline works too (what the recipes pass).
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    on_dataset = model.evaluate_policies(dataset, policies=("mean",))
    assert on_dataset["mean"] == pytest.approx(accuracies["mean"])
    # Switching the policy takes effect in evaluate and predict.
    model.eval_policy = "sample"
    sampled = model.predict(images, verbose=0)
    assert sampled.shape == (8, 3)
    np.testing.assert_allclose(sampled.sum(-1), 1.0, atol=1e-5)
    assert not np.allclose(sampled, probs)
    with pytest.raises(ValueError, match="eval_policy"):
        model.eval_policy = "greedy"


def test_glimpse_trace():
    model = _model()
    images, _ = _data()
    trace = model.glimpse_trace(images)
    assert isinstance(trace, np.ndarray) and trace.shape == (BATCH, STEPS, 2)
    np.testing.assert_array_equal(trace, model.glimpse_trace(images))
    # Learned start: the first location is tanh(head bias) from h_0 = 0.
    _, bias = model.location_network.head.weights
    np.testing.assert_allclose(
        trace[:, 0], np.tile(np.tanh(_np(bias)), (BATCH, 1)), atol=1e-6
    )
    random = model.glimpse_trace(images, policy="random")
    assert np.all(np.abs(random) <= 1) and not np.allclose(random, trace)
    sampled = model.glimpse_trace(images, policy="sample")
    assert np.all(np.abs(sampled) <= 1) and not np.allclose(sampled, trace)


# ----------------------------------------------------------------------------
# Serialization and export


def test_config_roundtrip():
    model = _model(core="lstm", eval_policy="sample", eval_samples=2)
    harness.assert_config_roundtrip(model)


def test_keras_file_roundtrip(tmp_path):
    model = _model(core="lstm", location_hidden_units=3)
    images, labels = _data()
    model.compile(optimizer="adam", run_eagerly=True)
    model.fit(images, labels, epochs=1, batch_size=3, verbose=0)
    path = str(tmp_path / "ram.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, RecurrentAttentionModel)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(
        _np(loaded(images)), _np(model(images)), atol=1e-6
    )
    np.testing.assert_allclose(
        loaded.glimpse_trace(images), model.glimpse_trace(images), atol=1e-6
    )


def test_inference_model_exports_to_saved_model_and_tflite(tmp_path):
    import tensorflow as tf

    from keras_attn.export.saved_model import write_saved_model
    from keras_attn.export.tflite_runner import op_names
    from keras_attn.export.tflite_runner import run_tflite

    # LSTM: the larger op set (the rnn core is a subset: FULLY_CONNECTED,
    # ADD, RELU).
    model = _model("lstm")
    images, _ = _data()
    inference = model.inference_model()
    assert isinstance(inference, keras.Model)
    assert not isinstance(inference, RecurrentAttentionModel)
    want = _np(model(images))
    np.testing.assert_allclose(_np(inference(images)), want, atol=1e-6)
    # Shares the weights: a change in the model shows in the export path.
    assert {id(v) for v in inference.weights} <= {
        id(v) for v in model.weights
    }

    # One SavedModel serves both checks (writing it dominates the cost).
    directory = str(tmp_path / "saved")
    write_saved_model(inference, directory, batch_size=BATCH)
    served = tf.saved_model.load(directory).signatures["serve"](
        input_0=tf.constant(images)
    )
    np.testing.assert_allclose(_np(served["output_0"]), want, atol=1e-5)
    converter = tf.lite.TFLiteConverter.from_saved_model(directory)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    assert not any("Flex" in name for name in op_names(flatbuffer))
    (got,) = run_tflite(flatbuffer, [images])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_glimpses": 0}, "num_glimpses"),
        ({"core": "gru"}, "core"),
        ({"location_std": 0.0}, "location_std"),
        ({"reinforce_weight": -1.0}, "reinforce_weight"),
        ({"eval_policy": "greedy"}, "eval_policy"),
        ({"eval_samples": 0}, "eval_samples"),
        ({"glimpse_size": 0}, "glimpse_size"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        RecurrentAttentionModel(**{"num_classes": 3, **kwargs})


def test_rejects_non_image_input():
    model = RecurrentAttentionModel(num_classes=3)
    with pytest.raises(ValueError, match="RecurrentAttentionModel.*images"):
        model.build((None, 28, 28))
