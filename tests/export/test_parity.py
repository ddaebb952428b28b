"""`export.parity`: the figures, the bar each kind of file is held to, and
how `python -m export` reports a file that misses it."""

import json
import warnings

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.export import ParityOptions
from keras_attn.export import export_model
from keras_attn.export import parity
from keras_attn.export.__main__ import main as export_main


def test_figures_against_numpy():
    rng = np.random.default_rng(0)
    want = rng.random((6, 4)).astype("float32")
    have = want + rng.normal(0, 1e-3, want.shape).astype("float32")
    classes = want.argmax(-1)
    flipped = classes.copy()
    flipped[0] = (flipped[0] + 1) % 4
    got = parity.figures({"probabilities": want, "classes": classes},
                         {"probabilities": have, "classes": flipped})
    diff = np.abs(have.astype("float64") - want)
    assert got == pytest.approx({"probabilities_max_abs_diff": diff.max(),
                                 "probabilities_mean_abs_diff": diff.mean(),
                                 "top1_agreement": 5 / 6})


@pytest.mark.parametrize("kind, measured, missed", [
    ("float32", {"probabilities_max_abs_diff": 2e-5,
                 "attention_maps_max_abs_diff": 3e-4,
                 "top1_agreement": 1.0},
     ["attention_maps_max_abs_diff 0.0003 > 0.0001"]),
    ("saved_model", {"probabilities_max_abs_diff": 1e-4,
                     "probabilities_mean_abs_diff": 1e-6}, []),
    ("dynamic", {"probabilities_max_abs_diff": 0.04,
                 "probabilities_mean_abs_diff": 0.001,
                 "top1_agreement": 0.995}, []),
    ("float16", {"probabilities_mean_abs_diff": 0.02,
                 "top1_agreement": 0.97},
     ["probabilities_mean_abs_diff 0.02 > 0.01",
      "top1_agreement 0.97 < 0.98"]),
    ("int8", {"probabilities_max_abs_diff": 0.3, "top1_agreement": 0.98},
     []),
    ("int8", {"top1_agreement": 0.762}, ["top1_agreement 0.762 < 0.98"]),
    # A figure the bar names but the model lacks is no shortfall.
    ("int8", {}, []),
])
def test_shortfalls(kind, measured, missed):
    assert parity.shortfalls(kind, measured) == missed


def test_bar_expands_over_every_output():
    measured = {"probabilities_max_abs_diff": 0.0,
                "locations_max_abs_diff": 0.0,
                "locations_mean_abs_diff": 0.0, "top1_agreement": 1.0}
    assert parity.bar("float32", measured) == {
        "probabilities_max_abs_diff": ["<=", 1e-4],
        "locations_max_abs_diff": ["<=", 1e-4]}
    assert parity.bar("int8", measured) == {"top1_agreement": [">=", 0.98]}


def test_unknown_kind_names_the_choices():
    with pytest.raises(ValueError, match=r"`kind`.*'int8'.*kind='int4'"):
        parity.shortfalls("int4", {})


@pytest.mark.tf_only
def test_command_line_warns_and_strict_parity_fails(tmp_path, capsys,
                                                    monkeypatch):
    keras.utils.set_random_seed(0)
    path = tmp_path / "se.keras"
    models.resnet((28, 28, 1), 10, 20, attention="se").save(path)
    common = [str(path), "--to", "tflite", "--out", str(tmp_path / "x"),
              "--quantize", "none", "--parity-images", "20"]
    # The float32 file meets its bar: no warning, status 0.
    assert export_main(common + ["--strict-parity"]) == 0
    assert "warning" not in capsys.readouterr().err
    # Under a bar no file can meet, it is reported, and --strict-parity
    # turns the report into status 3; the files are written either way.
    monkeypatch.setitem(parity.BARS, "float32",
                        {"*_max_abs_diff": ("<=", -1.0)})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert export_main(common) == 0
    # Said once, by the command, not again as a ParityWarning.
    assert not [w for w in record
                if issubclass(w.category, parity.ParityWarning)]
    err = capsys.readouterr().err
    assert ("python -m export: warning: tflite float32 misses its parity "
            "bar (probabilities_max_abs_diff") in err, err
    assert "try the float32" not in err  # no advice for the exact file
    assert export_main(common + ["--strict-parity"]) == 3
    manifest = json.loads(
        (tmp_path / "x" / "se" / "tflite" / "manifest.json").read_text())
    entry = manifest["tflite"]["float32"]
    assert entry["parity_bar"] == {"probabilities_max_abs_diff":
                                   ["<=", -1.0]}
    assert entry["parity_shortfalls"][0].startswith(
        "probabilities_max_abs_diff ")
    assert (tmp_path / "x" / "se" / "tflite" / "model_float32.tflite"
            ).is_file()


def test_strict_parity_needs_parity_images(tmp_path, capsys):
    # Checked before anything is loaded or written.
    assert export_main([str(tmp_path / "absent.keras"), "--strict-parity",
                        "--parity-images", "0",
                        "--out", str(tmp_path / "x")]) == 2
    assert "--strict-parity needs parity figures" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.tf_only
def test_export_model_warns_where_the_caller_called(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    model = models.resnet((28, 28, 1), 10, 20, attention="se")
    monkeypatch.setitem(parity.BARS, "saved_model",
                        {"*_max_abs_diff": ("<=", -1.0)})
    with pytest.warns(parity.ParityWarning) as record:
        manifest = export_model(model, tmp_path, name="se", to="all",
                                parity=ParityOptions(images=20))
    # Only the SavedModel misses its (impossible) bar.
    assert [str(w.message) for w in record] == [
        "export_model: saved_model misses its parity bar ("
        + manifest["saved_model"]["parity_shortfalls"][0] + ")"]
    assert record[0].filename == __file__
    assert manifest["tflite"]["float32"]["parity_shortfalls"] == []
