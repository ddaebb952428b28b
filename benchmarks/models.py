"""Training images/s of whole models at the recipes' default sizes: each
attention model against its own baseline, with and without XLA.

For each recipe (`--only`, default all of `RECIPES`), four trainers:
the model the recipe builds with its default flags
(`recipes.NAME.parse_args([])` then `builder(args)`) and its own baseline
(the same with `--no-attention`: for SASA-ResNet-26 the conv ResNet-26,
for AA-WRN the plain WRN), each compiled as the recipe compiles it (Adam,
sparse cross-entropy, accuracy; RAM: its hybrid REINFORCE loss) with
`jit_compile=False` and `jit_compile=True` (TensorFlow backend). Every
trainer takes the recipe's training batches (the default dataset and
batch size, the first batches of `keras_attn.data.load`'s train split,
read once, so the input pipeline is not timed).

Timing: each trainer first runs `--warmup` steps (`train_on_batch`; the
first traces the step and, under XLA, compiles it: its seconds are
reported as `first_step_s`). Then the four trainers take turns, `--rounds`
rounds of `--steps` steps each, so that drift in a shared machine's speed
hits all of them alike; a round's images/s is `steps * batch /
seconds`, waiting for each step's result. Reported: the median round
(and the best). `ratio` is attention / baseline images/s, both with or
both without XLA. The issue's targets: SASA-ResNet-26 at least 1/3 of its
conv baseline, AA-WRN at least 1/2 of its WRN.

    python -m benchmarks.models                       # every recipe
    python -m benchmarks.models --only sasa_resnet aa_resnet
    python -m benchmarks.models --quick               # 1 round of 3 steps

Writes `benchmarks/results/models.json` (override with `--out`); each run
replaces the entries of the recipes it measured and keeps the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_attn.recipes import common  # noqa: E402

# The two pairs the issue sets targets for come first.
RECIPES = ("sasa_resnet", "aa_resnet", "se_resnet", "cbam_resnet",
           "residual_attention", "ltpa", "stn", "ram")
TARGETS = {"sasa_resnet": 1 / 3, "aa_resnet": 1 / 2}
NOTE = ("Compare figures within one run: the ratios are steadier than the "
        "rates, which move with whatever else the machine runs.")


def trainer(recipe, argv, jit):
    """`(model, args)`: the recipe's model for `argv`, compiled as the
    recipe compiles it, with `jit_compile=jit`."""
    from keras_attn import data

    args = recipe.parse_args([*argv, "--jit" if jit else "--no-jit"])
    keras.utils.set_random_seed(args.seed)
    info = data.dataset_info(args.dataset)
    model = recipe.builder(args)(tuple(info.input_shape),
                                 int(info.num_classes))
    # As the recipe's main() compiles it: RAM carries its own loss and
    # metrics (train_step); every other model is a classifier.
    if recipe.__name__.endswith(".ram") and args.attention:
        model.compile(optimizer=keras.optimizers.Adam(args.lr),
                      jit_compile=args.jit)
    else:
        model.compile(optimizer=keras.optimizers.Adam(args.lr),
                      loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"],
                      jit_compile=common.jit_compile(args))
        common.build_training_state(model)
    return model, args


def batches(args, count):
    """The first `count` training batches of the recipe's pipeline, as
    tensors in memory."""
    from keras_attn import data

    train = data.load(args.dataset, "train", batch_size=args.batch_size,
                      seed=args.seed, limit=count * args.batch_size,
                      drop_remainder=True, repeat=True)
    return [(tf.constant(x), tf.constant(y)) for x, y in train.take(count)]


def _steps(model, data, start, steps):
    """Seconds for `steps` training steps, each waited for."""
    begin = time.perf_counter()
    for i in range(start, start + steps):
        x, y = data[i % len(data)]
        # train_on_batch returns NumPy: every step has finished before the
        # next starts, as in fit with a progress bar.
        model.train_on_batch(x, y)
    return time.perf_counter() - begin


def measure(name, steps, rounds, warmup):
    recipe = importlib.import_module(f"keras_attn.recipes.{name}")
    sides = {"attention": [], "baseline": ["--no-attention"]}
    runs = {}
    for side, argv in sides.items():
        for jit in (False, True):
            model, args = trainer(recipe, argv, jit)
            runs[side, jit] = {"model": model, "args": args,
                               "params": int(model.count_params()),
                               "jit_compile": bool(model.jit_compile),
                               "seconds": []}
    data = batches(runs["attention", False]["args"], min(steps, 8))
    for run in runs.values():
        start = time.perf_counter()
        _steps(run["model"], data, 0, 1)
        run["first_step_s"] = time.perf_counter() - start
        _steps(run["model"], data, 1, warmup - 1)
    for r in range(rounds):
        for run in runs.values():
            run["seconds"].append(_steps(run["model"], data, r * steps,
                                         steps))
    batch = runs["attention", False]["args"].batch_size
    rows = []
    for jit in (False, True):
        row = {"recipe": name, "jit": jit, "batch_size": batch}
        for side in sides:
            run = runs[side, jit]
            rates = [steps * batch / s for s in run["seconds"]]
            row[side] = {
                "model": run["model"].name,
                "params": run["params"],
                "jit_compile": run["jit_compile"],
                "images_per_s": statistics.median(rates),
                "best_images_per_s": max(rates),
                "first_step_s": run["first_step_s"],
            }
        row["ratio"] = (row["attention"]["images_per_s"]
                        / row["baseline"]["images_per_s"])
        if name in TARGETS:
            row["target_ratio"] = TARGETS[name]
            row["meets_target"] = row["ratio"] >= TARGETS[name]
        rows.append(row)
    for run in runs.values():
        del run["model"]
    return rows


def table(rows):
    lines = [
        "| recipe | XLA | attention model | images/s | baseline | images/s "
        "| ratio | target | first step s (att. / base.) |",
        "|---|---|---|---:|---|---:|---:|---|---|",
    ]
    for row in rows:
        a, b = row["attention"], row["baseline"]
        target = (f"≥ {row['target_ratio']:.2f} "
                  f"({'met' if row['meets_target'] else 'missed'})"
                  if "target_ratio" in row else "")
        lines.append(
            f"| {row['recipe']} | {'yes' if row['jit'] else 'no'} "
            f"| {a['model']} | {a['images_per_s']:.1f} | {b['model']} "
            f"| {b['images_per_s']:.1f} | {row['ratio']:.2f} | {target} "
            f"| {a['first_step_s']:.0f} / {b['first_step_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=RECIPES, default=None,
                   metavar="NAME",
                   help=f"recipes to measure (default: all of {RECIPES})")
    p.add_argument("--steps", type=int, default=10,
                   help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps first (the first compiles)")
    p.add_argument("--quick", action="store_true",
                   help="1 round of 3 steps after 1 warm-up step")
    p.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "models.json"))
    args = p.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("benchmarks.models compares XLA with plain "
                         "tf.function: it needs KERAS_BACKEND=tensorflow")
    if args.quick:
        args.steps, args.rounds, args.warmup = 3, 1, 1
    if args.steps < 1 or args.rounds < 1 or args.warmup < 1:
        p.error("--steps, --rounds and --warmup must be at least 1")
    names = args.only or list(RECIPES)

    data = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            data = json.load(f)
    kept = [r for r in data.get("results", []) if r["recipe"] not in names]
    rows = []
    for name in names:
        rows.extend(measure(name, args.steps, args.rounds, args.warmup))
        print("\n".join(table(rows[-2:]).splitlines()[2:]), flush=True)
    print(table(rows))
    data.update({
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
        "note": NOTE,
        "command": " ".join(["python -m benchmarks.models",
                             *(sys.argv[1:] if argv is None else argv)]),
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "quick": args.quick,
        "results": kept + rows,
    })
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(data, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
