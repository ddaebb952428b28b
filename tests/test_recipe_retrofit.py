"""`python -m recipes.retrofit` end to end on a tiny budget: a recipe-made
checkpoint, SE retrofitted into MobileNetV2 (identity before fine-tuning),
both arms fine-tuned, the attention arm saved, reloaded and exported."""

import json

import keras
import numpy as np
import pytest

from keras_attn.recipes import retrofit

TINY = ["--backbone", "mobilenet_v2", "--width", "0.35", "--attention",
        "se", "--weights", "pretrain", "--pretrain-images", "128",
        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16",
        "--train-images", "64", "--test-images", "32", "--no-pictures"]


def test_flags():
    args = retrofit.parse_args([])
    assert (args.attention, args.backbone, args.where, args.weights) == (
        "se", "mobilenet_v2", "blocks", "auto")
    assert args.jit is False and args.baseline is True
    assert retrofit.parse_args(["--attention", "cbam"]).attention == "cbam"
    assert retrofit.parse_args(["--no-attention"]).attention is False
    for bad in (["--attention", "nope"], ["--image-size", "28"],
                ["--weights", "somewhere.h5"]):
        with pytest.raises(SystemExit):
            retrofit.parse_args(bad)


@pytest.mark.slow
@pytest.mark.tf_only
def test_tiny_run_compares_both_arms_and_exports(tmp_path):
    results = tmp_path / "evidence.json"
    out = retrofit.main([*TINY, "--output-dir", str(tmp_path),
                         "--results-json", str(results)])
    attention, baseline, row = (out["attention"], out["baseline"],
                                out["comparison"])
    identity = row["identity_before_fine_tuning"]
    assert identity["modules"] == 17 and identity["max_abs_diff"] <= 1e-5
    assert attention["attention"] == "se" and baseline["attention"] is False
    assert attention["params"] > baseline["params"]
    assert row["attention"] == [attention["test_accuracy"]]
    assert row["baseline"] == [baseline["test_accuracy"]]
    assert row["pretrained"]["source"].startswith("recipe-made")
    folder = tmp_path / "retrofit_mobilenet_v2_se"
    assert json.loads((folder / "comparison.json").read_text()) == (
        json.loads(json.dumps(row)))
    assert json.loads(results.read_text())["rows"][0]["piece"] == (
        "retrofit_mobilenet_v2_se")
    # Exported with TFLite parity (builtin ops only); the baseline is not.
    assert attention["export"]["tflite_max_abs_diff"] < 1e-4
    assert "export" not in baseline
    # Reloads in safe mode and evaluates as it did after training.
    from keras_attn.data import load_fashion_mnist

    model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    gates = [layer for layer in model.layers
             if type(layer).__name__ == "IdentityGate"]
    assert len(gates) == 17
    x, y = load_fashion_mnist("test")
    x = x[:32, ..., None].astype("float32") / 255.0
    accuracy = float(np.mean(model.predict(x, verbose=0).argmax(-1)
                             == y[:32]))
    assert accuracy == pytest.approx(attention["test_accuracy"], abs=1e-6)
