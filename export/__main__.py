"""`python -m export MODEL.keras --to saved_model|tflite|all --out DIR ...`

Writes the TF Serving SavedModel and/or the TFLite files of a `.keras`
model (see `export` for the layout), prints where they went and how close
each export is to the Keras model, and exits 2 with the argument's fix on
bad input (or with the way out when `--quantize int8` meets a TensorFlow
release the int8 passes were not tested with). A file that misses its
parity bar (`export.parity`) gets a warning on stderr; with
`--strict-parity` the command then exits 3 (the files are written all the
same, for inspection).

    python -m export runs/cbam_resnet_fashion_mnist/model.keras --to all \\
        --out exports --quantize none,dynamic,int8 --calibration fashion_mnist
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from . import TARGETS
from . import ParityOptions
from . import SignatureOptions
from . import TFLiteOptions
from . import export_model
from .int8_ranges import UntestedTensorFlowError
from .parity import ParityWarning
from .parity import describe


def _input_shape(text):
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected H,W,C such as 28,28,1; got {text!r}"
        )
    return shape


def parser():
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a keras_attn .keras model as a TF Serving "
                    "SavedModel and/or TFLite files (builtin ops only), "
                    "with a manifest of parity figures.",
    )
    p.add_argument("model", help="path to a .keras file")
    p.add_argument("--to", choices=TARGETS, default="all")
    p.add_argument("--out", default="exports",
                   help="parent of the model base path: files go to "
                        "OUT/NAME/ (default: exports)")
    p.add_argument("--name", help="model name, as in /v1/models/NAME "
                                  "(default: from the file or run folder)")
    p.add_argument("--version", type=int,
                   help="SavedModel version folder (default: next free)")
    p.add_argument("--quantize", default="none",
                   help="TFLite variants, comma-separated from none, "
                        "dynamic, float16, int8 (default: none)")
    p.add_argument("--io-type", default="float32",
                   choices=("float32", "uint8", "int8"),
                   help="input/output tensors of the int8 file")
    p.add_argument("--calibration",
                   help="int8 representative images: fashion_mnist or a "
                        ".npy/.npz file")
    p.add_argument("--calibration-images", type=int, default=500)
    p.add_argument("--parity-images", type=int, default=1000,
                   help="held-out images the parity figures are measured "
                        "on (0: none)")
    p.add_argument("--class-names",
                   help="comma-separated names or a .txt/.json file")
    p.add_argument("--dataset", help="training dataset, for class names")
    p.add_argument("--input-shape", type=_input_shape,
                   help="H,W,C when the model's input sizes are unknown")
    p.add_argument("--outputs", choices=("auto", "probabilities", "logits"),
                   default="auto")
    p.add_argument("--float-layers", default="auto",
                   help="int8: comma-separated layer classes kept in "
                        "float32, 'auto' (samplers and self-attention) or "
                        "'none' for a full-integer file")
    p.add_argument("--int8-ranges", choices=("mse", "minmax"),
                   default="mse",
                   help="int8: activation ranges narrowed to the least "
                        "rounding error (mse, default) or the calibrated "
                        "min/max")
    p.add_argument("--strict-parity", action="store_true",
                   help="exit with status 3 when an export misses its "
                        "parity bar (export.parity)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUT/NAME/VERSION")
    return p


def summary(manifest):
    """Short text: what was written and its parity figures."""
    lines = [f"{manifest['name']} (version {manifest['version']}):"]
    written = manifest["written"]
    if "saved_model" in written:
        lines.append(f"  saved_model  {written['saved_model']}  "
                     f"{json.dumps(manifest['saved_model'].get('parity'))}")
    for tag, path in written.get("tflite", {}).items():
        entry = manifest["tflite"][tag]
        lines.append(f"  tflite {tag:<8} {path}  {entry['bytes']} bytes  "
                     f"{json.dumps(entry.get('parity'))}")
    for path in written["manifests"]:
        lines.append(f"  manifest     {path}")
    return "\n".join(lines)


# What to try instead when a file misses its bar.
_ADVICE = {
    "int8": "try the dynamic or float16 file",
    "dynamic": "try the float16 file",
    "float16": "try the float32 file",
}


def parity_warnings(manifest):
    """One line per export that misses its parity bar."""
    entries = [("saved_model", manifest.get("saved_model"))] + list(
        manifest.get("tflite", {}).items())
    lines = []
    for kind, entry in entries:
        missed = (entry or {}).get("parity_shortfalls")
        if missed:
            advice = _ADVICE.get(kind)
            lines.append("python -m export: warning: "
                         + describe(kind, missed)
                         + (f": {advice}" if advice else ""))
    return lines


def main(argv=None):
    args = parser().parse_args(argv)
    if args.strict_parity and args.parity_images == 0:
        print("python -m export: error: --strict-parity needs parity "
              "figures; pass --parity-images N with N > 0",
              file=sys.stderr)
        return 2
    try:
        signature = SignatureOptions(
            input_shape=args.input_shape, outputs=args.outputs,
            class_names=args.class_names, dataset=args.dataset)
        tflite = TFLiteOptions(
            quantize=args.quantize, io_type=args.io_type,
            calibration=args.calibration,
            calibration_images=args.calibration_images,
            float_layers=(args.float_layers
                          if args.float_layers in ("auto", "none")
                          else args.float_layers.split(",")),
            int8_ranges=args.int8_ranges)
        # parity_warnings() reports shortfalls below, with advice.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ParityWarning)
            manifest = export_model(
                args.model, args.out, to=args.to, name=args.name,
                version=args.version, overwrite=args.overwrite,
                signature=signature, tflite=tflite,
                parity=ParityOptions(images=args.parity_images),
            )
    except (ValueError, UntestedTensorFlowError) as error:
        print(f"python -m export: error: {error}", file=sys.stderr)
        return 2
    print(summary(manifest))
    missed = parity_warnings(manifest)
    for line in missed:
        print(line, file=sys.stderr)
    return 3 if missed and args.strict_parity else 0


if __name__ == "__main__":
    sys.exit(main())
