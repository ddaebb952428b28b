"""`export_model`'s arguments: the option groups (`SignatureOptions`,
`TFLiteOptions`, `ParityOptions`, or dicts of their fields), the errors
that name the argument and the fix, the deprecated flat keywords, and the
int8 version gate, checked before anything is written. Fast: no model is
trained (the exports themselves: test_export.py, test_export_cli.py)."""

import json
import warnings

import keras
import numpy as np
import pytest

from keras_attn.export import ParityOptions
from keras_attn.export import SignatureOptions
from keras_attn.export import TFLiteOptions
from keras_attn.export import export_model
from keras_attn.export.__main__ import main as export_main
from keras_attn.export.int8_ranges import UNTESTED_TF_ENV
from keras_attn.export.int8_ranges import UntestedTensorFlowError


@pytest.mark.parametrize(
    ("fields", "argument"),
    [
        ({"quantize": "int4"}, "quantize"),
        ({"quantize": []}, "quantize"),
        ({"quantize": [8]}, "quantize"),
        ({"quantize": "int8"}, "calibration"),
        ({"io_type": "uint8"}, "io_type"),
        ({"io_type": "float64"}, "io_type"),
        ({"calibration_images": 0}, "calibration_images"),
        ({"calibration_images": True}, "calibration_images"),
        ({"batch_size": 0}, "batch_size"),
        ({"float_layers": "SpatialTransformer"}, "float_layers"),
        ({"float_layers": [3]}, "float_layers"),
        ({"int8_ranges": "percentile"}, "int8_ranges"),
    ],
)
def test_tflite_options_name_the_field_and_the_fix(fields, argument):
    with pytest.raises(ValueError, match=f"TFLiteOptions: invalid "
                                         f"`{argument}`; expected"):
        TFLiteOptions(**fields)


def test_options_are_normalized_and_frozen():
    options = TFLiteOptions(quantize="none, int8,none", io_type="int8",
                            calibration="fashion_mnist",
                            float_layers=["SpatialTransformer"])
    assert options.quantize == ("none", "int8")
    assert options.float_layers == ("SpatialTransformer",)
    assert TFLiteOptions().quantize == ("none",)
    assert TFLiteOptions(float_layers="none").float_layers == "none"
    assert SignatureOptions(input_shape=[28, 28, 1]).input_shape == (28, 28,
                                                                     1)
    with pytest.raises(AttributeError):
        options.io_type = "float32"
    with pytest.raises(ValueError, match="ParityOptions: invalid `images`"):
        ParityOptions(images=-1)
    assert ParityOptions(images=np.zeros((2, 4, 4, 1))).images.shape[0] == 2


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"to": "onnx"}, "to"),
        ({"to": "saved_model",
          "tflite": TFLiteOptions(quantize="int8",
                                  calibration="fashion_mnist")},
         "tflite.quantize"),
        ({"version": 0}, "version"),
        ({"version": "2"}, "version"),
        ({"name": "a/b"}, "name"),
        ({"tflite": "int8"}, "tflite"),
        ({"parity": {"count": 3}}, "parity"),
        ({"signature": ["input_shape"]}, "signature"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_fix(tmp_path, kwargs,
                                                     argument):
    with pytest.raises(ValueError, match=f"export_model: invalid "
                                         f"`{argument}`; expected"):
        export_model(str(tmp_path / "missing.keras"), tmp_path, **kwargs)


def test_groups_are_keyword_only_and_unknown_keywords_refused(tmp_path):
    with pytest.raises(TypeError):
        export_model("m.keras", tmp_path, "all")
    with pytest.raises(TypeError, match="unexpected keyword argument "
                                        "'quantise'"):
        export_model("m.keras", tmp_path, quantise="int8")


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.tf_only
def test_flat_keywords_still_work_with_a_deprecation_warning(tmp_path):
    images = np.random.default_rng(0).random((6, 8, 8, 1), "float32")
    with pytest.warns(DeprecationWarning) as record:
        manifest = export_model(
            _tiny_model(), tmp_path, name="tiny", to="tflite",
            quantize="none,dynamic", tflite_batch_size=1,
            parity_images=images, class_names="a,b,c")
    message = str(record[0].message)
    assert record[0].filename == __file__
    for moved in ("quantize= -> tflite.quantize",
                  "tflite_batch_size= -> tflite.batch_size",
                  "parity_images= -> parity.images",
                  "class_names= -> signature.class_names"):
        assert moved in message, message
    assert sorted(manifest["tflite"]) == ["dynamic", "float32"]
    assert manifest["tflite"]["float32"]["inputs"]["images"]["shape"] == [
        1, 8, 8, 1]
    assert manifest["parity"] == {"images": 6, "source": "6 given images"}
    assert manifest["class_names"] == ["a", "b", "c"]
    # The same export with the groups: no such warning, the same files.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grouped = export_model(
            _tiny_model(), tmp_path, name="tiny2", to="tflite",
            tflite=TFLiteOptions(quantize="none,dynamic", batch_size=1),
            parity=ParityOptions(images=images),
            signature={"class_names": "a,b,c"})
    assert not [w for w in caught if "export_model" in str(w.message)]
    assert _files(grouped) == _files(manifest)
    assert grouped["parity"] == manifest["parity"]
    assert grouped["class_names"] == manifest["class_names"]


def _files(manifest):
    """The TFLite entries less what the layer names change (bytes) and
    the figures."""
    return {tag: {k: v for k, v in entry.items()
                  if k not in ("bytes", "parity")}
            for tag, entry in manifest["tflite"].items()}


@pytest.mark.tf_only
def test_int8_on_an_untested_tensorflow_stops_before_writing(tmp_path,
                                                               monkeypatch,
                                                               capsys):
    import tensorflow as tf

    monkeypatch.delenv(UNTESTED_TF_ENV, raising=False)
    monkeypatch.setattr(tf, "__version__", "2.99.0")
    path = tmp_path / "tiny.keras"
    _tiny_model().save(path)
    out = tmp_path / "exports"
    with pytest.raises(UntestedTensorFlowError, match="found TensorFlow "
                                                      "2.99.0"):
        export_model(str(path), out, tflite=TFLiteOptions(
            quantize="none,int8", calibration="fashion_mnist"))
    assert not out.exists()
    assert export_main([str(path), "--out", str(out), "--quantize", "int8",
                        "--calibration", "fashion_mnist"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m export: error: int8 TFLite conversion")
    assert "--quantize dynamic" in err and f"{UNTESTED_TF_ENV}=1" in err
    assert not out.exists()
    # The other files need no tested TensorFlow.
    assert export_main([str(path), "--out", str(out), "--to", "tflite",
                        "--quantize", "dynamic", "--parity-images",
                        "0"]) == 0
    manifest = json.loads((out / "tiny" / "tflite" / "manifest.json")
                          .read_text())
    assert list(manifest["tflite"]) == ["dynamic"]
