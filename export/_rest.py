"""TF Serving's REST JSON conventions, in plain Python and NumPy.

`export.serve` speaks the REST API of TensorFlow Serving so that a client
written for a TF Serving fleet works against it unchanged. This module holds
the parts of that API that need no TensorFlow: turning a `:predict` request
body into one NumPy array per signature input, and the signature's output
arrays back into the response body. Keeping it free of TensorFlow keeps the
conversion rules testable on their own and lets the server run all of it in
a worker thread next to the model call.

The conventions, as TF Serving documents them ("RESTful API"):

- Row format: `{"instances": [...]}`, one element per example. A signature
  with a single input takes bare values (`[img0, img1]`); with several
  inputs each instance is an object keyed by input name. The answer is
  `{"predictions": [...]}`: bare values when the signature has a single
  output, else one object per example.
- Columnar format: `{"inputs": value}` for a single input or
  `{"inputs": {name: value, ...}}`, answered by `{"outputs": value}` or
  `{"outputs": {name: value, ...}}`.
- Binary strings (`DT_STRING`, e.g. encoded PNG bytes) travel as
  `{"b64": "<base64>"}`; string outputs whose name ends in `_bytes` are sent
  back the same way.
- `NaN`, `Infinity` and `-Infinity` are accepted as numbers.
- Errors are `{"error": "<message>"}` with a 4xx status (`RestError`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

DEFAULT_SIGNATURE = "serving_default"

# Every DataType name TF Serving's JSON mapping supports, with the NumPy
# dtype a request value is converted to before it reaches TensorFlow.
NUMPY_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_UINT8": np.uint8,
    "DT_INT16": np.int16,
    "DT_UINT16": np.uint16,
    "DT_INT32": np.int32,
    "DT_UINT32": np.uint32,
    "DT_INT64": np.int64,
    "DT_UINT64": np.uint64,
    "DT_BOOL": np.bool_,
    "DT_STRING": np.object_,
}


class RestError(Exception):
    """A request the server refuses: answered `{"error": message}`.

    `status` is the HTTP status TF Serving uses for the same failure: 400
    for an invalid argument, 404 for an unknown model or version, 413 for
    an oversize body, 405/501 for a method or verb the server lacks.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature, as its SignatureDef states it.

    `key` is the signature's name for the tensor (`images`), `dtype` a
    DataType name (`DT_FLOAT`), `shape` the static shape with `None` for a
    dynamic dimension (`(None, 28, 28, 1)`), or `None` for unknown rank.
    """

    key: str
    dtype: str
    shape: tuple[int | None, ...] | None


def parse_predict_body(raw: bytes) -> tuple[str, str, object]:
    """Reads a `:predict` body: `(signature_name, "instances" | "inputs",
    payload)`.

    `signature_name` defaults to `serving_default` (also when empty, as in
    TF Serving). Raises `RestError(400)` for a body that is not a JSON
    object, or that has neither or both of `instances` and `inputs`.
    """
    try:
        # Decoded here rather than by json.loads, which would also take
        # UTF-16/32: the REST API is UTF-8 only.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RestError(
            400, f"JSON Parse error: the body is not UTF-8 text ({err})"
        ) from None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise RestError(400, f"JSON Parse error: {err}") from None
    if not isinstance(body, dict):
        raise RestError(
            400,
            "the request body must be a JSON object such as "
            '{"instances": [...]} or {"inputs": ...}; got '
            f"{_json_type(body)}",
        )
    signature = body.get("signature_name") or DEFAULT_SIGNATURE
    if not isinstance(signature, str):
        raise RestError(400, "'signature_name' must be a string")
    has_rows = "instances" in body
    has_columns = "inputs" in body
    if has_rows and has_columns:
        raise RestError(
            400,
            "the request has both 'instances' (row format) and 'inputs' "
            "(columnar format); send only one of them",
        )
    if not (has_rows or has_columns):
        raise RestError(
            400,
            "Missing 'inputs' or 'instances' key: send "
            '{"instances": [example, ...]} or {"inputs": tensor}',
        )
    form = "instances" if has_rows else "inputs"
    return signature, form, body[form]


def rows_to_arrays(
    instances, inputs: dict[str, TensorInfo], signature: str
) -> dict[str, np.ndarray]:
    """Row format -> `{input key: array (B, ...)}`, B = len(instances)."""
    if not isinstance(instances, list):
        raise RestError(
            400,
            "'instances' must be a JSON list with one element per example; "
            f"got {_json_type(instances)}",
        )
    if not instances:
        raise RestError(400, "'instances' is empty: send at least one example")
    keys = list(inputs)
    named = [_is_named(instance) for instance in instances]
    if len(keys) == 1 and not any(named):
        columns = {keys[0]: instances}
    elif not all(named):
        raise RestError(
            400,
            f"signature '{signature}' has inputs {keys}: each instance must "
            "be a JSON object keyed by input name"
            + (" (or, for its single input, a bare value for every "
               "instance)" if len(keys) == 1 else ""),
        )
    else:
        for index, instance in enumerate(instances):
            _check_keys(instance, keys, signature, f"instances[{index}]")
        columns = {
            key: [instance[key] for instance in instances] for key in keys
        }
    return {
        key: to_array(columns[key], inputs[key], signature) for key in keys
    }


def columns_to_arrays(
    value, inputs: dict[str, TensorInfo], signature: str
) -> dict[str, np.ndarray]:
    """Columnar format -> `{input key: array}` (batch sizes may differ)."""
    keys = list(inputs)
    if _is_named(value):
        _check_keys(value, keys, signature, "inputs")
        columns = value
    elif len(keys) == 1:
        columns = {keys[0]: value}
    else:
        raise RestError(
            400,
            f"signature '{signature}' has inputs {keys}: 'inputs' must be "
            "a JSON object keyed by input name",
        )
    return {
        key: to_array(columns[key], inputs[key], signature) for key in keys
    }


def to_array(value, info: TensorInfo, signature: str) -> np.ndarray:
    """One input's JSON value -> a NumPy array of the signature's dtype and
    shape.

    Raises `RestError(400)` naming the input when the value is ragged, holds
    values of the wrong JSON type (strings, `null`, booleans for a float
    input, fractions for an integer input, numbers out of the dtype's
    range), or its shape does not fit the signature's static shape.
    """
    where = f"input '{info.key}' of signature '{signature}'"
    if info.dtype not in NUMPY_DTYPES:
        raise RestError(
            400, f"{where} has dtype {info.dtype}, which the REST API "
            "cannot carry in JSON",
        )
    if info.dtype == "DT_STRING":
        array = _string_array(value, where)
    else:
        array = _numeric_array(value, info.dtype, where)
    _check_shape(array.shape, info.shape, where)
    return array


def outputs_to_rows(outputs: dict[str, np.ndarray]) -> dict:
    """`{output key: array (B, ...)}` -> `{"predictions": ...}`.

    Every output must share the batch size B, as TF Serving requires for
    the row format; a signature whose outputs do not is answered with a
    400 that points to the columnar format.
    """
    batch = None
    for key, array in outputs.items():
        size = array.shape[0] if array.ndim else None
        if size is None or (batch is not None and size != batch):
            raise RestError(
                400,
                f"output '{key}' has shape {list(array.shape)}, which does "
                "not share the other outputs' batch size; the row format "
                "('instances') needs one, use the columnar format "
                "('inputs') instead",
            )
        batch = size
    values = {key: to_json_value(array, key) for key, array in outputs.items()}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    keys = list(values)
    rows = zip(*(values[key] for key in keys), strict=True)
    return {"predictions": [dict(zip(keys, row, strict=True)) for row in rows]}


def outputs_to_columns(outputs: dict[str, np.ndarray]) -> dict:
    """`{output key: array}` -> `{"outputs": ...}` (bare for one output)."""
    values = {key: to_json_value(array, key) for key, array in outputs.items()}
    if len(values) == 1:
        return {"outputs": next(iter(values.values()))}
    return {"outputs": values}


def to_json_value(array: np.ndarray, key: str):
    """A NumPy output -> nested lists of JSON values.

    Floats are sent at full precision (a float32 value read back as float32
    is bit-identical to the model's output); strings are UTF-8 text, or
    `{"b64": ...}` when the output's key ends in `_bytes` or the bytes are
    not valid UTF-8.
    """
    array = np.asarray(array)
    if array.dtype.kind in ("O", "S"):
        encode = np.frompyfunc(lambda item: _encode_bytes(item, key), 1, 1)
        return np.asarray(encode(array), dtype=object).tolist()
    return array.tolist()


def dumps(payload) -> bytes:
    """Compact JSON; `NaN`/`Infinity` allowed as TF Serving's JSON does."""
    return json.dumps(payload, allow_nan=True, separators=(",", ":")).encode()


def _encode_bytes(item, key: str):
    data = item if isinstance(item, bytes) else str(item).encode()
    if not key.endswith("_bytes"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(data).decode("ascii")}


def _is_named(value) -> bool:
    # {"b64": ...} is a binary value, not an object keyed by input name.
    return isinstance(value, dict) and set(value) != {"b64"}


def _check_keys(value: dict, keys: list[str], signature: str, where: str):
    missing = [key for key in keys if key not in value]
    extra = [key for key in value if key not in keys]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if extra:
            problems.append(f"unknown {extra}")
        raise RestError(
            400,
            f"{where}: {' and '.join(problems)}; signature '{signature}' "
            f"takes inputs {keys}",
        )


def _numeric_array(value, dtype: str, where: str) -> np.ndarray:
    target = np.dtype(NUMPY_DTYPES[dtype])
    try:
        # Let NumPy infer the JSON values' own type first: a cast straight
        # to float32 would silently accept "1.5", null (as NaN) and true.
        array = np.array(value)
    except (ValueError, TypeError):
        raise RestError(
            400, f"{where} is ragged: every nested list along a dimension "
            "must have the same length",
        ) from None
    kind = array.dtype.kind
    if array.size == 0:
        kind = target.kind
    if target.kind == "b":
        ok = kind == "b"
    elif target.kind == "f":
        ok = kind in "iuf"
    else:
        ok = kind in "iu"
    if not ok:
        raise RestError(
            400, f"{where} must hold JSON {_expected(target)} for "
            f"{dtype}; got {_found(array)}",
        )
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise RestError(
                400, f"{where} has values outside the range of {dtype} "
                f"[{info.min}, {info.max}]",
            )
    return array.astype(target)


def _string_array(value, where: str) -> np.ndarray:
    shape = _nested_shape(value, where)
    flat: list[bytes] = []
    _flatten_strings(value, flat, where)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _nested_shape(value, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = {_nested_shape(item, where) for item in value}
    if len(shapes) != 1:
        raise RestError(
            400, f"{where} is ragged: every nested list along a dimension "
            "must have the same length",
        )
    return (len(value), *shapes.pop())


def _flatten_strings(value, out: list, where: str):
    if isinstance(value, list):
        for item in value:
            _flatten_strings(item, out, where)
    elif isinstance(value, str):
        out.append(value.encode("utf-8"))
    elif isinstance(value, dict) and set(value) == {"b64"}:
        encoded = value["b64"]
        try:
            if not isinstance(encoded, str):
                raise TypeError
            out.append(base64.b64decode(encoded, validate=True))
        except (TypeError, binascii.Error, ValueError):
            raise RestError(
                400, f"{where} has a 'b64' value that is not valid base64 "
                "text",
            ) from None
    else:
        raise RestError(
            400, f"{where} is DT_STRING: send strings, or binary data as "
            f'{{"b64": "<base64>"}}; got {_json_type(value)}',
        )


def _check_shape(shape, expected, where: str):
    if expected is None:
        return
    fits = len(shape) == len(expected) and all(
        want is None or want == got
        for got, want in zip(shape, expected, strict=True)
    )
    if not fits:
        wanted = [-1 if want is None else want for want in expected]
        raise RestError(
            400, f"{where} has shape {list(shape)}; the signature takes "
            f"{wanted} (-1: any size). In the row format ('instances') "
            "the first dimension is the number of instances",
        )


def _expected(dtype: np.dtype) -> str:
    if dtype.kind == "b":
        return "booleans"
    if dtype.kind == "f":
        return "numbers"
    return "integers"


def _found(array: np.ndarray) -> str:
    kind = array.dtype.kind
    if kind == "U":
        return "strings"
    if kind == "b":
        return "booleans"
    if kind == "f":
        return "numbers with a fractional part"
    if kind in "iu":
        return "integers"
    # An object array: find the first value that is not a plain number.
    for item in array.reshape(-1):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return _json_type(item)
    return "an integer that does not fit in 64 bits"


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
