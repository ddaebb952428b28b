"""Speed, size and FLOPs of every attention layer, against the same block
without attention.

Each case is a block `x -> conv3x3 -> BN -> ReLU -> [attention]` (for the
residual attention module: its trunk of pre-activation units; for LTPA: the
attention pooling versus plain global average pooling). The overhead ratio is
time(block with attention) / time(block without), from the fastest of the
repeats; `+params` / `+MFLOPs` are what the attention adds to the block.
The printed timings are medians of `--repeats` calls of an XLA-free
`tf.function` (TensorFlow backend) after warm-up, with the two blocks timed
in alternation; FLOPs come from
TensorFlow's graph profiler (ops it knows only).

Further suites (`--suite`, default `all`; each prints a Markdown table):

- `layers`: the table above.
- `aa_memory`: peak memory of `AttentionAugmentedConv2D` (batch 1, 64 -> 64
  channels, dk=40, dv=32, Nh=8) for H=W in 8, 16, 32, 64, forward and
  forward+backward, `relative=True` and `False`; their difference is what
  the relative logits cost. Printed next to analytic float32 sizes: the
  `(HW)^2` logits, the side tensors `relative_logits_1d` builds
  (`O(B Nh H W^2)`), and the `(HW)^2 x dk` embedding tensor a naive
  implementation would materialise.
- `sasa`: `LocalSelfAttention2D` (k=7, 8 heads, relative) on
  `(2, 56, 56, 64)` against `NaiveLocalSelfAttention` (the same math on
  unfolded `(B, H, W, k*k*C)` keys and values): peak memory and time,
  forward and forward+backward.
- `speed`: `benchmarks/layer_speed.py`: SASA, the attention stem, AA and
  CBAM against a 3x3 conv under TensorFlow (plain and XLA), JAX `jit` and,
  when importable, timm's counterparts.
- `sasa_blocks`: `LocalSelfAttention2D` at each block size for k = 3, 5, 7
  (where its `DEFAULT_BLOCK_SIZE` comes from).
- `sampler`: images/s of `affine_grid` + `bilinear_sample` against
  `keras.ops.image.map_coordinates` (order 1), 32 60x60x1 images to 28x28.

Peak memory is measured in a fresh subprocess per case, as the rise of the
resident set size over one call after warm-up (see `benchmarks/_memory.py`
for the method and its resolution). Timings alternate the compared
functions and report min and median.

    python -m benchmarks.layers                 # every suite
    python -m benchmarks.layers --quick         # small shapes, few repeats
    python -m benchmarks.layers --suite sasa    # one suite

Writes `benchmarks/results/layers.json` (override with `--out`); each suite
replaces its own key there (`layers`: the top-level `repeats` / `results`)
and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

tf.get_logger().setLevel("ERROR")  # the FLOPs profiler's v1 deprecations

from benchmarks import _memory  # noqa: E402
from benchmarks import layer_speed  # noqa: E402
from keras_attn import layers  # noqa: E402
from keras_attn import ops as ops_lib  # noqa: E402

SHAPES = {"32x32x64": (32, 32, 32, 64), "56x56x256": (8, 56, 56, 256)}


def conv_block(x, channels):
    x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def residual_trunk(x, channels, units):
    for _ in range(units):
        x = layers.PreActBottleneck(channels)(x)
    return x


def cases(channels):
    """`{name: (build_with, build_without)}`, each `build(x) -> y`."""
    def block_then(make):
        return lambda x: make()(conv_block(x, channels))

    plain = lambda x: conv_block(x, channels)  # noqa: E731

    def ltpa(x):
        feats = conv_block(x, channels)
        g = keras.layers.GlobalAveragePooling2D()(feats)
        g = keras.layers.Dense(channels)(g)
        return layers.LTPAAttention("pc")([feats, g])[0]

    def ltpa_baseline(x):
        feats = conv_block(x, channels)
        g = keras.layers.GlobalAveragePooling2D()(feats)
        return keras.layers.Dense(channels)(g)

    return {
        "SqueezeExcite": (block_then(lambda: layers.SqueezeExcite()), plain),
        "ChannelAttention": (block_then(layers.ChannelAttention), plain),
        "SpatialAttention": (block_then(layers.SpatialAttention), plain),
        "CBAM": (block_then(layers.CBAM), plain),
        "ResidualAttentionModule": (
            lambda x: layers.ResidualAttentionModule(channels)(x),
            # the module is p + t + p = 4 trunk units plus the mask branch
            lambda x: residual_trunk(x, channels, 4),
        ),
        "LTPAAttention": (ltpa, ltpa_baseline),
    }


def _model(build, shape):
    inputs = keras.Input(shape[1:], batch_size=shape[0])
    return keras.Model(inputs, build(inputs))


def _seconds(fn, x):
    start = time.perf_counter()
    out = fn(x)
    np.asarray(tf.nest.flatten(out)[0])  # wait for the result
    return time.perf_counter() - start


def _flops(model, shape):
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tensorflow.python.profiler import model_analyzer
    from tensorflow.python.profiler import option_builder

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, "float32"))
    graph = convert_variables_to_constants_v2(concrete).graph
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return int(model_analyzer.profile(graph, options=opts).total_float_ops)


def _functions(build, shape):
    model = _model(build, shape)
    forward = tf.function(lambda x: model(x, training=False))

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            y = model(x, training=True)
            loss = tf.reduce_mean(tf.square(tf.cast(y, "float32")))
        return tape.gradient(loss, model.trainable_variables)

    return model, {"forward": forward, "forward_backward": train_step}


def measure_pair(build_with, build_without, shape, repeats):
    """Time both blocks in alternation, so drift in the machine's speed
    (other processes, thermal state) hits both sides alike."""
    x = tf.random.normal(shape)
    pair = [_functions(build_with, shape), _functions(build_without, shape)]
    results = []
    for model, fns in pair:
        for fn in fns.values():
            for _ in range(2):
                _seconds(fn, x)  # trace and warm up
        results.append({"params": int(model.count_params()),
                        "flops": _flops(model, shape)})
    for kind in ("forward", "forward_backward"):
        times = [[], []]
        for _ in range(repeats):
            for i, (_, fns) in enumerate(pair):
                times[i].append(_seconds(fns[kind], x))
        for i in range(2):
            results[i][f"{kind}_ms"] = 1e3 * statistics.median(times[i])
            results[i][f"{kind}_min_ms"] = 1e3 * min(times[i])
    return results


def _runner(fn, *args):
    """Zero-argument call of `fn(*args)` that returns once the result is
    ready (what `_memory.measure` runs)."""
    def call():
        np.asarray(tf.nest.flatten(fn(*args))[0])
    return call


def _alternate(fns, repeats, inner=1):
    """Seconds per call of each zero-argument `fn`, `repeats` samples of
    `inner` calls each, the functions taking turns sample by sample."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[i].append((time.perf_counter() - start) / inner)
    return times


def _mib(n_bytes):
    return n_bytes / 2**20


def _table(header, rows):
    """Print a Markdown table; `rows` are lists of already formatted cells."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


# --- Attention Augmented conv: peak memory versus the attention grid size ---

AA_CONFIG = {"batch": 1, "channels": 64, "filters": 64, "kernel_size": 3,
             "key_depth": 40, "value_depth": 32, "num_heads": 8}
AA_SIZES = (8, 16, 32, 64)


def aa_case(size, relative, batch, channels, filters, kernel_size,
            key_depth, value_depth, num_heads):
    """Memory-worker factory: forward / forward+backward of one AA conv."""
    keras.utils.set_random_seed(0)
    shape = (batch, size, size, channels)

    def build(x):
        return layers.AttentionAugmentedConv2D(
            filters, kernel_size, key_depth, value_depth, num_heads,
            relative=relative,
        )(x)

    _, fns = _functions(build, shape)
    x = tf.random.normal(shape)
    return {name: _runner(fn, x) for name, fn in fns.items()}


def aa_analytic(size, batch, key_depth, num_heads, **_):
    """float32 bytes of the tensors that matter, for an `n x n` grid.

    `relative_logits_1d` builds, per axis, for `N = B * Nh * n` rows: the
    einsum output `(N, n, 2n-1)`, its padded copy `(N, n, 2n)`, the flat
    padded `(N, (n+1)(2n-1))` and the sliced `(N, n, n)`; `side_total` sums
    these for both axes (not all alive at once), `side_largest` is the
    biggest single one. All are `O(B Nh n^3) = O(HW * W)`.
    """
    n, f = size, 4
    rows = batch * num_heads * n
    per_axis = [n * (2 * n - 1), 2 * n * n, (n + 1) * (2 * n - 1), n * n]
    return {
        "logits_bytes": f * batch * num_heads * (n * n) ** 2,
        "side_largest_bytes": f * rows * max(per_axis),
        "side_total_bytes": f * 2 * rows * sum(per_axis),
        # r_{j-i} for every (query, key) pair, dk channels: (HW)^2 x dk.
        "naive_embedding_bytes": f * (n * n) ** 2 * key_depth,
    }


def run_aa_memory(args):
    sizes = AA_SIZES[:2] if args.quick else AA_SIZES
    config = dict(AA_CONFIG)
    rows = []
    for size in sizes:
        row = {"size": size, **aa_analytic(size, **config)}
        for relative in (False, True):
            peaks = _memory.measure(
                "benchmarks.layers:aa_case",
                {"size": size, "relative": relative, **config},
                repeats=args.memory_repeats,
            )
            tag = "relative" if relative else "plain"
            for kind, values in peaks.items():
                row[f"{kind}_{tag}_peak_bytes"] = min(values)
                row[f"{kind}_{tag}_peak_all_bytes"] = values
        for kind in ("forward", "forward_backward"):
            row[f"{kind}_extra_bytes"] = (
                row[f"{kind}_relative_peak_bytes"]
                - row[f"{kind}_plain_peak_bytes"]
            )
        rows.append(row)
    # Growth of the extra per 4x HW, where both extras are well above the
    # ~1 MiB resolution of the measurement (below it the ratio is noise).
    for prev, row in zip(rows, rows[1:], strict=False):
        for kind in ("forward", "forward_backward"):
            if min(prev[f"{kind}_extra_bytes"],
                   row[f"{kind}_extra_bytes"]) > 2 * 2**20:
                row[f"{kind}_extra_growth"] = (
                    row[f"{kind}_extra_bytes"] / prev[f"{kind}_extra_bytes"]
                )

    def growth(row, kind):
        value = row.get(f"{kind}_extra_growth")
        return "" if value is None else f"x{value:.1f}"

    print(f"\nAttentionAugmentedConv2D peak memory (MiB), batch "
          f"{config['batch']}, {config['channels']} -> {config['filters']} "
          f"channels, dk={config['key_depth']}, dv={config['value_depth']}, "
          f"Nh={config['num_heads']}, k={config['kernel_size']}")
    _table(
        ["H=W", "HW", "(HW)^2 logits", "rel side largest", "rel side total",
         "naive (HW)^2 x dk", "fwd plain", "fwd rel", "fwd extra",
         "extra growth", "f+b plain", "f+b rel", "f+b extra",
         "extra growth"],
        [[r["size"], r["size"] ** 2,
          f"{_mib(r['logits_bytes']):.2f}",
          f"{_mib(r['side_largest_bytes']):.2f}",
          f"{_mib(r['side_total_bytes']):.2f}",
          f"{_mib(r['naive_embedding_bytes']):.1f}",
          f"{_mib(r['forward_plain_peak_bytes']):.1f}",
          f"{_mib(r['forward_relative_peak_bytes']):.1f}",
          f"{_mib(r['forward_extra_bytes']):.1f}",
          growth(r, "forward"),
          f"{_mib(r['forward_backward_plain_peak_bytes']):.1f}",
          f"{_mib(r['forward_backward_relative_peak_bytes']):.1f}",
          f"{_mib(r['forward_backward_extra_bytes']):.1f}",
          growth(r, "forward_backward")] for r in rows],
    )
    return {"config": config, "memory_repeats": args.memory_repeats,
            "results": rows}


# --- Local self-attention (SASA) versus a naive extract_patches version ---


class NaiveLocalSelfAttention(keras.layers.Layer):
    """The SASA math written the obvious way, as a reference cost.

    `k` and `v` are unfolded with `keras.ops.image.extract_patches` into
    `(B, H, W, k*k*C)` (zero padding, no mask), the relative embedding
    `concat(rel_rows[a], rel_cols[b])` is added to every key, logits
    `q . (k + r)` are summed per head, softmaxed over the window and weight
    the unfolded values. Same weights as `LocalSelfAttention2D` (minus its
    border mask), its own variables. Keras' `extract_patches` is a dense
    conv with a `(k*k*C, k*k*C)` identity kernel (37.5 MiB and
    `(k*k*C)^2` MACs per pixel at C=64, k=7); `unfold="tf"` uses
    TensorFlow's gather kernel `tf.image.extract_patches` instead.
    """

    def __init__(self, filters, kernel_size, num_heads, unfold="keras",
                 **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = filters, kernel_size
        self.num_heads = num_heads
        self.unfold = unfold

    def build(self, input_shape):
        for role in ("query", "key", "value"):
            conv = keras.layers.Conv2D(self.filters, 1, use_bias=False,
                                       name=role)
            conv.build(input_shape)
            setattr(self, role, conv)
        half = (self.kernel_size, self.filters // 2)
        self.rel_rows = self.add_weight(shape=half, name="rel_rows")
        self.rel_cols = self.add_weight(shape=half, name="rel_cols")

    def call(self, x):
        k, heads = self.kernel_size, self.num_heads
        depth = self.filters // heads
        batch, height, width = ops.shape(x)[:3]

        def unfold(t):  # patch channels are ordered (row, column, channel)
            if self.unfold == "keras":
                patches = ops.image.extract_patches(t, k, strides=1,
                                                    padding="same")
            else:
                patches = tf.image.extract_patches(
                    t, [1, k, k, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
            return ops.reshape(patches,
                               (batch, height, width, k * k, heads, depth))

        q = ops.reshape(self.query(x), (batch, height, width, heads, depth))
        rel = ops.concatenate([ops.repeat(self.rel_rows, k, axis=0),
                               ops.tile(self.rel_cols, (k, 1))], axis=-1)
        keys = unfold(self.key(x)) + ops.reshape(rel, (k * k, heads, depth))
        logits = ops.einsum("bhwnd,bhwknd->bhwnk", q, keys)
        weights = ops.softmax(logits, axis=-1)
        values = unfold(self.value(x))
        out = ops.einsum("bhwnk,bhwknd->bhwnd", weights, values)
        return ops.reshape(out, (batch, height, width, self.filters))


SASA_CONFIG = {"batch": 2, "size": 56, "channels": 64, "filters": 64,
               "kernel_size": 7, "num_heads": 8}
SASA_QUICK = {**SASA_CONFIG, "batch": 1, "size": 16}


def _sasa_build(impl, filters, kernel_size, num_heads):
    def build(x):
        if impl == "ours":
            layer = layers.LocalSelfAttention2D(
                filters, kernel_size=kernel_size, num_heads=num_heads,
                relative=True)
        else:  # "naive" (keras.ops.image.extract_patches), "naive_tf"
            layer = NaiveLocalSelfAttention(
                filters, kernel_size, num_heads,
                unfold="tf" if impl == "naive_tf" else "keras")
        return layer(x)
    return build


def sasa_case(impl, batch, size, channels, filters, kernel_size, num_heads):
    """Memory-worker factory: forward / forward+backward of one SASA layer."""
    keras.utils.set_random_seed(0)
    shape = (batch, size, size, channels)
    _, fns = _functions(_sasa_build(impl, filters, kernel_size, num_heads),
                        shape)
    x = tf.random.normal(shape)
    return {name: _runner(fn, x) for name, fn in fns.items()}


def run_sasa(args):
    config = SASA_QUICK if args.quick else SASA_CONFIG
    impls = ("ours", "naive", "naive_tf")
    result = {impl: {} for impl in impls}
    for impl in impls:
        peaks = _memory.measure("benchmarks.layers:sasa_case",
                                {"impl": impl, **config},
                                repeats=args.memory_repeats)
        for kind, values in peaks.items():
            result[impl][f"{kind}_peak_bytes"] = min(values)
            result[impl][f"{kind}_peak_all_bytes"] = values

    keras.utils.set_random_seed(0)
    shape = (config["batch"], config["size"], config["size"],
             config["channels"])
    x = tf.random.normal(shape)
    builds = {impl: _sasa_build(impl, config["filters"],
                                config["kernel_size"], config["num_heads"])
              for impl in impls}
    fns = {impl: _functions(builds[impl], shape)[1] for impl in impls}
    for kind in ("forward", "forward_backward"):
        calls = [_runner(fns[impl][kind], x) for impl in impls]
        for call in calls:
            call()
            call()
        times = _alternate(calls, args.sasa_repeats)
        for impl, values in zip(impls, times, strict=True):
            result[impl][f"{kind}_ms"] = 1e3 * statistics.median(values)
            result[impl][f"{kind}_min_ms"] = 1e3 * min(values)
    ours = result["ours"]
    keys = ("forward_peak_bytes", "forward_backward_peak_bytes",
            "forward_min_ms", "forward_backward_min_ms")
    for impl in impls[1:]:
        result[f"ours_over_{impl}"] = {
            key: ours[key] / result[impl][key] for key in keys}

    print(f"\nLocalSelfAttention2D vs naive extract_patches, input "
          f"({config['batch']}, {config['size']}, {config['size']}, "
          f"{config['channels']}), filters={config['filters']}, "
          f"k={config['kernel_size']}, heads={config['num_heads']}, "
          f"relative=True")

    def cells(name, r, fmt_mem, fmt_ms):
        return [name,
                fmt_mem(r["forward_peak_bytes"]),
                fmt_mem(r["forward_backward_peak_bytes"]),
                fmt_ms(r, "forward"), fmt_ms(r, "forward_backward")]

    def mem(value):
        return f"{_mib(value):.0f}"

    def ms(r, kind):
        return (f"{r[kind + '_min_ms']:.0f} / {r[kind + '_ms']:.0f}")

    _table(
        ["", "fwd peak MiB", "f+b peak MiB", "fwd ms (min / median)",
         "f+b ms (min / median)"],
        [cells(impl, result[impl], mem, ms) for impl in impls]
        + [[f"ours / {impl}", *(
            f"{result[f'ours_over_{impl}'][key]:.2f}" for key in keys)]
           for impl in impls[1:]],
    )
    print("naive: keras.ops.image.extract_patches; naive_tf: "
          "tf.image.extract_patches; time ratios from the min times")
    return {"config": config, "memory_repeats": args.memory_repeats,
            "timing_repeats": args.sasa_repeats, "results": result}


# --- Bilinear sampler throughput versus keras.ops.image.map_coordinates ---

SAMPLER_CONFIG = {"batch": 32, "in_size": 60, "out_size": 28}


def _sampler_functions(batch, in_size, out_size):
    """`{impl: {"forward": f, "forward_backward": g}}`, each `f(images,
    theta)`; the grid comes from `affine_grid` in both, so only the
    sampling differs."""
    scale = 0.5 * (in_size - 1)

    def ours(images, theta):
        grid = ops_lib.affine_grid(theta, out_size, out_size)
        return ops_lib.bilinear_sample(images, grid, padding="zeros")

    def map_coordinates(images, theta):
        grid = ops_lib.affine_grid(theta, out_size, out_size)
        # One call for the whole batch: the (B, H, W) stack is sampled at
        # (b, row, col) with an exact integer b, so order=1 never mixes
        # images; pixel units, zeros outside ("constant").
        b = tf.broadcast_to(
            tf.cast(tf.range(batch), "float32")[:, None, None],
            (batch, out_size, out_size))
        coords = tf.stack([b, (grid[..., 1] + 1.0) * scale,
                           (grid[..., 0] + 1.0) * scale])
        out = ops.image.map_coordinates(images[..., 0], coords, order=1,
                                        fill_mode="constant")
        return out[..., None]

    def with_grads(sample):
        @tf.function
        def step(images, theta):
            with tf.GradientTape() as tape:
                tape.watch([images, theta])
                loss = tf.reduce_sum(tf.square(sample(images, theta)))
            return tape.gradient(loss, [images, theta])
        return step

    return {name: {"forward": tf.function(fn),
                   "forward_backward": with_grads(fn)}
            for name, fn in (("ours", ours),
                             ("map_coordinates", map_coordinates))}


def run_sampler(args):
    config = SAMPLER_CONFIG
    batch, in_size = config["batch"], config["in_size"]
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((batch, in_size, in_size, 1)), "float32")
    theta = np.tile([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], (batch, 1))
    theta = tf.constant(theta + 0.2 * rng.standard_normal((batch, 6)),
                        "float32")
    fns = _sampler_functions(**config)
    impls = list(fns)
    result = {impl: {} for impl in impls}
    # Do the two agree, and which gradients exist?
    outs = {impl: fns[impl]["forward"](images, theta) for impl in impls}
    result["max_abs_difference"] = float(tf.reduce_max(
        tf.abs(outs["ours"] - outs["map_coordinates"])))
    for impl in impls:
        grads = fns[impl]["forward_backward"](images, theta)
        result[impl]["grad_images"] = grads[0] is not None
        result[impl]["grad_theta"] = (
            grads[1] is not None
            and bool(tf.reduce_any(tf.not_equal(grads[1], 0.0))))
    repeats, inner = (3, 5) if args.quick else (args.sampler_repeats, 20)
    for kind in ("forward", "forward_backward"):
        calls = [_runner(fns[impl][kind], images, theta) for impl in impls]
        for call in calls:
            call()
            call()
        times = _alternate(calls, repeats, inner)
        for impl, values in zip(impls, times, strict=True):
            result[impl][f"{kind}_images_per_s"] = batch / statistics.median(
                values)
            result[impl][f"{kind}_best_images_per_s"] = batch / min(values)

    print(f"\nBilinear sampling of {batch} {in_size}x{in_size}x1 images to "
          f"{config['out_size']}x{config['out_size']} (random affine theta), "
          f"images/s (best / median); max |ours - map_coordinates| = "
          f"{result['max_abs_difference']:.2e}")

    def rate(r, kind):
        return (f"{r[kind + '_best_images_per_s']:.0f} / "
                f"{r[kind + '_images_per_s']:.0f}")

    _table(
        ["", "forward", "forward+backward", "grad images", "grad theta"],
        [[impl, rate(result[impl], "forward"),
          rate(result[impl], "forward_backward"),
          "yes" if result[impl]["grad_images"] else "no",
          "yes" if result[impl]["grad_theta"] else "no"]
         for impl in impls],
    )
    return {"config": config, "repeats": repeats, "calls_per_repeat": inner,
            "results": result}


def run_layers(args):
    results = []
    header = (f"{'layer':<24}{'shape':>11}{'fwd ms':>9}{'f+b ms':>9}"
              f"{'+params':>9}{'+MFLOPs':>9}{'fwd x':>7}{'f+b x':>7}")
    print(header)
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        for name, (with_attn, without) in cases(shape[-1]).items():
            keras.utils.set_random_seed(0)
            a, b = measure_pair(with_attn, without, shape, args.repeats)
            row = {
                "layer": name,
                "batch": shape[0],
                "shape": shape_name,
                **a,
                "attention_params": a["params"] - b["params"],
                "attention_flops": a["flops"] - b["flops"],
                "baseline": b,
                # Ratios of the fastest runs: on a shared CPU the minimum is
                # the least noisy estimate of a block's own cost.
                "forward_overhead": a["forward_min_ms"] / b["forward_min_ms"],
                "forward_backward_overhead": (
                    a["forward_backward_min_ms"] / b["forward_backward_min_ms"]
                ),
            }
            results.append(row)
            print(f"{name:<24}{shape_name:>11}{a['forward_ms']:>9.2f}"
                  f"{a['forward_backward_ms']:>9.2f}"
                  f"{row['attention_params']:>9}"
                  f"{row['attention_flops'] / 1e6:>9.1f}"
                  f"{row['forward_overhead']:>7.2f}"
                  f"{row['forward_backward_overhead']:>7.2f}", flush=True)
    return {"repeats": args.repeats, "results": results}


SUITES = {"layers": run_layers, "aa_memory": run_aa_memory,
          "sasa": run_sasa, "sampler": run_sampler,
          "speed": layer_speed.run, "sasa_blocks": layer_speed.run_blocks}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="all", choices=[*SUITES, "all"],
                   help="which benchmark to run (default: all)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES),
                   choices=list(SHAPES))
    p.add_argument("--memory-repeats", type=int, default=2,
                   help="peak-memory measurements per case (reported: min)")
    p.add_argument("--sasa-repeats", type=int, default=5)
    p.add_argument("--sampler-repeats", type=int, default=15)
    p.add_argument("--quick", action="store_true",
                   help="layers: only 32x32x64 with 3 repeats; aa_memory: "
                        "H=W in 8, 16; sasa: batch 1, 16x16; sampler: fewer "
                        "repeats")
    p.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "layers.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.shapes, args.repeats = ["32x32x64"], 3
        args.sasa_repeats = 2

    suites = list(SUITES) if args.suite == "all" else [args.suite]
    # One file for every suite: keep what other suites wrote before.
    data = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            data = json.load(f)
    data["machine"] = {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    for suite in suites:
        out = SUITES[suite](args)
        out["quick"] = args.quick
        if suite == "layers":
            data.update(out)  # top-level "repeats" / "results", as before
        else:
            data[suite] = out
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(data, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
