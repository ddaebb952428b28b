"""Plumbing shared by the recipes: flags, data, distribution, training,
outputs and export.

A recipe script only says which model to build; everything else (the same
flags, the same data pipeline, the same outputs) lives here so recipes stay
short and comparable. What a run writes under `--output-dir/NAME/`:

- `backup/`: `keras.callbacks.BackupAndRestore` state. A run that is killed
  and restarted with the same command resumes from the last finished epoch;
  the directory is deleted when training completes.
- `logs/`: TensorBoard logs (TensorFlow backend).
- `history.json`, `metrics.json`, `model.keras`.
- `attention.png` (every spatial attention map of the model over a fixed
  set of test images), plus the recipe's own pictures (`gradcam.png`,
  `stn.png`, `glimpses.png`).
- `export/NAME/1/` (TF Serving SavedModel) and
  `export/NAME/tflite/model_float32.tflite` with their `manifest.json`
  (TensorFlow backend, `--export`; see `python -m export` for more).

Distribution (`--strategy`, TensorFlow backend):

- `default`: one device.
- `mirrored`: `tf.distribute.MirroredStrategy` over the local devices
  (`--devices N` splits the CPU into N logical devices, for trying it on a
  laptop or in tests).
- `multiworker`: `tf.distribute.MultiWorkerMirroredStrategy`; every worker
  runs the same command with its own `TF_CONFIG`. The chief (task `chief`,
  or `worker` 0 when there is no chief) writes the outputs; other workers
  write to `NAME/_worker{i}/` so that nothing is written twice.

Other backends (`KERAS_BACKEND=jax` or `torch`) train from NumPy arrays
(no TensorFlow import is needed for Fashion-MNIST) with `--strategy
default`; TensorBoard, SavedModel and TFLite are skipped there.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np

DATASETS = (
    "fashion_mnist",
    "mnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "translated60",
    "cluttered60",
    "cluttered100",
)
STRATEGIES = ("default", "mirrored", "multiworker")
PICTURE_IMAGES = 8  # fixed: the first test images, the same in every run


def parser(description, datasets=DATASETS, jit=False, jit_note=None,
           **defaults):
    """The recipes' shared flags. `jit` is the recipe's `--jit` default,
    chosen by measuring training images/s with and without XLA
    (`python -m benchmarks.models`); `jit_note` says why in `--help`."""
    # Measured on TensorFlow only: elsewhere `jit_compile=True` means JAX's
    # jit (Keras' default there anyway) or torch.compile, neither measured.
    jit = jit and is_tensorflow()
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", default=defaults.get("dataset", datasets[0]),
                   choices=datasets)
    p.add_argument("--epochs", type=int, default=defaults.get("epochs", 1))
    p.add_argument("--batch-size", type=int,
                   default=defaults.get("batch_size", 128))
    p.add_argument("--lr", type=float, default=defaults.get("lr", 1e-3))
    p.add_argument(
        "--attention",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--no-attention trains the baseline of the same backbone",
    )
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=jit,
        help=f"XLA-compile training (jit_compile; default for this recipe: "
             f"{'--jit' if jit else '--no-jit'}"
             + (f", {jit_note}" if jit_note else "") + ")",
    )
    p.add_argument("--strategy", default="default", choices=STRATEGIES)
    p.add_argument("--devices", type=int, default=None,
                   help="split the CPU into N logical devices (mirrored "
                        "strategy on one machine)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="cap the steps per epoch (quick smoke runs)")
    p.add_argument("--train-images", type=int, default=None,
                   help="use only the first N training images")
    p.add_argument("--test-images", type=int, default=None,
                   help="evaluate on the first N test images only")
    p.add_argument("--output-dir", default=defaults.get("output_dir", "runs"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", action=argparse.BooleanOptionalAction,
                   default=True, help="write SavedModel + TFLite at the end")
    p.add_argument("--pictures", action=argparse.BooleanOptionalAction,
                   default=True, help="write attention PNGs at the end")
    return p


def is_tensorflow():
    return keras.backend.backend() == "tensorflow"


# ----------------------------------------------------------------------------
# Distribution


def _task():
    """`(is_chief, worker_index)` from `TF_CONFIG` (chief when unset)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    kind, index = task.get("type", "chief"), int(task.get("index", 0))
    has_chief = "chief" in config.get("cluster", {})
    is_chief = kind == "chief" or (kind == "worker" and index == 0
                                   and not has_chief)
    return is_chief, index


def make_strategy(args):
    """The `tf.distribute` strategy of `--strategy` (None off TensorFlow)."""
    if not is_tensorflow():
        if args.strategy != "default":
            raise SystemExit(
                f"--strategy {args.strategy} needs the TensorFlow backend "
                f"(KERAS_BACKEND is {keras.backend.backend()!r})"
            )
        return None
    import tensorflow as tf

    if args.devices:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration()] * args.devices,
        )
    if args.strategy == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if args.strategy == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise SystemExit(
                "--strategy multiworker needs TF_CONFIG (see README, "
                "'Training on several machines')"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


# ----------------------------------------------------------------------------
# Data


def load_data(args, strategy=None):
    """`(train, test, info)`: tf.data pipelines on TensorFlow, NumPy
    `(x, y)` tuples elsewhere. Images are float32 in [0, 1]."""
    from keras_attn import data

    if is_tensorflow():
        info = data.dataset_info(args.dataset)
        # One endless, re-shuffled (and re-augmented) stream: every epoch
        # sees new draws; `train_steps` says where an epoch ends.
        train = data.load(
            args.dataset, "train", batch_size=args.batch_size,
            seed=args.seed, limit=args.train_images, drop_remainder=True,
            repeat=True,
        )
        test = data.load(
            args.dataset, "test", batch_size=args.batch_size,
            seed=args.seed, limit=args.test_images, drop_remainder=False,
        )
        if strategy is not None and args.strategy == "multiworker":
            import tensorflow as tf

            # Every worker reads the whole (small) split and takes its share
            # of the batches; the per-worker batch is global / workers.
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            train = train.with_options(options)
            test = test.with_options(options)
        return train, test, info
    if args.dataset != "fashion_mnist":
        raise SystemExit(
            f"--dataset {args.dataset} is read through tensorflow-datasets; "
            "on other backends only fashion_mnist (NumPy) is available"
        )
    from keras_attn.data.fashion_mnist import CLASS_NAMES
    from keras_attn.data.fashion_mnist import load_fashion_mnist

    def arrays(split, limit):
        x, y = load_fashion_mnist(split)
        if limit:
            x, y = x[:limit], y[:limit]
        return (x[..., None].astype("float32") / 255.0, y.astype("int32"))

    info = {"input_shape": (28, 28, 1), "num_classes": 10,
            "class_names": list(CLASS_NAMES),
            "num_examples": {"train": 60000, "test": 10000}}
    return (arrays("train", args.train_images),
            arrays("test", args.test_images), info)


def _info(info, key):
    return info[key] if isinstance(info, dict) else getattr(info, key)


def train_steps(args, info):
    """Steps per epoch: `--steps-per-epoch`, or one pass over the training
    images (whole batches)."""
    if args.steps_per_epoch:
        return args.steps_per_epoch
    images = _info(info, "num_examples")["train"]
    if args.train_images:
        images = min(images, args.train_images)
    return max(1, images // args.batch_size)


def picture_images(test, count=PICTURE_IMAGES):
    """The first `count` test images (and labels) as NumPy arrays."""
    if isinstance(test, tuple):
        return test[0][:count], test[1][:count]
    xs, ys = [], []
    for x, y in test:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        if sum(len(a) for a in xs) >= count:
            break
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


# ----------------------------------------------------------------------------
# Training


class Throughput(keras.callbacks.Callback):
    """Training images per second, from the end of each epoch's first step
    to its last, so graph tracing and validation are not counted."""

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.images_per_second = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = None, 0

    def on_train_batch_end(self, batch, logs=None):
        if self._start is None:
            self._start = time.perf_counter()
        else:
            self._steps += 1
            self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self._steps:
            seconds = self._end - self._start
            self.images_per_second.append(
                self._steps * self.batch_size / seconds
            )


def output_dir(args, name):
    is_chief, index = _task()
    out = os.path.join(args.output_dir, name)
    if args.strategy == "multiworker" and not is_chief:
        out = os.path.join(out, f"_worker{index}")
    os.makedirs(out, exist_ok=True)
    return out, is_chief


def compile_classifier(model, args):
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # XLA fails under tf.distribute strategies here (graph execution
        # error with MirroredStrategy on logical CPUs): train without it.
        jit_compile=args.jit and args.strategy == "default",
    )


def build_training_state(model):
    """Create the optimizer's and the metrics' variables now.

    Without a distribution strategy, TensorFlow's `fit` leaves them to the
    first trace of the train step; a `tf.function` that creates variables
    is traced twice, which doubles the start-up of every recipe (over a
    minute for Attention-56 on 2 cores). Under a strategy Keras builds them
    itself before tracing.
    """
    model.optimizer.build(model.trainable_variables)
    shapes = [(1, *tuple(t.shape)[1:]) for t in model.inputs]
    x = [np.zeros(s, "float32") for s in shapes]
    x = x[0] if len(x) == 1 else x
    y_pred = model(x, training=False)
    y = np.zeros((1,), "int32")
    model.compute_metrics(x, y, y_pred)
    model.reset_metrics()


def train(build_model, args, name, compile_model=compile_classifier,
          pictures=None, extra_metrics=None):
    """Train `build_model(input_shape, num_classes)` with the recipe flags,
    evaluate on the test split, save, draw and export. Returns the metrics.

    `compile_model(model, args)` compiles (default: Adam + sparse
    cross-entropy + accuracy). `pictures(model, images, labels, out)` may
    draw recipe-specific PNGs and return their paths. `extra_metrics(model,
    test)` may add entries to `metrics.json`.
    """
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    strategy = make_strategy(args)
    out, is_chief = output_dir(args, name)
    train_data, test_data, info = load_data(args, strategy)
    input_shape = tuple(_info(info, "input_shape"))
    num_classes = int(_info(info, "num_classes"))

    if strategy is not None:
        with strategy.scope():
            model = build_model(input_shape, num_classes)
            compile_model(model, args)
    else:
        model = build_model(input_shape, num_classes)
        compile_model(model, args)
        if compile_model is compile_classifier:
            build_training_state(model)

    if args.strategy == "multiworker":
        from ._multiworker import patch_fit

        patch_fit(model, next(iter(train_data)))
    speed = Throughput(args.batch_size)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
        speed,
    ]
    if is_tensorflow():
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(out, "logs"))
        )
    fit_kwargs = {"epochs": args.epochs, "callbacks": callbacks,
                  "verbose": 1}
    # The test split is evaluated after every epoch (TensorBoard curves);
    # it is not used for any choice during training, so the last epoch's
    # validation pass is the reported test evaluation.
    if isinstance(train_data, tuple):
        history = model.fit(*train_data, batch_size=args.batch_size,
                            shuffle=True,
                            steps_per_epoch=args.steps_per_epoch,
                            validation_data=test_data, **fit_kwargs)
    else:
        history = model.fit(train_data, steps_per_epoch=train_steps(args, info),
                            validation_data=test_data, **fit_kwargs)
    scores = {key[len("val_"):]: values[-1]
              for key, values in history.history.items()
              if key.startswith("val_")}

    model_path = os.path.join(out, "model.keras")
    model.save(model_path)
    metrics = {
        "recipe": name,
        "dataset": args.dataset,
        "attention": args.attention,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch_size": args.batch_size,
        "strategy": args.strategy,
        # What Keras kept: it falls back to no XLA for a model with a layer
        # that does not support it, or under run_eagerly.
        "jit": bool(model.jit_compile),
        "replicas": (strategy.num_replicas_in_sync if strategy is not None
                     else 1),
        "backend": keras.backend.backend(),
        "seed": args.seed,
        "test_accuracy": float(scores.get("accuracy", np.nan)),
        "test_loss": float(scores["loss"]),
        "test_metrics": {k: float(v) for k, v in scores.items()},
        "params": int(model.count_params()),
        "train_images_per_second": (
            float(np.mean(speed.images_per_second))
            if speed.images_per_second else None
        ),
        "model": model_path,
    }
    if extra_metrics is not None:
        metrics.update(extra_metrics(model, test_data))
    if is_chief:
        images, labels = picture_images(test_data)
        if args.pictures:
            # Paths in metrics.json are relative to the run folder, so a
            # run folder can be moved or shared as a whole.
            metrics["pictures"] = [os.path.relpath(path, out) for path in
                                   draw_pictures(model, images, labels, out,
                                                 pictures)]
        if args.export and is_tensorflow():
            metrics["export"] = export(model, images, out, name,
                                       args.dataset)
    _write_json(os.path.join(out, "history.json"), history.history)
    _write_json(os.path.join(out, "metrics.json"), metrics)
    print(json.dumps(metrics, indent=2))
    return metrics


def draw_pictures(model, images, labels, out, pictures=None):
    """`attention.png` of every spatial attention map, plus the recipe's
    own pictures. Returns the written paths."""
    from keras_attn.viz import plot_model_attention

    paths = []
    path = os.path.join(out, "attention.png")
    try:
        plot_model_attention(model, images, path=path)
        paths.append(path)
    except ValueError as error:  # a model without attention (baseline)
        print(f"no attention.png: {error}")
    if pictures is not None:
        paths.extend(pictures(model, images, labels, out) or [])
    return paths


def grad_cam_pictures(layer_name, attention_map=None):
    """A `pictures` hook: the trainable attention map `attention_map` (a
    name of `keras_attn.models.attention_model`'s outputs; default: the
    deepest spatial map) next to Grad-CAM of `layer_name` for the same
    images (`gradcam.png`). Models without attention get no picture."""

    def draw(model, images, labels, out):
        from keras_attn.viz import compare_with_grad_cam

        path = os.path.join(out, "gradcam.png")
        try:
            compare_with_grad_cam(model, images, layer_name,
                                  attention_layer=attention_map, path=path)
        except (ValueError, NotImplementedError) as error:
            # No attention map (baseline), or a backend without Grad-CAM.
            print(f"no gradcam.png: {error}")
            return []
        return [path]

    return draw


def export(model, images, out, name, dataset):
    """The TF Serving SavedModel (`out/export/NAME/VERSION/`) and the float
    TFLite file (`out/export/NAME/tflite/model_float32.tflite`), with their
    gap to the Keras model measured on the picture images; paths relative
    to `out`. `python -m
    export` makes the quantized files from `model.keras`."""
    from keras_attn.export import ParityOptions
    from keras_attn.export import SignatureOptions
    from keras_attn.export import export_model

    manifest = export_model(model, os.path.join(out, "export"), name=name,
                            to="all",
                            signature=SignatureOptions(dataset=dataset),
                            parity=ParityOptions(images=images))
    tflite = manifest["tflite"]["float32"]
    return {
        "saved_model": os.path.relpath(manifest["written"]["saved_model"],
                                       out),
        "tflite": os.path.relpath(manifest["written"]["tflite"]["float32"],
                                  out),
        "tflite_bytes": tflite["bytes"],
        "saved_model_parity": manifest["saved_model"]["parity"],
        "tflite_parity": tflite["parity"],
        "tflite_max_abs_diff": tflite["parity"][
            "probabilities_max_abs_diff"],
    }


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=float)
