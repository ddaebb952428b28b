"""Serve exported SavedModels over TensorFlow Serving's REST API.

    python -m export.serve DIR [--port 8501] [--host 127.0.0.1]
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
  `{"b64": "..."}`. See `export._rest` for the conventions.

Errors answer `{"error": "..."}` with TF Serving's 4xx status (400 bad
request, 404 unknown model or version, 413 body over `--max-body-bytes`),
and the server goes on serving. Parsing, the model call and encoding the
answer run in a thread pool (`--threads`), so the event loop keeps
accepting requests while a batch runs.

The server binds 127.0.0.1 unless told otherwise: it has no authentication
or TLS, so put it behind a proxy that does before exposing it. For
production, serve the same DIR with the official TF Serving container (see
README).

It reads only the SavedModel (no keras_attn import), so the signatures it
serves are generic: their inputs, outputs, dtypes and shapes come from each
SignatureDef.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from export._rest import RestError
from export._rest import TensorInfo
from export._rest import columns_to_arrays
from export._rest import dumps
from export._rest import outputs_to_columns
from export._rest import outputs_to_rows
from export._rest import parse_predict_body
from export._rest import rows_to_arrays

DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
# A 224x224x3 float image is about 3 MB of JSON: 32 MiB takes a batch of
# ten while capping what one request can make the server hold in memory.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_THREADS = 4
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


def create_app(
    repository: ModelRepository,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    threads: int = DEFAULT_THREADS,
) -> Starlette:
    """The ASGI app serving `repository` over TF Serving's REST API.

    Request bodies over `max_body_bytes` are refused with 413 while they
    are read (a missing or false Content-Length does not get past it).
    Predictions run in a pool of `threads` worker threads.
    """
    if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(
            f"create_app: max_body_bytes must be a positive integer; got "
            f"{max_body_bytes!r}"
        )
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"create_app: threads must be a positive integer; got {threads!r}"
        )
    executor = ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix="keras-attn-serve"
    )

    async def models_endpoint(request: Request) -> Response:
        try:
            return await _dispatch(request)
        except RestError as err:
            return _error_response(err)
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
            raw = await _read_body(request, max_body_bytes)
            loop = asyncio.get_running_loop()
            payload = await loop.run_in_executor(
                executor, _predict, servable, raw
            )
            return _json_response(payload)
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
    return app


def serve_in_thread(app: Starlette, host: str = DEFAULT_HOST,
                    port: int = 0, timeout: float = 30.0):
    """Run `app` under uvicorn in a daemon thread (port 0: a free one), for
    tests, benchmarks and notebooks. Returns `(url, stop)`; `stop()` shuts
    the server down and waits for the thread."""
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on"))
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


def _predict(servable: Servable, raw: bytes) -> dict:
    """Runs one `:predict` body (in a worker thread): parse, call, encode."""
    signature_name, form, payload = parse_predict_body(raw)
    signature = servable.signatures.get(signature_name)
    if signature is None:
        raise RestError(
            400,
            f'Serving signature key "{signature_name}" not found; model '
            f"'{servable.name}' version {servable.version} has "
            f"{sorted(servable.signatures)}",
        )
    if form == "instances":
        arrays = rows_to_arrays(payload, signature.inputs, signature_name)
        return outputs_to_rows(signature.run(arrays))
    arrays = columns_to_arrays(payload, signature.inputs, signature_name)
    return outputs_to_columns(signature.run(arrays))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    # Count what actually arrives: a chunked body has no Content-Length,
    # and a client can send more than it declared.
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> RestError:
    return RestError(
        413,
        f"request body exceeds the server's limit of {limit} bytes; send "
        "fewer instances per request or restart the server with a larger "
        "--max-body-bytes",
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
    # After a 413 the rest of the body is still unread: closing the
    # connection is cheaper than reading it only to throw it away.
    headers = {"Connection": "close"} if err.status == 413 else None
    return _json_response({"error": err.message}, err.status, headers)


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
                        "server has no authentication)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="TCP port (default %(default)s, TF Serving's "
                        "REST port)")
    parser.add_argument("--max-body-bytes", type=int,
                        default=DEFAULT_MAX_BODY_BYTES,
                        help="largest request body accepted; larger ones "
                        "get 413 (default %(default)s)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="worker threads running predictions "
                        "(default %(default)s)")
    parser.add_argument("--limit-concurrency", type=int, default=None,
                        help="answer 503 beyond this many open connections "
                        "and requests (default: no limit)")
    parser.add_argument("--all-versions", action="store_true",
                        help="load every version, not only the highest")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info",
                                 "debug"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (`python -m export.serve`,
    `keras-attn-serve`)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535]; got {args.port}")
    if args.max_body_bytes < 1:
        parser.error(
            f"--max-body-bytes must be positive; got {args.max_body_bytes}"
        )
    if args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}")
    if args.limit_concurrency is not None and args.limit_concurrency < 1:
        parser.error(
            "--limit-concurrency must be at least 1; got "
            f"{args.limit_concurrency}"
        )
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(levelname)s:     %(message)s")
    try:
        repository = load_repository(args.directory, args.all_versions)
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    app = create_app(repository, args.max_body_bytes, args.threads)
    _LOG.info("serving %s", repository.describe())
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _LOG.warning(
            "binding %s: the server has no authentication or TLS; keep it "
            "behind a proxy that adds them", args.host,
        )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        limit_concurrency=args.limit_concurrency,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
