"""SavedModel export: the TF Serving model, and a plain one for tests.

`write_serving_saved_model(graph, directory)` writes what `python -m
export` ships (see `export.serving_graph.ServingGraph` for the outputs),
with two signatures, the contract the REST server (`export.serve`) and TF
Serving clients rely on:

- `serving_default`: `images` float32 `(None, H, W, C)` in [0, 1] ->
  `probabilities` float32 `(None, K)`, `classes` int64 `(None,)` and, where
  the model has them, `attention_maps` float32 `(None, M, H, W)` (RAM:
  `locations` float32 `(None, T, 2)`).
- `serve_image_bytes`: `image_bytes` string `(None,)` of encoded
  PNG/JPEG/BMP/GIF (first frame)/WebP -> the same outputs; each image is
  decoded to C channels, resized bilinearly to H x W when its size differs
  and scaled to [0, 1].

The weights are constants of the graph (see `ServingGraph.frozen`): the
directory loads with plain TensorFlow, without Keras or keras_attn.

`write_saved_model(model, directory)` is the older, model-agnostic export
(`serve` signature, `input_0..` -> `output_0..`, variables kept) that the
layer tests use.
"""

from __future__ import annotations

import keras


def _signature(model, batch_size):
    import tensorflow as tf

    return [
        tf.TensorSpec((batch_size, *tuple(t.shape)[1:]), "float32",
                      name=f"input_{i}")
        for i, t in enumerate(model.inputs)
    ]


def _serve_fn(model):
    import tensorflow as tf

    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0],
                        training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return {
            f"output_{i}": tf.cast(o, "float32")
            for i, o in enumerate(outputs)
        }

    return serve


def write_saved_model(model, directory, batch_size=None):
    """Write `model` to `directory` as a SavedModel (TensorFlow backend).

    Args:
        model: a built Keras model.
        directory: output directory (created).
        batch_size: static batch size, or `None` for a dynamic batch axis.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", _serve_fn(model),
        input_signature=_signature(model, batch_size),
    )
    archive.write_out(directory, verbose=False)


SIGNATURES = ("serving_default", "serve_image_bytes")


def write_serving_saved_model(graph, directory):
    """Write `graph` (an `export.serving_graph.ServingGraph`) to
    `directory` as a SavedModel with the signatures of `SIGNATURES`.

    Returns:
        `{signature: {"inputs": {name: spec}, "outputs": {name: spec}}}`,
        each spec `{"shape": [...], "dtype": ...}` (`None`: dynamic).
    """
    import tensorflow as tf

    serving_default = graph.frozen(None)

    def serve_image_bytes(image_bytes):
        return serving_default(graph.decode_images(image_bytes))

    serve_image_bytes = tf.function(
        serve_image_bytes,
        input_signature=[tf.TensorSpec((None,), tf.string,
                                       name="image_bytes")],
        autograph=False,
    )
    module = tf.Module()
    module.serving_default = serving_default
    module.serve_image_bytes = serve_image_bytes
    tf.saved_model.save(module, directory, signatures={
        "serving_default": serving_default.get_concrete_function(),
        "serve_image_bytes": serve_image_bytes.get_concrete_function(),
    })
    outputs = {
        name: {"shape": shape, "dtype": dtype}
        for name, (shape, dtype) in graph.output_specs().items()
    }
    return {
        "serving_default": {
            "inputs": {"images": {"shape": [None, *graph.input_shape],
                                  "dtype": "float32"}},
            "outputs": outputs,
        },
        "serve_image_bytes": {
            "inputs": {"image_bytes": {"shape": [None], "dtype": "string"}},
            "outputs": outputs,
        },
    }
