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

    python -m benchmarks.layers                 # both shapes, prints a table
    python -m benchmarks.layers --quick         # small shape, 3 repeats

Writes `benchmarks/results/layers.json` (override with `--out`).
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

tf.get_logger().setLevel("ERROR")  # the FLOPs profiler's v1 deprecations

from keras_attn import layers  # noqa: E402

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES),
                   choices=list(SHAPES))
    p.add_argument("--quick", action="store_true",
                   help="only 32x32x64 with 3 repeats")
    p.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "layers.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.shapes, args.repeats = ["32x32x64"], 3

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
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "machine": {
                    "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(),
                    "tensorflow": tf.__version__,
                    "keras": keras.__version__,
                },
                "repeats": args.repeats,
                "results": results,
            },
            f,
            indent=2,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
