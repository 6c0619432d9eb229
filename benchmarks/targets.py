"""Where fastrnn stands against the speed targets of its issues, read from ``fastrnn bench`` runs (JSON).

    python benchmarks/targets.py RUN.json [MORE.json ...]     # a Markdown table, one row per target

Every target is checked at each config of the runs it applies to (its cell, mode, batch and hidden
sizes; float32), from the runs' medians: met at how many configs, and the worst one. Targets, as the
issues state them (ratios are speed ratios: the other's median time / fastrnn's):

    #3 numba (CPU)  forward >= 1x the faster of torch and ONNX Runtime everywhere, >= 1.3x at B = 1;
                    forward+backward >= 1.5x torch (LSTM) and >= 3x (GRU) at B <= 8, >= 1x at B = 64;
                    >= 150 GFLOP/s at B = 64, H >= 256, both modes
    #7 cpp (CPU)    at B <= 8: forward >= 1.3x numba and >= 1.5x the faster anchor; forward+backward
                    >= 1x torch everywhere
    #6 cuda (GPU)   >= 3x cuDNN (torch on the GPU) at B <= 64 and H <= 512, >= 1x elsewhere, both modes;
                    at B = 16, H = 256 (T = 1024) forward < 3.7 ms and forward+backward < 11.1 ms

A backend's forward is its faster competitor of fastrnn[b] and fastrnn[b+packed] (the issues ask
for weights packed once and kept; ``--packed-weights`` times that); forward+backward is fastrnn[b].
A config the run skipped, or where a competitor is missing, does not count. A row lists its target's
worst misses, worst first.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple, Optional

from fastrnn.bench import report

MISSES_SHOWN = 8       # the worst misses of a target listed in its row


class Target(NamedTuple):
    issue: int
    text: str
    applies: Callable[[dict], bool]          # the record (a config of a run) is one it is checked at
    value: Callable[[dict], Optional[float]]  # the measured quantity there (None: not measured)
    bound: float                              # met at value >= bound (a time: value < bound)
    unit: str = "x"

    def meets(self, value: float) -> bool:
        return value < self.bound if self.unit == " ms" else value >= self.bound


def _ms(record: dict, name: str) -> Optional[float]:
    competitor = record.get("competitors", {}).get(name)
    return None if competitor is None else competitor["median_ms"]


def backend_ms(record: dict, backend: str) -> Optional[float]:
    """fastrnn's time on ``backend``: in mode fwd the faster of plain and packed weights."""
    names = [f"fastrnn[{backend}]"] + ([f"fastrnn[{backend}+packed]"] if record["mode"] == "fwd" else [])
    times = [t for t in (_ms(record, n) for n in names) if t is not None]
    return min(times) if times else None


def speed_ratio(record: dict, backend: str, against: tuple[str, ...]) -> Optional[float]:
    """The fastest of ``against`` (anchors, or "fastrnn[...]" names) over ``backend``'s time."""
    mine = backend_ms(record, backend)
    others = [t for t in (backend_ms(record, a[8:-1]) if a.startswith("fastrnn[") else _ms(record, a)
                          for a in against) if t is not None]
    return None if mine is None or not others else min(others) / mine


def _gflops(record: dict, backend: str) -> Optional[float]:
    mine = backend_ms(record, backend)
    return None if mine is None else record["gflop"] / mine * 1e3


ANCHORS = ("torch", "onnxruntime")


def _cpu(cell=None, mode=None, batch=lambda B: True, hidden=lambda H: True):
    def applies(r):
        return (r.get("device", "cpu") == "cpu" and r["dtype"] == "float32" and not r.get("P")
                and (cell is None or r["cell"] == cell) and (mode is None or r["mode"] == mode)
                and batch(r["B"]) and hidden(r["H"]))
    return applies


def _gpu(sizes=lambda B, H: True, T=None, mode=None):
    def applies(r):
        return (r.get("device") == "cuda" and r["dtype"] == "float32" and not r.get("P") and sizes(r["B"], r["H"])
                and (T is None or r["T"] == T) and (mode is None or r["mode"] == mode))
    return applies


def _small(B, H):
    return B <= 64 and H <= 512


TARGETS = [
    Target(3, "numba forward vs the faster of torch and ORT, every config", _cpu(mode="fwd"),
           lambda r: speed_ratio(r, "numba", ANCHORS), 1.0),
    Target(3, "numba forward vs the faster anchor at B = 1", _cpu(mode="fwd", batch=lambda B: B == 1),
           lambda r: speed_ratio(r, "numba", ANCHORS), 1.3),
    Target(3, "numba LSTM forward+backward vs torch at B <= 8", _cpu("lstm", "fwdbwd", lambda B: B <= 8),
           lambda r: speed_ratio(r, "numba", ("torch",)), 1.5),
    Target(3, "numba GRU forward+backward vs torch at B <= 8", _cpu("gru", "fwdbwd", lambda B: B <= 8),
           lambda r: speed_ratio(r, "numba", ("torch",)), 3.0),
    Target(3, "numba forward+backward vs torch at B = 64", _cpu(mode="fwdbwd", batch=lambda B: B == 64),
           lambda r: speed_ratio(r, "numba", ("torch",)), 1.0),
    Target(3, "numba GFLOP/s at B = 64, H >= 256 (both modes)",
           _cpu(batch=lambda B: B == 64, hidden=lambda H: H >= 256),
           lambda r: _gflops(r, "numba"), 150.0, " GF/s"),
    Target(7, "cpp forward vs numba at B <= 8", _cpu(mode="fwd", batch=lambda B: B <= 8),
           lambda r: speed_ratio(r, "cpp", ("fastrnn[numba]",)), 1.3),
    Target(7, "cpp forward vs the faster anchor at B <= 8", _cpu(mode="fwd", batch=lambda B: B <= 8),
           lambda r: speed_ratio(r, "cpp", ANCHORS), 1.5),
    Target(7, "cpp forward+backward vs torch, every config", _cpu(mode="fwdbwd"),
           lambda r: speed_ratio(r, "cpp", ("torch",)), 1.0),
    Target(6, "cuda vs cuDNN at B <= 64, H <= 512 (both modes)", _gpu(_small),
           lambda r: speed_ratio(r, "cuda", ("torch",)), 3.0),
    Target(6, "cuda vs cuDNN at B > 64 or H > 512 (both modes)", _gpu(lambda B, H: not _small(B, H)),
           lambda r: speed_ratio(r, "cuda", ("torch",)), 1.0),
    Target(6, "cuda forward at B = 16, H = 256, T = 1024", _gpu(lambda B, H: (B, H) == (16, 256), 1024, "fwd"),
           lambda r: backend_ms(r, "cuda"), 3.7, " ms"),
    Target(6, "cuda forward+backward at B = 16, H = 256, T = 1024",
           _gpu(lambda B, H: (B, H) == (16, 256), 1024, "fwdbwd"),
           lambda r: backend_ms(r, "cuda"), 11.1, " ms"),
]


def config_name(r: dict) -> str:
    return f"{r['cell']} {r['mode']} T={r['T']} B={r['B']} H={r['H']}"


def check(records: list[dict]) -> list[dict]:
    """Per target that applies to any measured config: met / checked counts, the worst config and the misses."""
    done = [r for r in records if "skipped" not in r]
    rows = []
    for target in TARGETS:
        values = [(v, r) for r in done if target.applies(r) and (v := target.value(r)) is not None]
        if not values:
            continue
        worst_value, worst = _worst(values, target)
        rows.append(dict(issue=target.issue, target=target.text, checked=len(values),
                         met=sum(target.meets(v) for v, _ in values), worst=worst_value,
                         worst_config=config_name(worst),
                         unit=target.unit, missed=[(config_name(r), v) for v, r in values if not target.meets(v)]))
    return rows


def _worst(values, target):
    """The (value, record) furthest on the failing side: the largest time, else the smallest ratio or rate."""
    return (max if target.unit == " ms" else min)(values, key=lambda vr: vr[0])


def markdown(rows: list[dict]) -> str:
    lines = ["| issue | target | met | worst (config) | missed at |", "|---|---|---|---|---|"]
    for row in rows:
        worst_first = sorted(row["missed"], key=lambda nv: nv[1], reverse=row["unit"] == " ms")
        missed = "; ".join(f"{name} {value:.3g}{row['unit']}" for name, value in worst_first[:MISSES_SHOWN]) or "-"
        if len(worst_first) > MISSES_SHOWN:
            missed += f"; {len(worst_first) - MISSES_SHOWN} more"
        lines.append(f"| #{row['issue']} | {row['target']} | {row['met']}/{row['checked']} | "
                     f"{row['worst']:.3g}{row['unit']} ({row['worst_config']}) | {missed} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="fastrnn against its issues' speed targets, from bench runs")
    parser.add_argument("runs", nargs="+", metavar="RUN.json", help="fastrnn bench results (JSON)")
    args = parser.parse_args(argv)
    records = []
    for path in args.runs:
        try:
            records += report.load(path)["results"]     # (also the older scripts' JSON)
        except ValueError as exc:
            parser.error(str(exc))
    rows = check(records)
    print(markdown(rows) if rows else "no config of these runs is one a target applies to")
    return 0


if __name__ == "__main__":
    sys.exit(main())
