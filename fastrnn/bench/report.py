"""A run's results as tables (terminal and markdown), CSV, JSON, and the change between two runs.

A run is a dict ``{"format", "machine", "settings", "results", "wall_s"}``; ``results`` holds one
record per config (see runner.run_config). :func:`load` also reads the JSON of the scripts this
module replaced (benchmarks/compare_cpu.py and compare_cuda.py), so older results compare and plot.
"""
from __future__ import annotations

import csv
import json
import math
import statistics

from . import anchors, machine
from .runner import KEY, NOISY_LOAD, PROBE_STEPS

FORMAT = "fastrnn-bench/1"
BOLD, GREEN, RED, RESET = "\033[1m", "\033[32m", "\033[31m", "\033[0m"


def competitor_names(run: dict) -> list[str]:
    """Anchors first, then fastrnn backends, each in the order they first appear."""
    seen = {}
    for r in run["results"]:
        for name in (*r.get("competitors", {}), *r.get("skipped_competitors", {})):
            seen.setdefault(name, None)
    return sorted(seen, key=lambda n: (n.startswith("fastrnn["), list(seen).index(n)))


def backends_of(names) -> list[str]:
    return [n for n in names if n.startswith("fastrnn[")]


def is_wrong(record: dict, name: str) -> bool:
    """Whether competitor ``name``'s result missed the oracle's by more than the dtype's tolerance."""
    errs = record.get("errors", {}).get(name)
    return bool(errs) and max(errs.values()) > anchors.TOLERANCE.get(record["dtype"], 1e-3)


def wrong(record: dict) -> bool:
    return any(is_wrong(record, name) for name in record.get("errors", {}))


def _ratio_text(record: dict, backend: str) -> str:
    ratio = record.get("ratio", {}).get(anchors.fastrnn_label(backend))
    if ratio is None:
        return "-"
    return f"{ratio:.3g}x {record['best_anchor']}" + (" WRONG" if is_wrong(record, backend) else "")


def _max_error(record: dict) -> str:
    errs = [(max(e.values()), n) for n, e in record.get("errors", {}).items() if e]
    if not errs:
        return "-"
    worst, name = max(errs)
    return f"{worst:.1e} !{name}" if is_wrong(record, name) else f"{worst:.1e}"


def config_lines(record: dict) -> list[str]:
    """A config's details, as it finishes (--verbose)."""
    head = (f"{record['cell']} {record['mode']} {record['dtype']} T={record['T']} B={record['B']} "
            f"H={record['H']}" + (f" P={record['P']}" if record.get("P") else ""))
    if "skipped" in record:
        return [f"{head}: skipped: {record['skipped']}"]
    lines = [f"{head}  ({record['gflop']:.4g} GFLOP per call)"]
    width = max(map(len, record["competitors"]), default=0)
    for name, c in record["competitors"].items():
        lines.append(f"  {name:<{width}}  median {c['median_ms']:10.4f} ms  [{c['min_ms']:.4f} - {c['max_ms']:.4f}]"
                     f"  {c['gflops']:8.2f} GFLOP/s  first call {c['first_call_ms']:9.2f} ms  reps {c['reps']}")
    for name in backends_of(record["competitors"]):
        lines.append(f"  {name}: {_ratio_text(record, name)}")
    for name, errs in record.get("errors", {}).items():
        lines.append(f"  error {name} against {record['oracle']}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items())
                     + ("  ** WRONG **" if is_wrong(record, name) else ""))
    for name, reason in record.get("skipped_competitors", {}).items():
        lines.append(f"  skipped {name}: {reason}")
    if (load := record.get("other_load_cores")) is not None:
        lines.append(f"  other load {load:.2f} cores" + ("  ** NOISY **" if load > NOISY_LOAD else ""))
    if (round_trip := _round_trip_text(record)) != "-":
        lines.append(f"  round trip between two threads, before / after the rounds: {round_trip} ns")
    return lines


def _round_trip_text(record: dict) -> str:
    """"before/after" (ns) of the record's round trips between two threads, "-" where not measured."""
    values = record.get("round_trip_ns") or []
    return "/".join("?" if v is None else f"{v:.0f}" for v in values) if any(v is not None for v in values) else "-"


def table(run: dict) -> tuple[list[str], list[list[str]], list[list[tuple[int, int]]]]:
    """Header, rows of text, and per row the (column, sign) of each best-anchor ratio to highlight
    (sign +1: fastrnn faster, -1: slower or wrong)."""
    names = competitor_names(run)
    done = [r for r in run["results"] if "skipped" not in r]
    dtypes = len({r["dtype"] for r in done}) > 1
    projections = any(r.get("P") for r in done)
    head = ["cell", "mode", *(["dtype"] if dtypes else []), "T", "B", "H", *(["P"] if projections else [])]
    for name in names:
        head.append(f"{name} ms")
        if name.startswith("fastrnn["):
            head += ["GF/s", "us/step", "vs best anchor"]
    head += ["max rel err", "other load", "core rt ns"]
    rows, marks = [], []
    for r in done:
        row = [r["cell"], r["mode"], *([r["dtype"]] if dtypes else []), str(r["T"]), str(r["B"]), str(r["H"]),
               *([str(r.get("P") or "-")] if projections else [])]
        mark = []
        for name in names:
            c = r["competitors"].get(name)
            row.append(f"{c['median_ms']:.4g}" if c else
                       "skipped" if name in r.get("skipped_competitors", {}) else "-")
            if name.startswith("fastrnn["):
                row += [f"{c['gflops']:.3g}", f"{c['us_per_step']:.4g}"] if c else ["-", "-"]
                ratio = r.get("ratio", {}).get(anchors.fastrnn_label(name))
                if ratio is not None:
                    mark.append((len(row), 1 if ratio >= 1 and not is_wrong(r, name) else -1))
                row.append(_ratio_text(r, name))
        load = r.get("other_load_cores")
        row += [_max_error(r), "-" if load is None else f"{load:.2f}" + (" !" if load > NOISY_LOAD else ""),
                _round_trip_text(r)]
        rows.append(row)
        marks.append(mark)
    return head, rows, marks


def markdown_table(run: dict) -> str:
    head, rows, marks = table(run)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, mark in zip(rows, marks):
        row = list(row)
        for i, _ in mark:
            value, _, anchor = row[i].partition(" ")
            row[i] = f"**{value}** {anchor}"
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def text_table(run: dict, color: bool = False) -> str:
    head, rows, marks = table(run)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    for row, mark in zip(rows, marks):
        cells = [v.rjust(w) for v, w in zip(row, widths)]
        for i, sign in mark:
            style = BOLD + (GREEN if sign > 0 else RED) if color else ""
            cells[i] = f"{style}{cells[i]}{RESET}" if color else cells[i]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def notes(run: dict) -> list[str]:
    """Skipped configs and competitors, first calls (compile), correctness flags."""
    out = []
    skipped_comp = {}
    for r in run["results"]:
        for name, reason in r.get("skipped_competitors", {}).items():
            skipped_comp.setdefault((name, reason), []).append(r)
    for (name, reason), records in skipped_comp.items():
        out.append(f"skipped {name} ({len(records)} config{'s' * (len(records) > 1)}): {reason}")
    for r in run["results"]:
        if "skipped" in r:
            out.append(f"skipped config {r['cell']} {r['mode']} {r['dtype']} T={r['T']} B={r['B']} "
                       f"H={r['H']}: {r['skipped']}")
    first = {}
    for r in run["results"]:
        for name, c in r.get("competitors", {}).items():
            calls = [c[k] for k in ("first_call_ms", "first_full_call_ms") if k in c]
            if calls:
                first[name] = max(first.get(name, 0.0), *calls)
    if first:
        out.append("slowest first call (compile and set-up, not in the timings): "
                   + ", ".join(f"{n} {ms / 1e3:.3g} s" for n, ms in first.items()))
    for r in run["results"]:
        if wrong(r):
            out.append(f"WRONG RESULT: {r['cell']} {r['mode']} {r['dtype']} T={r['T']} B={r['B']} H={r['H']}: "
                       + ", ".join(f"{n} {max(e.values()):.1e}" for n, e in r["errors"].items() if is_wrong(r, n)))
    return out


EXPLAIN = (
    "Times are medians over interleaved rounds of the per-call time (ms) of one layer, one direction, "
    "input size = H; GF/s = matmul GFLOP/s of fastrnn's median; vs best anchor = best anchor's median / "
    "fastrnn's median (> 1: fastrnn is faster); max rel err = max|a-b|/max|b| of y (and dW_hh in fwdbwd) "
    "against the oracle (torch, else the NumPy reference), '!name' above the dtype's tolerance; other load "
    f"= cores that other processes used during the rounds ('!' above {NOISY_LOAD:g}: unreliable); core rt = a "
    "round trip between two threads before/after the rounds (on a VM it moves several-fold, and small steps "
    "split between cores with it). First calls "
    f"(JIT compile or cache load, on a {PROBE_STEPS}-step prefix) are outside the timings.")


def markdown(run: dict) -> str:
    lines = [f"# fastrnn bench: {machine.label(run['machine'])}", ""]
    lines += [f"- {k}: {v}" for k, v in run["machine"].items()]
    settings = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in run["settings"].items()}
    lines += [f"- {k}: {v}" for k, v in settings.items()]
    if "wall_s" in run:
        lines.append(f"- wall time: {run['wall_s']:.1f} s")
    lines += ["", EXPLAIN, "", markdown_table(run)]
    if extra := notes(run):
        lines += [""] + [f"- {n}" for n in extra]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- files

CSV_FIELDS = ["cell", "mode", "dtype", "device", "T", "B", "I", "H", "P", "competitor", "status", "median_ms",
              "min_ms", "max_ms", "us_per_step", "gflops", "reps", "first_call_ms", "err_y", "err_w_hh",
              "best_anchor", "ratio_vs_best_anchor", "other_load_cores", "core_round_trip_ns", "note"]


def show(lines: list[str], path=None) -> str:
    """Print a benchmark script's Markdown table (its lines) and, given a path, write it there too."""
    text = "\n".join(lines)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    return text


def write_csv(run: dict, path: str) -> None:
    """One row per config and competitor (timed or skipped)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in run["results"]:
            base = {k: r.get(k) for k in ("cell", "mode", "dtype", "device", "T", "B", "I", "H", "P",
                                          "best_anchor", "other_load_cores")}
            base["core_round_trip_ns"] = _round_trip_text(r)
            if "skipped" in r:
                writer.writerow({**base, "competitor": "*", "status": "skipped", "note": r["skipped"]})
                continue
            for name, c in r["competitors"].items():
                errs = r.get("errors", {}).get(name, {})
                ratio = r.get("ratio", {}).get(anchors.fastrnn_label(name)) if name.startswith("fastrnn[") else None
                writer.writerow({**base, **c, "competitor": name, "status": "ok", "err_y": errs.get("y"),
                                 "err_w_hh": errs.get("w_hh"), "ratio_vs_best_anchor": ratio,
                                 "note": "oracle" if name == r.get("oracle") else ""})
            for name, reason in r.get("skipped_competitors", {}).items():
                writer.writerow({**base, "competitor": name, "status": "skipped", "note": reason})


def write_json(run: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(run, f, indent=1)


def load(path: str) -> dict:
    """A run from a JSON file of ``fastrnn bench`` or of the older compare_cpu/compare_cuda scripts.
    Raises ValueError (with the reason) for anything else."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        for r in data["results"]:          # compare_cpu.py's records: float32 on the CPU, "ort"
            r.setdefault("dtype", "float32")
            r.setdefault("device", "cpu")
            r.setdefault("skipped_competitors", {})
            for field in ("competitors", "errors"):
                if "ort" in r.get(field, {}):
                    r[field]["onnxruntime"] = r[field].pop("ort")
            if r.get("best_anchor") == "ort":
                r["best_anchor"] = "onnxruntime"
            for c in r.get("competitors", {}).values():
                c.setdefault("us_per_step", c["median_ms"] * 1e3 / r["T"])
        data.setdefault("settings", {})
        data.setdefault("machine", {})
        return data
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        return _from_compare_cuda(data)
    raise ValueError(f"{path} is not a fastrnn bench JSON file (no 'results' list)")


def _from_compare_cuda(data: dict) -> dict:
    """compare_cuda.py's rows (fastrnn cuda against cuDNN) as records."""
    results = []
    for row in data["rows"]:
        T, B, H = row["T"], row["B"], row["H"]
        gflop = anchors.flops(row["cell"], T, B, H, H, row["mode"]) / 1e9
        comp = {}
        for name, ms, spread in (("torch", row["cudnn_ms"], row["cudnn_spread"]),
                                 ("fastrnn[cuda]", row["fastrnn_ms"], row["fastrnn_spread"])):
            comp[name] = dict(median_ms=ms, min_ms=spread[0], max_ms=spread[1], us_per_step=ms * 1e3 / T,
                              gflops=gflop / (ms / 1e3))
        comp["fastrnn[cuda]"]["first_call_ms"] = row["first_call_s"] * 1e3
        errs = {"y": row["err_y"], **({"w_hh": row["err_dw_hh"]} if row.get("err_dw_hh") is not None else {})}
        results.append(dict(cell=row["cell"], mode=row["mode"], dtype="float32", device="cuda", T=T, B=B,
                            I=H, H=H, gflop=gflop, competitors=comp, skipped_competitors={},
                            errors={"fastrnn[cuda]": errs}, oracle="torch", best_anchor="torch",
                            ratio={"cuda": row["speedup"]}, other_load_cores=None))
    info = {"device": "cuda", "gpu": data.get("gpu", "GPU"), "torch": data.get("torch"),
            "cudnn": data.get("cudnn"), "numpy": data.get("numpy")}
    return dict(format="compare_cuda", machine={k: v for k, v in info.items() if v is not None},
                settings={}, results=results)


# ----------------------------------------------------------------------------- compare

def compare(old: dict, new: dict, old_name: str = "old", new_name: str = "new") -> str:
    """The change from ``old`` to ``new``: per config and competitor both medians and old/new
    (> 1: faster now), then the geometric mean of that per competitor."""
    def index(run):
        return {(tuple(r.get(k) for k in KEY), name): (c, r) for r in run["results"] if "skipped" not in r
                for name, c in r["competitors"].items()}
    before, after = index(old), index(new)
    common = [key for key in after if key in before]
    lines = [f"old: {old_name}: {machine.label(old['machine'])}",
             f"new: {new_name}: {machine.label(new['machine'])}"]
    if not common:
        return "\n".join(lines + ["no config and competitor in common: nothing to compare"])
    head = [*KEY, "competitor", "old ms", "new ms", "speed-up", "vs best anchor old -> new"]
    rows, speedups = [], {}
    for key in common:
        (c0, r0), (c1, r1) = before[key], after[key]
        change = c0["median_ms"] / c1["median_ms"]
        speedups.setdefault(key[1], []).append(change)
        ratio = ""
        if key[1].startswith("fastrnn["):
            b = anchors.fastrnn_label(key[1])
            if b in r0.get("ratio", {}) and b in r1.get("ratio", {}):
                ratio = f"{r0['ratio'][b]:.3g}x -> {r1['ratio'][b]:.3g}x"
        rows.append([*("-" if v is None else str(v) for v in key[0]), key[1], f"{c0['median_ms']:.4g}",
                     f"{c1['median_ms']:.4g}",
                     f"{change:.3g}x", ratio])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines += ["", "  ".join(h.rjust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    lines += ["", "speed-up = old median / new median (> 1: faster in the new run); geometric means: "
              + ", ".join(f"{n} {math.exp(statistics.fmean(map(math.log, s))):.3g}x ({len(s)} configs)"
                          for n, s in speedups.items())]
    if only := len(after) - len(common):
        lines.append(f"({only} config/competitor pairs of the new run are not in the old one)")
    return "\n".join(lines)
