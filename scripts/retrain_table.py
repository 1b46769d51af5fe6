#!/usr/bin/env python3
"""Markdown tables of a `pareidolia retrain` folder, for docs/results.md.

    python3 scripts/retrain_table.py DIR

Prints two tables: one row per iteration from retrain.csv (held-out accuracy, earlier fooling
images recognised, the new fooling images' median / minimum confidence and share at 99.99%),
and per iteration the median confidence of each class's champions over the iteration's runs
(read from every run's summary.json), which shows which digits resist a retrained model.
Standard library only.
"""

import csv
import glob
import json
import os
import statistics
import sys


def pct(v, digits=2):
    return "" if v == "" else f"{float(v) * 100:.{digits}f}%"


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    root = argv[1]
    with open(os.path.join(root, "retrain.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    print("| iteration | model | trained on (real + fooling) | held-out accuracy | earlier fooling images labelled `fooling` | new fooling images | median | min | >= 99.99% |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        trained = "shipped" if r["train_real"] == "" else f"{r['train_real']} + {r['train_fooling']}"
        seen = "" if r["earlier_fooling_recognised"] == "" else f"{pct(r['earlier_fooling_recognised'], 1)} of {r['earlier_fooling']}"
        print(
            f"| {r['iteration']} | {r['model']} | {trained} | {pct(r['held_out_accuracy'])} | {seen} | "
            f"{r['images']} ({r['runs']} runs) | {pct(r['median_confidence'], 4)} | {pct(r['min_confidence'], 4)} | "
            f"{pct(r['share_at_least_0.9999'], 1)} |"
        )
    print()
    per_iteration = []
    labels = None
    for r in rows:
        i = int(r["iteration"])
        by_class = {}
        for path in sorted(glob.glob(os.path.join(root, f"iteration-{i:02d}", "runs", "*", "summary.json"))):
            with open(path) as f:
                s = json.load(f)
            for c in s["classes"]:
                if c["confidence"] is not None:
                    by_class.setdefault(c["label"], []).append(c["confidence"])
        labels = labels or list(by_class)
        per_iteration.append((i, by_class))
    print("| iteration | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for i, by_class in per_iteration:
        cells = [f"{statistics.median(by_class[l]) * 100:.2f}%" if l in by_class else "" for l in labels]
        print(f"| {i} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv)
