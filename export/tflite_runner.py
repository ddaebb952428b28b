"""Running TFLite flatbuffers with LiteRT (`ai_edge_litert`).

- `TFLiteModel(flatbuffer)`: a file from `export.tflite_convert.
  convert_serving` (the shipped `serving_default` signature), run on float
  images in [0, 1] whatever its io type: integer inputs are quantized and
  integer outputs dequantized with the tensors' own `(scale, zero_point)`.
- `run_tflite(flatbuffer, inputs)`: a file from `export.tflite_convert.
  convert` (inputs `input_0..`, outputs `output_0..`), the layer tests'
  check.
- `inspecting_interpreter(flatbuffer)`: every intermediate tensor readable
  after `invoke` (reference kernels), for comparing files tensor by tensor.
- `op_names(flatbuffer)`: the operators a file uses (to show it is
  builtin-only).

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np


def _interpreter(flatbuffer, num_threads=1):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def inspecting_interpreter(flatbuffer):
    """An allocated interpreter for `flatbuffer` whose every intermediate
    tensor stays readable after `invoke` (reference kernels, no delegate),
    for comparing a file's tensors one by one."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    interpreter = Interpreter(
        model_content=bytes(flatbuffer),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
    )
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(flatbuffer, inputs, num_threads=1):
    """Run a flatbuffer made by `export.tflite_convert.convert` on a list
    of float32 arrays and return its outputs as a list in `model.outputs`
    order."""
    interpreter = _interpreter(flatbuffer, num_threads)
    runner = interpreter.get_signature_runner()
    feeds = {
        f"input_{i}": np.asarray(x, "float32") for i, x in enumerate(inputs)
    }
    result = runner(**feeds)
    return [result[f"output_{i}"] for i in range(len(result))]


def op_names(flatbuffer):
    """The set of operator names in a flatbuffer (to show it is builtin-only).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    # LiteRT has no public op listing; `_get_ops_details` is its private
    # one (ai-edge-litert 2.3).
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        raise RuntimeError(
            "op_names: this ai-edge-litert's Interpreter has no "
            "`_get_ops_details` (tested with ai-edge-litert 2.3); list the "
            "ops with `tf.lite.experimental.Analyzer.analyze` instead."
        )
    return {d["op_name"] for d in details()}


class TFLiteModel:
    """A flatbuffer from `export.tflite_convert.convert_serving`, run with
    LiteRT.

    Args:
        flatbuffer: the file's bytes, or its path.
        num_threads: interpreter threads.

    `predict(images)` takes float32 images `(N, H, W, C)` in [0, 1],
    quantizes them when the input is an integer tensor, runs them in
    batches (one image at a time for a static batch of 1) and returns
    `{output name: array}` with integer outputs dequantized to float32
    (`classes` stays int64).
    """

    def __init__(self, flatbuffer, num_threads=1):
        if isinstance(flatbuffer, (str, os.PathLike)):
            with open(flatbuffer, "rb") as f:
                flatbuffer = f.read()
        self.interpreter = _interpreter(flatbuffer, num_threads)
        self.runner = self.interpreter.get_signature_runner(
            "serving_default"
        )
        (self.input,) = self.runner.get_input_details().values()
        self.outputs = self.runner.get_output_details()
        signature = self.input["shape_signature"]
        self.static_batch = None if signature[0] == -1 else int(signature[0])

    @property
    def input_dtype(self):
        return np.dtype(self.input["dtype"]).name

    def _quantize(self, images):
        dtype = np.dtype(self.input["dtype"])
        if dtype == np.float32:
            return images
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(images / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, name, values):
        details = self.outputs[name]
        dtype = np.dtype(details["dtype"])
        if dtype not in (np.dtype("uint8"), np.dtype("int8")):
            return values
        scale, zero_point = details["quantization"]
        return ((values.astype("float32") - zero_point) * scale).astype(
            "float32"
        )

    def predict(self, images, batch_size=100):
        images = np.asarray(images, "float32")
        size = self.static_batch or batch_size
        parts = []
        for start in range(0, len(images), size):
            chunk = self._quantize(images[start:start + size])
            pad = 0
            if self.static_batch and len(chunk) < size:
                pad = size - len(chunk)
                chunk = np.concatenate([chunk, chunk[-1:].repeat(pad, 0)])
            out = self.runner(images=chunk)
            parts.append({k: v[:len(v) - pad] for k, v in out.items()})
        return {
            k: self._dequantize(k, np.concatenate([p[k] for p in parts]))
            for k in parts[0]
        }

    def details(self):
        """Input and output tensors: dtype, shape signature and
        `(scale, zero_point)` quantization (for the manifest)."""

        def describe(d):
            scale, zero_point = d["quantization"]
            entry = {
                "dtype": np.dtype(d["dtype"]).name,
                "shape": [None if s == -1 else int(s)
                          for s in d["shape_signature"]],
            }
            if scale:
                entry["quantization"] = {"scale": float(scale),
                                         "zero_point": int(zero_point)}
            return entry

        return {
            "inputs": {"images": describe(self.input)},
            "outputs": {k: describe(v) for k, v in sorted(
                self.outputs.items())},
        }
