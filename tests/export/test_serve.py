"""export.serve against tiny SavedModels that follow the export contract.

The fixture writes TF Serving's layout by hand -- ROOT/tiny/{1,3} and
ROOT/other/2 -- with an 8x8x1 linear softmax classifier whose answers NumPy
computes on its own, so every check compares the server with arithmetic,
not with itself. Every bad request is followed by a good one: the server
must keep serving.
"""

import asyncio
import base64
import configparser
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tensorflow as tf
from starlette.testclient import TestClient

from keras_attn.export import serve

pytestmark = pytest.mark.tf_only

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SIDE = 8
CLASSES = 3
LIMIT = 64 * 1024
WEIGHTS = np.random.default_rng(0).standard_normal(
    (SIDE * SIDE, CLASSES)).astype(np.float32)
BIASES = {
    1: np.zeros(CLASSES, np.float32),
    3: np.array([0.5, -0.25, 0.1], np.float32),
}


class TinyClassifier(tf.Module):
    """images (B, 8, 8, 1) -> probabilities (B, 3), classes (B,) and one
    'attention map' per image (B, 1, 8, 8), as the export contract says."""

    def __init__(self, bias):
        super().__init__()
        self.weights = tf.Variable(WEIGHTS)
        self.bias = tf.Variable(bias)

    def _outputs(self, images):
        flat = tf.reshape(images, [-1, SIDE * SIDE])
        probabilities = tf.nn.softmax(flat @ self.weights + self.bias)
        return {
            "probabilities": probabilities,
            "classes": tf.argmax(probabilities, -1, output_type=tf.int64),
            "attention_maps": tf.transpose(images, [0, 3, 1, 2]),
        }

    @tf.function(input_signature=[
        tf.TensorSpec([None, SIDE, SIDE, 1], tf.float32)])
    def serve_images(self, images):
        return self._outputs(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_image_bytes(self, image_bytes):
        def decode(data):
            image = tf.io.decode_png(data, channels=1)
            image = tf.ensure_shape(image, [SIDE, SIDE, 1])
            return tf.cast(image, tf.float32) / 255.0

        images = tf.map_fn(
            decode, image_bytes,
            fn_output_signature=tf.TensorSpec([SIDE, SIDE, 1], tf.float32))
        return self._outputs(images)

    @tf.function(input_signature=[
        tf.TensorSpec([None, SIDE, SIDE, 1], tf.float32)])
    def probabilities_only(self, images):
        return {"probabilities": self._outputs(images)["probabilities"]}

    @tf.function(input_signature=[
        tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None], tf.int64)])
    def two_inputs(self, a, b):
        return {"total": tf.reduce_sum(a, -1) + tf.cast(b, tf.float32),
                "doubled_b": 2 * b}


def _write_model(path, bias):
    module = TinyClassifier(bias)
    tf.saved_model.save(module, str(path), signatures={
        "serving_default": module.serve_images,
        "serve_image_bytes": module.serve_image_bytes,
        "probabilities_only": module.probabilities_only,
        "two_inputs": module.two_inputs,
    })


def images(count, seed):
    return np.random.default_rng(seed).random(
        (count, SIDE, SIDE, 1), dtype=np.float32)


def expected(batch, version=3):
    logits = batch.reshape(len(batch), -1).astype(np.float64) @ WEIGHTS
    logits = logits + BIASES[version]
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def png(image_uint8):
    return tf.io.encode_png(image_uint8).numpy()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for version in (1, 3):
        _write_model(root / "tiny" / str(version), BIASES[version])
    shutil.copytree(root / "tiny" / "1", root / "other" / "2")
    (root / "other" / "2" / "manifest.json").write_text("{}")
    (root / "notes").mkdir()  # not a model: ignored
    return root


@pytest.fixture(scope="module")
def client(root):
    repository = serve.load_repository(str(root), all_versions=True)
    app = serve.create_app(repository, max_body_bytes=LIMIT, threads=2)
    with TestClient(app) as test_client:
        yield test_client


def predict_ok(client, batch, version=None, path="tiny"):
    """A good request with a fresh batch; checks the answer is right."""
    where = f"/v1/models/{path}"
    if version is not None:
        where += f"/versions/{version}"
    response = client.post(f"{where}:predict",
                           json={"instances": batch.tolist()})
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    got = np.array([row["probabilities"] for row in rows])
    np.testing.assert_allclose(got, expected(batch, version or 3), atol=1e-5)
    return rows


def test_status_lists_each_loaded_version_like_tf_serving(client):
    response = client.get("/v1/models/tiny")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    ok = {"error_code": "OK", "error_message": ""}
    assert response.json() == {"model_version_status": [
        {"version": "3", "state": "AVAILABLE", "status": ok},
        {"version": "1", "state": "AVAILABLE", "status": ok},
    ]}
    one = client.get("/v1/models/tiny/versions/1").json()
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    other = client.get("/v1/models/other").json()
    assert [s["version"] for s in other["model_version_status"]] == ["2"]


def test_metadata_describes_every_signature_like_tf_serving(client):
    body = client.get("/v1/models/tiny/metadata").json()
    assert body["model_spec"] == {
        "name": "tiny", "signature_name": "", "version": "3"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serve_image_bytes", "two_inputs",
            "probabilities_only"} <= set(signatures)
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["images"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {
            "dim": [{"size": size, "name": ""}
                    for size in ("-1", "8", "8", "1")],
            "unknown_rank": False,
        },
        "name": "serving_default_images:0",
    }
    outputs = default["outputs"]
    assert set(outputs) == {"probabilities", "classes", "attention_maps"}
    assert outputs["classes"]["dtype"] == "DT_INT64"
    assert [d["size"] for d in outputs["probabilities"]["tensor_shape"][
        "dim"]] == ["-1", "3"]
    assert [d["size"] for d in outputs["attention_maps"]["tensor_shape"][
        "dim"]] == ["-1", "1", "8", "8"]
    bytes_input = signatures["serve_image_bytes"]["inputs"]["image_bytes"]
    assert bytes_input["dtype"] == "DT_STRING"
    assert bytes_input["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    old = client.get("/v1/models/tiny/versions/1/metadata").json()
    assert old["model_spec"]["version"] == "1"


def test_row_format_gives_one_object_per_instance(client):
    batch = images(4, seed=1)
    rows = predict_ok(client, batch)
    assert len(rows) == 4
    assert set(rows[0]) == {"probabilities", "classes", "attention_maps"}
    assert [row["classes"] for row in rows] == list(
        expected(batch).argmax(-1))
    # Full float precision: the maps come back bit-identical.
    maps = np.array([row["attention_maps"] for row in rows], np.float32)
    np.testing.assert_array_equal(maps, batch.transpose(0, 3, 1, 2))
    # Named instances are the same request.
    named = client.post("/v1/models/tiny:predict", json={
        "instances": [{"images": image} for image in batch.tolist()]})
    assert named.json()["predictions"] == rows


def test_columnar_format_gives_one_list_per_output(client):
    batch = images(3, seed=2)
    for inputs in (batch.tolist(), {"images": batch.tolist()}):
        response = client.post("/v1/models/tiny:predict",
                               json={"inputs": inputs})
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        assert set(outputs) == {"probabilities", "classes", "attention_maps"}
        np.testing.assert_allclose(outputs["probabilities"],
                                   expected(batch), atol=1e-5)
        assert outputs["classes"] == list(expected(batch).argmax(-1))
        assert np.shape(outputs["attention_maps"]) == (3, 1, SIDE, SIDE)


def test_single_output_signature_answers_bare_values(client):
    batch = images(2, seed=3)
    body = {"signature_name": "probabilities_only"}
    rows = client.post("/v1/models/tiny:predict",
                       json={**body, "instances": batch.tolist()}).json()
    np.testing.assert_allclose(rows["predictions"], expected(batch),
                               atol=1e-5)
    columns = client.post("/v1/models/tiny:predict",
                          json={**body, "inputs": batch.tolist()}).json()
    np.testing.assert_allclose(columns["outputs"], expected(batch), atol=1e-5)


def test_image_bytes_signature_takes_b64_encoded_pngs(client):
    pixels = np.random.default_rng(4).integers(
        0, 256, (3, SIDE, SIDE, 1), dtype=np.uint8)
    encoded = [{"b64": base64.b64encode(png(p)).decode()} for p in pixels]
    want = expected(pixels.astype(np.float32) / 255.0)
    rows = client.post("/v1/models/tiny:predict", json={
        "signature_name": "serve_image_bytes", "instances": encoded})
    assert rows.status_code == 200, rows.text
    got = [row["probabilities"] for row in rows.json()["predictions"]]
    np.testing.assert_allclose(got, want, atol=1e-5)
    columns = client.post("/v1/models/tiny:predict", json={
        "signature_name": "serve_image_bytes",
        "inputs": {"image_bytes": encoded}})
    np.testing.assert_allclose(columns.json()["outputs"]["probabilities"],
                               want, atol=1e-5)


def test_several_named_inputs_in_both_formats(client):
    rows = client.post("/v1/models/tiny:predict", json={
        "signature_name": "two_inputs",
        "instances": [{"a": [1.5, 2.0], "b": 3}, {"a": [0, -1], "b": -4}]})
    assert rows.status_code == 200, rows.text
    assert rows.json() == {"predictions": [
        {"total": 6.5, "doubled_b": 6}, {"total": -5.0, "doubled_b": -8}]}
    columns = client.post("/v1/models/tiny:predict", json={
        "signature_name": "two_inputs",
        "inputs": {"a": [[1, 1]], "b": [7]}})
    assert columns.json() == {"outputs": {"total": [9.0], "doubled_b": [14]}}


def test_version_paths_reach_each_loaded_version(client):
    batch = images(2, seed=5)
    predict_ok(client, batch, version=1)
    predict_ok(client, batch, version=3)
    predict_ok(client, batch)  # the highest: 3
    response = client.post("/v1/models/other:predict",
                           json={"instances": batch.tolist()})
    got = [row["probabilities"] for row in response.json()["predictions"]]
    np.testing.assert_allclose(got, expected(batch, 1), atol=1e-5)


def test_a_model_base_path_serves_its_highest_version_only(root):
    repository = serve.load_repository(str(root / "tiny"))
    assert repository.names() == ["tiny"]
    assert repository.versions("tiny") == [3]
    with TestClient(serve.create_app(repository)) as client:
        predict_ok(client, images(1, seed=6))
        response = client.get("/v1/models/tiny/versions/1")
        assert response.status_code == 404
        assert "Specific(tiny, 1)" in response.json()["error"]


def _image_list(shape, value=0.5):
    return np.full(shape, value, np.float32).tolist()


def _with(batch_list, path, value):
    item = batch_list
    for index in path[:-1]:
        item = item[index]
    item[path[-1]] = value
    return batch_list


BAD_REQUESTS = [
    ("malformed JSON", "tiny:predict", b'{"instances": [1, 2', 400,
     "JSON Parse error"),
    ("not an object", "tiny:predict", b"[1, 2]", 400, "JSON object"),
    ("not UTF-8", "tiny:predict", b"\xff\xfe{", 400, "not UTF-8"),
    ("no instances or inputs", "tiny:predict",
     {"signature_name": "serving_default"}, 400, "Missing 'inputs'"),
    ("both formats", "tiny:predict",
     {"instances": [], "inputs": []}, 400, "only one"),
    ("instances not a list", "tiny:predict", {"instances": 5}, 400,
     "must be a JSON list"),
    ("no instances", "tiny:predict", {"instances": []}, 400, "empty"),
    ("wrong image size", "tiny:predict",
     {"instances": _image_list((2, 28, 28, 1))}, 400,
     "has shape [2, 28, 28, 1]"),
    ("wrong rank", "tiny:predict",
     {"inputs": _image_list((2, SIDE, SIDE))}, 400, "[-1, 8, 8, 1]"),
    ("ragged", "tiny:predict",
     {"instances": [_image_list((SIDE, SIDE, 1)),
                    _image_list((SIDE - 1, SIDE, 1))]}, 400, "ragged"),
    ("strings for floats", "tiny:predict",
     {"instances": _with(_image_list((1, SIDE, SIDE, 1)), (0, 0, 0, 0),
                         "0.5")}, 400, "strings"),
    ("null for a float", "tiny:predict",
     {"instances": _with(_image_list((1, SIDE, SIDE, 1)), (0, 0, 0, 0),
                         None)}, 400, "got null"),
    ("booleans for floats", "tiny:predict",
     {"instances": np.ones((1, SIDE, SIDE, 1), bool).tolist()}, 400,
     "booleans"),
    ("fraction for an int64", "tiny:predict",
     {"signature_name": "two_inputs",
      "instances": [{"a": [1, 2], "b": 1.5}]}, 400, "integers"),
    ("int64 overflow", "tiny:predict",
     {"signature_name": "two_inputs",
      "instances": [{"a": [1, 2], "b": 2 ** 70}]}, 400, "64 bits"),
    ("object for a float", "tiny:predict",
     {"instances": [[1.0, {"x": 1}]]}, 400, "got an object"),
    ("missing named input", "tiny:predict",
     {"signature_name": "two_inputs", "instances": [{"a": [1, 2]}]}, 400,
     "missing ['b']"),
    ("unknown named input", "tiny:predict",
     {"signature_name": "two_inputs",
      "instances": [{"a": [1, 2], "b": 1, "c": 1}]}, 400, "unknown ['c']"),
    ("bare instances for two inputs", "tiny:predict",
     {"signature_name": "two_inputs", "instances": [[1, 2]]}, 400,
     "keyed by input name"),
    ("unknown signature", "tiny:predict",
     {"signature_name": "nope", "instances": [1]}, 400,
     'signature key "nope" not found'),
    ("bad base64", "tiny:predict",
     {"signature_name": "serve_image_bytes",
      "instances": [{"b64": "not base64!"}]}, 400, "base64"),
    ("not a PNG", "tiny:predict",
     {"signature_name": "serve_image_bytes",
      "instances": [{"b64": base64.b64encode(b"hello").decode()}]}, 400,
     "signature 'serve_image_bytes' failed on this input: "),
    ("number for bytes", "tiny:predict",
     {"signature_name": "serve_image_bytes", "instances": [5]}, 400,
     "b64"),
    ("unknown model", "nope:predict", {"instances": [1]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "tiny/versions/7:predict", {"instances": [1]}, 404,
     "Specific(tiny, 7)"),
    ("version not a number", "tiny/versions/abc:predict", {"instances": [1]},
     400, "non-negative integer"),
    ("version label", "tiny/labels/stable:predict", {"instances": [1]}, 404,
     "labels are not supported"),
    ("classify", "tiny:classify", {"examples": []}, 501, "use :predict"),
    ("unknown verb", "tiny:explode", {"instances": [1]}, 404, "unknown verb"),
    ("POST to status", "tiny", {"instances": [1]}, 405, "takes GET"),
]


@pytest.mark.parametrize(
    "path, body, status, message",
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_gets_json_error_and_server_keeps_serving(
        client, path, body, status, message):
    url = f"/v1/models/{path}"
    if isinstance(body, bytes):
        response = client.post(url, content=body)
    else:
        response = client.post(url, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error, str) and message in error
    predict_ok(client, images(2, seed=len(path)))


def test_wrong_method_and_unknown_paths_get_json_errors(client):
    response = client.get("/v1/models/tiny:predict")
    assert response.status_code == 405
    assert "takes POST" in response.json()["error"]
    for url in ("/", "/v2/models/tiny", "/v1/models"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "Malformed request" in response.json()["error"]
    predict_ok(client, images(1, seed=7))


def test_oversize_body_gets_413_with_or_without_content_length(client):
    big = {"instances": images(100, seed=0).tolist()}
    assert len(json.dumps(big)) > LIMIT
    response = client.post("/v1/models/tiny:predict", json=big)
    assert response.status_code == 413
    assert "--max-body-bytes" in response.json()["error"]
    predict_ok(client, images(1, seed=8))

    def chunks():  # chunked transfer: no Content-Length at all
        data = json.dumps(big).encode()
        for start in range(0, len(data), 4096):
            yield data[start:start + 4096]

    response = client.post("/v1/models/tiny:predict", content=chunks())
    assert response.status_code == 413
    predict_ok(client, images(1, seed=9))


def test_body_limit_ignores_a_false_content_length_and_stops_reading(root):
    """A client declaring 10 bytes and streaming megabytes is cut off at the
    limit: the server stops pulling chunks instead of buffering them."""
    repository = serve.load_repository(str(root / "tiny"))
    app = serve.create_app(repository, max_body_bytes=10_000)
    chunk, total_chunks = b" " * 1000, 5_000  # 5 MB on offer
    pulled, sent = [0], []

    async def receive():
        pulled[0] += 1
        more = pulled[0] < total_chunks
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/models/tiny:predict",
        "raw_path": b"/v1/models/tiny:predict", "query_string": b"",
        "root_path": "", "headers": [(b"content-length", b"10")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8501),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert (b"connection", b"close") in start["headers"]
    body = b"".join(m.get("body", b"") for m in sent
                    if m["type"] == "http.response.body")
    assert "exceeds" in json.loads(body)["error"]
    assert pulled[0] <= 12, pulled[0]


@pytest.fixture(scope="module")
def live_server(root):
    """A real uvicorn server on a free port in a background thread."""
    repository = serve.load_repository(str(root))
    url, stop = serve.serve_in_thread(
        serve.create_app(repository, threads=4))
    yield url, repository
    stop()


def test_sixteen_concurrent_clients_each_get_their_own_answer(live_server):
    url, _ = live_server
    clients = 16
    barrier = threading.Barrier(clients)

    def one_client(index):
        batch = images(1 + index % 3, seed=100 + index)
        with httpx.Client(base_url=url, timeout=60) as http:
            barrier.wait()
            answers = []
            for _ in range(3):
                response = http.post("/v1/models/tiny:predict",
                                     json={"instances": batch.tolist()})
                assert response.status_code == 200, response.text
                answers.append(response.json()["predictions"])
        return batch, answers

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one_client, range(clients)))
    for batch, answers in results:
        for rows in answers:
            got = np.array([row["probabilities"] for row in rows])
            np.testing.assert_allclose(got, expected(batch), atol=1e-5)
            maps = np.array([row["attention_maps"] for row in rows],
                            np.float32)
            np.testing.assert_array_equal(maps, batch.transpose(0, 3, 1, 2))


def test_slow_predictions_run_in_threads_off_the_event_loop(
        live_server, monkeypatch):
    url, repository = live_server
    signature = repository.get("tiny").signatures["serving_default"]
    real = signature.function

    def slow(**tensors):
        time.sleep(0.6)
        return real(**tensors)

    monkeypatch.setattr(signature, "function", slow)
    batches = [images(1, seed=200 + i) for i in range(3)]

    def predict(batch):
        response = httpx.post(f"{url}/v1/models/tiny:predict", timeout=30,
                              json={"instances": batch.tolist()})
        return response.json()["predictions"]

    with ThreadPoolExecutor(3) as pool:
        start = time.monotonic()
        futures = [pool.submit(predict, batch) for batch in batches]
        time.sleep(0.1)
        status_start = time.monotonic()
        status = httpx.get(f"{url}/v1/models/tiny", timeout=30)
        status_time = time.monotonic() - status_start
        answers = [future.result() for future in futures]
        total = time.monotonic() - start
    assert status.status_code == 200
    # The status answer does not wait for the running predictions, and the
    # three predictions overlap instead of queueing (3 x 0.6 s in series).
    assert status_time < 0.4, status_time
    assert total < 1.6, total
    for batch, rows in zip(batches, answers, strict=True):
        np.testing.assert_allclose(rows[0]["probabilities"],
                                   expected(batch)[0], atol=1e-5)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_command_line_serves_a_model_base_path(root):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        [sys.executable, "-m", "export.serve", str(root / "tiny"),
         "--port", str(port), "--max-body-bytes", "20000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "server did not start"
            try:
                status = httpx.get(f"{url}/v1/models/tiny", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert status.json()["model_version_status"][0]["version"] == "3"
        with httpx.Client(base_url=url, timeout=30) as http:
            predict_ok(http, images(2, seed=10))
            big = {"instances": images(20, seed=0).tolist()}
            assert len(json.dumps(big)) > 20000
            response = http.post("/v1/models/tiny:predict", json=big)
            assert response.status_code == 413
        with httpx.Client(base_url=url, timeout=30) as http:
            predict_ok(http, images(2, seed=11))
    finally:
        process.send_signal(2)  # SIGINT: uvicorn shuts down cleanly
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output
    assert "serving tiny (versions [3])" in output
    assert "127.0.0.1" in output


def test_command_line_rejects_bad_arguments_with_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve.main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no SavedModel under" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        serve.main([str(tmp_path), "--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_find_models_names_the_layout_it_expects(root, tmp_path):
    assert serve.find_models(str(root)) == {
        "other": {2: str(root / "other" / "2")},
        "tiny": {1: str(root / "tiny" / "1"), 3: str(root / "tiny" / "3")},
    }
    with pytest.raises(ValueError, match="not a directory"):
        serve.find_models(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="pass the model base path"):
        serve.find_models(str(root / "tiny" / "3"))
    with pytest.raises(ValueError, match="positive integer"):
        serve.create_app(serve.ModelRepository({"x": {}}), max_body_bytes=0)


def test_setup_cfg_installs_the_server_and_its_console_script():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO_ROOT, "setup.cfg"))
    scripts = config["options.entry_points"]["console_scripts"]
    assert "keras-attn-serve = keras_attn.export.serve:main" in scripts
    extras = config["options.extras_require"]
    for package in ("starlette", "uvicorn"):
        assert package in extras["serve"] and package in extras["dev"]
    assert "httpx" in extras["dev"]


def test_serves_a_real_keras_attn_export_like_the_keras_model(tmp_path):
    """`export.export_model` output (a CBAM ResNet-20) served end to end
    on real Fashion-MNIST images: same probabilities as Keras, from
    float images and from PNG bytes alike."""
    from keras_attn.data.fashion_mnist import load_fashion_mnist
    from keras_attn.export import export_model
    from keras_attn.models import resnet

    model = resnet((28, 28, 1), 10, depth=20, attention="cbam")
    export_model(model, str(tmp_path), name="cbam", to="saved_model",
                 parity={"images": 0})
    pixels = load_fashion_mnist("test")[0][:4]
    batch = pixels[..., None].astype(np.float32) / 255.0
    want = np.asarray(model.predict(batch, verbose=0))
    with TestClient(serve.create_app(
            serve.load_repository(str(tmp_path)))) as client:
        names = client.get("/v1/models/cbam/metadata").json()[
            "metadata"]["signature_def"]["signature_def"]
        assert {"serving_default", "serve_image_bytes"} <= set(names)
        rows = client.post("/v1/models/cbam:predict",
                           json={"instances": batch.tolist()})
        assert rows.status_code == 200, rows.text
        encoded = [{"b64": base64.b64encode(png(p[..., None])).decode()}
                   for p in pixels]
        columns = client.post("/v1/models/cbam:predict", json={
            "signature_name": "serve_image_bytes",
            "inputs": {"image_bytes": encoded}})
        assert columns.status_code == 200, columns.text
    predictions = rows.json()["predictions"]
    got = np.array([row["probabilities"] for row in predictions])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert [row["classes"] for row in predictions] == list(want.argmax(-1))
    maps = np.array([row["attention_maps"] for row in predictions])
    assert maps.shape[0] == 4 and maps.shape[2:] == (28, 28)
    outputs = columns.json()["outputs"]
    np.testing.assert_allclose(outputs["probabilities"], want, atol=1e-4)
