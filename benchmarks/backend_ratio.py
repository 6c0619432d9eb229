"""One fastrnn backend's speed against another's, from ``fastrnn bench`` runs (JSON) that timed both.

    python benchmarks/backend_ratio.py RUN.json [MORE.json ...] [--fast numba --slow cpp]

Per config (cell, mode, dtype, T, B, H; each weight form the runs timed: packed, plain): the ratio
``slow``'s median time / ``fast``'s (> 1: ``fast`` is faster), one column per run that has it; then,
by mode and by batch range, the geometric mean, the range and the count. This is the measurement that
config.prefer_numba (the "auto" choice between cpp and numba on the CPU) rests on.
"""
from __future__ import annotations

import argparse
import json
import math

FORMS = {"packed": "fastrnn[{}+packed]", "plain": "fastrnn[{}]"}
BATCH_RANGES = ((1, 2), (3, 7), (8, 1 << 30))


def ratios(paths, fast, slow):
    """{(cell, mode, dtype, T, B, H, form): [ratio per run]}."""
    table = {}
    for path in paths:
        with open(path) as f:
            results = json.load(f)["results"]
        for r in results:
            competitors = r["competitors"]
            for form, name in FORMS.items():
                a, b = competitors.get(name.format(fast)), competitors.get(name.format(slow))
                if a and b and a.get("median_ms") and b.get("median_ms"):
                    key = (r["cell"], r["mode"], r["dtype"], r["T"], r["B"], r["H"], form)
                    table.setdefault(key, []).append(b["median_ms"] / a["median_ms"])
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="fastrnn bench JSON files")
    parser.add_argument("--fast", default="numba", help="the backend in the denominator (default numba)")
    parser.add_argument("--slow", default="cpp", help="the backend in the numerator (default cpp)")
    args = parser.parse_args(argv)
    table = ratios(args.runs, args.fast, args.slow)
    if not table:
        parser.error(f"no config in these runs timed both {args.fast} and {args.slow}")
    print(f"| cell | mode | dtype | T | B | H | weights | {args.slow} time / {args.fast} time |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(table, key=lambda k: (k[1], k[0], k[2], k[3], k[4], k[5], k[6])):
        print("| " + " | ".join(str(v) for v in key) + " | " + ", ".join(f"{v:.2f}" for v in table[key]) + " |")
    print("\n| mode | B | configs | geometric mean | min | max |")
    print("|---|---|---|---|---|---|")
    for mode in sorted({k[1] for k in table}):
        for lo, hi in BATCH_RANGES:
            values = [v for k, vs in table.items() if k[1] == mode and lo <= k[4] <= hi for v in vs]
            if values:
                mean = math.exp(sum(math.log(v) for v in values) / len(values))
                span = f"{lo}-{hi}" if hi < 1 << 30 else f">= {lo}"
                print(f"| {mode} | {span} | {len(values)} | {mean:.3f} | {min(values):.2f} | {max(values):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
