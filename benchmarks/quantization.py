"""How closely quantized TFLite files follow briefly trained models, and
what bounds it.

Each model (`--models`, default every builder of
`benchmarks/tiny_models.py` and RAM) is trained as the export tests train
it (`tiny_models.trained`: `--epochs` 2 over the first `--train-images`
2,048 Fashion-MNIST train images, BatchNorm statistics re-estimated), then
exported with `export.export_model(..., to="tflite",
tflite=TFLiteOptions(quantize="dynamic,float16,int8"))`, int8
calibrated on 200 train images (activation ranges `mse`, and again
`minmax`), parity measured on 1,000 test images. Per model:

- `accuracy`: the float model's test accuracy on those images;
- per file: top-1 agreement with the float model, largest and mean
  probability gap, the parity bar's shortfalls (`export.parity`), and
  for int8 the layers kept float;
- `limits`, measured on the Keras model itself:
  - `weight_only_int8`: every weight named `kernel` rounded to int8, one
    symmetric scale per output channel, nothing else changed: the int8
    file's weights alone, so it cannot be expected to follow the model
    more closely. (The dynamic file leaves kernels of fewer than 1,024
    values float, most of a narrow model's, and can be closer.)
  - `input_dither`: top-1 agreement of the float model with itself when
    each pixel moves by up to half a grey level (uniform, +-0.5/255), less
    than the rounding an 8-bit image already carries;
  - `near_ties`: the share of images whose two most probable classes are
    less than 0.01 apart.

    python -m benchmarks.quantization                      # ~15 min, 2 cores
    python -m benchmarks.quantization --models attention56 --epochs 4 \\
        --train-images 12000
    python -m benchmarks.quantization --models attention56 --epochs 4 \\
        --train-images 12000 --width 0.25 \\
        --out benchmarks/results/quantization_4x12000_attention56_w0.25.json

Writes `benchmarks/results/quantization.json` (override with `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import tiny_models  # noqa: E402
from keras_attn.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_attn.export import ParityOptions  # noqa: E402
from keras_attn.export import TFLiteOptions  # noqa: E402
from keras_attn.export import export_model  # noqa: E402
from keras_attn.export import parity  # noqa: E402
from keras_attn.export.calibration import load_images  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The models whose builder's `width` multiplies every channel count
# (AA-WRN's `width` is the widening factor k, an integer).
_WIDENABLE = ("ltpa_pc_concat", "ltpa_dp_indep", "attention56",
              "sasa_resnet")


def _probabilities(predict, images):
    return keras.ops.convert_to_numpy(predict.predict(images, verbose=0))


def _gaps(figures):
    """Top-1 agreement and probability gaps from `export.parity` figures."""
    return {"top1_agreement": figures["top1_agreement"],
            "max_gap": figures["probabilities_max_abs_diff"],
            "mean_gap": figures["probabilities_mean_abs_diff"]}


def _compare(want, have):
    """`_gaps` of probabilities `have` against `want`, measured as the
    manifest measures a file."""
    return _gaps(parity.figures(
        {"probabilities": want, "classes": want.argmax(-1)},
        {"probabilities": have, "classes": have.argmax(-1)}))


def weight_only_int8(model, predict, images, reference):
    """Agreement and gaps of `predict` with every kernel rounded to int8
    per output channel (restored afterwards)."""
    kernels = [w for w in model.weights
               if w.path.endswith("kernel") and len(w.shape) >= 2]
    saved = [keras.ops.convert_to_numpy(w.value) for w in kernels]
    try:
        for w, value in zip(kernels, saved, strict=True):
            axes = tuple(range(value.ndim - 1))
            scale = np.maximum(np.abs(value).max(axis=axes), 1e-12) / 127.0
            w.assign(np.round(value / scale) * scale)
        return {**_compare(reference, _probabilities(predict, images)),
                "kernels": len(kernels)}
    finally:
        for w, value in zip(kernels, saved, strict=True):
            w.assign(value)


def measure(name, epochs, train_images, images, labels, **overrides):
    model = tiny_models.trained(name, epochs=epochs, count=train_images,
                                **overrides)
    predict = model.inference_model() if name == "ram" else model
    reference = _probabilities(predict, images)
    top2 = np.sort(reference, -1)[:, -2:]
    rng = np.random.default_rng(0)
    dither = rng.uniform(-0.5, 0.5, images.shape).astype("float32") / 255
    dithered = _probabilities(predict, np.clip(images + dither, 0, 1))
    row = {
        "accuracy": float(np.mean(reference.argmax(-1) == labels)),
        "limits": {
            "weight_only_int8": weight_only_int8(model, predict, images,
                                                 reference),
            "input_dither": _compare(reference, dithered)["top1_agreement"],
            "near_ties": float(np.mean(top2[:, 1] - top2[:, 0] < 0.01)),
        },
        "files": {},
    }
    with tempfile.TemporaryDirectory() as out:
        for ranges, quantize in (("mse", "dynamic,float16,int8"),
                                 ("minmax", "int8")):
            manifest = export_model(
                model, out, name=ranges, to="tflite",
                tflite=TFLiteOptions(quantize=quantize,
                                     calibration="fashion_mnist",
                                     calibration_images=200,
                                     int8_ranges=ranges),
                parity=ParityOptions(images=images))
            for tag, entry in manifest["tflite"].items():
                key = f"int8_{ranges}" if tag == "int8" else tag
                row["files"][key] = {
                    **_gaps(entry["parity"]),
                    "shortfalls": entry["parity_shortfalls"],
                    "bytes": entry["bytes"],
                }
                if tag == "int8":
                    row["files"][key]["float_layers"] = entry["float_layers"]
    return row


def table(results):
    """The README's Markdown table."""
    lines = ["| model | test acc. | int8 (MSE ranges) | int8 (min/max) "
             "| dynamic | float16 | dynamic max / mean gap "
             "| int8 kernels only: max gap | ½-grey-level dither "
             "| near ties |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in results.items():
        files, limits = row["files"], row["limits"]
        lines.append(
            f"| {name} | {row['accuracy']:.3f} "
            f"| {files['int8_mse']['top1_agreement']:.3f} "
            f"| {files['int8_minmax']['top1_agreement']:.3f} "
            f"| {files['dynamic']['top1_agreement']:.3f} "
            f"| {files['float16']['top1_agreement']:.3f} "
            f"| {files['dynamic']['max_gap']:.3f} / "
            f"{files['dynamic']['mean_gap']:.4f} "
            f"| {limits['weight_only_int8']['max_gap']:.3f} "
            f"| {limits['input_dither']:.3f} | {limits['near_ties']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.quantization",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(tiny_models.BUILDERS),
                   choices=list(tiny_models.BUILDERS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-images", type=int, default=2048)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--width", type=float, default=None,
                   help="channel multiplier instead of the test model's "
                        "(models whose builder takes `width` only)")
    p.add_argument("--out", default=os.path.join(
        _ROOT, "benchmarks", "results", "quantization.json"))
    args = p.parse_args(argv)
    overrides = {} if args.width is None else {"width": args.width}
    if overrides:
        cannot = [name for name in args.models if name not in _WIDENABLE]
        if cannot:
            p.error(f"--width scales the channels of "
                    f"{', '.join(_WIDENABLE)} only; drop "
                    f"{', '.join(cannot)} from --models")
    images = load_images("fashion_mnist", "test", args.test_images,
                         tiny_models.SHAPE)[0]
    labels = load_fashion_mnist("test")[1][:args.test_images]
    results = {}
    for name in args.models:
        start = time.perf_counter()
        results[name] = measure(name, args.epochs, args.train_images,
                                images, labels, **overrides)
        results[name]["seconds"] = time.perf_counter() - start
        print(name, json.dumps(results[name]), flush=True)
    report = {"epochs": args.epochs, "train_images": args.train_images,
              **({"width": args.width} if overrides else {}),
              "test_images": args.test_images, "calibration_images": 200,
              "models": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(table(results))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
