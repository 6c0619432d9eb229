"""Tunables, in one place, with their documented defaults and environment overrides.

FASTRNN_CPU_BACKENDS      comma-separated order in which "auto" tries backends for NumPy (CPU)
                          arrays; the first available one wins. Default "cpp,numba,reference", with
                          "numba" moved ahead of "cpp" for the shapes where it measured faster
                          (prefer_numba below: at present none); setting the variable fixes the
                          order for every shape.
FASTRNN_THREADS           worker threads of the Numba CPU kernels (default: Numba's thread count,
                          itself NUMBA_NUM_THREADS or the number of cores).
FASTRNN_PARALLEL_MIN_MACS a step whose recurrent product has fewer multiply-adds (B * G*H * H) runs
                          on one thread: below it a sync per step costs more than the split saves.
                          Unset (default): the threshold follows a measured round trip between two of
                          the kernels' threads (backends/_workers.py: 150 multiply-adds per ns of it, which
                          on the 2-core VM moved between ~80 and ~450 ns; 32768 where it cannot be measured).
FASTRNN_PARALLEL_MIN_GEMM_MACS  a whole-sequence GEMM smaller than
                          this runs on one thread: waking the other threads of the pool costs
                          about 40 us here, the time of ~2M multiply-adds. Default 2097152.
FASTRNN_CHUNKS_PER_THREAD hidden-unit chunks per worker and step of the Numba CPU kernels (more: better
                          balance when a core is busy elsewhere; fewer: less claiming). Default 1 in the
                          forward, 2 in the backward; setting it fixes both. Measured (2-core Zen 5, float32,
                          T = 512, interleaved medians, ms with 2 / 1): forward LSTM B = 1 H = 128 1.07 / 0.92,
                          B = 1 H = 256 2.95 / 2.45, B = 64 H = 512 362 / 356, B = 8 H = 128 3.40 / 3.25 (other
                          runs: 5.16 / 5.41, 4.84 / 5.99: the host's noise);
                          forward+backward LSTM B = 8 H = 256 46.3 / 48.2, GRU B = 64 H = 128 115 / 126.
FASTRNN_BATCH_SPLIT       how the Numba CPU kernels (LSTM, GRU with linear_before_reset, RNN) share the steps
                          among their workers, read at each call: "auto" (default) gives each worker its own
                          sequences where each gets a multiple of 4 of them (B % (4 * workers) == 0), else each a
                          share of the hidden units of every step; "always" splits the batch wherever B >= workers
                          (the tests force it so), "never" never. A worker with its own sequences runs all their
                          steps (up to the next chunk of the input projection) with no sync a step, on whole 4-row
                          blocks of the recurrent product, but reads all of W_hh each step, where a unit share
                          reads its part; rows left from the 4-row blocks take the single-row products, which read
                          the weights once per row. Measured (2-core Zen 3, AVX2, 512 KiB L2; float32,
                          pack_weights, forward, unit split / batch split in one process,
                          benchmarks/ab_inprocess.py, 2-3 processes of 5 rounds): LSTM B = 8 H = 128 1.09-1.10x,
                          B = 16 H = 128 1.23x, B = 64 H = 128 1.23x, B = 8 H = 256 1.02-1.04x, B = 64 H = 256
                          1.07-1.16x, B = 8 H = 512 1.01-1.04x, B = 8 H = 1024 1.06x, B = 24 H = 256 1.02x; GRU
                          B = 8 H = 128 1.18-1.27x, B = 64 H = 128 1.10-1.32x, B = 64 H = 256 1.10-1.11x, B = 8
                          H = 512 0.95-1.01x, B = 24 H = 256 0.97x; forward+backward (with the backward's unit
                          split) 0.97-1.09x. Where the rows do not fall in 4-row blocks: B = 4 H = 128 (2 a
                          worker) 0.69-0.73x, B = 12 0.83-0.84x, B = 20 0.88-0.93x, B = 6 H = 256 0.79-0.81x,
                          B = 3 0.82-0.97x; B = 2 (one each) 1.03x. The backward splits the same way, under "auto"
                          only where W_hh (G*H x H) is at most BACKWARD_SPLIT_MAX_BYTES (512 KiB, this Zen 3's L2
                          a core: LSTM and GRU at H = 128): forward+backward against the forward's split alone (3
                          processes), H = 128, B = 8-64, T = 16-512: LSTM 1.06-1.19x, GRU 1.03-1.15x (a first run
                          of 2 processes: LSTM 0.96-1.04x, GRU 1.04-1.12x); with W_hh past it, H = 256-512: LSTM
                          0.93-0.99x, GRU 0.98-1.02x. The same split in the C++ kernels (a slice's unit tiles one
                          after another, all of a step's rows of a tile in its 4-row blocks) was slower than their
                          barrier a step: LSTM and GRU forward B = 8-64, H = 128-512 0.89-1.02x (2026-11-29, same
                          machine), so "cpp" keeps the unit split.
FASTRNN_FUSE_INPUT_ROWS   the Numba CPU forward computes each step's input product inside its recurrent
                          kernel (one launch instead of a GEMM and the kernel) when the input projection
                          has at most this many rows (T*B; default 8) ...
FASTRNN_FUSE_INPUT_REREAD_BYTES  ... and the fused products' re-reads of W_ih ((T - 1) passes over it),
                          per sequence of the batch, stay under this many bytes (default 1 MiB); else one
                          GEMM over all steps. The fused products run on one row at a time, several times
                          slower than the GEMM's blocks, so only a few steps pay for the launch they save.
                          Measured on the Zen 5 (numba, float32, 2 threads, pack_weights snapshots, us a
                          call fused / GEMM, alternated in one process): LSTM T=1 B=1 H=128 38.9 / 42.2, T=1
                          B=8 H=512 135 / 156, T=1 B=64 H=128 98.8 / 91.9, T=2 B=4 H=512 153 / 172, T=4 B=1
                          H=128 44.3 / 46.9, T=4 B=1 H=512 230 / 205, T=8 B=2 H=128 95.4 / 84.2, T=16 B=1
                          H=128 102 / 86.7, T=16 B=4 H=128 163 / 137; GRU T=64 B=1 H=128 178 / 123. (The
                          Zen 3 of the earlier sessions, before the GEMM's faster blocks, had favoured
                          fusing up to 64 rows and 12 MiB.) Later (2026-11-28, same machine, alternated,
                          GEMM / fused): 8 rows LSTM T=2 B=4 H=128 1.05, T=1 B=8 1.04; 12 rows T=4 B=3
                          0.85, T=3 B=4 0.96; 16 rows T=8 B=2 H=128 0.80 and 0.93, T=4 B=4 0.97, T=2 B=8
                          H=256 0.98, T=1 B=16 H=256 1.03, GRU T=8 B=2 H=128 0.91, T=1 B=16 1.04: so 8 rows.
FASTRNN_CHUNK_STEPS       n > 0: steps per chunk of the CPU kernels' chunked loops over time (the forwards'
                          input projection and the backwards' whole-sequence products, cpp and numba; the
                          backwards take at least 2: a step reads its successor's slot of the dG ring), read
                          at each call (the tests force several chunks at small sizes). Unset or 0: about 8
                          MiB of gates (dG) a chunk, at least 64 rows of T*B (chunk_steps below; sequence.h's
                          input_chunk_steps in C++).
FASTRNN_POOL_BYTES        the CPU backends' large work and result arrays (of at least 1 MiB) come from a pool
                          of buffers that calls reuse once every array made from them is gone (_arrays.py):
                          a fresh array of megabytes costs a page fault per 4 KiB, or a zeroed huge page,
                          on first touch. At most this many bytes of free buffers stay in the pool (default
                          1 GiB; 0: no pool). fastrnn.release_memory() empties it. Measured (numba, LSTM,
                          T = 512, float32, 2 threads, interleaved, ms without / with): forward+backward B = 8
                          H = 128 17.5 / 11.7, B = 8 H = 256 45.2 / 37.9, B = 64 H = 256 337 / 295, B = 64
                          H = 512 1398 / 1115; forward B = 64 H = 256 85.5 / 80.3.
FASTRNN_CUDA_BATCH_GROUPS the "cuda" backend's batch groups: blocks that take batch tiles of the same
                          hidden units in parallel. 0 (default): as many as the GPU holds at once;
                          1: one block per unit group walks all tiles; N: at most N.
FASTRNN_CUDA_BATCH_TILE   sequences a block of the "cuda" kernels takes at once (a power of 2 up to 32; 0,
                          default: 8 in float32, 4 in float64, 1 when B = 1). Wider tiles, fewer tiles for
                          a block to walk in turn each step, but fewer rows a thread (at most 4 x 32 bytes
                          of accumulators); benchmarks/cuda_probe.py compares them.
FASTRNN_CUDA_MAX_REGISTERS  a cap on the registers a thread of the "cuda" kernels uses (0, default: the
                          compiler's choice, 130-210 by ptxas for sm_90, which lets one block of 256
                          threads per multiprocessor run; 128 lets two, so more batch groups run at once,
                          for a few spilled values).
FASTRNN_CUDA_STEPWISE     how the "cuda" backend runs the steps: "auto" (default), "always" or "never" the
                          stepwise path (a cuBLAS GEMM and a pointwise kernel a step, launched from Python)
                          instead of the persistent kernels (one launch for all steps, products from
                          on-chip tiles). "auto" takes it for batches of at least
FASTRNN_CUDA_STEPWISE_MIN_BATCH sequences (default 32) whose steps are large, B * H * H of at least
FASTRNN_CUDA_STEPWISE_MIN_WORK (default 2**24), and wherever the persistent kernels do not fit (a batch
                          row of the products too large for shared memory); LSTMs with projections
                          (w_hr) always take it. Not yet measured: the
                          defaults are an estimate from the H200 table of the persistent kernels
                          (benchmarks/results/cuda-h200.md: 60-660 us a step where B * H * H >= 2**24 and
                          B >= 64, where a step's GEMM takes 5-50 us and its launches from Python ~30).
"""
from __future__ import annotations

import os
from typing import Optional


def _env_list(name: str, default: str) -> tuple[str, ...]:
    raw = os.environ.get(name, default)
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be >= 0, got {value}")
    return value


CPU_BACKEND_ORDER: tuple[str, ...] = _env_list("FASTRNN_CPU_BACKENDS", "cpp,numba,reference")
CPU_ORDER_BY_SHAPE: bool = "FASTRNN_CPU_BACKENDS" not in os.environ


def prefer_numba(T: int, B: int, H: int, training: bool = False) -> bool:
    """Whether "auto" puts "numba" ahead of "cpp" at this shape (2 threads; ``training``: a forward that
    saves for backward). At present nowhere, although numba is now the faster of the two at B >= 8 once
    compiled, because "auto" must stay a pure function of the shapes (a torch trace and the call it traces,
    a forward and its backward, must agree), so it cannot ask whether numba's kernels are compiled yet,
    and a cold first call of numba costs minutes that cpp does not.

    Measured 2026-11-29 on the 2-core Zen 3 (interleaved medians, both backends in one process; the
    tables are benchmarks/results/cpu-zen3-2core-*-s34.md, the ratios from python
    benchmarks/backend_ratio.py on their JSON): at B = 8-64, cpp's time / numba's was 1.08 in forward
    (geometric mean of 60 readings: T = 128, H = 128-512, LSTM and GRU, packed weights and not; range
    0.96-1.30) and 1.08 in forward+backward (30 readings, 0.97-1.24); at T = 16 and 512, H = 256-1024,
    1.06 (36 configs, 0.86-1.27; below 0.95 only LSTM T = 16, B = 8: forward H = 1024 with unpacked
    weights 0.86, packed 1.06, and forward+backward H = 256 0.93); in float64 at T = 128, H = 256, 1.03-1.17.
    Below B = 8 cpp's barrier a step (one OpenMP region) is cheaper than numba's: B = 1-2 0.91 (0.74-1.25),
    B = 4 1.00 (0.88-1.18). But numba's first call in a fresh install (empty Numba cache) compiled for
    84-112 s (forward) and 55-77 s (backward) per dtype on this machine that day (cached on disk after:
    0.8 s), where the 8% saves ~0.8 ms on a 10 ms call (LSTM forward, T = 128, B = 8, H = 256): some 10^5
    such calls to pay for one cold compile. Long training runs at B >= 8 gain it with backend="numba" or
    FASTRNN_CPU_BACKENDS=numba,cpp,reference. (Before the numba GEMM and reference-count work of the
    twenty-third and twenty-fourth sessions, cpp was ahead or level everywhere: cpu-epyc-2core-s17.md,
    cpu-zen3-2core-fwdbwd-cpp-vs-numba-s31.md.)
    """
    return False


def cpu_backend_order(shape=None, training: bool = False) -> tuple[str, ...]:
    """The order "auto" tries CPU backends in, for a call of ``shape`` = (T, B, H) (None: the default);
    ``training``: the forward saves for a backward."""
    order = CPU_BACKEND_ORDER
    if shape is None or not CPU_ORDER_BY_SHAPE or "cpp" not in order or "numba" not in order:
        return order
    if prefer_numba(*shape, training=training) and order.index("cpp") < order.index("numba"):
        order = tuple("numba" if name == "cpp" else "cpp" if name == "numba" else name for name in order)
    return order
THREADS: int = _env_int("FASTRNN_THREADS", 0)          # 0: Numba's thread count
# None: decided per step from the measured round trip between cores (backends/_workers.py)
PARALLEL_MIN_MACS: Optional[int] = (_env_int("FASTRNN_PARALLEL_MIN_MACS", 0)
                                    if os.environ.get("FASTRNN_PARALLEL_MIN_MACS", "").strip() else None)
PARALLEL_MIN_GEMM_MACS: int = _env_int("FASTRNN_PARALLEL_MIN_GEMM_MACS", 2 ** 21)
FORWARD_CHUNKS_PER_THREAD: int = max(1, _env_int("FASTRNN_CHUNKS_PER_THREAD", 1))
BACKWARD_CHUNKS_PER_THREAD: int = max(1, _env_int("FASTRNN_CHUNKS_PER_THREAD", 2))
CUDA_BATCH_GROUPS: int = _env_int("FASTRNN_CUDA_BATCH_GROUPS", 0)
CUDA_MAX_REGISTERS: int = _env_int("FASTRNN_CUDA_MAX_REGISTERS", 0)
CUDA_BATCH_TILE: int = _env_int("FASTRNN_CUDA_BATCH_TILE", 0)
CUDA_STEPWISE: str = os.environ.get("FASTRNN_CUDA_STEPWISE", "").strip() or "auto"
CUDA_STEPWISE_MIN_BATCH: int = _env_int("FASTRNN_CUDA_STEPWISE_MIN_BATCH", 32)
CUDA_STEPWISE_MIN_WORK: int = _env_int("FASTRNN_CUDA_STEPWISE_MIN_WORK", 1 << 24)
FUSE_INPUT_ROWS: int = _env_int("FASTRNN_FUSE_INPUT_ROWS", 8)
FUSE_INPUT_REREAD_BYTES: int = _env_int("FASTRNN_FUSE_INPUT_REREAD_BYTES", 1 << 20)


BACKWARD_SPLIT_MAX_BYTES: int = 512 << 10       # FASTRNN_BATCH_SPLIT's "auto" in the backward: W_hh at most this
CHUNK_BYTES: int = 8 << 20
POOL_BYTES: int = _env_int("FASTRNN_POOL_BYTES", 1 << 30)
POOL_MIN_BYTES: int = 1 << 20


def batch_split() -> str:
    """FASTRNN_BATCH_SPLIT, read at each call (as FASTRNN_CHUNK_STEPS is): "auto", "always" or "never"."""
    mode = os.environ.get("FASTRNN_BATCH_SPLIT") or "auto"
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"FASTRNN_BATCH_SPLIT must be 'auto', 'always' or 'never', got {mode!r}")
    return mode


def chunk_steps(T: int, B: int, gate_columns: int, itemsize: int) -> int:
    """Steps per chunk of a loop over time whose chunks each keep B x gate_columns values a step:
    FASTRNN_CHUNK_STEPS when set, else about CHUNK_BYTES of them, at least 64 rows (T*B). The same rule
    as the C++ kernels' input_chunk_steps (kernels/include/fastrnn/sequence.h), which apply it themselves."""
    forced = _env_int("FASTRNN_CHUNK_STEPS", 0)
    if forced > 0:
        return min(T, forced)
    return min(T, max(1, CHUNK_BYTES // (B * gate_columns * itemsize), -(-64 // B)))
