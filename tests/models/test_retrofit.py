"""Tests for `keras_attn.models.add_attention` (retrofitting attention)."""

import json

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.layers import IdentityGate
from keras_attn.layers import SqueezeExcite
from keras_attn.models.retrofit import attention_sites
from tests import harness

L = keras.layers


def _residual_model(input_shape=(16, 16, 3), top=True):
    """Stem, an identity-shortcut block `a`, a projection block `b` (branch
    first in its Add), then two Adds that are not residual blocks: `merge`
    (two equally long paths) and `fc_add` (vectors)."""
    inputs = keras.Input(input_shape, name="images")
    x = L.Conv2D(8, 3, padding="same", name="stem_conv")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(8, 3, padding="same", name="a_conv1")(x)
    y = L.BatchNormalization(name="a_bn1")(y)
    y = L.ReLU(name="a_relu1")(y)
    y = L.Conv2D(8, 3, padding="same", name="a_conv2")(y)
    y = L.BatchNormalization(name="a_bn2")(y)
    x = L.Add(name="a_add")([x, y])
    x = L.ReLU(name="a_out")(x)
    s = L.Conv2D(16, 1, strides=2, name="b_proj")(x)
    s = L.BatchNormalization(name="b_proj_bn")(s)
    y = L.Conv2D(16, 3, strides=2, padding="same", name="b_conv1")(x)
    y = L.BatchNormalization(name="b_bn1")(y)
    y = L.ReLU(name="b_relu1")(y)
    y = L.Conv2D(16, 3, padding="same", name="b_conv2")(y)
    y = L.BatchNormalization(name="b_bn2")(y)
    x = L.Add(name="b_add")([y, s])
    x = L.ReLU(name="b_out")(x)
    p = L.Conv2D(16, 1, name="p_conv")(x)
    q = L.Conv2D(16, 1, name="q_conv")(x)
    x = L.Add(name="merge")([p, q])
    if not top:
        return keras.Model(inputs, x, name="trunk")
    g = L.GlobalAveragePooling2D(name="pool")(x)
    h = L.Dense(16, name="fc")(g)
    g = L.Add(name="fc_add")([g, h])
    outputs = L.Dense(10, activation="softmax", name="probabilities")(g)
    return keras.Model(inputs, outputs, name="toy_resnet")


def _randomize(model, seed=0):
    """Random BatchNorm statistics, scales and offsets (kernels keep their
    random initialisation), so that no layer is an identity by chance."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        name = w.path.split("/")[-1]
        shape = tuple(w.shape)
        if name in ("moving_variance", "variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "bias", "moving_mean", "mean"):
            value = rng.normal(0.0, 0.2, shape)
        else:
            continue
        w.assign(value.astype(w.dtype))
    return model


def _images(shape, seed=0, count=4):
    return np.random.default_rng(seed).random((count, *shape), "float32")


def _gates(model):
    return [layer for layer in model.layers if isinstance(layer, IdentityGate)]


def _input_layer_name(model, layer_name, index):
    """Name of the layer producing input `index` of `layer_name`."""
    tensor = model.get_layer(layer_name).input[index]
    return tensor._keras_history.operation.name


def test_blocks_are_exactly_the_residual_adds_of_a_hand_built_model():
    model = _residual_model()
    sites = attention_sites(model, "blocks")
    assert [(s.kind, s.layer, s.branch) for s in sites] == [
        ("residual", "a_add", "a_bn2"),
        ("residual", "b_add", "b_bn2"),
    ]
    assert [s.shape for s in sites] == [(None, 16, 16, 8), (None, 8, 8, 16)]
    new = models.add_attention(model, "se")
    assert [g.name for g in _gates(new)] == ["a_se", "b_se"]
    # On the residual branch: BN -> gate -> Add, shortcut untouched.
    assert _input_layer_name(new, "a_add", 1) == "a_se"
    assert _input_layer_name(new, "a_add", 0) == "stem_relu"
    assert _input_layer_name(new, "b_add", 0) == "b_se"
    assert _input_layer_name(new, "b_add", 1) == "b_proj_bn"
    assert new.get_layer("a_se").input._keras_history.operation.name == (
        "a_bn2")
    assert new.name == "toy_resnet_se"


def test_stages_end_each_resolution_and_predicates_choose_layers():
    model = _residual_model()
    sites = attention_sites(model, "stages")
    assert [(s.kind, s.layer) for s in sites] == [("stage", "a_out"),
                                                 ("stage", "b_out")]
    new = models.add_attention(model, "cbam", "stages", reduction=2)
    assert [g.name for g in _gates(new)] == ["a_out_cbam", "b_out_cbam"]
    chosen = models.add_attention(
        model, "channel", where=lambda layer: layer.name == "stem_relu")
    assert [g.name for g in _gates(chosen)] == ["stem_relu_channel"]
    named = attention_sites(model, ["merge", "a_relu1"])
    assert [(s.kind, s.layer) for s in named] == [("layer", "a_relu1"),
                                                 ("layer", "merge")]


def test_a_plain_stack_gets_one_module_per_convolution_unit():
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        L.Conv2D(8, 3, padding="same", name="c1"),
        L.BatchNormalization(name="b1"),
        L.ReLU(name="r1"),
        L.Conv2D(8, 3, padding="same", activation="relu", name="c2"),
        L.DepthwiseConv2D(3, padding="same", name="dw"),
        L.BatchNormalization(name="bdw"),
        L.ReLU(name="rdw"),
        L.Conv2D(8, 1, name="linear"),
        L.MaxPooling2D(name="pool"),
        L.Conv2D(16, 3, padding="same", name="c4"),
        L.BatchNormalization(name="b4"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(10, name="logits"),
    ], name="plain")
    blocks = attention_sites(model, "blocks")
    # Depthwise convs and linear convs without BN/activation end no unit.
    assert [(s.kind, s.layer) for s in blocks] == [
        ("block", "r1"), ("block", "c2"), ("block", "b4")]
    stages = attention_sites(model, "stages")
    assert [s.layer for s in stages] == ["c2", "b4"]
    x = _images((16, 16, 3))
    _randomize(model)
    new = models.add_attention(model, "se")
    np.testing.assert_allclose(new.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-5)


# (builder, blocks, stages): modules inserted by where="blocks"/"stages".
APPLICATIONS = {
    "resnet50": (lambda: keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg",
        input_shape=(32, 32, 3)), 16, 4),
    "mobilenet_v2": (lambda: keras.applications.MobileNetV2(
        weights=None, include_top=False, pooling="avg", alpha=0.35,
        input_shape=(32, 32, 3)), 17, 5),
    "efficientnet_b0": (lambda: keras.applications.EfficientNetB0(
        weights=None, include_top=False, pooling="avg",
        input_shape=(32, 32, 3)), 16, 5),
}


@pytest.mark.parametrize("family", sorted(APPLICATIONS))
def test_keras_applications_start_as_the_identity(family):
    build, blocks, stages = APPLICATIONS[family]
    base = _randomize(build())
    assert len(attention_sites(base, "stages")) == stages
    x = 255.0 * _images((32, 32, 3), seed=1)
    before = base.predict(x, verbose=0)
    new = models.add_attention(base, "cbam", reduction=4)
    assert len(_gates(new)) == blocks
    after = new.predict(x, verbose=0)
    scale = max(1.0, float(np.abs(before).max()))
    assert np.abs(after - before).max() <= 1e-5 * scale
    # The check can fail: a gate starting at 1 (the bare attention)
    # changes the features.
    bare = models.add_attention(base, "cbam", gate_initializer="ones",
                                reduction=4)
    changed = bare.predict(x, verbose=0)
    assert np.abs(changed - before).max() > 1e-3 * scale


@pytest.mark.parametrize(
    "build",
    [lambda: models.resnet((32, 32, 3), 10, 20),
     lambda: models.resnet((32, 32, 3), 10, 20, attention="se"),
     lambda: models.ltpa_vgg((32, 32, 3), 10, width=0.0625)],
    ids=["resnet20", "se_resnet20", "ltpa_vgg"])
def test_keras_attn_models_start_as_the_identity(build):
    base = _randomize(build())
    x = _images((32, 32, 3), seed=2)
    new = models.add_attention(base, "cbam", reduction=2)
    assert _gates(new)
    before = harness.to_numpy(base(x, training=False))
    after = harness.to_numpy(new(x, training=False))
    for b, a in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def fashion_cnn():
    """A small CNN trained briefly on Fashion-MNIST, with its test images."""
    from keras_attn.data import load_fashion_mnist

    keras.utils.set_random_seed(0)
    x, y = load_fashion_mnist("train")
    x = x[:2048, ..., None].astype("float32") / 255.0
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(8, 3, padding="same", name="conv1"),
        L.BatchNormalization(name="bn1"),
        L.ReLU(name="relu1"),
        L.MaxPooling2D(name="pool1"),
        L.Conv2D(16, 3, padding="same", name="conv2"),
        L.BatchNormalization(name="bn2"),
        L.ReLU(name="relu2"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(10, activation="softmax", name="probabilities"),
    ], name="fashion_cnn")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y[:2048], batch_size=128, epochs=1, verbose=0)
    test_x, _ = load_fashion_mnist("test")
    return model, test_x[:256, ..., None].astype("float32") / 255.0


@pytest.mark.slow  # trains
def test_a_trained_model_keeps_its_predictions_and_saves(fashion_cnn,
                                                         tmp_path):
    model, x = fashion_cnn
    new = models.add_attention(model, "cbam", reduction=2)
    assert [g.name for g in _gates(new)] == ["relu1_cbam", "relu2_cbam"]
    before = model.predict(x, verbose=0)
    after = new.predict(x, verbose=0)
    assert np.abs(after - before).max() <= 1e-5
    assert (after.argmax(-1) == before.argmax(-1)).all()
    # A normal keras_attn model: maps, pictures, .keras in safe mode.
    maps = models.attention_model(new)(x[:2])
    assert sorted(maps) == ["relu1_cbam_1", "relu1_cbam_2", "relu2_cbam_1",
                            "relu2_cbam_2"]
    assert tuple(maps["relu1_cbam_2"].shape) == (2, 28, 28)
    harness.assert_keras_file_roundtrip(new, x[:4], tmp_path)
    pytest.importorskip("matplotlib")
    from keras_attn import viz

    viz.plot_model_attention(new, x[:2], path=str(tmp_path / "maps.png"))
    assert (tmp_path / "maps.png").stat().st_size > 1000


@pytest.mark.slow  # trains
@pytest.mark.tf_only
def test_a_retrofitted_model_exports_with_tflite_parity(fashion_cnn,
                                                        tmp_path):
    from keras_attn.export.__main__ import main as export_main

    model, _ = fashion_cnn
    new = models.add_attention(model, "cbam", reduction=2)
    for gate in _gates(new):  # as after fine-tuning
        gate.gate.assign(0.5)
    path = tmp_path / "retrofit.keras"
    new.save(path)
    assert export_main([str(path), "--to", "tflite", "--out",
                        str(tmp_path / "exports"), "--parity-images", "64",
                        "--strict-parity"]) == 0
    manifest = json.loads(
        (tmp_path / "exports/retrofit/tflite/manifest.json").read_text())
    parity = manifest["tflite"]["float32"]["parity"]
    assert parity["probabilities_max_abs_diff"] < 1e-4
    assert manifest["attention_maps"]["names"] == ["relu1_cbam_2",
                                                   "relu2_cbam_2"]


@pytest.mark.slow  # trains
@pytest.mark.tf_only
def test_trains_under_mixed_float16_and_jit():
    keras.config.set_dtype_policy("mixed_float16")
    model = models.add_attention(_residual_model(), "cbam", reduction=2)
    gates = _gates(model)
    assert [g.dtype_policy.name for g in gates] == ["mixed_float16"] * 2
    maps = models.attention_model(model)(_images((16, 16, 3)))
    assert all(keras.backend.standardize_dtype(m.dtype) == "float32"
               for m in maps.values())
    model.compile(keras.optimizers.Adam(1e-2),
                  "sparse_categorical_crossentropy", jit_compile=True)
    x, y = _images((16, 16, 3), count=16), np.arange(16) % 10
    # The loss scale starts at 2**15 and its first overflowing steps are
    # skipped; six steps get past them.
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.jit_compile is True
    assert all(float(np.asarray(g.gate)) != 0.0 for g in gates)


def test_nested_and_sequential_models_are_rebuilt_without_sharing():
    trunk = _residual_model(top=False)
    outer = keras.Sequential([keras.Input((16, 16, 3)), trunk,
                              L.GlobalAveragePooling2D(), L.Dense(10)],
                             name="outer")
    _randomize(outer)
    sites = attention_sites(outer)
    assert [(s.model, s.layer) for s in sites] == [("trunk", "a_add"),
                                                  ("trunk", "b_add")]
    new = models.add_attention(
        outer, lambda channels: SqueezeExcite(reduction=channels // 4))
    x = _images((16, 16, 3))
    np.testing.assert_allclose(new.predict(x, verbose=0),
                               outer.predict(x, verbose=0), atol=1e-5)
    inner = [layer for layer in new.layers if isinstance(layer, keras.Model)]
    assert len(inner) == 1 and [g.name for g in _gates(inner[0])] == [
        "a_attention", "b_attention"]
    assert _gates(inner[0])[1].attention.bottleneck_units(16) == 4
    original = {id(w) for w in outer.weights}
    assert not original & {id(w) for w in new.weights}
    # The original's layers were not called again.
    assert all(len(layer._inbound_nodes) == 1 for layer in trunk.layers)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3)

    def call(self, x):
        return self.conv(x)


def test_errors_name_the_argument_and_the_fix():
    model = _residual_model()
    with pytest.raises(ValueError, match=r"add_attention: invalid `model`"
                                         r".*subclassed"):
        models.add_attention(_Subclassed(), "se")
    with pytest.raises(ValueError, match=r"invalid `model`.*keras.Input"):
        models.add_attention(keras.Sequential([L.Conv2D(4, 3)]), "se")
    with pytest.raises(ValueError, match=r"add_attention: invalid "
                                         r"`attention`.*'se'"):
        models.add_attention(model, "no_such_attention")
    with pytest.raises(ValueError, match=r"invalid `attention`"):
        models.add_attention(model, "se", reduction=0)
    with pytest.raises(ValueError, match=r"invalid `where`.*'blocks'"):
        models.add_attention(model, "se", where="everywhere")
    with pytest.raises(ValueError, match=r"invalid `where`.*matches"):
        models.add_attention(model, "se", where=lambda layer: False)
    with pytest.raises(ValueError, match=r"invalid `where`.*not found: "
                                         r"\['nope'\]"):
        models.add_attention(model, "se", where=["a_out", "nope"])
    with pytest.raises(ValueError, match=r"invalid `where`.*'fc'.*leave it"):
        models.add_attention(model, "se", where=lambda layer: "fc" in
                             layer.name)
    with pytest.raises(ValueError, match=r"invalid `attention`.*a_add.*8 "
                                         r"channels.*input's shape"):
        models.add_attention(model, lambda channels: L.Conv2D(3, 1))
    unknown = _residual_model(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match=r"invalid `where`.*input_shape"):
        models.add_attention(unknown, "se", where="stages")
    assert len(_gates(models.add_attention(unknown, "se"))) == 2
