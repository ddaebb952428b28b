"""Training recipes: `python -m recipes.NAME` from the checkout root,
`python -m keras_attn.recipes.NAME` installed (the same modules)."""

# First, before a recipe imports Keras (and so TensorFlow): on a machine
# without an NVIDIA driver, keep TensorFlow's harmless CUDA probe error off
# the console (keras_attn/utils/tensorflow_logs.py).
from keras_attn.utils.tensorflow_logs import quiet_cuda_probe

quiet_cuda_probe()
