#!/usr/bin/env python3
"""The gradient-ascent table of docs/results.md, "Today's architectures on MNIST" (issue 25).

Reads run folders laid out as ROOT/<recipe>/<model>/seed-<N>/ (each with the summary.json and
history.csv that `pareidolia run` writes for `[search] kind = "gradient-ascent"`) and prints
markdown tables:

1. per recipe and model: the probability each class's best image reached (median and minimum
   over classes x seeds, and the lowest class's median over seeds), how many class-runs reached
   99% and 99.99%, the cost to 99% and to 99.99% per class, and the 8-bit PNGs' probability;
2. per recipe and model, each class's reached probability, median over seeds.

Cost is counted in forward-pass equivalents (FE): one ascent step on one image is a forward and
a backward pass, the backward counted as two forward passes, so 3 FE. `first_step_reaching` in
summary.json is the 0-based step whose image (after that many updates) first reached the
threshold; that image was scored by gradient call s + 1, so a class costs 3 (s + 1) FE. The
per-class figure is the median (range) over the class-runs that reached it, with their number
in brackets. "All ten" is the cost of the whole batch of ten images until its last class got
there: 10 x 3 x (max over classes of s + 1), checked against the first history.csv line with
all ten classes at >= 99.99% (f32 probabilities there, so they may differ by a step).

    python3 scripts/ascent_table.py results/ascent-mnist-modern

Standard library and numpy only.
"""

import csv
import json
import os
import sys

import numpy as np

THRESHOLDS = ("0.99", "0.9999")
NAMES = {
    "lenet-mnist": "LeNet (97.8%)",
    "mnist-resnet-bn": "ResNet with BatchNorm (99.1%)",
    "mnist-vit": "ViT (97.4%)",
}
MODEL_ORDER = list(NAMES)


def pct(p, digits=5):
    return f"{100.0 * p:.{digits}f}%"


def fe(v):
    return f"{int(v):,}"


def spread(values):
    """'median (min .. max)' of FE values, '-' if none."""
    if not values:
        return "never"
    v = np.array(values, dtype=float)
    med = np.median(v)
    med_s = fe(med) if med == int(med) else f"{med:,.1f}"
    return f"{med_s} ({fe(v.min())} .. {fe(v.max())}) [{len(v)}]"


def read_run(path):
    with open(os.path.join(path, "summary.json")) as f:
        summary = json.load(f)
    history = []
    hist_path = os.path.join(path, "history.csv")
    if os.path.exists(hist_path):
        with open(hist_path) as f:
            history = list(csv.DictReader(f))
    return summary, history


def runs_of(root):
    """{(recipe, model): [(seed, summary, history), ...]}"""
    out = {}
    for recipe in sorted(os.listdir(root)):
        rdir = os.path.join(root, recipe)
        if not os.path.isdir(rdir):
            continue
        for model in sorted(os.listdir(rdir)):
            mdir = os.path.join(rdir, model)
            if not os.path.isdir(mdir):
                continue
            for seed_dir in sorted(os.listdir(mdir)):
                path = os.path.join(mdir, seed_dir)
                if not (seed_dir.startswith("seed-") and os.path.exists(os.path.join(path, "summary.json"))):
                    continue
                summary, history = read_run(path)
                out.setdefault((recipe, model), []).append((int(seed_dir[5:]), summary, history))
    return out


def order(key):
    recipe, model = key
    return (recipe, MODEL_ORDER.index(model) if model in MODEL_ORDER else 99, model)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "results/ascent-mnist-modern"
    groups = runs_of(root)
    if not groups:
        sys.exit(f"{root}: no run folders <recipe>/<model>/seed-N/summary.json")
    warnings = []

    print("| recipe (steps) | model | seeds | reached: median | lowest class (median over seeds) "
          "| min | >= 99% | >= 99.99% | FE per class to 99% | FE per class to 99.99% "
          "| all ten >= 99.99%: FE | 8-bit PNG: median | PNG min | PNG >= 99% / >= 99.99% |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    per_class_rows = []
    for key in sorted(groups, key=order):
        recipe, model = key
        runs = sorted(groups[key], key=lambda r: r[0])
        steps = {r[1]["ascent"]["steps"] for r in runs}
        conf = []  # [seed][class]
        png = []
        cost = {t: [] for t in THRESHOLDS}
        all_ten = []
        for seed, summary, history in runs:
            classes = summary["ascent"]["classes"]
            conf.append([c["confidence"] for c in classes])
            png.append([c["png_confidence"] for c in classes])
            for t in THRESHOLDS:
                for c in classes:
                    s = c["first_step_reaching"][t]
                    if s is not None:
                        cost[t].append(3 * (s + 1))
            firsts = [c["first_step_reaching"]["0.9999"] for c in classes]
            if all(s is not None for s in firsts):
                calls = max(firsts) + 1
                all_ten.append(len(classes) * 3 * calls)
                # Cross-check against history.csv (f32 probabilities there).
                line = next((h for h in history if int(h["at_least_0.9999"]) == len(classes)), None)
                if line is None or abs(int(line["generation"]) - calls) > 1:
                    warnings.append(
                        f"{recipe}/{model}/seed-{seed}: summary says all ten >= 99.99% after {calls} calls, "
                        f"history.csv says {line and line['generation']}"
                    )
        conf = np.array(conf, dtype=float)
        png = np.array(png, dtype=float)
        n = conf.size
        per_class = np.median(conf, axis=0)
        all_ten_s = (
            f"{spread(all_ten)}" if len(all_ten) == len(runs) else
            (f"{spread(all_ten)}; {len(runs) - len(all_ten)} seed(s) never" if all_ten else "never")
        )
        print(
            f"| {recipe} ({'/'.join(str(s) for s in sorted(steps))}) | {NAMES.get(model, model)} | {len(runs)} "
            f"| {pct(np.median(conf))} | {pct(per_class.min())} (class {int(per_class.argmin())}) "
            f"| {pct(conf.min())} | {int((conf >= 0.99).sum())} of {n} | {int((conf >= 0.9999).sum())} of {n} "
            f"| {spread(cost['0.99'])} | {spread(cost['0.9999'])} | {all_ten_s} "
            f"| {pct(np.median(png))} | {pct(png.min())} "
            f"| {int((png >= 0.99).sum())} / {int((png >= 0.9999).sum())} of {n} |"
        )
        per_class_rows.append((recipe, model, per_class, conf))

    print()
    classes = max(len(r[2]) for r in per_class_rows)
    print("| recipe | model | " + " | ".join(str(c) for c in range(classes)) + " |")
    print("|---|---|" + "---|" * classes)
    for recipe, model, per_class, _ in per_class_rows:
        print(f"| {recipe} | {NAMES.get(model, model)} | " + " | ".join(pct(p, 4) for p in per_class) + " |")

    # Class-runs above 99.99% whose PNG fell below it, and the largest loss to rounding.
    print()
    for key in sorted(groups, key=order):
        recipe, model = key
        lost, worst = 0, (0.0, None)
        for seed, summary, _ in groups[key]:
            for c in summary["ascent"]["classes"]:
                p, q = c["confidence"], c["png_confidence"]
                if p >= 0.9999 and q < 0.9999:
                    lost += 1
                if p - q > worst[0]:
                    worst = (p - q, f"seed {seed} class {c['class']}: {pct(p)} -> {pct(q)}")
        print(f"- {recipe}, {NAMES.get(model, model)}: PNGs falling below 99.99% from above: {lost}; "
              f"largest loss to 8-bit rounding: {worst[1] or 'none'}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)


if __name__ == "__main__":
    main()
