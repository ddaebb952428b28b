"""Speed of the heavy attention layers against a 3x3 convolution.

`python -m benchmarks.layers --suite speed` runs this (it is a suite of the
layers benchmark; `python -m benchmarks.layer_speed` runs it alone). Each
case is timed in one process against a Keras `Conv2D` 3x3 on the same input
with the same output channels, the two taking turns call by call; the
ratios come from the fastest call of each (on a shared CPU the minimum is
the least noisy estimate of a function's own cost), medians are kept too.

- `sasa`: `LocalSelfAttention2D(64, 7, 8 heads)` on `(2, 56, 56, 64)`.
- `stem`: `AttentionStem(64, 4, 4 mixtures)` on the same input.
- `aa`: `AttentionAugmentedConv2D(64, 3, dk=40, dv=32, 8 heads)` on
  `(2, 32, 32, 64)`.
- `cbam_32`, `cbam_56`: conv3x3+BN+ReLU+`CBAM()` over the same block without
  CBAM, on `(32, 32, 32, 64)` and `(8, 56, 56, 256)` (here the ratio is the
  overhead, not a ratio to a bare conv).

Every case is timed under TensorFlow (`tf.function`, and with
`jit_compile=True`: XLA), forward and forward+backward (gradients of the
summed output with respect to the input and every weight), then under JAX
(`jax.jit` of the stateless call and of its `value_and_grad`, in a
subprocess with `KERAS_BACKEND=jax`). When `torch` and `timm` import, timm's
`HaloAttn` (block 8, halo 3: the same 7x7 neighbourhood), `BottleneckAttn`
and `CbamModule` are timed the same way against `torch.nn.Conv2d`, in
another subprocess; otherwise that part is skipped with a note. The figures
of the issue that asked for this work (same machine, before) are printed
beside the new ones.

    python -m benchmarks.layers --suite speed            # full
    python -m benchmarks.layers --suite speed --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# Issue 16's measurements on this machine before the work (TensorFlow,
# tf.function, minimum of 15 calls): ms and ratio to the conv or overhead.
BEFORE = {
    "sasa": {"forward_ms": 91.0, "forward_ratio": 22.0,
             "forward_backward_ms": 541.0, "forward_backward_ratio": 53.0},
    "aa": {"forward_ms": 92.0, "forward_ratio": 37.0,
           "forward_backward_ms": 283.0, "forward_backward_ratio": 61.0},
    "cbam_32": {"forward_ratio": 1.37, "forward_backward_ratio": 1.53},
}
TARGETS = {"sasa": (3.0, 6.0), "aa": (None, 20.0), "cbam_32": (None, 1.35),
           "cbam_56": (None, 1.10)}
CASES = ("sasa", "stem", "aa", "cbam_32", "cbam_56")


def _case(name):
    """`(shape, make_layer, make_baseline)`; the makers build Keras models
    on an input of `shape` (batch included)."""
    import keras

    from keras_attn import layers

    def block(x, channels):
        x = keras.layers.Conv2D(channels, 3, padding="same",
                                use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.ReLU()(x)

    def conv(shape, channels):
        return lambda x: keras.layers.Conv2D(channels, 3,
                                             padding="same")(x)

    if name == "sasa":
        shape = (2, 56, 56, 64)
        make = lambda x: layers.LocalSelfAttention2D(64, 7, 8)(x)  # noqa: E731
        return shape, make, conv(shape, 64)
    if name == "stem":
        shape = (2, 56, 56, 64)
        make = lambda x: layers.AttentionStem(64, 4, 4)(x)  # noqa: E731
        return shape, make, conv(shape, 64)
    if name == "aa":
        shape = (2, 32, 32, 64)
        make = lambda x: layers.AttentionAugmentedConv2D(  # noqa: E731
            64, 3, 40, 32, 8)(x)
        return shape, make, conv(shape, 64)
    shape = (32, 32, 32, 64) if name == "cbam_32" else (8, 56, 56, 256)
    return (shape, lambda x: layers.CBAM()(block(x, shape[-1])),
            lambda x: block(x, shape[-1]))


BLOCK_SWEEP = {3: (2, 3, 4, 6), 5: (2, 3, 4, 6), 7: (3, 4, 6, 8)}


def run_blocks(args):
    """The `sasa_blocks` suite: `LocalSelfAttention2D`'s forward+backward
    over a 3x3 conv's at `(2, 56, 56, 64)`, 8 heads, for each kernel size
    and block size, plain and XLA. `DEFAULT_BLOCK_SIZE` comes from here."""
    import keras
    import tensorflow as tf

    from keras_attn import layers

    repeats = getattr(args, "speed_repeats", None) or (
        3 if args.quick else 7)
    shape = (2, 56, 56, 64)
    keras.utils.set_random_seed(0)
    x = tf.random.normal(shape)
    conv = _model(lambda t: keras.layers.Conv2D(64, 3, padding="same")(t),
                  shape)
    print("\n| k | block | tf f / f+b (x conv) | xla f / f+b (x conv) |")
    print("|---:|---:|---:|---:|")
    results = []
    for k, blocks in BLOCK_SWEEP.items():
        for block in blocks:
            model = _model(lambda t, k=k, block=block:
                           layers.LocalSelfAttention2D(
                               64, k, 8, block_size=block)(t), shape)
            row = {"kernel_size": k, "block_size": block}
            for mode, jit in (("tf", False), ("xla", True)):
                a = _tensorflow_calls(model, x, jit)
                b = _tensorflow_calls(conv, x, jit)
                row[mode] = _pair({kind: (a[kind], b[kind]) for kind in a},
                                  repeats)
            results.append(row)
            print(f"| {k} | {block} | " + " | ".join(
                f"{row[m]['forward']['ratio']:.2f} / "
                f"{row[m]['forward_backward']['ratio']:.2f}"
                for m in ("tf", "xla")) + " |", flush=True)
    return {"repeats": repeats, "shape": list(shape), "results": results}


def _model(make, shape):
    import keras

    inputs = keras.Input(shape[1:], batch_size=shape[0])
    return keras.Model(inputs, make(inputs))


def _alternate(calls, repeats):
    """Seconds of each zero-argument call, taking turns, after warm-up."""
    for call in calls:
        call()
        call()
    times = [[] for _ in calls]
    for _ in range(repeats):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[i].append(time.perf_counter() - start)
    return times


def _summary(times):
    ms = sorted(1e3 * t for t in times)
    return {"min_ms": ms[0], "median_ms": ms[len(ms) // 2]}


def _pair(fns, repeats):
    """`{kind: {...}}` for `fns = {kind: (layer_call, baseline_call)}`."""
    out = {}
    for kind, (ours, base) in fns.items():
        t_ours, t_base = _alternate([ours, base], repeats)
        a, b = _summary(t_ours), _summary(t_base)
        out[kind] = {"ms": a["min_ms"], "median_ms": a["median_ms"],
                     "baseline_ms": b["min_ms"],
                     "baseline_median_ms": b["median_ms"],
                     "ratio": a["min_ms"] / b["min_ms"]}
    return out


def _tensorflow_calls(model, x, jit):
    import numpy as np
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False),
                          jit_compile=jit)

    @tf.function(jit_compile=jit)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32"))
        return tape.gradient(loss, [x, *model.trainable_variables])

    def ready(fn):
        return lambda: np.asarray(tf.nest.flatten(fn(x))[0])

    return {"forward": ready(forward),
            "forward_backward": ready(forward_backward)}


def run_tensorflow(cases, repeats):
    import keras
    import tensorflow as tf

    results = {}
    for name in cases:
        shape, make, make_base = _case(name)
        keras.utils.set_random_seed(0)
        x = tf.random.normal(shape)
        ours, base = _model(make, shape), _model(make_base, shape)
        results[name] = {"shape": list(shape)}
        for mode, jit in (("tf", False), ("xla", True)):
            a = _tensorflow_calls(ours, x, jit)
            b = _tensorflow_calls(base, x, jit)
            results[name][mode] = _pair(
                {kind: (a[kind], b[kind]) for kind in a}, repeats)
            _print_row(name, mode, results[name][mode])
    return results


def run_jax(cases, repeats):
    """The same cases under `jax.jit` (call in a `KERAS_BACKEND=jax`
    process)."""
    import jax
    import keras
    import numpy as np

    results = {}
    for name in cases:
        shape, make, make_base = _case(name)
        keras.utils.set_random_seed(0)
        x = jax.numpy.asarray(np.random.default_rng(0).standard_normal(
            shape).astype("float32"))
        calls = []
        for model in (_model(make, shape), _model(make_base, shape)):
            trainable = [v.value for v in model.trainable_variables]
            other = [v.value for v in model.non_trainable_variables]

            def loss(trainable, other, x, model=model):
                y, _ = model.stateless_call(trainable, other, x,
                                            training=True)
                return jax.numpy.sum(y.astype("float32"))

            def forward(trainable, other, x, model=model):
                return model.stateless_call(trainable, other, x)[0]

            fwd = jax.jit(forward)
            fb = jax.jit(jax.value_and_grad(loss, argnums=(0, 2)))
            calls.append({
                "forward": lambda fwd=fwd, t=trainable, o=other, x=x: (
                    fwd(t, o, x).block_until_ready()),
                "forward_backward": lambda fb=fb, t=trainable, o=other, x=x: (
                    jax.block_until_ready(fb(t, o, x))),
            })
        results[name] = {"jax": _pair(
            {kind: (calls[0][kind], calls[1][kind]) for kind in calls[0]},
            repeats)}
    return results


def run_timm(repeats):
    """timm's counterparts against `torch.nn.Conv2d` (torch and timm
    must import)."""
    import torch
    from timm.layers import BottleneckAttn
    from timm.layers import CbamModule
    from timm.layers import HaloAttn

    torch.manual_seed(0)

    def block(channels):
        return torch.nn.Sequential(
            torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(channels), torch.nn.ReLU())

    cases = {
        "sasa": ((2, 64, 56, 56),
                 HaloAttn(64, 64, num_heads=8, block_size=8, halo_size=3),
                 torch.nn.Conv2d(64, 64, 3, padding=1)),
        "aa": ((2, 64, 32, 32),
               BottleneckAttn(64, 64, feat_size=(32, 32), num_heads=8),
               torch.nn.Conv2d(64, 64, 3, padding=1)),
    }
    for name, shape in (("cbam_32", (32, 64, 32, 32)),
                        ("cbam_56", (8, 256, 56, 56))):
        cases[name] = (shape,
                       torch.nn.Sequential(block(shape[1]),
                                           CbamModule(shape[1])),
                       block(shape[1]))
    results = {}
    for name, (shape, ours, base) in cases.items():
        x = torch.randn(shape)
        calls = []
        for module in (ours, base):
            def forward(module=module, x=x):
                with torch.no_grad():
                    module(x)

            def forward_backward(module=module, x=x):
                xg = x.clone().requires_grad_(True)
                module(xg).sum().backward()

            calls.append({"forward": forward,
                          "forward_backward": forward_backward})
        results[name] = {"timm": _pair(
            {kind: (calls[0][kind], calls[1][kind]) for kind in calls[0]},
            repeats)}
    return results


def _print_row(name, mode, row):
    cells = []
    for kind in ("forward", "forward_backward"):
        r = row[kind]
        cells.append(f"{r['ms']:.1f} ms ({r['ratio']:.2f}x)")
    print(f"| {name} | {mode} | " + " | ".join(cells) + " |", flush=True)


def _worker(flag, cases, repeats, env_backend):
    """Run this module as a subprocess with `flag`; its JSON, or a note."""
    env = dict(os.environ, KERAS_BACKEND=env_backend)
    cmd = [sys.executable, "-m", "benchmarks.layer_speed", flag,
           "--repeats", str(repeats), "--cases", *cases]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return {"skipped": f"{flag} failed: {' '.join(tail)}"}
    return json.loads(lines[-1])


def _merge(into, more):
    for name, modes in more.items():
        if isinstance(modes, dict):
            into.setdefault(name, {}).update(modes)


def run(args):
    """The `speed` suite of `benchmarks.layers`."""
    cases = list(getattr(args, "cases", None) or CASES)
    repeats = getattr(args, "speed_repeats", None) or (
        5 if args.quick else 15)
    print("\n| case | backend | forward (x conv) | forward+backward (x conv) |")
    print("|---|---|---:|---:|")
    results = run_tensorflow(cases, repeats)
    jax_part = _worker("--jax-worker", cases, repeats, "jax")
    timm_part = _worker("--timm-worker", cases, repeats, "torch")
    notes = {}
    for label, part in (("jax", jax_part), ("timm", timm_part)):
        if "skipped" in part:
            notes[label] = part["skipped"]
            print(f"{label}: skipped ({part['skipped']})")
        else:
            _merge(results, part)
            for name, modes in part.items():
                _print_row(name, label, modes[label])
    _report(results)
    return {"repeats": repeats, "before": BEFORE, "targets": TARGETS,
            "notes": notes, "results": results}


def _report(results):
    """The targets beside the old figures and the best setting."""
    print("\n| case | target f / f+b | before f / f+b | now, best "
          "TensorFlow setting f / f+b | JAX jit f / f+b | timm f / f+b |")
    print("|---|---:|---:|---:|---:|---:|")

    def pair(row):
        if not row:
            return "-"
        return (f"{row['forward']['ratio']:.2f} / "
                f"{row['forward_backward']['ratio']:.2f}")

    for name, row in results.items():
        if "tf" not in row:
            continue
        best = min(("tf", "xla"),
                   key=lambda m: row[m]["forward_backward"]["ms"])
        target = TARGETS.get(name, (None, None))
        before = BEFORE.get(name, {})
        print(f"| {name} | "
              f"{target[0] or '-'} / {target[1] or '-'} | "
              f"{before.get('forward_ratio', '-')} / "
              f"{before.get('forward_backward_ratio', '-')} | "
              f"{pair(row[best])} ({best}) | {pair(row.get('jax'))} | "
              f"{pair(row.get('timm'))} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None,
                   dest="speed_repeats")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--jax-worker", action="store_true",
                   help=argparse.SUPPRESS)
    p.add_argument("--timm-worker", action="store_true",
                   help=argparse.SUPPRESS)
    p.add_argument("--out", default=None,
                   help="write the JSON here (benchmarks.layers --suite "
                        "speed writes it into results/layers.json)")
    args = p.parse_args(argv)
    repeats = args.speed_repeats or (5 if args.quick else 15)
    if args.jax_worker:
        print(json.dumps(run_jax(args.cases, repeats)))
        return
    if args.timm_worker:
        print(json.dumps(run_timm(repeats)))
        return
    out = run(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
