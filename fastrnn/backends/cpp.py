"""C++ backend ("cpp"): the header-only kernels of kernels/include/fastrnn/ through fastrnn._ext.

    forward:  one team of threads per call (kernels/include/fastrnn/detail/team.h): each thread packs
              the W_ih and W_hh rows of its hidden-unit tiles once; then per chunk of steps (~8 MiB of
              gates; inference keeps one chunk, not T steps) the input projection x W_ih^T + b_ih, then
              per step h_{t-1} W_hh^T + b_hh and the cell's pointwise update, one barrier a step (two
              for the GRU of Cho et al.)
    backward: the reverse loop in the same form (per pair of tiles dh_t = dG_{t+1} W_hh, then the pointwise
              backward: one barrier a step; Cho's GRU and projections: more phases), in
              chunks of steps from the last; after each chunk, on that team, its rows of dx = dG W_ih and
              its share of dW_ih = dG^T x, dW_hh = dG_h^T h_prev and the bias sums (dG: a ring of one chunk)
Equations and shapes: kernels/include/fastrnn/cells.h and sequence.h. Everything, GEMMs included, runs
in C++ on one team: NumPy's BLAS threads spinning beside it would slow both (see numba_cpu.py).
Weights are packed per call (one pass over them, against T in the loop), so in-place updates between
calls are always seen; a call on a PackedWeights snapshot (fastrnn.pack_weights) keeps its packed
weights there for the later ones (fastrnn::PackedForward). The binding takes the results' arrays of 1 MiB
or more (outputs, tapes, gradients) from the pool of reused buffers (_arrays.pooled_empty).
AVX-512, AVX2+FMA or a portable path, chosen at run time (``_ext.isa()``).
LSTM projections (w_hr, torch's proj_size) run here too: a step then has a second phase, h_t = m_t W_hr^T.
Check: pytest tests -k cpp; time: fastrnn bench --backends cpp,numba.
"""
from __future__ import annotations

import functools
import os

from .. import _ext, config
from .._arrays import aligned_empty, pooled_empty
from .._packed import PackedSlot
from ._workers import split_step
from ..cells import SPECS

# fastrnn::Cell codes (kernels/include/fastrnn/detail/kernels.h)
_CELL = {("lstm", None): 0, ("gru", True): 1, ("gru", False): 2, ("rnn", "tanh"): 3, ("rnn", "relu"): 4}


# the binding's large results (outputs, tapes, gradients) come from the pool of reused buffers (passed
# by position: pybind11's keyword matching cost ~1 us a call)
_OUTPUTS = (pooled_empty, config.POOL_MIN_BYTES)


def _cell(seq) -> int:
    return _CELL[seq.cell, seq.variant]


def _threads(seq) -> int:
    """One thread when a step is too small to split (a barrier per step would cost more), else all."""
    if not split_step(seq.B * SPECS[seq.cell].num_gates * seq.H * seq.H):
        return 1
    return config.THREADS or _default_threads()


@functools.lru_cache(maxsize=None)
def _default_threads() -> int:
    """OMP_NUM_THREADS, else the cores this process may run on: read on the first call that needs them
    (reading them took 1.5 us a call); later changes go through config.THREADS (fastrnn bench --threads)."""
    raw = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def forward(seq, save):
    # the packed weights: this call's own (None: packed inside), or a PackedWeights snapshot's (_packed.py)
    slot = None if seq.packed is None else PackedSlot(seq, "cpp forward", lambda: aligned_empty(
        _ext.packed_forward_size(_cell(seq), seq.x, seq.w_ih, seq.w_hh, seq.w_hr), seq.dtype))
    y, h_n, c_n, saved = _ext.forward(_cell(seq), seq.x, seq.w_ih, seq.w_hh, seq.b_ih, seq.b_hh, seq.h0, seq.c0,
                                      seq.lengths, save, _threads(seq), seq.w_hr, slot and slot.buffer,
                                      bool(slot and slot.ready), *_OUTPUTS)
    if slot is not None:
        slot.keep()
    return y, h_n, c_n, saved


def backward(seq, saved, dy, dh_n, dc_n):
    return _ext.backward(_cell(seq), seq.x, seq.w_ih, seq.w_hh, seq.b_ih, seq.b_hh, seq.lengths, saved, dy, dh_n,
                         dc_n, _threads(seq), seq.w_hr, *_OUTPUTS)
