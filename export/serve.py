"""Serve exported SavedModels over TensorFlow Serving's REST API.

    python -m export.serve DIR [--port 8501] [--host 127.0.0.1]
    python -m keras_attn.export.serve DIR ...   (the same, installed)
    keras-attn-serve DIR ...                    (the same, as a console script)

`DIR` is either a model base path, `DIR/VERSION/saved_model.pb` (the model
is then named after `DIR`), or a root holding several,
`DIR/NAME/VERSION/saved_model.pb` -- the layout `python -m export` writes
and the official TF Serving container reads. Each model's highest version
is loaded (every version with `--all-versions`). The endpoints follow TF
Serving's "RESTful API" so a client written for TF Serving works unchanged:

- `GET  /v1/models/NAME[/versions/V]`: `{"model_version_status": [...]}`.
- `GET  /v1/models/NAME[/versions/V]/metadata`: `model_spec` and every
  SignatureDef (`DT_FLOAT`, `tensor_shape.dim[].size` -1 when dynamic).
- `POST /v1/models/NAME[/versions/V]:predict` with `{"signature_name":
  ..., "instances": [...]}` (row format, answered `{"predictions": ...}`)
  or `{"inputs": ...}` (columnar, answered `{"outputs": ...}`); binary
  inputs such as the `serve_image_bytes` signature's encoded images go as
  `{"b64": "..."}`. See `export._rest_json` for the conventions.

Errors answer `{"error": "..."}` naming what was wrong, with TF Serving's
4xx status (400 bad request, 404 unknown model or version), and the server
goes on serving; no client input makes it answer 5xx, except 503 when it is
full. A hostile or careless client cannot make it do unbounded work
(`Limits`, each a flag):

- 413 past `--max-body-bytes` (as sent, and after gzip inflation),
  `--max-batch` instances, or the `--max-image-pixels` /
  `--max-request-pixels` an encoded image decodes to (read from its header
  before decoding, `export._images`);
- 503 with `Retry-After` when `--max-pending` predictions are running or
  queued: status and metadata calls, answered on the event loop, go on;
- 408 for a body not received within `--body-timeout`; a connection whose
  headers do not arrive within `--header-timeout`, or that idles past
  `--keep-alive-timeout`, is closed (`export._http`).

Parsing, the model call and encoding the answer run in a thread pool
(`--threads`), so the event loop keeps accepting requests while a batch
runs.

The server binds 127.0.0.1 unless told otherwise. It has no TLS, and no
authentication unless `--token-file` names a file holding a bearer token
that every request must then send (`Authorization: Bearer TOKEN`, else
401); put it behind a TLS proxy before exposing it. For production, serve
the same DIR with the official TF Serving container (see docs/serving.md).

It reads only the SavedModel (no keras_attn layer or model is used; as
`keras_attn.export.serve` it imports the `keras_attn` package, and with it
Keras, all the same), so the signatures it serves are generic: their
inputs, outputs, dtypes and shapes come from each SignatureDef.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field

import tensorflow as tf
import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from ._http import read_body
from ._http import timed_protocol
from ._images import ImageHeaderError
from ._images import image_size
from ._rest_json import RestError
from ._rest_json import TensorInfo
from ._rest_json import batch_sizes
from ._rest_json import columns_to_arrays
from ._rest_json import dumps
from ._rest_json import json_size
from ._rest_json import max_json_size
from ._rest_json import outputs_to_columns
from ._rest_json import outputs_to_rows
from ._rest_json import parse_predict_body
from ._rest_json import rows_to_arrays

DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
# A 224x224x3 float image is about 3 MB of JSON: 32 MiB takes a batch of
# ten while capping what one request can make the server hold in memory.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_THREADS = 4
# Admission limits (see `Limits`).
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # a 12-megapixel photo fits
DEFAULT_MAX_REQUEST_PIXELS = 2 * 4096 * 4096
DEFAULT_PENDING_PER_THREAD = 4
# Timeouts (seconds).
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0
RETRY_AFTER_SECONDS = 1
PREDICT_METHOD = "tensorflow/serving/predict"

_LOG = logging.getLogger("keras_attn.serve")
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:[A-Za-z]+)?/?$"
)
# tf.errors codes -> the HTTP status TF Serving answers them with.
_HTTP_STATUS = {
    tf.errors.INVALID_ARGUMENT: 400,
    tf.errors.FAILED_PRECONDITION: 400,
    tf.errors.OUT_OF_RANGE: 400,
    tf.errors.NOT_FOUND: 404,
    tf.errors.RESOURCE_EXHAUSTED: 429,
    tf.errors.UNIMPLEMENTED: 501,
    tf.errors.UNAVAILABLE: 503,
    tf.errors.DEADLINE_EXCEEDED: 504,
}


@dataclass
class Signature:
    """A callable signature: its SignatureDef inputs/outputs and function.

    `inputs`/`outputs` map the signature's tensor keys (`images`,
    `probabilities`) to `TensorInfo`; `function` is the loaded concrete
    function, called with one keyword tensor per input.
    """

    name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    function: object

    def run(self, arrays: dict) -> dict:
        """`{input key: array}` -> `{output key: array}` via TensorFlow."""
        tensors = {
            key: tf.constant(array, dtype=_tf_dtype(self.inputs[key].dtype))
            for key, array in arrays.items()
        }
        try:
            result = self.function(**tensors)
        except tf.errors.OpError as err:
            raise RestError(
                _HTTP_STATUS.get(err.error_code, 500),
                f"signature '{self.name}' failed on this input: "
                f"{_op_error_text(err.message)}",
            ) from None
        except (TypeError, ValueError) as err:
            # The function's own input checks (e.g. an incompatible shape
            # its input_signature rejects) are the caller's mistake.
            raise RestError(400, str(err)) from None
        return {key: value.numpy() for key, value in result.items()}


@dataclass
class Servable:
    """One loaded version of one model.

    `signature_def` is the metadata JSON of every SignatureDef in the
    SavedModel (as TF Serving lists them); `signatures` holds those the
    loaded model can call; `model` keeps the loaded object (and so its
    variables) alive.
    """

    name: str
    version: int
    path: str
    signatures: dict[str, Signature]
    signature_def: dict
    model: object = field(repr=False)


class ModelRepository:
    """The loaded servables, `{name: {version: Servable}}`, and look-ups
    that fail the way TF Serving does (404 naming what is served)."""

    def __init__(self, servables: dict[str, dict[int, Servable]]):
        if not servables:
            raise ValueError(
                "ModelRepository: no servables given; load them with "
                "load_repository(DIR)"
            )
        self.servables = servables

    def names(self) -> list[str]:
        return sorted(self.servables)

    def versions(self, name: str) -> list[int]:
        """The loaded versions of `name`, highest first."""
        return sorted(self._model(name, None), reverse=True)

    def get(self, name: str, version: int | None = None) -> Servable:
        """The servable for `name` at `version` (the highest if None)."""
        versions = self._model(name, version)
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise RestError(
                404,
                f"Servable not found for request: Specific({name}, "
                f"{version}); loaded versions of '{name}': "
                f"{sorted(versions, reverse=True)}",
            )
        return versions[version]

    def _model(self, name: str, version: int | None) -> dict:
        if name not in self.servables:
            request = (
                f"Latest({name})" if version is None
                else f"Specific({name}, {version})"
            )
            raise RestError(
                404,
                f"Servable not found for request: {request}; this server "
                f"serves models {self.names()}",
            )
        return self.servables[name]

    def describe(self) -> str:
        return ", ".join(
            f"{name} (versions {self.versions(name)})" for name in self.names()
        )


def find_models(directory: str) -> dict[str, dict[int, str]]:
    """`{name: {version: path}}` of the SavedModels under `directory`.

    `directory` is a model base path (`DIR/VERSION/saved_model.pb`, the
    model named `basename(DIR)`) or a root of base paths
    (`DIR/NAME/VERSION/saved_model.pb`). VERSION directories are integers,
    as TF Serving requires; other entries are ignored.
    """
    if not os.path.isdir(directory):
        raise ValueError(
            f"serve: {directory!r} is not a directory; pass the model base "
            "path DIR/NAME or a root DIR holding NAME/VERSION/saved_model.pb"
        )
    directory = os.path.abspath(directory)
    if os.path.isfile(os.path.join(directory, "saved_model.pb")):
        parent = os.path.dirname(directory)
        raise ValueError(
            f"serve: {directory!r} is a single version directory (it holds "
            f"saved_model.pb); pass the model base path {parent!r}, whose "
            "integer subdirectories are the versions"
        )
    versions = _versions(directory)
    if versions:
        return {os.path.basename(directory): versions}
    models = {}
    for entry in sorted(os.listdir(directory)):
        versions = _versions(os.path.join(directory, entry))
        if versions:
            models[entry] = versions
    if not models:
        raise ValueError(
            f"serve: no SavedModel under {directory!r}: expected "
            "DIR/VERSION/saved_model.pb (a model base path) or "
            "DIR/NAME/VERSION/saved_model.pb (a root of models), VERSION an "
            "integer directory; write one with `python -m export MODEL.keras "
            "--to saved_model --out DIR`"
        )
    return models


def load_servable(name: str, version: int, path: str) -> Servable:
    """Loads the SavedModel at `path` (`.../NAME/VERSION`) for serving."""
    signature_defs = _read_signature_defs(path)
    model = tf.saved_model.load(path)
    signatures = {}
    for key, function in model.signatures.items():
        if key not in signature_defs:
            continue
        proto = signature_defs[key]
        signatures[key] = Signature(
            name=key,
            inputs={k: _tensor_info(k, v) for k, v in proto.inputs.items()},
            outputs={k: _tensor_info(k, v) for k, v in proto.outputs.items()},
            function=function,
        )
    if not signatures:
        raise ValueError(
            f"serve: the SavedModel at {path!r} has no callable signature; "
            "export it with a serving_default signature"
        )
    metadata = {
        key: _signature_def_json(proto)
        for key, proto in sorted(signature_defs.items())
    }
    return Servable(name, version, path, signatures, metadata, model)


def load_repository(
    directory: str, all_versions: bool = False
) -> ModelRepository:
    """Finds and loads the models under `directory` (see `find_models`):
    each model's highest version, or every version if `all_versions`."""
    servables: dict[str, dict[int, Servable]] = {}
    for name, versions in find_models(directory).items():
        chosen = sorted(versions) if all_versions else [max(versions)]
        servables[name] = {
            version: load_servable(name, version, versions[version])
            for version in chosen
        }
    return ModelRepository(servables)


@dataclass(frozen=True)
class Limits:
    """What one `:predict` request may make the server do.

    - `max_body_bytes`: the body as sent, and again after gzip inflation
      (413 past it).
    - `max_batch`: instances in the row format, or the leading dimension
      of any input in the columnar one (413 past it). With the body limit
      it bounds the work and the answer's size: a 28x28 model's answer
      for 64 instances is a few MB.
    - `max_image_pixels`, `max_request_pixels`: pixels an encoded image
      (`DT_STRING` input, JPEG/PNG/GIF/BMP/WebP) decodes to, read from its
      header before anything is decoded (413 past either); all frames of
      a GIF or animated WebP count.
    - `max_pending`: predict requests admitted at once, running or waiting
      for one of the worker threads; one more gets 503 with `Retry-After`,
      so a burst of heavy requests queues no deeper than this while status
      and metadata calls, answered on the event loop, go on.
    - `body_timeout`: seconds a client may take to send its body (408).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS
    max_pending: int = DEFAULT_PENDING_PER_THREAD * DEFAULT_THREADS
    body_timeout: float = DEFAULT_BODY_TIMEOUT

    def __post_init__(self):
        for name in ("max_body_bytes", "max_batch", "max_image_pixels",
                     "max_request_pixels", "max_pending"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) \
                    or value < 1:
                raise ValueError(
                    f"create_app: {name} must be a positive integer; got "
                    f"{value!r}"
                )
        if not self.body_timeout > 0:
            raise ValueError(
                f"create_app: body_timeout must be positive; got "
                f"{self.body_timeout!r}"
            )


def create_app(
    repository: ModelRepository,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    threads: int = DEFAULT_THREADS,
    *,
    limits: Limits | None = None,
    token: str | None = None,
) -> Starlette:
    """The ASGI app serving `repository` over TF Serving's REST API.

    Request bodies over `max_body_bytes` are refused with 413 while they
    are read (a missing or false Content-Length does not get past it).
    Predictions run in a pool of `threads` worker threads. `limits` sets
    every admission limit (`Limits`, whose `max_body_bytes` then replaces
    the argument); without it the defaults apply, with `max_body_bytes`
    and 4 pending predictions per thread. With `token`, every request must
    carry `Authorization: Bearer TOKEN` (else 401).
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"create_app: threads must be a positive integer; got {threads!r}"
        )
    if limits is None:
        limits = Limits(max_body_bytes=max_body_bytes,
                        max_pending=DEFAULT_PENDING_PER_THREAD * threads)
    if token is not None and not (isinstance(token, str) and token.strip()):
        raise ValueError("create_app: token must be a non-empty string")
    expected_auth = f"Bearer {token.strip()}".encode() if token else None
    executor = ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix="keras-attn-serve"
    )
    pending = [0]  # predict requests admitted (event-loop thread only)

    async def models_endpoint(request: Request) -> Response:
        try:
            _check_token(request, expected_auth)
            return await _dispatch(request)
        except RestError as err:
            return _error_response(err)
        except ClientDisconnect:
            client = request.client
            _LOG.info(
                "%s disconnected before sending the whole body of %s %s",
                f"{client.host}:{client.port}" if client else "a client",
                request.method, request.url.path,
            )
            return Response(status_code=400)  # nobody is left to read it
        except Exception as err:  # keep serving; say what broke
            _LOG.exception("request %s failed", request.url.path)
            return _error_response(RestError(500, f"internal error: {err}"))

    async def _dispatch(request: Request) -> Response:
        match = _MODEL_PATH.match(request.url.path)
        if match is None:
            raise RestError(
                404,
                f"Malformed request: {request.method} {request.url.path}; "
                "use /v1/models/NAME[/versions/V][/metadata|:predict]",
            )
        name, label, suffix = match["name"], match["label"], match["suffix"]
        if label is not None:
            raise RestError(
                404,
                f"version labels are not supported (got '{label}'); use "
                "/v1/models/NAME/versions/N or leave the version out for "
                "the highest",
            )
        version = _parse_version(match["version"])
        if suffix is None or suffix == "/metadata":
            _require_method(request, "GET", suffix or "model status")
            servables = (
                [repository.get(name, v) for v in repository.versions(name)]
                if version is None and suffix is None
                else [repository.get(name, version)]
            )
            if suffix is None:
                return _json_response(_status_json(servables))
            return _json_response(_metadata_json(servables[0]))
        if suffix == ":predict":
            _require_method(request, "POST", ":predict")
            servable = repository.get(name, version)
            raw = await read_body(request, limits.max_body_bytes,
                                  limits.body_timeout)
            if pending[0] >= limits.max_pending:
                raise RestError(
                    503,
                    f"the server is busy: {limits.max_pending} predict "
                    "requests are already running or queued "
                    f"(--max-pending); retry after {RETRY_AFTER_SECONDS} s",
                    {"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            pending[0] += 1
            try:
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(
                    executor, _predict, servable, raw, limits
                )
            finally:
                pending[0] -= 1
            return Response(answer, media_type="application/json")
        if suffix in (":classify", ":regress"):
            raise RestError(
                501,
                f"{suffix[1:]} is not implemented by keras-attn-serve (the "
                "exported models have predict signatures); use :predict",
            )
        raise RestError(
            404,
            f"Malformed request: unknown verb {suffix!r}; use :predict",
        )

    async def not_found(request: Request) -> Response:
        try:
            _check_token(request, expected_auth)
        except RestError as err:
            return _error_response(err)
        return _error_response(
            RestError(
                404,
                f"Malformed request: {request.method} {request.url.path}; "
                "use /v1/models/NAME[/versions/V][/metadata|:predict]",
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=[
            Route("/v1/models/{rest:path}", models_endpoint,
                  methods=_ALL_METHODS),
            Route("/{rest:path}", not_found, methods=_ALL_METHODS),
        ],
        lifespan=lifespan,
    )
    app.state.repository = repository
    app.state.executor = executor
    app.state.limits = limits
    return app


def uvicorn_config(app: Starlette, host: str = DEFAULT_HOST, port: int = 0,
                   *, header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                   keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT,
                   **kwargs) -> uvicorn.Config:
    """uvicorn's settings for `app`: the h11 protocol with the header
    timeout (`export._http.timed_protocol`) and the keep-alive timeout;
    `kwargs` go to `uvicorn.Config` as they are."""
    if not keep_alive_timeout > 0:
        raise ValueError(
            f"uvicorn_config: keep_alive_timeout must be positive; got "
            f"{keep_alive_timeout!r}"
        )
    return uvicorn.Config(
        app, host=host, port=port, http=timed_protocol(header_timeout),
        timeout_keep_alive=keep_alive_timeout, **kwargs)


def serve_in_thread(app: Starlette, host: str = DEFAULT_HOST,
                    port: int = 0, timeout: float = 30.0, **settings):
    """Run `app` under uvicorn in a daemon thread (port 0: a free one), for
    tests, benchmarks and notebooks. `settings` go to `uvicorn_config`
    (`header_timeout=2`, ...). Returns `(url, stop)`; `stop()` shuts the
    server down and waits for the thread."""
    settings.setdefault("log_level", "warning")
    server = uvicorn.Server(uvicorn_config(
        app, host=host, port=port, lifespan="on", **settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"serve_in_thread: uvicorn did not start on "
                               f"{host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]

    def stop():
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://{host}:{bound}", stop


def _predict(servable: Servable, raw: bytes, limits: Limits) -> bytes:
    """Runs one `:predict` body (in a worker thread): parse, admit, call,
    encode; returns the answer's JSON bytes."""
    _check_json_size(servable, raw, limits)
    body = parse_predict_body(raw)
    signature = servable.signatures.get(body.signature_name)
    if signature is None:
        raise RestError(
            400,
            f'Serving signature key "{body.signature_name}" not found; '
            f"model '{servable.name}' version {servable.version} has "
            f"{sorted(servable.signatures)}",
        )
    batch = max(batch_sizes(body, signature.inputs), default=0)
    if batch > limits.max_batch:
        raise RestError(
            413,
            f"the request has a batch of {batch}; the server takes at most "
            f"{limits.max_batch} instances per request (--max-batch): "
            "split it into several requests",
        )
    if body.form == "instances":
        arrays = rows_to_arrays(body.payload, signature.inputs,
                                signature.name, body.booleans)
    else:
        arrays = columns_to_arrays(body.payload, signature.inputs,
                                   signature.name, body.booleans)
    _check_images(arrays, signature, limits)
    outputs = signature.run(arrays)
    if body.form == "instances":
        return dumps(outputs_to_rows(outputs))
    return dumps(outputs_to_columns(outputs))


def _check_json_size(servable: Servable, raw: bytes, limits: Limits):
    """Refuses, before parsing, a body holding more JSON values than the
    largest request any signature of `servable` admits: parsing is where a
    body of tiny lists costs twenty times its size, under the GIL."""
    sizes = [max_json_size(signature.inputs, limits.max_batch)
             for signature in servable.signatures.values()]
    if None in sizes:
        return  # a dynamic shape: only the body limit bounds it
    budget = max(sizes)
    size = json_size(raw)
    if size > budget:
        raise RestError(
            413,
            f"the body holds about {size} JSON values and lists; the "
            f"largest request model '{servable.name}' admits ("
            f"{limits.max_batch} instances, --max-batch) holds at most "
            f"{budget}: send fewer instances per request",
        )


def _check_images(arrays: dict, signature: Signature, limits: Limits):
    """Refuses encoded images that would decode past the pixel limits,
    from their headers alone (`export._images`)."""
    total = 0
    for key, array in arrays.items():
        if signature.inputs[key].dtype != "DT_STRING":
            continue
        for index, data in enumerate(array.reshape(-1)):
            where = f"input '{key}' item {index}"
            try:
                size = image_size(data)
            except ImageHeaderError as err:
                raise RestError(
                    400, f"{where} cannot be decoded: {err}"
                ) from None
            if size is None:
                continue
            if size.animated:
                raise RestError(
                    400,
                    f"{where} is an animated WebP, which this server "
                    "refuses: TensorFlow's WebP decoder corrupts memory on "
                    "animations; send one frame as PNG, JPEG or a still "
                    "WebP",
                )
            if size.pixels > limits.max_image_pixels:
                raise RestError(
                    413,
                    f"{where} is a {size.width} x {size.height} "
                    f"{size.format.upper()} ({size.pixels} pixels to decode"
                    f"); the server decodes at most "
                    f"{limits.max_image_pixels} pixels per image "
                    "(--max-image-pixels): downscale it before sending",
                )
            total += size.pixels
    if total > limits.max_request_pixels:
        raise RestError(
            413,
            f"the request's images decode to {total} pixels; the server "
            f"decodes at most {limits.max_request_pixels} per request "
            "(--max-request-pixels): send fewer or smaller images",
        )


def _check_token(request: Request, expected: bytes | None):
    if expected is None:
        return
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        raise RestError(
            401,
            "this server needs a bearer token: send the header "
            "'Authorization: Bearer TOKEN' with the token of its "
            "--token-file" + (" (the one sent does not match)"
                              if given else ""),
            {"WWW-Authenticate": "Bearer"},
        )


def _require_method(request: Request, method: str, what: str):
    allowed = {method, "HEAD"} if method == "GET" else {method}
    if request.method not in allowed:
        raise RestError(
            405, f"{what} takes {method}, not {request.method}"
        )


def _parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise RestError(
            400,
            f"version must be a non-negative integer, as in "
            f"/versions/3; got {text!r}",
        )
    return int(text)


def _status_json(servables: list[Servable]) -> dict:
    return {
        "model_version_status": [
            {
                "version": str(servable.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for servable in servables
        ]
    }


def _metadata_json(servable: Servable) -> dict:
    return {
        "model_spec": {
            "name": servable.name,
            "signature_name": "",
            "version": str(servable.version),
        },
        "metadata": {
            "signature_def": {"signature_def": servable.signature_def}
        },
    }


def _json_response(payload, status: int = 200, headers=None) -> Response:
    return Response(
        dumps(payload), status_code=status, headers=headers,
        media_type="application/json",
    )


def _error_response(err: RestError) -> Response:
    # An error raised while the body is still unread (413, 408) carries
    # "Connection: close": closing is cheaper than reading the rest only
    # to throw it away.
    return _json_response({"error": err.message}, err.status,
                          err.headers or None)


def _versions(path: str) -> dict[int, str]:
    if not os.path.isdir(path):
        return {}
    found = {}
    for entry in os.listdir(path):
        version_dir = os.path.join(path, entry)
        if entry.isdigit() and os.path.isfile(
            os.path.join(version_dir, "saved_model.pb")
        ):
            found[int(entry)] = version_dir
    return found


def _read_signature_defs(path: str) -> dict:
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        saved_model = saved_model_pb2.SavedModel.FromString(handle.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(
        f"serve: the SavedModel at {path!r} has no MetaGraph tagged "
        "'serve'; save it with tf.saved_model.save"
    )


def _tensor_info(key: str, proto) -> TensorInfo:
    shape = proto.tensor_shape
    dims = None if shape.unknown_rank else tuple(
        None if dim.size < 0 else dim.size for dim in shape.dim
    )
    return TensorInfo(key, types_pb2.DataType.Name(proto.dtype), dims)


def _signature_def_json(proto) -> dict:
    def tensor(info):
        return {
            "dtype": types_pb2.DataType.Name(info.dtype),
            "tensor_shape": {
                "dim": [
                    {"size": str(dim.size), "name": dim.name}
                    for dim in info.tensor_shape.dim
                ],
                "unknown_rank": info.tensor_shape.unknown_rank,
            },
            "name": info.name,
        }

    return {
        "inputs": {k: tensor(v) for k, v in sorted(proto.inputs.items())},
        "outputs": {k: tensor(v) for k, v in sorted(proto.outputs.items())},
        "method_name": proto.method_name,
        "defaults": {
            k: json_format.MessageToDict(v, preserving_proto_field_name=True)
            for k, v in sorted(proto.defaults.items())
        },
    }


def _op_error_text(message: str) -> str:
    # Eager errors wrap the op's own message ("Unknown image file
    # format...") in graph-execution preamble and node traces: keep the
    # message a client can act on.
    skip = ("Graph execution error", "Detected at node", "<stack traces")
    lines = [
        line.strip() for line in message.splitlines()
        if line.strip() and not line[0].isspace()
        and not line.startswith(skip)
    ]
    return " ".join(lines) or message.strip()


def _tf_dtype(name: str):
    return tf.dtypes.as_dtype(types_pb2.DataType.Value(name))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-attn-serve",
        description=(
            "Serve exported SavedModels over TensorFlow Serving's REST API "
            "(GET /v1/models/NAME[/metadata], POST /v1/models/NAME:predict)."
        ),
    )
    parser.add_argument(
        "directory",
        help="a model base path DIR/VERSION/saved_model.pb (served as "
        "basename(DIR)) or a root DIR/NAME/VERSION/saved_model.pb",
    )
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="interface to bind (default %(default)s; the "
                        "server has no TLS)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="TCP port (default %(default)s, TF Serving's "
                        "REST port)")
    parser.add_argument("--token-file", default=None,
                        help="file holding a bearer token: every request "
                        "must then send 'Authorization: Bearer TOKEN' "
                        "(default: no authentication)")
    limits = parser.add_argument_group(
        "limits", "what one request may make the server do (over a limit: "
        "413, or 503 when --max-pending is reached)")
    limits.add_argument("--max-body-bytes", type=int,
                        default=DEFAULT_MAX_BODY_BYTES,
                        help="largest request body, as sent and after gzip "
                        "inflation (default %(default)s)")
    limits.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help="most instances per request (default "
                        "%(default)s)")
    limits.add_argument("--max-image-pixels", type=int,
                        default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="most pixels one encoded image may decode to, "
                        "read from its header (default %(default)s)")
    limits.add_argument("--max-request-pixels", type=int,
                        default=DEFAULT_MAX_REQUEST_PIXELS,
                        help="most pixels all images of one request may "
                        "decode to (default %(default)s)")
    limits.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="worker threads running predictions "
                        "(default %(default)s)")
    limits.add_argument("--max-pending", type=int, default=None,
                        help="predict requests running or waiting for a "
                        "thread at once; more get 503 with Retry-After "
                        f"(default {DEFAULT_PENDING_PER_THREAD} x --threads)")
    limits.add_argument("--limit-concurrency", type=int, default=None,
                        help="answer 503 beyond this many open connections "
                        "and requests (default: no limit)")
    timeouts = parser.add_argument_group("timeouts", "in seconds")
    timeouts.add_argument("--header-timeout", type=float,
                          default=DEFAULT_HEADER_TIMEOUT,
                          help="close a connection whose request headers "
                          "are not complete this long after it opened or "
                          "after its last answer (default %(default)s)")
    timeouts.add_argument("--body-timeout", type=float,
                          default=DEFAULT_BODY_TIMEOUT,
                          help="answer 408 to a body not received in full "
                          "this long after its headers (default "
                          "%(default)s)")
    timeouts.add_argument("--keep-alive-timeout", type=float,
                          default=DEFAULT_KEEP_ALIVE_TIMEOUT,
                          help="close an idle keep-alive connection after "
                          "this long (default %(default)s)")
    parser.add_argument("--all-versions", action="store_true",
                        help="load every version, not only the highest")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info",
                                 "debug"])
    return parser


def is_loopback(host: str) -> bool:
    """Whether `host` binds only this machine (127.0.0.0/8, ::1,
    localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The bearer token in the file at `path` (surrounding whitespace
    dropped). Raises ValueError for a missing or empty file, or a token
    that cannot travel in an HTTP header."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--token-file {path!r} cannot be read: {err}") \
            from None
    if not token:
        raise ValueError(f"--token-file {path!r} is empty; write the token "
                         "into it (e.g. `openssl rand -hex 32 > FILE`)")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ValueError(f"--token-file {path!r}: the token must be "
                         "printable ASCII without spaces")
    return token


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (`python -m export.serve`,
    `keras-attn-serve`)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535]; got {args.port}")
    for flag in ("max_body_bytes", "max_batch", "max_image_pixels",
                 "max_request_pixels"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be positive; "
                         f"got {getattr(args, flag)}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}")
    for flag in ("max_pending", "limit_concurrency"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1; "
                         f"got {value}")
    for flag in ("header_timeout", "body_timeout", "keep_alive_timeout"):
        if not getattr(args, flag) > 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive; "
                         f"got {getattr(args, flag)}")
    token = None
    if args.token_file is not None:
        try:
            token = read_token(args.token_file)
        except ValueError as err:
            parser.error(str(err))
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(levelname)s:     %(message)s")
    try:
        repository = load_repository(args.directory, args.all_versions)
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        max_image_pixels=args.max_image_pixels,
        max_request_pixels=args.max_request_pixels,
        max_pending=args.max_pending
        or DEFAULT_PENDING_PER_THREAD * args.threads,
        body_timeout=args.body_timeout,
    )
    app = create_app(repository, threads=args.threads, limits=limits,
                     token=token)
    _LOG.info("serving %s", repository.describe())
    _LOG.info(
        "limits: body %d bytes, batch %d, %d pixels per image, %d per "
        "request, %d pending predictions; timeouts: headers %g s, body %g s, "
        "keep-alive %g s%s", limits.max_body_bytes, limits.max_batch,
        limits.max_image_pixels, limits.max_request_pixels,
        limits.max_pending, args.header_timeout, limits.body_timeout,
        args.keep_alive_timeout,
        "; bearer token required" if token else "",
    )
    if not is_loopback(args.host):
        _LOG.warning(
            "binding %s: the server has %s and no TLS; keep it behind a "
            "proxy that adds TLS%s", args.host,
            "bearer-token authentication" if token else "no authentication",
            "" if token else " and authentication, or pass --token-file",
        )
    config = uvicorn_config(
        app,
        host=args.host,
        port=args.port,
        header_timeout=args.header_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        log_level=args.log_level,
        limit_concurrency=args.limit_concurrency,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 3  # 3: uvicorn's startup failure


if __name__ == "__main__":
    sys.exit(main())
