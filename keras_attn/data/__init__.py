"""Datasets that work offline (see `fashion_mnist`)."""

from keras_attn.data.fashion_mnist import CLASS_NAMES
from keras_attn.data.fashion_mnist import DatasetNotFoundError
from keras_attn.data.fashion_mnist import load_fashion_mnist
from keras_attn.data.ram_tasks import TASK_SPECS
from keras_attn.data.ram_tasks import TASKS
from keras_attn.data.ram_tasks import TaskSpec
from keras_attn.data.ram_tasks import clutter
from keras_attn.data.ram_tasks import load_source
from keras_attn.data.ram_tasks import ram_task
from keras_attn.data.ram_tasks import translate
