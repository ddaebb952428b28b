"""Peak host memory of a computation, each case in a fresh subprocess.

TensorFlow keeps no allocator statistics for the CPU
(`tf.config.experimental.get_memory_info("CPU:0")` raises "Allocator stats
not available"), so the peak is read from the kernel instead:

1. A fresh `python -m benchmarks._memory SPEC` process imports the case
   factory named in `SPEC`, which builds the model and its inputs and returns
   `{name: fn}` of zero-argument callables (an XLA-free `tf.function` call
   that returns when its result is ready).
2. Each `fn` runs twice first (tracing, warm-up, one-off allocations).
3. Then, per repeat: the process' peak resident set size is reset by writing
   `5` to `/proc/self/clear_refs` (Linux >= 4.0), the current RSS is read
   from `/proc/self/statm`, `fn` runs once, and the peak is read back
   (`VmHWM` in `/proc/self/status`, the value `getrusage`'s `ru_maxrss`
   reports). Peak = high-water mark - RSS before: the extra memory the one
   call needed at its worst moment, inputs and weights excluded.

Resetting the high-water mark is what lets the warm-up run at full size:
`ru_maxrss` alone would still hold the warm-up's peak. glibc's malloc would
keep freed blocks for reuse (and raise its mmap threshold after big frees),
which hides a call's allocations from the RSS; the child runs with
`MALLOC_MMAP_THRESHOLD_=65536` and `MALLOC_TRIM_THRESHOLD_=0`, so every
tensor above 64 KiB is its own mapping, returned to the kernel when freed.
The figures therefore count tensors of 64 KiB and more exactly (plus the
page rounding and a few MiB of allocator, oneDNN scratch and thread noise);
a 64 MiB matmul output measures 74 MiB.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TAG = "PEAK_MEMORY_RESULT "

ENV = {
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "0",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def _rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_KIB


def _hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_bytes(fn, repeats=2, warmup=2):
    """Peaks (bytes) of `repeats` calls of `fn`, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    peaks = []
    for _ in range(repeats):
        gc.collect()
        _reset_peak()
        before = _rss_kib()
        fn()
        peaks.append(1024 * (_hwm_kib() - before))
    return peaks


def measure(target, kwargs, repeats=2, timeout=1200):
    """Run `target(**kwargs)` (`"module:function"` returning `{name: fn}`)
    in a fresh process; returns `{name: [peak bytes per repeat]}`."""
    spec = json.dumps({"target": target, "kwargs": kwargs,
                       "repeats": repeats})
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks._memory", spec],
        cwd=_ROOT,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(_TAG):
            return json.loads(line[len(_TAG):])
    raise RuntimeError(
        f"memory worker for {target}({kwargs}) failed "
        f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    )


def _worker(spec):
    spec = json.loads(spec)
    module, name = spec["target"].split(":")
    fns = getattr(importlib.import_module(module), name)(**spec["kwargs"])
    result = {key: peak_bytes(fn, spec["repeats"]) for key, fn in fns.items()}
    print(_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1])
