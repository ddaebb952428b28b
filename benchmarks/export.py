"""Size, single-image latency and REST throughput of exported models.

Each model (`--models`, default a few of the tiny 28x28x1, 10-class
builders of `benchmarks/tiny_models.py`, shared with the export tests,
with *untrained* weights: sizes and latencies do not depend on them) is
exported with `export.export_model(..., to="all",
tflite=TFLiteOptions(quantize="none,dynamic,int8"))`, int8
calibrated on 100 Fashion-MNIST train images, no parity check. Then:

- sizes: the SavedModel directory (MB) and the float32 / dynamic-range /
  int8 TFLite files (KB), plus the layers the int8 file keeps float;
- latency of one Fashion-MNIST test image (batch 1), p50 / p99 of
  `--repeats` calls after warm-up (`time.perf_counter`), per path: Keras
  eager `model(x, training=False)` (RAM: `model.inference_model()(x)`),
  the same call in `tf.function(jit_compile=True)`, the SavedModel's
  `serving_default` signature, and the float32 and int8 TFLite files'
  signature runners (`runner(images=x)`, LiteRT's default XNNPACK delegate)
  at each of `--threads` interpreter threads;
- REST throughput (`--serve-models`): `export.serve`'s app under uvicorn on
  a free 127.0.0.1 port in a background thread (`serve.serve_in_thread`),
  `--clients` concurrent httpx clients each POSTing one image per request to
  `/v1/models/NAME:predict` for `--serve-seconds`: requests/s and p50 /
  p99 latency. Clients and server share the same CPUs (and the GIL).

    python -m benchmarks.export                 # default models
    python -m benchmarks.export --quick         # few repeats, 1 s serving
    python -m benchmarks.export --models stn ram --serve-models stn
    python -m benchmarks.export --serve-limits  # server memory, see below

Writes `benchmarks/results/export.json` (override with `--out`).

`--serve-limits` measures instead what the server's admission limits
bound (`measure_serve_limits`): `python -m export.serve` in its own
process with its default limits, serving the first of `--models`' SavedModel,
is sent the largest requests those limits admit, alone and then four at
once (its default `--threads`), while its RSS is sampled from /proc every
20 ms and a status call is timed every 50 ms; each run on a fresh server,
warmed up by one single-image request per signature. Writes
`benchmarks/results/serve_limits.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import tiny_models  # noqa: E402
from benchmarks.tiny_models import BUILDERS  # noqa: E402
from benchmarks.tiny_models import SHAPE  # noqa: E402
from keras_attn.export import ParityOptions  # noqa: E402
from keras_attn.export import TFLiteOptions  # noqa: E402
from keras_attn.export import export_model  # noqa: E402
from keras_attn.export.calibration import load_images  # noqa: E402
from keras_attn.export.tflite_runner import TFLiteModel  # noqa: E402

DEFAULT_MODELS = ["cbam_resnet", "ltpa_pc_concat", "stn", "ram"]
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TAG = "EXPORT_MANIFEST "
NOTE = ("Untrained weights (sizes and latencies do not depend on them). "
        "Measured on a shared 2-core CPU (other jobs running): treat "
        "latencies as rough, compare within one run.")


def build(name):
    """`(model, forward)`: the model and the Keras call that predicts
    (RAM: its functional inference model)."""
    model = tiny_models.build(name)
    return model, (model.inference_model() if name == "ram" else model)


def percentiles(seconds):
    p50, p99 = np.percentile(1e3 * np.asarray(seconds), [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99),
            "min_ms": 1e3 * float(min(seconds)), "samples": len(seconds)}


def time_calls(call, repeats, warmup):
    """p50 / p99 of `repeats` timed calls of `call()` (which must return
    once its result is ready), after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return percentiles(seconds)


def _ready(out):
    for value in tf.nest.flatten(out):
        np.asarray(value)


def latency_paths(forward, manifest, image, threads):
    """`{path: zero-argument call}` for one image."""
    x = tf.constant(image)
    xla = tf.function(lambda t: forward(t, training=False), jit_compile=True)
    signature = tf.saved_model.load(
        manifest["written"]["saved_model"]).signatures["serving_default"]
    paths = {
        "keras": lambda: _ready(forward(x, training=False)),
        "xla": lambda: _ready(xla(x)),
        "saved_model": lambda: _ready(signature(images=x)),
    }
    for tag in ("float32", "int8"):
        for t in threads if tag in manifest["tflite"] else ():
            runner = TFLiteModel(manifest["written"]["tflite"][tag],
                                 num_threads=t)
            fed = runner._quantize(image)  # float32 unless io_type was set

            def call(run=runner.runner, fed=fed):
                return run(images=fed)

            paths[f"tflite_{tag}_t{t}"] = call
    return paths


def export_worker(name, root, quantize):
    """Child process: export `name` under `root`; print the manifest."""
    model, _ = build(name)
    manifest = export_model(
        model, os.path.join(root, name), name=name, to="all", version=1,
        overwrite=True,
        tflite=TFLiteOptions(quantize=quantize, calibration="fashion_mnist",
                             calibration_images=100),
        parity=ParityOptions(images=0))
    print(_TAG + json.dumps(manifest), flush=True)


def export(name, root):
    """The manifest of `name`'s export, and why int8 is missing if it is.

    Exports run in a child process: LiteRT's interpreter can abort the
    process (a native crash, not an exception) on loading a file, which
    `export_model` does for each file it writes. If the full export dies,
    it is redone without int8."""
    errors = {}
    for quantize in ("none,dynamic,int8", "none,dynamic"):
        proc = subprocess.run(
            [sys.executable, "-c", "from benchmarks.export import "
             f"export_worker; export_worker({name!r}, {root!r}, "
             f"{quantize!r})"],
            cwd=_ROOT, capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG):]), errors
        tail = [t for t in proc.stderr.splitlines() if t.strip()][-3:]
        errors[quantize] = f"exit {proc.returncode}: " + " / ".join(tail)
        print(f"  export {quantize} failed: {errors[quantize]}", flush=True)
    raise RuntimeError(f"export of {name} failed: {errors}")


def measure_model(name, root, image, args):
    start = time.perf_counter()
    manifest, export_errors = export(name, root)
    tflite = manifest["tflite"]
    row = {"model": name, "export_s": time.perf_counter() - start,
           "saved_model_bytes": manifest["saved_model"]["bytes"],
           **{f"tflite_{tag}_bytes": tflite[tag]["bytes"] if tag in tflite
              else None for tag in ("float32", "dynamic", "int8")},
           "int8_float_layers": tflite.get("int8", {}).get("float_layers"),
           "export_errors": export_errors, "latency": {}, "errors": {}}
    model, forward = build(name)
    row["params"] = int(model.count_params())
    for path, call in latency_paths(forward, manifest, image,
                                    args.threads).items():
        try:
            row["latency"][path] = time_calls(call, args.repeats, args.warmup)
        except Exception as err:  # e.g. an op XLA cannot compile
            row["errors"][path] = f"{type(err).__name__}: {err}"[:500]
    for t in args.threads:
        if "int8" not in tflite:
            row["errors"][f"tflite_int8_t{t}"] = "no int8 file (see export)"
    return row


def measure_serving(name, root, image, args):
    import httpx

    from keras_attn.export import serve

    url, stop = serve.serve_in_thread(serve.create_app(
        serve.load_repository(os.path.join(root, name)), threads=4))
    path = f"/v1/models/{name}:predict"
    body = {"instances": [image[0].tolist()]}
    rows = []
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(5):  # warm-up (first signature call traces)
                http.post(path, json=body).raise_for_status()
        for clients in args.clients:
            barrier = threading.Barrier(clients)

            def client(_, barrier=barrier):
                times = []
                with httpx.Client(base_url=url, timeout=60) as http:
                    barrier.wait()
                    stop_at = time.perf_counter() + args.serve_seconds
                    while time.perf_counter() < stop_at:
                        start = time.perf_counter()
                        http.post(path, json=body).raise_for_status()
                        times.append(time.perf_counter() - start)
                return times

            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                per_client = list(pool.map(client, range(clients)))
            elapsed = time.perf_counter() - start
            times = [t for ts in per_client for t in ts]
            rows.append({"model": name, "clients": clients,
                         "requests": len(times), "seconds": elapsed,
                         "requests_per_s": len(times) / elapsed,
                         **percentiles(times)})
            r = rows[-1]
            print(f"| {name} | {clients} | {r['requests']} | "
                  f"{r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} |", flush=True)
    finally:
        stop()
    return rows


def _rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _limit_requests(name, serve):
    """`{scenario: (body bytes, description)}`: the largest requests the
    server's default limits admit for a 28x28x1 model, and the one that
    once took a server to 8 GB (now refused)."""
    side = SHAPE[0]
    rng = np.random.default_rng(0)
    floats = rng.random((serve.DEFAULT_MAX_BATCH, side, side, 1),
                        dtype=np.float32)

    import base64

    def png_b64(height, width):
        ramp = (np.arange(height * width, dtype=np.uint32) % 251).astype(
            np.uint8).reshape(height, width, 1)
        return base64.b64encode(tf.io.encode_png(ramp).numpy()).decode()

    big = int(serve.DEFAULT_MAX_IMAGE_PIXELS ** 0.5)
    per_image = serve.DEFAULT_MAX_REQUEST_PIXELS // serve.DEFAULT_MAX_BATCH
    small = int(per_image ** 0.5)
    largest_png = png_b64(big, big)
    batch_png = png_b64(small, small)
    body = {
        "max_batch_floats": {"instances": floats.tolist()},
        "max_pixels_two_images": {
            "signature_name": "serve_image_bytes",
            "instances": [{"b64": largest_png}] * (
                serve.DEFAULT_MAX_REQUEST_PIXELS
                // serve.DEFAULT_MAX_IMAGE_PIXELS)},
        "max_pixels_max_batch": {
            "signature_name": "serve_image_bytes",
            "instances": [{"b64": batch_png}] * serve.DEFAULT_MAX_BATCH},
        "refused_10000_zero_images": {
            "instances": np.zeros((10_000, side, side, 1), int).tolist()},
    }
    meta = {
        "max_batch_floats": f"{serve.DEFAULT_MAX_BATCH} float images",
        "max_pixels_two_images": f"2 PNGs of {big}x{big}",
        "max_pixels_max_batch":
            f"{serve.DEFAULT_MAX_BATCH} PNGs of {small}x{small}",
        "refused_10000_zero_images": "10,000 zero images (the old 8 GB "
                                     "request; now 413)",
    }
    return {key: (json.dumps(value, separators=(",", ":")).encode(),
                  meta[key]) for key, value in body.items()}


def measure_serve_limits(name, threads, out):
    """Peak RSS of `python -m export.serve` (default limits) under the
    largest requests it admits, and status-call latency meanwhile. Each
    run gets a fresh server, so memory an earlier request left to the
    allocator does not hide what this one needs."""
    from keras_attn.export import serve

    requests = _limit_requests(name, serve)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_serve_limits_") as root:
        model, _ = build(name)
        export_model(model, os.path.join(root, name), name=name,
                     to="saved_model", version=1,
                     parity=ParityOptions(images=0))
        for scenario, (body, what) in requests.items():
            for concurrent in (1, threads):
                if scenario.startswith("refused") and concurrent > 1:
                    continue
                process, url = _start_server(os.path.join(root, name), name)
                try:
                    _warm_up(url, name)
                    row = _limit_run(process.pid, url, name,
                                     f"/v1/models/{name}:predict", body,
                                     concurrent)
                    row["peak_rss_mb_since_start"] = _rss_kb(
                        process.pid, "VmHWM") / 1024
                finally:
                    process.terminate()
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                row.update(scenario=scenario, request=what,
                           body_bytes=len(body), concurrent=concurrent)
                results.append(row)
                print(f"| {scenario} | {concurrent} | "
                      f"{len(body) / 1e6:.1f} | {row['statuses']} | "
                      f"{row['seconds']:.1f} | "
                      f"{row['baseline_rss_mb']:.0f} | "
                      f"{row['peak_rss_mb']:.0f} | "
                      f"{row['answer_mb']:.2f} | "
                      f"{row['status_p50_ms']:.0f} / "
                      f"{row['status_max_ms']:.0f} |", flush=True)
    data = {"machine": machine(), "model": name, "server_threads": threads,
            "limits": {
                "max_body_bytes": serve.DEFAULT_MAX_BODY_BYTES,
                "max_batch": serve.DEFAULT_MAX_BATCH,
                "max_image_pixels": serve.DEFAULT_MAX_IMAGE_PIXELS,
                "max_request_pixels": serve.DEFAULT_MAX_REQUEST_PIXELS,
                "max_pending": serve.DEFAULT_PENDING_PER_THREAD * threads},
            "results": results}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(data, f, indent=2)
    print(f"wrote {out}")
    return data


def _warm_up(url, name):
    """One single-image request per signature: the first call of a
    signature builds its function (seconds, under the GIL), once per
    server; the measured requests then see a server in its steady state."""
    import base64

    import httpx

    image = np.zeros((1, *SHAPE), np.float32).tolist()
    png = base64.b64encode(tf.io.encode_png(
        np.zeros(SHAPE, np.uint8)).numpy()).decode()
    for body in ({"instances": image},
                 {"signature_name": "serve_image_bytes",
                  "instances": [{"b64": png}]}):
        httpx.post(f"{url}/v1/models/{name}:predict", json=body,
                   timeout=600).raise_for_status()


def _start_server(directory, name):
    """`python -m export.serve directory` on a free port, once it answers:
    `(process, url)`."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=_ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "export.serve", directory, "--port",
         str(port), "--log-level", "warning"], cwd=_ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("export.serve did not start")
        try:
            httpx.get(f"{url}/v1/models/{name}", timeout=5)
            return process, url
        except httpx.TransportError:
            time.sleep(0.5)


def _limit_run(pid, url, name, path, body, concurrent):
    """Sends `body` from `concurrent` clients at once; samples the server's
    RSS every 20 ms and times a status call every 50 ms meanwhile."""
    import httpx

    baseline = _rss_kb(pid)
    peak = [baseline]
    status_ms = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kb(pid))
            time.sleep(0.02)

    def status():
        with httpx.Client(base_url=url, timeout=600) as http:
            while not done.is_set():
                start = time.perf_counter()
                http.get(f"/v1/models/{name}").raise_for_status()
                status_ms.append(1e3 * (time.perf_counter() - start))
                time.sleep(0.05)

    def send(_):
        response = httpx.post(url + path, content=body, timeout=600)
        return response.status_code, len(response.content)

    watchers = [threading.Thread(target=sample),
                threading.Thread(target=status)]
    for watcher in watchers:
        watcher.start()
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(concurrent) as pool:
            answers = list(pool.map(send, range(concurrent)))
    finally:
        seconds = time.perf_counter() - start
        done.set()
        for watcher in watchers:
            watcher.join()
    peak[0] = max(peak[0], _rss_kb(pid))
    p50, p99 = np.percentile(status_ms or [float("nan")], [50, 99])
    return {"statuses": sorted({code for code, _ in answers}),
            "answer_mb": max(size for _, size in answers) / 1e6,
            "seconds": seconds, "baseline_rss_mb": baseline / 1024,
            "peak_rss_mb": peak[0] / 1024,
            "status_calls": len(status_ms), "status_p50_ms": float(p50),
            "status_p99_ms": float(p99),
            "status_max_ms": float(max(status_ms, default=float("nan")))}


def _table(header, rows):
    """Print a Markdown table; `rows` are lists of already formatted cells."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


def _kb(n_bytes):
    return "failed" if n_bytes is None else f"{n_bytes / 1e3:.0f}"


def _cell(row, path):
    r = row["latency"].get(path)
    return "error" if r is None else f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"


def machine():
    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "ai_edge_litert": version("ai-edge-litert"), "note": NOTE}


def _ints(text):
    return [int(v) for v in text.split(",")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                   choices=list(BUILDERS))
    p.add_argument("--repeats", type=int, default=200,
                   help="timed single-image calls per path")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=_ints, default=[1, 2],
                   help="TFLite interpreter threads, comma-separated")
    p.add_argument("--serve-models", nargs="*", default=["cbam_resnet"],
                   choices=list(BUILDERS),
                   help="models to serve over REST (must be in --models)")
    p.add_argument("--serve-seconds", type=float, default=10.0,
                   help="seconds of requests per client count")
    p.add_argument("--clients", type=_ints, default=[1, 4, 16],
                   help="concurrent REST clients, comma-separated")
    p.add_argument("--serve-limits", action="store_true",
                   help="instead: peak RSS of export.serve under the largest "
                        "requests its default limits admit, and status "
                        "latency meanwhile (first of --models; "
                        "benchmarks/results/serve_limits.json)")
    p.add_argument("--quick", action="store_true",
                   help="10 repeats, 3 warm-up calls, 1 s of serving per "
                        "client count")
    p.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "export.json"))
    args = p.parse_args(argv)
    if args.serve_limits:
        print("| scenario | clients | body MB | status | s | base RSS MB | "
              "peak RSS MB | answer MB | status call p50 / max ms |")
        print("|---|---:|---:|---|---:|---:|---:|---:|---:|", flush=True)
        from keras_attn.export.serve import DEFAULT_THREADS
        out = os.path.join(os.path.dirname(args.out), "serve_limits.json")
        return measure_serve_limits(args.models[0], DEFAULT_THREADS, out)
    if args.quick:
        args.repeats, args.warmup, args.serve_seconds = 10, 3, 1.0
    missing = set(args.serve_models) - set(args.models)
    if missing:
        p.error(f"--serve-models {sorted(missing)} not in --models")

    started = time.perf_counter()
    image, _ = load_images("fashion_mnist", "test", 1, SHAPE)
    results, serving = [], []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as root:
        for name in args.models:
            print(f"exporting and timing {name} ...", flush=True)
            results.append(measure_model(name, root, image, args))
        if args.serve_models:
            print("\nREST serving, one image per request")
            _table(["model", "clients", "requests", "req/s", "p50 ms",
                    "p99 ms"], [])
            for name in args.serve_models:
                serving += measure_serving(name, root, image, args)

    paths = ["keras", "xla", "saved_model", *(
        f"tflite_{tag}_t{t}" for tag in ("float32", "int8")
        for t in args.threads)]
    print(f"\nSizes and single-image latency, ms p50 / p99 of {args.repeats} "
          f"calls (batch 1). {NOTE}")
    _table(["model", "params", "SavedModel MB", "tflite f32 KB",
            "tflite dyn KB", "tflite int8 KB", *paths],
           [[r["model"], f"{r['params']:,}",
             f"{r['saved_model_bytes'] / 1e6:.2f}",
             *(_kb(r[f"tflite_{t}_bytes"])
               for t in ("float32", "dynamic", "int8")),
             *(_cell(r, p) for p in paths)] for r in results])
    for r in results:
        if r["int8_float_layers"]:
            print(f"{r['model']}: int8 file keeps float: "
                  f"{', '.join(map(str, r['int8_float_layers']))}")
        for quantize, err in r["export_errors"].items():
            print(f"{r['model']} export {quantize} failed: {err[:300]}")
        for path, err in r["errors"].items():
            print(f"{r['model']} {path} failed: {err[:200]}")

    data = {"machine": machine(), "quick": args.quick,
            "repeats": args.repeats, "warmup": args.warmup,
            "threads": args.threads, "serve_seconds": args.serve_seconds,
            "clients": args.clients, "results": results, "serving": serving,
            "runtime_s": time.perf_counter() - started}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(data, f, indent=2)
    print(f"wrote {args.out} ({data['runtime_s']:.0f} s)")


if __name__ == "__main__":
    main()
