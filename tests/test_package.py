"""Package-level guarantees: backend-agnostic layer modules, registration."""

import ast
import inspect
import pathlib

import keras
import pytest

import keras_attn

ROOT = pathlib.Path(keras_attn.__file__).parent
TF_ONLY_MODULES = {"tensorflow", "tensorflow_probability", "tf_keras",
                   "tensorflow_datasets"}


def _imported_roots(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", ["layers", "models", "ops", "utils"])
def test_layer_and_model_modules_use_keras_only(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            set(_imported_roots(path)) & TF_ONLY_MODULES
        )
        for path in (ROOT / package).rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"TensorFlow-only imports in {offenders}"


def _public_layers():
    return [
        obj
        for _, obj in inspect.getmembers(keras_attn.layers, inspect.isclass)
        if issubclass(obj, keras.layers.Layer)
    ]


def test_public_layers_exist():
    names = {cls.__name__ for cls in _public_layers()}
    expected = {"SqueezeExcite", "ChannelAttention", "SpatialAttention",
                "CBAM", "ResidualAttentionModule", "LTPAAttention"}
    assert expected <= names


@pytest.mark.parametrize("cls", _public_layers(), ids=lambda c: c.__name__)
def test_public_layers_are_registered(cls):
    assert keras.saving.get_registered_name(cls) == f"keras_attn>{cls.__name__}"


@pytest.mark.parametrize("cls", _public_layers(), ids=lambda c: c.__name__)
def test_public_layers_document_paper_and_example(cls):
    doc = cls.__doc__ or ""
    assert "Example" in doc and "arxiv.org" in doc.lower(), cls.__name__


def test_model_builders_exist():
    for name in ("resnet", "ltpa_vgg", "residual_attention_network",
                 "attention_model"):
        assert callable(getattr(keras_attn.models, name))
