"""TFLite conversion with builtin ops only.

Keras' `model.export(format="litert")` enables SELECT_TF_OPS (Flex) unless
told otherwise, which silently produces files that need the Flex delegate on
device. Here the converter is restricted to `TFLITE_BUILTINS` (plus
`TFLITE_BUILTINS_INT8` for full-integer models), so a model that needs a
TensorFlow op fails at conversion time, where it can be fixed.

Two entry points:

- `convert_serving(graph, ...)`: the shipped file. Its `serving_default`
  signature is the SavedModel's (`images` -> `probabilities`, `classes`,
  `attention_maps` / `locations`, see `export.serving_graph`), batch axis
  dynamic (1 until resized) unless `batch_size` is given. Quantization:
  `"none"` (float32), `"dynamic"` (int8 weights, float activations),
  `"float16"` (float16 weights), all with public converter options, and
  `"int8"` (full integer, calibrated on real images; `io_type="uint8"` or
  `"int8"` also makes the input and the float outputs integer tensors,
  `classes` stays int64), made by `export.int8_ranges`, which needs a
  TensorFlow release it was tested with. `export.tflite_runner.
  TFLiteModel` runs such a file on float images in [0, 1] whatever its io
  type.
- `convert(model, ...)`: any Keras model, inputs named `input_0..` and
  outputs `output_0..` in the order of `model.outputs`; the layer tests'
  check (`tests/harness.py::assert_tflite_matches`, run with
  `export.tflite_runner.run_tflite`).

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import tempfile

import numpy as np

from .int8_ranges import RANGE_METHODS
from .int8_ranges import convert_int8
from .int8_ranges import float_layers_of

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
IO_TYPES = ("float32", "uint8", "int8")

# File tag of each quantization: model_<tag>.tflite.
FILE_TAGS = {"none": "float32", "dynamic": "dynamic", "float16": "float16",
             "int8": "int8"}


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

    from .saved_model import write_saved_model

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


def convert_serving(graph, quantization="none", representative=None,
                    io_type="float32", batch_size=None, float_layers="auto",
                    ranges="mse"):
    """Convert an `export.serving_graph.ServingGraph` to a TFLite
    flatbuffer with builtin ops only.

    Args:
        graph: the `ServingGraph` (its frozen function is reused).
        quantization: one of `QUANTIZATIONS`.
        representative: for `"int8"`, float32 images `(N, H, W, C)` in
            [0, 1] from real data (a few hundred); fed one at a time.
        io_type: `"float32"`, or `"uint8"` / `"int8"` (with
            `quantization="int8"` only) for integer input and outputs.
        batch_size: static batch size; `None` keeps the batch axis dynamic.
        float_layers: for `"int8"`: class names of layers whose ops stay
            float32, nested layers included: `"auto"` is
            `float_layers_of(graph.model)`, the layers declaring
            `int8_keeps_float`; `()` gives a full-integer file unless
            some tensors must stay float (below).
        ranges: for `"int8"`: one of `RANGE_METHODS` (see
            `export.int8_ranges`).

    Returns:
        `(flatbuffer bytes, kept)`: `kept["float_layers"]`, the layers whose
        ops stayed float32 (except the nested layers
        `kept["int8_sublayers"]` names, declared by `int8_sublayers`), and
        `kept["float_tensors"]`, outputs of ops
        left float because their calibrated range is empty
        (`export.int8_ranges.degenerate_tensors`) or their constant operand
        int8 cannot hold (`export.int8_ranges.imprecise_constant_ops`);
        both empty for a full-integer file; and `kept["narrowed"]`, the
        number of ranges `export.int8_ranges.clip_ranges` narrowed.

    Raises:
        ValueError: a bad argument.
        export.int8_ranges.UntestedTensorFlowError: `"int8"` on a
            TensorFlow release the int8 path was not tested with.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"convert_serving: invalid `quantization`; expected one of "
            f"{list(QUANTIZATIONS)}. Received: quantization={quantization!r}"
        )
    if io_type not in IO_TYPES:
        raise ValueError(
            f"convert_serving: invalid `io_type`; expected one of "
            f"{list(IO_TYPES)}. Received: io_type={io_type!r}"
        )
    if io_type != "float32" and quantization != "int8":
        raise ValueError(
            f"convert_serving: `io_type={io_type!r}` needs "
            f"`quantization='int8'` (integer tensors need full-integer "
            f"quantization). Received: quantization={quantization!r}"
        )
    if ranges not in RANGE_METHODS:
        raise ValueError(
            f"convert_serving: invalid `ranges`; expected one of "
            f"{list(RANGE_METHODS)}. Received: ranges={ranges!r}"
        )
    if float_layers == "auto":
        float_layers = float_layers_of(graph.model)
    if isinstance(float_layers, str) or not all(
            isinstance(c, str) for c in float_layers):
        raise ValueError(
            "convert_serving: invalid `float_layers`; expected 'auto' or a "
            "list of layer class names such as ['SpatialTransformer']. "
            f"Received: float_layers={float_layers!r}"
        )
    if quantization == "int8" and (representative is None
                                   or len(representative) == 0):
        raise ValueError(
            "convert_serving: `quantization='int8'` needs "
            "`representative`, real images (N, H, W, C) in [0, 1] "
            "for calibration."
        )
    if quantization != "int8":
        converter = graph.tflite_converter(batch_size)
        _configure(converter, quantization, None)
        return converter.convert(), {"float_layers": [], "float_tensors": [],
                                     "int8_sublayers": [], "narrowed": 0}
    return convert_int8(graph, representative, io_type=io_type,
                        batch_size=batch_size,
                        float_layers=tuple(float_layers), ranges=ranges)
