"""Checks every keras_attn layer and model must pass (see DEVELOPERS.md).

Each helper takes a Keras model (wrap a layer with `wrap`) and real inputs, and
fails with a message that says what broke. The helpers run under any Keras
backend except where marked: TFLite needs TensorFlow, and gradients are taken
with the backend's own autodiff.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def to_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def to_numpy(x):
    return [np.asarray(ops.convert_to_numpy(t)) for t in to_list(x)]


def random_inputs(shapes, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    arrays = [
        (scale * rng.standard_normal(s)).astype("float32") for s in shapes
    ]
    return arrays


def randomize_weights(layer_or_model, seed=0, scale=0.5):
    """Overwrite every weight with `scale * N(0, 1)` noise.

    Default initialisers give zero biases and unit gates; random weights make
    a wrong formula visible in a reference comparison.
    """
    rng = np.random.default_rng(seed)
    layer_or_model.set_weights(
        [scale * rng.standard_normal(w.shape)
         for w in layer_or_model.get_weights()]
    )


def wrap(layer, input_shapes, **call_kwargs):
    """A functional model `inputs -> layer(inputs, **call_kwargs)`.

    `input_shapes` exclude the batch axis; pass a list for multi-input layers.
    """
    if isinstance(input_shapes[0], (list, tuple)):
        inputs = [keras.Input(s) for s in input_shapes]
        outputs = layer(inputs, **call_kwargs)
    else:
        inputs = keras.Input(input_shapes)
        outputs = layer(inputs, **call_kwargs)
    return keras.Model(inputs, outputs)


def run(model, inputs):
    """Inference outputs as a list of NumPy arrays."""
    return to_numpy(model(inputs, training=False))


# ----------------------------------------------------------------------------
# Serialization


def assert_config_roundtrip(layer):
    """`from_config(get_config())` rebuilds the same layer, and the config
    holds every `__init__` argument (no derived keys, none missing)."""
    config = layer.get_config()
    params = inspect.signature(type(layer).__init__).parameters
    missing = [
        name
        for name, p in params.items()
        if name not in ("self", "kwargs")
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and name not in config
    ]
    assert not missing, f"{type(layer).__name__}.get_config misses {missing}"
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is type(layer)
    assert restored.get_config() == config


# A long-lived loader process serves every reload check of a test session:
# it imports keras and keras_attn once (the costly part), and each model is
# loaded from its file with nothing of the saving process shared.
_LOADER_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import traceback

    import numpy as np
    import keras
    import keras_attn  # registers the layers; nothing else is allowed

    for line in sys.stdin:
        model_path, inputs_path, outputs_path = json.loads(line)
        try:
            keras.backend.clear_session()
            data = np.load(inputs_path)
            inputs = [data[f"x{i}"] for i in range(len(data.files))]
            model = keras.saving.load_model(model_path, safe_mode=True)
            out = model(inputs if len(inputs) > 1 else inputs[0],
                        training=False)
            out = out if isinstance(out, (list, tuple)) else [out]
            np.savez(outputs_path,
                     *[keras.ops.convert_to_numpy(o) for o in out])
            reply = {"ok": True}
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()}
        print("@@reply " + json.dumps(reply), flush=True)
    """
)
_loader = None


def _loader_process():
    global _loader
    if _loader is None or _loader.poll() is not None:
        env = dict(os.environ, KERAS_BACKEND=BACKEND)
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        _loader = subprocess.Popen(
            [sys.executable, "-c", _LOADER_SCRIPT],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        atexit.register(_loader.kill)
    return _loader


def _load_in_other_process(model_path, inputs_path, outputs_path):
    proc = _loader_process()
    proc.stdin.write(json.dumps([model_path, inputs_path, outputs_path]))
    proc.stdin.write("\n")
    proc.stdin.flush()
    for line in proc.stdout:
        if line.startswith("@@reply "):
            return json.loads(line[len("@@reply "):])
    return {"ok": False, "error": f"loader exited with {proc.wait()}"}


def assert_keras_file_roundtrip(model, inputs, tmp_path, atol=1e-6):
    """Save to `.keras`, load it in another Python process (one that never
    built the model) with `safe_mode=True`, and compare outputs with the
    original model."""
    expected = run(model, inputs)
    model_path = os.path.join(tmp_path, "model.keras")
    inputs_path = os.path.join(tmp_path, "inputs.npz")
    outputs_path = os.path.join(tmp_path, "outputs.npz")
    model.save(model_path)
    np.savez(inputs_path, **{f"x{i}": a for i, a in enumerate(to_list(inputs))})
    reply = _load_in_other_process(model_path, inputs_path, outputs_path)
    assert reply["ok"], f"reload failed:\n{reply['error'][-3000:]}"
    got = np.load(outputs_path)
    got = [got[f"arr_{i}"] for i in range(len(got.files))]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=atol, rtol=0)


# ----------------------------------------------------------------------------
# Gradients


def _loss_weights(outputs, seed=1):
    # A random projection of every output: a plain sum would give zero
    # gradient through a softmax (its sum is constant) and hide bugs.
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal(tuple(o.shape)).astype("float32") for o in outputs
    ]


def gradients(model, inputs):
    """Gradient of a random projection of all outputs with respect to every
    trainable weight, as `{weight.path: ndarray}`."""
    outputs = to_numpy(model(inputs, training=True))
    proj = _loss_weights(outputs)
    weights = model.trainable_weights
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            outs = to_list(model(inputs, training=True))
            loss = tf.add_n(
                [
                    tf.reduce_sum(tf.cast(o, "float32") * p)
                    for o, p in zip(outs, proj, strict=True)
                ]
            )
        grads = tape.gradient(loss, [w.value for w in weights])
        grads = [None if g is None else np.asarray(g) for g in grads]
    elif BACKEND == "torch":
        import torch

        for w in weights:
            w.value.grad = None
        outs = to_list(model(inputs, training=True))
        loss = sum(
            (o.float() * torch.as_tensor(p, device=o.device)).sum()
            for o, p in zip(outs, proj, strict=True)
        )
        loss.backward()
        grads = [
            None
            if w.value.grad is None
            else w.value.grad.detach().cpu().numpy()
            for w in weights
        ]
    elif BACKEND == "jax":
        import jax

        trainable = [w.value for w in weights]
        non_trainable = [w.value for w in model.non_trainable_weights]

        def loss_fn(tv):
            outs, _ = model.stateless_call(
                tv, non_trainable, inputs, training=True
            )
            return sum(
                (o.astype("float32") * p).sum()
                for o, p in zip(to_list(outs), proj, strict=True)
            )

        grads = [np.asarray(g) for g in jax.grad(loss_fn)(trainable)]
    else:  # pragma: no cover - numpy backend cannot train
        raise NotImplementedError(BACKEND)
    return {w.path: g for w, g in zip(weights, grads, strict=True)}


def assert_gradients_reach_all_weights(model, inputs):
    grads = gradients(model, inputs)
    assert grads, "model has no trainable weights to check"
    dead = [
        path
        for path, g in grads.items()
        if g is None or not np.isfinite(g).all() or not np.any(g != 0)
    ]
    assert not dead, f"no (finite, non-zero) gradient reaches: {dead}"


# ----------------------------------------------------------------------------
# Precision, compilation


def assert_mixed_precision(make_layer, input_shapes, call_kwargs=None,
                           float32_outputs=()):
    """Under `mixed_float16` the main output is float16, the outputs listed
    in `float32_outputs` (attention maps) are float32, variables stay
    float32, and nothing is NaN."""
    call_kwargs = call_kwargs or {}
    layer = make_layer(dtype="mixed_float16")
    shapes = to_list(input_shapes)
    if not isinstance(shapes[0], (list, tuple)):
        shapes = [shapes]
    inputs = random_inputs([(2, *s) for s in shapes], seed=3)
    out = to_list(layer(inputs if len(inputs) > 1 else inputs[0],
                        **call_kwargs))
    for i, o in enumerate(out):
        want = "float32" if i in float32_outputs else "float16"
        assert keras.backend.standardize_dtype(o.dtype) == want, (
            f"output {i}: dtype {o.dtype}, expected {want}"
        )
        assert np.isfinite(ops.convert_to_numpy(ops.cast(o, "float32"))).all()
    for v in layer.weights:
        assert v.dtype == "float32", f"{v.path} is {v.dtype}"
    # symbolic outputs agree with the eager ones
    sym_inputs = [keras.Input(s) for s in shapes]
    sym = to_list(
        make_layer(dtype="mixed_float16")(
            sym_inputs if len(sym_inputs) > 1 else sym_inputs[0],
            **call_kwargs,
        )
    )
    for s, o in zip(sym, out, strict=True):
        assert keras.backend.standardize_dtype(s.dtype) == (
            keras.backend.standardize_dtype(o.dtype)
        )


def assert_jit_matches_eager(model, inputs, atol=1e-5):
    eager = run(model, inputs)
    model.compile(jit_compile=True)
    jitted = to_numpy(model.predict_on_batch(inputs))
    for j, e in zip(jitted, eager, strict=True):
        np.testing.assert_allclose(j, e, atol=atol, rtol=1e-5)


# ----------------------------------------------------------------------------
# TFLite (TensorFlow backend only)


def assert_tflite_matches(model, inputs, atol=1e-4):
    """Convert with TFLite builtin ops only, run in the LiteRT interpreter,
    compare every output with Keras."""
    from keras_attn.export.tflite_convert import convert
    from keras_attn.export.tflite_runner import run_tflite

    flatbuffer = convert(model, batch_size=to_list(inputs)[0].shape[0])
    got = run_tflite(flatbuffer, to_list(inputs))
    expected = run(model, inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=atol, rtol=1e-4)
    return flatbuffer
