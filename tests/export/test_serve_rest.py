"""The JSON <-> array rules of TF Serving's REST API (export._rest_json).

Pure NumPy: these run under every Keras backend.
"""

import base64
import json
import math

import numpy as np
import pytest

from keras_attn.export._rest_json import RestError
from keras_attn.export._rest_json import TensorInfo
from keras_attn.export._rest_json import columns_to_arrays
from keras_attn.export._rest_json import dumps
from keras_attn.export._rest_json import outputs_to_columns
from keras_attn.export._rest_json import outputs_to_rows
from keras_attn.export._rest_json import parse_predict_body
from keras_attn.export._rest_json import rows_to_arrays
from keras_attn.export._rest_json import to_array

IMAGES = {"images": TensorInfo("images", "DT_FLOAT", (None, 2, 2, 1))}
TWO = {
    "tokens": TensorInfo("tokens", "DT_INT32", (None, 3)),
    "mask": TensorInfo("mask", "DT_BOOL", (None,)),
}


def error_of(call, *args):
    with pytest.raises(RestError) as info:
        call(*args)
    return info.value


def test_body_defaults_the_signature_and_accepts_nan_tokens():
    raw = b'{"signature_name": "", "inputs": [NaN, Infinity, -Infinity, 1e3]}'
    body = parse_predict_body(raw)
    assert (body.signature_name, body.form) == ("serving_default", "inputs")
    values = columns_to_arrays(
        body.payload, {"x": TensorInfo("x", "DT_DOUBLE", (4,))},
        body.signature_name)["x"]
    assert math.isnan(values[0]) and values[1] == math.inf
    assert values[2] == -math.inf and values[3] == 1000.0
    # ...and writes them back the same way TF Serving does.
    text = dumps({"outputs": values.tolist()}).decode()
    assert text == '{"outputs":[NaN,Infinity,-Infinity,1000.0]}'
    assert dumps({"outputs": values}).decode() == text
    assert parse_predict_body(
        b'\xef\xbb\xbf{"instances": [1]}').payload == [1]


def test_row_and_columnar_inputs_become_the_same_arrays():
    batch = np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1) / 8
    bare = rows_to_arrays(batch.tolist(), IMAGES, "s")["images"]
    named = rows_to_arrays([{"images": x} for x in batch.tolist()],
                           IMAGES, "s")["images"]
    columns = columns_to_arrays(batch.tolist(), IMAGES, "s")["images"]
    for array in (bare, named, columns):
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, batch)


def test_single_input_instances_must_not_mix_bare_and_named():
    image = np.zeros((2, 2, 1)).tolist()
    err = error_of(rows_to_arrays, [image, {"images": image}], IMAGES, "s")
    assert err.status == 400 and "keyed by input name" in err.message


def test_several_inputs_keep_their_own_dtypes_and_batch_sizes():
    rows = rows_to_arrays(
        [{"tokens": [1, 2, 3], "mask": True},
         {"tokens": [4, 5, 6], "mask": False}], TWO, "s")
    assert rows["tokens"].dtype == np.int32 and rows["mask"].dtype == bool
    assert rows["mask"].tolist() == [True, False]
    # The columnar format allows different batch sizes per input.
    columns = columns_to_arrays(
        {"tokens": [[1, 2, 3]], "mask": [True, False, True]}, TWO, "s")
    assert columns["tokens"].shape == (1, 3)
    assert columns["mask"].shape == (3,)
    err = error_of(columns_to_arrays, [[1, 2, 3]], TWO, "s")
    assert "keyed by input name" in err.message


@pytest.mark.parametrize("dtype, value, message", [
    ("DT_UINT8", [256], "outside the range of DT_UINT8"),
    ("DT_UINT8", [-1], "outside the range"),
    ("DT_INT32", [2 ** 31], "outside the range"),
    ("DT_BOOL", [1, 0], "booleans"),
    ("DT_INT64", [1.0], "fractional"),
    ("DT_FLOAT", ["1"], "strings"),
    ("DT_COMPLEX64", [1], "cannot carry"),
])
def test_values_must_fit_the_dtype(dtype, value, message):
    info = TensorInfo("x", dtype, (None,))
    err = error_of(to_array, value, info, "sig")
    assert err.status == 400
    assert "input 'x' of signature 'sig'" in err.message
    assert message in err.message


def test_in_range_values_and_unknown_rank_pass():
    info = TensorInfo("x", "DT_UINT8", (None,))
    assert to_array([0, 255], info, "s").tolist() == [0, 255]
    anything = TensorInfo("x", "DT_FLOAT", None)
    assert to_array([[[1]]], anything, "s").shape == (1, 1, 1)
    assert to_array(2.5, anything, "s").shape == ()
    empty = to_array([], TensorInfo("x", "DT_FLOAT", (None,)), "s")
    assert empty.shape == (0,) and empty.dtype == np.float32


def test_strings_take_text_and_b64_and_reject_ragged_lists():
    info = TensorInfo("image_bytes", "DT_STRING", (None, None))
    raw = bytes(range(256))
    value = [["text", {"b64": base64.b64encode(raw).decode()}]]
    array = to_array(value, info, "s")
    assert array.shape == (1, 2) and array[0, 0] == b"text"
    assert array[0, 1] == raw
    err = error_of(to_array, [["a"], ["b", "c"]], info, "s")
    assert "ragged" in err.message
    err = error_of(to_array, [[{"b64": 5}]], info, "s")
    assert "base64" in err.message


def as_json(payload):
    return json.loads(dumps(payload))


def test_single_output_is_bare_and_several_are_named():
    probabilities = np.array([[0.25, 0.75], [1.0, 0.0]], np.float32)
    classes = np.array([1, 0], np.int64)
    assert as_json(outputs_to_rows({"p": probabilities})) == {
        "predictions": [[0.25, 0.75], [1.0, 0.0]]}
    assert as_json(outputs_to_rows({"p": probabilities, "c": classes})) == {
        "predictions": [{"p": [0.25, 0.75], "c": 1},
                        {"p": [1.0, 0.0], "c": 0}]}
    assert as_json(outputs_to_columns({"c": classes})) == {"outputs": [1, 0]}
    assert as_json(outputs_to_columns({"p": probabilities, "c": classes})) \
        == {"outputs": {"p": [[0.25, 0.75], [1.0, 0.0]], "c": [1, 0]}}


def test_float32_outputs_survive_json_bit_for_bit():
    values = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    text = dumps(outputs_to_columns({"x": values}))
    back = np.array(json.loads(text)["outputs"], np.float32)
    np.testing.assert_array_equal(back, values)


def test_row_format_needs_one_batch_size_across_outputs():
    err = error_of(outputs_to_rows, {"a": np.zeros((2, 3)),
                                     "b": np.zeros((3,))})
    assert err.status == 400 and "columnar" in err.message
    err = error_of(outputs_to_rows, {"a": np.float32(1.0)})
    assert "batch size" in err.message


def test_string_outputs_are_text_or_b64_like_tf_serving():
    names = np.array([b"shirt", b"\xff\xfe"], dtype=object)
    assert as_json(outputs_to_columns({"label": names})) == {
        "outputs": ["shirt", {"b64": base64.b64encode(b"\xff\xfe").decode()}]}
    encoded = outputs_to_columns({"png_bytes": np.array([b"ab"], object)})
    assert as_json(encoded) == {"outputs": [{"b64": "YWI="}]}


def test_json_size_counts_structure_outside_strings():
    from keras_attn.export._rest_json import json_size
    from keras_attn.export._rest_json import max_json_size

    assert json_size(b'{"a": "x,[{y", "b": [[1, 2], [3, 4]]}') == 8
    assert json_size(b'{"s": "\\",[[[", "t": 1}') == 2  # escaped quote
    images = {"images": TensorInfo("images", "DT_FLOAT", (None, 2, 2, 1))}
    batch = np.zeros((4, 2, 2, 1)).tolist()
    for body in ({"instances": batch}, {"inputs": batch},
                 {"instances": [{"images": image} for image in batch]}):
        raw = json.dumps(body).encode()
        assert json_size(raw) <= max_json_size(images, 4)
    assert json_size(json.dumps({"instances": np.zeros(
        (40, 2, 2, 1)).tolist()}).encode()) > max_json_size(images, 4)
    dynamic = {"x": TensorInfo("x", "DT_FLOAT", (None, None))}
    assert max_json_size(dynamic, 4) is None


def test_non_string_signature_names_are_refused():
    for value in (b"null", b"0", b"false", b"[]", b"{}"):
        err = error_of(parse_predict_body,
                       b'{"signature_name": ' + value + b', "inputs": [1]}')
        assert err.status == 400 and "must be a string" in err.message
    body = parse_predict_body(b'{"signature_name": "", "inputs": [1]}')
    assert body.signature_name == "serving_default"
