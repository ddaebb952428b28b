"""keras_attn: trainable visual attention for Keras 3.

Layers (`keras_attn.layers`) are written in `keras.ops` and run on the
TensorFlow, JAX and torch backends; models (`keras_attn.models`) are
functional Keras models with a no-attention baseline of the same backbone.
"""

from keras_attn import layers
from keras_attn import models
from keras_attn import ops
from keras_attn import ram

__version__ = "0.1.0"

__all__ = ["layers", "models", "ops", "ram", "__version__"]
