"""`recipes/common.py`'s plain helpers, without training: the validation
slice, the NumPy path's splits, the quiet CUDA probe (fast tier)."""

import argparse

import numpy as np
import pytest

from keras_attn.data.array_batches import ArrayBatches
from keras_attn.data.array_batches import fashion_mnist_splits
from keras_attn.recipes import common
from keras_attn.utils import tensorflow_logs


def _args(**kwargs):
    values = {"val_images": None, "train_images": None, "test_images": None}
    values.update(kwargs)
    return argparse.Namespace(**values)


SIZES = {"train": 60000, "test": 10000}


def test_validation_is_held_out_of_the_training_split():
    assert common.split_counts(_args(), SIZES) == {
        "train": 55000, "val": 5000, "test": 10000}
    # Scaled down with a small --train-images; 0 disables it.
    assert common.split_counts(_args(train_images=512, test_images=64),
                               SIZES) == {"train": 512, "val": 51,
                                          "test": 64}
    assert common.split_counts(_args(val_images=0), SIZES)["val"] == 0
    assert common.split_counts(_args(val_images=100, train_images=60000),
                               SIZES)["train"] == 59900
    with pytest.raises(SystemExit):
        common.split_counts(_args(val_images=60000), SIZES)


def test_numpy_path_train_and_validation_images_do_not_overlap():
    counts = {"train": 300, "val": 100, "test": 20}
    arrays = fashion_mnist_splits(counts)
    assert [len(arrays[k][0]) for k in ("train", "val", "test")] == [
        300, 100, 20]
    train = {x.tobytes() for x in arrays["train"][0]}
    val = {x.tobytes() for x in arrays["val"][0]}
    assert not train & val
    batches = ArrayBatches(*arrays["train"], 64, shuffle_seed=0)
    assert len(batches) == 4  # whole batches only
    first = batches[0][1].copy()
    batches.on_epoch_end()
    assert not np.array_equal(first, batches[0][1])  # a new order
    assert len(ArrayBatches(*arrays["val"], 64)) == 2


def test_every_recipe_takes_val_images():
    import importlib

    for name in ("se_resnet", "stn", "ram", "retrofit"):
        recipe = importlib.import_module(f"keras_attn.recipes.{name}")
        assert recipe.parse_args(["--val-images", "0"]).val_images == 0
        assert recipe.parse_args([]).val_images is None


def test_cuda_probe_is_quieted_only_for_a_recipe_without_a_gpu(
        monkeypatch):
    recipe = ["python", "-m", "recipes.stn", "--epochs", "1"]
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setattr(tensorflow_logs, "has_nvidia_driver", lambda: False)
    # This process has imported TensorFlow already: too late to matter.
    monkeypatch.setitem(__import__("sys").modules, "tensorflow", None)
    assert not tensorflow_logs.quiet_cuda_probe(recipe)
    monkeypatch.delitem(__import__("sys").modules, "tensorflow")
    assert not tensorflow_logs.quiet_cuda_probe(["python", "-m", "pytest"])
    assert tensorflow_logs.quiet_cuda_probe(recipe)
    assert __import__("os").environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    # A user's own level wins; so does a machine with a driver.
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    assert not tensorflow_logs.quiet_cuda_probe(recipe)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    monkeypatch.setattr(tensorflow_logs, "has_nvidia_driver", lambda: True)
    assert not tensorflow_logs.quiet_cuda_probe(
        ["python", "-m", "keras_attn.recipes.stn"])
    assert tensorflow_logs.running_a_recipe(
        ["python", "-m", "keras_attn.recipes.ram"])
