#!/usr/bin/env python3
"""One line per seed sweep: the aggregates of several sweeps' table.csv side by side.

Usage: scripts/sweep_compare.py LABEL=SWEEP_DIR [LABEL=SWEEP_DIR ...]

Each SWEEP_DIR is a folder scripts/sweep.sh wrote (its table.csv is read, nothing is rerun).
Prints a markdown table: median over seeds (and range) of the classes >= 99.99% at
generations 50 and 200, the median and minimum confidence at 50 and 200, and the generation
at which every class first reached 99.99% ("> G" where a seed never did within G).
Standard library only.
"""

import csv
import json
import os
import sys


def pct(v):
    if v == "":
        return "-"
    v = float(v)
    return f"{100 * v:.5f}%" if v >= 0.99 else f"{100 * v:.2f}%"


def num(v):
    return "-" if v == "" else f"{float(v):g}"


def main():
    specs = sys.argv[1:]
    if not specs:
        sys.exit(__doc__)
    head = [
        "variant",
        "seeds",
        ">= 99.99% at gen 50",
        "median at 50",
        "min at 50",
        ">= 99.99% at gen 200",
        "median at 200",
        "min at 200",
        "all >= 99.99% at gen",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for spec in specs:
        label, _, d = spec.partition("=")
        with open(os.path.join(d, "table.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        seeds = [r for r in rows if r["seed"].isdigit()]
        agg = {r["seed"]: r for r in rows if not r["seed"].isdigit()}
        with open(os.path.join(d, f"seed-{seeds[0]['seed']}", "summary.json")) as f:
            gens = json.load(f)["generations"]

        def cell(key, fmt):
            if key not in agg["median"]:
                return "-"  # the sweep did not report this generation
            med, lo, hi = agg["median"][key], agg["min"][key], agg["max"][key]
            if key == "all_at":
                show = lambda v: f"> {gens}" if v == "" else num(v)
                never = sum(1 for s in seeds if s[key] == "")
                text = f"{show(med)} ({show(lo)} .. {show(hi)})"
                return text + (f"; {never} of {len(seeds)} not by {gens}" if never else "")
            return f"{fmt(med)} ({fmt(lo)} .. {fmt(hi)})"

        cells = [label, str(len(seeds))]
        for m in (50, 200):
            cells += [cell(f"at_{m}", num), cell(f"median_{m}", pct), cell(f"min_{m}", pct)]
        cells.append(cell("all_at", num))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
