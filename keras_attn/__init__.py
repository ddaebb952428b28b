"""keras_attn: trainable visual attention for Keras 3.

Layers (`keras_attn.layers`) are written in `keras.ops` and run on the
TensorFlow, JAX and torch backends; models (`keras_attn.models`) are
functional Keras models with a no-attention baseline of the same backbone.
"""

from keras_attn.utils.tensorflow_logs import quiet_cuda_probe

# Before anything imports TensorFlow: a recipe run (`python -m
# recipes.NAME`) on a machine without an NVIDIA driver would otherwise
# print TensorFlow's harmless "failed call to cuInit" error
# (keras_attn/utils/tensorflow_logs.py says why; docs/recipes.md).
quiet_cuda_probe()

from keras_attn import layers  # noqa: E402
from keras_attn import models  # noqa: E402
from keras_attn import ops  # noqa: E402
from keras_attn import ram  # noqa: E402

__version__ = "0.1.0"

__all__ = ["layers", "models", "ops", "ram", "__version__"]
