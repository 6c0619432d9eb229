"""Latency of a call made after the process was idle: fastrnn's CPU backends against ONNX Runtime.

    python benchmarks/call_gaps.py                                   # LSTM T=1, B=1, H=256; gaps 0-100 ms
    python benchmarks/call_gaps.py --seq-len 16 --hidden 512 --out benchmarks/results/call-gaps.md

A stream whose calls come with pauses between them (a server, a sensor) meets the thread pool's wake-up:
a pool's workers sleep after a short spin, and on a virtual machine an idle core took 2-8 ms to run a
woken thread. Per gap, each competitor makes ``--calls`` calls, sleeping ``gap`` ms before each; the
table gives the median and the largest time per call (ms). Competitors run one after another (0.2 s of
quiet first), each on a fastrnn.pack_weights snapshot (fastrnn) or an ORT session (weights packed once).
"""
from __future__ import annotations

import argparse
import statistics
import time

import fastrnn
from fastrnn.bench import anchors, machine, report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=sorted(anchors.GATES))
    parser.add_argument("--seq-len", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--gaps", default="0,5,30,100", help="idle ms before each call (comma-separated)")
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default=",".join(b for b in ("cpp", "numba") if b in fastrnn.available_backends()))
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    fastrnn.config.THREADS = args.threads
    p = anchors.make_problem(args.cell, args.seq_len, args.batch, args.hidden)
    runs = {f"fastrnn[{b}+packed]": anchors.fastrnn_forward(p, b, packed=True) for b in args.backends.split(",")}
    if anchors.anchor_missing("onnxruntime", "cpu") is None:
        runs["onnxruntime"] = anchors.ort_forward(p, args.threads)
    for run in runs.values():        # compilation, the first packing, sessions: before any timing
        run()
        run()
    gaps = [float(g) for g in args.gaps.split(",")]
    info = machine.describe("cpu", args.threads)
    lines = [f"Calls after idle gaps: {args.cell} forward, T = {args.seq_len}, B = {args.batch}, H = I = "
             f"{args.hidden}, float32, {args.threads} threads, {args.calls} calls per gap, each after sleeping "
             f"the gap. Machine: {machine.label(info)}; fastrnn {fastrnn.__version__}. ms per call, median "
             "(largest).", "", "| gap ms | " + " | ".join(runs) + " |", "|--:|" + "--:|" * len(runs)]
    for gap in gaps:
        cells = []
        for run in runs.values():
            time.sleep(0.2)
            samples = []
            for _ in range(args.calls):
                time.sleep(gap / 1e3)
                start = time.perf_counter()
                run()
                samples.append(1e3 * (time.perf_counter() - start))
            cells.append(f"{statistics.median(samples):.3f} ({max(samples):.2f})")
        lines.append(f"| {gap:g} | " + " | ".join(cells) + " |")
    report.show(lines, args.out)


if __name__ == "__main__":
    main()
