#!/usr/bin/env python3
"""One run's transfer.csv (from `pareidolia transfer`), split by how well each champion fools
the network it was evolved against: for the classes whose source confidence is at or above
each threshold, how many there are and, per target model, their median confidence and the
fraction the target also gives at least 50%; plus the Spearman rank correlation of source and
target confidences over all classes. Standard library only.

    scripts/transfer_strata.py RUN/transfer/transfer.csv
"""

import csv
import statistics
import sys


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2.0
        i = j + 1
    return out


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var


def main(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], [r for r in rows[1:] if r[2] != ""]
    targets = [(header[i], i) for i in range(3, len(header), 3)]
    source = [float(r[2]) for r in rows]
    print("| source confidence | classes | " + " | ".join(
        f"{name}: median | {name}: >= 50%" for name, _ in targets) + " |")
    print("|---|---|" + "---|---|" * len(targets))
    for threshold in (0.0, 0.5, 0.9):
        chosen = [r for r, s in zip(rows, source) if s >= threshold]
        cells = []
        for _, i in targets:
            values = [float(r[i]) for r in chosen]
            cells.append(f"{100 * statistics.median(values):.2f}%" if values else "-")
            cells.append(f"{100 * sum(v >= 0.5 for v in values) / len(values):.1f}%" if values else "-")
        label = "all" if threshold == 0.0 else f">= {100 * threshold:.0f}%"
        print(f"| {label} | {len(chosen)} | " + " | ".join(cells) + " |")
    for name, i in targets:
        rho = spearman(source, [float(r[i]) for r in rows])
        print(f"Spearman rank correlation, source vs {name}: {rho:.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
