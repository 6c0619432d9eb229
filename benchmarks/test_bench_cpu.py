"""pytest-benchmark suite: fastrnn's best available CPU backend, torch.nn and ONNX Runtime.

    pytest benchmarks --benchmark-only                                 # time it
    pytest benchmarks --benchmark-disable -q                           # smoke: each body runs once

Every case builds its competitor from the shared problem of benchmarks/anchors.py (same arrays for
every competitor), calls it once outside the timing (fastrnn's JIT compile, torch's and ORT's
first-call set-up), then lets pytest-benchmark time it: calibrated rounds, reported min/median/mean.
Competitors of one config share a benchmark group, and extra_info["gflop"] gives the FLOPs per call
to turn times into GFLOP/s. torch and ORT cases are skipped when those are not installed; ORT runs
forward only (it has no backward). For the interleaved, noise-resistant comparison with correctness
checks, use benchmarks/compare_cpu.py.
"""
import os

import pytest

import anchors
import fastrnn

# the first fast backend that runs here, else the NumPy reference
BACKEND = next((b for b in fastrnn.available_backends() if b != "reference"), "reference")
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
SHAPES = [(16, 1, 128), (64, 8, 128), (32, 16, 256)]     # (T, B, H), input size = H
SKIPS = {
    "torch": pytest.mark.skipif(not anchors.HAVE_TORCH, reason="torch not installed"),
    "ort": pytest.mark.skipif(not anchors.HAVE_ORT, reason="onnx/onnxruntime not installed"),
}
CASES = [pytest.param(cell, mode, shape, impl, marks=SKIPS.get(impl, ()),
                      id=f"{cell}-{mode}-T{shape[0]}B{shape[1]}H{shape[2]}-"
                         + (anchors.fastrnn_name(BACKEND) if impl == "fastrnn" else impl))
         for cell in anchors.GATES for mode in anchors.MODES for shape in SHAPES
         for impl in ("fastrnn", *anchors.ANCHORS[mode])]


def build(problem, mode, impl):
    """The callable to time: fastrnn on BACKEND, torch.nn or ONNX Runtime."""
    if impl == "fastrnn":
        return (anchors.fastrnn_forward if mode == "fwd" else anchors.fastrnn_fwdbwd)(problem, BACKEND)
    if impl == "torch":
        return anchors.torch_forward(problem) if mode == "fwd" else anchors.torch_fwdbwd(problem)
    return anchors.ort_forward(problem, THREADS)


@pytest.mark.parametrize("cell,mode,shape,impl", CASES)
def test_bench(benchmark, cell, mode, shape, impl):
    T, B, H = shape
    problem = anchors.make_problem(cell, T, B, H)
    run = build(problem, mode, impl)
    run()                                   # warm-up: compile and set-up stay out of the timing
    benchmark.group = f"{cell} {mode} T={T} B={B} H={H}"
    benchmark.extra_info["gflop"] = problem.flops(mode) / 1e9
    benchmark(run)
