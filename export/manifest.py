"""The manifest JSON written beside every export.

`DIR/NAME/VERSION/manifest.json` (next to `saved_model.pb`; TF Serving
ignores files it does not know) and `DIR/NAME/tflite/manifest.json` hold
the same document, which says what was exported and how well it matches
the Keras model:

- `format`, `name`, `version`, `created` (UTC, ISO 8601).
- `source`: the `.keras` file (`path`, `sha256`) when exported from one,
  the model's `name` and `class`.
- `versions`: keras, tensorflow, ai_edge_litert, keras_attn, numpy, python.
- `input`: `name`, `shape` (`null` batch), `dtype`, `range` [0, 1].
- `outputs`: `{name: {shape, dtype}}`; `class_names` (and where they came
  from); `attention_maps` (the stacked maps' names, kinds and sizes before
  resizing; `skipped` non-spatial maps) or, for RAM, `locations`.
- `saved_model`: `path`, `signatures`, `bytes`, `parity` (and its bar,
  below).
- `tflite`: per quantization tag (`float32`, `dynamic`, `float16`,
  `int8`): `path`, `bytes`, `quantization`, `io_type`, tensor details and
  `parity`; for `int8`, `float_layers` (layers whose ops stayed float32),
  `int8_sublayers` (nested layers of those that are int8 all the same),
  `float_tensors` (outputs of other ops left float32: empty calibrated
  range, or a constant operand int8 cannot hold), `full_integer`,
  `ranges` (`mse` or `minmax`) and `ranges_narrowed` (how many activation
  ranges the MSE clip narrowed).
- `calibration` (int8): where the images came from; `parity`: the images
  the figures were measured on (held out from calibration).

Parity figures: `max_abs_diff` and `mean_abs_diff` per float output
against the Keras model
(its probabilities, and attention maps computed from its layers' maps),
and `top1_agreement` of `classes` with the Keras model's. Beside each
`parity`: `parity_bar`, the bar that kind of file is held to
(`{figure: [comparison, bound]}`, `export.parity.BARS`), and
`parity_shortfalls`, the figures that miss it (empty when it is met).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform

MANIFEST = "manifest.json"
FORMAT = "keras_attn.export/1"


def sha256(path):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(module):
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed: say so rather than fail an export
        return None


def versions():
    """Versions of the libraries that made (and can read) the export."""
    return {
        "keras": _version("keras"),
        "tensorflow": _version("tensorflow"),
        "ai_edge_litert": _version("ai-edge-litert"),
        "keras_attn": _version("keras_attn"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
    }


def _fail(argument, value, expected):
    raise ValueError(
        f"export: invalid `{argument}`; expected {expected}. "
        f"Received: {argument}={value!r}"
    )


def _parse_class_names(class_names):
    if isinstance(class_names, (list, tuple)):
        return [str(c) for c in class_names]
    if not isinstance(class_names, str) or not class_names.strip():
        _fail("class_names", class_names,
              "a list of names, a comma-separated string or a path to a "
              ".txt (one per line) or .json (a list) file")
    if os.path.isfile(class_names):
        with open(class_names) as f:
            if class_names.endswith(".json"):
                names = json.load(f)
                if not isinstance(names, list):
                    _fail("class_names", class_names,
                          "a .json file holding a list of names")
                return [str(c) for c in names]
            return [line.strip() for line in f if line.strip()]
    return [c.strip() for c in class_names.split(",")]


def _dataset_of(model_path):
    """The dataset a recipe trained on, from `metrics.json` beside the
    `.keras` file (`None` when there is none)."""
    if not model_path:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)),
                        "metrics.json")
    try:
        with open(path) as f:
            return json.load(f).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None


def resolve_class_names(num_classes, class_names=None, model_path=None,
                        dataset=None):
    """`(names, source)`: one name per class.

    In order: `class_names` when given (list, comma-separated string, or a
    .txt / .json file); the class names of `dataset`, or of the dataset in
    `metrics.json` beside `model_path` (what the recipes write); otherwise
    the indices `"0".."K-1"`.

    Raises:
        ValueError: `class_names` does not hold `num_classes` names.
    """
    if class_names is not None:
        names = _parse_class_names(class_names)
        if len(names) != num_classes:
            _fail("class_names", class_names,
                  f"{num_classes} names, one per class of the model "
                  f"(got {len(names)})")
        return names, "class_names"
    dataset = dataset or _dataset_of(model_path)
    if dataset:
        try:
            from keras_attn.data import dataset_info

            names = list(dataset_info(dataset).class_names)
        except (ImportError, ValueError):
            names = None
        if names is not None and len(names) == num_classes:
            return names, f"dataset {dataset}"
    return [str(i) for i in range(num_classes)], "indices"


def write_manifest(directory, manifest):
    """Write `manifest` to `directory/manifest.json`; returns the path."""
    path = os.path.join(directory, MANIFEST)
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2, default=float)
        f.write("\n")
    return path


def read_manifest(path):
    """The manifest of an export: `path` is the file itself or the
    directory holding it (a SavedModel version or a `tflite` folder)."""
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST)
    with open(path) as f:
        return json.load(f)
