"""`export_model`: one model to a TF Serving SavedModel and/or TFLite files,
each measured against the model, with a manifest (what `python -m export`
runs).

Its options come in three groups, each a frozen dataclass with defaults
that checks its fields when made (a `ValueError` naming the field and the
fix):

- `SignatureOptions`: how the model is read: `input_shape`, `outputs`,
  `class_names`, `dataset`;
- `TFLiteOptions`: which TFLite files and how: `quantize`, `io_type`,
  `calibration`, `calibration_images`, `batch_size`, `float_layers`,
  `int8_ranges`;
- `ParityOptions`: the held-out images each file is measured on: `images`,
  `source`.

    export_model(model, "exports", name="cbam",
                 tflite=TFLiteOptions(quantize="none,int8",
                                      calibration="fashion_mnist"),
                 parity=ParityOptions(images=500))

A group may also be given as a dict of its fields. The flat keywords of
earlier releases (`quantize=`, `parity_images=`, `class_names=`, ...) still
work for one release, with a `DeprecationWarning`.

Importing this module does not import TensorFlow; `export_model` does.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from .int8_ranges import RANGE_METHODS
from .int8_ranges import check_tensorflow
from .tflite_convert import IO_TYPES
from .tflite_convert import QUANTIZATIONS

TARGETS = ("saved_model", "tflite", "all")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _fail(where, argument, value, expected):
    raise ValueError(
        f"{where}: invalid `{argument}`; expected {expected}. "
        f"Received: {argument}={value!r}"
    )


def _is_count(value, least):
    return (not isinstance(value, bool) and isinstance(value, int)
            and value >= least)


def quantizations(quantize):
    """`quantize` as a tuple without repeats: a name, a comma-separated
    string, or a list of either (`["none", "int8"]`, `"none,int8"`)."""

    def fail(expected):
        _fail("TFLiteOptions", "quantize", quantize, expected)

    items = [quantize] if isinstance(quantize, str) else list(quantize or [])
    names = []
    for item in items:
        if not isinstance(item, str):
            fail(f"names from {list(QUANTIZATIONS)}")
        for name in item.split(","):
            name = name.strip()
            if name not in QUANTIZATIONS:
                fail(f"names from {list(QUANTIZATIONS)}")
            if name not in names:
                names.append(name)
    if not names:
        fail(f"at least one of {list(QUANTIZATIONS)}")
    return tuple(names)


@dataclass(frozen=True)
class SignatureOptions:
    """How the model is read into the serving signature.

    Attributes:
        input_shape: `(H, W, C)` when the model's input has unknown sizes.
        outputs: `"auto"`, `"probabilities"` or `"logits"`: what the
            model's output is (see `export.serving_graph.ServingGraph`).
        class_names: list, comma-separated string or .txt/.json file;
            default: the dataset's names (`dataset`, or `metrics.json`
            beside the `.keras` file), else indices.
        dataset: the training dataset's name (for the class names).
    """

    input_shape: tuple[int, int, int] | None = None
    outputs: str = "auto"
    class_names: object = None
    dataset: str | None = None

    def __post_init__(self):
        if isinstance(self.input_shape, list):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))


@dataclass(frozen=True)
class TFLiteOptions:
    """Which TFLite files `export_model` writes, and how.

    Attributes:
        quantize: the variants: names from `"none"` (float32), `"dynamic"`,
            `"float16"`, `"int8"`, as a list or a comma-separated string
            (kept as a tuple).
        io_type: `"float32"`, or `"uint8"` / `"int8"` integer input and
            float outputs of the `int8` file.
        calibration: `"fashion_mnist"` or a `.npy`/`.npz` image file: the
            int8 representative images (its train split); needed for
            `"int8"`.
        calibration_images: how many of them (a few hundred).
        batch_size: static batch size of the files; `None`: dynamic (1
            until resized).
        float_layers: layer classes whose ops (nested layers included)
            stay float32 in the `int8` file (`"auto"`: the layers that
            declare `int8_keeps_float`, the spatial samplers and the
            attention softmaxes, which int8 cannot resolve); `"none"` (or
            `()`) for none.
        int8_ranges: how the `int8` file's activation ranges are chosen:
            `"mse"` (the calibrated min/max narrowed to the clip with the
            least int8 rounding error, `export.int8_ranges.clip_ranges`) or
            `"minmax"` (the converter's own).

    The `int8` file needs a TensorFlow release its passes were tested with
    (`export.int8_ranges.check_tensorflow`); the others do not.
    """

    quantize: tuple[str, ...] | str = ("none",)
    io_type: str = "float32"
    calibration: str | None = None
    calibration_images: int = 500
    batch_size: int | None = None
    float_layers: tuple[str, ...] | str = "auto"
    int8_ranges: str = "mse"

    def __post_init__(self):
        def fail(argument, expected):
            _fail("TFLiteOptions", argument, getattr(self, argument),
                  expected)

        quantize = quantizations(self.quantize)
        object.__setattr__(self, "quantize", quantize)
        if self.io_type not in IO_TYPES:
            fail("io_type", f"one of {list(IO_TYPES)}")
        if self.io_type != "float32" and "int8" not in quantize:
            fail("io_type",
                 "'float32' unless 'int8' is among the quantizations "
                 "(integer input/output tensors need full-integer "
                 "quantization; io_type applies to the int8 file only)")
        if "int8" in quantize and self.calibration is None:
            fail("calibration",
                 "'fashion_mnist' or a .npy/.npz file of real images: int8 "
                 "quantization is calibrated on real data")
        if not _is_count(self.calibration_images, 1):
            fail("calibration_images", "an integer >= 1")
        if self.batch_size is not None and not _is_count(self.batch_size, 1):
            fail("batch_size", "an integer >= 1, or None (dynamic)")
        float_layers = self.float_layers
        if float_layers not in ("auto", "none"):
            if isinstance(float_layers, str) or not all(
                    isinstance(c, str) for c in float_layers):
                fail("float_layers",
                     "'auto', 'none' or a list of layer class names such "
                     "as ['SpatialTransformer']")
            object.__setattr__(self, "float_layers", tuple(float_layers))
        if self.int8_ranges not in RANGE_METHODS:
            fail("int8_ranges", f"one of {list(RANGE_METHODS)}")


@dataclass(frozen=True, eq=False)
class ParityOptions:
    """The held-out images each file is measured on (`export.parity`).

    Attributes:
        images: how many (`0` or `None`: no parity figures), or an image
            array `(N, H, W, C)` in [0, 1].
        source: where a count of images comes from: `"fashion_mnist"` or a
            `.npy`/`.npz` file, its test split; default: the TFLite
            calibration's, else Fashion-MNIST (uniform random images,
            seed 0, when Fashion-MNIST is not on this machine).
    """

    images: object = 1000
    source: str | None = None

    def __post_init__(self):
        if self.images is not None and not hasattr(self.images, "shape") \
                and not _is_count(self.images, 0):
            _fail("ParityOptions", "images", self.images,
                  "an integer >= 0 (0: no parity figures) or an image array")


# The flat keywords of earlier releases: group and field.
_FLAT = {
    "input_shape": ("signature", "input_shape"),
    "outputs": ("signature", "outputs"),
    "class_names": ("signature", "class_names"),
    "dataset": ("signature", "dataset"),
    "quantize": ("tflite", "quantize"),
    "io_type": ("tflite", "io_type"),
    "calibration": ("tflite", "calibration"),
    "calibration_images": ("tflite", "calibration_images"),
    "tflite_batch_size": ("tflite", "batch_size"),
    "float_layers": ("tflite", "float_layers"),
    "int8_ranges": ("tflite", "int8_ranges"),
    "parity_images": ("parity", "images"),
}
_GROUPS = {"signature": SignatureOptions, "tflite": TFLiteOptions,
           "parity": ParityOptions}


def _group(name, value):
    kind = _GROUPS[name]
    if isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        fields = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(value) - fields)
        if not unknown:
            return kind(**value)
        expected = f"{kind.__name__} fields {sorted(fields)}"
    else:
        expected = f"a {kind.__name__} or a dict of its fields"
    _fail("export_model", name, value, expected)


def _groups(signature, tflite, parity, flat):
    """The three groups, the deprecated flat keywords folded in."""
    groups = {"signature": signature, "tflite": tflite, "parity": parity}
    unknown = sorted(set(flat) - set(_FLAT))
    if unknown:
        raise TypeError(
            f"export_model() got an unexpected keyword argument "
            f"{unknown[0]!r}")
    if flat:
        moved = ", ".join(f"{key}= -> {_FLAT[key][0]}.{_FLAT[key][1]}"
                          for key in flat)
        warnings.warn(
            f"export_model: flat keyword arguments are deprecated and go "
            f"in the next release; pass them in their group "
            f"(signature=SignatureOptions(...), tflite=TFLiteOptions(...), "
            f"parity=ParityOptions(...)): {moved}",
            DeprecationWarning, stacklevel=3)
    for name in groups:
        fields = {field: flat[key] for key, (group, field) in _FLAT.items()
                  if group == name and key in flat}
        given = _group(name, groups[name])
        groups[name] = dataclasses.replace(given, **fields) if fields \
            else given
    return groups["signature"], groups["tflite"], groups["parity"]


def default_name(path):
    """The model name for `path`: the file stem, or for a recipe's
    `RUN/model.keras` the run folder's name."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem == "model":
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        stem = parent or stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip("._-") or "model"


def next_version(base):
    """One more than the largest integer folder name in `base` (1 if
    none): TF Serving serves the largest version."""
    numbers = [int(n) for n in (os.listdir(base) if os.path.isdir(base)
                                else []) if n.isdigit()]
    return max(numbers, default=0) + 1


def _check(to, version, name, tflite):
    if to not in TARGETS:
        _fail("export_model", "to", to, f"one of {list(TARGETS)}")
    if to == "saved_model" and tflite.quantize != ("none",):
        _fail("export_model", "tflite.quantize", tflite.quantize,
              "('none',) with to='saved_model' (quantization applies to "
              "TFLite files; use to='tflite' or 'all')")
    if version is not None and not _is_count(version, 1):
        _fail("export_model", "version", version,
              "an integer >= 1 (or None: next free)")
    if name is not None and (not isinstance(name, str)
                             or not _NAME.match(name)):
        _fail("export_model", "name", name,
              "letters, digits, '.', '_' and '-' (the name in the URL "
              "/v1/models/NAME)")


def _add_parity(entry, kind, reference, got):
    from . import parity

    entry["parity"] = parity.figures(reference, got)
    entry["parity_bar"] = parity.bar(kind, entry["parity"])
    entry["parity_shortfalls"] = parity.shortfalls(kind, entry["parity"])
    if entry["parity_shortfalls"]:
        # Points at the caller of export_model.
        warnings.warn(
            "export_model: " + parity.describe(kind,
                                               entry["parity_shortfalls"]),
            parity.ParityWarning, stacklevel=3)


def _parity_images(parity, calibration, input_shape):
    import numpy as np

    from .calibration import load_images

    if hasattr(parity.images, "shape"):
        images = np.asarray(parity.images, "float32")
        if tuple(images.shape[1:]) != tuple(input_shape):
            _fail("export_model", "parity.images",
                  f"array of shape {images.shape}",
                  f"images (N, {', '.join(map(str, input_shape))})")
        return images, f"{len(images)} given images"
    if not parity.images:
        return None, None
    source = parity.source or calibration or "fashion_mnist"
    try:
        return load_images(source, "test", parity.images, input_shape)
    except FileNotFoundError:  # no Fashion-MNIST on this machine
        rng = np.random.default_rng(0)
        images = rng.random((parity.images, *input_shape), "float32")
        return images, f"{parity.images} uniform random images (seed 0)"


def _dir_bytes(directory):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(directory) for f in files)


def export_model(model, out, *, to="all", name=None, version=None,
                 overwrite=False, signature=SignatureOptions(),
                 tflite=TFLiteOptions(), parity=ParityOptions(), **flat):
    """Export a model as a TF Serving SavedModel and/or TFLite files, with
    a manifest.

    Args:
        model: a `keras.Model` (functional keras_attn classifier or
            `keras_attn.ram.RecurrentAttentionModel`) or a path to a
            `.keras` file.
        out: the model base directory's parent: files go to `out/NAME/`.
        to: `"saved_model"`, `"tflite"` or `"all"`.
        name: model name (URL `/v1/models/NAME`); default: the `.keras`
            file stem (a recipe's `RUN/model.keras`: `RUN`), or
            `model.name`.
        version: SavedModel version folder; default: the next free one.
        overwrite: replace an existing `out/NAME/VERSION`.
        signature: a `SignatureOptions` (or a dict of its fields): input
            shape, what the output is, class names.
        tflite: a `TFLiteOptions` (or a dict): which TFLite files, how
            quantized and calibrated.
        parity: a `ParityOptions` (or a dict): the held-out images.
        **flat: deprecated: the flat keywords of earlier releases
            (`quantize`, `io_type`, `calibration`, `calibration_images`,
            `tflite_batch_size`, `float_layers`, `int8_ranges`,
            `parity_images`, `class_names`, `dataset`, `input_shape`,
            `outputs`), folded into their group with a
            `DeprecationWarning`.

    Returns:
        The manifest (a dict, as written), plus `"written"`: absolute
        paths of what was written (not in the file).

    Raises:
        ValueError: bad arguments (the message names the argument), or a
            version folder that exists (pass `overwrite=True`).
        export.int8_ranges.UntestedTensorFlowError: an `int8` file asked
            for on a TensorFlow release its passes were not tested with
            (raised before anything is written).
    """
    signature, tflite, parity = _groups(signature, tflite, parity, flat)
    _check(to, version, name, tflite)
    if "int8" in tflite.quantize:
        check_tensorflow()
    import keras
    import tensorflow as tf

    from . import manifest as manifest_lib
    from .calibration import load_images
    from .saved_model import write_serving_saved_model
    from .serving_graph import ServingGraph
    from .serving_graph import run_batched
    from .tflite_convert import FILE_TAGS
    from .tflite_convert import convert_serving
    from .tflite_runner import TFLiteModel

    source_path = None
    if isinstance(model, (str, os.PathLike)):
        source_path = os.fspath(model)
        if not os.path.isfile(source_path):
            _fail("export_model", "model", source_path,
                  "a keras.Model or a .keras file")
        import keras_attn  # noqa: F401  (registers the layers for loading)

        model = keras.saving.load_model(source_path)
    elif not isinstance(model, keras.Model):
        _fail("export_model", "model", type(model).__name__,
              "a keras.Model or a path to a .keras file")
    if name is None:
        name = (default_name(source_path) if source_path
                else re.sub(r"[^A-Za-z0-9._-]", "_", model.name))
    graph = ServingGraph(model, input_shape=signature.input_shape,
                         outputs=signature.outputs)
    names, names_from = manifest_lib.resolve_class_names(
        graph.num_classes, signature.class_names, source_path,
        signature.dataset
    )

    base = os.path.join(os.fspath(out), name)
    if version is None:
        version = next_version(base)
    version_dir = os.path.join(base, str(version))
    if to != "tflite" and os.path.exists(version_dir):
        if not overwrite:
            _fail("export_model", "version", version,
                  f"a version not yet in {base} (or overwrite=True)")
        shutil.rmtree(version_dir)

    images, images_from = _parity_images(parity, tflite.calibration,
                                         graph.input_shape)
    reference = graph.reference(images) if images is not None else None
    height, width, channels = graph.input_shape
    manifest = {
        "format": manifest_lib.FORMAT,
        "name": name,
        "version": version,
        "created": _now(),
        "source": {
            "path": os.path.abspath(source_path) if source_path else None,
            "sha256": manifest_lib.sha256(source_path) if source_path
            else None,
            "model_name": model.name,
            "model_class": type(model).__name__,
        },
        "versions": manifest_lib.versions(),
        "input": {"name": "images", "shape": [None, height, width, channels],
                  "dtype": "float32", "range": [0.0, 1.0]},
        "outputs": {k: {"shape": s, "dtype": d}
                    for k, (s, d) in graph.output_specs().items()},
        "class_names": names,
        "class_names_from": names_from,
        "probabilities_from": ("softmax added to the model's logits"
                               if graph.applies_softmax
                               else "the model's softmax output"),
    }
    if graph.extra_output == "attention_maps":
        manifest["attention_maps"] = {
            "names": graph.names,
            "kinds": graph.kinds,
            "sizes": [list(s) for s in graph.sizes],
            "resized_to": [height, width],
            "skipped": graph.skipped,
        }
    elif graph.extra_output == "locations":
        manifest["locations"] = {
            "shape": [None, graph.num_glimpses, 2],
            "meaning": "(x, y) glimpse centres in [-1, 1] of the mean "
                       "policy, x horizontal, y vertical, (-1, -1) the "
                       "top-left corner, one per glimpse in order",
        }
    else:
        manifest["attention_maps"] = None
        if graph.skipped:
            manifest["attention_maps_skipped"] = graph.skipped
    if images is not None:
        manifest["parity"] = {"images": len(images), "source": images_from}
    written = {"manifests": []}

    if to in ("saved_model", "all"):
        signatures = write_serving_saved_model(graph, version_dir)
        entry = {"path": str(version), "signatures": signatures,
                 "bytes": _dir_bytes(version_dir)}
        if images is not None:
            _add_parity(entry, "saved_model", reference, run_batched(
                tf.saved_model.load(version_dir)
                .signatures["serving_default"], images))
        manifest["saved_model"] = entry
        written["saved_model"] = os.path.abspath(version_dir)

    if to in ("tflite", "all"):
        tflite_dir = os.path.join(base, "tflite")
        os.makedirs(tflite_dir, exist_ok=True)
        representative = None
        if "int8" in tflite.quantize:
            representative, calibrated_on = load_images(
                tflite.calibration, "train", tflite.calibration_images,
                graph.input_shape
            )
            manifest["calibration"] = {"images": len(representative),
                                       "source": calibrated_on}
        manifest["tflite"] = {}
        written["tflite"] = {}
        for quantization in tflite.quantize:
            tag = FILE_TAGS[quantization]
            file_io = tflite.io_type if quantization == "int8" else "float32"
            flatbuffer, kept_float = convert_serving(
                graph, quantization,
                representative if quantization == "int8" else None,
                io_type=file_io, batch_size=tflite.batch_size,
                float_layers=(() if tflite.float_layers == "none"
                              else tflite.float_layers),
                ranges=tflite.int8_ranges,
            )
            path = os.path.join(tflite_dir, f"model_{tag}.tflite")
            with open(path, "wb") as f:
                f.write(flatbuffer)
            runner = TFLiteModel(flatbuffer)
            entry = {"path": os.path.join("tflite", f"model_{tag}.tflite"),
                     "bytes": len(flatbuffer),
                     "quantization": quantization, "io_type": file_io,
                     **runner.details()}
            if quantization == "int8":
                entry["float_layers"] = kept_float["float_layers"]
                entry["float_tensors"] = kept_float["float_tensors"]
                entry["int8_sublayers"] = kept_float["int8_sublayers"]
                entry["ranges"] = tflite.int8_ranges
                entry["ranges_narrowed"] = kept_float["narrowed"]
                entry["full_integer"] = not (kept_float["float_layers"]
                                             or kept_float["float_tensors"])
            if images is not None:
                _add_parity(entry, tag, reference, runner.predict(images))
            manifest["tflite"][tag] = entry
            written["tflite"][tag] = os.path.abspath(path)
    # The same document beside each export.
    for key, directory in (("saved_model", version_dir),
                           ("tflite", os.path.join(base, "tflite"))):
        if key in written:
            written["manifests"].append(
                manifest_lib.write_manifest(directory, manifest)
            )
    return {**manifest, "written": written}


def _now():
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
