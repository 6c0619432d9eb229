"""pytest-benchmark suite over the grid of ``fastrnn bench``: fastrnn's best available CPU backend
against every anchor installed (torch.nn, ONNX Runtime, the NumPy reference), for regression tracking.

    pytest benchmarks --benchmark-autosave               # time the default grid, save the run
    pytest benchmarks --benchmark-compare                # time it again, compare with the last save
    pytest benchmarks --benchmark-disable -q             # smoke (CI): the --quick grid, each body once

Every case builds its competitor with fastrnn.bench.anchors from the shared problem (same arrays for
every competitor), calls it once outside the timing (fastrnn's JIT compile, torch's and ORT's set-up),
then lets pytest-benchmark time it: calibrated rounds, min/median/mean. Competitors of one config share
a benchmark group, and extra_info["gflop"] gives the FLOPs per call. Anchors that are not installed are
skipped. For the interleaved, noise-resistant comparison with correctness checks: ``fastrnn bench``.
"""
import pytest

import fastrnn
from fastrnn.bench import anchors, cli, machine

# the first fast backend that runs here, else the NumPy reference
BACKEND = next((b for b in fastrnn.available_backends() if b not in ("reference", "cuda")), "reference")
THREADS = machine.usable_cpus()


def pytest_generate_tests(metafunc):
    """The default grid of ``fastrnn bench`` when timing; its --quick grid in smoke mode."""
    grid = cli.DEFAULTS["cpu", bool(metafunc.config.getoption("benchmark_disable", False))]
    cases = []
    for cell in anchors.GATES:
        for mode in anchors.MODES:
            for T, B, H in ((T, B, H) for H in grid["hidden"] for B in grid["batch"] for T in grid["seq_lens"]):
                # (fwd also on a pack_weights snapshot: weights packed once)
                ours = [anchors.fastrnn_name(BACKEND, packed) for packed in ((False, True) if mode == "fwd" else (False,))]
                for impl in (*ours, *anchors.ANCHORS):
                    if impl in anchors.ANCHORS and not anchors.applies(impl, mode, "cpu"):
                        continue
                    missing = anchors.anchor_missing(impl, "cpu") if impl in anchors.ANCHORS else None
                    cases.append(pytest.param(cell, mode, T, B, H, impl, id=f"{cell}-{mode}-T{T}B{B}H{H}-{impl}",
                                              marks=pytest.mark.skipif(missing is not None, reason=str(missing))))
    metafunc.parametrize("cell,mode,T,B,H,impl", cases)


def test_bench(benchmark, cell, mode, T, B, H, impl):
    problem = anchors.make_problem(cell, T, B, H)
    run = anchors.build(impl, problem, mode, "cpu", THREADS)
    run()                                   # warm-up: compile and set-up stay out of the timing
    benchmark.group = f"{cell} {mode} T={T} B={B} H={H}"
    benchmark.extra_info["gflop"] = problem.flops(mode) / 1e9
    benchmark(run)
