"""Tests for the `ltpa_vgg` builder (VGG-16-BN + Learn to Pay Attention)."""

import keras
import numpy as np
import pytest

from keras_attn.layers import LTPAAttention
from keras_attn.models import ltpa_vgg
from tests import harness

SMALL = {"width": 0.125, "global_dim": 16}
LAYERS = r"ltpa_vgg.*`attention_layers`"
CONFIGS = [
    (compatibility, head)
    for compatibility in ("pc", "dp")
    for head in ("concat", "indep")
]


def _attention_layers(model):
    return [layer for layer in model.layers if isinstance(layer, LTPAAttention)]


def _maps_model(model, levels):
    return keras.Model(
        model.inputs,
        [model.get_layer(f"attention_{k}").output[1] for k in levels],
    )


@pytest.mark.parametrize(
    "input_shape,sizes",
    [((32, 32, 3), (32, 16, 8)), ((28, 28, 1), (28, 14, 7))],
)
@pytest.mark.parametrize("compatibility,head", CONFIGS)
def test_small_inputs(compatibility, head, input_shape, sizes):
    model = ltpa_vgg(
        input_shape, 10, compatibility=compatibility, head=head, **SMALL
    )
    x = harness.random_inputs([(2, *input_shape)])[0]
    (probabilities,) = harness.run(model, x)
    assert probabilities.shape == (2, 10)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert [layer.name for layer in _attention_layers(model)] == [
        "attention_7",
        "attention_10",
        "attention_13",
    ]
    maps = harness.run(_maps_model(model, (7, 10, 13)), x)
    for attention, size in zip(maps, sizes, strict=True):
        assert attention.shape == (2, size, size)
        np.testing.assert_allclose(attention.sum(axis=(1, 2)), 1.0, atol=1e-5)
    if head == "indep":
        logits = [model.get_layer(f"logits_{k}").output for k in (7, 10, 13)]
        per_level = harness.run(keras.Model(model.inputs, logits), x)
        final = harness.run(
            keras.Model(model.inputs, model.get_layer("logits").output), x
        )[0]
        np.testing.assert_allclose(
            final, np.mean(per_level, axis=0), atol=1e-5
        )
    else:
        concat = model.get_layer("attention_concat").output
        assert tuple(concat.shape) == (None, 3 * SMALL["global_dim"])


def test_sigmoid_and_subset_of_levels():
    model = ltpa_vgg(
        (32, 32, 3), 5, attention_layers=(3, 12), normalization="sigmoid",
        head="indep", **SMALL,
    )
    x = harness.random_inputs([(2, 32, 32, 3)])[0]
    maps = harness.run(_maps_model(model, (3, 12)), x)
    assert [m.shape for m in maps] == [(2, 32, 32), (2, 8, 8)]
    assert all(((m > 0) & (m < 1)).all() for m in maps)
    np.testing.assert_allclose(
        harness.run(model, x)[0].sum(axis=1), 1.0, atol=1e-6
    )


@pytest.mark.parametrize("head", ["concat", "indep"])
def test_single_level(head):
    model = ltpa_vgg((32, 32, 3), 4, attention_layers=(10,), head=head,
                     **SMALL)
    assert model.get_layer("logits").input.shape[-1] == SMALL["global_dim"]
    assert harness.run(model, np.zeros((1, 32, 32, 3), "float32"))[0].shape == (
        1,
        4,
    )


@pytest.mark.parametrize(
    "baseline_kwargs", [{"attention": None}, {"attention_layers": ()}]
)
def test_baseline(baseline_kwargs):
    model = ltpa_vgg((32, 32, 3), 10, **SMALL)
    baseline = ltpa_vgg((32, 32, 3), 10, **SMALL, **baseline_kwargs)
    assert not _attention_layers(baseline)
    assert baseline.count_params() < model.count_params()
    assert baseline.get_layer("logits").input is baseline.get_layer(
        "fc1"
    ).output
    (probabilities,) = harness.run(
        baseline, harness.random_inputs([(2, 32, 32, 3)])[0]
    )
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_full_width_parameter_count():
    model = ltpa_vgg((32, 32, 3), 100)
    baseline = ltpa_vgg((32, 32, 3), 100, attention=None)
    # Attention adds: projector 256->512 for layer 7, three `u` (512 each),
    # and a classifier on 3*512 instead of 512 features.
    extra = 256 * 512 + 3 * 512 + (3 * 512 - 512) * 100
    assert model.count_params() - baseline.count_params() == extra
    assert model.count_params() == 19_999_012
    assert baseline.count_params() == 19_764_004


def test_large_input_builds():
    model = ltpa_vgg((224, 224, 3), 1000)
    assert tuple(model.output.shape) == (None, 1000)
    assert model.count_params() == 21_382_312
    shapes = [
        tuple(model.get_layer(f"attention_{k}").output[1].shape)
        for k in (7, 10, 13)
    ]
    assert shapes == [(None, 224, 224), (None, 112, 112), (None, 56, 56)]


def test_any_input_size():
    model = ltpa_vgg((None, None, 3), 3, **SMALL)
    for size in ((20, 24), (33, 17)):
        x = harness.random_inputs([(1, *size, 3)])[0]
        np.testing.assert_allclose(
            harness.run(model, x)[0].sum(axis=1), 1.0, atol=1e-6
        )


@pytest.mark.parametrize(
    "compatibility,normalization,head",
    [("dp", "softmax", "concat"), ("pc", "sigmoid", "indep")],
)
def test_gradients_reach_all_weights(compatibility, normalization, head):
    model = ltpa_vgg(
        (16, 16, 3), 4, compatibility=compatibility,
        normalization=normalization, head=head, **SMALL,
    )
    x = harness.random_inputs([(2, 16, 16, 3)])[0]
    harness.assert_gradients_reach_all_weights(model, x)


def test_pc_softmax_global_branch_gets_no_gradient():
    # A property of the paper's "pc" + softmax (shared by the reference
    # code): <u, l_i + g> = <u, l_i> + <u, g>, the g term is constant over
    # space and cancels in the softmax, so nothing that only feeds g (conv
    # layers 14-15, FC-1) is trained. Pinned here so a change is deliberate.
    model = ltpa_vgg((16, 16, 3), 4, **SMALL)
    x = harness.random_inputs([(2, 16, 16, 3)])[0]
    grads = harness.gradients(model, x)
    branch = [p for p in grads if p.split("/")[0] in ("conv14", "conv15",
                                                      "fc1")]
    assert branch
    assert max(np.abs(grads[p]).max() for p in branch) < 1e-5
    assert np.abs(grads["attention_7/u"]).max() > 1e-3


def test_keras_file_roundtrip(tmp_path):
    model = ltpa_vgg((28, 28, 1), 10, compatibility="dp", head="indep",
                     normalization="sigmoid", **SMALL)
    x = harness.random_inputs([(2, 28, 28, 1)])[0]
    harness.assert_keras_file_roundtrip(model, x, tmp_path, atol=1e-5)


@pytest.mark.tf_only
def test_tflite_matches():
    model = ltpa_vgg((32, 32, 3), 10, **SMALL)
    x = harness.random_inputs([(1, 32, 32, 3)])[0]
    harness.assert_tflite_matches(model, x)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"head": "sum"}, r"ltpa_vgg.*`head`.*'concat', 'indep'"),
        ({"compatibility": "additive"},
         r"ltpa_vgg.*`compatibility`.*'pc', 'dp'"),
        ({"normalization": "relu"}, r"ltpa_vgg.*`normalization`"),
        ({"attention_layers": (7, 14)}, LAYERS + r".*1\.\.13"),
        ({"attention_layers": (0,)}, LAYERS),
        ({"attention_layers": (10, 7)}, LAYERS + r".*sorted"),
        ({"attention_layers": (7, 7)}, LAYERS + r".*unique"),
        ({"attention_layers": 7}, LAYERS),
        ({"attention_layers": (7.0,)}, LAYERS),
        ({"width": 0}, r"ltpa_vgg.*`width`"),
        ({"global_dim": 0}, r"ltpa_vgg.*`global_dim`"),
        ({"num_classes": 0}, r"ltpa_vgg.*`num_classes`"),
        ({"input_shape": (32, 32)}, r"ltpa_vgg.*`input_shape`"),
        ({"input_shape": (32, 32, None)}, r"ltpa_vgg.*`input_shape`"),
        ({"attention": "yes"}, r"ltpa_vgg.*`attention`"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"input_shape": (32, 32, 3), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        ltpa_vgg(**arguments)
