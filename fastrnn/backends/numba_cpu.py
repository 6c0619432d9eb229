"""Numba CPU backend ("numba"): fused persistent kernels for the recurrence, BLAS for the rest.

    forward:  xp = x W_ih^T + b_ih                     one GEMM over all T*B rows (NumPy's BLAS)
              kernel: every step's recurrent product and cell pointwise, one parallel region
    backward: kernel: the reverse loop, carrying dh (and dc), reusing the saved activations
              dx = dG_i W_ih, dW_ih = dG_i^T x, dW_hh = dG_h^T h_prev, biases: whole-sequence GEMMs

The forward reads w_hh in PyTorch's layout as given (its tiles gather the gate rows of a chunk
of hidden units), so no per-call packing is needed; backward transposes w_hh once per call
(one pass over the weights, against T passes in the reverse loop). Kernels are compiled on
first use and cached on disk (see _numba_cpu_kernels.py for the equations and the work split).
"""
from __future__ import annotations

import threading

import numba
import numpy as np

from .. import config
from . import _numba_cpu_kernels as kernels

_KIND = {("lstm", None): kernels.LSTM, ("gru", True): kernels.GRU,
         ("rnn", "tanh"): kernels.RNN_TANH, ("rnn", "relu"): kernels.RNN_RELU}
_launch_lock = threading.Lock()


def _plan(B, H, G):
    """(workers, units per chunk) for one call: one worker for small steps, else all threads."""
    threads = config.THREADS or numba.get_num_threads()
    if threads <= 1 or B * G * H * H < config.PARALLEL_MIN_MACS:
        return 1, H
    chunks = threads * config.CHUNKS_PER_THREAD
    units = max(4, -(-H // chunks))
    units = -(-units // 4) * 4          # whole 4-row tiles for any G
    return threads, units


def _counters(phases, H, units):
    n_chunks = -(-H // units)
    return np.zeros(phases * n_chunks, np.int64), np.zeros(phases, np.int64)


def _launch(kernel, *args):
    # The workqueue threading layer (used when neither OpenMP nor TBB is present) must not be
    # entered from two Python threads at once; OpenMP and TBB can.
    if numba.config.THREADING_LAYER == "workqueue" or _threading_layer() == "workqueue":
        with _launch_lock:
            kernel(*args)
    else:
        kernel(*args)


def _threading_layer():
    try:
        return numba.threading_layer()
    except ValueError:     # no parallel kernel has run yet: the first launch picks the layer
        return None


def _dummy(dtype):
    return np.empty((1, 1, 1), dtype)


def forward(seq, save):
    T, B, I, H, dtype = seq.T, seq.B, seq.I, seq.H, seq.dtype
    G = seq.w_hh.shape[0] // H
    xp = np.dot(seq.x.reshape(T * B, I), seq.w_ih.T)
    if seq.b_ih is not None:
        xp += seq.b_ih
    xp = xp.reshape(T, B, G * H)
    b_hh = seq.b_hh if seq.b_hh is not None else np.zeros(G * H, dtype)
    lengths = seq.lengths if seq.lengths is not None else np.full(B, T, np.int64)
    S = T + 1 if save else 2
    h_states = np.empty((S, B, H), dtype)
    h_states[0] = seq.h0
    y = np.empty((T, B, H), dtype)
    workers, units = _plan(B, H, G)
    cho = seq.cell == "gru" and not seq.variant
    c_states = ghn = None
    if cho:
        gates = np.empty((T if save else 1, B, G * H), dtype)
        claims, done = _counters(2 * T, H, units)
        _launch(kernels.forward_gru_cho, xp, seq.w_hh, b_hh, h_states, lengths, y, gates,
                np.empty((B, H), dtype), workers, units, claims, done)
    else:
        if seq.cell == "lstm":
            c_states = np.empty((S, B, H), dtype)
            c_states[0] = seq.c0
        gates = np.empty((T, B, G * H), dtype) if save and seq.cell != "rnn" else _dummy(dtype)
        ghn = np.empty((T, B, H), dtype) if save and seq.cell == "gru" else _dummy(dtype)
        claims, done = _counters(T, H, units)
        _launch(kernels.forward, _KIND[seq.cell, seq.variant], xp, seq.w_hh, b_hh, h_states,
                c_states if c_states is not None else _dummy(dtype), lengths, y, gates, ghn, save,
                workers, units, claims, done)
    h_n = h_states[T % S].copy()
    c_n = None if c_states is None else c_states[T % S].copy()
    saved = dict(h_states=h_states, c_states=c_states, gates=gates, ghn=ghn, lengths=lengths) if save else None
    return y, h_n, c_n, saved


def backward(seq, saved, dy, dh_n, dc_n):
    T, B, I, H, dtype = seq.T, seq.B, seq.I, seq.H, seq.dtype
    G = seq.w_hh.shape[0] // H
    has_dy = dy is not None
    dy = dy if has_dy else _dummy(dtype)
    dh_n = dh_n if dh_n is not None else np.zeros((B, H), dtype)
    h_states, lengths, gates = saved["h_states"], saved["lengths"], saved["gates"]
    dh_direct = np.zeros((B, H), dtype)
    dh0 = np.empty((B, H), dtype)
    workers, units = _plan(B, H, G)
    dc0 = None
    if seq.cell == "gru" and not seq.variant:       # Cho et al.: two phases per step
        dg_rz = np.empty((T, B, 2 * H), dtype)
        da_n = np.empty((T, B, H), dtype)
        claims, done = _counters(2 * T + 1, H, units)
        _launch(kernels.backward_gru_cho, np.ascontiguousarray(seq.w_hh[:2 * H].T),
                np.ascontiguousarray(seq.w_hh[2 * H:].T), dy, has_dy, dh_n, lengths, gates, h_states,
                dg_rz, da_n, dh_direct, dh0, workers, units, claims, done)
        dgi = np.concatenate([dg_rz, da_n], axis=2).reshape(T * B, G * H)
        h_prev = h_states[:T].reshape(T * B, H)
        r_h_prev = gates[:, :, :H].reshape(T * B, H) * h_prev
        dw_hh = np.concatenate([np.dot(dg_rz.reshape(T * B, 2 * H).T, h_prev),
                                np.dot(da_n.reshape(T * B, H).T, r_h_prev)])
        dgh = dgi
    else:
        dgi = np.empty((T, B, G * H), dtype)
        dgh = np.empty((T, B, G * H), dtype) if seq.cell == "gru" else dgi
        c_states = saved["c_states"]
        dc = np.zeros((B, H), dtype) if dc_n is None else dc_n.copy()
        claims, done = _counters(T + 1, H, units)
        _launch(kernels.backward, _KIND[seq.cell, seq.variant], np.ascontiguousarray(seq.w_hh.T), dy, has_dy,
                dh_n, lengths, gates, h_states, c_states if c_states is not None else _dummy(dtype),
                saved["ghn"], dgi, dgh, dh_direct, dc, dh0, workers, units, claims, done)
        dgi, dgh = dgi.reshape(T * B, G * H), dgh.reshape(T * B, G * H)
        dw_hh = np.dot(dgh.T, h_states[:T].reshape(T * B, H))
        if seq.cell == "lstm":
            dc0 = dc
    dx = np.dot(dgi, seq.w_ih).reshape(T, B, I)
    dw_ih = np.dot(dgi.T, seq.x.reshape(T * B, I))
    db_ih = dgi.sum(axis=0) if seq.b_ih is not None else None
    db_hh = dgh.sum(axis=0) if seq.b_hh is not None else None
    return dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh
