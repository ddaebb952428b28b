"""TFLite conversion with builtin ops only, and a LiteRT runner.

Keras' `model.export(format="litert")` enables SELECT_TF_OPS (Flex) unless
told otherwise, which silently produces files that need the Flex delegate on
device. Here the converter is restricted to `TFLITE_BUILTINS` (plus
`TFLITE_BUILTINS_INT8` for full-integer models), so a model that needs a
TensorFlow op fails at conversion time, where it can be fixed.

Two entry points:

- `convert_serving(graph, ...)`: the shipped file. Its `serving_default`
  signature is the SavedModel's (`images` -> `probabilities`, `classes`,
  `attention_maps` / `locations`, see `export.serving_model`), batch axis
  dynamic (1 until resized) unless `batch_size` is given. Quantization:
  `"none"` (float32), `"dynamic"` (int8 weights, float activations),
  `"float16"` (float16 weights), `"int8"` (full integer, calibrated on real
  images; `io_type="uint8"` or `"int8"` also makes the input and the float
  outputs integer tensors, `classes` stays int64). `TFLiteModel` runs such
  a file on float images in [0, 1] whatever its io type.
- `convert(model, ...)` / `run_tflite`: any Keras model, inputs named
  `input_0..` and outputs `output_0..` in the order of `model.outputs`; the
  layer tests' check (`tests/harness.py::assert_tflite_matches`).
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np

from export.saved_model import write_saved_model

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
IO_TYPES = ("float32", "uint8", "int8")
# Layers left in float32 inside an otherwise int8 model ("auto"). With one
# int8 scale per tensor, sampling coordinates over a 28-pixel image move
# in steps of about 1/8 pixel and the bilinear weights in steps of 1/256
# (SpatialTransformer, and RAM's GlimpseSensor on the same sampler); a
# softmax over the h*w keys of self-attention, or over the h*w positions of
# LTPA's attention estimator, gives weights near 1/(h*w), below int8's
# output step of 1/256. Measured on briefly trained models, quantizing them
# anyway dropped top-1 agreement with the float model to 50-94 % (README,
# "Export and serving").
FLOAT_LAYERS = ("SpatialTransformer", "GlimpseSensor", "LTPAAttention",
                "AttentionAugmentedConv2D", "LocalSelfAttention2D",
                "AttentionStem")
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


def _segment(name):
    # TensorFlow makes graph names unique with a "_<n>" suffix.
    return re.compile(re.escape(name) + r"(_\d+)?")


def island_tensors(flatbuffer, islands):
    """Names of the tensors of `flatbuffer` computed by the layers named in
    `islands` (from `ServingGraph.layers_of`), their nested layers
    included."""
    from ai_edge_litert.interpreter import Interpreter

    owners = [_segment(name) for name in islands]

    def owned(path):
        return any(own.fullmatch(part) for part in path.split("/")[:-1]
                   for own in owners)

    names = [d["name"] for d in Interpreter(
        model_content=flatbuffer).get_tensor_details()]
    # A fused op's tensor is named after every op folded into it.
    return [n for n in names if any(owned(p) for p in n.split(";"))]


def _model_object(calibrated):
    """`calibrated` as a flatbuffer object model: parsed when given as
    bytes, as is when already parsed (so one parse can serve several
    passes)."""
    from tensorflow.lite.tools import flatbuffer_utils

    if isinstance(calibrated, (bytes, bytearray)):
        return flatbuffer_utils.read_model_from_bytearray(
            bytearray(calibrated))
    return calibrated


def degenerate_tensors(calibrated, tolerance=1e-6):
    """Names of the tensors whose calibrated range is (nearly) empty.

    A ReLU unit that never fires on the calibration images (common in the
    one- or two-unit bottleneck of a CBAM / SE gate on a small model), or a
    glimpse location that starts at the same learned point for every image,
    gets a range of zero width; the quantizer then gives it a scale near
    1e-8, and LiteRT 2.3's XNNPACK delegate crashes the process ("double
    free") or refuses the model while preparing it. Such ops stay float32:
    they compute (nearly) constants, so this costs neither size nor speed.
    `calibrated`: the calibrated flatbuffer's bytes or parsed model.
    """
    model = _model_object(calibrated)
    names = []
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            if q is None or q.min is None or q.max is None \
                    or len(q.min) == 0:
                continue
            if float(np.max(np.asarray(q.max) - np.asarray(q.min))) \
                    <= tolerance:
                name = tensor.name
                names.append(name.decode() if isinstance(name, bytes)
                             else name)
    return names


# TFLite int8 ops whose inputs and outputs must share one scale and zero
# point (the 8-bit quantization spec's "same scale/zero_point" restriction:
# they move or select values and never rescale them).
SAME_SCALE_OPS = frozenset({
    "AVERAGE_POOL_2D", "BATCH_TO_SPACE_ND", "BROADCAST_TO", "CONCATENATION",
    "DEPTH_TO_SPACE", "EXPAND_DIMS", "GATHER", "GATHER_ND", "MAXIMUM",
    "MAX_POOL_2D", "MINIMUM", "MIRROR_PAD", "PACK", "PAD", "PADV2",
    "REDUCE_MAX", "REDUCE_MIN", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "SELECT", "SELECT_V2", "SLICE",
    "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQUEEZE",
    "STRIDED_SLICE", "TILE", "TRANSPOSE", "UNPACK",
})


def _ranged(tensor):
    q = tensor.quantization
    return (q is not None and q.min is not None and q.max is not None
            and len(q.min) == 1 and len(q.max) == 1)


def _same_scale_groups(model, subgraph, skip=()):
    """Indices of the ranged tensors of `subgraph` that `SAME_SCALE_OPS`
    tie together, as lists of two or more (union-find over the ops); ops
    with an output named in `skip` (kept float32) tie nothing."""
    from tensorflow.lite.tools import flatbuffer_utils

    tensors = subgraph.tensors
    parent = list(range(len(tensors)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for op in subgraph.operators:
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        if name not in SAME_SCALE_OPS or any(
                tensors[i].name.decode() in skip for i in op.outputs):
            continue
        # Index operands (shapes, begins, conditions) carry no range.
        tied = [i for i in [*op.inputs, *op.outputs]
                if i >= 0 and _ranged(tensors[i])]
        for i in tied[1:]:
            parent[root(i)] = root(tied[0])
    groups = {}
    for i, tensor in enumerate(tensors):
        if _ranged(tensor):
            groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def harmonize_ranges(calibrated, float_tensors=()):
    """Give every tensor tied by same-scale ops the union of their
    calibrated ranges, so the quantizer cannot clip any of them.

    The quantizer must give the inputs and output of a `SAME_SCALE_OPS` op
    one scale, and it takes that scale from whichever tensor it reaches
    first; when that one's range is the narrower, the others are clipped.
    CBAM's spatial attention shows it: its `concat([mean_c(x'), max_c(x')])`
    has a range that misses the negative tail of `x'` (a BatchNorm output),
    and through `REDUCE_MAX` the concat's scale became `x'`'s, clipping the
    channel-gated features of every block. Measured on a briefly trained
    CBAM-ResNet-20: per-op RMSE of the gated features 10 quantization steps
    (0.3 is rounding), top-1 agreement with the float model 0.91; with the
    union of ranges, 0.98. A union never clips; it only coarsens the
    narrower tensors' steps.

    Args:
        calibrated: a flatbuffer from the converter's calibration pass
            (tensors carry `min`/`max` statistics), as bytes or as a
            parsed model, which is then widened in place.
        float_tensors: names of tensors whose ops stay float32; those ops
            tie nothing (a float island's internal ranges, such as a
            -1e30 attention mask, must not reach its int8 inputs).

    Returns:
        The flatbuffer, as `bytes`, with the statistics widened.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(calibrated)
    for subgraph in model.subgraphs:
        for group in _same_scale_groups(model, subgraph,
                                        frozenset(float_tensors)):
            members = [subgraph.tensors[i] for i in group]
            low = min(float(t.quantization.min[0]) for t in members)
            high = max(float(t.quantization.max[0]) for t in members)
            for t in members:
                t.quantization.min = [low]
                t.quantization.max = [high]
    return flatbuffer_utils.convert_object_to_bytearray(model)


# Elementwise ops whose constant operand int8 holds with one scale.
_CONSTANT_OPERAND_OPS = frozenset({"MUL", "ADD", "SUB"})


def imprecise_constant_ops(calibrated, tolerance=0.05):
    """Names of the outputs of MUL / ADD / SUB ops whose constant vector
    operand int8 cannot hold: one scale for the whole vector puts a step
    of more than `tolerance` times its median magnitude.

    These are BatchNorms that no convolution precedes, so the converter
    cannot fold them (pre-activation units, or after a float island): a
    `MUL` by the per-channel factor gamma / sqrt(var + eps) and an `ADD`
    of the offset. int8 quantizes such constants per tensor, and one
    nearly dead channel (variance ~1e-3, factor ~20 against a median of
    1.5) makes the step for all the others about 10 % of their value.
    Such ops stay float32. `calibrated`: the calibrated flatbuffer's
    bytes or parsed model."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(calibrated)
    names = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) \
                    not in _CONSTANT_OPERAND_OPS:
                continue
            for i in op.inputs:
                tensor = subgraph.tensors[i]
                data = model.buffers[tensor.buffer].data
                if tensor.type != 0 or data is None or len(data) <= 4:
                    continue  # not a float32 constant vector
                values = np.abs(np.frombuffer(bytes(data), "<f4"))
                median = float(np.median(values))
                if values.max() / 127.0 > tolerance * max(median, 1e-12):
                    names.extend(subgraph.tensors[o].name.decode()
                                 for o in op.outputs)
                    break
    return names


def _serving_converter(graph, batch_size):
    import tensorflow as tf

    # With a trackable object the converter keeps the function's signature
    # (`serving_default`, input and output names) in the flatbuffer.
    holder = tf.Module()
    holder.serving_default = graph.frozen(batch_size)
    return tf.lite.TFLiteConverter.from_concrete_functions(
        [holder.serving_default.get_concrete_function()], holder
    )


def calibrate(graph, representative, batch_size=None):
    """The converter's calibration pass alone: the float flatbuffer of
    `graph` with every activation's min/max over `representative` (float32
    images `(N, H, W, C)` in [0, 1], fed `batch_size` at a time), before
    any quantization."""
    import tensorflow as tf

    size = batch_size or 1
    images = np.asarray(representative, "float32")
    batches = [[images[i:i + size]]
               for i in range(0, len(images) - size + 1, size)]
    converter = _serving_converter(graph, batch_size)
    _configure(converter, "int8", batches)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True
    return converter.convert()


def convert_serving(graph, quantization="none", representative=None,
                    io_type="float32", batch_size=None, float_layers="auto"):
    """Convert an `export.serving_model.ServingGraph` to a TFLite
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
            float32, nested layers included: `"auto"` is `FLOAT_LAYERS`,
            `()` gives a full-integer file unless some tensors must stay
            float (below).

    Returns:
        `(flatbuffer bytes, kept)`: `kept["float_layers"]`, the layers whose
        ops stayed float32, and `kept["float_tensors"]`, outputs of ops
        left float because their calibrated range is empty
        (`degenerate_tensors`) or their constant operand int8 cannot hold
        (`imprecise_constant_ops`); both empty for a full-integer file.
    """
    import tensorflow as tf

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
    if float_layers == "auto":
        float_layers = FLOAT_LAYERS
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
        converter = _serving_converter(graph, batch_size)
        _configure(converter, quantization, None)
        return converter.convert(), {"float_layers": [], "float_tensors": []}

    # Calibrate the float graph once, mend the ranges the quantizer would
    # clip, then decide what stays float32.
    from tensorflow.lite.python import convert as lite_convert

    raw = calibrate(graph, representative, batch_size)
    parsed = _model_object(raw)  # one parse for the three passes below
    islands = graph.layers_of(tuple(float_layers))
    kept_tensors = (degenerate_tensors(parsed)
                    + imprecise_constant_ops(parsed))
    float_tensors = island_tensors(raw, islands) + kept_tensors
    calibrated = harmonize_ranges(parsed, float_tensors)
    kept = {"float_layers": list(islands), "float_tensors": kept_tensors}
    if not islands and not kept_tensors:
        # Full integer, with the arguments the converter's own int8 path
        # passes (it also makes the uint8 / int8 I/O).
        io = getattr(tf, io_type)
        return lite_convert.mlir_quantize(
            calibrated, input_data_type=io, output_data_type=io), kept
    if io_type == "uint8":
        # TensorFlow's uint8 rewrite of a mixed model makes a file
        # XNNPACK refuses to prepare (a RESHAPE fails to delegate).
        raise ValueError(
            f"convert_serving: `io_type='uint8'` is not available when "
            f"ops stay float32 (layers {kept['float_layers']}, "
            f"{len(kept_tensors)} other ops' outputs); "
            f"use io_type='int8' (zero point shifted by 128)."
        )
    # Mixed int8 / float32: quantize every tensor but those (TensorFlow's
    # selective quantization, as `tf.lite.experimental.
    # QuantizationDebugger` does it).
    integer_io = io_type != "float32"
    flatbuffer = lite_convert.mlir_quantize(
        calibrated,
        fully_quantize=integer_io,
        input_data_type=tf.int8 if integer_io else tf.float32,
        output_data_type=tf.int8 if integer_io else tf.float32,
        denylisted_nodes=float_tensors,
    )
    return flatbuffer, kept


class TFLiteModel:
    """A flatbuffer from `convert_serving`, run with LiteRT.

    Args:
        flatbuffer: the file's bytes, or its path.
        num_threads: interpreter threads.

    `predict(images)` takes float32 images `(N, H, W, C)` in [0, 1],
    quantizes them when the input is an integer tensor, runs them in
    batches (one image at a time for a static batch of 1) and returns
    `{output name: array}` with integer outputs dequantized to float32
    (`classes` stays int64).
    """

    def __init__(self, flatbuffer, num_threads=1):
        if isinstance(flatbuffer, (str, os.PathLike)):
            with open(flatbuffer, "rb") as f:
                flatbuffer = f.read()
        self.interpreter = _interpreter(flatbuffer, num_threads)
        self.runner = self.interpreter.get_signature_runner(
            "serving_default"
        )
        (self.input,) = self.runner.get_input_details().values()
        self.outputs = self.runner.get_output_details()
        signature = self.input["shape_signature"]
        self.static_batch = None if signature[0] == -1 else int(signature[0])

    @property
    def input_dtype(self):
        return np.dtype(self.input["dtype"]).name

    def _quantize(self, images):
        dtype = np.dtype(self.input["dtype"])
        if dtype == np.float32:
            return images
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(images / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, name, values):
        details = self.outputs[name]
        dtype = np.dtype(details["dtype"])
        if dtype not in (np.dtype("uint8"), np.dtype("int8")):
            return values
        scale, zero_point = details["quantization"]
        return ((values.astype("float32") - zero_point) * scale).astype(
            "float32"
        )

    def predict(self, images, batch_size=100):
        images = np.asarray(images, "float32")
        size = self.static_batch or batch_size
        parts = []
        for start in range(0, len(images), size):
            chunk = self._quantize(images[start:start + size])
            pad = 0
            if self.static_batch and len(chunk) < size:
                pad = size - len(chunk)
                chunk = np.concatenate([chunk, chunk[-1:].repeat(pad, 0)])
            out = self.runner(images=chunk)
            parts.append({k: v[:len(v) - pad] for k, v in out.items()})
        return {
            k: self._dequantize(k, np.concatenate([p[k] for p in parts]))
            for k in parts[0]
        }

    def details(self):
        """Input and output tensors: dtype, shape signature and
        `(scale, zero_point)` quantization (for the manifest)."""

        def describe(d):
            scale, zero_point = d["quantization"]
            entry = {
                "dtype": np.dtype(d["dtype"]).name,
                "shape": [None if s == -1 else int(s)
                          for s in d["shape_signature"]],
            }
            if scale:
                entry["quantization"] = {"scale": float(scale),
                                         "zero_point": int(zero_point)}
            return entry

        return {
            "inputs": {"images": describe(self.input)},
            "outputs": {k: describe(v) for k, v in sorted(
                self.outputs.items())},
        }
