"""`.keras` files saved before a layer's module was renamed still load.

`learn_to_pay_attention.py` became `ltpa_attention.py`,
`residual_unit.py` `pre_act_bottleneck.py` and `residual_attention.py`
`residual_attention_module.py` (file = class). A
`.keras` file records each layer's module next to its registered name
(`keras_attn>LTPAAttention`); Keras resolves the registered name, so the
old module path in a file saved before the rename must not matter. The
case is rebuilt here: a model saved now has its `config.json` rewritten to
the old module paths (byte for byte what the old code wrote), then loaded
with `safe_mode=True`.
"""

import json
import zipfile

import keras
import numpy as np

from keras_attn.layers import LTPAAttention
from keras_attn.layers import PreActBottleneck
from keras_attn.layers import ResidualAttentionModule
from tests import harness

OLD_MODULES = {
    "keras_attn.layers.ltpa_attention": (
        "keras_attn.layers.learn_to_pay_attention"
    ),
    "keras_attn.layers.pre_act_bottleneck": "keras_attn.layers.residual_unit",
    "keras_attn.layers.residual_attention_module": (
        "keras_attn.layers.residual_attention"
    ),
}


def _model():
    inputs = keras.Input((8, 8, 8))
    x = PreActBottleneck(16, name="unit")(inputs)
    x = ResidualAttentionModule(16, p=0, t=1, r=1, num_skips=0,
                                name="module")(x)
    g = keras.layers.GlobalAveragePooling2D()(x)
    g = keras.layers.Dense(32)(g)
    pooled, attention = LTPAAttention("pc", "softmax", name="ltpa")([x, g])
    return keras.Model(inputs, [pooled, attention])


def _with_old_modules(path, old_path):
    with zipfile.ZipFile(path) as source:
        files = {name: source.read(name) for name in source.namelist()}
    config = files["config.json"].decode()
    for new, old in OLD_MODULES.items():
        assert json.dumps(new) in config
        config = config.replace(json.dumps(new), json.dumps(old))
    files["config.json"] = config.encode()
    with zipfile.ZipFile(old_path, "w") as target:
        for name, data in files.items():
            target.writestr(name, data)


def test_keras_file_with_pre_rename_module_paths_loads(tmp_path):
    model = _model()
    inputs = harness.random_inputs([(2, 8, 8, 8)])[0]
    expected = [keras.ops.convert_to_numpy(t) for t in model(inputs)]
    path, old_path = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(path)
    _with_old_modules(path, old_path)

    loaded = keras.saving.load_model(old_path, safe_mode=True)

    assert isinstance(loaded.get_layer("ltpa"), LTPAAttention)
    assert isinstance(loaded.get_layer("unit"), PreActBottleneck)
    assert isinstance(loaded.get_layer("module"), ResidualAttentionModule)
    for got, want in zip(loaded(inputs), expected, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got), want, rtol=1e-6, atol=1e-6
        )
