"""Every recipe's `--no-attention` builds its builder's `attention=None`
baseline (no attention layer, no deprecation warning), and its default the
attention model. Builds only; training is `tests/test_recipes.py`'s."""

import importlib
import warnings

import pytest

# recipe module -> flags that keep its model small
RECIPES = {
    "se_resnet": [],
    "cbam_resnet": [],
    "aa_resnet": ["--heads", "2", "--min-key-dims-per-head", "2",
                  "--width", "1"],
    "ltpa": ["--width", "0.125"],
    "residual_attention": ["--width", "0.0625"],
    "sasa_resnet": ["--width", "0.125", "--kernel-size", "3", "--heads",
                    "2"],
    "stn": [],
}


def _attention_layers(model):
    return [
        layer.name for layer in model.layers
        if getattr(layer, "attention_kinds", None) is not None
    ]


@pytest.mark.parametrize("module", sorted(RECIPES))
def test_no_attention_builds_the_baseline_without_warnings(module):
    recipe = importlib.import_module(f"keras_attn.recipes.{module}")
    with warnings.catch_warnings():
        # The builders' own deprecation (other libraries' are not ours).
        warnings.filterwarnings(
            "error", message=".*is deprecated; pass `attention=None`",
            category=DeprecationWarning,
        )
        model = recipe.builder(recipe.parse_args(RECIPES[module]))(
            (28, 28, 1), 10
        )
        baseline = recipe.builder(
            recipe.parse_args([*RECIPES[module], "--no-attention"])
        )((28, 28, 1), 10)
    assert _attention_layers(model)
    assert not _attention_layers(baseline)
