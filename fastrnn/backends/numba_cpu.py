"""Numba CPU backend ("numba"): fused persistent kernels for the recurrence, tiled GEMMs for the rest.

    forward:  kernel, one parallel region: xp = x W_ih^T + b_ih, a GEMM per chunk of ~8 MiB of
              steps into a ring, then each step's recurrent product and cell pointwise
              (one worker: the GEMM over all T*B rows first, on all threads; few rows,
              FASTRNN_FUSE_INPUT_ROWS: each step's input product inside the step)
    LSTM with projections (w_hr): the input projection one GEMM first, then a kernel of two phases a
              step (gates, c_t and m_t over chunks of the H units; h_t = m_t W_hr^T over chunks of the
              P outputs); its backward mirrors them, the whole-sequence GEMMs after it
    backward: kernel, one parallel region: the reverse loop, carrying dh (and dc), reusing the
              saved activations, in chunks of ~8 MiB of dG (a ring), the last chunk first; after
              each chunk its rows of dx = dG_i W_ih and its share of dW_ih = dG_i^T x,
              dW_hh = dG_h^T h_prev (op(B) packed into vector panels) and of the biases' column
              sums of dG (one worker, and the GRU of Cho et al.: the GEMMs over all T*B rows after
              the kernel, on all threads)
No library call is made per step, and no BLAS call at all: NumPy's OpenBLAS threads and Numba's
OpenMP threads, alternating on two cores, spun against each other and slowed both tenfold.

The recurrent kernels pack W_hh once per call (its rows forward, its columns backward) into
panels of one vector of units, in their first phase, each worker the panels of its own chunks
(one pass over the weights, against T passes in the loop; so weights updated in place between
calls are always seen); the GEMMs pack op(B) once per call (x W_ih^T reads W_ih's rows straight
into the panels). A call on a PackedWeights snapshot (fastrnn.pack_weights) keeps its forward's
packed W_hh and W_ih there, and later calls skip the packing (_packed.py). Arrays of 1 MiB or more
(results, tapes, work arrays) come from the pool of reused buffers (_arrays.pooled_empty): their fresh
pages would fault on every call. Kernels are compiled on first use and cached on disk (see
_numba_cpu_kernels.py for the equations and the work split).
"""
from __future__ import annotations

import os
import threading

import numba
import numpy as np

from .. import config
from .._arrays import pooled_empty
from .._packed import PackedSlot
from . import _numba_cpu_kernels as kernels
from ._numba_simd import VECTOR_BYTES
from ._workers import split_step

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


def _gemm_panels(K, N, dtype):
    """Room for a K x N operand packed into panels of two vectors of columns (_numba_tiles.pack_gemm_panels)."""
    return pooled_empty((N // (2 * _lanes(dtype)), K, 2 * _lanes(dtype)), dtype)


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
            np.zeros(max(kernels.pack_items(panels), 1), np.int64), np.zeros(kernels.gemm_chunks(M, N), np.int64),
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


def _unused(dtype, shape=(1, 1, 1)):
    """A stand-in for a kernel argument this call's path never touches (Numba needs an array of the
    right type there): one shared array per dtype and shape, made once (a fresh one cost ~0.3 us)."""
    key = (np.dtype(dtype), shape)
    arr = _UNUSED.get(key)
    if arr is None:
        arr = _UNUSED.setdefault(key, np.empty(shape, dtype))
    return arr


_UNUSED: dict = {}
_NO_PANELS = (0, 0, 1)     # the shape of _unused panels (no panels: the path packs nothing)


def _steps_of_length(B, T):
    # every sequence of the batch T steps long (np.full took 0.6 us more)
    lengths = np.empty(B, np.int64)
    lengths.fill(T)
    return lengths


def _writeable(arr):
    # Numba compiles a separate kernel for read-only arrays (seconds); a copy costs microseconds
    return arr if arr is None or arr.flags.writeable else arr.copy()


def forward(seq, save):
    if seq.w_hr is not None:
        return _forward_projected(seq, save)
    T, B, I, H, dtype = seq.T, seq.B, seq.I, seq.H, seq.dtype
    w_hh, b_hh = _writeable(seq.w_hh), _writeable(seq.b_hh)
    G = seq.w_hh.shape[0] // H
    cho = seq.cell == "gru" and not seq.variant
    # small problems: the input product inside the recurrent kernel (see kernels.forward), while
    # its re-reads of W_ih every step cost less than a separate GEMM's launch (config.py)
    fused = (not cho and T * B <= config.FUSE_INPUT_ROWS
             and (T - 1) * seq.w_ih.nbytes <= config.FUSE_INPUT_REREAD_BYTES * B)
    tiles = _tiles(H, dtype)
    # W_hh's rows and W_ih's (x W_ih^T's GEMM panels, or rows when fused): packed by this call,
    # or taken packed from the PackedWeights snapshot the call runs on (_packed.py)
    hh = PackedSlot(seq, "numba rows w_hh", lambda: _panels(G * tiles, H, dtype))
    workers, units = _plan(B * G * H * H, dtype, config.FORWARD_CHUNKS_PER_THREAD, H)
    if fused:
        ih = PackedSlot(seq, "numba rows w_ih", lambda: _panels(G * tiles, I, dtype))
    else:
        ih = PackedSlot(seq, "numba gemm w_ih^T", lambda: _panels_of(seq.w_ih, True))
    # The input projection: by the kernel, a chunk of steps at a time into a ring (several workers;
    # kernels.forward), or one GEMM over the whole sequence first (one worker, whose kernel would
    # compute it on one thread; the GRU of Cho et al.)
    ring = not fused and not cho and workers > 1
    if fused:
        xp = pooled_empty((1, B, G * H), dtype)
    elif ring:
        xp = pooled_empty((config.chunk_steps(T, B, G * H, np.dtype(dtype).itemsize), B, G * H), dtype)
    else:
        xp = _gemm(seq.x.reshape(T * B, I), seq.w_ih, seq.b_ih, b_transposed=True, panels=ih.buffer,
                   panels_ready=ih.ready).reshape(T, B, G * H)
    b_hh = b_hh if b_hh is not None else np.zeros(G * H, dtype)
    lengths = _writeable(seq.lengths) if seq.lengths is not None else _steps_of_length(B, T)
    S = T + 1 if save else 2
    h_states = pooled_empty((S, B, H), dtype)
    h_states[0] = seq.h0
    y = pooled_empty((T, B, H), dtype)
    c_states = ghn = None
    if cho:
        gates = pooled_empty((T if save else 1, B, G * H), dtype)
        claims, done = _counters(2 * T + 1, H, units)
        _launch(kernels.forward_gru_cho, workers, xp, w_hh, hh.buffer, hh.ready, b_hh, h_states, lengths, y,
                gates, pooled_empty((B, H), dtype), units, claims, done)
    else:
        if seq.cell == "lstm":
            c_states = pooled_empty((S, B, H), dtype)
            c_states[0] = seq.c0
        # saved activations: all T steps for backward, else one scratch slot the kernel overwrites
        slots = T if save else 1
        gates = pooled_empty((slots, B, G * H), dtype) if seq.cell != "rnn" else _unused(dtype)
        ghn = pooled_empty((slots, B, H), dtype) if seq.cell == "gru" else _unused(dtype)
        b_ih = _writeable(seq.b_ih) if seq.b_ih is not None else np.zeros(G * H, dtype)
        if ring:    # counters of the GEMM: packing items (after the steps' claims), items per chunk of steps
            pack_items = kernels.pack_items(ih.buffer)
            chunks = -(-T // xp.shape[0])
            proj_claims = np.zeros(chunks * kernels.gemm_chunks(xp.shape[0] * B, G * H), np.int64)
            proj_done = np.zeros(chunks, np.int64)
        else:
            pack_items, proj_claims, proj_done = 0, _unused(np.int64, (1,)), _unused(np.int64, (1,))
        claims, done = _counters(T + 1, H, units, extra_claims=pack_items)
        panels_ih = ih.buffer if fused else _unused(dtype, _NO_PANELS)
        gemm_ih = ih.buffer if ring else _unused(dtype, _NO_PANELS)
        projection = kernels.PROJECT_FUSED if fused else kernels.PROJECT_CHUNKS if ring else kernels.PROJECTED
        _launch(kernels.forward, workers, _KIND[seq.cell, seq.variant], _writeable(seq.x), _writeable(seq.w_ih),
                panels_ih, gemm_ih, ih.ready, b_ih, projection, xp, w_hh, hh.buffer, hh.ready, b_hh,
                h_states, c_states if c_states is not None else _unused(dtype), lengths, y, gates, ghn, units, claims,
                done, proj_claims, proj_done)
    ih.keep()
    hh.keep()
    h_n = h_states[T % S].copy()
    c_n = None if c_states is None else c_states[T % S].copy()
    saved = dict(h_states=h_states, c_states=c_states, gates=gates, ghn=ghn, lengths=lengths) if save else None
    return y, h_n, c_n, saved


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


def _backward_fused(seq, saved, dy, dh_n, dc_n, workers, units):
    """LSTM, GRU (linear before reset) and RNN. Several workers: one kernel runs the reverse loop in
    chunks of steps (config.chunk_steps: ~8 MiB of dG, at least 2 steps), the last chunk first, and
    after each chunk its rows of dx and its share of dW_ih, dW_hh and the bias gradients, so dG is a
    ring of one chunk (a T-long dG's fresh pages cost more than the backward's pointwise work at
    T = 512, B = 64; the C++ backward does the same). One worker: the kernel keeps all T steps of dG,
    and the whole-sequence GEMMs run after it on all threads."""
    T, B, I, H, dtype = seq.T, seq.B, seq.I, seq.H, seq.dtype
    G = seq.w_hh.shape[0] // H
    gru = seq.cell == "gru"          # (linear before reset: dG differs on the h side, gate n)
    h_states, lengths, gates = saved["h_states"], saved["lengths"], saved["gates"]
    c_states = saved["c_states"] if saved["c_states"] is not None else _unused(dtype)
    chunked = workers > 1
    steps = max(2, config.chunk_steps(T, B, G * H, np.dtype(dtype).itemsize)) if chunked else T
    steps = min(T, steps)            # (>= 2 steps, or all: a step reads its successor's slot of dgh)
    dgi = pooled_empty((steps, B, G * H), dtype)
    dgh = pooled_empty((steps, B, G * H), dtype) if gru else dgi
    dc = np.zeros((B, H), dtype) if dc_n is None else dc_n.copy()
    dh0 = pooled_empty((B, H), dtype)
    x, w_ih = _writeable(seq.x), _writeable(seq.w_ih)
    # column sums of dG for the biases: dG_i's (both biases but the GRU's b_hh), dG_h's for the GRU's b_hh
    n_sums = 0 if seq.b_ih is None and seq.b_hh is None else 2 if gru else 1
    if chunked:
        dx = pooled_empty((T, B, I), dtype)
        dw_ih, dw_hh = pooled_empty((G * H, I), dtype), pooled_empty((G * H, H), dtype)   # (set by the kernel)
        db = np.zeros((n_sums, G * H), np.float64)
        panels_ih = _panels_of(w_ih, False)
        panels_x, panels_h = _gemm_panels(steps * B, I, dtype), _gemm_panels(steps * B, H, dtype)
        chunks = -(-T // steps)
        pack_items = kernels.pack_items(panels_ih)
        block = max(kernels.chunk_product_items(steps * B, I, G * H, H, n_sums),
                    kernels.pack_items(panels_x) + kernels.pack_items(panels_h))
        product_claims, product_done = np.zeros(2 * chunks * block, np.int64), np.zeros(2 * chunks, np.int64)
    else:
        dx, dw_ih, dw_hh, db = np.empty((0, 0, I), dtype), np.empty((0, I), dtype), np.empty((0, H), dtype), None
        panels_ih = panels_x = panels_h = _unused(dtype, _NO_PANELS)
        pack_items, product_claims, product_done = 0, _unused(np.int64, (1,)), _unused(np.int64, (1,))
    claims, done = _counters(T + 2, H, units, extra_claims=pack_items)
    _launch(kernels.backward, workers, _KIND[seq.cell, seq.variant], _writeable(seq.w_hh),
            _panels(-(-H // _lanes(dtype)), G * H, dtype), dy, dh_n, lengths, gates, h_states, c_states,
            saved["ghn"], dgi, dgh, np.zeros((B, H), dtype), dc, dh0, chunked, x, w_ih, panels_ih, panels_x, panels_h,
            dx, dw_ih, dw_hh, db if db is not None else np.zeros((0, 0), np.float64), n_sums, units, claims, done,
            product_claims, product_done)
    if chunked:
        sums = list(db.astype(dtype))        # (one conversion, then its rows)
    else:           # (the h-side gradients differ from the x-side ones only for the GRU's gate n)
        rows_i, rows_h = dgi.reshape(T * B, G * H), dgh.reshape(T * B, G * H)
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
