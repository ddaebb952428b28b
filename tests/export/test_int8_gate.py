"""The int8 path's TensorFlow version gate (`export.int8_ranges.
check_tensorflow`): it uses private TensorFlow APIs, so it runs only on the
releases it was tested with, says what to do otherwise, and can be forced
with `KERAS_ATTN_UNTESTED_TF=1`. The other quantizations use public APIs
and are not gated."""

import types
import warnings

import keras
import numpy as np
import pytest

from keras_attn.export import int8_ranges
from keras_attn.export.int8_ranges import UNTESTED_TF_ENV
from keras_attn.export.int8_ranges import UntestedTensorFlowError
from keras_attn.export.int8_ranges import check_tensorflow
from keras_attn.export.serving_graph import ServingGraph
from keras_attn.export.tflite_convert import convert_serving
from keras_attn.export.tflite_runner import TFLiteModel

pytestmark = pytest.mark.tf_only


@pytest.fixture
def tf_version(monkeypatch):
    """Sets the TensorFlow version the gate sees; the escape hatch unset
    and no version warned about yet."""
    import tensorflow as tf

    monkeypatch.delenv(UNTESTED_TF_ENV, raising=False)
    monkeypatch.setattr(int8_ranges, "_warned", set())

    def set_version(version):
        monkeypatch.setattr(tf, "__version__", version)

    return set_version


def _tiny_graph():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return ServingGraph(keras.Model(inputs, outputs))


def test_this_tensorflow_is_a_tested_one():
    import tensorflow as tf

    assert check_tensorflow() == tf.__version__


@pytest.mark.parametrize("version", ["2.21.0", "2.21.3", "2.21.0rc1"])
def test_every_patch_of_a_tested_release_passes(tf_version, version):
    tf_version(version)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_tensorflow() == version


@pytest.mark.parametrize("version", ["2.22.0", "2.20.0", "3.0.0",
                                     "2.22.0-dev20250101"])
def test_an_untested_release_is_refused_with_the_way_out(tf_version,
                                                          version):
    tf_version(version)
    with pytest.raises(UntestedTensorFlowError) as caught:
        check_tensorflow()
    message = str(caught.value)
    assert f"found TensorFlow {version}" in message
    assert "TensorFlow 2.21.x only" in message
    assert "--quantize dynamic" in message and "float16" in message
    assert "_experimental_calibrate_only" in message
    assert "mlir_quantize" in message
    assert "tensorflow==2.21.*" in message
    assert f"{UNTESTED_TF_ENV}=1" in message
    assert isinstance(caught.value, RuntimeError)


def test_the_escape_hatch_warns_once_per_version(tf_version, monkeypatch):
    tf_version("2.99.0")
    monkeypatch.setenv(UNTESTED_TF_ENV, "0")  # "0" is off
    with pytest.raises(UntestedTensorFlowError):
        check_tensorflow()
    monkeypatch.setenv(UNTESTED_TF_ENV, "1")
    with pytest.warns(UserWarning, match=r"TensorFlow 2\.99\.0.*not tested"):
        assert check_tensorflow() == "2.99.0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_tensorflow() == "2.99.0"


def test_every_int8_entry_point_is_gated(tf_version):
    tf_version("2.99.0")
    images = np.zeros((2, 8, 8, 1), "float32")
    stand_in = types.SimpleNamespace()  # refused before it is touched
    calls = [
        lambda: convert_serving(stand_in, "int8", images, float_layers=()),
        lambda: int8_ranges.convert_int8(stand_in, images),
        lambda: int8_ranges.calibrate(stand_in, images),
        lambda: int8_ranges.quantize(b""),
        lambda: int8_ranges.degenerate_tensors(b""),
        lambda: int8_ranges.harmonize_ranges(b""),
        lambda: int8_ranges.clip_ranges(b"", images),
        lambda: int8_ranges.imprecise_constant_ops(b""),
        lambda: int8_ranges.bypass_round_trips(b""),
    ]
    for call in calls:
        with pytest.raises(UntestedTensorFlowError):
            call()


def test_dynamic_and_float16_need_no_tested_tensorflow(tf_version):
    graph = _tiny_graph()
    tf_version("2.99.0")
    images = np.random.default_rng(0).random((4, 8, 8, 1), "float32")
    want = graph.reference(images)["probabilities"]
    for quantization in ("none", "dynamic", "float16"):
        flatbuffer, kept = convert_serving(graph, quantization)
        got = TFLiteModel(flatbuffer).predict(images)["probabilities"]
        np.testing.assert_allclose(got, want, atol=2e-2)
        assert kept["float_layers"] == []
