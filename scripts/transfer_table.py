#!/usr/bin/env python3
"""The table of scripts/transfer.sh: for each encoding, source (what a run evolved against)
and model that scored its champions, the median over seeds (and range) of the champions'
median confidence and of the fraction of classes at or above 99% and 99.99%. Reads every
<run>/transfer/transfer.csv under OUT_DIR; standard library only."""

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(out: Path) -> None:
    cells = defaultdict(lambda: defaultdict(list))
    for table in sorted(out.glob("*-seed-*/transfer/transfer.csv")):
        encoding, source, _, seed = table.parent.parent.name.split("-")
        with open(table, newline="") as f:
            rows = list(csv.reader(f))
        header, rows = rows[0], rows[1:]
        columns = [("source", 2)] + [
            (header[i], i) for i in range(3, len(header), 3)
        ]
        for name, i in columns:
            values = [float(r[i]) for r in rows if r[i] != ""]
            if not values:
                continue
            cells[(encoding, source)][name].append(
                (
                    statistics.median(values),
                    sum(v >= 0.99 for v in values) / len(values),
                    sum(v >= 0.9999 for v in values) / len(values),
                )
            )
    print("| encoding | evolved against | scored by | seeds | median confidence | classes >= 99% | classes >= 99.99% |")
    print("|---|---|---|---|---|---|---|")

    def fmt(values, percent_digits):
        med = statistics.median(values)
        return f"{100 * med:.{percent_digits}f}% ({100 * min(values):.{percent_digits}f}..{100 * max(values):.{percent_digits}f})"

    for (encoding, source), models in sorted(cells.items()):
        for name, per_seed in models.items():
            scored_by = "itself" if name == "source" else name
            print(
                f"| {encoding} | {source} | {scored_by} | {len(per_seed)} | "
                f"{fmt([s[0] for s in per_seed], 2)} | {fmt([s[1] for s in per_seed], 0)} | "
                f"{fmt([s[2] for s in per_seed], 0)} |"
            )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: transfer_table.py OUT_DIR")
    main(Path(sys.argv[1]))
