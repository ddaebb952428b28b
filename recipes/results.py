"""Collect the `metrics.json` of recipe runs into one Markdown table.

    python -m recipes.results runs            # every run under runs/

Rows are sorted by recipe name; a recipe and its `_baseline` sit together.
"""

import argparse
import json
import pathlib


def rows(root):
    for path in sorted(pathlib.Path(root).glob("*/metrics.json")):
        m = json.loads(path.read_text())
        policies = m.get("test_accuracy_by_policy") or {}
        extra = ", ".join(f"{k} {100 * v:.1f} %"
                          for k, v in sorted(policies.items()))
        speed = m.get("train_images_per_second")
        yield [
            m["recipe"],
            "yes" if m["attention"] else "no (baseline)",
            m["dataset"],
            f"{m['epochs']} × {m.get('steps_per_epoch') or 'all'}",
            f"{100 * m['test_accuracy']:.2f}",
            f"{m['params']:,}",
            f"{speed:.0f}" if speed else "—",
            extra,
        ]


def table(root):
    header = ["run", "attention", "dataset", "epochs × steps",
              "test accuracy %", "parameters", "train images/s", "notes"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(root)]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="an --output-dir of recipe runs")
    print(table(p.parse_args(argv).root))


if __name__ == "__main__":
    main()
