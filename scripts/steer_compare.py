#!/usr/bin/env python3
"""Gradient-informed MAP-Elites against the paper's evolution at equal cost (issue 28, item 3).

Runs `pareidolia run` for every variant and seed on a shipped MNIST config (the default
experiment, `configs/mnist-direct.toml`, or `configs/mnist-cppn.toml`) until every digit is at
>= 99.99% (`--until min>=0.9999`) or the generation cap, and reads each run's `history.csv`:
cost is counted in forward-pass equivalents (every evaluation one, every gradient step three: a
forward and a backward pass, the backward counted as two), the `forward_equivalents` column of a
steered run and `evaluations` otherwise. A variant is a `[search.gradient]` table in TOML inline
form, or `none` for the paper's loop:

    python3 scripts/steer_compare.py --encoding direct --seeds 1-10 --out runs/steer-direct \\
        --variant evolution=none --variant operator='{}' \\
        --variant 'uniform={target = "uniform"}'

Per run it records the forward-pass equivalents and generations at which every digit first
reached 99% and 99.99%, the archive's distinct champions (gallery images that differ) and a
pixel-space diversity figure (the mean absolute difference between two champions' pixels,
averaged over all pairs, in 8-bit levels), and for CPPN images the total variation per pixel
(mean absolute difference of neighbouring pixels; noise ~ 85, smooth pictures ~ 5). Writes
OUT/runs.csv (a line per run), OUT/summary.md (per variant: medians and ranges across seeds,
seeds that reached 99.99%) and OUT/curves.png (the lowest digit's confidence against forward
equivalents, every run). A run folder already finished (its summary.json present) is read, not
run again. Environment: PAREIDOLIA (the binary; default target/release/pareidolia), NICE
(default 10). Needs numpy, pillow and matplotlib (scripts/requirements.txt).
"""

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import tomllib

import numpy as np
from PIL import Image

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_seeds(spec):
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def config_text(encoding, seed, generations, variant, backend):
    base = open(os.path.join(ROOT, "configs", f"mnist-{encoding}.toml")).read()
    lines = []
    for line in base.splitlines():
        if line.startswith("seed = "):
            line = f"seed = {seed}"
        elif line.startswith("generations = "):
            line = f"generations = {generations}"
        elif line.startswith("backend = ") and backend:
            line = f'backend = "{backend}"'
        lines.append(line)
    text = "\n".join(lines) + "\n"
    if variant != "none":
        table = tomllib.loads(f"gradient = {variant}")["gradient"]
        text += "\n[search.gradient]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    return text


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["cost"] = int(r.get("forward_equivalents") or r["evaluations"])
    return rows


def first(rows, key, at_least):
    for r in rows:
        if int(r[key]) >= at_least:
            return r
    return None


def champions(run_dir):
    gallery = os.path.join(run_dir, "gallery")
    files = sorted(f for f in os.listdir(gallery) if f.endswith(".png") and f[0].isdigit())
    return [np.asarray(Image.open(os.path.join(gallery, f)).convert("L"), dtype=np.float64)
            for f in files]


def diversity(images):
    distinct = len({img.tobytes() for img in images})
    pairs = list(itertools.combinations(images, 2))
    spread = float(np.mean([np.abs(a - b).mean() for a, b in pairs])) if pairs else 0.0
    tv = float(np.mean([(np.abs(np.diff(i, axis=0)).mean() + np.abs(np.diff(i, axis=1)).mean()) / 2
                        for i in images]))
    return distinct, spread, tv


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoding", choices=["direct", "cppn"], default="direct")
    p.add_argument("--seeds", default="1-10")
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=none or NAME={inline [search.gradient] table}; default: evolution=none operator={}")
    p.add_argument("--generations", type=int, default=1000, help="cap per run")
    p.add_argument("--backend", default="", help="the configs' backend unless given")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    variants = [v.split("=", 1) for v in (args.variant or ["evolution=none", "operator={}"])]
    binary = os.environ.get("PAREIDOLIA", os.path.join(ROOT, "target", "release", "pareidolia"))
    nice = os.environ.get("NICE", "10")
    os.makedirs(args.out, exist_ok=True)
    runs = []
    for name, variant in variants:
        for seed in parse_seeds(args.seeds):
            run_dir = os.path.join(args.out, f"{name}-s{seed}")
            if not os.path.exists(os.path.join(run_dir, "summary.json")):
                cfg = run_dir + ".toml"
                with open(cfg, "w") as f:
                    f.write(config_text(args.encoding, seed, args.generations, variant, args.backend))
                subprocess.run(["nice", "-n", nice, binary, "run", "--quiet", "--config", cfg,
                                "--until", "min>=0.9999", "--out", run_dir],
                               check=True, stdout=subprocess.DEVNULL)
            rows = history(run_dir)
            summary = json.load(open(os.path.join(run_dir, "summary.json")))
            at99, at9999 = first(rows, "at_least_0.99", 10), first(rows, "at_least_0.9999", 10)
            distinct, spread, tv = diversity(champions(run_dir))
            runs.append(dict(
                variant=name, seed=seed, generations=int(rows[-1]["generation"]),
                cost=rows[-1]["cost"], evaluations=int(rows[-1]["evaluations"]),
                gradient_steps=int(rows[-1].get("gradient_steps") or 0),
                cost_to_99=at99["cost"] if at99 else "", generation_to_99=at99["generation"] if at99 else "",
                cost_to_9999=at9999["cost"] if at9999 else "",
                generation_to_9999=at9999["generation"] if at9999 else "",
                min_confidence=float(rows[-1]["min"]), wall_s=summary["wall_time_s"],
                distinct_champions=distinct, pixel_spread=round(spread, 2), tv_per_pixel=round(tv, 2),
            ))
            print(runs[-1], flush=True)
    with open(os.path.join(args.out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(runs[0]))
        w.writeheader()
        w.writerows(runs)

    def spread(values):
        values = [v for v in values if v != ""]
        if not values:
            return "-"
        return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"

    cols = ["variant", "seeds at 99.99%", "cost to 99.99% (median, range)", "cost to 99%",
            "generations to 99.99%", "distinct champions", "pixel spread", "TV/pixel", "wall s"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, _ in variants:
        these = [r for r in runs if r["variant"] == name]
        out.append("| " + " | ".join([
            name,
            f"{sum(r['cost_to_9999'] != '' for r in these)} of {len(these)}",
            spread([r["cost_to_9999"] for r in these]),
            spread([r["cost_to_99"] for r in these]),
            spread([int(r["generation_to_9999"]) for r in these if r["generation_to_9999"] != ""]),
            f"{statistics.median(r['distinct_champions'] for r in these):g}",
            f"{statistics.median(r['pixel_spread'] for r in these):.1f}",
            f"{statistics.median(r['tv_per_pixel'] for r in these):.1f}",
            f"{statistics.median(r['wall_s'] for r in these):.1f}",
        ]) + " |")
    open(os.path.join(args.out, "summary.md"), "w").write("\n".join(out) + "\n")
    print("\n".join(out))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, _) in enumerate(variants):
        for i, seed in enumerate(parse_seeds(args.seeds)):
            rows = history(os.path.join(args.out, f"{name}-s{seed}"))
            x = [r["cost"] for r in rows]
            y = [max(1e-6, 1 - float(r["min"])) for r in rows]
            ax.plot(x, y, color=colours[k % len(colours)], alpha=0.6, lw=1,
                    label=name if i == 0 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1e-4, color="grey", lw=0.8, ls="--")
    ax.invert_yaxis()
    ax.set_xlabel("forward-pass equivalents (evaluations + 3 x gradient steps)")
    ax.set_ylabel("1 - lowest digit's confidence")
    ax.set_title(f"MNIST {args.encoding}: every run, to every digit >= 99.99% (dashed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "curves.png"), dpi=110)


if __name__ == "__main__":
    sys.exit(main())
