"""benchmarks.fidelity: the plumbing and the JSON schema, never the results.

One smoke pair trains for two steps per arm; the bookkeeping (merging
pieces, keeping the seeds a killed run finished) is tested with a stand-in
for the training.
"""

import dataclasses
import json

import pytest

from benchmarks import fidelity

ROW_KEYS = {"mechanism", "task", "model", "metric", "seeds", "attention",
            "baseline", "epochs", "train_images", "wall_seconds", "curves"}


def _fake_result(arm, seed):
    return {"test_accuracy": 0.5 + 0.01 * seed + (0.1 if arm == "attention"
                                                  else 0.0),
            "loss": [2.0, 1.0], "val_accuracy": [0.3, 0.5],
            "train_seconds": 1.0, "seconds": 1.5, "params": 10, "jit": False}


def test_every_mechanism_has_a_piece():
    mechanisms = {piece.mechanism for piece in fidelity.PIECES.values()}
    assert mechanisms == {"se", "cbam", "residual_attention", "ltpa", "stn",
                          "aa", "sasa", "ram"}
    for piece in fidelity.PIECES.values():
        assert piece.build in fidelity._BUILDERS


def test_smoke_pair_writes_the_schema(tmp_path):
    path = tmp_path / "fidelity.json"
    fidelity.main(["--profile", "smoke", "--only", "cbam_cluttered",
                   "--seeds", "1", "--results", str(path),
                   "--img-dir", str(tmp_path / "img")])
    data = json.loads(path.read_text())
    (row,) = data["rows"]
    assert ROW_KEYS <= set(row)
    assert row["mechanism"] == "cbam" and row["task"] == "cluttered60"
    assert row["seeds"] == [0]
    assert len(row["attention"]) == len(row["baseline"]) == 1
    assert all(0.0 <= a <= 1.0 for a in row["attention"] + row["baseline"])
    assert len(row["curves"]["attention"][0]) == row["epochs"]
    maps = {(e["model"], e["map"]) for e in data["localization"]}
    # The attention model's own CBAM maps, Grad-CAM of both arms, floors.
    assert any(m == "cbam_cluttered:attention" and "cbam" in name
               for m, name in maps)
    assert any(m == "cbam_cluttered:baseline" and name.startswith("grad_cam")
               for m, name in maps)
    assert ("cbam_cluttered:floor", "centre_prior") in maps
    for entry in data["localization"]:
        for key in ("pointing_game", "energy_in_box"):
            assert all(0.0 <= v <= 1.0 for v in entry.get(key, []))
    picture = tmp_path / "img" / "maps_cbam_cluttered_smoke.png"
    assert picture.stat().st_size > 0


def test_pieces_replace_only_their_own_rows(tmp_path):
    path = str(tmp_path / "f.json")
    results = {(arm, s): _fake_result(arm, s)
               for arm in ("attention", "baseline") for s in (0, 1, 2)}
    rows, _ = fidelity._rows("se", "full", [0, 1], results)
    fidelity.write_results(path, "se", "full", rows, [])
    rows, _ = fidelity._rows("cbam", "full", [0], results)
    fidelity.write_results(path, "cbam", "full", rows, [])
    # A later run of seeds 1 and 2 (seed 1 now scores differently).
    results[("attention", 1)]["test_accuracy"] = 0.99
    rows, _ = fidelity._rows("se", "full", [1, 2], results)
    fidelity.write_results(path, "se", "full", rows, [])
    data = json.loads(open(path).read())
    by_piece = {r["piece"]: r for r in data["rows"]}
    assert set(by_piece) == {"se", "cbam"}
    se = by_piece["se"]
    assert se["seeds"] == [0, 1, 2]
    assert se["attention"] == pytest.approx([0.6, 0.99, 0.62])
    assert se["baseline"] == pytest.approx([0.5, 0.51, 0.52])
    assert len(se["curves"]["attention"]) == 3
    assert se["wall_seconds"] == pytest.approx(3 * 3.0)
    assert fidelity.finished_seeds(path, "se", "full") == {0, 1, 2}
    assert fidelity.finished_seeds(path, "cbam", "full") == {0}
    assert by_piece["cbam"]["seeds"] == [0]


def test_a_changed_budget_replaces_the_old_seeds(tmp_path, monkeypatch):
    path = str(tmp_path / "f.json")
    results = {(arm, s): _fake_result(arm, s)
               for arm in ("attention", "baseline") for s in (0, 1)}
    rows, _ = fidelity._rows("se", "full", [0, 1], results)
    fidelity.write_results(path, "se", "full", rows, [])
    budget = fidelity.Budget(100, 10, 1)
    monkeypatch.setitem(fidelity.PIECES, "se", dataclasses.replace(
        fidelity.PIECES["se"], full=budget))
    assert fidelity.finished_seeds(path, "se", "full") == set()
    rows, _ = fidelity._rows("se", "full", [1], results)
    fidelity.write_results(path, "se", "full", rows, [])
    (row,) = json.loads(open(path).read())["rows"]
    assert row["seeds"] == [1] and row["epochs"] == 1


def test_a_killed_piece_keeps_the_seeds_it_finished(tmp_path, monkeypatch):
    calls = []

    def run_arm(piece, arm, seed, profile):
        calls.append((arm, seed))
        if seed == 1 and arm == "baseline":
            raise KeyboardInterrupt  # killed half-way through seed 1
        return _fake_result(arm, seed)

    monkeypatch.setattr(fidelity, "run_arm", run_arm)
    monkeypatch.setattr(fidelity, "_floors", lambda *a: [])
    path = str(tmp_path / "f.json")
    with pytest.raises(KeyboardInterrupt):
        fidelity.run_piece("se", "full", [0, 1, 2], 1, path,
                           str(tmp_path / "img"))
    (row,) = json.loads(open(path).read())["rows"]
    assert row["seeds"] == [0]
    assert calls == [("attention", 0), ("baseline", 0), ("attention", 1),
                     ("baseline", 1)]


def test_pieces_too_big_to_pair_train_one_arm_at_a_time(tmp_path,
                                                       monkeypatch):
    # Two AA-WRN arms at once need about 40 GB: `--jobs 2` must not start a
    # process pool for them, while a small piece still gets one.
    assert fidelity.PIECES["aa_warmup"].max_jobs == 1
    assert {n for n, p in fidelity.PIECES.items() if p.max_jobs == 1} == {
        "aa", "aa_warmup", "aa_cluttered", "sasa_cluttered"}
    pools = []

    class Pool:
        def __init__(self, jobs, **kwargs):
            pools.append(jobs)
            raise RuntimeError("pool started")

    import concurrent.futures

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(fidelity, "run_arm",
                        lambda piece, arm, seed, profile:
                        _fake_result(arm, seed))
    monkeypatch.setattr(fidelity, "_floors", lambda *a: [])
    monkeypatch.setattr(fidelity, "_picture", lambda *a: None)
    path = str(tmp_path / "f.json")
    fidelity.run_piece("aa", "full", [0, 1], 2, path, str(tmp_path / "img"))
    assert pools == []
    assert json.loads(open(path).read())["rows"][0]["seeds"] == [0, 1]
    with pytest.raises(RuntimeError, match="pool started"):
        fidelity.run_piece("se", "full", [0, 1], 2, path,
                           str(tmp_path / "img"))
    assert pools == [2]


def test_ram_rows_compare_against_both_baselines():
    results = {(arm, 0): _fake_result(arm, 0)
               for arm in ("attention", "fc", "cnn")}
    rows, _ = fidelity._rows("ram", "full", [0], results)
    assert [r["baseline_arm"] for r in rows] == ["fc", "cnn"]
    assert all(r["mechanism"] == "ram" for r in rows)


def test_precise_batch_norm_averages_the_batch_statistics():
    import keras
    import numpy as np

    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.BatchNormalization(momentum=0.99)(inputs)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    images = (rng.normal(size=(6 * 8, 4, 4, 3)) * [1, 2, 3] + [5, -1, 0]
              ).astype("float32")
    assert fidelity.precise_batch_norm(model, images, 8, batches=5)
    layer = model.layers[-1]
    batches = images[:40].reshape(5, 8 * 16, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean),
                               batches.mean(1).mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.moving_variance),
        batches.var(1).mean(0), rtol=1e-3)
    assert layer.momentum == 0.99


def test_maps_behind_a_transformer_go_back_to_the_input_frame():
    import numpy as np

    # theta zooms on the top-left quarter: output pixel (0, 0) reads input
    # pixel (0, 0), output (8, 8) reads input (4, 4).
    theta = np.array([[[0.5, 0.0, -0.5], [0.0, 0.5, -0.5]]], "float32")
    maps = np.zeros((1, 9, 9), "float32")
    maps[0, 8, 8] = 1.0
    back = fidelity.to_input_frame(maps, theta)
    assert back.shape == (1, 9, 9)
    assert np.unravel_index(back[0].argmax(), (9, 9)) == (4, 4)
    assert back[0, 5:, :].max() == 0.0 and back[0, :, 5:].max() == 0.0
    identity = np.array([[[1.0, 0, 0], [0, 1.0, 0]]], "float32")
    rng = np.random.default_rng(0)
    maps = rng.random((1, 9, 9)).astype("float32")
    np.testing.assert_allclose(fidelity.to_input_frame(maps, identity), maps,
                               atol=1e-6)


@pytest.mark.parametrize("attention", [None, "se"])
def test_zero_last_batch_norm_starts_every_block_as_the_identity(attention):
    import numpy as np

    from keras_attn.models import resnet

    model = resnet((8, 8, 1), 3, 20, attention=attention)
    assert fidelity.zero_last_batch_norm(model) == 9  # 3 stages x 3 blocks
    for layer in model.layers:
        gamma = getattr(layer, "gamma", None)
        if gamma is None:
            continue
        last = layer.name.endswith("_2_bn") and "block" in layer.name
        assert np.all(np.asarray(gamma) == 0) == last, layer.name
    # Every branch is now zero: a block's output is ReLU(its shortcut).
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    probe = type(model)(model.input, [
        model.get_layer("stage1_block2_add").output,
        model.get_layer("stage1_block1_out").output])
    added, previous = probe(x)
    np.testing.assert_allclose(np.asarray(added), np.asarray(previous),
                               atol=1e-6)


def test_zero_last_batch_norm_refuses_a_model_without_residual_blocks():
    import keras

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    with pytest.raises(ValueError, match="zero_last_batch_norm"):
        fidelity.zero_last_batch_norm(model)


def test_tuning_variants_rerun_a_piece_with_one_change():
    from benchmarks import fidelity_report

    variants = {n: p for n, p in fidelity.PIECES.items() if p.variant}
    assert {"se_zero_init", "cbam_zero_init", "ram_long", "sasa_heads",
            "sasa_warmup", "sasa_lr_low", "sasa_lr_high", "aa_warmup",
            "ltpa_dp"} <= set(variants)
    plain = {(p.mechanism, p.task) for p in fidelity.PIECES.values()
             if not p.variant}
    for piece in variants.values():
        assert (piece.mechanism, piece.task) in plain
    row = {"mechanism": "se", "task": "fashion_mnist",
           "variant": variants["se_zero_init"].variant}
    assert fidelity_report._label(row) == (
        "se / fashion_mnist (last BN of every residual branch "
        "zero-initialised)")


def test_sasa_heads_changes_only_the_attention_arms_heads():
    from keras_attn.layers import LocalSelfAttention2D

    build = fidelity._BUILDERS[fidelity.PIECES["sasa_heads"].build]
    plain = fidelity._BUILDERS[fidelity.PIECES["sasa"].build]

    def heads(model):
        return {layer.num_heads for layer in model.layers
                if isinstance(layer, LocalSelfAttention2D)}

    assert heads(build("attention", (28, 28, 1), 10)) == {2}
    assert heads(plain("attention", (28, 28, 1), 10)) == {8}
    baseline = build("baseline", (28, 28, 1), 10)
    assert heads(baseline) == set()
    assert baseline.count_params() == plain(
        "baseline", (28, 28, 1), 10).count_params()


def test_maps_are_read_in_chunks_and_joined_in_order(monkeypatch):
    import numpy as np

    monkeypatch.setattr(fidelity, "MAP_CHUNK", 4)
    seen = []

    def maps(x):
        seen.append(len(x))
        return {"a": x[:, 0], "b": 2 * x[:, 0]}

    images = np.arange(10, dtype="float32")[:, None]
    joined = fidelity._in_chunks(maps, images)
    assert seen == [4, 4, 2]
    np.testing.assert_array_equal(joined["a"], np.arange(10))
    np.testing.assert_array_equal(joined["b"], 2 * np.arange(10))
    np.testing.assert_array_equal(
        fidelity._in_chunks(lambda x: x * 3, images), 3 * images)


def test_warmup_rises_linearly_then_decays_to_zero():
    import numpy as np

    piece = fidelity.PIECES["sasa_warmup"]
    total = 16
    warmup = fidelity.warmup_steps(piece, total)
    assert warmup == 2 and piece.variant and "warm-up" in (
        fidelity.schedule_name(piece))
    rate = fidelity.learning_rate_schedule(total, 1e-3, warmup)
    values = [float(rate(step)) for step in range(total + 1)]
    np.testing.assert_allclose(values[:3], [0.0, 5e-4, 1e-3], atol=1e-9)
    assert np.all(np.diff(values[2:]) <= 0)
    assert values[-1] < 1e-9
    # Without warm-up: the plain cosine from the full rate.
    plain = fidelity.learning_rate_schedule(total, 1e-3)
    assert abs(float(plain(0)) - 1e-3) < 1e-9 and float(plain(total)) < 1e-9
    assert fidelity.schedule_name(fidelity.PIECES["sasa"]) == (
        "Adam, cosine to 0")


def test_aa_on_canvases_leaves_the_first_stage_plain():
    from keras_attn.layers import AttentionAugmentedConv2D

    build = fidelity._BUILDERS[fidelity.PIECES["aa_cluttered"].build]
    model = build("attention", (60, 60, 1), 10)
    # Where each attends: its output grid (a strided block attends there).
    sides = {layer.output[0].shape[1] for layer in model.layers
             if isinstance(layer, AttentionAugmentedConv2D)}
    assert sides == {30, 15}  # stages 2 and 3; stage 1 (60x60) has none
    assert not any(isinstance(layer, AttentionAugmentedConv2D)
                   for layer in build("baseline", (60, 60, 1), 10).layers)


def test_learning_rate_pair_brackets_the_default_and_changes_nothing_else():
    plain = fidelity.PIECES["sasa"]
    rates = []
    for name in ("sasa_lr_low", "sasa_lr_high"):
        piece = fidelity.PIECES[name]
        rates.append(piece.lr)
        assert dataclasses.replace(piece, lr=plain.lr, variant="") == plain
    assert rates[0] < plain.lr < rates[1]


def test_ltpa_dp_changes_only_the_compatibility():
    from keras_attn.layers import LTPAAttention

    build = fidelity._BUILDERS[fidelity.PIECES["ltpa_dp"].build]
    plain = fidelity._BUILDERS[fidelity.PIECES["ltpa"].build]

    def compatibilities(model):
        return {layer.compatibility for layer in model._flatten_layers()
                if isinstance(layer, LTPAAttention)}

    assert compatibilities(build("attention", (60, 60, 1), 10)) == {"dp"}
    assert compatibilities(plain("attention", (60, 60, 1), 10)) == {"pc"}
    assert build("baseline", (60, 60, 1), 10).count_params() == plain(
        "baseline", (60, 60, 1), 10).count_params()


def test_aa_on_canvases_evaluates_in_training_sized_batches():
    # 256 canvases of 60x60 through AA would hold 8 heads x 900^2 logits
    # each; BN uses its moving statistics there, so accuracy is unchanged.
    budget = fidelity.PIECES["aa_cluttered"].full
    assert budget.eval_batch_size == budget.batch_size == 32
    assert fidelity.PIECES["sasa"].full.eval_batch_size == 256
