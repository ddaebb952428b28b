"""benchmarks.fidelity_report: statistics against known values, and the
markdown and figures it writes from a small synthetic results file."""

import json
import math

import numpy as np
import pytest

from benchmarks import fidelity_report as report


def test_t_quantiles_known_values():
    assert report.t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert report.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert report.t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-4)
    assert report.t_quantile(0.95, 4) == pytest.approx(2.1318, abs=1e-4)


def test_t_table_without_scipy_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        assert report._t_without_scipy(0.975, df) == pytest.approx(
            stats.t.ppf(0.975, df), abs=1e-6)
    for df in (31, 40, 100, 1000):
        assert report._t_without_scipy(0.975, df) == pytest.approx(
            stats.t.ppf(0.975, df), abs=2e-4)
    with pytest.raises(ImportError, match="scipy"):
        report._t_without_scipy(0.9, 3)


def test_paired_interval_by_hand():
    # d = [0.03, 0.01, 0.02]: mean 0.02, sd 0.01, half 4.3027 * 0.01 / sqrt 3
    mean, low, high = report.paired_interval([0.93, 0.92, 0.94],
                                             [0.90, 0.91, 0.92])
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert mean == pytest.approx(0.02)
    assert (low, high) == pytest.approx((0.02 - half, 0.02 + half))
    # one seed: no interval
    mean, low, high = report.paired_interval([0.5], [0.4])
    assert mean == pytest.approx(0.1) and math.isnan(low) and math.isnan(high)
    # 90 %: t(0.95, 2) = 2.9200
    _, low90, _ = report.paired_interval([0.93, 0.92, 0.94],
                                         [0.90, 0.91, 0.92], 0.9)
    assert low90 == pytest.approx(0.02 - 2.919986 * 0.01 / math.sqrt(3))
    with pytest.raises(ValueError, match="paired_interval.*equal length"):
        report.paired_interval([1, 2], [1])


def test_verdicts():
    assert report.verdict(0.01, 0.03) == "attention better"
    assert report.verdict(-0.03, -0.01) == "attention worse"
    assert report.verdict(-0.01, 0.03) == "no significant difference"
    assert report.verdict(0.01, 0.03, higher=False) == "attention worse"
    assert report.verdict(math.nan, math.nan) == "n/a (one seed)"
    assert not report.higher_is_better({"metric": "test_loss"})
    assert report.higher_is_better({"metric": "test_accuracy"})


def _row(mechanism, attention, baseline, **extra):
    n = len(attention)
    return {"mechanism": mechanism, "task": "fashion_mnist",
            "model": "ResNet-8 w=16", "metric": "test_accuracy",
            "seeds": list(range(n)), "attention": attention,
            "baseline": baseline, "epochs": 15, "train_images": 60000,
            "wall_seconds": 1234.0, "profile": "full", **extra}


def _curves(n, epochs=4):
    rng = np.random.default_rng(0)
    return {arm: [list(np.linspace(2, 0.5, epochs) + rng.random(epochs) / 10)
                  for _ in range(n)] for arm in ("attention", "baseline")}


def _write(tmp_path, data):
    path = tmp_path / "fidelity.json"
    path.write_text(json.dumps(data))
    return path


def _run(tmp_path, data):
    results = _write(tmp_path, data)
    out = tmp_path / "docs" / "results.md"
    img = tmp_path / "docs" / "img"
    report.main(["--results", str(results), "--out", str(out),
                 "--img-dir", str(img)])
    return out.read_text(), img


def test_report_full(tmp_path):
    picture = tmp_path / "docs" / "img" / "maps_ltpa.png"
    picture.parent.mkdir(parents=True)
    picture.write_bytes(b"png")
    data = {
        "machine": {"processor": "x86_64", "cpus": 2},
        "command": "python -m benchmarks.fidelity --profile full",
        "rows": [
            _row("cbam", [0.93, 0.92, 0.94], [0.90, 0.91, 0.92],
                 curves=_curves(3), val_curves=_curves(3),
                 notes="channel then spatial", params={"attention": 10}),
            _row("se", [0.95, 0.96, 0.97], [0.90, 0.905, 0.91],
                 curves=_curves(3)),
            _row("ltpa", [0.40, 0.41, 0.39], [0.30, 0.31, 0.30],
                 metric="test_loss"),
            _row("stn", [0.8], [0.7], profile="smoke"),
            _row("ram", [0.55, 0.56], [0.57, 0.58], task="cluttered60",
                 variant="3x the epochs"),
        ],
        "localization": [
            {"model": "ltpa_pc_concat", "task": "translated60",
             "map": "attention", "pointing_game": [0.91, 0.93, 0.92],
             "energy_in_box": [0.71, 0.70, 0.72], "seeds": [0, 1, 2]},
            {"model": "stn", "task": "rts", "map": "stn_box",
             "iou": [0.5, 0.6, 0.55], "theta_std": [0.1, 0.2, 0.3],
             "seeds": [0, 1, 2]},
            {"model": "ram", "task": "cluttered60", "map": "glimpses",
             "glimpse_hits": [0.4], "seeds": [0]},
            {"model": "floor", "task": "cluttered60", "map": "uniform",
             "pointing_game": [0.2], "seeds": []},
        ],
        "pictures": {"ltpa": str(picture), "gone": "docs/img/nothing.png"},
    }
    md, img = _run(tmp_path, data)
    lines = md.splitlines()
    cbam = next(line for line in lines if line.startswith("| cbam "))
    # means ± sample std, paired difference with its Student-t interval
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert "0.9300 ± 0.0100" in cbam and "0.9100 ± 0.0100" in cbam
    assert f"+0.0200 [{0.02 - half:+.4f}, {0.02 + half:+.4f}]" in cbam
    assert "no significant difference" in cbam
    assert "| 3 | 15 | 60,000 | 20.6 |" in cbam
    se = next(line for line in lines if line.startswith("| se "))
    assert "attention better" in se and "+0.0550 [+0.0426, +0.0674]" in se
    ltpa = next(line for line in lines if line.startswith("| ltpa "))
    assert "attention worse" in ltpa  # a higher loss
    stn = next(line for line in lines if line.startswith("| stn "))
    assert "(CI n/a)" in stn and "n/a (one seed)" in stn
    # a tuning re-run says what it changed, in the table and the labels
    ram = next(line for line in lines if line.startswith("| ram "))
    assert "ResNet-8 w=16; **tuning:** 3x the epochs |" in ram
    assert "| ram / cluttered60 (3x the epochs) |" in md
    # header: commands, profiles, every seed
    assert "python -m benchmarks.fidelity --profile full" in md
    assert "python -m benchmarks.fidelity_report --results" in md
    assert "`full`, `smoke`" in md and "Every seed" in md
    assert "- cbam / fashion_mnist: channel then spatial" in md
    # localisation: whatever keys are present, seeds counted
    ltpa_loc = next(line for line in lines
                    if line.startswith("| ltpa_pc_concat "))
    assert "0.9200 ± 0.0100" in ltpa_loc and "0.7100 ± 0.0100" in ltpa_loc
    assert "| IoU |" in md and "| theta std |" in md and "glimpse hits" in md
    assert "0.5500 ± 0.0500" in md and "| 0.4000 |" in md
    assert lines[next(i for i, line in enumerate(lines)
                      if line.startswith("| floor "))].endswith("| — |")
    # every seed listed
    assert "| cbam / fashion_mnist | ResNet-8 w=16 | 2 | 0.9400 | 0.9200 " \
           "| +0.0200 |" in md
    assert "params: attention 10" in md
    # figures written and linked relatively
    for name in ("fidelity_differences.png", "fidelity_curves.png",
                 "fidelity_val_curves.png"):
        assert (img / name).stat().st_size > 1000
        assert f"](img/{name})" in md
    assert "![ltpa](img/maps_ltpa.png)" in md
    assert "### gone (file not found" in md


def test_report_without_optional_keys(tmp_path):
    row = _row("cbam", [0.93, 0.92], [0.90, 0.91])
    for key in ("epochs", "train_images", "wall_seconds", "profile",
                "seeds", "model"):
        del row[key]
    md, img = _run(tmp_path, {"rows": [row]})
    assert "No training curves" in md
    assert "No localisation entries" in md
    assert "not recorded" in md
    assert (img / "fidelity_differences.png").exists()
    assert not (img / "fidelity_curves.png").exists()
    # an empty file is a report too
    md, _ = _run(tmp_path, {})
    assert "No result rows" in md


def test_report_errors(tmp_path):
    with pytest.raises(SystemExit, match="python -m benchmarks.fidelity"):
        report.main(["--results", str(tmp_path / "missing.json"),
                     "--out", str(tmp_path / "r.md"),
                     "--img-dir", str(tmp_path)])
    bad = _row("cbam", [0.9, 0.8], [0.9])
    with pytest.raises(ValueError, match=r"rows\[0\] \(cbam / fashion_mnist"
                       r"\).*one per seed"):
        _run(tmp_path, {"rows": [bad]})
