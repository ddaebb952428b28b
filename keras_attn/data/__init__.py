"""Datasets for the recipes: `load(name, split, ...)` -> `tf.data`.

`fashion_mnist` works offline from Debian's `dataset-fashion-mnist`; the
other datasets come from tensorflow-datasets; the RAM tasks (translated and
cluttered canvases) and the STN paper's RTS task (`rts`: rotated, scaled,
translated) are generated on the fly. Only `fashion_mnist`'s NumPy
loader works without TensorFlow: the rest is imported on first use, so
`keras_attn.data.load_fashion_mnist` stays usable on a JAX or torch machine
that has no TensorFlow.
"""

import importlib

from keras_attn.data.fashion_mnist import CLASS_NAMES
from keras_attn.data.fashion_mnist import DatasetNotFoundError
from keras_attn.data.fashion_mnist import load_fashion_mnist

_LAZY = {
    "DATASETS": ("datasets", "DATASETS"),
    "DatasetInfo": ("datasets", "DatasetInfo"),
    "dataset_info": ("datasets", "info"),
    "load": ("datasets", "load"),
    "load_arrays": ("datasets", "load_arrays"),
    "rts": ("distortions", "rts"),
    "TASK_SPECS": ("ram_tasks", "TASK_SPECS"),
    "TASKS": ("ram_tasks", "TASKS"),
    "TaskSpec": ("ram_tasks", "TaskSpec"),
    "clutter": ("ram_tasks", "clutter"),
    "load_source": ("ram_tasks", "load_source"),
    "ram_task": ("ram_tasks", "ram_task"),
    "translate": ("ram_tasks", "translate"),
}

__all__ = [
    "CLASS_NAMES",
    "DatasetNotFoundError",
    "load_fashion_mnist",
    *_LAZY,
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_attn.data' has no attribute "
                             f"{name!r}")
    module, attribute = _LAZY[name]
    value = getattr(
        importlib.import_module(f"keras_attn.data.{module}"), attribute
    )
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
