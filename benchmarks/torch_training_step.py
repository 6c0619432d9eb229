"""One training step of a small PyTorch model, torch.nn.LSTM against fastrnn.torch.LSTM, on the CPU.

    python benchmarks/torch_training_step.py                        # B=32, T=128, H=512, 2 threads
    python benchmarks/torch_training_step.py --rounds 5 --out benchmarks/results/torch-training-step.md

Model: embedding (vocabulary V, width E) -> 2-layer LSTM (hidden H) -> linear to V, cross-entropy on the
next token, Adam. A step is forward, loss, backward and the optimizer step; only the LSTM differs
between the competitors ("torch": torch.nn.LSTM; "fastrnn[numba]", "fastrnn[cpp]": the same module
after fastrnn.torch.convert with that backend), all from the same initial weights and batches.
Competitors run interleaved, one step each per round, after warm-up steps (Numba's compilation and
oneDNN's set-up stay out); the table gives the median and min-max of the rounds and the ratio to
torch (> 1: fastrnn is faster). The first step's loss is checked to agree between competitors.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import fastrnn
import fastrnn.torch
from fastrnn.bench import machine, report


class LanguageModel(torch.nn.Module):
    def __init__(self, vocabulary, width, hidden, layers=2):
        super().__init__()
        self.embed = torch.nn.Embedding(vocabulary, width)
        self.lstm = torch.nn.LSTM(width, hidden, num_layers=layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocabulary)

    def forward(self, tokens):
        return self.head(self.lstm(self.embed(tokens))[0])


def competitors(vocabulary, width, hidden, backends, seed=0):
    """{name: (model, optimizer)}, every model with the same initial weights."""
    torch.manual_seed(seed)
    base = LanguageModel(vocabulary, width, hidden)
    models = {"torch": base}
    for backend in backends:
        models[f"fastrnn[{backend}]"] = fastrnn.torch.convert(copy.deepcopy(base), backend=backend)
    return {name: (m, torch.optim.Adam(m.parameters(), lr=1e-3)) for name, m in models.items()}


def train_step(model, optimizer, tokens):
    optimizer.zero_grad()
    logits = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    loss.backward()
    optimizer.step()
    return loss.item()


def batches(vocabulary, B, T, seed=1):
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randint(vocabulary, (B, T + 1), generator=gen)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--width", type=int, default=256, help="embedding width E (the LSTM's input size)")
    parser.add_argument("--vocabulary", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backends", default=",".join(b for b in ("numba", "cpp") if b in fastrnn.available_backends()))
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fastrnn.config.THREADS = args.threads
    runs = competitors(args.vocabulary, args.width, args.hidden, args.backends.split(","))
    data = batches(args.vocabulary, args.batch, args.seq_len)
    first = next(data)
    losses = {name: train_step(m, opt, first) for name, (m, opt) in runs.items()}
    spread = max(losses.values()) - min(losses.values())
    assert spread < 1e-4 * abs(losses["torch"]), f"first-step losses differ: {losses}"
    for _ in range(args.warmup - 1):
        tokens = next(data)
        for m, opt in runs.values():
            train_step(m, opt, tokens)
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        tokens = next(data)
        for name, (m, opt) in runs.items():
            start = time.perf_counter()
            train_step(m, opt, tokens)
            times[name].append(time.perf_counter() - start)
    info = machine.describe("cpu", args.threads)
    base = statistics.median(times["torch"])
    lines = [f"Training step (embedding {args.vocabulary}x{args.width} -> 2-layer LSTM H={args.hidden} -> linear, "
             f"cross-entropy, Adam), B={args.batch}, T={args.seq_len}, float32, {args.threads} threads, "
             f"{args.rounds} interleaved rounds after {args.warmup} warm-up steps.",
             f"Machine: {machine.label(info)}; numpy {info.get('numpy')}, numba {info.get('numba')}, "
             f"fastrnn {fastrnn.__version__}; load average {info.get('load_average')}.",
             "", "| LSTM | median s/step | min - max | vs torch |", "|---|--:|--:|--:|"]
    for name, samples in times.items():
        median = statistics.median(samples)
        lines.append(f"| {name} | {median:.3f} | {min(samples):.3f} - {max(samples):.3f} | {base / median:.2f}x |")
    report.show(lines, args.out)
    return times


if __name__ == "__main__":
    main()
