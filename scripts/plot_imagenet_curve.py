#!/usr/bin/env python3
"""Plot the ImageNet runs' curves over generations from their history.csv files: the median,
mean and minimum champion confidence and the share of classes at >= 50% and >= 90%, one
colour per run, with the paper's reported medians as dashed lines where given.

Usage: scripts/plot_imagenet_curve.py --out FILE.png LABEL=HISTORY.csv [LABEL=HISTORY.csv ...]
       [--paper LABEL=MEDIAN ...]

For example (docs/results.md, "ImageNet direct"):

    scripts/plot_imagenet_curve.py --out docs/images/imagenet-curves.png \\
        "CPPN=results/imagenet-cppn-seed1/history.csv" \\
        "direct=results/imagenet-direct-seed1/history.csv" \\
        --paper "paper, CPPN=0.8811" --paper "paper, direct=0.2159"

Needs matplotlib (pip install -r scripts/requirements.txt); the numbers come from history.csv
alone.
"""

import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    rows = list(csv.DictReader(open(path)))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    missing = {"generation", "median", "mean", "min", "filled", "at_least_0.5", "at_least_0.9"} - set(rows[0])
    if missing:
        raise SystemExit(f"{path}: not a pareidolia history.csv (no {', '.join(sorted(missing))})")
    col = lambda k: [float(r[k]) for r in rows]  # noqa: E731
    filled = col("filled")
    return {
        "generation": col("generation"),
        "median": col("median"),
        "mean": col("mean"),
        "min": col("min"),
        "ge50": [a / f for a, f in zip(col("at_least_0.5"), filled)],
        "ge90": [a / f for a, f in zip(col("at_least_0.9"), filled)],
    }


def pair(text, what):
    if "=" not in text:
        raise SystemExit(f"{what} `{text}`: expected LABEL=VALUE")
    label, value = text.split("=", 1)
    return label, value


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--paper", action="append", default=[], help="LABEL=MEDIAN, a dashed line")
    ap.add_argument("runs", nargs="+", help="LABEL=HISTORY.csv")
    args = ap.parse_args()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(args.runs):
        label, path = pair(run, "run")
        h = load(path)
        c = colours[i % len(colours)]
        g = h["generation"]
        left.plot(g, h["median"], color=c, label=f"{label}: median")
        left.plot(g, h["mean"], color=c, linestyle=":", label=f"{label}: mean")
        left.plot(g, h["min"], color=c, linewidth=0.8, alpha=0.6, label=f"{label}: min")
        right.plot(g, h["ge50"], color=c, label=f"{label}: >= 50%")
        right.plot(g, h["ge90"], color=c, linestyle="--", label=f"{label}: >= 90%")
    for paper in args.paper:
        label, value = pair(paper, "--paper")
        left.axhline(float(value), color="grey", linestyle="--", linewidth=0.8)
        left.annotate(f"{label} {float(value):.2%}", (1, float(value)), xytext=(-4, 3),
                      xycoords=("axes fraction", "data"), textcoords="offset points",
                      fontsize=8, color="grey", ha="right")
    left.set_xlabel("generation")
    left.set_ylabel("champion confidence")
    left.set_ylim(0, 1)
    left.legend(fontsize=7, loc="center right", bbox_to_anchor=(1, 0.42))
    left.set_title("Champions' confidence over 1000 classes")
    right.set_xlabel("generation")
    right.set_ylabel("share of the 1000 classes")
    right.set_ylim(0, 1)
    right.legend(fontsize=7)
    right.set_title("Classes fooled at >= 50% and >= 90%")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
