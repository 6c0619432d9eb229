"""Numba CPU backend ("numba"): fused persistent kernels for the recurrence, tiled GEMMs for the rest.

    forward:  kernel, one parallel region: xp = x W_ih^T + b_ih, a GEMM per chunk of ~8 MiB of
              steps into a ring, then each step's recurrent product and cell pointwise
              (one worker and a GEMM big enough for a parallel one: the GEMM over all T*B rows first,
              on all threads; few rows, FASTRNN_FUSE_INPUT_ROWS: each step's input product inside the step)
    LSTM with projections (w_hr): the input projection one GEMM first, then a kernel of two phases a
              step (gates, c_t and m_t over chunks of the H units; h_t = m_t W_hr^T over chunks of the
              P outputs); its backward mirrors them, the whole-sequence GEMMs after it
    backward: kernel, one parallel region: the reverse loop, carrying dh (and dc), reusing the
              saved activations, in chunks of ~8 MiB of dG (a ring), the last chunk first; after
              each chunk its rows of dx = dG_i W_ih and its share of dW_ih = dG_i^T x,
              dW_hh = dG_h^T h_prev (op(B) packed into vector panels) and of the biases' column
              sums of dG (one worker and products big enough for parallel GEMMs, and the GRU of Cho
              et al.: the GEMMs over all T*B rows after the kernel, on all threads)
No library call is made per step, and no BLAS call at all: NumPy's OpenBLAS threads and Numba's
OpenMP threads, alternating on two cores, spun against each other and slowed both tenfold.

The recurrent kernels pack W_hh once per call (its rows forward, its columns backward) into
panels of one vector of units, in their first phase, each worker the panels of its own chunks
(one pass over the weights, against T passes in the loop; so weights updated in place between
calls are always seen); the GEMMs pack op(B) once per call (x W_ih^T reads W_ih's rows straight
into the panels). A call on a PackedWeights snapshot (fastrnn.pack_weights) keeps its forward's
packed W_hh and W_ih there, and later calls skip the packing (_packed.py). Arrays of 1 MiB or more
(results, tapes, work arrays) come from the pool of reused buffers (_arrays.pooled_empty): their fresh
pages would fault on every call. What a call of one shape needs besides its arrays (its path, the
arrays' shapes, the counters' sizes) is worked out once per shape (_forward_plan, _backward_plan): per
call that Python took as long as a small call's kernel (LSTM, T = 1, B = 1, H = 64: 9 of 27 us; now 5).
Kernels are compiled on first use and cached on disk (see _numba_cpu_kernels.py for the equations and
the work split).
"""
from __future__ import annotations

import functools
import math
import os
import threading
from typing import Callable, NamedTuple, Optional

import numba
import numpy as np

from .. import config
from .._arrays import pooled_empty
from .._packed import PackedSlot
from . import _numba_cpu_kernels as kernels
from ._numba_simd import VECTOR_BYTES
from ._workers import split_step
from ..cells import SPECS

_KIND = {("lstm", None): kernels.LSTM, ("gru", True): kernels.GRU,
         ("rnn", "tanh"): kernels.RNN_TANH, ("rnn", "relu"): kernels.RNN_RELU}
_launch_lock = threading.Lock()


def _lanes(dtype):
    return VECTOR_BYTES // np.dtype(dtype).itemsize


def _plan(step_macs, dtype, chunks_per_thread, *sizes):
    """(workers, units per chunk of each of ``sizes``) for one call: one worker (each size one chunk)
    for steps too small to split (_workers.split_step), else all threads, each with
    ``chunks_per_thread`` chunks of each size's units a step (config: forward and backward differ)."""
    if not split_step(step_macs):
        return (1, *sizes)
    threads = _threads()            # (numba.get_num_threads takes a lock: not read for one-worker steps)
    if threads <= 1:
        return (1, *sizes)
    chunks, lanes = threads * chunks_per_thread, _lanes(dtype)
    # whole vector tiles of units (the packed panels' width)
    return (threads, *(-(-(-(-n // chunks)) // lanes) * lanes for n in sizes))


def _tiles(n, dtype):
    """Vector tiles of n units."""
    return -(-n // _lanes(dtype))


def _panels(count, K, dtype):
    """Room for ``count`` packed weight panels of K rows (_numba_tiles.pack_rows / pack_columns)."""
    return pooled_empty((count, K, _lanes(dtype)), dtype)


def _packed_columns(w):
    """w's columns packed by unit tiles (for dh = dG w), on the calling thread."""
    panels = _panels(-(-w.shape[1] // _lanes(w.dtype)), w.shape[0], w.dtype)
    kernels.pack_columns(_writeable(w), panels, 0, panels.shape[0])
    return panels


def _gemm_panels_shape(K, N, dtype):
    """The shape of a K x N operand packed into panels of two vectors of columns (_numba_tiles.pack_gemm_panels),
    the last one zero-filled past N."""
    return (-(-N // (2 * _lanes(dtype))), K, 2 * _lanes(dtype))


def _gemm_panels(K, N, dtype):
    """Room for a K x N operand packed by _numba_tiles.pack_gemm_panels."""
    return pooled_empty(_gemm_panels_shape(K, N, dtype), dtype)


def _panels_of(Bm, b_transposed):
    """Room for op(Bm) packed by _numba_tiles.pack_gemm_panels."""
    K, N = Bm.shape[::-1] if b_transposed else Bm.shape
    return _gemm_panels(K, N, Bm.dtype)


def _gemm(A, Bm, bias=None, a_transposed=False, b_transposed=False, panels=None, panels_ready=False):
    """op(A) op(Bm) + bias (op: the transpose where asked), all row-major, with the vectorised kernel
    on all threads. ``panels``: where op(Bm) is packed (already, if ``panels_ready``)."""
    M = A.shape[1] if a_transposed else A.shape[0]
    N, K = (Bm.shape[0], Bm.shape[1]) if b_transposed else (Bm.shape[1], Bm.shape[0])
    C = pooled_empty((M, N), A.dtype)
    workers = 1 if M * N * K < config.PARALLEL_MIN_GEMM_MACS else _threads()
    panels = _panels_of(Bm, b_transposed) if panels is None else panels
    _launch(kernels.gemm, workers, _writeable(A), a_transposed, _writeable(Bm), b_transposed, C,
            _writeable(bias) if bias is not None else np.empty(0, A.dtype), panels, panels_ready,
            np.zeros(max(kernels.pack_items(panels.shape[0]), 1), np.int64),
            np.zeros(kernels.gemm_chunks(M, N, a_transposed), np.int64),
            np.zeros(1, np.int64))
    return C


def _threads():
    return config.THREADS or numba.get_num_threads()


def _counters(phases, H, units, extra_claims=0):
    """Claim counters for ``phases`` phases of the hidden units' chunks (+ ``extra_claims`` after
    them), and a done counter per phase."""
    n_chunks = -(-H // units)
    return np.zeros(phases * n_chunks + extra_claims, np.int64), np.zeros(phases, np.int64)


def _launch(kernel, workers, *args):
    """Run a kernel whose last argument is its number of workers. One worker still enters the
    parallel region with the whole team (the calling thread takes the work, the others find none):
    shrinking the team to one around the call (numba.set_num_threads, twice) cost more than it saved
    (alternated, float32, forward: LSTM T = 1, B = 1, H = 64 27 -> 24 us a call, RNN T = 16, B = 4,
    H = 32 35 -> 31 us, forward+backward 99 -> 88 us; a step's time at T = 512 unchanged)."""
    _locked_call(kernel, args + (workers,))


def _locked_call(kernel, args):
    # The workqueue threading layer (used when neither OpenMP nor TBB is present) must not be
    # entered from two Python threads at once; OpenMP and TBB can. Before the first launch the
    # layer is not chosen yet: lock then too.
    if _threading_layer() in (None, "workqueue"):
        with _launch_lock:
            kernel(*args)
    else:
        kernel(*args)


def _threading_layer():
    try:
        return numba.threading_layer()
    except ValueError:     # no parallel kernel has run yet: the first launch picks the layer
        return None


# A child forked after its parent ran parallel kernels on the OpenMP layer may not open a parallel
# region (Numba terminates it: "fork() called from a process already using GNU OpenMP, this is
# unsafe"): there the backend reports itself unavailable instead ("auto" passes over it).
_forked_after_omp = False


def _after_fork_in_child():
    global _forked_after_omp
    _forked_after_omp = _forked_after_omp or _threading_layer() == "omp"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_reason():
    """Why this process cannot run the kernels (forked after OpenMP ran them), or None (Backend.process_check)."""
    if not _forked_after_omp:
        return None
    return ("backend 'numba' cannot run in this process: it was forked from one whose Numba kernels ran on "
            "OpenMP threads, which a forked child may not use; start worker processes with the 'spawn' or "
            "'forkserver' method, or set NUMBA_THREADING_LAYER=forksafe before the first call, or use "
            "backend='cpp'")


class _StandIns(NamedTuple):
    """Stand-ins for the kernel arguments a call's path never touches (Numba needs an array of the
    right type there), shared by all calls (a fresh one cost ~0.3 us)."""
    states: np.ndarray          # (1, 1, 1): no cell states, no saved gates...
    panels: np.ndarray          # (0, 0, 1): no panels, the path packs nothing
    rows: np.ndarray            # (0, 1): no whole-sequence product in the kernel
    counters: np.ndarray        # int64 (1,): no claims
    sums: np.ndarray            # float64 (0, 0): no bias sums in the kernel


@functools.lru_cache(maxsize=None)
def _stand_ins(dtype) -> _StandIns:
    return _StandIns(np.empty((1, 1, 1), dtype), np.empty((0, 0, 1), dtype), np.empty((0, 1), dtype),
                     np.zeros(1, np.int64), np.zeros((0, 0), np.float64))


def _steps_of_length(B, T):
    # every sequence of the batch T steps long (np.full took 0.6 us more)
    lengths = np.empty(B, np.int64)
    lengths.fill(T)
    return lengths


def _writeable(arr):
    # Numba compiles a separate kernel for read-only arrays (seconds); a copy costs microseconds
    return arr if arr is None or arr.flags.writeable else arr.copy()


def _allocator(dtype, *shapes):
    """np.empty for a call whose arrays (of ``shapes``, None: absent) are all under the pool's threshold,
    else pooled_empty (which still gives the small ones np.empty's)."""
    biggest = max(math.prod(shape) for shape in shapes if shape) * dtype.itemsize
    return np.empty if biggest < config.POOL_MIN_BYTES else pooled_empty


class _ForwardPlan(NamedTuple):
    """What a forward call of one shape needs besides its arrays, worked out once per shape
    (_forward_plan): per call it cost more than the kernel's launch at small sizes."""
    kind: int                   # kernels.LSTM, GRU, RNN_TANH or RNN_RELU
    projection: int             # kernels.PROJECTED, PROJECT_CHUNKS or PROJECT_FUSED (kernels.forward)
    hh_panels: tuple            # W_hh's rows packed
    ih_key: str                 # W_ih's PackedSlot: rows (fused) or GEMM panels (the others)
    ih_panels: tuple
    fused_xp: tuple             # the fused input product's one step
    states: tuple               # h_states, c_states
    gates: Optional[tuple]      # saved activations (all T steps for backward, else one scratch slot; RNN: none)
    ghn: Optional[tuple]        # the GRU's h-side n pre-activations
    n_claims: int               # the steps' claim counters (and W_ih's packing, in the ring)
    empty: Callable             # np.empty when every array of the call is under the pool's threshold
    unused: _StandIns


@functools.lru_cache(maxsize=256)
def _forward_plan(cell, variant, T, B, I, H, dtype, save, workers, units, fuse_rows, fuse_reread_bytes,
                  gemm_min_macs):
    G, L = SPECS[cell].num_gates, _lanes(dtype)
    tiles = _tiles(H, dtype)
    # small problems: the input product inside the recurrent kernel (see kernels.forward), while
    # its re-reads of W_ih every step cost less than a separate GEMM's launch (config.py); else by
    # the kernel a chunk of steps at a time into a ring (several workers), or one GEMM over the whole
    # sequence first (one worker, whose kernel would compute it on one thread)
    fused = T * B <= fuse_rows and (T - 1) * G * H * I * dtype.itemsize <= fuse_reread_bytes * B
    # (the ring, too, where the GEMM would run on one thread anyway: its launch costs more)
    ring = workers > 1 or T * B * G * H * I < gemm_min_macs
    projection = kernels.PROJECT_FUSED if fused else kernels.PROJECT_CHUNKS if ring else kernels.PROJECTED
    ih_panels = (G * tiles, I, L) if fused else _gemm_panels_shape(I, G * H, dtype)
    slots, S = (T, T + 1) if save else (1, 2)
    shapes = dict(hh_panels=(G * tiles, H, L), ih_panels=ih_panels, fused_xp=(1, B, G * H), states=(S, B, H),
                  gates=(slots, B, G * H) if cell != "rnn" else None, ghn=(slots, B, H) if cell == "gru" else None)
    n_pack = kernels.pack_items(ih_panels[0]) if projection == kernels.PROJECT_CHUNKS else 0
    return _ForwardPlan(kind=_KIND[cell, variant], projection=projection,
                        ih_key="numba rows w_ih" if fused else "numba gemm w_ih^T", **shapes,
                        n_claims=(T + 1) * -(-H // units) + n_pack,
                        empty=_allocator(dtype, *shapes.values(), (T, B, H)), unused=_stand_ins(dtype))


def _batch_rows(B, H, units, workers, fused=False, step_weight_bytes=0):
    """Sequences per slice where a kernel splits the batch among the workers (config.batch_split: each
    runs its slices' steps without a sync a step; kernels.forward, kernels.backward), else 0: the hidden
    units are split, step by step. Not with the input product fused into the forward's steps (small
    problems). ``step_weight_bytes``: the W_hh each worker would then read whole every step, which
    "auto" keeps to config.BACKWARD_SPLIT_MAX_BYTES (the backward passes it; the forward gained past it)."""
    mode = config.batch_split()
    if mode == "never" or workers < 2 or B < workers or fused:
        return 0
    if mode == "auto" and (B % (4 * workers) or step_weight_bytes > config.BACKWARD_SPLIT_MAX_BYTES):
        return 0
    rows = -(-B // workers)
    # the kernel claims the slices with the unit chunks' counters: at most as many slices as chunks
    return rows if -(-B // rows) <= -(-H // units) else 0


def forward(seq, save):
    if seq.w_hr is not None:
        return _forward_projected(seq, save)
    if seq.cell == "gru" and not seq.variant:
        return _forward_gru_cho(seq, save)
    x, w_ih, w_hh = _writeable(seq.x), _writeable(seq.w_ih), _writeable(seq.w_hh)
    T, B, I = x.shape
    GH, H = w_hh.shape
    dtype = x.dtype
    workers, units = _plan(B * GH * H, dtype, config.FORWARD_CHUNKS_PER_THREAD, H)
    plan = _forward_plan(seq.cell, seq.variant, T, B, I, H, dtype, save, workers, units,
                         config.FUSE_INPUT_ROWS, config.FUSE_INPUT_REREAD_BYTES, config.PARALLEL_MIN_GEMM_MACS)
    empty = plan.empty
    # W_hh's rows and W_ih's (x W_ih^T's GEMM panels, or rows when fused): packed by this call,
    # or taken packed from the PackedWeights snapshot the call runs on (_packed.py)
    hh = PackedSlot(seq, "numba rows w_hh", lambda: empty(plan.hh_panels, dtype))
    ih = PackedSlot(seq, plan.ih_key, lambda: empty(plan.ih_panels, dtype))
    b_ih = _writeable(seq.b_ih) if seq.b_ih is not None else np.zeros(GH, dtype)
    b_hh = _writeable(seq.b_hh) if seq.b_hh is not None else np.zeros(GH, dtype)
    unused = plan.unused
    proj_claims = proj_done = unused.counters
    panels_ih = gemm_ih = unused.panels
    if plan.projection == kernels.PROJECT_FUSED:
        xp, panels_ih = empty(plan.fused_xp, dtype), ih.buffer
    elif plan.projection == kernels.PROJECT_CHUNKS:     # a ring of chunks of steps, and the GEMM's counters
        steps = config.chunk_steps(T, B, GH, dtype.itemsize)
        xp, gemm_ih = pooled_empty((steps, B, GH), dtype), ih.buffer
        chunks = -(-T // steps)
        proj_claims = np.zeros(chunks * kernels.gemm_chunks(steps * B, GH, False), np.int64)
        proj_done = np.zeros(chunks, np.int64)
    else:
        xp = _gemm(x.reshape(T * B, I), w_ih, b_ih, b_transposed=True, panels=ih.buffer,
                   panels_ready=ih.ready).reshape(T, B, GH)
    lengths = _writeable(seq.lengths) if seq.lengths is not None else _steps_of_length(B, T)
    h_states, y = empty(plan.states, dtype), empty((T, B, H), dtype)
    h_states[0] = seq.h0
    c_states = None
    if seq.c0 is not None:
        c_states = empty(plan.states, dtype)
        c_states[0] = seq.c0
    gates = empty(plan.gates, dtype) if plan.gates else unused.states
    ghn = empty(plan.ghn, dtype) if plan.ghn else unused.states
    batch_rows = _batch_rows(B, H, units, workers, fused=plan.projection == kernels.PROJECT_FUSED)
    _launch(kernels.forward, workers, plan.kind, x, w_ih, panels_ih, gemm_ih, ih.ready, b_ih, plan.projection, xp,
            w_hh, hh.buffer, hh.ready, b_hh, h_states, c_states if c_states is not None else unused.states, lengths,
            y, gates, ghn, units, batch_rows, np.zeros(plan.n_claims, np.int64), np.zeros(T + 1, np.int64),
            proj_claims, proj_done)
    ih.keep()
    hh.keep()
    S = plan.states[0]
    c_n = c_states[T % S].copy() if c_states is not None else None
    saved = dict(h_states=h_states, c_states=c_states, gates=gates, ghn=ghn, lengths=lengths) if save else None
    return y, h_states[T % S].copy(), c_n, saved


def _forward_gru_cho(seq, save):
    """The GRU of Cho et al.: the input projection one GEMM first, then two phases a step
    (kernels.forward_gru_cho)."""
    T, B, I, H, dtype = seq.T, seq.B, seq.I, seq.H, seq.dtype
    w_hh = _writeable(seq.w_hh)
    workers, units = _plan(B * 3 * H * H, dtype, config.FORWARD_CHUNKS_PER_THREAD, H)
    hh = PackedSlot(seq, "numba rows w_hh", lambda: _panels(3 * _tiles(H, dtype), H, dtype))
    ih = PackedSlot(seq, "numba gemm w_ih^T", lambda: _panels_of(seq.w_ih, True))
    xp = _gemm(seq.x.reshape(T * B, I), seq.w_ih, seq.b_ih, b_transposed=True, panels=ih.buffer,
               panels_ready=ih.ready).reshape(T, B, 3 * H)
    b_hh = _writeable(seq.b_hh) if seq.b_hh is not None else np.zeros(3 * H, dtype)
    lengths = _writeable(seq.lengths) if seq.lengths is not None else _steps_of_length(B, T)
    S = T + 1 if save else 2
    h_states = pooled_empty((S, B, H), dtype)
    h_states[0] = seq.h0
    y = pooled_empty((T, B, H), dtype)
    gates = pooled_empty((T if save else 1, B, 3 * H), dtype)
    claims, done = _counters(2 * T + 1, H, units)
    _launch(kernels.forward_gru_cho, workers, xp, w_hh, hh.buffer, hh.ready, b_hh, h_states, lengths, y,
            gates, pooled_empty((B, H), dtype), units, claims, done)
    ih.keep()
    hh.keep()
    saved = dict(h_states=h_states, c_states=None, gates=gates, ghn=None, lengths=lengths) if save else None
    return y, h_states[T % S].copy(), None, saved


def backward(seq, saved, dy, dh_n, dc_n):
    B, H, dtype = seq.B, seq.H, seq.dtype
    N = seq.w_hh.shape[1]           # the state's size: H, or P with projections
    dy = _writeable(dy) if dy is not None else np.zeros((1, B, N), dtype)   # one slot of zeros serves every step
    dh_n = _writeable(dh_n) if dh_n is not None else np.zeros((B, N), dtype)
    if seq.w_hr is not None:
        return _backward_projected(seq, saved, dy, dh_n, dc_n)
    workers, units = _plan(B * seq.w_hh.shape[0] * H, dtype, config.BACKWARD_CHUNKS_PER_THREAD, H)
    if seq.cell == "gru" and not seq.variant:
        return _backward_gru_cho(seq, saved, dy, dh_n, workers, units)
    return _backward_fused(seq, saved, dy, dh_n, dc_n, workers, units)


def _backward_gru_cho(seq, saved, dy, dh_n, workers, units):
    """GRU of Cho et al.: two phases per step over all T steps, then the whole-sequence GEMMs."""
    T, B, H, dtype = seq.T, seq.B, seq.H, seq.dtype
    h_states, lengths, gates = saved["h_states"], saved["lengths"], saved["gates"]
    dg_rz = pooled_empty((T, B, 2 * H), dtype)
    da_n = pooled_empty((T, B, H), dtype)
    dh0 = pooled_empty((B, H), dtype)
    claims, done = _counters(2 * T + 1, H, units)
    _launch(kernels.backward_gru_cho, workers, _packed_columns(seq.w_hh[:2 * H]), _packed_columns(seq.w_hh[2 * H:]),
            dy, dh_n, lengths, gates, h_states, dg_rz, da_n, np.zeros((B, H), dtype), dh0, units, claims, done)
    h_prev = h_states[:T].reshape(T * B, H)
    r_h_prev = gates[:, :, :H].reshape(T * B, H) * h_prev
    dw_hh = np.concatenate([_gemm(dg_rz.reshape(T * B, 2 * H), h_prev, a_transposed=True),
                            _gemm(da_n.reshape(T * B, H), r_h_prev, a_transposed=True)])
    dx, dw_ih, db_ih, db_hh = _input_side_grads(seq, np.concatenate([dg_rz, da_n], axis=2).reshape(T * B, 3 * H))
    return dx, dh0, None, dw_ih, dw_hh, db_ih, db_hh, None


def _input_side_grads(seq, dg):
    """dx = dG W_ih, dW_ih = dG^T x and the biases' gradients, the column sums of dG (T*B, G*H), for the
    cells whose two biases see the same gradient (Cho's GRU, the LSTM with projections), after the kernel."""
    T, B, I = seq.T, seq.B, seq.I
    dx = _gemm(dg, seq.w_ih).reshape(T, B, I)
    dw_ih = _gemm(dg, seq.x.reshape(T * B, I), a_transposed=True)
    db = dg.sum(axis=0) if seq.b_ih is not None or seq.b_hh is not None else None
    db_ih = db if seq.b_ih is not None else None
    return dx, dw_ih, db_ih, None if seq.b_hh is None else db.copy() if db_ih is not None else db


class _BackwardPlan(NamedTuple):
    """What a backward call of one shape needs besides its arrays, worked out once per shape
    (_backward_plan), as _ForwardPlan."""
    kind: int
    chunked: bool               # the whole-sequence products inside the kernel, chunk by chunk
    dg: tuple                   # dG's ring (all T steps when not chunked)
    hh_columns: tuple           # W_hh's columns packed
    panels_ih: tuple            # the chunked products' packed operands: W_ih, a chunk's x and h_prev
    panels_x: tuple
    panels_h: tuple
    n_claims: int
    n_product_claims: int       # the chunked products' claim and done counters
    n_product_done: int
    empty: Callable
    unused: _StandIns


@functools.lru_cache(maxsize=256)
def _backward_plan(cell, variant, T, B, I, H, dtype, chunked, units, steps, n_sums):
    G, L = SPECS[cell].num_gates, _lanes(dtype)
    GH = G * H
    shapes = dict(dg=(steps, B, GH), hh_columns=(_tiles(H, dtype), GH, L),
                  panels_ih=_gemm_panels_shape(GH, I, dtype), panels_x=_gemm_panels_shape(steps * B, I, dtype),
                  panels_h=_gemm_panels_shape(steps * B, H, dtype))
    n_pack_ih = kernels.pack_items(shapes["panels_ih"][0]) if chunked else 0
    chunks = -(-T // steps)
    block = max(kernels.chunk_product_items(steps * B, I, GH, H, n_sums),
                sum(kernels.pack_items(shapes[name][0]) for name in ("panels_x", "panels_h")))
    return _BackwardPlan(kind=_KIND[cell, variant], chunked=chunked, **shapes,
                         n_claims=(T + 2) * -(-H // units) + n_pack_ih,
                         n_product_claims=2 * chunks * block if chunked else 0,
                         n_product_done=2 * chunks if chunked else 0,
                         empty=_allocator(dtype, *shapes.values(), (T, B, max(I, H)), (GH, max(I, H))),
                         unused=_stand_ins(dtype))


def _backward_fused(seq, saved, dy, dh_n, dc_n, workers, units):
    """LSTM, GRU (linear before reset) and RNN. Several workers: one kernel runs the reverse loop in
    chunks of steps (config.chunk_steps: ~8 MiB of dG, at least 2 steps), the last chunk first, and
    after each chunk its rows of dx and its share of dW_ih, dW_hh and the bias gradients, so dG is a
    ring of one chunk (a T-long dG's fresh pages cost more than the backward's pointwise work at
    T = 512, B = 64; the C++ backward does the same). So does one worker where each of those products
    is too small for a parallel GEMM (their three launches cost more: LSTM T = 16, B = 1, H = 64,
    forward+backward 123 -> 103 us); else the kernel keeps all T steps of dG, and the whole-sequence
    GEMMs run after it on all threads."""
    x, w_ih, w_hh = _writeable(seq.x), _writeable(seq.w_ih), _writeable(seq.w_hh)
    T, B, I = x.shape
    GH, H = w_hh.shape
    dtype = x.dtype
    gru = seq.cell == "gru"          # (linear before reset: dG differs on the h side, gate n)
    # column sums of dG for the biases: dG_i's (both biases but the GRU's b_hh), dG_h's for the GRU's b_hh
    n_sums = 0 if seq.b_ih is None and seq.b_hh is None else 2 if gru else 1
    # the whole-sequence products inside the kernel, chunk by chunk: with several workers, or where
    # each product would run on one thread anyway (their launches after the kernel cost more)
    chunked = workers > 1 or T * B * GH * max(I, H) < config.PARALLEL_MIN_GEMM_MACS
    steps = T
    if chunked:                      # (>= 2 steps, or all: a step reads its successor's slot of dgh)
        steps = min(T, max(2, config.chunk_steps(T, B, GH, dtype.itemsize)))
    plan = _backward_plan(seq.cell, seq.variant, T, B, I, H, dtype, chunked, units, steps, n_sums)
    empty = plan.empty
    h_states, gates = saved["h_states"], saved["gates"]
    unused = plan.unused
    c_states = saved["c_states"] if saved["c_states"] is not None else unused.states
    dgi = empty(plan.dg, dtype)
    dgh = empty(plan.dg, dtype) if gru else dgi
    dc = np.zeros((B, H), dtype) if dc_n is None else dc_n.copy()
    dh0 = empty((B, H), dtype)
    if plan.chunked:
        dx, dw_ih, dw_hh = empty((T, B, I), dtype), empty((GH, I), dtype), empty((GH, H), dtype)  # (the kernel's)
        db = np.zeros((n_sums, GH), np.float64)
        panels_ih, panels_x, panels_h = empty(plan.panels_ih, dtype), empty(plan.panels_x, dtype), empty(
            plan.panels_h, dtype)
    else:
        panels_ih = panels_x = panels_h = dx = unused.panels     # (the products come after the kernel)
        dw_ih, dw_hh, db = unused.rows, unused.rows, unused.sums
    batch_rows = _batch_rows(B, H, units, workers, step_weight_bytes=GH * H * dtype.itemsize)
    _launch(kernels.backward, workers, plan.kind, w_hh, empty(plan.hh_columns, dtype), dy, dh_n, saved["lengths"],
            gates, h_states, c_states, saved["ghn"], dgi, dgh, np.zeros((B, H), dtype), dc, dh0, plan.chunked, x,
            w_ih, panels_ih, panels_x, panels_h, dx, dw_ih, dw_hh, db, n_sums, units,
            batch_rows, np.zeros(plan.n_claims, np.int64), np.zeros(T + 2, np.int64),
            np.zeros(plan.n_product_claims, np.int64) if plan.chunked else unused.counters,
            np.zeros(plan.n_product_done, np.int64) if plan.chunked else unused.counters)
    if plan.chunked:
        sums = list(db.astype(dtype))        # (one conversion, then its rows)
    else:           # (the h-side gradients differ from the x-side ones only for the GRU's gate n)
        rows_i, rows_h = dgi.reshape(T * B, GH), dgh.reshape(T * B, GH)
        dw_hh = _gemm(rows_h, h_states[:T].reshape(T * B, H), a_transposed=True)
        dx = _gemm(rows_i, w_ih).reshape(T, B, I)
        dw_ih = _gemm(rows_i, x.reshape(T * B, I), a_transposed=True)
        sums = [rows.sum(axis=0) for rows in (rows_i, rows_h)[:n_sums]]
    db_ih = sums[0] if seq.b_ih is not None else None
    db_hh = None if seq.b_hh is None else sums[1] if gru else sums[0].copy() if db_ih is not None else sums[0]
    return dx, dh0, dc if seq.cell == "lstm" else None, dw_ih, dw_hh, db_ih, db_hh, None   # no projection (w_hr)


# LSTM with projections (w_hr (P, H), torch's proj_size): two phases a step (kernels.forward_lstm_projected),
# the input projection one GEMM before the kernel, the whole-sequence GEMMs after the backward's

def _projected_plan(seq, chunks_per_thread):
    H, P = seq.H, seq.P
    return _plan(seq.B * 5 * H * P, seq.dtype, chunks_per_thread, H, P)     # 4H x P and P x H a row


def _phase_counters(phases, H, units_h, P, units_p):
    """Claim counters for ``phases`` phases of up to all chunks of H and of P, and a done counter a phase."""
    return _counters(phases, H, units_h, extra_claims=phases * -(-P // units_p))


def _forward_projected(seq, save):
    T, B, I, H, P, dtype = seq.T, seq.B, seq.I, seq.H, seq.P, seq.dtype
    workers, units_h, units_p = _projected_plan(seq, config.FORWARD_CHUNKS_PER_THREAD)
    hh = PackedSlot(seq, "numba rows w_hh", lambda: _panels(4 * _tiles(H, dtype), P, dtype))
    hr = PackedSlot(seq, "numba rows w_hr", lambda: _panels(_tiles(P, dtype), H, dtype))
    ih = PackedSlot(seq, "numba gemm w_ih^T", lambda: _panels_of(seq.w_ih, True))
    xp = _gemm(seq.x.reshape(T * B, I), seq.w_ih, seq.b_ih, b_transposed=True, panels=ih.buffer,
               panels_ready=ih.ready).reshape(T, B, 4 * H)
    b_hh = _writeable(seq.b_hh) if seq.b_hh is not None else np.zeros(4 * H, dtype)
    lengths = _writeable(seq.lengths) if seq.lengths is not None else _steps_of_length(B, T)
    S = T + 1 if save else 2
    h_states, c_states = pooled_empty((S, B, P), dtype), pooled_empty((S, B, H), dtype)
    h_states[0], c_states[0] = seq.h0, seq.c0
    ms = pooled_empty((T if save else 1, B, H), dtype)
    gates = pooled_empty((T if save else 1, B, 4 * H), dtype)
    y = pooled_empty((T, B, P), dtype)
    claims, done = _phase_counters(2 * T + 1, H, units_h, P, units_p)
    _launch(kernels.forward_lstm_projected, workers, xp, _writeable(seq.w_hh), hh.buffer, hh.ready,
            _writeable(seq.w_hr), hr.buffer, hr.ready, b_hh, h_states, c_states, ms, lengths, y, gates, units_h,
            units_p, claims, done)
    for slot in (ih, hh, hr):
        slot.keep()
    saved = dict(h_states=h_states, c_states=c_states, gates=gates, ghn=None, ms=ms, lengths=lengths) if save else None
    return y, h_states[T % S].copy(), c_states[T % S].copy(), saved


def _backward_projected(seq, saved, dy, dh_n, dc_n):
    T, B, H, P, dtype = seq.T, seq.B, seq.H, seq.P, seq.dtype
    workers, units_h, units_p = _projected_plan(seq, config.BACKWARD_CHUNKS_PER_THREAD)
    dg, dhs = pooled_empty((T, B, 4 * H), dtype), pooled_empty((T, B, P), dtype)
    dc = np.zeros((B, H), dtype) if dc_n is None else dc_n.copy()
    dh0 = pooled_empty((B, P), dtype)
    claims, done = _phase_counters(2 * T + 2, H, units_h, P, units_p)
    _launch(kernels.backward_lstm_projected, workers, _writeable(seq.w_hh), _panels(_tiles(P, dtype), 4 * H, dtype),
            _writeable(seq.w_hr), _panels(_tiles(H, dtype), P, dtype), dy, dh_n, saved["lengths"], saved["gates"],
            saved["c_states"], dg, dhs, np.empty((B, P), dtype), np.empty((B, H), dtype), np.zeros((1, B, H), dtype),
            dc, dh0, units_h, units_p, claims, done)
    rows = dg.reshape(T * B, 4 * H)
    dx, dw_ih, db_ih, db_hh = _input_side_grads(seq, rows)
    dw_hh = _gemm(rows, saved["h_states"][:T].reshape(T * B, P), a_transposed=True)
    dw_hr = _gemm(dhs.reshape(T * B, P), saved["ms"].reshape(T * B, H), a_transposed=True)
    return dx, dh0, dc, dw_ih, dw_hh, db_ih, db_hh, dw_hr
