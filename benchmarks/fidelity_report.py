"""Markdown report and figures from the fidelity benchmark's results.

Reads `benchmarks/results/fidelity.json` (written by
`python -m benchmarks.fidelity`) and writes `docs/results.md` with

- a results table: per row (a mechanism on a task against its baseline)
  the mean +- standard deviation over seeds of both, the paired difference
  attention - baseline (seed by seed) with its 95 % Student-t confidence
  interval, and a verdict from whether that interval excludes 0;
- a localisation table (pointing game, energy in box, STN IoU, glimpse
  hits: whatever each entry holds);
- every seed's values, the figures `docs/img/fidelity_differences.png`
  (each row's difference with its interval) and
  `docs/img/fidelity_curves.png` (training loss per epoch, every seed;
  `fidelity_val_curves.png` too when rows carry validation curves), and
  links to the map pictures the benchmark drew.

    python -m benchmarks.fidelity_report
    python -m benchmarks.fidelity_report --results benchmarks/results/\
fidelity_smoke.json --out /tmp/results.md --img-dir /tmp/img

Statistics, stated plainly:

- Standard deviations are sample ones (n - 1); with one seed there is none
  and the interval is "n/a".
- The interval is `mean(d) +- t(1 - alpha / 2, n - 1) sd(d) / sqrt(n)` over
  the paired differences `d` (same seed, so the same data order and
  initial draws where the benchmark shares them). It says how sure the
  mean difference over THESE seeds is, assuming roughly normal
  differences; with 3 seeds t is 4.30, so only large, steady differences
  come out significant.
- "Better" means a higher metric unless the metric's name contains
  "loss" or "error" (or the row says `"higher_is_better": false`).

Student t quantiles come from scipy when it is installed; without it a
table for 95 % and df 1..30 (and a series in 1/df above 30) is used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "fidelity.json")
OUT = os.path.join(ROOT, "docs", "results.md")
IMG_DIR = os.path.join(ROOT, "docs", "img")
NAME = "fidelity_report"

# t(0.975, df) for df = 1..30 (scipy.stats.t.ppf, 6 decimals).
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912,
         2.364624, 2.306004, 2.262157, 2.228139, 2.200985, 2.178813,
         2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
         2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
         2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)

# Localisation scores, in table order; any other list of numbers an entry
# holds gets a column after them.
_LOCALIZATION_KEYS = {"pointing_game": "pointing game",
                      "energy_in_box": "energy in box", "iou": "IoU",
                      "glimpse_hits": "glimpse hits"}

# Row keys the tables show; the others are listed under "settings".
_SHOWN = {"mechanism", "task", "model", "metric", "seeds", "attention",
          "baseline", "epochs", "train_images", "wall_seconds", "profile",
          "notes", "curves", "val_curves", "higher_is_better"}


# Hand-written beside the report: why a pair ties or loses (linked).
INVESTIGATION = "investigation.md"


# --- statistics (pure) ----------------------------------------------------


def t_quantile(p, df):
    """The `p` quantile of Student's t with `df` degrees of freedom."""
    if not 0.5 <= p < 1:
        raise ValueError(f"t_quantile: invalid `p`; expected a probability "
                         f"in [0.5, 1). Received: p={p!r}")
    if isinstance(df, bool) or not isinstance(df, (int, np.integer)) or (
        df < 1
    ):
        raise ValueError(f"t_quantile: invalid `df`; expected an integer "
                         f">= 1. Received: df={df!r}")
    try:
        from scipy import stats
    except ImportError:
        return _t_without_scipy(p, int(df))
    return float(stats.t.ppf(p, df))


def _t_without_scipy(p, df):
    if df <= 30 and abs(p - 0.975) < 1e-12:
        return _T975[df - 1]
    if df > 30:
        # Cornish-Fisher series in 1/df (Abramowitz & Stegun 26.7.5):
        # within 1e-4 of the exact quantile for df > 30 at p <= 0.995.
        z = statistics.NormalDist().inv_cdf(p)
        return (z + (z**3 + z) / (4 * df)
                + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2))
    raise ImportError(
        f"t_quantile: p={p} with df={df} needs scipy (`pip install scipy`); "
        "without it only 95 % intervals (p = 0.975) are available")


def mean_std(values):
    """`(mean, sample standard deviation)`; the std is nan for one value."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"mean_std: invalid `values`; expected a non-empty "
                         f"list of numbers. Received: values={values!r}")
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return float(values.mean()), std


def paired_interval(a, b, confidence=0.95):
    """Mean of the paired differences `a - b` and its confidence interval.

    Args:
        a, b: equal-length sequences, one value per seed (attention,
            baseline), paired by position.
        confidence: in (0, 1).

    Returns:
        `(mean, low, high)` of `d = a - b`: `mean(d) -+ t((1 + confidence)
        / 2, n - 1) * sd(d) / sqrt(n)` (Student t, sample sd). With one
        pair `low` and `high` are nan.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(
            "paired_interval: invalid `a`, `b`; expected two non-empty "
            "lists of equal length (one value per seed each). Received: "
            f"lengths {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError("paired_interval: invalid `confidence`; expected "
                         f"a number in (0, 1). Received: {confidence!r}")
    d = a - b
    mean, sd = mean_std(d)
    n = len(d)
    if n < 2:
        return mean, math.nan, math.nan
    half = t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def higher_is_better(row):
    """Whether a larger value of the row's metric is better."""
    if "higher_is_better" in row:
        return bool(row["higher_is_better"])
    metric = str(row.get("metric", "")).lower()
    return not ("loss" in metric or "error" in metric)


def verdict(low, high, higher=True):
    """"attention better / worse / no significant difference" from the
    interval of attention - baseline; "n/a (one seed)" without one."""
    if math.isnan(low):
        return "n/a (one seed)"
    if low > 0 or high < 0:
        return ("attention better" if (low > 0) == higher
                else "attention worse")
    return "no significant difference"


# --- reading --------------------------------------------------------------


def load_results(path):
    """The benchmark's JSON, with `rows` / `localization` / `pictures`
    defaulted; a missing file says how to make one."""
    if not os.path.exists(path):
        raise SystemExit(
            f"{NAME}: no results at {path}. Run `python -m "
            "benchmarks.fidelity` first (it writes "
            "benchmarks/results/fidelity.json), or pass --results PATH.")
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{NAME}: {path} holds a {type(data).__name__}; "
                         "expected a JSON object with a `rows` list")
    data.setdefault("rows", [])
    data.setdefault("localization", [])
    data.setdefault("pictures", {})
    return data


def _label(row):
    label = f"{row.get('mechanism', '?')} / {row.get('task', '?')}"
    if row.get("variant"):
        label += f" ({row['variant']})"
    return label


def summarise(row, index=0):
    """The statistics of one result row, as a dict (pure).

    Keys: `label`, `n`, `seeds`, `attention` and `baseline` `(mean, std)`,
    `difference` `(mean, low, high)`, `verdict`, `higher_is_better`.
    """
    where = f"{NAME}: rows[{index}] ({_label(row)})"
    for key in ("attention", "baseline"):
        values = row.get(key)
        if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool)
            for v in values
        ):
            raise ValueError(f"{where}: `{key}` is {values!r}; expected a "
                             "non-empty list of numbers, one per seed")
    a, b = row["attention"], row["baseline"]
    if len(a) != len(b):
        raise ValueError(f"{where}: `attention` has {len(a)} values and "
                         f"`baseline` {len(b)}; expected one per seed for "
                         "both, in the same seed order")
    seeds = row.get("seeds") or list(range(len(a)))
    if len(seeds) != len(a):
        raise ValueError(f"{where}: `seeds` has {len(seeds)} entries for "
                         f"{len(a)} values; expected one seed per value")
    difference = paired_interval(a, b)
    higher = higher_is_better(row)
    return {
        "label": _label(row), "n": len(a), "seeds": list(seeds),
        "attention": mean_std(a), "baseline": mean_std(b),
        "difference": difference, "higher_is_better": higher,
        "verdict": verdict(difference[1], difference[2], higher),
    }


# --- formatting -----------------------------------------------------------


def _number(x, signed=False):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    size = abs(x)
    digits = 1 if size >= 100 else 2 if size >= 10 else 4
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _mean_std(pair):
    mean, std = pair
    if math.isnan(std):
        return _number(mean)
    return f"{_number(mean)} ± {_number(std)}"


def _interval(difference):
    mean, low, high = difference
    if math.isnan(low):
        return f"{_number(mean, signed=True)} (CI n/a)"
    return (f"{_number(mean, signed=True)} "
            f"[{_number(low, signed=True)}, {_number(high, signed=True)}]")


def _cell(value):
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return _number(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _link(path, out_dir):
    return os.path.relpath(path, out_dir).replace(os.sep, "/")


def results_table(rows, summaries):
    """Markdown table of every row (one line each)."""
    lines = [
        "| mechanism | task | model | metric | attention | baseline "
        "| attention − baseline [95 % CI] | verdict | seeds | epochs "
        "| train images | wall (min) |",
        "|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row, s in zip(rows, summaries, strict=True):
        wall = row.get("wall_seconds")
        wall = "" if wall is None else f"{wall / 60:.1f}"
        model = _cell(row.get("model"))
        if row.get("variant"):  # a tuning re-run: say what it changed
            model += f"; **tuning:** {_cell(row['variant'])}"
        lines.append(
            f"| {_cell(row.get('mechanism'))} | {_cell(row.get('task'))} "
            f"| {model} | {_cell(row.get('metric'))} "
            f"| {_mean_std(s['attention'])} | {_mean_std(s['baseline'])} "
            f"| {_interval(s['difference'])} | {s['verdict']} | {s['n']} "
            f"| {_cell(row.get('epochs'))} "
            f"| {_cell(row.get('train_images'))} | {wall} |")
    return "\n".join(lines)


def _score_keys(entries):
    keys = [k for k in _LOCALIZATION_KEYS if any(k in e for e in entries)]
    for entry in entries:
        for key, value in entry.items():
            if key not in keys and key != "seeds" and isinstance(
                value, list
            ) and value and all(isinstance(v, (int, float))
                                and not isinstance(v, bool) for v in value):
                keys.append(key)
    return keys


def localization_table(entries):
    """Markdown table of the localisation entries (`""` when none)."""
    if not entries:
        return ""
    keys = _score_keys(entries)
    names = [_LOCALIZATION_KEYS.get(k, k.replace("_", " ")) for k in keys]
    lines = ["| model | task | map | " + " | ".join(names) + " | seeds |",
             "|---|---|---|" + "---:|" * len(keys) + "---:|"]
    for entry in entries:
        cells = []
        for key in keys:
            values = entry.get(key)
            cells.append(_mean_std(mean_std(values)) if values else "")
        seeds = entry.get("seeds")
        count = len(seeds) if seeds else "—"
        lines.append(
            f"| {_cell(entry.get('model'))} | {_cell(entry.get('task'))} "
            f"| {_cell(entry.get('map'))} | " + " | ".join(cells)
            + f" | {count} |")
    return "\n".join(lines)


def seeds_table(rows, summaries):
    """Every seed's attention / baseline value and difference."""
    lines = ["| mechanism / task | model | seed | attention | baseline "
             "| difference |", "|---|---|---:|---:|---:|---:|"]
    for row, s in zip(rows, summaries, strict=True):
        for seed, a, b in zip(s["seeds"], row["attention"], row["baseline"],
                              strict=True):
            lines.append(f"| {s['label']} | {_cell(row.get('model'))} "
                         f"| {seed} | {_number(a)} | {_number(b)} "
                         f"| {_number(a - b, signed=True)} |")
    return "\n".join(lines)


def _settings(row):
    """`key: value` of the row's keys the tables do not show."""
    parts = []
    for key, value in row.items():
        if key in _SHOWN:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
        elif isinstance(value, list):
            continue  # per-seed data of another kind: not summarised here
        parts.append(f"{key.replace('_', ' ')}: {_cell(value)}")
    return "; ".join(parts)


# --- figures --------------------------------------------------------------


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on an Agg canvas, as keras_attn.viz draws: no pyplot
    # state, no window.
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _unique_labels(rows):
    labels = [_label(r) for r in rows]
    if len({r.get("metric") for r in rows}) > 1:
        labels = [f"{lab} ({r.get('metric')})" for lab, r in zip(
            labels, rows, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} · {r.get('model', '')}" for lab, r in zip(
            labels, rows, strict=True)]
    return labels


def plot_differences(rows, summaries, path):
    """One horizontal error bar per row: the mean paired difference and
    its 95 % interval (a bare dot with one seed), a line at 0."""
    figure = _figure(7.0, 1.2 + 0.45 * len(rows))
    ax = figure.add_subplot()
    colours = {"attention better": "tab:green",
               "attention worse": "tab:red"}
    for y, s in enumerate(summaries):
        mean, low, high = s["difference"]
        colour = colours.get(s["verdict"], "tab:gray")
        if math.isnan(low):
            ax.plot(mean, y, "o", mfc="none", color=colour)
        else:
            ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o",
                        color=colour, capsize=3)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), _unique_labels(rows), fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("attention − baseline (mean over seeds, 95 % CI)")
    ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_curves(rows, path, key="curves", ylabel="training loss"):
    """Small multiples, one per row holding `key`: the per-epoch values
    of every seed, attention solid, baseline dashed, one colour per seed.
    Returns whether anything was drawn (no file otherwise)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    drawn = [(label, row[key]) for label, row in zip(
        _unique_labels(rows), rows, strict=True)
        if isinstance(row.get(key), dict)]
    if not drawn:
        return False
    columns = min(3, len(drawn))
    lines = -(-len(drawn) // columns)
    figure = _figure(3.4 * columns, 2.6 * lines + 0.4)
    axes = figure.subplots(lines, columns, squeeze=False)
    for ax in axes.ravel()[len(drawn):]:
        ax.set_axis_off()
    for ax, (label, curves) in zip(axes.ravel(), drawn, strict=False):
        for style, arm in (("-", "attention"), ("--", "baseline")):
            for seed, curve in enumerate(curves.get(arm) or []):
                epochs = np.arange(1, len(curve) + 1)
                ax.plot(epochs, curve, style, color=f"C{seed % 10}",
                        linewidth=1.0)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].legend(
        handles=[Line2D([], [], color="black", linestyle="-"),
                 Line2D([], [], color="black", linestyle="--")],
        labels=["attention", "baseline"], fontsize=7,
        title="colour = seed", title_fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return True


# --- report ---------------------------------------------------------------


def _picture_path(path, results_path):
    """A picture path from the JSON: absolute, or relative to the
    repository root (as `benchmarks.fidelity` writes it), else to the
    results file's folder."""
    if os.path.isabs(path):
        return path
    for base in (ROOT, os.path.dirname(os.path.abspath(results_path))):
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return candidate
    return os.path.join(ROOT, path)


def _shown(path):
    """`path` relative to the repository when inside it."""
    relative = os.path.relpath(os.path.abspath(path), ROOT)
    if relative.startswith(".."):
        return str(path)
    return relative.replace(os.sep, "/")


def _header(data, results_path, command):
    rows = data["rows"]
    profiles = sorted({str(r["profile"]) for r in rows if "profile" in r}
                      | ({str(data["profile"])} if "profile" in data
                         else set()))
    benchmark = data.get("command", "python -m benchmarks.fidelity")
    lines = [
        "# Fidelity results: attention against its baseline",
        "",
        "Generated by `" + command + "` from `" + _shown(results_path)
        + "`, which `" + benchmark + "` wrote. Do not edit by hand: "
        "re-run both to update.",
        "",
        "Profile(s): " + (", ".join(f"`{p}`" for p in profiles)
                          if profiles else "not recorded") + ".",
        "",
        "Every seed that was run is reported: means, standard deviations "
        "(sample, n − 1) and intervals are over all seeds, none dropped, "
        "and each seed's values are listed under "
        "[Every seed](#every-seed). The difference is attention − "
        "baseline, paired seed by seed; its 95 % interval is Student t "
        "over the paired differences (df = n − 1; n/a with one seed). "
        "The verdict says whether that interval excludes 0.",
    ]
    machine = data.get("machine")
    if isinstance(machine, dict) and machine:
        lines += ["", "Machine: " + ", ".join(
            f"{k} {_cell(v)}" for k, v in machine.items()) + "."]
    elif machine:
        lines += ["", f"Machine: {_cell(machine)}."]
    if data.get("note"):
        lines += ["", str(data["note"])]
    return lines


def render(data, results_path, out, img_dir, command):
    """Write the figures under `img_dir` and return the markdown of
    `out`."""
    rows = data["rows"]
    summaries = [summarise(r, i) for i, r in enumerate(rows)]
    out_dir = os.path.dirname(os.path.abspath(out))
    lines = _header(data, results_path, command)
    lines += ["", "## Results", ""]
    if rows:
        lines.append(results_table(rows, summaries))
        lines += ["", "Wall: the row's `wall_seconds` in minutes "
                  "(`benchmarks.fidelity` records every seed of both "
                  "models together)."]
        notes = [(s["label"], r["notes"]) for r, s in zip(
            rows, summaries, strict=True) if r.get("notes")]
        if notes:
            lines += [""] + [f"- {label}: {note}" for label, note in notes]
        investigation = os.path.join(out_dir, INVESTIGATION)
        if os.path.exists(investigation):
            lines += ["", "Where attention ties or loses, what was measured "
                      "to find out why and what is still to try: "
                      f"[{INVESTIGATION}]({INVESTIGATION})."]
        differences = os.path.join(img_dir, "fidelity_differences.png")
        plot_differences(rows, summaries, differences)
        lines += ["", f"![attention − baseline per row, 95 % CI]"
                  f"({_link(differences, out_dir)})"]
        for key, name, ylabel, what in (
            ("curves", "fidelity_curves.png", "training loss",
             "Training loss per epoch"),
            ("val_curves", "fidelity_val_curves.png", "validation metric",
             "Validation metric per epoch"),
        ):
            path = os.path.join(img_dir, name)
            if plot_curves(rows, path, key, ylabel):
                lines += ["", f"{what}, every seed (attention solid, "
                          "baseline dashed):", "",
                          f"![{what.lower()}]({_link(path, out_dir)})"]
            elif key == "curves":
                lines += ["", "No training curves in the results."]
    else:
        lines.append("No result rows in the results file.")
    lines += ["", "## Localisation", ""]
    table = localization_table(data["localization"])
    lines.append(table or "No localisation entries in the results file.")
    if table:
        lines += ["", "Pointing game: share of images whose map maximum "
                  "lies in the object's box; energy in box: share of the "
                  "map's mass inside it; IoU: the box a spatial "
                  "transformer reads against the object's; glimpse hits: "
                  "share of RAM's glimpse centres on the object "
                  "(`benchmarks/_localization.py`). Seeds `—`: a "
                  "seed-independent reference map."]
    pictures = data["pictures"]
    if pictures:
        lines += ["", "## Map pictures"]
        for name, path in pictures.items():
            found = _picture_path(str(path), results_path)
            missing = "" if os.path.exists(found) else (
                " (file not found when this report was written)")
            lines += ["", f"### {name}{missing}", "",
                      f"![{name}]({_link(found, out_dir)})"]
    if rows:
        lines += ["", "## Every seed", "", seeds_table(rows, summaries)]
        settings = [(s["label"], _settings(r)) for r, s in zip(
            rows, summaries, strict=True)]
        settings = [(label, text) for label, text in settings if text]
        if settings:
            lines += ["", "Settings:", ""] + [
                f"- {label}: {text}" for label, text in settings]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=RESULTS,
                   help="the benchmark's JSON (default: %(default)s)")
    p.add_argument("--out", default=OUT,
                   help="markdown to write (default: %(default)s)")
    p.add_argument("--img-dir", default=IMG_DIR,
                   help="folder for the figures (default: %(default)s)")
    args = p.parse_args(argv)
    data = load_results(args.results)
    command = " ".join(["python -m benchmarks.fidelity_report",
                        *(sys.argv[1:] if argv is None else argv)])
    os.makedirs(args.img_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    text = render(data, args.results, args.out, args.img_dir, command)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
