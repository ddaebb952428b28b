"""Plumbing shared by the recipes: arguments, data, training, export.

A recipe script only says which model to build; everything else (the same
flags, the same data pipeline, the same outputs) lives here so recipes stay
short and comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np

DATASETS = ("fashion_mnist",)


def parser(description, **defaults):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", default="fashion_mnist", choices=DATASETS)
    p.add_argument("--epochs", type=int, default=defaults.get("epochs", 1))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=defaults.get("lr", 1e-3))
    p.add_argument(
        "--attention",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--no-attention trains the baseline of the same backbone",
    )
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--jit", action="store_true", help="XLA-compile training")
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
    return p


def load_data(name, batch_size, seed, train_images=None, test_images=None):
    """`(train_ds, test_ds, input_shape, num_classes)` as tf.data pipelines
    of float32 images in [0, 1] and int labels."""
    import tensorflow as tf

    from keras_attn.data import load_fashion_mnist

    if name != "fashion_mnist":  # pragma: no cover - guarded by argparse
        raise ValueError(f"unknown dataset {name!r}")
    x_train, y_train = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    if train_images:
        x_train, y_train = x_train[:train_images], y_train[:train_images]
    if test_images:
        x_test, y_test = x_test[:test_images], y_test[:test_images]

    def pipeline(x, y, training):
        ds = tf.data.Dataset.from_tensor_slices((x[..., None], y))
        if training:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=training)
        ds = ds.map(lambda a, b: (tf.cast(a, "float32") / 255.0, b),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    return (pipeline(x_train, y_train, True), pipeline(x_test, y_test, False),
            (28, 28, 1), 10)


class _Throughput(keras.callbacks.Callback):
    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.images_per_second = []

    # Timed from the end of each epoch's first step to its last, so graph
    # tracing and validation are not counted as training time.
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


def train(build_model, args, name):
    """Train `build_model(input_shape, num_classes)` with the recipe flags,
    evaluate on the test split, save and export. Returns the metrics."""
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    out = os.path.join(args.output_dir, name)
    os.makedirs(out, exist_ok=True)
    train_ds, test_ds, input_shape, num_classes = load_data(
        args.dataset, args.batch_size, args.seed, args.train_images,
        args.test_images,
    )
    model = build_model(input_shape, num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=args.jit,
    )
    speed = _Throughput(args.batch_size)
    history = model.fit(
        train_ds,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        validation_data=test_ds,
        callbacks=[speed],
        verbose=2,
    )
    # The last epoch's validation pass is the test evaluation: the test split
    # is not used for any choice during training.
    test_loss = history.history["val_loss"][-1]
    test_acc = history.history["val_accuracy"][-1]
    model_path = os.path.join(out, "model.keras")
    model.save(model_path)
    metrics = {
        "recipe": name,
        "dataset": args.dataset,
        "attention": args.attention,
        "epochs": args.epochs,
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "params": int(model.count_params()),
        "train_images_per_second": (
            float(np.mean(speed.images_per_second))
            if speed.images_per_second else None
        ),
        "model": model_path,
    }
    if args.export:
        metrics["export"] = export(model, test_ds, out)
    _write_json(os.path.join(out, "history.json"), history.history)
    _write_json(os.path.join(out, "metrics.json"), metrics)
    print(json.dumps(metrics, indent=2))
    return metrics


def export(model, test_ds, out):
    """SavedModel + builtin-ops TFLite, with the TFLite/Keras gap measured
    on real test images."""
    from export.saved_model import write_saved_model
    from export.tflite import convert
    from export.tflite import run_tflite

    saved_model_dir = os.path.join(out, "saved_model")
    write_saved_model(model, saved_model_dir)
    images = next(iter(test_ds))[0].numpy()[:8]
    flatbuffer = convert(model, batch_size=len(images))
    tflite_path = os.path.join(out, "model.tflite")
    with open(tflite_path, "wb") as f:
        f.write(flatbuffer)
    got = run_tflite(flatbuffer, [images])[0]
    want = keras.ops.convert_to_numpy(model(images, training=False))
    return {
        "saved_model": saved_model_dir,
        "tflite": tflite_path,
        "tflite_bytes": len(flatbuffer),
        "tflite_max_abs_diff": float(np.abs(got - want).max()),
    }


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=float)
