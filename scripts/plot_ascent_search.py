#!/usr/bin/env python3
"""Figures of an ascent search's runs (scripts/ascent_search.py's OUT folder).

--curves PNG: each run's median class probability (of the best image so far, `history.csv`'s
`median` column) against the step, and its weakest class's (`min`, dashed): a run that stalls
levels off, one still rising at its last step does not.

--images PNG: the best image of each class (the gallery's 8-bit PNGs), one row per run, with
the difference from the model's mean grey (127 for EfficientNet-Lite0) multiplied by --gain, so
that a perturbation of a few levels, invisible at 1:1, shows its structure: whether it has
features or is noise. The caption gives the class, the PNG's probability and the gain.
--crop shows each image's centre (--size pixels square) pixel for pixel instead of the whole
image scaled down.

    python3 scripts/plot_ascent_search.py /work/ascent-search2 --curves c.png --images i.png \\
        --runs setting--1-x0.5-late_prog_mult=1 169-late_prog_mult=1 --gain 10

(--runs takes the run names of the tables, or their folder names: a name starting with a dash,
such as setting -1's, must be given as its folder name.)
"""

import argparse
import csv
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw


def runs_in(out, names):
    # A name may be given as its folder name too (`setting--1-x0.5`: argparse takes `-1-x0.5`
    # for an option).
    names = [n[len("setting-"):] if n.startswith("setting-") else n for n in names or []]
    found = sorted(n[len("setting-"):] for n in os.listdir(out)
                   if n.startswith("setting-") and os.path.exists(os.path.join(out, n, "summary.json")))
    return names if names else found


def curves(out, runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=100)
    for i, run in enumerate(runs):
        with open(os.path.join(out, f"setting-{run}", "history.csv")) as f:
            rows = list(csv.DictReader(f))
        steps = [int(r["generation"]) for r in rows]
        color = f"C{i % 10}"
        ax.plot(steps, [float(r["median"]) for r in rows], color=color, label=run)
        ax.plot(steps, [float(r["min"]) for r in rows], color=color, linestyle="--", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("probability of the best image so far")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.99, color="grey", linewidth=0.5)
    ax.legend(fontsize=7, loc="center right", title="run (median; dashed: weakest class)",
              title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def images(out, runs, path, gain, mean, size, crop):
    tiles = []
    for run in runs:
        run_dir = os.path.join(out, f"setting-{run}")
        with open(os.path.join(run_dir, "summary.json")) as f:
            per_class = json.load(f)["ascent"]["classes"]
        gallery = os.path.join(run_dir, "gallery")
        row = []
        for c in per_class:
            name = next(f for f in os.listdir(gallery) if f.endswith(".png")
                        and f.split("_")[0].isdigit() and int(f.split("_")[0]) == c["class"])
            img = np.asarray(Image.open(os.path.join(gallery, name)).convert("RGB"), dtype=np.float64)
            amp = np.clip((img - mean) * gain + mean, 0, 255).astype(np.uint8)
            label = name.split("_", 1)[1].rsplit("_", 1)[0].replace("_", " ")[:18]
            if crop:  # the centre, pixel for pixel
                h, w = amp.shape[:2]
                amp = amp[(h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size]
                tile = Image.fromarray(amp)
            else:
                tile = Image.fromarray(amp).resize((size, size), Image.NEAREST)
            row.append((tile,
                        f"{label} {100 * (c['png_confidence'] or 0):.1f}%"))
        tiles.append((run, row))
    cols = max(len(r) for _, r in tiles)
    left, pad, cap = max(150, 6 * max(len(run) for run, _ in tiles) + 10), 6, 16
    canvas = Image.new("RGB", (left + cols * (size + pad), len(tiles) * (size + cap + pad) + 20), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), f"difference from grey {mean:g} x {gain:g}; caption: class, 8-bit PNG's probability",
              fill="black")
    for r, (run, row) in enumerate(tiles):
        y = 20 + r * (size + cap + pad)
        draw.text((4, y + size // 2), run, fill="black")
        for k, (tile, caption) in enumerate(row):
            x = left + k * (size + pad)
            canvas.paste(tile, (x, y))
            draw.text((x, y + size + 2), caption, fill="black")
    canvas.save(path, optimize=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the search's OUT folder")
    p.add_argument("--runs", nargs="+", help="run names (folder names without 'setting-'); default all")
    p.add_argument("--curves", help="write the curves figure here")
    p.add_argument("--images", help="write the amplified images here")
    p.add_argument("--gain", type=float, default=10.0)
    p.add_argument("--mean", type=float, default=127.0, help="the model's mean pixel (Lite0: 127)")
    p.add_argument("--size", type=int, default=112, help="tile size in pixels")
    p.add_argument("--crop", action="store_true",
                   help="show each image's centre, size x size pixels at 1:1, instead of the whole image scaled")
    args = p.parse_args()
    runs = runs_in(args.out, args.runs)
    if args.curves:
        curves(args.out, runs, args.curves)
    if args.images:
        images(args.out, runs, args.images, args.gain, args.mean, args.size, args.crop)


if __name__ == "__main__":
    sys.exit(main())
