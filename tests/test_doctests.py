"""Every `>>>` example in the docstrings of `keras_attn`, `export` and
`recipes` (installed as `keras_attn.export`, `keras_attn.recipes`) runs, and
prints what it shows.

One case per module that has examples. Each example starts from empty
globals, so it imports what it uses and a reader can paste it as printed.
Outputs are compared with ELLIPSIS and NORMALIZE_WHITESPACE; examples print
shapes as tuples and numbers as Python floats, so the expected text is the
same on every backend.
"""

import doctest
import importlib
import io
import pathlib

import pytest

from tests.layout import module_name

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("keras_attn", "export", "recipes")
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# Modules whose examples need TensorFlow itself, not only a Keras backend.
TF_ONLY = {
    "keras_attn.data.distortions": "keras_attn.data builds on tf.data",
    "keras_attn.ram.recurrent_attention_model":
        "RecurrentAttentionModel.fit uses tf.GradientTape",
}


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>>" not in path.read_text():
                continue
            yield module_name(path)


def _params():
    for name in _modules():
        marks = []
        if name in TF_ONLY:
            marks.append(pytest.mark.tf_only(reason=TF_ONLY[name]))
        yield pytest.param(name, marks=marks, id=name)


def test_modules_found():
    names = list(_modules())
    assert "keras_attn.layers.cbam" in names, names
    assert set(TF_ONLY) <= set(names), set(TF_ONLY) - set(names)


@pytest.mark.parametrize("name", list(_params()))
def test_doctests(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    tests = finder.find(module, name, globs={})
    assert sum(len(test.examples) for test in tests), f"{name}: no examples"
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    assert not runner.failures, (
        f"{runner.failures} of {runner.tries} examples failed in {name}:\n"
        + report.getvalue())
