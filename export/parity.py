"""Parity of an exported file with the Keras model, and the bar it must meet.

Each export is measured on held-out images (`export_model`'s
`parity=ParityOptions(images=...)`): `<output>_max_abs_diff` and
`<output>_mean_abs_diff` per float output, and `top1_agreement` of
`classes`. The bar each kind of file is held to (`BARS`, keyed by file:
`saved_model` or a TFLite tag):

- `saved_model` and TFLite `float32`: every output within 1e-4 of Keras,
  on every image (the same computation in another runtime).
- `dynamic` and `float16`: probabilities within 1e-2 on average and the
  same top-1 class for at least 98 % of images. The largest single gap is
  not bounded: rounding the kernels alone to int8, one scale per output
  channel, moves some image's probabilities by more than 1e-2 on every
  trained test model but STN (0.018-0.36, `benchmarks/quantization.py`).
- `int8`: the same top-1 class for at least 98 % of images.

    from keras_attn.export.parity import shortfalls
    shortfalls("int8", {"top1_agreement": 0.95})
    # ['top1_agreement 0.95 < 0.98']

`export_model` records the bar and whether it is met in the manifest
(`parity_bar`, `parity_shortfalls`) and warns (`ParityWarning`) about each
file that misses it; `python -m export` prints the same warning and, with
`--strict-parity`, exits with status 3.
"""

from __future__ import annotations

import operator

# {file: {figure: (comparison, bound)}}; a figure name starting "*" applies
# to every output (`probabilities_max_abs_diff`, `attention_maps_...`).
_FLOAT = {"*_max_abs_diff": ("<=", 1e-4)}
_REDUCED = {"probabilities_mean_abs_diff": ("<=", 1e-2),
            "top1_agreement": (">=", 0.98)}
BARS = {
    "saved_model": _FLOAT,
    "float32": _FLOAT,
    "dynamic": _REDUCED,
    "float16": _REDUCED,
    "int8": {"top1_agreement": (">=", 0.98)},
}
_COMPARE = {"<=": operator.le, ">=": operator.ge}
_FAILED = {"<=": ">", ">=": "<"}


class ParityWarning(UserWarning):
    """An exported file misses its parity bar (see `shortfalls`)."""


def figures(reference, got):
    """Parity figures of `got` against `reference`, both `{output name:
    array}` with `classes` among them."""
    result = {}
    for key, want in reference.items():
        have = got[key]
        if key == "classes":
            result["top1_agreement"] = float(
                (have.astype("int64") == want).mean()
            )
        else:
            diff = abs(have.astype("float64") - want)
            result[f"{key}_max_abs_diff"] = float(diff.max())
            result[f"{key}_mean_abs_diff"] = float(diff.mean())
    return result


def bar(kind, measured):
    """The bar of file `kind` (a `BARS` key) as `{figure: [comparison,
    bound]}`, its wildcards expanded over the figures in `measured`."""
    if kind not in BARS:
        raise ValueError(
            f"export.parity: invalid `kind`; expected one of {list(BARS)}. "
            f"Received: kind={kind!r}"
        )
    expanded = {}
    for name, (comparison, bound) in BARS[kind].items():
        if name.startswith("*"):
            names = [k for k in measured if k.endswith(name[1:])]
        else:
            names = [name]
        for key in names:
            expanded[key] = [comparison, bound]
    return expanded


def shortfalls(kind, measured):
    """Where the figures `measured` of a file of `kind` miss its bar: a
    list of `"<figure> <value> <failed comparison> <bound>"`, empty when
    the bar is met. A figure the bar names but `measured` lacks (a model
    without that output) is not a shortfall."""
    missed = []
    for name, (comparison, bound) in bar(kind, measured).items():
        value = measured.get(name)
        if value is not None and not _COMPARE[comparison](value, bound):
            missed.append(f"{name} {value:.4g} {_FAILED[comparison]} "
                          f"{bound:g}")
    return missed


def describe(kind, missed):
    """`"<file> misses its parity bar (<shortfalls>)"` for a file of `kind`
    (a `BARS` key) and its `shortfalls`, as warnings say it."""
    label = kind if kind == "saved_model" else f"tflite {kind}"
    return f"{label} misses its parity bar ({'; '.join(missed)})"
