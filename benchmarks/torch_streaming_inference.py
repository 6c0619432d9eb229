"""Streaming inference in PyTorch on the CPU: torch.nn.LSTM / GRU against fastrnn.torch, plain and packed.

    python benchmarks/torch_streaming_inference.py                  # the grid below, 2 threads
    python benchmarks/torch_streaming_inference.py --hidden 512 --out benchmarks/results/torch-streaming.md

A stream is fed in chunks of T steps, the state carried from call to call, in eval mode under
``torch.no_grad()`` (a speech or sensor model answering as data arrives). Competitors, all from the same
weights: "torch" (torch.nn, oneDNN); "fastrnn[b]", the module after fastrnn.torch.convert with backend b,
which packs its weights on every call; "fastrnn[b+packed]", the same after ``pack()``, which packs them
once (fastrnn.pack_weights snapshots). One timing is ``--calls`` calls back-to-back (after an untimed
one: thread pools awake); competitors run interleaved, one timing each per round, after warm-up calls;
the table gives the median per call and the ratio to torch (> 1: fastrnn is faster). Every competitor's
outputs are checked against torch's.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time

import torch

import fastrnn
import fastrnn.torch
from fastrnn.bench import machine, report, timing


def competitors(cell, H, backends, seed=0):
    """{name: module}, one layer of input size = hidden size = H, every one with the same weights."""
    torch.manual_seed(seed)
    base = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](H, H).eval()
    models = {"torch": base}
    for backend in backends:
        models[f"fastrnn[{backend}]"] = fastrnn.torch.convert(copy.deepcopy(base), backend=backend)
        models[f"fastrnn[{backend}+packed]"] = fastrnn.torch.convert(copy.deepcopy(base), backend=backend).pack()
    return models


def inputs(cell, T, B, H, calls, seed=1):
    """(chunks, state): ``calls`` random chunks (T, B, H) of a stream and its zero initial state."""
    gen = torch.Generator().manual_seed(seed)
    chunks = [torch.randn(T, B, H, generator=gen) for _ in range(calls)]
    h0 = torch.zeros(1, B, H)
    return chunks, ((h0, h0.clone()) if cell == "lstm" else h0)


def stream(model, chunks, state):
    """Feed the chunks in order, carrying the state: the last chunk's output."""
    with torch.no_grad():
        for x in chunks:
            y, state = model(x, state)
    return y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--chunk", default="1,16", help="steps per call T (comma-separated)")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--hidden", default="256,512,1024")
    parser.add_argument("--calls", type=int, default=20, help="calls per timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default=",".join(b for b in ("cpp", "numba") if b in fastrnn.available_backends()))
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fastrnn.config.THREADS = args.threads
    ints = lambda text: [int(v) for v in text.split(",")]       # noqa: E731
    backends = args.backends.split(",")
    names = ["torch"] + [f"fastrnn[{b}{p}]" for b in backends for p in ("", "+packed")]
    rows = []
    for cell, T, B, H in itertools.product(args.cells.split(","), ints(args.chunk), ints(args.batch), ints(args.hidden)):
        models = competitors(cell, H, backends)
        chunks, state = inputs(cell, T, B, H, args.calls)
        want = stream(models["torch"], chunks, state)
        for name, model in models.items():      # warm-up (compilation, the first packing) and the check
            got = stream(model, chunks, state)
            err = float((got - want).abs().max() / want.abs().max())
            assert err < 1e-4, f"{name} {cell} T={T} B={B} H={H}: relative error {err:.2g} against torch"
        times = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                timing.settle()                 # the last competitor's threads quiet, then this one's awake:
                stream(model, chunks[:1], state)   # a pool's wake-up after idle (up to 8 ms on a small VM)
                start = time.perf_counter()        # is not a per-call cost of a running stream
                stream(model, chunks, state)
                times[name].append((time.perf_counter() - start) / args.calls)
        medians = {name: statistics.median(samples) for name, samples in times.items()}
        rows.append((cell, T, B, H, medians))
        print(cell, T, B, H, "  ".join(f"{n} {1e3 * m:.3f} ms" for n, m in medians.items()), flush=True)
    info = machine.describe("cpu", args.threads)
    lines = [f"Streaming inference (eval, no_grad, state carried between calls of T steps), one layer, I = H, "
             f"float32, {args.threads} threads, {args.calls} calls per timing, median of {args.rounds} interleaved "
             f"rounds. Machine: {machine.label(info)}; fastrnn {fastrnn.__version__}, load average "
             f"{info.get('load_average')}. ms per call; (x) = torch's time / this one.", "",
             "| cell | T | B | H | " + " | ".join(names) + " |", "|---|--:|--:|--:|" + "--:|" * len(names)]
    for cell, T, B, H, medians in rows:
        base = medians["torch"]
        cells = [f"{1e3 * medians['torch']:.3f}"] + [f"{1e3 * medians[n]:.3f} ({base / medians[n]:.2f}x)"
                                                     for n in names[1:]]
        lines.append(f"| {cell} | {T} | {B} | {H} | " + " | ".join(cells) + " |")
    report.show(lines, args.out)
    return rows


if __name__ == "__main__":
    main()
