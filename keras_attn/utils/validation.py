"""Argument and shape checks shared by the whole package.

Every check raises a `ValueError` that names the caller (a layer, a builder
or a function), the argument, what was received and what is allowed, so
users see the fix instead of a backend trace:

    SqueezeExcite: invalid `reduction`; expected an integer >= 1.
    Received: reduction=0

`caller` names who is checking, one way per kind of caller:

- a layer or model class passes `self` (also from `__init__` before
  `super().__init__`, and module helpers take the layer to pass on): the
  message names its class, `type(self).__name__`, as Keras' own errors do,
  so a subclass is named as itself and a renamed class needs no edit;
- a function or model builder passes its own name, a string
  (`"resnet"`, `"get_attention"`).

Each check returns the value it accepted, converted where it says so.
"""

from __future__ import annotations

import keras
import numpy as np


def fail(caller, argument, received, allowed):
    """Raise the package's standard `ValueError` for a bad argument.

    Args:
        caller: a layer (or model) instance, named by its class, or the
            name of the function or builder that checks.
        argument: the argument's name, as the user wrote it.
        received: the value received (shown with `repr`).
        allowed: what would have been accepted, as a phrase ("an integer
            >= 1").
    """
    name = caller if isinstance(caller, str) else type(caller).__name__
    raise ValueError(
        f"{name}: invalid `{argument}`; expected {allowed}. "
        f"Received: {argument}={received!r}"
    )


def check_positive_int(caller, argument, value, minimum=1):
    """A Python `int` (not a `bool`, not a NumPy integer) `>= minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(caller, argument, value, f"an integer >= {minimum}")
    return value


def check_int(caller, argument, value, minimum):
    """A Python or NumPy integer (not a `bool`) `>= minimum`, returned as a
    Python `int` (for data pipelines, whose counts often come from NumPy)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        fail(caller, argument, value, f"an integer >= {minimum}")
    return int(value)


def check_positive_float(caller, argument, value):
    """A Python number `> 0` (not a `bool`), returned as a `float`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(caller, argument, value, "a number > 0")
    if not value > 0:
        fail(caller, argument, value, "a number > 0")
    return float(value)


def check_bool(caller, argument, value):
    """Exactly `True` or `False` (not 0, 1 or `None`)."""
    if not isinstance(value, bool):
        fail(caller, argument, value, "a bool (True or False)")
    return value


def check_odd_kernel(caller, argument, value):
    """An odd integer `>= 1`: odd sizes keep `padding="same"` symmetric, so
    maps stay aligned with their inputs."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(caller, argument, value, "an odd integer >= 1")
    if value % 2 == 0:
        fail(
            caller,
            argument,
            value,
            f"an odd integer >= 1 (e.g. {value + 1}) so that 'same' "
            "padding stays centred",
        )
    return value


def check_choice(caller, argument, value, choices):
    """One of `choices` (compared with `in`)."""
    if value not in choices:
        fail(caller, argument, value, f"one of {list(choices)}")
    return value


def check_image_shape(caller, input_shape, argument="inputs"):
    """A channels-last image shape `(B, H, W, C)` with a known `C`;
    returns `C` as an `int`."""
    shape = tuple(input_shape)
    if len(shape) != 4:
        fail(
            caller,
            f"{argument} shape",
            shape,
            "rank 4 (batch, height, width, channels), channels last",
        )
    if shape[-1] is None:
        fail(
            caller,
            f"{argument} shape",
            shape,
            "a known channel dimension (the last axis must not be None)",
        )
    return int(shape[-1])


def check_activation(caller, argument, value):
    """Anything `keras.activations.get` accepts: a name or a callable."""
    try:
        keras.activations.get(value)
    except (ValueError, TypeError):
        fail(caller, argument, value, "a Keras activation name or callable")
    return value
