#!/usr/bin/env python3
"""Plot champion confidence over generations across the seeds of seed sweeps
(scripts/sweep.sh), from each run's history.csv.

Usage: scripts/plot_sweep.py --out FILE.png [--threshold 0.9999] LABEL=SWEEP_DIR [LABEL=SWEEP_DIR ...]

For every sweep, two curves: the median over seeds of the archive's median confidence, and
the median over seeds of its minimum (the weakest class), each with a band from the lowest to
the highest seed. The y axis is log(1 - confidence), so 99%, 99.99% and 99.9999% are
evenly spaced and the paper's 99.99% is a line. Needs matplotlib (pip install -r
scripts/requirements.txt); the numbers come from history.csv alone.
"""

import argparse
import csv
import glob
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load(sweep):
    runs = sorted(glob.glob(os.path.join(sweep, "seed-*", "history.csv")))
    if not runs:
        raise SystemExit(f"{sweep}: no seed-*/history.csv")
    curves = []
    for path in runs:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        curves.append((np.array([float(r["median"]) for r in rows]), np.array([float(r["min"]) for r in rows])))
    n = min(len(m) for m, _ in curves)
    med = np.stack([m[:n] for m, _ in curves])
    low = np.stack([m[:n] for _, m in curves])
    return np.arange(n), med, low, len(runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--threshold", type=float, default=0.9999)
    ap.add_argument("--title", default="Champion confidence across seeds")
    ap.add_argument("sweeps", nargs="+", metavar="LABEL=SWEEP_DIR")
    args = ap.parse_args()
    floor = 1e-8  # 1 - confidence below this (float32 softmax of 1.0) is drawn at the floor
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, spec in enumerate(args.sweeps):
        label, _, sweep = spec.partition("=")
        gens, med, low, seeds = load(sweep)
        c = colors[i % len(colors)]
        for values, style, what in [(med, "-", "median class"), (low, "--", "weakest class")]:
            err = np.clip(1 - values, floor, 1)
            ax.plot(gens, np.median(err, axis=0), style, color=c, label=f"{label}: {what} (median of {seeds} seeds)")
            ax.fill_between(gens, err.min(axis=0), err.max(axis=0), color=c, alpha=0.12, linewidth=0)
    ax.set_yscale("log")
    ax.axhline(1 - args.threshold, color="black", linewidth=0.8, linestyle=":")
    ax.axvline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.text(51, 1.2 * (1 - args.threshold), f"{args.threshold * 100:g}%", fontsize=8)
    ticks = [1, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
    ax.set_yticks(ticks)
    ax.set_yticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%", "", ""])
    ax.invert_yaxis()
    ax.set_xlabel("generation (0 = initial population)")
    ax.set_ylabel("champion confidence (log scale of 1 - p)")
    ax.set_title(args.title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
