"""The main job end to end, on a tiny budget: train, evaluate, export."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_attn.recipes import cbam_resnet

# Trains models: the second tier (`pytest -m slow`).
pytestmark = pytest.mark.slow

TINY = ["--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "16",
        "--train-images", "256", "--test-images", "64"]


def test_jit_defaults_are_the_faster_setting_measured():
    # Each recipe's --jit default and the rates its note quotes come from
    # benchmarks/results/models.json: re-measure, and this test says which
    # defaults and notes to change.
    import importlib
    import json
    import pathlib

    results = json.loads((pathlib.Path(__file__).parents[1] / "benchmarks"
                          / "results" / "models.json").read_text())
    rates = {}
    for row in results["results"]:
        rates.setdefault(row["recipe"], {})[row["jit"]] = (
            row["attention"]["images_per_s"])
    assert set(rates) == set(RECIPES)
    for module, rate in rates.items():
        recipe = importlib.import_module(f"keras_attn.recipes.{module}")
        assert recipe.JIT is (rate[True] > rate[False]), module

        def shown(value):
            return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"

        assert (f"{shown(rate[True])} vs {shown(rate[False])} training "
                "images/s with and without XLA") in recipe.JIT_NOTE, module


@pytest.mark.tf_only
def test_main_job_trains_exports_draws_and_tabulates(tmp_path):
    # One run, several checks: a shared fixture would run once per xdist
    # worker that picks up one of its tests.
    metrics = cbam_resnet.main([*TINY, "--output-dir", str(tmp_path)])
    # The main job keeps XLA off by default (see recipes/cbam_resnet.py).
    assert metrics["jit"] is False
    cbam_run = (tmp_path / "cbam_resnet", metrics)
    _check_model_history_metrics_and_exports(cbam_run)
    _check_saved_model_runs_without_keras_attn(cbam_run)
    _check_logs_pictures_and_cleared_backup(cbam_run)
    _check_results_table_lists_the_run(cbam_run)


def _check_model_history_metrics_and_exports(cbam_run):
    out, metrics = cbam_run
    served = "export/cbam_resnet"
    for f in ("model.keras", "history.json", "metrics.json",
              f"{served}/1/saved_model.pb", f"{served}/1/manifest.json",
              f"{served}/tflite/model_float32.tflite",
              f"{served}/tflite/manifest.json"):
        assert (out / f).exists(), f
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["attention"] is True
    assert saved["export"]["tflite_max_abs_diff"] < 1e-4
    for kind in ("saved_model", "tflite"):  # relative to the run folder
        path = saved["export"][kind]
        assert not os.path.isabs(path) and (out / path).exists(), path
    parity = saved["export"]["saved_model_parity"]
    assert parity["probabilities_max_abs_diff"] < 1e-4
    assert parity["attention_maps_max_abs_diff"] < 1e-4
    manifest = json.loads((out / served / "1/manifest.json").read_text())
    assert manifest["class_names"][0] == "T-shirt/top"
    assert manifest["attention_maps"]["names"]
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert np.isfinite(saved["test_loss"])
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 1 and "val_accuracy" in history


def _check_saved_model_runs_without_keras_attn(cbam_run):
    out, _ = cbam_run
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "assert 'keras_attn' not in sys.modules\n"
        "f = m.signatures['serving_default']\n"
        "out = f(images=tf.zeros((3, 28, 28, 1)))\n"
        "p = out['probabilities'].numpy()\n"
        "assert p.shape == (3, 10), p.shape\n"
        "assert np.allclose(p.sum(-1), 1, atol=1e-5)\n"
        "assert out['classes'].dtype == tf.int64\n"
        "assert out['attention_maps'].shape[0::2] == (3, 28)\n"
    )
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out / "export/cbam_resnet/1")],
        capture_output=True, text=True, env=env, cwd=str(out), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.tf_only
def test_no_attention_trains_the_same_backbone_without_cbam(tmp_path):
    from keras_attn.models import resnet

    metrics = cbam_resnet.main(
        [*TINY, "--no-attention", "--no-jit", "--no-export", "--output-dir",
         str(tmp_path)]
    )
    assert metrics["attention"] is False and "export" not in metrics
    assert metrics["jit"] is False
    cbam = resnet((28, 28, 1), 10, 20, attention="cbam")
    assert metrics["params"] < cbam.count_params()
    assert (tmp_path / "cbam_resnet_baseline" / "model.keras").exists()


def _check_logs_pictures_and_cleared_backup(cbam_run):
    out, metrics = cbam_run
    assert (out / "logs").is_dir() and any((out / "logs").rglob("*"))
    for name in ("attention.png", "gradcam.png"):
        assert name in metrics["pictures"]  # relative to the run folder
        assert (out / name).stat().st_size > 1000
    # BackupAndRestore deletes its state once training has finished.
    assert not any((out / "backup").glob("*"))
    assert metrics["replicas"] == 1 and metrics["backend"] == "tensorflow"


QUICK = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
         "--train-images", "32", "--test-images", "16", "--no-export"]


@pytest.mark.tf_only
@pytest.mark.parametrize(
    ("module", "extra", "folder", "picture"),
    [
        ("se_resnet", [], "se_resnet", None),
        ("ltpa", ["--compatibility", "dp", "--head", "indep",
                  "--width", "0.125"], "ltpa_dp_indep", "attention.png"),
        ("residual_attention", ["--width", "0.0625"], "attention56_mixed",
         "attention.png"),
        ("stn", [], "stn", "stn.png"),
        ("aa_resnet", ["--heads", "2", "--min-key-dims-per-head", "2",
                       "--width", "1"], "aa_wrn", "attention.png"),
        ("sasa_resnet", ["--width", "0.125", "--kernel-size", "3",
                         "--heads", "2"], "sasa_resnet", "attention.png"),
        ("ram", ["--dataset", "centered28", "--glimpses", "2",
                 "--mc-samples", "2"], "ram_centered28_2g", "glimpses.png"),
    ],
)
def test_every_recipe_trains_and_writes_its_outputs(tmp_path, module, extra,
                                                    folder, picture):
    import importlib

    recipe = importlib.import_module(f"keras_attn.recipes.{module}")
    # Under XLA: one run proves both that the recipe writes its outputs and
    # that it trains with `--jit` (compiling dominates these runs, so the
    # suite does not train every recipe twice).
    metrics = recipe.main([*QUICK, *extra, "--jit", "--output-dir",
                           str(tmp_path)])
    # Keras silently trains without XLA when a layer opts out of it.
    assert metrics["jit"] is True
    out = tmp_path / folder
    for f in ("model.keras", "history.json", "metrics.json"):
        assert (out / f).exists(), f
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert np.isfinite(metrics["test_loss"]) and metrics["params"] > 0
    if picture is not None:
        assert (out / picture).stat().st_size > 1000


RECIPES = ("se_resnet", "cbam_resnet", "aa_resnet", "ltpa",
           "residual_attention", "sasa_resnet", "stn", "ram")


@pytest.mark.parametrize("module", RECIPES)
def test_jit_default_is_the_recipes_and_shown_in_help(module, capsys):
    import importlib

    recipe = importlib.import_module(f"keras_attn.recipes.{module}")
    # The defaults were measured on TensorFlow; other backends start off.
    expected = recipe.JIT and keras.backend.backend() == "tensorflow"
    assert recipe.parse_args([]).jit is expected
    assert recipe.parse_args(["--jit"]).jit is True
    assert recipe.parse_args(["--no-jit"]).jit is False
    with pytest.raises(SystemExit):
        recipe.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--jit, --no-jit" in help_text
    default = "--jit" if expected else "--no-jit"
    assert f"default for this recipe: {default}" in help_text


@pytest.mark.tf_only
def test_ram_recipe_reports_every_policy_and_exports(tmp_path):
    from keras_attn.recipes import ram

    metrics = ram.main(
        [*QUICK[:-1], "--no-jit", "--dataset", "centered28", "--glimpses",
         "2", "--mc-samples", "2", "--output-dir", str(tmp_path)]
    )
    policies = metrics["test_accuracy_by_policy"]
    assert sorted(policies) == ["mean", "random", "sample"]
    assert policies["mean"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["export"]["tflite_max_abs_diff"] < 1e-4
    # The mean policy's glimpse path leaves with the class probabilities.
    assert metrics["export"]["tflite_parity"]["locations_max_abs_diff"] < 1e-4
    baseline = ram.main(
        [*QUICK, "--no-attention", "--dataset", "centered28",
         "--output-dir", str(tmp_path)]
    )
    assert (tmp_path / "ram_centered28_fc_baseline" / "model.keras").exists()
    assert "test_accuracy_by_policy" not in baseline


def _check_results_table_lists_the_run(cbam_run):
    from keras_attn.recipes import results

    out, metrics = cbam_run
    lines = results.table(out.parent).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| cbam_resnet | yes |")
    assert f"{100 * metrics['test_accuracy']:.2f}" in lines[2]
    assert f"{metrics['params']:,}" in lines[2]


def test_a_recipe_run_on_a_cpu_prints_no_noise(tmp_path):
    # The causes are gone, not filtered: TensorFlow's CUDA probe error
    # (quieted before TensorFlow is imported on a machine without an
    # NVIDIA driver), Keras' shuffle warning for a tf.data input, and its
    # "ran out of data" warning (finite datasets state their batches;
    # --steps-per-epoch never asks for more than there are).
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    env["KERAS_BACKEND"] = "tensorflow"
    proc = subprocess.run(
        [sys.executable, "-m", "keras_attn.recipes.stn", "--epochs", "2",
         "--steps-per-epoch", "2", "--batch-size", "16", "--train-images",
         "512", "--test-images", "64", "--no-export", "--no-pictures",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in ("cuInit", "shuffle=True", "ran out of data"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "stn" / "metrics.json").read_text())
    assert metrics["val_images"] == 51 and metrics["train_images"] == 512
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
