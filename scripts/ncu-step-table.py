#!/usr/bin/env python3
"""The last decode step of an ncu kernel log, as a table: what each kernel costs per token.

    ncu --clock-control none --metrics gpu__time_duration.sum --csv --log-file step.csv \
        build-cuda/bin/elastic bench model -m DIR --backend cuda -p 1024 -n 3 -r 1 --attention full
    python3 scripts/ncu-step-table.py step.csv [--layers 36]

(scripts/device-session.sh, step `ncu`.) A decode step starts at an embedding kernel; the last one
in the log is taken. Kernels are grouped by name and grid; times are ncu's (each kernel alone, L2
flushed before it), so they add up to more than a step takes when kernels overlap.
"""
import argparse
import collections
import csv
import re
import sys


def short(name):
    for junk in ("void ", "<unnamed>::", "unnamed>::", "(anonymous namespace)::"):
        name = name.replace(junk, "")
    name = re.sub(r"\(.*", "", name)  # no argument list
    cut = name.find("<")
    head, tail = (name, "") if cut < 0 else (name[:cut], name[cut:])
    return (head.split("::")[-1] + tail)[:70]  # no namespaces (ncu prints them in several ways)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--layers", type=int, default=0, help="print per-layer µs too")
    a = ap.parse_args()
    lines = open(a.csv, encoding="utf-8", errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"{a.csv}: no ncu CSV header")
    rows = [r for r in csv.DictReader(lines[start:]) if r.get("Metric Name") == "gpu__time_duration.sum"]
    seq = [(short(r["Kernel Name"]), r["Grid Size"], float(r["Metric Value"].replace(",", "")) / 1e3) for r in rows]
    firsts = [i for i, s in enumerate(seq) if s[0].startswith("embedding_kernel")]
    if not firsts:
        sys.exit("no embedding kernel: no decode step in the log")
    step = seq[firsts[-1]:]
    agg = collections.OrderedDict()
    for name, grid, us in step:
        e = agg.setdefault((name, grid), [0, 0.0])
        e[0] += 1
        e[1] += us
    total = sum(us for _, _, us in step)
    print(f"decode step: {len(step)} kernels, {total / 1e3:.3f} ms of kernel time")
    print("| kernel | grid | calls | µs total | µs each | share |" + (" µs per layer |" if a.layers else ""))
    print("|---|---|---|---|---|---|" + ("---|" if a.layers else ""))
    for (name, grid), (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        extra = f" {us / a.layers:.1f} |" if a.layers else ""
        print(f"| `{name}` | {grid} | {n} | {us:.1f} | {us / n:.2f} | {100 * us / total:.1f} % |{extra}")


if __name__ == "__main__":
    main()
