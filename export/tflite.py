"""TFLite conversion with builtin ops only, and a LiteRT runner.

Keras' `model.export(format="litert")` enables SELECT_TF_OPS (Flex) unless
told otherwise, which silently produces files that need the Flex delegate on
device. Here the converter is restricted to `TFLITE_BUILTINS`, so a model
that needs a TensorFlow op fails at conversion time, where it can be fixed.

Inputs are named `input_0..`, outputs `output_0..` in the order of
`model.outputs`, so callers never depend on the converter's own naming.
"""

from __future__ import annotations

import tempfile

import numpy as np

from export.saved_model import write_saved_model

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")


def convert(model, batch_size=1, quantization="none", representative=None):
    """Convert a Keras model to a TFLite flatbuffer using builtin ops only.

    Args:
        model: a built Keras model (TensorFlow backend).
        batch_size: static batch size of the exported signature (LiteRT runs
            fixed shapes best; `None` keeps it dynamic).
        quantization: `"none"`, `"dynamic"` (int8 weights), `"float16"`
            (float16 weights) or `"int8"` (full integer, needs
            `representative`).
        representative: for `"int8"`, an iterable of input batches (each a
            list of float32 arrays) drawn from real data.

    Returns:
        The flatbuffer as `bytes`.
    """
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"convert: invalid `quantization`; expected one of "
            f"{list(QUANTIZATIONS)}. Received: quantization={quantization!r}"
        )
    if quantization == "int8" and representative is None:
        raise ValueError(
            "convert: `quantization='int8'` needs `representative`, an "
            "iterable of real input batches for calibration."
        )
    # Keras' own route (ExportArchive -> SavedModel -> converter): it tracks
    # the Keras variables so they are frozen into the flatbuffer.
    with tempfile.TemporaryDirectory() as tmp:
        write_saved_model(model, tmp, batch_size)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        return _configure(converter, quantization, representative).convert()


def _configure(converter, quantization, representative):
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]

        def gen():
            for batch in representative:
                yield [np.asarray(b, "float32") for b in batch]

        converter.representative_dataset = gen
    return converter


def _interpreter(flatbuffer, num_threads=1):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(flatbuffer, inputs, num_threads=1):
    """Run a flatbuffer made by `convert` on a list of float32 arrays and
    return its outputs as a list in `model.outputs` order."""
    interpreter = _interpreter(flatbuffer, num_threads)
    runner = interpreter.get_signature_runner()
    feeds = {
        f"input_{i}": np.asarray(x, "float32") for i, x in enumerate(inputs)
    }
    result = runner(**feeds)
    return [result[f"output_{i}"] for i in range(len(result))]


def op_names(flatbuffer):
    """The set of operator names in a flatbuffer (to show it is builtin-only).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    return {d["op_name"] for d in interpreter._get_ops_details()}
