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
  Base64 may be unpadded or broken into lines (whitespace is skipped), as
  TF Serving's decoder allows.
- `NaN`, `Infinity` and `-Infinity` are accepted as numbers. A number a
  float input cannot hold is refused, as TF Serving refuses it: beyond
  the dtype's range (`1e39` for float32, `1e400` for any), or an integer
  literal beyond the float's exact integers (+-16777215 for float32).
  Booleans are refused for numeric inputs and numbers for boolean ones.
- A columnar `inputs` object may carry keys the signature does not take;
  they are ignored, as TF Serving ignores them (row format instances
  must match the inputs exactly).
- Floats are written in the shortest form that reads back to the same
  float32 (or float64) value, `NaN`/`Infinity` as tokens.
- Errors are `{"error": "<message>"}` with a 4xx status (`RestError`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
# The deepest nesting accepted for an input of unknown rank (NumPy allows
# 64 dimensions; no image model needs more than a handful).
MAX_UNKNOWN_RANK = 32
# The NaN/Infinity tokens parse to these very objects, so an infinity that
# is not one of them came from a literal too large for a double (1e400).
_INFINITY = float("inf")
_MINUS_INFINITY = float("-inf")
_CONSTANTS = {"NaN": float("nan"), "Infinity": _INFINITY,
              "-Infinity": _MINUS_INFINITY}
# A JSON string, escapes included (unrolled so long strings match fast).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BASE64_SPACE = str.maketrans("", "", " \t\n\r\f\v")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*")

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

    def __init__(self, status: int, message: str, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


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


@dataclass(frozen=True)
class PredictBody:
    """A parsed `:predict` body: the signature it names, its format
    (`"instances"` or `"inputs"`) and that key's value. `booleans` is False
    when the body text holds no `true`/`false` at all, so numeric inputs
    need no search for booleans mixed into their numbers."""

    signature_name: str
    form: str
    payload: object
    booleans: bool = True


def json_size(raw: bytes) -> int:
    """About how many values, lists and objects the JSON text `raw` holds,
    counted without parsing it: its commas and opening brackets outside
    strings. `json.loads` allocates a Python object for each, which for
    `[[0],[0],...]` is twenty times the text's size: the server compares
    this with `max_json_size` before parsing."""
    bare = _JSON_STRING.sub(b'""', raw)
    return bare.count(b",") + bare.count(b"[") + bare.count(b"{")


def max_json_size(inputs: dict[str, TensorInfo], max_batch: int) -> int | None:
    """The largest `json_size` of a valid request of `max_batch` instances
    to a signature with `inputs` (generously: every value may be a
    `{"b64": ...}` object), or None when an input's shape beyond the batch
    is not static, which leaves the size unbounded."""
    total = 64 + max_batch * (len(inputs) + 1)  # keys, instance objects
    for info in inputs.values():
        if info.shape is None or None in info.shape[1:]:
            return None
        dims = info.shape[1:]
        values = int(np.prod(dims, dtype=np.int64))
        lists = sum(int(np.prod(dims[:k], dtype=np.int64))
                    for k in range(len(dims)))
        total += max_batch * (2 * values + lists) + 1
    return total


def parse_predict_body(raw: bytes) -> PredictBody:
    """Reads a `:predict` body into a `PredictBody`.

    `signature_name` defaults to `serving_default` when absent or empty,
    as in TF Serving; any other non-string value is refused. Raises
    `RestError(400)` for a body that is not a JSON object, or that has
    neither or both of `instances` and `inputs`.
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
        body = json.loads(text, parse_constant=_CONSTANTS.__getitem__)
    except (ValueError, RecursionError) as err:
        raise RestError(400, f"JSON Parse error: {err}") from None
    if not isinstance(body, dict):
        raise RestError(
            400,
            "the request body must be a JSON object such as "
            '{"instances": [...]} or {"inputs": ...}; got '
            f"{_json_type(body)}",
        )
    signature = body.get("signature_name", "")
    if not isinstance(signature, str):
        raise RestError(
            400,
            "'signature_name' must be a string naming a signature (or be "
            f"left out for {DEFAULT_SIGNATURE}); got {_json_type(signature)}",
        )
    signature = signature or DEFAULT_SIGNATURE
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
    booleans = b"true" in raw or b"false" in raw
    return PredictBody(signature, form, body[form], booleans)


def batch_sizes(body: PredictBody, keys) -> list[int]:
    """The leading dimension of every input `keys` names in `body` (the
    instances in the row format, each input's first list length in the
    columnar one; 0 for a scalar), read before any conversion. Columnar
    keys the signature does not take are ignored, as they are later."""
    if body.form == "instances":
        value = body.payload
        return [len(value)] if isinstance(value, list) else [0]
    payload = body.payload
    values = ([payload[key] for key in keys if key in payload]
              if _is_named(payload) else [payload])
    return [len(value) if isinstance(value, list) else 0
            for value in values]


def rows_to_arrays(
    instances, inputs: dict[str, TensorInfo], signature: str,
    booleans: bool = True,
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
        key: to_array(columns[key], inputs[key], signature, booleans)
        for key in keys
    }


def columns_to_arrays(
    value, inputs: dict[str, TensorInfo], signature: str,
    booleans: bool = True,
) -> dict[str, np.ndarray]:
    """Columnar format -> `{input key: array}` (batch sizes may differ).

    Keys of a named `inputs` object that the signature does not take are
    ignored, as TF Serving ignores them."""
    keys = list(inputs)
    if _is_named(value):
        missing = [key for key in keys if key not in value]
        if missing:
            raise RestError(
                400,
                f"inputs: missing {missing}; signature '{signature}' "
                f"takes inputs {keys}",
            )
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
        key: to_array(columns[key], inputs[key], signature, booleans)
        for key in keys
    }


def to_array(value, info: TensorInfo, signature: str,
             booleans: bool = True) -> np.ndarray:
    """One input's JSON value -> a NumPy array of the signature's dtype and
    shape.

    Raises `RestError(400)` naming the input when the value is ragged or
    nested deeper than the signature's rank, holds values of the wrong JSON
    type (strings, `null`, booleans for a number input, fractions for an
    integer input), numbers the dtype cannot hold (out of range, lossy
    integers for a float), strings that are not Unicode or base64 that is
    not base64, or its shape does not fit the signature's static shape.
    `booleans=False` says the body holds no `true`/`false` (see
    `PredictBody`), which spares the search for them.
    """
    where = f"input '{info.key}' of signature '{signature}'"
    if info.dtype not in NUMPY_DTYPES:
        raise RestError(
            400, f"{where} has dtype {info.dtype}, which the REST API "
            "cannot carry in JSON",
        )
    rank = len(info.shape) if info.shape is not None else None
    _check_depth(value, rank, where)
    if info.dtype == "DT_STRING":
        array = _string_array(value, where, rank)
    else:
        array = _numeric_array(value, info.dtype, where, booleans)
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
    """A NumPy output -> a value `dumps` writes as JSON.

    Numeric arrays stay arrays: `dumps` writes each float in the shortest
    form that reads back to the same float32 (or float64) value, so the
    answer is bit-identical to the model's output and no longer than it
    needs to be. Strings become UTF-8 text, or `{"b64": ...}` when the
    output's key ends in `_bytes` or the bytes are not valid UTF-8.
    """
    array = np.asarray(array)
    if array.dtype.kind in ("O", "S", "U"):
        encode = np.frompyfunc(lambda item: _encode_bytes(item, key), 1, 1)
        return np.asarray(encode(array), dtype=object).tolist()
    return array


def dumps(payload) -> bytes:
    """Compact JSON of dicts, lists, strings, numbers and NumPy arrays;
    `NaN`/`Infinity` allowed as TF Serving's JSON does. Floats (Python or
    NumPy) are written in their shortest round-trip form."""
    parts: list[str] = []
    _write(payload, parts)
    return "".join(parts).encode()


def _write(value, out: list[str]):
    if isinstance(value, (np.ndarray, np.generic)):
        out.append(_array_text(np.asarray(value)))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(json.dumps(str(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, float):
        out.append(_array_text(np.asarray(value)))
    else:
        out.append(json.dumps(value))


def _array_text(array: np.ndarray) -> str:
    """A numeric array as nested JSON lists, built from NumPy's shortest
    round-trip text of each element (`str(np.float32(0.1))` is `0.1`)."""
    kind = array.dtype.kind
    if kind == "O":
        return json.dumps(array.tolist(), separators=(",", ":"))
    if array.size == 0:
        return json.dumps(np.zeros(array.shape).tolist(),
                          separators=(",", ":"))
    if kind == "b":
        text = np.where(array, "true", "false")
    elif kind == "f":
        text = _to_str(array)
        if not np.isfinite(array).all():
            text[np.isnan(array)] = "NaN"
            text[np.isposinf(array)] = "Infinity"
            text[np.isneginf(array)] = "-Infinity"
    else:
        text = _to_str(array)
    if text.ndim == 0:
        return str(text[()])
    rows = [
        "[" + ",".join(row) + "]"
        for row in text.reshape(-1, text.shape[-1]).tolist()
    ]
    for size in reversed(text.shape[:-1]):
        rows = [
            "[" + ",".join(rows[start:start + size]) + "]"
            for start in range(0, len(rows), size)
        ]
    return rows[0]


def _to_str(array: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """`array.astype(str)` in pieces: each piece is one C call holding the
    GIL for a few milliseconds, so the event loop thread (status calls)
    gets a turn between them while a large answer is encoded."""
    if array.size <= chunk:
        return array.astype(str)
    flat = array.reshape(-1)
    return np.concatenate([
        flat[start:start + chunk].astype(str)
        for start in range(0, flat.size, chunk)
    ]).reshape(array.shape)


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


def _check_depth(value, rank: int | None, where: str):
    """Refuses lists nested deeper than the input's rank (or, for an input
    of unknown rank, `MAX_UNKNOWN_RANK`) before anything recurses into
    them, following the first element down."""
    limit = MAX_UNKNOWN_RANK if rank is None else rank
    depth, item = 0, value
    while isinstance(item, list):
        depth += 1
        if depth > limit:
            raise RestError(
                400, f"{where} has lists nested more than {limit} deep; "
                + (f"the signature takes rank {rank}" if rank is not None
                   else "inputs of unknown rank take at most "
                   f"{MAX_UNKNOWN_RANK} dimensions")
                + (". In the row format ('instances') the first dimension "
                   "is the number of instances" if rank is not None else ""),
            )
        if not item:
            break
        item = item[0]


def _numeric_array(value, dtype: str, where: str,
                   booleans: bool = True) -> np.ndarray:
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
    if target.kind != "b" and booleans and array.size:
        # [1.0, true] infers float64 and [1, true] int64: find the boolean.
        found = _first_leaf(value, array.shape,
                            lambda item: isinstance(item, bool))
        if found is not None:
            index, item = found
            raise RestError(
                400, f"{where} must hold JSON {_expected(target)} for "
                f"{dtype}; got the boolean {json.dumps(item)} at {index}",
            )
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise RestError(
                400, f"{where} has values outside the range of {dtype} "
                f"[{info.min}, {info.max}]",
            )
    if target.kind == "f" and array.size:
        _check_float_values(value, array, target, dtype, where)
    with np.errstate(over="ignore"):
        return array.astype(target)


def _check_float_values(value, array: np.ndarray, target: np.dtype,
                        dtype: str, where: str):
    """TF Serving's rules for a float input: no literal beyond a double
    (1e400), no value beyond the dtype's range, no integer literal beyond
    the dtype's exact integers."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        found = _first_leaf(
            value, array.shape,
            lambda item: isinstance(item, float) and item in (
                _INFINITY, _MINUS_INFINITY)
            and item is not _INFINITY and item is not _MINUS_INFINITY)
        if found is not None:
            index, _ = found
            raise RestError(
                400, f"{where} has a number at {index} too large for a "
                "double (the JSON literal overflows to infinity); send "
                "Infinity or -Infinity for an infinite value",
            )
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(target)
        overflow = np.isinf(cast) & np.isfinite(array)
    if overflow.any():
        index = [int(i) for i in np.argwhere(overflow)[0]]
        limit = str(np.finfo(target).max)
        raise RestError(
            400, f"{where} has {float(array[tuple(index)])!r} at {index}, "
            f"outside the range of {dtype} (+-{limit})",
        )
    exact = (1 << (np.finfo(target).nmant + 1)) - 1
    if array.dtype.kind in "iu":
        big = np.abs(array.astype(np.float64)) > exact
        if big.any():
            index = [int(i) for i in np.argwhere(big)[0]]
            _lossy(array[tuple(index)], index, dtype, exact, where)
    elif array.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            big = np.abs(array) > exact
        if big.any():  # only integer literals must be exact
            found = _first_leaf(
                value, array.shape,
                lambda item: type(item) is int and abs(item) > exact)
            if found is not None:
                _lossy(found[1], found[0], dtype, exact, where)


def _lossy(number, index, dtype: str, exact: int, where: str):
    raise RestError(
        400, f"{where} has the integer {int(number)} at {index}, which "
        f"{dtype} cannot hold without loss of precision (integers must lie "
        f"within +-{exact}; write it as a decimal such as {int(number)}.0 "
        "to accept the rounding)",
    )


def _first_leaf(value, shape, test):
    """`(index, item)` of the first leaf of the regular nested list
    `value` (of `shape`) for which `test(item)` holds, or None."""
    if not isinstance(value, list):
        return ([], value) if test(value) else None
    leaves = np.empty(shape, dtype=object)
    leaves[...] = value if len(shape) else [value]
    for position, item in enumerate(leaves.reshape(-1)):
        if test(item):
            index = np.unravel_index(position, shape)
            return [int(i) for i in index], item
    return None


def _string_array(value, where: str, rank: int | None = None) -> np.ndarray:
    limit = MAX_UNKNOWN_RANK if rank is None else rank
    shape = _nested_shape(value, where, limit)
    flat: list[bytes] = []
    _flatten_strings(value, flat, where)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _nested_shape(value, where: str, depth_left: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    if depth_left <= 0:
        raise RestError(
            400, f"{where} has lists nested deeper than its rank allows",
        )
    if not value:
        return (0,)
    shapes = {_nested_shape(item, where, depth_left - 1) for item in value}
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
        try:
            out.append(value.encode("utf-8"))
        except UnicodeEncodeError as err:
            code = ord(value[err.start])
            raise RestError(
                400, f"{where} has a string holding a lone UTF-16 surrogate "
                f"(\\u{code:04x}), which is not valid Unicode; send binary "
                'data as {"b64": "<base64>"}',
            ) from None
    elif isinstance(value, dict) and set(value) == {"b64"}:
        decoded = decode_base64(value["b64"])
        if decoded is None:
            raise RestError(
                400, f"{where} has a 'b64' value that is not valid base64 "
                "text (the standard alphabet A-Z a-z 0-9 + /, padding "
                "optional, whitespace ignored)",
            )
        out.append(decoded)
    else:
        raise RestError(
            400, f"{where} is DT_STRING: send strings, or binary data as "
            f'{{"b64": "<base64>"}}; got {_json_type(value)}',
        )


def decode_base64(text) -> bytes | None:
    """Base64 as TF Serving decodes it (absl's `Base64Unescape`): the
    standard alphabet, padding optional, whitespace (line breaks) skipped.
    None when `text` is no such base64 string."""
    if not isinstance(text, str):
        return None
    text = text.translate(_BASE64_SPACE)
    data = text.rstrip("=")
    padding = len(text) - len(data)
    if (padding > 2 or len(data) % 4 == 1
            or (padding and len(text) % 4)
            or not _BASE64_TEXT.fullmatch(data)):
        return None
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


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
