import numpy as np
import pytest

from keras_attn import models


def test_collects_cbam_maps_from_resnet():
    model = models.resnet((16, 16, 3), 5, 20, attention="cbam")
    maps_model = models.attention_model(model)
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype="float32")
    maps = maps_model(x)
    assert maps, "no maps"
    spatial = [m for m in maps.values() if len(m.shape) == 3]
    channel = [m for m in maps.values() if len(m.shape) == 2]
    assert spatial and channel and len(spatial) == len(channel)
    for m in maps.values():
        m = np.asarray(m)
        assert m.dtype == np.float32 and ((m > 0) & (m < 1)).all()


def test_collects_ltpa_maps_that_sum_to_one():
    model = models.ltpa_vgg((32, 32, 3), 10, width=0.0625)
    maps = models.attention_model(model)(
        np.random.default_rng(1).random((2, 32, 32, 3), dtype="float32")
    )
    assert sorted(maps) == ["attention_10", "attention_13", "attention_7"]
    assert maps["attention_7"].shape == (2, 32, 32)
    for m in maps.values():
        np.testing.assert_allclose(np.asarray(m).sum((1, 2)), 1.0, atol=1e-5)


def test_baseline_has_no_maps():
    model = models.resnet((16, 16, 3), 5, 20, attention=None)
    with pytest.raises(ValueError, match="attention_model.*no attention map"):
        models.attention_model(model)
