"""The int8 path of the TFLite export: calibration, range passes over the
calibrated flatbuffer, quantization and the round-trip mend.

`convert_int8(graph, representative, ...)` (what `export.tflite_convert.
convert_serving(..., "int8")` runs) goes:

1. `calibrate`: the converter's calibration pass alone, a float flatbuffer
   whose every activation carries its min/max over the representative
   images;
2. what stays float32: the ops of the layers that declare
   `int8_keeps_float` (`float_layers_of`, `island_tensors`), ops whose
   calibrated range is empty (`degenerate_tensors`) and ops whose constant
   operand one int8 scale cannot hold (`imprecise_constant_ops`);
3. the ranges: narrowed to the clip with the least int8 rounding error
   (`clip_ranges`, `ranges="mse"`), then widened to their union where
   same-scale ops tie tensors together (`harmonize_ranges`);
4. `quantize`: TensorFlow's quantizer, every tensor but the float ones;
5. `bypass_round_trips`: float -> int8 -> float pairs between float ops
   removed.

Steps 1, 3, 4 and 5 use TensorFlow APIs that are not public: the
converter's `_experimental_calibrate_only`, `tensorflow.lite.python.
convert.mlir_quantize` and the flatbuffer object model of `tensorflow.lite.
tools.flatbuffer_utils`. They can change in any release, so the int8 path
runs only on the TensorFlow versions it was tested with
(`TESTED_TENSORFLOW`): `check_tensorflow()` raises
`UntestedTensorFlowError` on any other, with the way out (the `dynamic`
or `float16` files, which use public APIs only, a tested TensorFlow, or
`KERAS_ATTN_UNTESTED_TF=1` to try anyway). Why each pass exists, with
measurements: docs/int8.md.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np

from .tflite_runner import inspecting_interpreter

# The TensorFlow releases ("major.minor", any patch) the int8 path was
# tested with. Add a release here once `pytest -m slow tests/export`
# passes on it.
TESTED_TENSORFLOW = ("2.21",)
# Set (to anything but "" or "0") to run the int8 path on an untested
# TensorFlow anyway, with a warning.
UNTESTED_TF_ENV = "KERAS_ATTN_UNTESTED_TF"
PRIVATE_APIS = (
    "TFLiteConverter._experimental_calibrate_only",
    "tensorflow.lite.python.convert.mlir_quantize",
    "tensorflow.lite.tools.flatbuffer_utils",
)
_warned = set()


class UntestedTensorFlowError(RuntimeError):
    """The int8 path was asked for on a TensorFlow release it was not
    tested with (see `check_tensorflow`)."""


def _release(version):
    match = re.match(r"(\d+)\.(\d+)", version)
    return f"{match[1]}.{match[2]}" if match else version


def check_tensorflow():
    """The installed TensorFlow's version, if the int8 path was tested with
    its release (`TESTED_TENSORFLOW`).

    Raises:
        UntestedTensorFlowError: another release, unless the environment
            variable `KERAS_ATTN_UNTESTED_TF` is set (then a `UserWarning`,
            once per version).
    """
    import tensorflow as tf

    version = tf.__version__
    if _release(version) in TESTED_TENSORFLOW:
        return version
    tested = ", ".join(f"{v}.x" for v in TESTED_TENSORFLOW)
    if os.environ.get(UNTESTED_TF_ENV, "") not in ("", "0"):
        if version not in _warned:
            _warned.add(version)
            warnings.warn(
                f"int8 TFLite conversion on TensorFlow {version}, which it "
                f"was not tested with (tested: {tested}; "
                f"{UNTESTED_TF_ENV} is set): check the int8 file's parity "
                f"figures before shipping it.", UserWarning, stacklevel=3)
        return version
    raise UntestedTensorFlowError(
        f"int8 TFLite conversion uses private TensorFlow APIs "
        f"({', '.join(PRIVATE_APIS)}) and was tested with TensorFlow "
        f"{tested} only; found TensorFlow {version}. Use the dynamic or "
        f"float16 file instead (`--quantize dynamic` or `--quantize "
        f"float16`; `quantize=\"dynamic\"` from Python), which need no "
        f"private API, or install a tested TensorFlow (pip install "
        f"'tensorflow=={TESTED_TENSORFLOW[-1]}.*'), or set "
        f"{UNTESTED_TF_ENV}=1 to try TensorFlow {version} anyway."
    )


# How the int8 file's activation ranges are chosen: "mse" narrows the
# calibrated min/max to the clip with the least rounding error
# (`clip_ranges`), "minmax" keeps the converter's min/max.
RANGE_METHODS = ("mse", "minmax")

# Which layers stay float32 inside an otherwise int8 model ("auto") is
# declared by the layers themselves: `int8_keeps_float = True` on the class
# (the spatial samplers, whose int8 coordinates move in 1/8-pixel steps, and
# the attention softmaxes, whose weights near 1/(h*w) fall below int8's
# 1/256 step; quantized anyway they dropped top-1 agreement to 50-94 %,
# docs/int8.md), and `int8_sublayers`, the attributes holding nested layers
# that go int8 all the same (AA's plain conv branch).


def float_layers_of(model):
    """Class names of `model`'s layers (nested ones included) that declare
    `int8_keeps_float`: what `float_layers="auto"` keeps float32."""
    return tuple(sorted({
        type(layer).__name__
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if getattr(layer, "int8_keeps_float", False)}))


def int8_sublayers_of(model):
    """`{class name: attributes}` of the nested layers that stay int8
    inside a float layer, from each class's `int8_sublayers`."""
    return {type(layer).__name__: tuple(layer.int8_sublayers)
            for layer in model._flatten_layers(include_self=False,
                                               recursive=True)
            if getattr(layer, "int8_sublayers", ())}


def _segment(name):
    # TensorFlow makes graph names unique with a "_<n>" suffix.
    return re.compile(re.escape(name) + r"(_\d+)?")


def island_tensors(flatbuffer, islands, int8_parts=None):
    """Names of the tensors of `flatbuffer` computed by the layers named in
    `islands` (from `ServingGraph.layers_of`), their nested layers
    included, except the nested layers `int8_parts[island]` names (from
    `ServingGraph.nested_layers`)."""
    from ai_edge_litert.interpreter import Interpreter

    owners = [(_segment(name), [_segment(part) for part in
                                (int8_parts or {}).get(name, ())])
              for name in islands]

    def owned(path):
        parts = path.split("/")[:-1]
        for i, part in enumerate(parts):
            for owner, exempt in owners:
                if owner.fullmatch(part):
                    below = parts[i + 1] if i + 1 < len(parts) else None
                    return below is None or not any(
                        e.fullmatch(below) for e in exempt)
        return False

    names = [d["name"] for d in Interpreter(
        model_content=flatbuffer).get_tensor_details()]
    # A fused op's tensor is named after every op folded into it.
    return [n for n in names if any(owned(p) for p in n.split(";"))]


def calibrate(graph, representative, batch_size=None):
    """The converter's calibration pass alone: the float flatbuffer of
    `graph` (an `export.serving_graph.ServingGraph`) with every
    activation's min/max over `representative` (float32 images
    `(N, H, W, C)` in [0, 1], fed `batch_size` at a time), before any
    quantization."""
    check_tensorflow()
    import tensorflow as tf

    size = batch_size or 1
    images = np.asarray(representative, "float32")
    batches = [[images[i:i + size]]
               for i in range(0, len(images) - size + 1, size)]

    def dataset():
        yield from batches

    converter = graph.tflite_converter(batch_size)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter._experimental_calibrate_only = True
    return converter.convert()


def _model_object(calibrated):
    """`calibrated` as a flatbuffer object model: parsed when given as
    bytes, as is when already parsed (so one parse can serve several
    passes)."""
    check_tensorflow()
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


# Ops whose output depends most on their input's extremes: a clipped
# logit shifts a sigmoid gate or a softmax's winner. Their inputs keep the
# full calibrated range.
_SATURATING_OPS = frozenset({"LOGISTIC", "SOFTMAX", "TANH", "LOG_SOFTMAX"})
# Candidate clips, as fractions of the calibrated min/max.
_CLIP_FRACTIONS = tuple(np.round(np.linspace(1.0, 0.25, 16), 2))


def _int8_round_trip_error(values, low, high):
    values = values.astype("float64")
    scale = (high - low) / 255.0
    zero = np.round(-low / scale) - 128.0
    steps = np.clip(np.round(values / scale) + zero, -128.0, 127.0)
    return float(np.mean(((steps - zero) * scale - values) ** 2))


def clip_ranges(calibrated, representative, count=32,
                values_per_image=2048, seed=0):
    """Narrow each activation's calibrated range to the clip that
    minimises its int8 round-trip mean squared error ("MSE calibration").

    The converter's ranges are the min and max seen in calibration. With
    one scale per tensor, a heavy tail (a few values ten times the typical
    one) makes the step coarse for every other value; clipping the tail
    costs less than that rounding. For every tensor of the main subgraph
    with a range, the values of `count` calibration images (a random
    sample of `values_per_image` each) are quantized with the range scaled
    by each fraction of `_CLIP_FRACTIONS`; the range with the least error
    is kept. The same criterion as TensorRT's and NVIDIA's
    pytorch-quantization's "mse" calibrators. Measured on briefly trained
    models (1,000 test images), int8 top-1 agreement min/max -> MSE:
    SASA-ResNet-26 0.433 -> 0.718, AA-WRN-10 0.951 -> 0.981, Attention-56
    0.710 -> 0.762, SE-ResNet-20 0.985 -> 0.991; CBAM-ResNet-20 lost 4
    images in 1,000 (0.987 -> 0.983).

    Left at min/max: the graph's inputs and outputs (the input range is the
    image's [0, 1], which integer I/O relies on) and the inputs of
    `_SATURATING_OPS`. Tensors of ops that stay float32 are narrowed too:
    where such a tensor feeds an int8 op, its range is the scale of the
    quantize op in between.

    Args:
        calibrated: the calibration pass's flatbuffer as bytes, or parsed
            (then narrowed in place).
        representative: float32 images `(N, H, W, C)` in [0, 1].
        count: images run (the first `count` of `representative`).
        values_per_image: values sampled per tensor and image.
        seed: seed of that sampling.

    Returns:
        `{tensor name: fraction}` for the ranges narrowed.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(calibrated)
    graph = model.subgraphs[0]
    tensors = graph.tensors
    fixed = set(graph.inputs) | set(graph.outputs)
    for op in graph.operators:
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) \
                in _SATURATING_OPS:
            fixed.update(op.inputs)
    candidates = [i for i, t in enumerate(tensors)
                  if _ranged(t) and i not in fixed]
    # Run the calibrated float file itself, so tensor indices match.
    interpreter = inspecting_interpreter(
        flatbuffer_utils.convert_object_to_bytearray(model))
    feed = interpreter.get_input_details()[0]
    size = max(int(feed["shape"][0]), 1)  # a static batch, or 1
    images = np.asarray(representative, "float32")[:max(count, size)]
    rng = np.random.default_rng(seed)
    samples = {i: [] for i in candidates}
    for start in range(0, len(images) - size + 1, size):
        interpreter.set_tensor(feed["index"], images[start:start + size])
        interpreter.invoke()
        for i in candidates:
            values = interpreter.get_tensor(i).ravel()
            if values.size > values_per_image:
                values = rng.choice(values, values_per_image, replace=False)
            samples[i].append(values.astype("float32"))
    narrowed = {}
    for i in candidates:
        q = tensors[i].quantization
        low, high = min(float(q.min[0]), 0.0), max(float(q.max[0]), 0.0)
        if not samples[i] or high - low <= 1e-6:
            continue
        values = np.concatenate(samples[i])
        errors = [_int8_round_trip_error(values, low * f, high * f)
                  for f in _CLIP_FRACTIONS]
        best = _CLIP_FRACTIONS[int(np.argmin(errors))]
        if best < 1.0:
            q.min, q.max = [low * best], [high * best]
            narrowed[tensors[i].name.decode()] = float(best)
    return narrowed


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


def quantize(calibrated, **options):
    """TensorFlow's quantizer (`tensorflow.lite.python.convert.
    mlir_quantize`, private) on a calibrated flatbuffer; `options` are
    its keyword arguments (`input_data_type`, `output_data_type`,
    `fully_quantize`, `denylisted_nodes`, ...)."""
    check_tensorflow()
    from tensorflow.lite.python import convert as lite_convert

    return lite_convert.mlir_quantize(calibrated, **options)


def convert_int8(graph, representative, io_type="float32", batch_size=None,
                 float_layers=(), ranges="mse"):
    """The int8 flatbuffer of `graph` (the steps in this module's
    docstring); the arguments as `export.tflite_convert.convert_serving`'s,
    `float_layers` a tuple of class names.

    Returns:
        `(flatbuffer bytes, kept)`, `kept` as `convert_serving` describes.

    Raises:
        UntestedTensorFlowError: see `check_tensorflow`.
        ValueError: `io_type="uint8"` with ops left float32.
    """
    check_tensorflow()
    import tensorflow as tf

    # Calibrate the float graph once, decide what stays float32, narrow the
    # heavy-tailed ranges, then mend the ones the quantizer would clip.
    raw = calibrate(graph, representative, batch_size)
    parsed = _model_object(raw)  # one parse for the three passes below
    islands = graph.layers_of(tuple(float_layers))
    int8_parts = graph.nested_layers(tuple(float_layers),
                                     int8_sublayers_of(graph.model))
    kept_tensors = (degenerate_tensors(parsed)
                    + imprecise_constant_ops(parsed))
    float_tensors = island_tensors(raw, islands, int8_parts) + kept_tensors
    narrowed = {}
    if ranges == "mse":
        narrowed = clip_ranges(parsed, representative)
    calibrated = harmonize_ranges(parsed, float_tensors)
    kept = {"float_layers": list(islands), "float_tensors": kept_tensors,
            "int8_sublayers": [f"{island}/{part}" for island, parts
                               in int8_parts.items() for part in parts],
            "narrowed": len(narrowed)}
    if not islands and not kept_tensors:
        # Full integer, with the arguments the converter's own int8 path
        # passes (it also makes the uint8 / int8 I/O).
        io = getattr(tf, io_type)
        return quantize(calibrated, input_data_type=io,
                        output_data_type=io), kept
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
    flatbuffer = quantize(
        calibrated,
        fully_quantize=integer_io,
        input_data_type=tf.int8 if integer_io else tf.float32,
        output_data_type=tf.int8 if integer_io else tf.float32,
        denylisted_nodes=float_tensors,
    )
    return bypass_round_trips(flatbuffer)[0], kept


def bypass_round_trips(flatbuffer):
    """Remove the int8 round trips the quantizer puts between two float32
    ops: a `QUANTIZE` of a float tensor followed by a `DEQUANTIZE` back to
    float. The ops reading the `DEQUANTIZE` output read the original float
    tensor instead; a `QUANTIZE` left without readers goes too.

    TensorFlow 2.21's quantizer gives a softmax output its fixed int8
    scale 1/256 even when the softmax stays float32, and where that output
    also feeds an int8 op it routes the float readers through the round
    trip. In LTPA the attention weights, about 1/784 each over a 28 x 28
    map, fed the float weighted sum that way: rounded to 0 or 1/256, the
    weights were 58 % off and the sum 41 % (per-tensor comparison with the
    float file); top-1 agreement of LTPA pc/concat 0.915 -> 0.979.

    Returns:
        `(flatbuffer bytes, number of round trips removed)`.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(flatbuffer)
    removed = 0
    for subgraph in model.subgraphs:
        ops = subgraph.operators
        names = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
                 for op in ops]
        producer = {int(t): k for k, op in enumerate(ops)
                    for t in op.outputs}
        outputs = {int(t) for t in subgraph.outputs}
        dropped = set()
        for k, op in enumerate(ops):
            if names[k] != "DEQUANTIZE":
                continue
            source = producer.get(int(op.inputs[0]))
            if source is None or names[source] != "QUANTIZE":
                continue
            original = int(ops[source].inputs[0])
            result = int(op.outputs[0])
            if subgraph.tensors[original].type != 0 or result in outputs:
                continue  # not float32, or a signature output
            for reader in ops:
                reader.inputs = [original if int(i) == result else int(i)
                                 for i in reader.inputs]
            dropped.add(k)
            removed += 1
        read = {int(i) for k, op in enumerate(ops) if k not in dropped
                for i in op.inputs}
        for k, op in enumerate(ops):
            if names[k] == "QUANTIZE" and not (
                    {int(t) for t in op.outputs} & (read | outputs)):
                dropped.add(k)
        subgraph.operators = [op for k, op in enumerate(ops)
                              if k not in dropped]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), removed
