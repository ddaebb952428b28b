"""Export end to end: each model builder leaves as a TF Serving SavedModel
and TFLite files whose outputs match the Keras model's on 1,000 held-out
Fashion-MNIST test images; briefly trained models keep their predictions
when quantized."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from benchmarks.tiny_models import BUILDERS
from benchmarks.tiny_models import SHAPE
from benchmarks.tiny_models import build
from benchmarks.tiny_models import trained
from keras_attn.data.fashion_mnist import load_fashion_mnist
from keras_attn.export import ParityOptions
from keras_attn.export import TFLiteOptions
from keras_attn.export import export_model
from keras_attn.export.calibration import load_images
from keras_attn.export.tflite_runner import op_names

# Trains models: the second tier (`pytest -m slow`).
pytestmark = [pytest.mark.tf_only, pytest.mark.slow]


def _fresh_process_outputs(directory, images, tmp_path):
    """The SavedModel's outputs computed in a new interpreter that imports
    only TensorFlow (keras_attn is not on its path)."""
    np.save(tmp_path / "images.npy", images)
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "f = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "out = f(images=tf.constant(np.load(sys.argv[2])))\n"
        "assert 'keras_attn' not in sys.modules\n"
        "np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})\n"
    )
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(directory),
         str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(tmp_path / "out.npz") as data:
        return dict(data)


def _check_float_parity(manifest, report):
    for entry in (manifest["saved_model"], manifest["tflite"]["float32"]):
        figures = entry["parity"]
        diffs = {k: v for k, v in figures.items() if k.endswith("abs_diff")}
        assert len(diffs) == 2 * (len(manifest["outputs"]) - 1), report
        assert max(diffs.values()) <= 1e-4, report
        assert figures["top1_agreement"] == 1.0, report
        # The manifest's verdict agrees, with a bound on every output.
        assert entry["parity_shortfalls"] == [], report
        assert entry["parity_bar"] == {
            k: ["<=", 1e-4] for k in diffs if "_max_" in k}, report


def _check_builtin_ops(manifest):
    for tag, path in manifest["written"]["tflite"].items():
        with open(path, "rb") as f:
            ops = op_names(f.read())
        assert not any(op.startswith("Flex") or op == "CUSTOM"
                       for op in ops), (tag, ops)


def _check_fresh_process(model, name, manifest, tmp_path):
    # The SavedModel runs where only TensorFlow is installed, and computes
    # what the Keras model computes.
    images, _ = load_images("fashion_mnist", "test", 8, SHAPE)
    fresh = _fresh_process_outputs(manifest["written"]["saved_model"],
                                   images, tmp_path)
    assert sorted(fresh) == sorted(manifest["outputs"])
    probabilities = keras.ops.convert_to_numpy(
        model.inference_model()(images) if name == "ram" else model(images)
    )
    np.testing.assert_allclose(fresh["probabilities"], probabilities,
                               atol=1e-5)
    np.testing.assert_array_equal(fresh["classes"],
                                  probabilities.argmax(-1))
    if "attention_maps" in fresh:
        # The in-graph reduction matches keras_attn.viz's NumPy one.
        from keras_attn.viz.attention_maps import spatial_attention_maps
        from keras_attn.viz.plotting import resize_bilinear

        maps, _ = spatial_attention_maps(model, images)
        want = np.stack([resize_bilinear(maps[n], *SHAPE[:2])
                         for n in manifest["attention_maps"]["names"]], 1)
        np.testing.assert_allclose(fresh["attention_maps"], want,
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_builder_exports_like_keras(name, tmp_path):
    # Float exports compute what Keras computes, every output (maps too),
    # on 1,000 real test images; weights need no training for that.
    model = build(name)
    manifest = export_model(model, tmp_path, name=name, to="all",
                            parity=ParityOptions(images=1000))
    assert manifest["parity"] == {"images": 1000,
                                  "source": "fashion_mnist test[0:1000]"}
    _check_float_parity(manifest, json.dumps(manifest["tflite"]))
    _check_builtin_ops(manifest)
    _check_fresh_process(model, name, manifest, tmp_path)


# Trained models whose quantized files meet the bar: full-integer int8
# files (SE-, CBAM-ResNet) and float islands (layers declaring
# `int8_keeps_float`: STN's sampler, AA's and LTPA's attention, RAM's
# sensor, plus RAM's empty-range tensors). Measured and below 98 % int8
# agreement, in docs/int8.md: Attention-56, AA-WRN (at the edge), SASA.
QUANTIZED = ["se_resnet", "cbam_resnet", "aa_resnet", "stn", "ram",
             "ltpa_pc_concat", "ltpa_dp_indep"]
# (epochs, training images); others: 2 epochs on 2,048. Briefly trained
# (test accuracy 0.64-0.71), LTPA's int8 agreement sits at 0.979-0.981;
# trained this long (0.84-0.87) it is 0.987-0.996 over three seeds
# (`benchmarks/results/quantization_4x12000.json` for seed 0).
TRAINING = {"ltpa_pc_concat": (4, 12000), "ltpa_dp_indep": (4, 12000)}
# int8 top-1 agreement each must reach: the 98 % bar, except RAM, measured
# at 0.974-0.99 across runs. Its check still covers the mixed int8 path
# (float sensor, float empty-range tensors) but does not claim the bar.
INT8_AGREEMENT = {"ram": 0.95}


def _float_layer_names(model):
    from keras_attn.layers import AttentionAugmentedConv2D
    from keras_attn.layers import AttentionStem
    from keras_attn.layers import LocalSelfAttention2D
    from keras_attn.layers import LTPAAttention
    from keras_attn.layers import SpatialTransformer
    from keras_attn.ram import GlimpseSensor

    classes = (AttentionAugmentedConv2D, AttentionStem, LocalSelfAttention2D,
               LTPAAttention, SpatialTransformer, GlimpseSensor)
    return sorted(layer.name for layer in model._flatten_layers(
        include_self=False) if isinstance(layer, classes))


@pytest.mark.parametrize("name", QUANTIZED)
def test_quantized_exports_agree_with_the_float_model(name, tmp_path):
    model = trained(name, *TRAINING.get(name, (2, 2048)))
    manifest = export_model(
        model, tmp_path, name=name, to="tflite",
        tflite=TFLiteOptions(quantize="none,dynamic,int8",
                             calibration="fashion_mnist",
                             calibration_images=200),
        parity=ParityOptions(images=1000),
    )
    # The float model decides: agreement with a coin-flipper means nothing.
    images, _ = load_images("fashion_mnist", "test", 1000, SHAPE)
    _, labels = load_fashion_mnist("test")
    predict = model.inference_model() if name == "ram" else model
    accuracy = float(np.mean(keras.ops.convert_to_numpy(
        predict.predict(images, verbose=0)).argmax(-1) == labels[:1000]))
    assert accuracy >= 0.5, accuracy
    tflite = {tag: entry["parity"]
              for tag, entry in manifest["tflite"].items()}
    report = json.dumps(tflite, indent=1)
    # Dynamic range: int8 weights, activations quantized per inference. The
    # largest single gap reaches 0.03-0.07 on some models (an image whose
    # top two classes are close); the typical one is ~1e-3.
    assert tflite["dynamic"]["probabilities_mean_abs_diff"] <= 1e-2, report
    assert tflite["dynamic"]["top1_agreement"] >= 0.98, report
    assert tflite["int8"]["top1_agreement"] >= INT8_AGREEMENT.get(
        name, 0.98), report
    # The manifest's verdict: no shortfall where the bar is met (RAM's
    # int8 file may miss it, and then says so).
    assert manifest["tflite"]["dynamic"]["parity_shortfalls"] == [], report
    int8_missed = manifest["tflite"]["int8"]["parity_shortfalls"]
    assert bool(int8_missed) == (
        tflite["int8"]["top1_agreement"] < 0.98), report
    int8 = manifest["tflite"]["int8"]
    assert sorted(int8["float_layers"]) == _float_layer_names(model), int8
    if int8["full_integer"]:
        assert int8["bytes"] < manifest["tflite"]["float32"]["bytes"] / 2
    assert int8["bytes"] < manifest["tflite"]["float32"]["bytes"]
    _check_builtin_ops(manifest)
