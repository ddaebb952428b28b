"""export.serve against a hostile client, over real sockets.

A tiny SavedModel (8x8x1 linear softmax classifier, an image-bytes
signature that decodes and resizes like `python -m export`'s) is served by
uvicorn in a background thread with small limits and timeouts. Every class
of request that once stalled, crashed or fooled the server is tried: each
must answer TF Serving's status (or a documented 4xx naming what was
wrong), never a 5xx, and the server must go on answering valid requests
with exactly the SavedModel's outputs.
"""

import base64
import gzip
import json
import logging
import select
import socket
import struct
import textwrap
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tensorflow as tf

from keras_attn.export import serve
from keras_attn.export._images import image_size
from keras_attn.export._rest_json import decode_base64

pytestmark = pytest.mark.tf_only

SIDE = 8
CLASSES = 3
MAX_BATCH = 8
MAX_IMAGE_PIXELS = 64 * 64
MAX_REQUEST_PIXELS = 3 * 64 * 64
MAX_BODY = 256 * 1024
WEIGHTS = np.random.default_rng(1).standard_normal(
    (SIDE * SIDE, CLASSES)).astype(np.float32)


class Tiny(tf.Module):
    """images (B, 8, 8, 1) -> probabilities (B, 3) and maps (B, 1, 8, 8);
    image_bytes decoded to 1 channel and resized as the export does."""

    def __init__(self):
        super().__init__()
        self.weights = tf.Variable(WEIGHTS)

    def _outputs(self, images):
        flat = tf.reshape(images, [-1, SIDE * SIDE])
        return {"probabilities": tf.nn.softmax(flat @ self.weights),
                "attention_maps": tf.transpose(images, [0, 3, 1, 2]) / 3}

    @tf.function(input_signature=[
        tf.TensorSpec([None, SIDE, SIDE, 1], tf.float32)])
    def serve_images(self, images):
        return self._outputs(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_image_bytes(self, image_bytes):
        def decode(data):
            image = tf.io.decode_image(data, channels=1,
                                       expand_animations=False)
            image = tf.image.convert_image_dtype(image, tf.float32)
            image = tf.image.resize(image, (SIDE, SIDE))
            return tf.ensure_shape(image, (SIDE, SIDE, 1))

        return self._outputs(tf.map_fn(
            decode, image_bytes,
            fn_output_signature=tf.TensorSpec([SIDE, SIDE, 1], tf.float32)))

    @tf.function(input_signature=[
        tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None], tf.int64)])
    def two_inputs(self, a, b):
        return {"total": tf.reduce_sum(a, -1) + tf.cast(b, tf.float32)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    module = Tiny()
    tf.saved_model.save(module, str(root / "tiny" / "1"), signatures={
        "serving_default": module.serve_images,
        "serve_image_bytes": module.serve_image_bytes,
        "two_inputs": module.two_inputs,
    })
    return root / "tiny"


@pytest.fixture(scope="module")
def reference(model_dir):
    """The SavedModel's own outputs, called without the server."""
    loaded = tf.saved_model.load(str(model_dir / "1"))

    def run(batch):
        out = loaded.signatures["serving_default"](images=tf.constant(batch))
        return {key: value.numpy() for key, value in out.items()}

    run.loaded = loaded
    return run


LIMITS = serve.Limits(
    max_body_bytes=MAX_BODY, max_batch=MAX_BATCH,
    max_image_pixels=MAX_IMAGE_PIXELS, max_request_pixels=MAX_REQUEST_PIXELS,
    max_pending=32, body_timeout=1.5)


def start(model_dir, limits=LIMITS, threads=4, token=None, **settings):
    repository = serve.load_repository(str(model_dir))
    app = serve.create_app(repository, threads=threads, limits=limits,
                           token=token)
    url, stop = serve.serve_in_thread(app, **settings)
    return url, stop, repository


@pytest.fixture(scope="module")
def server(model_dir):
    url, stop, repository = start(model_dir, header_timeout=1.0,
                                  keep_alive_timeout=1.0)
    yield url, repository
    stop()


def images(count, seed):
    return np.random.default_rng(seed).random(
        (count, SIDE, SIDE, 1), dtype=np.float32)


def png(side, seed=0, channels=1):
    pixels = np.random.default_rng(seed).integers(
        0, 256, (side, side, channels), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def b64(data):
    return base64.b64encode(data).decode()


def post(url, body, **kwargs):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/models/tiny:predict", content=content,
                      timeout=30, **kwargs)


def assert_valid_answer(response, batch, reference):
    """200 and exactly the SavedModel's outputs, bit for bit."""
    assert response.status_code == 200, response.text
    want = reference(batch)
    rows = response.json()["predictions"]
    for key in ("probabilities", "attention_maps"):
        got = np.array([row[key] for row in rows], np.float32)
        np.testing.assert_array_equal(got, want[key])


def assert_error(response, status, *fragments):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    for fragment in fragments:
        assert fragment in error, error
    return error


def nested(depth, leaf):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def one_image_with(value, where=(0, 0, 0, 0)):
    batch = np.full((1, SIDE, SIDE, 1), 0.5).tolist()
    item = batch
    for index in where[:-1]:
        item = item[index]
    item[where[-1]] = value
    return batch


# Raw bodies: json.dumps cannot write a lone surrogate or 1e400 on its own.
INVALID = [
    ("lone surrogate", b'{"signature_name": "serve_image_bytes", '
     b'"instances": ["\\ud800"]}', "lone UTF-16 surrogate (\\ud800)"),
    ("strings nested 100 deep", json.dumps({
        "signature_name": "serve_image_bytes",
        "instances": nested(100, "x")}).encode(), "nested more than 1 deep"),
    ("strings nested 900 deep", b'{"signature_name": "serve_image_bytes", '
     b'"instances": ' + b"[" * 900 + b'"x"' + b"]" * 900 + b"}",
     "nested more than 1 deep"),
    ("numbers nested 100 deep", json.dumps(
        {"instances": nested(100, 1.0)}).encode(), "nested more than 4 deep"),
    ("boolean among floats", json.dumps(
        {"instances": one_image_with(True, (0, 3, 2, 0))}).encode(),
     "got the boolean true at [0, 3, 2, 0]"),
    ("false among floats", json.dumps(
        {"inputs": one_image_with(False)}).encode(), "the boolean false"),
    ("1e308 for float32", json.dumps(
        {"instances": one_image_with(1e308)}).encode(),
     "outside the range of DT_FLOAT"),
    ("3.5e38 for float32", json.dumps(
        {"instances": one_image_with(3.5e38)}).encode(),
     "outside the range of DT_FLOAT"),
    ("1e400", json.dumps({"instances": one_image_with(0.5)}).encode()
     .replace(b"0.5", b"1e400", 1), "too large for a double"),
    ("lossy integer for float32", json.dumps(
        {"instances": one_image_with(16777217)}).encode(),
     "16777217", "without loss of precision"),
    ("huge integer for float32", json.dumps(
        {"instances": one_image_with(2 ** 64)}).encode(), "an integer"),
    ("boolean among int64s", json.dumps({
        "signature_name": "two_inputs",
        "instances": [{"a": [1.0, 2.0], "b": 1},
                      {"a": [1.0, 2.0], "b": True}]}).encode(),
     "got the boolean true at [1]"),
] + [
    (f"signature_name {name}", json.dumps({
        "signature_name": value,
        "instances": images(1, 0).tolist()}).encode(),
     "'signature_name' must be a string")
    for name, value in [("null", None), ("0", 0), ("false", False),
                        ("[]", []), ("{}", {})]
]


@pytest.mark.parametrize("body, fragments",
                         [(case[1], case[2:]) for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_invalid_values_get_400_naming_the_problem(
        server, reference, body, fragments):
    url, _ = server
    assert_error(post(url, body), 400, *fragments)
    assert_valid_answer(post(url, {"instances": images(2, 1).tolist()}),
                        images(2, 1), reference)


def test_named_infinity_and_nan_stay_accepted_like_tf_serving(server):
    url, _ = server
    body = json.dumps({"instances": one_image_with(0.5)}).encode()
    response = post(url, body.replace(b"0.5", b"Infinity", 1))
    assert response.status_code == 200, response.text
    response = post(url, body.replace(b"0.5", b"16777215", 1))
    assert response.status_code == 200, response.text


def test_base64_variants_tf_serving_accepts(server):
    url, _ = server
    data = png(SIDE, seed=3)
    text = b64(data)
    variants = {
        "padded": text,
        "unpadded": text.rstrip("="),
        "wrapped like base64(1)": "\n".join(textwrap.wrap(text, 76)) + "\n",
        "CRLF and spaces": "\r\n ".join(textwrap.wrap(text, 60)),
    }
    assert text.endswith("="), "the fixture needs padding to strip"
    answers = {}
    for name, value in variants.items():
        assert decode_base64(value) == data, name
        response = post(url, {"signature_name": "serve_image_bytes",
                              "instances": [{"b64": value}]})
        assert response.status_code == 200, (name, response.text)
        answers[name] = response.json()
    assert all(answer == answers["padded"] for answer in answers.values())
    for bad in ("not base64!", text[:-3] + "-_", "Q", text + "==="):
        response = post(url, {"signature_name": "serve_image_bytes",
                              "instances": [{"b64": bad}]})
        assert_error(response, 400, "not valid base64")


def test_gzip_bodies_are_inflated_and_bombs_refused(server, reference):
    url, _ = server
    batch = images(3, seed=4)
    raw = json.dumps({"instances": batch.tolist()}).encode()
    response = post(url, gzip.compress(raw),
                    headers={"Content-Encoding": "gzip"})
    assert_valid_answer(response, batch, reference)
    bomb = gzip.compress(b" " * (20 * MAX_BODY))
    assert len(bomb) < MAX_BODY // 10
    assert_error(post(url, bomb, headers={"Content-Encoding": "gzip"}), 413,
                 "inflated request body exceeds", str(MAX_BODY))
    assert_error(post(url, raw, headers={"Content-Encoding": "gzip"}), 400,
                 "not valid gzip")
    assert_error(post(url, gzip.compress(raw)[:-20],
                      headers={"Content-Encoding": "gzip"}), 400, "truncated")
    assert_error(post(url, raw, headers={"Content-Encoding": "br"}), 415,
                 "Content-Encoding 'br'")
    assert_valid_answer(post(url, raw), batch, reference)


def test_extra_columnar_keys_are_ignored_like_tf_serving(server):
    url, _ = server
    response = post(url, {"signature_name": "two_inputs", "inputs": {
        "a": [[1.0, 2.0]], "b": [4], "unused": list(range(MAX_BATCH + 1))}})
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": [7.0]}
    response = post(url, {"signature_name": "two_inputs",
                          "inputs": {"a": [[1.0, 2.0]], "unused": 1}})
    assert_error(response, 400, "missing ['b']")


def test_floats_are_written_in_shortest_float32_form(server, reference):
    url, _ = server
    batch = images(4, seed=5)
    response = post(url, {"instances": batch.tolist()})
    assert_valid_answer(response, batch, reference)
    want = reference(batch)
    shortest = [str(value) for value in
                want["probabilities"].reshape(-1)]  # NumPy: shortest repr
    text = response.text
    assert all(number in text for number in shortest)
    # Full double precision (the old answers) would be far longer.
    full = json.dumps({"predictions": [
        {key: want[key][i].tolist() for key in want} for i in range(4)]})
    assert len(text) < 0.75 * len(full)


def test_metadata_lists_defaults_like_tf_serving(server):
    url, _ = server
    body = httpx.get(f"{url}/v1/models/tiny/metadata", timeout=30).json()
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert all(signature["defaults"] == {}
               for signature in signatures.values())


def test_batch_limit_is_a_413_before_any_work(server):
    url, _ = server
    too_many = images(MAX_BATCH + 1, seed=6).tolist()
    assert_error(post(url, {"instances": too_many}), 413,
                 f"batch of {MAX_BATCH + 1}", f"at most {MAX_BATCH}",
                 "--max-batch")
    assert_error(post(url, {"inputs": too_many}), 413, "--max-batch")
    pixels = [{"b64": b64(png(1))}] * (MAX_BATCH + 1)
    assert_error(post(url, {"signature_name": "serve_image_bytes",
                            "instances": pixels}), 413, "--max-batch")
    response = post(url, {"instances": too_many[:MAX_BATCH]})
    assert response.status_code == 200, response.text
    # Many tiny lists: refused from a count of the body's commas and
    # brackets, before json.loads builds a Python object for each.
    tiny_lists = json.dumps({"instances": [[0]] * 5000}).encode()
    assert len(tiny_lists) < MAX_BODY
    assert_error(post(url, tiny_lists), 413, "JSON values", "--max-batch")


def png_header_only(width, height):
    """A PNG whose IHDR claims width x height, with one tiny IDAT: what a
    decompression bomb looks like before anything is decoded."""
    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_pixel_limits_are_read_from_headers_before_decoding(server):
    url, _ = server
    bomb = png_header_only(23000, 23000)
    assert image_size(bomb).pixels == 23000 * 23000
    response = post(url, {"signature_name": "serve_image_bytes",
                          "instances": [{"b64": b64(bomb)}]})
    assert_error(response, 413, "23000 x 23000 PNG", "--max-image-pixels")
    four = [{"b64": b64(png(64, seed=i))} for i in range(4)]
    assert_error(post(url, {"signature_name": "serve_image_bytes",
                            "instances": four}), 413,
                 f"{4 * 64 * 64} pixels", "--max-request-pixels")
    response = post(url, {"signature_name": "serve_image_bytes",
                          "instances": four[:3]})
    assert response.status_code == 200, response.text
    truncated = b64(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0")
    assert_error(post(url, {"signature_name": "serve_image_bytes",
                            "instances": [{"b64": truncated}]}), 400,
                 "item 0 cannot be decoded", "truncated")


def test_full_server_answers_503_with_retry_after_and_status_goes_on(
        model_dir, reference):
    limits = serve.Limits(max_pending=2, body_timeout=5)
    url, stop, repository = start(model_dir, limits=limits, threads=2)
    signature = repository.get("tiny").signatures["serving_default"]
    real, entered, release = signature.function, threading.Semaphore(0), \
        threading.Event()

    def blocked(**tensors):
        entered.release()
        release.wait(30)
        return real(**tensors)

    signature.function = blocked
    batch = images(1, seed=7)
    try:
        with ThreadPoolExecutor(2) as pool:
            running = [pool.submit(post, url, {"instances": batch.tolist()})
                       for _ in range(2)]
            for _ in range(2):
                assert entered.acquire(timeout=30)
            busy = post(url, {"instances": batch.tolist()})
            assert_error(busy, 503, "--max-pending")
            assert busy.headers["retry-after"] == "1"
            for path in ("/v1/models/tiny", "/v1/models/tiny/metadata"):
                status = httpx.get(url + path, timeout=30)
                assert status.status_code == 200, status.text
            release.set()
            for future in running:
                assert_valid_answer(future.result(), batch, reference)
    finally:
        release.set()
        signature.function = real
        stop()


def _connect(url):
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _closed_within(sock, seconds, trickle=None):
    """Whether the server closes `sock` within `seconds`, sending one byte
    of `trickle` every 0.2 s meanwhile. Returns (closed, what was read)."""
    received = b""
    deadline = time.monotonic() + seconds
    trickle = iter(trickle or b"")
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return True, received
            if not data:
                return True, received
            received += data
            continue
        byte = next(trickle, None)
        if byte is not None:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return True, received
    return False, received


def test_idle_and_slow_header_connections_are_dropped(server):
    url, _ = server  # header and keep-alive timeouts of 1 s
    with _connect(url) as idle:
        closed, received = _closed_within(idle, 10)
        assert closed and received == b""
    slow = b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 40
    with _connect(url) as trickling:
        closed, received = _closed_within(trickling, 10, trickle=slow)
        assert closed and received == b""
    with _connect(url) as kept:
        kept.sendall(b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n")
        closed, received = _closed_within(kept, 10)
        assert closed and received.startswith(b"HTTP/1.1 200")


def test_slowly_sent_body_gets_408_and_is_dropped(server, reference):
    url, _ = server  # body timeout 1.5 s
    with _connect(url) as sock:
        sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        closed, received = _closed_within(sock, 10, trickle=b" " * 1000)
    assert closed and received.startswith(b"HTTP/1.1 408"), received
    assert b"--body-timeout" in received
    assert_valid_answer(post(url, {"instances": images(1, 8).tolist()}),
                        images(1, 8), reference)


def test_disconnect_mid_body_is_one_info_line(server, caplog):
    url, _ = server
    caplog.set_level(logging.INFO, logger="keras_attn.serve")
    with _connect(url) as sock:
        sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"instances\": [")
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            "disconnected" in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    records = [r for r in caplog.records if r.name == "keras_attn.serve"]
    assert [r.levelno for r in records] == [logging.INFO], [
        r.getMessage() for r in records]
    assert "disconnected before sending the whole body" in \
        records[0].getMessage()
    assert records[0].exc_info is None


def test_bearer_token_is_required_when_configured(model_dir, tmp_path):
    url, stop, _ = start(model_dir, token="s3cret-token")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": "s3cret-token"}):
            for path in ("/v1/models/tiny", "/v1/models/tiny/metadata",
                         "/nowhere"):
                response = httpx.get(url + path, headers=headers, timeout=30)
                assert_error(response, 401, "Authorization: Bearer")
                assert response.headers["www-authenticate"] == "Bearer"
            response = post(url, {"instances": images(1, 9).tolist()},
                            headers=headers)
            assert response.status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        response = post(url, {"instances": images(1, 9).tolist()},
                        headers=good)
        assert response.status_code == 200, response.text
    finally:
        stop()
    token_file = tmp_path / "token"
    token_file.write_text("  abc123\n")
    assert serve.read_token(str(token_file)) == "abc123"
    token_file.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        serve.read_token(str(token_file))
    with pytest.raises(ValueError, match="cannot be read"):
        serve.read_token(str(tmp_path / "missing"))
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1")
    assert serve.is_loopback("localhost") and serve.is_loopback("127.0.0.2")
    assert not serve.is_loopback("0.0.0.0")
    assert not serve.is_loopback("example.org")


def hostile_bodies():
    """(body, headers) pairs a hostile client sends in the mix."""
    bodies = [(case[1], {}) for case in INVALID]
    bodies += [
        (b'{"instances": [1, 2', {}),
        (b"\xff\xfe{", {}),
        (json.dumps({"instances": images(MAX_BATCH + 1, 0).tolist()})
         .encode(), {}),
        (json.dumps({"signature_name": "serve_image_bytes", "instances": [
            {"b64": b64(png_header_only(23000, 23000))}]}).encode(), {}),
        (json.dumps({"signature_name": "serve_image_bytes", "instances": [
            {"b64": "%%%"}]}).encode(), {}),
        (gzip.compress(b" " * (20 * MAX_BODY)), {"Content-Encoding": "gzip"}),
        (b"{}", {"Content-Encoding": "deflate"}),
        (b" " * (MAX_BODY + 1), {}),
    ]
    return bodies


def test_concurrent_mix_of_valid_and_hostile_clients(server, reference):
    url, _ = server
    clients, rounds = 16, 4
    hostile = hostile_bodies()
    batches = {(c, r): images(1 + (c + r) % 3, seed=1000 + 10 * c + r)
               for c in range(clients) for r in range(rounds)}
    barrier = threading.Barrier(clients)

    def client(index):
        results = []
        with httpx.Client(base_url=url, timeout=60) as http:
            barrier.wait()
            for round_ in range(rounds):
                batch = batches[index, round_]
                valid = http.post("/v1/models/tiny:predict",
                                  json={"instances": batch.tolist()})
                body, headers = hostile[(index * rounds + round_)
                                        % len(hostile)]
                bad = http.post("/v1/models/tiny:predict", content=body,
                                headers=headers)
                results.append((batch, valid.status_code, valid.content,
                                bad.status_code, bad.text))
        return results

    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    assert len(results) == clients * rounds
    for batch, status, content, bad_status, bad_text in results:
        assert status == 200, content
        assert 400 <= bad_status < 500, bad_text
        assert "error" in json.loads(bad_text)
        want = reference(batch)
        rows = json.loads(content)["predictions"]
        for key in ("probabilities", "attention_maps"):
            np.testing.assert_array_equal(
                np.array([row[key] for row in rows], np.float32), want[key])


def _pillow_image(fmt, mode="RGB", frames=1, **options):
    pil = pytest.importorskip("PIL.Image")
    import io

    rng = np.random.default_rng(0)
    images_ = [pil.fromarray(rng.integers(0, 256, (9, 7, 3), np.uint8))
               .convert(mode) for _ in range(frames)]
    buffer = io.BytesIO()
    if frames > 1:
        options.update(save_all=True, append_images=images_[1:],
                       duration=10, loop=0)
    images_[0].save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, mode, frames, options, kind, pixels", [
    ("PNG", "L", 1, {}, "png", 63),
    ("JPEG", "RGB", 1, {}, "jpeg", 63),
    ("JPEG", "RGB", 1, {"progressive": True}, "jpeg", 63),
    ("JPEG", "CMYK", 1, {}, "jpeg", 63),
    ("BMP", "RGB", 1, {}, "bmp", 63),
    ("BMP", "L", 1, {}, "bmp", 63),
    ("GIF", "RGB", 1, {}, "gif", 2 * 63),  # the screen and one frame
    ("GIF", "RGB", 3, {}, "gif", 4 * 63),  # giflib decodes every frame
    ("WEBP", "RGB", 1, {}, "webp", 63),
    ("WEBP", "RGB", 1, {"lossless": True}, "webp", 63),
    ("WEBP", "RGBA", 1, {}, "webp", 63),
    ("WEBP", "RGB", 3, {}, "webp", 3 * 63),
])
def test_image_headers_give_the_decoded_size(fmt, mode, frames, options,
                                             kind, pixels):
    data = _pillow_image(fmt, mode, frames, **options)
    size = image_size(data)
    assert (size.format, size.width, size.height) == (kind, 7, 9)
    assert size.pixels == pixels
    assert size.animated == (kind == "webp" and frames > 1)
    if not size.animated:  # TensorFlow 2.21 crashes on animated WebP
        decoded = tf.io.decode_image(data, expand_animations=False)
        assert tuple(decoded.shape[:2]) == (9, 7)


def test_animated_webp_is_refused_before_it_reaches_the_decoder(server):
    """TensorFlow 2.21's decode_image corrupts the heap on an animated
    WebP (the process aborts within a few calls): the server must never
    hand one to the signature."""
    url, _ = server
    animated = _pillow_image("WEBP", "RGB", frames=3)
    for _ in range(3):
        response = post(url, {"signature_name": "serve_image_bytes",
                              "instances": [{"b64": b64(animated)}]})
        assert_error(response, 400, "item 0 is an animated WebP")
    still = _pillow_image("WEBP", "RGB")
    response = post(url, {"signature_name": "serve_image_bytes",
                          "instances": [{"b64": b64(still)}]})
    assert_error(response, 400, "failed on this input")  # 1 channel: no
    response = post(url, {"signature_name": "serve_image_bytes",
                          "instances": [{"b64": b64(png(9))}]})
    assert response.status_code == 200, response.text


def test_unknown_and_broken_headers():
    assert image_size(b"hello") is None
    assert image_size(_pillow_image("TIFF")) is None  # TF cannot decode it
    from keras_attn.export._images import ImageHeaderError

    for broken in (b"\x89PNG\r\n\x1a\n\0\0", b"\xff\xd8\xff\xd9", b"GIF89a",
                   b"BM\0\0", b"RIFF\0\0\0\0WEBPJUNK\0\0\0\0"):
        with pytest.raises(ImageHeaderError):
            image_size(broken)


def test_idle_connections_no_longer_lock_out_clients(model_dir, reference):
    """Idle connections count against --limit-concurrency: once they were
    held for ever and every client got 503; the header timeout drops
    them."""
    url, stop, _ = start(model_dir, header_timeout=1.0, limit_concurrency=4)
    try:
        idle = [_connect(url) for _ in range(8)]
        for sock in idle:
            closed, received = _closed_within(sock, 10)
            assert closed and received == b""
            sock.close()
        batch = images(2, seed=11)
        assert_valid_answer(post(url, {"instances": batch.tolist()}), batch,
                            reference)
    finally:
        stop()


@pytest.mark.parametrize("flags, message", [
    (["--max-batch", "0"], "--max-batch must be positive"),
    (["--max-image-pixels", "-1"], "--max-image-pixels must be positive"),
    (["--max-pending", "0"], "--max-pending must be at least 1"),
    (["--header-timeout", "0"], "--header-timeout must be positive"),
    (["--body-timeout", "-2"], "--body-timeout must be positive"),
    (["--token-file", "/nonexistent/token"], "cannot be read"),
])
def test_command_line_refuses_bad_limits(model_dir, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve.main([str(model_dir), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
