"""The numba backend's whole-sequence GEMM (_numba_tiles.gemm_chunk, every chunk on one thread) against
NumPy's matmul (its BLAS, one thread), in one process, interleaved, medians: GFLOP/s.

    OPENBLAS_NUM_THREADS=1 taskset -c 1 python benchmarks/gemm_numba.py [--shapes "8160,512,128;1024,512,128"]

C = A B^T + bias with A (M x K), B (N x K): the input projection's form (x W_ih^T + b_ih). ``--c-block`` also times
the same work writing every 240-row block of C into one L2-resident block (so C's stores hit cached lines): the
gap between the two is what stores to uncached lines cost.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

from fastrnn.backends import _numba_tiles as tiles
from fastrnn.backends import numba_cpu


@njit(cache=True)
def _all_chunks(A, C, bias, panels, reps, one_block):
    """C = A op(B) + bias, reps times; with ``one_block`` every GEMM_M-row block of A is written to C's first."""
    packed_a = np.empty((0, 0), C.dtype)
    M = A.shape[0]
    for _ in range(reps):
        for m0 in range(0, M, tiles.GEMM_M):
            a = A[m0:min(M, m0 + tiles.GEMM_M)]
            c = C[:a.shape[0]] if one_block else C[m0:m0 + a.shape[0]]
            for chunk in range(tiles.gemm_chunks(a.shape[0], C.shape[1], False)):
                tiles.gemm_chunk(a, False, c, bias, chunk, panels, packed_a, False)


def _timed(fn, reps):
    start = time.perf_counter()
    fn(reps)
    return (time.perf_counter() - start) / reps


def measure(M, N, K, rounds, reps, c_block, dtype=np.float32):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((N, K)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    C = np.empty((M, N), dtype)
    panels = np.zeros(numba_cpu._gemm_panels_shape(K, N, np.dtype(dtype)), dtype)
    tiles.pack_gemm_panels(B, True, panels, 0, panels.shape[0])
    Bt = np.ascontiguousarray(B.T)
    expected = A.astype(np.float64) @ B.T.astype(np.float64) + bias
    _all_chunks(A, C, bias, panels, 1, False)
    np.testing.assert_allclose(C, expected, rtol=1e-4, atol=1e-3 * np.sqrt(K))
    runs = {"numba": lambda n: _all_chunks(A, C, bias, panels, n, False),
            "numpy": lambda n: [np.matmul(A, Bt, out=C) for _ in range(n)]}
    if c_block:
        runs["numba, one C block"] = lambda n: _all_chunks(A, C, bias, panels, n, True)
        _all_chunks(A, C, bias, panels, 1, True)
    times = {name: [] for name in runs}
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            times[name].append(_timed(runs[name], reps))
    flop = 2.0 * M * N * K
    return {name: flop / float(np.median(t)) / 1e9 for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="8160,512,128;1024,512,128;1024,128,128;2048,512,2048",
                        help="M,N,K;... (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--c-block", action="store_true", help="also time the writes into one cached block of C")
    args = parser.parse_args(argv)
    print("| M | N | K | " + " | ".join(["numba GF/s", "numpy GF/s"] + (["numba, one C block"] if args.c_block
                                                                          else [])) + " |")
    print("|---|---|---|---|---|" + ("---|" if args.c_block else ""))
    for shape in args.shapes.split(";"):
        M, N, K = (int(v) for v in shape.split(","))
        gf = measure(M, N, K, args.rounds, args.reps, args.c_block)
        print(f"| {M} | {N} | {K} | " + " | ".join(f"{v:.1f}" for v in gf.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
