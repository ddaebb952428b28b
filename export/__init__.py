"""Export keras_attn models for TF Serving (SavedModel) and devices (TFLite).

    python -m export MODEL.keras --to all --out DIR \\
        --quantize none,dynamic,int8 --calibration fashion_mnist

or from Python:

    from export import export_model
    manifest = export_model(model, "exports", name="cbam", to="all",
                            quantize=["none", "int8"],
                            calibration="fashion_mnist")

What is written under `DIR/NAME/` (TF Serving's model base path):

- `VERSION/saved_model.pb` (+ `variables/`, empty: the weights are graph
  constants) and `VERSION/manifest.json`. `VERSION` is `--version`, or
  one more than the largest numeric folder already there (1 at first), so
  a re-export becomes the new version TF Serving picks up.
- `tflite/model_<tag>.tflite`, `<tag>` in `float32` (`--quantize none`),
  `dynamic`, `float16`, `int8`, and `tflite/manifest.json` (the same
  document as the SavedModel's). TF Serving ignores the non-numeric
  `tflite` folder; a re-export overwrites the files there.

Signatures (SavedModel and TFLite `serving_default`; the SavedModel also
has `serve_image_bytes` taking encoded JPEG/PNG strings): `images` float32
`(batch, H, W, C)` in [0, 1] -> `probabilities` float32 `(batch, K)`,
`classes` int64 `(batch,)`, and `attention_maps` float32 `(batch, M, H, W)`
when the model has spatial attention maps (a RAM model: `locations`
float32 `(batch, T, 2)`). See `export.serving_graph` for how the maps are
computed and `export.manifest` for the manifest.

The int8 file keeps some ops in float32
(`export.tflite_convert.convert_serving`): by default those of the spatial
samplers and attention-softmax layers, which int8 cannot resolve
(`--float-layers`); always those whose calibrated range is empty, which
would crash LiteRT's XNNPACK delegate; and unfolded BatchNorms whose
per-channel factors one int8 scale cannot hold. The manifest lists them
(`float_layers`, `int8_sublayers`, `float_tensors`, `full_integer`). Its
activation ranges are the calibrated min/max narrowed to the clip with the
least int8 rounding error (`int8_ranges="mse"`,
`export.int8_ranges.clip_ranges`; `"minmax"` keeps them), then widened to a
common range where int8 needs one scale (`harmonize_ranges`).

Each file's parity with the Keras model is measured on held-out images
and held to a bar (`export.parity`): the manifest records the figures, the
bar and any shortfall, and a file that misses it raises a
`export.parity.ParityWarning`.

Importing this package is cheap (no TensorFlow); `export_model` imports
TensorFlow when called.
"""

from __future__ import annotations

import os
import re
import shutil

TARGETS = ("saved_model", "tflite", "all")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _fail(argument, value, expected):
    raise ValueError(
        f"export_model: invalid `{argument}`; expected {expected}. "
        f"Received: {argument}={value!r}"
    )


def quantizations(quantize):
    """`quantize` as a list without repeats: a name, a comma-separated
    string, or a list of either (`["none", "int8"]`, `"none,int8"`)."""
    from export.tflite_convert import QUANTIZATIONS

    items = [quantize] if isinstance(quantize, str) else list(quantize or [])
    names = []
    for item in items:
        if not isinstance(item, str):
            _fail("quantize", quantize, f"names from {list(QUANTIZATIONS)}")
        for name in item.split(","):
            name = name.strip()
            if name not in QUANTIZATIONS:
                _fail("quantize", quantize,
                      f"names from {list(QUANTIZATIONS)}")
            if name not in names:
                names.append(name)
    if not names:
        _fail("quantize", quantize,
              f"at least one of {list(QUANTIZATIONS)}")
    return names


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


def _check(to, quantize, io_type, calibration, version, name,
           calibration_images, parity_images):
    from export.tflite_convert import IO_TYPES

    if to not in TARGETS:
        _fail("to", to, f"one of {list(TARGETS)}")
    quantize = quantizations(quantize)
    if to == "saved_model" and quantize != ["none"]:
        _fail("quantize", quantize,
              "['none'] with to='saved_model' (quantization applies to "
              "TFLite files; use to='tflite' or 'all')")
    if io_type not in IO_TYPES:
        _fail("io_type", io_type, f"one of {list(IO_TYPES)}")
    if io_type != "float32" and "int8" not in quantize:
        _fail("io_type", io_type,
              "'float32' unless 'int8' is among the quantizations "
              "(integer input/output tensors need full-integer "
              "quantization; io_type applies to the int8 file only)")
    if "int8" in quantize and calibration is None:
        _fail("calibration", calibration,
              "'fashion_mnist' or a .npy/.npz file of real images: int8 "
              "quantization is calibrated on real data")
    if version is not None and (isinstance(version, bool)
                                or not isinstance(version, int)
                                or version < 1):
        _fail("version", version, "an integer >= 1 (or None: next free)")
    if name is not None and (not isinstance(name, str)
                             or not _NAME.match(name)):
        _fail("name", name,
              "letters, digits, '.', '_' and '-' (the name in the URL "
              "/v1/models/NAME)")
    if isinstance(calibration_images, bool) or not isinstance(
        calibration_images, int
    ) or calibration_images < 1:
        _fail("calibration_images", calibration_images, "an integer >= 1")
    if parity_images is not None and not hasattr(parity_images, "shape") \
            and (isinstance(parity_images, bool)
                 or not isinstance(parity_images, int)
                 or parity_images < 0):
        _fail("parity_images", parity_images,
              "an integer >= 0 (0: no parity figures) or an image array")
    return quantize


def _add_parity(entry, kind, reference, got):
    import warnings

    from export import parity

    entry["parity"] = parity.figures(reference, got)
    entry["parity_bar"] = parity.bar(kind, entry["parity"])
    entry["parity_shortfalls"] = parity.shortfalls(kind, entry["parity"])
    if entry["parity_shortfalls"]:
        # Points at the caller of export_model.
        warnings.warn(
            "export_model: " + parity.describe(kind,
                                               entry["parity_shortfalls"]),
            parity.ParityWarning, stacklevel=3)


def _parity_images(parity_images, calibration, input_shape):
    import numpy as np

    from export.calibration import load_images

    if hasattr(parity_images, "shape"):
        images = np.asarray(parity_images, "float32")
        if tuple(images.shape[1:]) != tuple(input_shape):
            _fail("parity_images", f"array of shape {images.shape}",
                  f"images (N, {', '.join(map(str, input_shape))})")
        return images, f"{len(images)} given images"
    if not parity_images:
        return None, None
    source = calibration if calibration is not None else "fashion_mnist"
    try:
        return load_images(source, "test", parity_images, input_shape)
    except FileNotFoundError:  # no Fashion-MNIST on this machine
        rng = np.random.default_rng(0)
        images = rng.random((parity_images, *input_shape), "float32")
        return images, f"{parity_images} uniform random images (seed 0)"


def _dir_bytes(directory):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(directory) for f in files)


def export_model(model, out, name=None, version=None, to="all",
                 quantize=("none",), io_type="float32", calibration=None,
                 calibration_images=500, parity_images=1000,
                 class_names=None, dataset=None, input_shape=None,
                 outputs="auto", tflite_batch_size=None, float_layers="auto",
                 int8_ranges="mse", overwrite=False):
    """Export a model as a TF Serving SavedModel and/or TFLite files, with
    a manifest.

    Args:
        model: a `keras.Model` (functional keras_attn classifier or
            `keras_attn.ram.RecurrentAttentionModel`) or a path to a
            `.keras` file.
        out: the model base directory's parent: files go to `out/NAME/`.
        name: model name (URL `/v1/models/NAME`); default: the `.keras`
            file stem (a recipe's `RUN/model.keras`: `RUN`), or
            `model.name`.
        version: SavedModel version folder; default: the next free one.
        to: `"saved_model"`, `"tflite"` or `"all"`.
        quantize: TFLite variants: names from `"none"` (float32),
            `"dynamic"`, `"float16"`, `"int8"`, as a list or a
            comma-separated string.
        io_type: `"float32"`, or `"uint8"` / `"int8"` integer input and
            float outputs of the `int8` file.
        calibration: `"fashion_mnist"` or a `.npy`/`.npz` image file: the
            int8 representative images (its train split).
        calibration_images: how many of them (a few hundred).
        parity_images: number of held-out images (test split of
            `calibration`, else Fashion-MNIST) to measure parity on, `0`
            for none, or an image array `(N, H, W, C)` in [0, 1].
        class_names: list, comma-separated string or .txt/.json file;
            default: the dataset's names (`dataset`, or `metrics.json`
            beside the `.keras` file), else indices.
        dataset: the training dataset's name (for the class names).
        input_shape: `(H, W, C)` when the model's input has unknown sizes.
        outputs: `"auto"`, `"probabilities"` or `"logits"` (see
            `ServingGraph`).
        tflite_batch_size: static TFLite batch size; `None`: dynamic
            (1 until resized).
        float_layers: layer classes whose ops (nested layers included)
            stay float32 in the `int8` file (`"auto"`: the layers that
            declare `int8_keeps_float`, the spatial samplers and the
            attention softmaxes, which int8 cannot resolve); `()` or
            `"none"` for none.
        int8_ranges: how the `int8` file's activation ranges are chosen:
            `"mse"` (the calibrated min/max narrowed to the clip with the
            least int8 rounding error, `export.int8_ranges.clip_ranges`) or
            `"minmax"` (the converter's own).
        overwrite: replace an existing `out/NAME/VERSION`.

    Returns:
        The manifest (a dict, as written), plus `"written"`: absolute
        paths of what was written (not in the file).

    Raises:
        ValueError: bad arguments (the message names the argument), or a
            version folder that exists (pass `overwrite=True`).
    """
    quantize = _check(to, quantize, io_type, calibration, version, name,
                      calibration_images, parity_images)
    if float_layers not in ("auto", "none") and (
            isinstance(float_layers, str)
            or not all(isinstance(c, str) for c in float_layers)):
        _fail("float_layers", float_layers,
              "'auto', 'none' or a list of layer class names such as "
              "['SpatialTransformer']")
    from export.int8_ranges import RANGE_METHODS

    if int8_ranges not in RANGE_METHODS:
        _fail("int8_ranges", int8_ranges, f"one of {list(RANGE_METHODS)}")
    if "int8" in quantize:
        from export.int8_ranges import check_tensorflow

        check_tensorflow()  # before anything is written
    import keras
    import tensorflow as tf

    from export import manifest as manifest_lib
    from export.calibration import load_images
    from export.saved_model import write_serving_saved_model
    from export.serving_graph import ServingGraph
    from export.serving_graph import run_batched
    from export.tflite_convert import FILE_TAGS
    from export.tflite_convert import convert_serving
    from export.tflite_runner import TFLiteModel

    source_path = None
    if isinstance(model, (str, os.PathLike)):
        source_path = os.fspath(model)
        if not os.path.isfile(source_path):
            _fail("model", source_path, "a keras.Model or a .keras file")
        import keras_attn  # noqa: F401  (registers the layers for loading)

        model = keras.saving.load_model(source_path)
    elif not isinstance(model, keras.Model):
        _fail("model", type(model).__name__,
              "a keras.Model or a path to a .keras file")
    if name is None:
        name = (default_name(source_path) if source_path
                else re.sub(r"[^A-Za-z0-9._-]", "_", model.name))
    graph = ServingGraph(model, input_shape=input_shape, outputs=outputs)
    names, names_from = manifest_lib.resolve_class_names(
        graph.num_classes, class_names, source_path, dataset
    )

    base = os.path.join(os.fspath(out), name)
    if version is None:
        version = next_version(base)
    version_dir = os.path.join(base, str(version))
    if to != "tflite" and os.path.exists(version_dir):
        if not overwrite:
            _fail("version", version,
                  f"a version not yet in {base} (or overwrite=True)")
        shutil.rmtree(version_dir)

    images, images_from = _parity_images(parity_images, calibration,
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
        if "int8" in quantize:
            representative, calibrated_on = load_images(
                calibration, "train", calibration_images, graph.input_shape
            )
            manifest["calibration"] = {"images": len(representative),
                                       "source": calibrated_on}
        manifest["tflite"] = {}
        written["tflite"] = {}
        for quantization in quantize:
            tag = FILE_TAGS[quantization]
            file_io = io_type if quantization == "int8" else "float32"
            flatbuffer, kept_float = convert_serving(
                graph, quantization,
                representative if quantization == "int8" else None,
                io_type=file_io, batch_size=tflite_batch_size,
                float_layers=() if float_layers == "none" else float_layers,
                ranges=int8_ranges,
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
                entry["ranges"] = int8_ranges
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
