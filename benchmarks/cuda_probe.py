"""Where a step of the "cuda" backend's persistent kernels goes, on a GPU (run by benchmarks/gpu_run.sh).

    python benchmarks/cuda_probe.py [--steps 256] [--json out.json]

1. The floor: one grid-wide sync (cooperative groups, as the kernels use it) per step of an empty
   persistent kernel, for grids of 32 blocks up to what the GPU holds at once, 256 threads each; and
   the same loop with a plain atomic-counter barrier, which the kernels could use instead.
2. The kernels: forward and forward+backward wall time per step (T = --steps, float32, CuPy arrays
   in, a device synchronise per call, median of 5 after 2 warm-up calls), for a few shapes on both
   sides of cuDNN, against cuDNN (torch, TF32 off) in the same process, in settings of
   fastrnn.config: as they are ("auto"); the persistent kernels forced (B >= 32, where "auto" may take
   the stepwise path); the stepwise path forced (FASTRNN_CUDA_STEPWISE=always: a cuBLAS GEMM and a
   pointwise launch a step); FASTRNN_CUDA_MAX_REGISTERS=128 (two blocks can share a multiprocessor,
   so twice the batch groups run at once); FASTRNN_CUDA_BATCH_TILE=16 (B >= 16: half as many batch
   tiles for a block to walk each step). Each row also gives the launches (blocks, batch groups,
   registers a thread, or "stepwise") and each setting's largest relative difference from cuDNN (y;
   dW_hh after a backward). A short table comes last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

SHAPES = [("lstm", 1, 256), ("lstm", 8, 256), ("lstm", 16, 256), ("lstm", 64, 256), ("lstm", 8, 128),
          ("gru", 8, 256), ("lstm", 64, 1024), ("lstm", 256, 256), ("gru", 64, 512)]
# (name, fastrnn.config settings, the smallest batch it applies to); "auto" is the defaults, which take
# the stepwise path at the largest shapes, "persistent" and "stepwise" force either path
VARIANTS = [("auto", {}, 1), ("persistent", {"CUDA_STEPWISE": "never"}, 32),
            ("stepwise", {"CUDA_STEPWISE": "always"}, 1),
            ("regs128", {"CUDA_MAX_REGISTERS": 128, "CUDA_STEPWISE": "never"}, 1),
            ("tile16", {"CUDA_BATCH_TILE": 16, "CUDA_STEPWISE": "never"}, 16)]


def _median_ms(run, reps=5, warmup=2):
    import cupy
    for _ in range(warmup):
        run()
    cupy.cuda.runtime.deviceSynchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        cupy.cuda.runtime.deviceSynchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def sync_floor(steps):
    """(blocks, us per grid sync) of an empty persistent kernel."""
    from numba import cuda

    @cuda.jit
    def sync_loop(n, out):
        grid = cuda.cg.this_grid()
        for _ in range(n):
            grid.sync()
        if cuda.grid(1) == 0:
            out[0] = n

    out = cuda.device_array(1, np.int64)
    sync_loop[1, 256](1, out)
    cuda.synchronize()
    compiled = next(iter(sync_loop.overloads.values()))
    most = compiled.max_cooperative_grid_blocks(256)
    rows = []
    for blocks in sorted({32, 64, 132, 264, most} & set(range(1, most + 1))):
        n = steps * 20
        sync_loop[blocks, 256](n, out)
        cuda.synchronize()
        start = time.perf_counter()
        sync_loop[blocks, 256](n, out)
        cuda.synchronize()
        rows.append((blocks, (time.perf_counter() - start) / n * 1e6))
    return rows


def flag_barrier_floor(steps):
    """(blocks, us per barrier) of the same empty loop with a plain counter barrier instead of the grid
    sync (thread 0 of each block: fence, atomic add, spin on atomic reads until every block has
    arrived), launched normally with at most one block per multiprocessor, so all are resident: what
    replacing cooperative groups' sync could save."""
    from numba import cuda

    @cuda.jit
    def flag_loop(n, counter, out):
        blocks = cuda.gridDim.x
        for s in range(n):
            cuda.syncthreads()
            if cuda.threadIdx.x == 0:
                cuda.threadfence()
                cuda.atomic.add(counter, 0, 1)
                while cuda.atomic.add(counter, 0, 0) < (s + 1) * blocks:
                    pass
                cuda.threadfence()
            cuda.syncthreads()
        if cuda.grid(1) == 0:
            out[0] = n

    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    out = cuda.device_array(1, np.int64)
    rows = []
    for blocks in sorted({32, sms}):
        n = steps * 20
        for timed in (False, True):
            counter = cuda.to_device(np.zeros(1, np.int64))
            start = time.perf_counter()
            flag_loop[blocks, 256](n, counter, out)
            cuda.synchronize()
        rows.append((blocks, (time.perf_counter() - start) / n * 1e6))
    return rows


def launch_facts(code, backward, B, H):
    """Blocks, batch groups and registers of the persistent kernel the last call launched for this
    shape, or "stepwise"."""
    from fastrnn.backends import numba_cuda
    split = numba_cuda.plan(code, backward, B, H, 4)
    if split is None:
        return "stepwise"
    kernel = numba_cuda._kernel(code, backward, split, np.float32)
    compiled = next(iter(kernel.overloads.values()))
    groups = numba_cuda.batch_groups(compiled, split, -(-B // split.batch_tile))
    return f"{split.blocks * groups} blocks, {groups} groups, {compiled.regs_per_thread} regs"


def kernel_rows(steps):
    import torch

    from fastrnn import config
    from fastrnn.backends import numba_cuda
    from fastrnn.bench import anchors
    anchors.prepare("cuda", 1, ["torch"])
    rows = []
    for cell, B, H in SHAPES:
        problem = anchors.make_problem(cell, steps, B, H)
        code = numba_cuda._CODES[cell, True if cell == "gru" else None]
        row = dict(cell=cell, B=B, H=H, T=steps)
        for mode in ("fwd", "fwdbwd"):
            cudnn = anchors.build("torch", problem, mode, "cuda", 1)
            row[f"cudnn_{mode}_ms"] = _median_ms(cudnn)
            expected = cudnn()
            for name, settings, min_batch in VARIANTS:
                if B < min_batch:
                    continue
                defaults = {key: getattr(config, key) for key in settings}
                for key, value in settings.items():
                    setattr(config, key, value)
                try:
                    run = anchors.build("fastrnn[cuda]", problem, mode, "cuda", 1)
                    row[f"{name}_{mode}_ms"] = _median_ms(run)
                    got = run()     # agreement with cuDNN: y, and dW_hh after a backward
                    row[f"{name}_{mode}_err"] = max(anchors.rel_err(g, e) for g, e in zip(got, expected)
                                                    if g is not None)
                    backward = mode == "fwdbwd"        # (its forward kernel is the row's fwd launch)
                    row[f"{name}_{'backward' if backward else 'forward'}"] = launch_facts(code, backward, B, H)
                except Exception as exc:        # a variant that fails to compile or launch: say so, go on
                    row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:200]
                finally:
                    for key, value in defaults.items():
                        setattr(config, key, value)
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    from numba import cuda
    device = cuda.get_current_device()
    print(f"device: {device.name.decode() if isinstance(device.name, bytes) else device.name}, "
          f"{device.MULTIPROCESSOR_COUNT} multiprocessors", flush=True)
    floor = sync_floor(a.steps)
    for blocks, us in floor:
        print(f"grid sync, {blocks} blocks x 256 threads: {us:.2f} us", flush=True)
    flags = flag_barrier_floor(a.steps)
    for blocks, us in flags:
        print(f"counter barrier, {blocks} blocks x 256 threads: {us:.2f} us", flush=True)
    rows = kernel_rows(a.steps)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(sync_floor=floor, counter_barrier=flags, kernels=rows), f, indent=1)
    per_step = 1e3 / a.steps
    names = [name for name, _, _ in VARIANTS]
    print("us a step, T = %d: cell B H | fwd: cuDNN, %s | fwd+bwd: cuDNN, %s" % (a.steps, ", ".join(names), ", ".join(names)))
    for r in rows:
        cells = [" ".join(f"{r.get(f'{name}_{mode}_ms', float('nan')) * per_step:.1f}"
                          for name in ("cudnn", *names)) for mode in ("fwd", "fwdbwd")]
        worst = max((value for key, value in r.items() if key.endswith("_err")), default=float("nan"))
        print(f"{r['cell']} {r['B']} {r['H']} | {cells[0]} | {cells[1]} | max rel. error vs cuDNN {worst:.1e}")

if __name__ == "__main__":
    main()
