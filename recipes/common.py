"""Plain helpers for the recipes: flags, set-up (seed, precision, strategy,
run folder, data, callbacks), pictures, export and the output files.

The training is in each recipe's `main()`, which reads top to bottom:
flags, `setup`, build the model (in the strategy's scope), compile, fit
with the validation images, evaluate the test split once, `write_outputs`.

- Data: the first `--val-images` training images are the validation set,
  training uses those after them, the test split is only evaluated. Off
  TensorFlow (`KERAS_BACKEND=jax|torch`) the data are NumPy arrays
  (Fashion-MNIST, no TensorFlow import) and TensorBoard, SavedModel and
  TFLite are skipped.
- Run folder `--output-dir/NAME/`: `backup/` (`BackupAndRestore`: the same
  command resumes a killed run from its last finished epoch; removed when
  training completes), `logs/` (TensorBoard), `model.keras`,
  `history.json`, `metrics.json`, the pictures (`attention.png` plus the
  recipe's own) and `export/NAME/` (SavedModel and float TFLite).
- `--strategy`: `default` (one device), `mirrored` (`--devices N` splits
  the CPU into N logical devices to try it), `multiworker` (every worker
  runs the same command with its own `TF_CONFIG`; the chief, or worker 0
  without one, writes the outputs, the others `NAME/_worker{i}/`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
VAL_IMAGES = 5000  # default validation slice of a full training split


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
                   help="train on at most N images (those after the "
                        "validation images)")
    p.add_argument("--val-images", type=int, default=None,
                   help="hold out the first N training images for "
                        f"validation (default: {VAL_IMAGES}, or a tenth "
                        "of --train-images when that is smaller; 0: no "
                        "validation)")
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
# Set-up: seed, precision, strategy, output folder, data


@dataclasses.dataclass
class Run:
    """What `setup` prepared for one recipe run."""

    args: argparse.Namespace
    name: str
    out: str  # the run folder
    is_chief: bool
    strategy: object  # a tf.distribute strategy, None off TensorFlow
    train: object  # tf.data (endless) or ArrayBatches
    val: object  # None with --val-images 0
    test: object
    input_shape: tuple
    num_classes: int
    counts: dict  # images per split: train, val, test
    steps_per_epoch: int
    callbacks: list

    def scope(self):
        """The strategy's scope (nothing to enter without one)."""
        if self.strategy is None:
            return contextlib.nullcontext()
        return self.strategy.scope()

    @property
    def speed(self):
        return next(c for c in self.callbacks if isinstance(c, Throughput))


def setup(args, name):
    """Seed, mixed precision, strategy, run folder, data and callbacks."""
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    strategy = make_strategy(args)
    out, is_chief = output_dir(args, name)
    info = dataset_info(args.dataset)
    counts = split_counts(args, info["num_examples"])
    train, val, test = load_data(args, counts)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
        Throughput(args.batch_size),
    ]
    if is_tensorflow():
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(out, "logs")))
    # Whole batches of the training images; --steps-per-epoch only caps
    # that, so an epoch never asks for more batches than there are.
    steps = max(1, counts["train"] // args.batch_size)
    if args.steps_per_epoch:
        steps = min(steps, args.steps_per_epoch)
    return Run(args, name, out, is_chief, strategy, train, val, test,
               tuple(info["input_shape"]), int(info["num_classes"]), counts,
               steps, callbacks)


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


def output_dir(args, name):
    """`(folder, is_chief)`; a multi-worker non-chief writes beside it."""
    is_chief, index = _task()
    out = os.path.join(args.output_dir, name)
    if args.strategy == "multiworker" and not is_chief:
        out = os.path.join(out, f"_worker{index}")
    os.makedirs(out, exist_ok=True)
    return out, is_chief


def dataset_info(dataset):
    """Shapes, classes and split sizes, without reading data (a dict)."""
    if is_tensorflow():
        from keras_attn import data

        return dataclasses.asdict(data.dataset_info(dataset))
    if dataset != "fashion_mnist":
        raise SystemExit(
            f"--dataset {dataset} is read through tensorflow-datasets; "
            "on other backends only fashion_mnist (NumPy) is available"
        )
    return {"input_shape": (28, 28, 1), "num_classes": 10,
            "num_examples": {"train": 60000, "test": 10000}}


def split_counts(args, num_examples):
    """Images per split: `val` from the start of the training split,
    `train` after it, `test` from the test split."""
    total = num_examples["train"]
    val = args.val_images
    if val is None:
        val = min(VAL_IMAGES, (args.train_images or total) // 10)
    if not 0 <= val < total:
        raise SystemExit(f"--val-images {val}: expected 0 to {total - 1}")
    train = total - val
    if args.train_images:
        train = min(train, args.train_images)
    test = num_examples["test"]
    if args.test_images:
        test = min(test, args.test_images)
    return {"train": train, "val": val, "test": test}


def load_data(args, counts):
    """`(train, val, test)`: tf.data on TensorFlow (train endless and
    re-shuffled every epoch), `ArrayBatches` elsewhere. Images are float32
    in [0, 1]; `val` is None when `counts["val"]` is 0."""
    if not is_tensorflow():
        from keras_attn.data.array_batches import ArrayBatches
        from keras_attn.data.array_batches import fashion_mnist_splits

        arrays = fashion_mnist_splits(counts)
        return (ArrayBatches(*arrays["train"], args.batch_size,
                             shuffle_seed=args.seed),
                ArrayBatches(*arrays["val"], args.batch_size)
                if counts["val"] else None,
                ArrayBatches(*arrays["test"], args.batch_size))
    from keras_attn import data

    def load(split, **kwargs):
        return data.load(args.dataset, split, batch_size=args.batch_size,
                         seed=args.seed, **kwargs)

    train = load("train", skip=counts["val"], limit=counts["train"],
                 drop_remainder=True, repeat=True)
    val = (load("train", limit=counts["val"], augment=False, shuffle=False,
                drop_remainder=False) if counts["val"] else None)
    test = load("test", limit=counts["test"], drop_remainder=False)
    if args.strategy == "multiworker":
        import tensorflow as tf

        # Every worker reads the whole (small) split and takes its share
        # of the batches; the per-worker batch is global / workers.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        train, test = train.with_options(options), test.with_options(options)
        val = val.with_options(options) if val is not None else None
    return train, val, test


def picture_images(test, count=PICTURE_IMAGES):
    """The first `count` test images (and labels) as NumPy arrays."""
    if not is_tensorflow():  # ArrayBatches
        return test.x[:count], test.y[:count]
    xs, ys = [], []
    for x, y in test:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        if sum(len(a) for a in xs) >= count:
            break
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


# ----------------------------------------------------------------------------
# Compiling and training


def jit_compile(args):
    """`--jit`, except under a tf.distribute strategy: XLA fails there
    (graph execution error with MirroredStrategy on logical CPUs)."""
    return args.jit and args.strategy == "default"


def prepare_fit(model, run, build_state=True):
    """What `model.fit` needs before its first step, after `compile`.

    Under `--strategy multiworker`, patch Keras' trainer (see
    `_multiworker`). Without a strategy (`run.strategy` is None: the other
    backends) and with `build_state` (a classifier), create the optimizer's
    and the metrics' variables now (`build_training_state`). On TensorFlow
    every run has a strategy (the default one for `--strategy default`),
    under which Keras builds them itself before tracing.
    """
    if run.args.strategy == "multiworker":
        from ._multiworker import patch_fit

        patch_fit(model, next(iter(run.train)))
    elif build_state and run.strategy is None:
        build_training_state(model)


def build_training_state(model):
    """Create the optimizer's and the metrics' variables of a compiled
    classifier now.

    Without a distribution strategy, `fit` leaves them to the first trace
    of the train step; a `tf.function` that creates variables is traced
    twice, which doubles the start-up (over a minute for Attention-56 on 2
    cores). `benchmarks.models` uses it too.
    """
    model.optimizer.build(model.trainable_variables)
    shapes = [(1, *tuple(t.shape)[1:]) for t in model.inputs]
    x = [np.zeros(s, "float32") for s in shapes]
    x = x[0] if len(x) == 1 else x
    y_pred = model(x, training=False)
    y = np.zeros((1,), "int32")
    model.compute_metrics(x, y, y_pred)
    model.reset_metrics()


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


# ----------------------------------------------------------------------------
# Outputs


def write_outputs(run, model, history, scores, pictures=None, extra=None):
    """`model.keras`, `history.json`, `metrics.json` (returned), and on the
    chief the pictures and the export. `scores` is `model.evaluate(test,
    return_dict=True)`; `pictures(model, images, labels, out)` may draw
    the recipe's own PNGs; `extra` adds entries to `metrics.json`."""
    args, out = run.args, run.out
    model.save(os.path.join(out, "model.keras"))
    speed = run.speed.images_per_second
    metrics = {
        "recipe": run.name,
        "dataset": args.dataset,
        "attention": args.attention,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch_size": args.batch_size,
        "strategy": args.strategy,
        # What Keras kept: it falls back to no XLA for a model with a layer
        # that does not support it, or under run_eagerly.
        "jit": bool(model.jit_compile),
        "replicas": (run.strategy.num_replicas_in_sync
                     if run.strategy is not None else 1),
        "backend": keras.backend.backend(),
        "seed": args.seed,
        "train_images": run.counts["train"],
        "val_images": run.counts["val"],
        "test_images": run.counts["test"],
        "val_accuracy": _last(history.history.get("val_accuracy")),
        "test_accuracy": float(scores.get("accuracy", np.nan)),
        "test_loss": float(scores["loss"]),
        "test_metrics": {k: float(v) for k, v in scores.items()},
        "params": int(model.count_params()),
        "train_images_per_second": float(np.mean(speed)) if speed else None,
        # Paths in metrics.json are relative to the run folder, so a run
        # folder can be moved or shared as a whole.
        "model": "model.keras",
        **(extra or {}),
    }
    if run.is_chief:
        images, labels = picture_images(run.test)
        if args.pictures:
            metrics["pictures"] = [
                os.path.relpath(path, out) for path in
                draw_pictures(model, images, labels, out, pictures)]
        if args.export and is_tensorflow():
            metrics["export"] = export(model, images, out, run.name,
                                       args.dataset)
    write_json(os.path.join(out, "history.json"), history.history)
    write_json(os.path.join(out, "metrics.json"), metrics)
    print(json.dumps(metrics, indent=2))
    return metrics


def _last(values):
    return float(values[-1]) if values else None


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
    to `out`. `python -m export` makes the quantized files from
    `model.keras`."""
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


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=float)
