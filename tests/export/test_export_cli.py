"""`python -m export`: TF Serving layout, manifest, versions, the encoded
image signature, integer I/O and argument errors."""

import json

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.data.fashion_mnist import load_fashion_mnist
from keras_attn.export import ParityOptions
from keras_attn.export import TFLiteOptions
from keras_attn.export import export_model
from keras_attn.export.__main__ import main as export_main
from keras_attn.export.__main__ import parser as export_parser
from keras_attn.export.calibration import load_images
from keras_attn.export.manifest import sha256
from keras_attn.export.tflite_runner import TFLiteModel

# Trains models: the second tier (`pytest -m slow`).
pytestmark = [pytest.mark.tf_only, pytest.mark.slow]

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
           "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _test_images(count):
    return load_images("fashion_mnist", "test", count, (28, 28, 1))[0]


def _ltpa():
    keras.utils.set_random_seed(0)
    model = models.ltpa_vgg((28, 28, 1), 10, compatibility="dp",
                            head="indep", width=0.0625, global_dim=32)
    return model


@pytest.fixture(scope="module")
def se_resnet():
    """SE-ResNet-20 trained briefly (test accuracy about 0.75): every op
    quantizes to int8, and its predictions are decided enough for top-1
    agreement to mean something."""
    from benchmarks.tiny_models import trained

    return trained("se_resnet")


def _run_folder(tmp_path, model):
    """A recipe's run folder: `model.keras` beside `metrics.json`."""
    run = tmp_path / "ltpa_run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "metrics.json").write_text(json.dumps({"dataset":
                                                 "fashion_mnist"}))
    return run / "model.keras"


def test_command_line_writes_the_tf_serving_layout(tmp_path, capsys):
    path = _run_folder(tmp_path, _ltpa())
    out = tmp_path / "exports"
    assert export_main([str(path), "--to", "all", "--out", str(out),
                        "--quantize", "none,float16",
                        "--parity-images", "50"]) == 0
    printed = capsys.readouterr().out
    base = out / "ltpa_run"
    assert (base / "1" / "saved_model.pb").is_file()
    assert (base / "1" / "variables").is_dir()
    for tag in ("float32", "float16"):
        assert (base / "tflite" / f"model_{tag}.tflite").is_file()
        assert f"model_{tag}.tflite" in printed
    manifest = json.loads((base / "1" / "manifest.json").read_text())
    assert manifest == json.loads((base / "tflite" / "manifest.json")
                                  .read_text())
    assert manifest["name"] == "ltpa_run" and manifest["version"] == 1
    assert manifest["source"]["sha256"] == sha256(path)
    assert manifest["class_names"] == FASHION
    assert manifest["class_names_from"] == "dataset fashion_mnist"
    assert manifest["input"] == {"name": "images",
                                 "shape": [None, 28, 28, 1],
                                 "dtype": "float32", "range": [0.0, 1.0]}
    assert manifest["outputs"]["attention_maps"]["shape"] == [
        None, 3, 28, 28]
    assert len(manifest["attention_maps"]["names"]) == 3
    assert set(manifest["versions"]) >= {"keras", "tensorflow",
                                         "ai_edge_litert"}
    assert manifest["tflite"]["float16"]["parity"][
        "probabilities_max_abs_diff"] < 1e-2
    # float16 weights halve the file.
    sizes = {t: manifest["tflite"][t]["bytes"] for t in manifest["tflite"]}
    assert sizes["float16"] < 0.6 * sizes["float32"]

    # A second export becomes version 2, which TF Serving then serves.
    assert export_main([str(path), "--to", "saved_model", "--out", str(out),
                        "--parity-images", "0"]) == 0
    assert (base / "2" / "saved_model.pb").is_file()
    # Writing over a version needs --overwrite.
    assert export_main([str(path), "--to", "saved_model", "--out", str(out),
                        "--version", "2", "--parity-images", "0"]) == 2
    assert "`version`" in capsys.readouterr().err


def test_image_bytes_signature_decodes_like_the_float_signature(tmp_path):
    import tensorflow as tf

    manifest = export_model(_ltpa(), tmp_path, name="m", to="saved_model",
                            parity=ParityOptions(images=0))
    loaded = tf.saved_model.load(manifest["written"]["saved_model"])
    images = _test_images(4)
    pixels = np.round(images * 255).astype("uint8")
    pngs = tf.stack([tf.io.encode_png(p) for p in pixels])
    from_bytes = loaded.signatures["serve_image_bytes"](image_bytes=pngs)
    from_floats = loaded.signatures["serving_default"](
        images=tf.constant(pixels / np.float32(255)))
    for key in ("probabilities", "attention_maps"):
        np.testing.assert_allclose(from_bytes[key], from_floats[key],
                                   atol=1e-6)
    # Other sizes and RGB JPEGs are converted to the model's input.
    big = tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(pixels[:1])),
                          (56, 40))
    jpeg = tf.io.encode_jpeg(tf.cast(big[0], tf.uint8))
    out = loaded.signatures["serve_image_bytes"](image_bytes=[jpeg])
    assert out["probabilities"].shape == (1, 10)
    assert out["attention_maps"].shape == (1, 3, 28, 28)


@pytest.mark.parametrize("io_type", ["uint8", "int8"])
def test_int8_file_takes_integer_images(tmp_path, io_type, se_resnet):
    model = se_resnet
    manifest = export_model(model, tmp_path, name="m", to="tflite",
                            tflite=TFLiteOptions(quantize="none,int8",
                                                 io_type=io_type,
                                                 calibration="fashion_mnist",
                                                 calibration_images=100),
                            parity=ParityOptions(images=200))
    int8 = manifest["tflite"]["int8"]
    assert int8["io_type"] == io_type and int8["full_integer"] is True
    assert int8["inputs"]["images"]["dtype"] == io_type
    assert int8["outputs"]["probabilities"]["dtype"] == io_type
    assert int8["outputs"]["classes"]["dtype"] == "int64"
    assert manifest["tflite"]["float32"]["io_type"] == "float32"
    runner = TFLiteModel(manifest["written"]["tflite"]["int8"])
    assert runner.input_dtype == io_type
    assert int8["parity"]["top1_agreement"] >= 0.98
    got = runner.predict(_test_images(200))
    want = keras.ops.convert_to_numpy(model(_test_images(200)))
    assert (got["classes"] == want.argmax(-1)).mean() >= 0.98
    _, labels = load_fashion_mnist("test")
    assert (want.argmax(-1) == labels[:200]).mean() >= 0.5  # not chance


def test_int8_with_float_layers_can_still_take_integer_images(tmp_path):
    keras.utils.set_random_seed(0)
    model = models.stn_classifier((28, 28, 1), 10)
    manifest = export_model(model, tmp_path, name="stn", to="tflite",
                            tflite=TFLiteOptions(quantize="int8",
                                                 io_type="int8",
                                                 calibration="fashion_mnist",
                                                 calibration_images=50),
                            parity=ParityOptions(images=100))
    int8 = manifest["tflite"]["int8"]
    assert int8["float_layers"] == ["spatial_transformer"]
    assert int8["full_integer"] is False
    assert int8["ranges"] == "mse" and int8["ranges_narrowed"] > 0
    assert int8["inputs"]["images"]["dtype"] == "int8"
    assert int8["outputs"]["probabilities"]["dtype"] == "int8"
    assert int8["parity"]["top1_agreement"] >= 0.95
    with pytest.raises(ValueError, match="io_type='int8'"):
        export_model(model, tmp_path, name="stn_u8", to="tflite",
                     tflite=TFLiteOptions(quantize="int8", io_type="uint8",
                                          calibration="fashion_mnist",
                                          calibration_images=10),
                     parity=ParityOptions(images=0))
    # A group may be a dict of its fields.
    full = export_model(model, tmp_path, name="stn_full", to="tflite",
                        tflite={"quantize": "int8",
                                "calibration": "fashion_mnist",
                                "calibration_images": 50,
                                "float_layers": "none",
                                "int8_ranges": "minmax"},
                        parity={"images": 0})
    int8 = full["tflite"]["int8"]
    assert int8["float_layers"] == []
    assert int8["ranges"] == "minmax" and int8["ranges_narrowed"] == 0
    # Only ops whose calibrated range was empty may stay float.
    assert int8["full_integer"] is (not int8["float_tensors"])


def test_missing_model_file_and_bad_command_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="invalid `model`"):
        export_model(str(tmp_path / "missing.keras"), tmp_path)
    assert export_main([str(tmp_path / "m.keras"), "--quantize", "int8"]) == 2
    assert "`calibration`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main(["m.keras", "--input-shape", "28,28"])
    with pytest.raises(SystemExit):
        export_main(["m.keras", "--int8-ranges", "percentile"])
    assert export_parser().parse_args(
        ["m.keras", "--int8-ranges", "minmax"]).int8_ranges == "minmax"
