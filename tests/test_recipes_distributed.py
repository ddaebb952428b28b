"""Recipes beyond one device, resumption after a crash, other backends.

Each test runs recipes in subprocesses: logical devices, TF_CONFIG and the
Keras backend must be set before TensorFlow / Keras start.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "16",
        "--train-images", "64", "--test-images", "32", "--no-export",
        "--no-pictures"]

# Trains models: the second tier (`pytest -m slow`).
pytestmark = [pytest.mark.tf_only, pytest.mark.slow]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _recipe(args, env, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "keras_attn.recipes.cbam_resnet", *args],
        cwd=ROOT,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        **kwargs,
    )


def _finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _weights(path):
    code = (
        "import sys, numpy as np, keras\n"
        "import keras_attn\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "np.savez(sys.argv[2], *[w.numpy() for w in m.trainable_weights])\n"
    )
    target = str(path) + ".npz"
    subprocess.run([sys.executable, "-c", code, str(path), target],
                   check=True, env=_env(), cwd=ROOT, timeout=300)
    with np.load(target) as data:
        return [data[k] for k in sorted(data.files,
                                        key=lambda k: int(k.split("_")[1]))]


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    _finish(_recipe([*TINY, "--strategy", "mirrored", "--devices", "2",
                     "--output-dir", str(tmp_path)], _env()))
    metrics = json.loads((tmp_path / "cbam_resnet" / "metrics.json")
                         .read_text())
    assert metrics["replicas"] == 2 and metrics["strategy"] == "mirrored"
    assert np.isfinite(metrics["test_loss"])


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_finish_together_with_the_same_weights(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers},
                  "task": {"type": "worker", "index": index}}
        procs.append(_recipe(
            [*TINY, "--strategy", "multiworker", "--output-dir",
             str(tmp_path)], _env(TF_CONFIG=json.dumps(config)),
        ))
    for proc in procs:
        _finish(proc)
    chief = tmp_path / "cbam_resnet"
    other = chief / "_worker1"
    for out in (chief, other):
        history = json.loads((out / "history.json").read_text())
        assert len(history["loss"]) == 2  # both ran every epoch
    metrics = json.loads((chief / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["strategy"] == "multiworker"
    # Trainable weights are all-reduced every step; BatchNormalization's
    # moving statistics are not (each worker averages its own shard, as
    # non-synchronized BN does under any data-parallel strategy).
    for a, b in zip(_weights(chief / "model.keras"),
                    _weights(other / "model.keras"), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    args = ["--epochs", "4", "--steps-per-epoch", "3", "--batch-size", "16",
            "--train-images", "64", "--test-images", "32", "--no-export",
            "--no-pictures", "--output-dir", str(tmp_path)]
    backup = tmp_path / "cbam_resnet" / "backup"
    proc = _recipe(args, _env(), start_new_session=True)
    deadline = time.time() + 300
    # Kill the run once BackupAndRestore has saved the first two epochs.
    while time.time() < deadline and proc.poll() is None:
        meta = backup / "training_metadata.json"
        if meta.exists():
            try:
                epoch = json.loads(meta.read_text())["epoch"]
            except (ValueError, KeyError):
                epoch = -1
            if epoch >= 2:  # the number of finished epochs
                os.killpg(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert not (tmp_path / "cbam_resnet" / "metrics.json").exists()
    out = _finish(_recipe(args, _env()))
    history = json.loads((tmp_path / "cbam_resnet" / "history.json")
                         .read_text())
    # Epochs 1 and 2 were restored, only 3 and 4 ran again.
    assert "Epoch 3/4" in out and "Epoch 1/4" not in out
    assert len(history["loss"]) == 2
    assert not any(backup.glob("*"))


# Another layer recipe with ops of its own on JAX: the STN's gather
# sampler. (Every layer recipe was run by hand on JAX; see README. SASA's
# compile alone takes over a minute on 2 cores, too slow for the suite.)
JAX_ALSO = [("stn", [], "stn")]


def test_recipes_train_on_jax_without_tensorflow(tmp_path):
    # As on a GPU machine with JAX but no TensorFlow: every `import
    # tensorflow...` fails, and the recipes still train from NumPy.
    code = (
        "import importlib, json, sys\n"
        "class NoTensorFlow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'tf_keras',\n"
        "                                  'tensorflow_datasets',\n"
        "                                  'tensorflow_probability'):\n"
        "            raise ModuleNotFoundError(f'no module named {name}')\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n"
        "runs = json.loads(sys.argv[1])\n"
        "for module, args in runs:\n"
        "    recipe = importlib.import_module('keras_attn.recipes.' + module)\n"
        "    recipe.main(args)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    full = [a for a in TINY if a != "--no-pictures"]
    short = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "8",
             "--train-images", "16", "--test-images", "8", "--no-export",
             "--no-pictures"]
    runs = [("cbam_resnet", [*full, "--output-dir", str(tmp_path)])]
    runs += [(module, [*short, *extra, "--output-dir", str(tmp_path)])
             for module, extra, _ in JAX_ALSO]
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(runs)],
        cwd=ROOT, env=_env(KERAS_BACKEND="jax"), capture_output=True,
        text=True, timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = tmp_path / "cbam_resnet"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "jax" and np.isfinite(metrics["test_loss"])
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 2
    assert (out / "model.keras").exists() and (out / "attention.png").exists()
    assert not any((out / "backup").glob("*"))
    for _, _, folder in JAX_ALSO:
        metrics = json.loads((tmp_path / folder / "metrics.json").read_text())
        assert metrics["backend"] == "jax", folder
        assert np.isfinite(metrics["test_loss"]), folder
        assert (tmp_path / folder / "model.keras").exists(), folder
