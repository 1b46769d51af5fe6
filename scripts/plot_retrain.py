#!/usr/bin/env python3
"""Plots the curves of one or more `pareidolia retrain` folders (their retrain.csv).

    python3 scripts/plot_retrain.py OUT.png LABEL=DIR [LABEL=DIR ...]

One panel per measure, iteration on the x axis: the held-out accuracy of each model on the
real digits, the share of all earlier fooling images it labels `fooling`, and the median and
minimum confidence of the fooling images evolved against it (with the paper's 99.99% line).
Needs matplotlib (scripts/requirements.txt).
"""

import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def read(path):
    with open(os.path.join(path, "retrain.csv"), newline="") as f:
        return list(csv.DictReader(f))


def column(rows, key):
    xs, ys = [], []
    for r in rows:
        if r[key] != "":
            xs.append(int(r["iteration"]))
            ys.append(float(r[key]))
    return xs, ys


def main(argv):
    if len(argv) < 3 or any("=" not in a for a in argv[2:]):
        sys.exit(__doc__)
    out = argv[1]
    series = [a.split("=", 1) for a in argv[2:]]
    panels = [
        ("held_out_accuracy", "held-out accuracy on real digits (%)", (90, 100)),
        ("earlier_fooling_recognised", "earlier fooling images labelled 'fooling' (%)", (-2, 102)),
        ("median_confidence", "median confidence of new fooling images (%)", (-2, 102)),
        ("share_at_least_0.9999", "new fooling images at >= 99.99% (%)", (-2, 102)),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for label, path in series:
        rows = read(path)
        for ax, (key, _, _) in zip(axes, panels):
            xs, ys = column(rows, key)
            ax.plot(xs, [y * 100.0 for y in ys], marker="o", label=label)
    for ax, (key, title, ylim) in zip(axes, panels):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration (0 = shipped LeNet)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.set_ylim(*ylim)
        if key == "median_confidence":
            ax.axhline(99.99, color="grey", linestyle="--", linewidth=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main(sys.argv)
