"""SavedModel export of a Keras model with a plain, named signature.

The `serve` (and `serving_default`) signature takes `input_0..` float32
tensors with a dynamic batch axis and returns `output_0..` in the order of
`model.outputs`, all float32 (mixed-precision models included), so serving
code does not depend on Keras' internal tensor names.
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
