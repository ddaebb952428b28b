"""Retrofit SE or CBAM into a keras.applications backbone, then fine-tune.

Takes a `keras.applications` backbone (MobileNetV2, ResNet50 or
EfficientNetB0) with trained weights, inserts attention modules with
`keras_attn.models.add_attention` (they start as the identity, so the model
predicts exactly as before), and fine-tunes it on Fashion-MNIST (resized,
grey replicated to 3 channels, inside the model) beside the same backbone
fine-tuned without attention, from the same weights, data order and budget.

The trained weights are ImageNet's when they can be downloaded
(`--weights imagenet`, or `auto`, the default, which tries them first);
otherwise the recipe makes its own checkpoint: the backbone and a new head
trained briefly on the last `--pretrain-images` training images (disjoint
from the validation images at the start of the split and the
`--train-images` after them that fine-tuning uses, while the three add up
to at most 60,000), cached under `--output-dir/retrofit_pretrained_.../`.
Each arm trains as every recipe does (`train_arm`: compile, fit with the
held-out validation images, evaluate the test split once).

What a run writes under `--output-dir/`: the two arms' usual recipe folders
(`retrofit_BACKBONE_ATTENTION/` with model, metrics, attention pictures and
SavedModel + TFLite exports; `retrofit_BACKBONE_baseline/`), and
`retrofit_BACKBONE_ATTENTION/comparison.json`, one row comparing them
(also merged into `--results-json` if given).

    python -m recipes.retrofit --backbone mobilenet_v2 --attention se
    python -m recipes.retrofit --backbone resnet50 --attention cbam --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np

from . import common

BACKBONES = ("mobilenet_v2", "resnet50", "efficientnet_b0")
ATTENTIONS = ("se", "cbam")
WEIGHTS = ("auto", "imagenet", "pretrain")
# Not measured for this recipe: off, as for the recipes where XLA did not
# pay for its compile time on short runs.
JIT = False
JIT_NOTE = "not measured for this recipe"
IDENTITY_IMAGES = 256  # test images the identity check is measured on


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], datasets=("fashion_mnist",),
                      jit=JIT, jit_note=JIT_NOTE)
    # `--attention` names the module here; `--no-attention` (from the
    # shared flags) still trains the baseline arm alone.
    p.conflict_handler = "resolve"
    g = p.add_argument_group("retrofit")
    g.add_argument("--attention", default="se", choices=ATTENTIONS,
                   help="module inserted by add_attention (default: se)")
    g.add_argument("--backbone", default="mobilenet_v2", choices=BACKBONES)
    g.add_argument("--where", default="blocks", choices=("blocks", "stages"),
                   help="add_attention's `where` (default: blocks)")
    g.add_argument("--image-size", type=int, default=32,
                   help="side the 28x28 images are resized to inside the "
                        "model (>= 32; default: 32)")
    g.add_argument("--width", type=float, default=1.0,
                   help="MobileNetV2's alpha (default: 1.0)")
    g.add_argument("--weights", default="auto",
                   help="auto (ImageNet, else a recipe-made checkpoint), "
                        "imagenet, pretrain, or a .keras file of the same "
                        "model without attention")
    g.add_argument("--pretrain-images", type=int, default=10_000,
                   help="training images (from the end of the split) of "
                        "the recipe-made checkpoint (default: 10000)")
    g.add_argument("--pretrain-epochs", type=int, default=1)
    g.add_argument("--bn-momentum", type=float, default=0.9,
                   help="BatchNorm momentum of the recipe-made model "
                        "(default: 0.9; MobileNetV2's own 0.999 leaves the "
                        "moving statistics near their start over a short "
                        "run, and the test accuracy at chance)")
    g.add_argument("--baseline", action=argparse.BooleanOptionalAction,
                   default=True,
                   help="also fine-tune the backbone without attention")
    g.add_argument("--results-json",
                   help="merge the comparison row into this JSON file's "
                        "`rows` (created if missing)")
    p.set_defaults(attention="se")
    args = p.parse_args(argv)
    if args.image_size < 32:
        p.error("--image-size must be >= 32 (keras.applications' minimum)")
    if (args.weights not in WEIGHTS
            and not str(args.weights).endswith(".keras")):
        p.error(f"--weights: expected one of {list(WEIGHTS)} or a .keras "
                f"file; got {args.weights!r}")
    return args


# ----------------------------------------------------------------------------
# The model: Fashion-MNIST images in [0, 1] -> backbone -> 10 classes


def _preprocess(backbone, x):
    """The backbone's own input convention, from 3-channel [0, 1] images."""
    if backbone == "mobilenet_v2":
        return keras.layers.Rescaling(2.0, offset=-1.0, name="to_unit")(x)
    x = keras.layers.Rescaling(255.0, name="to_255")(x)
    if backbone == "resnet50":
        # "caffe" preprocessing: BGR order (the grey channels are equal, so
        # the order does not matter) minus the ImageNet mean.
        return keras.layers.Normalization(
            mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0],
            name="imagenet_mean")(x)
    return x  # EfficientNet rescales and normalises inside the model


def build_base(args, input_shape, num_classes, weights=None):
    """The backbone (`weights=None` or `"imagenet"`) with a new head, on
    `input_shape` images in [0, 1]: resize, grey to RGB, preprocess; its
    BatchNorm momentum set to `--bn-momentum`."""
    inputs = keras.Input(input_shape, name="images")
    size = args.image_size
    x = keras.layers.Resizing(size, size, name="resize")(inputs)
    if input_shape[-1] == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    x = _preprocess(args.backbone, x)
    common_kwargs = {"include_top": False, "weights": weights,
                     "input_tensor": x}
    if args.backbone == "mobilenet_v2":
        backbone = keras.applications.MobileNetV2(alpha=args.width,
                                                  **common_kwargs)
    elif args.backbone == "resnet50":
        backbone = keras.applications.ResNet50(**common_kwargs)
    else:
        backbone = keras.applications.EfficientNetB0(**common_kwargs)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = args.bn_momentum
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32",
                                      name="probabilities")(x)
    return keras.Model(inputs, outputs, name=args.backbone)


def _arrays(split, start=None, stop=None):
    from keras_attn.data import load_arrays

    images, labels = load_arrays("fashion_mnist", split)
    images = images[start:stop].astype("float32") / 255.0
    return images, labels[start:stop]


def _checkpoint_dir(args):
    tag = f"{args.backbone}_{args.image_size}"
    if args.backbone == "mobilenet_v2":
        tag += f"_w{args.width:g}"
    tag += (f"_{args.pretrain_images}x{args.pretrain_epochs}"
            f"_bn{args.bn_momentum:g}_s{args.seed}")
    if args.mixed_precision:
        tag += "_mixed"
    return os.path.join(args.output_dir, f"retrofit_pretrained_{tag}")


def pretrained_checkpoint(args, input_shape=(28, 28, 1), num_classes=10):
    """`(path, description)` of the trained model both arms start from."""
    if str(args.weights).endswith(".keras"):
        return args.weights, {"source": args.weights}
    out = _checkpoint_dir(args)
    path = os.path.join(out, "model.keras")
    info_path = os.path.join(out, "pretrain.json")
    if args.weights in ("auto", "imagenet"):
        try:
            keras.utils.set_random_seed(args.seed)
            model = build_base(args, input_shape, num_classes,
                               weights="imagenet")
        except Exception as error:
            if args.weights == "imagenet":
                raise SystemExit(f"--weights imagenet: could not load the "
                                 f"ImageNet weights ({error})") from error
            print(f"No ImageNet weights ({type(error).__name__}: "
                  f"{str(error)[:200]}); making a checkpoint instead.")
        else:
            os.makedirs(out + "_imagenet", exist_ok=True)
            path = os.path.join(out + "_imagenet", "model.keras")
            model.save(path)
            return path, {"source": "imagenet (new head)"}
    if os.path.exists(path) and os.path.exists(info_path):
        with open(info_path) as f:
            return path, json.load(f)
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    train_x, train_y = _arrays("train", start=-args.pretrain_images)
    test_x, test_y = _arrays("test", stop=args.test_images)
    model = build_base(args, input_shape, num_classes)
    model.compile(optimizer=keras.optimizers.Adam(args.lr),
                  loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(train_x, train_y, batch_size=args.batch_size,
              epochs=args.pretrain_epochs, shuffle=True, verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(test_x, test_y, batch_size=256, verbose=0)
    model.save(path)
    info = {
        "source": "recipe-made: fashion_mnist train"
                  f"[-{args.pretrain_images}:], {args.pretrain_epochs} "
                  f"epoch(s), weights=None start, BatchNorm momentum "
                  f"{args.bn_momentum:g}",
        "test_accuracy": float(accuracy),
        "test_images": int(len(test_x)),
        "wall_seconds": seconds,
    }
    common.write_json(info_path, info)
    return path, info


# ----------------------------------------------------------------------------
# The two arms


def _builder(path, attention, where, identity):
    """`build(input_shape, num_classes)`: the checkpoint, with attention
    retrofitted when `attention` is set; fills `identity` with the largest
    change of the predictions it makes before any training."""

    def build(input_shape, num_classes):
        from keras_attn.models import add_attention

        base = keras.saving.load_model(path, safe_mode=True)
        if tuple(base.input_shape[1:]) != tuple(input_shape):
            raise SystemExit(f"checkpoint {path} takes {base.input_shape}, "
                             f"the data {input_shape}")
        if attention is None:
            return base
        model = add_attention(base, attention, where=where,
                              name=f"{base.name}_{attention}")
        images, _ = _arrays("test", stop=IDENTITY_IMAGES)
        before = base.predict(images, batch_size=128, verbose=0)
        after = model.predict(images, batch_size=128, verbose=0)
        identity["max_abs_diff"] = float(np.abs(before - after).max())
        identity["images"] = int(len(images))
        identity["modules"] = sum(
            type(layer).__name__ == "IdentityGate" for layer in model.layers)
        return model

    return build


def train_arm(args, folder, build):
    """One arm, trained as every recipe trains; returns its metrics."""
    # Seed, run folder, data (validation held out of the training split)
    # and callbacks.
    run = common.setup(args, folder)

    with run.scope():
        model = build(run.input_shape, run.num_classes)
        model.compile(
            optimizer=keras.optimizers.Adam(args.lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=common.jit_compile(args),
        )
    common.prepare_fit(model, run)

    history = model.fit(
        run.train,
        validation_data=run.val,
        epochs=args.epochs,
        steps_per_epoch=run.steps_per_epoch,
        callbacks=run.callbacks,
        shuffle=False,  # the data pipeline shuffles, every epoch anew
    )
    scores = model.evaluate(run.test, return_dict=True)
    return common.write_outputs(run, model, history, scores)


def _row(args, checkpoint, arms, identity, seconds):
    attention = arms.get("attention")
    baseline = arms.get("baseline")
    first = attention or baseline
    size = args.image_size
    width = (f", alpha {args.width:g}" if args.backbone == "mobilenet_v2"
             else "")
    return {
        "mechanism": args.attention,
        "task": "fashion_mnist",
        "piece": f"retrofit_{args.backbone}_{args.attention}",
        "model": f"keras.applications {args.backbone}{width}, "
                 f"{size}x{size}, add_attention(where={args.where!r})",
        "baseline_arm": "baseline",
        "metric": "test_accuracy",
        "seeds": [args.seed],
        "attention": [attention["test_accuracy"]] if attention else [],
        "baseline": [baseline["test_accuracy"]] if baseline else [],
        "pretrained": checkpoint,
        "identity_before_fine_tuning": identity,
        "epochs": args.epochs,
        "train_images": first["train_images"],
        "val_images": first["val_images"],
        "test_images": first["test_images"],
        "batch_size": args.batch_size,
        "steps_per_epoch": args.steps_per_epoch,
        "learning_rate": args.lr,
        "jit": args.jit,
        "params": {arm: m["params"] for arm, m in arms.items()},
        "wall_seconds": seconds,
    }


def _merge(path, row):
    results = {"rows": []}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    rows = [r for r in results.get("rows", [])
            if r.get("piece") != row["piece"]]
    results["rows"] = [*rows, row]
    common.write_json(path, results)


def main(argv=None):
    args = parse_args(argv)
    if not common.is_tensorflow():
        raise SystemExit("recipes.retrofit needs the TensorFlow backend "
                         "(keras.applications checkpoints and tf.data)")
    if args.strategy != "default":
        raise SystemExit("recipes.retrofit runs with --strategy default")
    if args.mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    checkpoint_path, checkpoint = pretrained_checkpoint(args)
    name = f"retrofit_{args.backbone}"
    arms, seconds, identity = {}, {}, {}
    runs = []
    if args.attention:
        runs.append(("attention", args.attention, f"{name}_{args.attention}"))
    if args.baseline or args.attention is False:
        runs.append(("baseline", None, f"{name}_baseline"))
    export, chosen = args.export, args.attention
    for arm, attention, folder in runs:
        # `metrics.json` records `args.attention`; the baseline arm is not
        # exported: it is only the comparison.
        args.attention = attention or False
        args.export = export and arm == "attention"
        start = time.perf_counter()
        arms[arm] = train_arm(
            args, folder,
            _builder(checkpoint_path, attention, args.where, identity))
        seconds[arm] = time.perf_counter() - start
    args.export, args.attention = export, chosen
    if "attention" not in arms:  # --no-attention: the baseline alone
        return arms
    row = _row(args, checkpoint, arms, identity, seconds)
    common.write_json(os.path.join(args.output_dir, f"{name}_{args.attention}",
                             "comparison.json"), row)
    if args.results_json:
        _merge(args.results_json, row)
    print(json.dumps({k: row[k] for k in ("piece", "attention", "baseline",
                                          "identity_before_fine_tuning")},
                     indent=2))
    return {**arms, "comparison": row}

if __name__ == "__main__":
    main()
