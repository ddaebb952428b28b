"""Float layers in an int8 file: what stays float32, and that it stays so.

Layers that declare `int8_keeps_float` (`export.int8_ranges.float_layers_of`)
keep their ops float32, nested layers included, except those their
`int8_sublayers` name: the attention-augmented
convolution's plain `conv` branch is int8 (it is concatenated with the
attention output, never attended, and holds most of the weights).

No int8 round trip between two float32 ops: TensorFlow 2.21's quantizer
gives a softmax output its fixed int8 scale 1/256 even when the softmax is
kept float32, and where the output also
feeds an int8 op (LTPA's attention map, stacked into the `attention_maps`
output) the float readers get it back through QUANTIZE -> DEQUANTIZE. LTPA's
weights over a 28 x 28 map are about 1/784, below one step, so its
attention-weighted sum was mostly rounding error.
`export.int8_ranges.bypass_round_trips` rewires those readers to the float
tensor.
"""

import keras
import numpy as np
import pytest
from tensorflow.lite.tools import flatbuffer_utils

from keras_attn import models
from keras_attn.export.calibration import load_images
from keras_attn.export.int8_ranges import bypass_round_trips
from keras_attn.export.int8_ranges import calibrate
from keras_attn.export.int8_ranges import float_layers_of
from keras_attn.export.int8_ranges import int8_sublayers_of
from keras_attn.export.int8_ranges import island_tensors
from keras_attn.export.int8_ranges import quantize
from keras_attn.export.serving_graph import ServingGraph
from keras_attn.export.tflite_convert import convert_serving
from keras_attn.export.tflite_runner import inspecting_interpreter
from keras_attn.export.tflite_runner import op_names
from keras_attn.layers import AttentionAugmentedConv2D

pytestmark = pytest.mark.tf_only

SHAPE = (28, 28, 1)


@pytest.fixture(scope="module")
def ltpa_graph():
    keras.utils.set_random_seed(0)
    return ServingGraph(models.ltpa_vgg(SHAPE, 10, width=0.0625,
                                        global_dim=32))


@pytest.fixture(scope="module")
def images():
    return load_images("fashion_mnist", "train", 16, SHAPE)[0]


def _round_trips(flatbuffer):
    """(QUANTIZE input, DEQUANTIZE output) tensor names of every float ->
    int8 -> float pair."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    ops = graph.operators
    kinds = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
             for op in ops]
    made_by = {int(t): k for k, op in enumerate(ops) for t in op.outputs}
    pairs = []
    for k, op in enumerate(ops):
        source = made_by.get(int(op.inputs[0]))
        if kinds[k] == "DEQUANTIZE" and source is not None \
                and kinds[source] == "QUANTIZE":
            pairs.append((graph.tensors[ops[source].inputs[0]].name.decode(),
                          graph.tensors[op.outputs[0]].name.decode()))
    return pairs


def _tensors(flatbuffer, images, name_end):
    """Every float32 tensor whose name ends with `name_end`, over `images`:
    {name: (N, ...) values}."""
    interpreter = inspecting_interpreter(flatbuffer)
    feed = interpreter.get_input_details()[0]["index"]
    wanted = [d for d in interpreter.get_tensor_details()
              if d["name"].endswith(name_end) and d["dtype"] == np.float32]
    out = {d["name"]: [] for d in wanted}
    for image in images:
        interpreter.set_tensor(feed, image[None])
        interpreter.invoke()
        for d in wanted:
            out[d["name"]].append(interpreter.get_tensor(d["index"]).copy())
    return {name: np.stack(v) for name, v in out.items()}


def _relative_error(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_float_layers_read_their_own_float_tensors(ltpa_graph, images):
    raw = calibrate(ltpa_graph, images)
    islands = ltpa_graph.layers_of(float_layers_of(ltpa_graph.model))
    assert len(islands) == 3
    unmended = quantize(raw, denylisted_nodes=island_tensors(raw, islands))
    before = _round_trips(unmended)
    # The quantizer's round trips: one per attention layer, on its softmax.
    assert len(before) >= 3, before
    assert all("Softmax" in source for source, _ in before), before

    mended, removed = bypass_round_trips(unmended)
    assert removed == len(before)
    assert _round_trips(mended) == []
    # What convert_serving ships is mended.
    shipped, kept = convert_serving(ltpa_graph, "int8", images)
    assert kept["float_layers"] == islands
    assert _round_trips(shipped) == []

    # The attention-weighted sums (the float `Sum` of each layer) against
    # the float32 file's: the round trip made them mostly rounding error.
    reference = _tensors(convert_serving(ltpa_graph, "none")[0], images,
                         "/Sum")
    assert len(reference) == 3
    for file, bound in ((unmended, None), (mended, 0.1)):
        sums = _tensors(file, images, "/Sum")
        errors = [_relative_error(sums[n], reference[n]) for n in reference]
        if bound is None:
            assert max(errors) > 0.3, errors
        else:
            assert max(errors) < bound, errors


def _op_output_dtypes(flatbuffer):
    """[(op name, output tensor name, output dtype)] of every op."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    tensors = interpreter.get_tensor_details()
    return [(op["op_name"], tensors[i]["name"], tensors[i]["dtype"])
            for op in interpreter._get_ops_details()
            for i in op["outputs"]]


def test_attention_augmented_conv_branch_is_int8(images):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = AttentionAugmentedConv2D(16, 3, 8, 8, 2, name="aa")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    graph = ServingGraph(keras.Model(inputs, outputs))
    assert float_layers_of(graph.model) == ("AttentionAugmentedConv2D",)
    assert int8_sublayers_of(graph.model) == {
        "AttentionAugmentedConv2D": ("conv",)}
    assert graph.nested_layers(float_layers_of(graph.model),
                               int8_sublayers_of(graph.model)) == {
        "aa": ["conv"]}

    int8, kept = convert_serving(graph, "int8", images)
    assert kept["float_layers"] == ["aa"]
    assert kept["int8_sublayers"] == ["aa/conv"]
    ops = _op_output_dtypes(int8)

    def computed_by(part):
        return [(kind, dtype) for kind, name, dtype in ops
                if f"/aa_1/{part}" in name
                and kind not in ("QUANTIZE", "DEQUANTIZE")]

    # The conv branch computes in int8; the attention (q, k, v projection,
    # softmax, output projection) in float32.
    conv = computed_by("conv_1/")
    assert conv and all(d == np.int8 for _, d in conv), conv
    for part in ("qkv_1/", "Softmax", "attention_output_1/"):
        found = computed_by(part)
        assert found and all(d == np.float32 for _, d in found), (part,
                                                                   found)
    assert "CONV_2D" in op_names(int8)

    # Named as float layers explicitly, the class keeps the same split.
    _, explicit = convert_serving(graph, "int8", images,
                                  float_layers=["AttentionAugmentedConv2D"])
    assert explicit["int8_sublayers"] == ["aa/conv"]
