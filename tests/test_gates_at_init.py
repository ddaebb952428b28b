"""`python -m benchmarks.gates_at_init` measures what it says."""

import numpy as np

from benchmarks.gates_at_init import gate_statistics


def test_gate_statistics_per_kind():
    images = np.random.default_rng(0).random((2, 28, 28, 1), "float32")
    se = gate_statistics("se", images)
    cbam = gate_statistics("cbam", images)
    assert set(se) == {"channel"} and set(cbam) == {"channel", "spatial"}
    for stats in (*se.values(), *cbam.values()):
        assert stats["blocks"] == 9  # one per block of ResNet-20
        assert 0 < stats["min"] <= stats["mean"] <= stats["max"] < 1


def test_local_attention_statistics_per_sasa_layer():
    from benchmarks.gates_at_init import local_attention_statistics

    images = np.random.default_rng(0).random((2, 28, 28, 1), "float32")
    stats = local_attention_statistics(images)
    assert stats and all("sasa" in name for name in stats)
    for s in stats.values():
        assert 1 / 49 <= s["max_weight"] <= 1
        assert 0 <= s["entropy"] <= s["uniform_entropy"] + 1e-6
        assert s["uniform_entropy"] == np.log(49)
