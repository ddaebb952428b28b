"""int8 ranges: no tensor's int8 scale may clip values seen in calibration.

TensorFlow's quantizer gives the inputs and output of a same-scale op
(concat, max-pool, reduce-max, reshape, ...) one scale, taken from whichever
tensor it reaches first. CBAM's spatial attention concatenates the channel
mean and max of the gated features `x'`; the concat's range misses `x'`'s
negative tail, and through `REDUCE_MAX` it became `x'`'s own scale, which
clipped the features of every CBAM block (top-1 agreement 0.91 on a briefly
trained CBAM-ResNet-20). `export.int8_ranges.harmonize_ranges` widens each such
group to the union of its ranges before quantizing.

Before that, `export.int8_ranges.clip_ranges` narrows heavy-tailed ranges to the
clip with the least int8 round-trip error ("MSE calibration"); its tests
check that choice against the tensors' actual values.
"""

import keras
import numpy as np
import pytest
from tensorflow.lite.tools import flatbuffer_utils

from keras_attn.export.calibration import load_images
from keras_attn.export.int8_ranges import SAME_SCALE_OPS
from keras_attn.export.int8_ranges import calibrate
from keras_attn.export.int8_ranges import harmonize_ranges
from keras_attn.export.serving_graph import ServingGraph
from keras_attn.export.tflite_convert import convert_serving
from keras_attn.export.tflite_runner import inspecting_interpreter
from keras_attn.layers import CBAM

pytestmark = pytest.mark.tf_only

SHAPE = (28, 28, 1)


@pytest.fixture(scope="module")
def cbam_graph():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    # A BatchNorm output, as in a ResNet block: CBAM sees negative values.
    x = keras.layers.BatchNormalization()(x)
    x = CBAM(reduction=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return ServingGraph(keras.Model(inputs, outputs))


@pytest.fixture(scope="module")
def images():
    return load_images("fashion_mnist", "train", 16, SHAPE)[0]


def _ranges(flatbuffer):
    """{tensor name: (min, max)} of the calibrated tensors."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    out = {}
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        if q is not None and q.min is not None and len(q.min) == 1:
            out[tensor.name.decode()] = (float(q.min[0]), float(q.max[0]))
    return out


def _clipped(flatbuffer, calibrated):
    """Names of int8 tensors of `flatbuffer` whose representable range
    misses more than one step of their calibrated range."""
    from ai_edge_litert.interpreter import Interpreter

    clipped = []
    for d in Interpreter(model_content=flatbuffer).get_tensor_details():
        scale, zero_point = d["quantization"]
        if d["dtype"] != np.int8 or not scale or d["name"] not in calibrated:
            continue
        low, high = calibrated[d["name"]]
        if low < scale * (-129 - zero_point) \
                or high > scale * (128 - zero_point):
            clipped.append(d["name"])
    return clipped


def test_same_scale_groups_share_the_union_of_their_ranges(cbam_graph,
                                                          images):
    raw = calibrate(cbam_graph, images)
    before, after = _ranges(raw), _ranges(harmonize_ranges(raw))
    assert before.keys() == after.keys()
    model = flatbuffer_utils.read_model_from_bytearray(
        bytearray(harmonize_ranges(raw)))
    graph = model.subgraphs[0]
    tied = 0
    for op in graph.operators:
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) \
                not in SAME_SCALE_OPS:
            continue
        names = [graph.tensors[i].name.decode()
                 for i in [*op.inputs, *op.outputs] if i >= 0]
        names = [n for n in names if n in after]
        tied += len(names) > 1
        assert len({after[n] for n in names}) <= 1, names
        for n in names:  # widened, never narrowed
            assert after[n][0] <= before[n][0]
            assert after[n][1] >= before[n][1]
    # CBAM's spatial branch: reduce-max, concat, reshapes, slices.
    assert tied >= 4
    # The gated features and the concat of their channel pools had
    # different ranges before.
    concat = next(n for n in before if "spatial_attention" in n
                  and n.endswith("concat"))
    gated = next(n for n in before if "channel_attention" in n
                 and n.endswith("/mul"))
    assert before[concat] != before[gated]
    assert after[concat] == after[gated]


def test_int8_file_clips_no_calibrated_value(cbam_graph, images):
    raw = calibrate(cbam_graph, images)
    # With the min/max ranges nothing may be clipped (the MSE ranges clip
    # tails on purpose, see the tests below).
    int8, kept = convert_serving(cbam_graph, "int8", images,
                                 ranges="minmax")
    assert kept == {"float_layers": [], "float_tensors": [],
                    "int8_sublayers": [], "narrowed": 0}
    assert _clipped(int8, _ranges(raw)) == []

    # What the quantizer makes of the raw statistics (TensorFlow 2.21):
    # the channel-gated features are clipped to the concat's range.
    from tensorflow.lite.python import convert as lite_convert

    unmended = lite_convert.mlir_quantize(raw)
    assert any("channel_attention" in n and n.endswith("/mul")
               for n in _clipped(unmended, _ranges(raw)))


def _preactivation_graph(dead_channel):
    """conv -> ReLU -> BatchNorm: a BatchNorm no convolution precedes, which
    the converter cannot fold (a MUL and an ADD by per-channel constants).
    `dead_channel` gives one channel the variance of a nearly dead unit."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    norm = keras.layers.BatchNormalization(name="unfolded_bn")
    x = norm(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    variance = np.full(8, 0.5, "float32")
    if dead_channel:
        variance[3] = 1e-6  # factor 1/sqrt(1e-6 + 1e-3) ~ 32 vs ~1.4
    norm.moving_variance.assign(variance)
    return ServingGraph(model)


def test_unfolded_batch_norm_with_a_dead_channel_stays_float(images):
    from keras_attn.export.int8_ranges import imprecise_constant_ops

    healthy = calibrate(_preactivation_graph(False), images)
    assert imprecise_constant_ops(healthy) == []
    graph = _preactivation_graph(True)
    flagged = imprecise_constant_ops(calibrate(graph, images))
    assert flagged and all("unfolded_bn" in n for n in flagged), flagged

    int8, kept = convert_serving(graph, "int8", images)
    assert kept["float_tensors"] == flagged
    from ai_edge_litert.interpreter import Interpreter

    dtypes = {d["name"]: d["dtype"] for d in Interpreter(
        model_content=int8).get_tensor_details()}
    assert all(dtypes[n] == np.float32 for n in flagged), flagged


def _round_trip_mse(values, low, high):
    """int8 quantize-dequantize error of `values` with range [low, high]
    (asymmetric, 256 steps, zero point rounded), in float64."""
    values = np.asarray(values, "float64")
    step = (high - low) / 255.0
    zero_point = -128 - round(low / step)
    q = np.clip(np.round(values / step) + zero_point, -128, 127)
    return float(np.mean(((q - zero_point) * step - values) ** 2))


def _all_values(flatbuffer, images):
    """{tensor index: every value it takes over `images`} of the main
    subgraph, from the float file itself."""
    interpreter = inspecting_interpreter(flatbuffer)
    feed = interpreter.get_input_details()[0]["index"]
    values = {}
    for image in images:
        interpreter.set_tensor(feed, image[None])
        interpreter.invoke()
        for d in interpreter.get_tensor_details():
            try:
                v = interpreter.get_tensor(d["index"])
            except ValueError:
                continue
            values.setdefault(d["index"], []).append(v.ravel())
    return {i: np.concatenate(v) for i, v in values.items()}


def test_clipped_ranges_lower_the_round_trip_error(cbam_graph, images):
    from keras_attn.export.int8_ranges import clip_ranges

    raw = calibrate(cbam_graph, images)
    before = _ranges(raw)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(raw))
    # Every value of every image (no sampling), so the reference below
    # sees exactly the data the choice was made on.
    narrowed = clip_ranges(model, images, count=len(images),
                           values_per_image=10**9)
    after = _ranges(flatbuffer_utils.convert_object_to_bytearray(model))
    assert narrowed, "no range narrowed on a BatchNorm/CBAM network"
    values = _all_values(raw, images)
    graph = model.subgraphs[0]
    index = {t.name.decode(): i for i, t in enumerate(graph.tensors)}
    for name, fraction in narrowed.items():
        low, high = before[name]
        low, high = min(low, 0.0), max(high, 0.0)
        assert after[name] == pytest.approx((low * fraction,
                                             high * fraction))
        v = values[index[name]]
        # The narrowed range loses less to int8 than the min/max one.
        assert _round_trip_mse(v, *after[name]) < _round_trip_mse(
            v, low, high), name
    # Kept: the image input's [0, 1], the outputs, and what feeds a
    # sigmoid or softmax (a clipped logit moves the gate or the winner).
    kept = [graph.tensors[i].name.decode()
            for i in [*graph.inputs, *graph.outputs]]
    for op in graph.operators:
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) in (
                "LOGISTIC", "SOFTMAX"):
            kept += [graph.tensors[i].name.decode() for i in op.inputs]
    kept = [n for n in kept if n in before]
    assert len(kept) >= 3  # input, CBAM gates, the classifier's logits
    for name in kept:
        assert name not in narrowed and after[name] == before[name], name
    # Untouched tensors keep their statistics exactly.
    for name in before.keys() - narrowed.keys():
        assert after[name] == before[name], name


def test_int8_ranges_method_is_recorded_and_validated(cbam_graph, images):
    _, kept = convert_serving(cbam_graph, "int8", images)
    assert kept["narrowed"] > 0
    with pytest.raises(ValueError, match="ranges"):
        convert_serving(cbam_graph, "int8", images, ranges="percentile")
