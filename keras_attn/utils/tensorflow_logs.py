"""Keep a recipe run on a machine without an NVIDIA GPU free of TensorFlow's
CUDA probe.

TensorFlow's CUDA plugin calls `cuInit` when it first lists devices; with
no NVIDIA driver that fails and TensorFlow logs `failed call to cuInit:
INTERNAL: CUDA error ... (303)` at ERROR level, although nothing is wrong:
the run simply uses the CPU. `TF_CPP_MIN_LOG_LEVEL=3` hides it (2 does
not), and TensorFlow reads the variable once, when it is imported.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

RECIPE_PACKAGES = ("recipes.", "keras_attn.recipes.")


def has_nvidia_driver():
    """Whether this machine has an NVIDIA driver TensorFlow could use."""
    return (os.path.exists("/proc/driver/nvidia")
            or ctypes.util.find_library("cuda") is not None)


def running_a_recipe(argv=None):
    """Whether this process was started as `python -m [keras_attn.]recipes.X`
    (`argv`: the interpreter's own command line, `sys.orig_argv`)."""
    argv = list(getattr(sys, "orig_argv", []) if argv is None else argv)
    if "-m" not in argv[:-1]:
        return False
    return argv[argv.index("-m") + 1].startswith(RECIPE_PACKAGES)


def quiet_cuda_probe(argv=None):
    """Set `TF_CPP_MIN_LOG_LEVEL=3` for a recipe run, before TensorFlow is
    imported, when there is no NVIDIA driver and the user has not chosen a
    level. Returns whether it did. A user's own setting always wins."""
    if ("TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules
            or not running_a_recipe(argv) or has_nvidia_driver()):
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return True
