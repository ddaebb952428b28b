"""`attention=None` is the baseline switch of every model builder.

For each builder: `attention=None` builds a model without any keras_attn
attention layer whose layers are the attention model's, minus the
attention (and the glue only attention needs), plus the plain layer each
attention layer stands in for; the old spellings (`attention=False`,
`stn_classifier(transformer=...)`) still build the baseline but warn; a bad
value raises a `ValueError` naming the builder and the argument.
"""

import inspect
import re

import keras
import pytest

from keras_attn import models


def _resnet(attention):
    return models.resnet((16, 16, 3), 5, 20, attention=attention)


def _ran(attention):
    return models.residual_attention_network(
        (32, 32, 3), 5, width=1 / 16, attention=attention
    )


def _ltpa(attention):
    return models.ltpa_vgg(
        (32, 32, 3), 5, width=0.125, global_dim=16, attention=attention
    )


def _stn(attention):
    return models.stn_classifier((16, 16, 1), 5, attention=attention)


def _aa_wrn(attention):
    return models.aa_wide_resnet(
        (16, 16, 3), 5, depth=10, width=1, num_heads=2,
        min_key_dims_per_head=2, attention=attention,
    )


def _aa_resnet(attention):
    return models.aa_resnet(
        (16, 16, 3), 5, depth=20, num_heads=2, min_key_dims_per_head=2,
        attention=attention,
    )


def _sasa(attention):
    return models.sasa_resnet(
        (16, 16, 3), 5, width=1 / 16, num_heads=2, kernel_size=3,
        attention=attention,
    )


def _suffix(old, new):
    """An attention layer `..._old` stands in for the conv `..._new`."""
    return lambda name: [re.sub(f"_{old}$", f"_{new}", name)]


# builder name -> (build(attention), the attention model's `attention`,
# the baseline layers an attention layer stands in for, layers only the
# attention model has besides its attention layers)
BUILDERS = {
    "resnet": (_resnet, "se", lambda name: [], ()),
    "residual_attention_network": (
        _ran,
        True,
        # A module becomes its trunk: p + t + p = 4 units.
        lambda name: [
            re.sub(r"attention(\d+)$", rf"trunk\1_unit{k}", name)
            for k in range(4)
        ],
        (),
    ),
    "ltpa_vgg": (_ltpa, True, lambda name: [], ("attention_concat",)),
    "stn_classifier": (_stn, True, lambda name: [], ()),
    "aa_wide_resnet": (_aa_wrn, True, _suffix("aa", "conv1"), ()),
    "aa_resnet": (_aa_resnet, True, _suffix("aa", "conv"), ()),
    "sasa_resnet": (
        _sasa,
        True,
        _suffix("sasa", "2_conv"),
        # Strided attention blocks pool their shortcut as the branch does.
        ("stage2_block1_shortcut_pool", "stage3_block1_shortcut_pool",
         "stage4_block1_shortcut_pool"),
    ),
}
NOT_BUILDERS = {"attention_model", "attention_outputs", "add_attention"}


def _is_attention(layer):
    return getattr(layer, "attention_kinds", None) is not None


def _names(model):
    return sorted(
        layer.name for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    )


def test_every_builder_is_covered():
    builders = {
        name for name, value in vars(models).items()
        if callable(value) and not name.startswith("_")
        and "attention" in inspect.signature(value).parameters
    }
    assert builders - NOT_BUILDERS == set(BUILDERS)


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_none_is_the_same_backbone_without_attention(builder):
    build, on, stands_in_for, glue = BUILDERS[builder]
    model, baseline = build(on), build(None)
    attention = [layer.name for layer in model.layers if _is_attention(layer)]
    assert attention
    assert not any(_is_attention(layer) for layer in baseline.layers)
    expected = set(_names(model)) - set(attention) - set(glue)
    for name in attention:
        expected |= set(stands_in_for(name))
    assert set(glue) <= set(_names(model))
    assert _names(baseline) == sorted(expected)
    # Layer count: the attention model's, minus the attention (and its
    # glue), plus the plain layers the attention stood in for.
    replaced = sum(len(stands_in_for(name)) for name in attention)
    assert len(baseline.layers) == (
        len(model.layers) - len(attention) - len(glue) + replaced
    )
    assert baseline.output_shape == model.output_shape
    with pytest.raises(ValueError, match="no attention map"):
        models.attention_model(baseline)


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_false_is_deprecated_and_builds_the_baseline(builder):
    build = BUILDERS[builder][0]
    with pytest.warns(DeprecationWarning) as record:
        deprecated = build(False)
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(f"{builder}: `attention=False` is deprecated")
    assert "pass `attention=None`" in message
    # The warning points at the builder's caller (here, `build`).
    assert record[0].filename == __file__
    assert _names(deprecated) == _names(build(None))


@pytest.mark.parametrize("transformer", [True, False])
def test_stn_transformer_keyword_is_deprecated(transformer):
    with pytest.warns(DeprecationWarning) as record:
        model = models.stn_classifier((16, 16, 1), 5, transformer=transformer)
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("stn_classifier: `transformer=` is deprecated")
    assert "pass `attention=None`" in message
    assert record[0].filename == __file__
    expected = _stn(True if transformer else None)
    assert _names(model) == _names(expected)


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize("bad", ["yes", 0, 1])
def test_bad_value_raises(builder, bad):
    build = BUILDERS[builder][0]
    with pytest.raises(ValueError,
                       match=f"^{builder}: invalid `attention`"):
        build(bad)
