#!/usr/bin/env python3
"""The table of a seed sweep (scripts/sweep.sh), from its run folders alone.

Usage: scripts/sweep_table.py SWEEP_DIR [--milestones 50,200] [--threshold 0.9999]

SWEEP_DIR holds one run folder per seed, `seed-<N>/`, each with the `history.csv` and
`summary.json` that `pareidolia run` writes. For every seed the table gives:

- `at_<M>`: classes whose champion is at or above the threshold at generation M (the
  `at_least_0.9999` column of history.csv; generation 0 is the initial population, so
  generation M is after M generations of children); `median_<M>`: the median champion
  confidence then, `min_<M>` the lowest. Empty (`-` in the markdown) when the run is shorter than M.
- `all_at`: the first generation at which every class is at or above the threshold; empty
  (`> G` in the markdown) when that did not happen within the run's G generations.
- `final_at`, `median`, `min`, `min_class`: at the last generation, from summary.json's
  per-class confidences (classes, stats), so the table can be checked against it.

Then two aggregate rows: the median over seeds and the range (min..max). A run that never
had every class at the threshold counts as later than any that did.

Writes SWEEP_DIR/table.csv (one row per seed, then `median` and `min`/`max` rows) and
SWEEP_DIR/table.md (the same, for people), and prints the markdown. Standard library only.
"""

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys


def read_history(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {int(r["generation"]): r for r in rows}


def at_least_column(threshold):
    """history.csv names its threshold columns at_least_<value> (0.5, 0.9, 0.99, 0.9999)."""
    return "at_least_" + format(threshold, "g")


def seed_row(run_dir, seed, milestones, threshold):
    summary_path = os.path.join(run_dir, "summary.json")
    with open(summary_path) as f:
        summary = json.load(f)
    history = read_history(os.path.join(run_dir, "history.csv"))
    column = at_least_column(threshold)
    generations = int(summary["generations"])
    last = max(history)
    if last != generations:
        sys.exit(f"{run_dir}: history.csv ends at generation {last} but summary.json says {generations}")
    cells = int(summary["stats"]["cells"])
    if column not in history[last]:
        sys.exit(f"{run_dir}: history.csv has no column {column}")
    row = {"seed": seed, "generations": generations, "classes": cells}
    for m in milestones:
        h = history.get(m)
        row[f"at_{m}"] = int(h[column]) if h is not None else None
        row[f"median_{m}"] = float(h["median"]) if h is not None else None
        row[f"min_{m}"] = float(h["min"]) if h is not None else None
    row["all_at"] = next((g for g in sorted(history) if int(history[g][column]) >= cells), None)
    conf = [float(c["confidence"]) for c in summary["classes"]]
    # Empty cells count 0, as the archive's own statistics do.
    conf += [0.0] * (cells - len(conf))
    row["final_at"] = sum(1 for c in conf if c >= threshold)
    row["median"] = statistics.median(conf)
    row["min"] = min(conf)
    worst = min(summary["classes"], key=lambda c: float(c["confidence"]))
    row["min_class"] = worst["label"]
    return row


def aggregate(rows, key):
    """(median, min, max) over seeds; None values (not reached / not run) sort last."""
    values = [r[key] for r in rows]
    if all(v is None for v in values):
        return None, None, None
    big = [math.inf if v is None else v for v in values]
    big.sort()
    n = len(big)
    med = big[n // 2] if n % 2 else (big[n // 2 - 1] + big[n // 2]) / 2
    lo, hi = big[0], big[-1]
    back = lambda v: None if v == math.inf else v
    return back(med), back(lo), back(hi)


def fmt_pct(v):
    if v is None:
        return "-"
    if 0 < v < 1e-6:
        return f"{100 * v:.2g}%"
    if v >= 0.99:
        return f"{100 * v:.5f}%"  # 99.99997%: enough digits to tell 99.99% apart
    if v >= 0.01:
        return f"{100 * v:.2f}%"
    return f"{100 * v:.4f}%"


def fmt_int(v):
    return "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--milestones", default="50,200")
    ap.add_argument("--threshold", type=float, default=0.9999)
    args = ap.parse_args()
    milestones = [int(m) for m in args.milestones.replace(",", " ").split()]
    runs = []
    for name in os.listdir(args.sweep_dir):
        m = re.fullmatch(r"seed-(\d+)", name)
        if m and os.path.isfile(os.path.join(args.sweep_dir, name, "summary.json")):
            runs.append((int(m.group(1)), os.path.join(args.sweep_dir, name)))
    if not runs:
        sys.exit(f"{args.sweep_dir}: no seed-<N>/summary.json")
    rows = [seed_row(d, s, milestones, args.threshold) for s, d in sorted(runs)]
    generations = {r["generations"] for r in rows}
    if len(generations) != 1:
        sys.exit(f"{args.sweep_dir}: runs of different lengths {sorted(generations)}")
    (gens,) = generations
    classes = rows[0]["classes"]

    keys = []
    for m in milestones:
        keys += [f"at_{m}", f"median_{m}", f"min_{m}"]
    keys += ["all_at", "final_at", "median", "min"]
    pct_keys = {k for k in keys if k.startswith(("median", "min"))}

    with open(os.path.join(args.sweep_dir, "table.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed"] + keys + ["min_class"])
        for r in rows:
            w.writerow([r["seed"]] + ["" if r[k] is None else r[k] for k in keys] + [r["min_class"]])
        aggs = {k: aggregate(rows, k) for k in keys}
        for i, name in enumerate(["median", "min", "max"]):
            w.writerow([name] + ["" if aggs[k][i] is None else aggs[k][i] for k in keys] + [""])

    t = f"{args.threshold * 100:g}%"
    head = ["seed"]
    for m in milestones:
        head += [f">= {t} at gen {m}", f"median at gen {m}", f"min at gen {m}"]
    head += [f"all >= {t} at gen", f">= {t} at gen {gens}", f"median at gen {gens}", f"min at gen {gens}", "min class"]

    def cells_of(values, all_at_text):
        out = []
        for k in keys:
            v = values[k]
            if k == "all_at":
                out.append(all_at_text(v))
            elif k in pct_keys:
                out.append(fmt_pct(v))
            else:
                out.append(fmt_int(v))
        return out

    not_reached = lambda v: f"> {gens}" if v is None else fmt_int(v)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([str(r["seed"])] + cells_of(r, not_reached) + [r["min_class"]]) + " |")
    med = {k: aggs[k][0] for k in keys}
    lines.append("| **median** | " + " | ".join(cells_of(med, not_reached)) + " | |")
    rng = []
    for k in keys:
        _, lo, hi = aggs[k]
        if k == "all_at":
            rng.append(f"{not_reached(lo)} .. {not_reached(hi)}")
        elif k in pct_keys:
            rng.append(f"{fmt_pct(lo)} .. {fmt_pct(hi)}")
        else:
            rng.append(f"{fmt_int(lo)} .. {fmt_int(hi)}")
    lines.append("| **range** | " + " | ".join(rng) + " | |")
    caption = (
        f"{len(rows)} seeds, {gens} generations, {classes} classes; "
        f"threshold {t}; confidences are the champions' softmax probabilities."
    )
    md = caption + "\n\n" + "\n".join(lines) + "\n"
    with open(os.path.join(args.sweep_dir, "table.md"), "w") as f:
        f.write(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
