"""Datasets that work offline (see `fashion_mnist`)."""

from keras_attn.data.fashion_mnist import CLASS_NAMES
from keras_attn.data.fashion_mnist import DatasetNotFoundError
from keras_attn.data.fashion_mnist import load_fashion_mnist
