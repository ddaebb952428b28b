"""Export keras_attn models for TF Serving (SavedModel) and devices (TFLite).

    python -m export MODEL.keras --to all --out DIR \\
        --quantize none,dynamic,int8 --calibration fashion_mnist

or from Python:

    from keras_attn.export import TFLiteOptions, export_model
    manifest = export_model(model, "exports", name="cbam", to="all",
                            tflite=TFLiteOptions(quantize=["none", "int8"],
                                                 calibration="fashion_mnist"))

(`export.pipeline`, with the option groups `SignatureOptions`,
`TFLiteOptions` and `ParityOptions`).

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

The modules, one job each:

- `pipeline`: `export_model` and its option groups;
- `serving_graph`: `ServingGraph`, the images -> probabilities, classes,
  attention maps graph that the SavedModel and the TFLite files share;
- `saved_model`: writing the TF Serving SavedModel;
- `tflite_convert`: conversion to builtin-only TFLite files;
- `int8_ranges`: the int8 file's calibration and range passes (private
  TensorFlow APIs, gated on the TensorFlow releases they were tested
  with);
- `tflite_runner`: running TFLite files with LiteRT (`TFLiteModel`);
- `calibration`, `manifest`, `parity`: the images, the manifest, the
  parity figures and bars;
- `serve`: the TF Serving-compatible REST server (`python -m export.serve`),
  with `_http` (timeouts, bodies, gzip), `_rest_json` (TF Serving's REST
  JSON codec) and `_images` (image sizes from headers).

Installed, this package is `keras_attn.export` (`python -m keras_attn.export`);
from the checkout root `python -m export` runs the same modules. Its own
modules import no TensorFlow at import time (importing `keras_attn.export`
imports `keras_attn`, and so Keras and its backend); `export_model` imports
TensorFlow when called.
"""

from __future__ import annotations

from .pipeline import TARGETS
from .pipeline import ParityOptions
from .pipeline import SignatureOptions
from .pipeline import TFLiteOptions
from .pipeline import export_model

__all__ = ["TARGETS", "ParityOptions", "SignatureOptions", "TFLiteOptions",
           "export_model"]
