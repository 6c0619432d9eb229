"""The functional API in the flat form frameworks need: the forward's tape as a tuple of arrays.

A torch.library custom op may only return tensors, a jax.custom_vjp only keep arrays as residuals, and
both must know every output's shape before anything runs (fake tensors, abstract evaluation). So each
backend's private record (``Tape.saved``) is listed here as named arrays with shapes that follow from
the problem's sizes alone, and rebuilt from them for backward, which then reuses them (the forward is
never recomputed). One layer, one direction, time-major:

    name = resolve_backend(form, backend, T, B, H, gpu=False, projections=False, training=True)
    shapes = saved_shapes(name, form, T, B, H, P)     # [(T + 1, B, H), ...]: no computation (P: see below)
    y, h_n, c_n, saved = forward(form, name, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, save=True)
    grads = backward(form, name, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, saved, dy, dh_n, dc_n)

x (T, B, I); w_ih (G*H, I); w_hh (G*H, P); h0 (B, P); c0 (B, H) (LSTM, else None); w_hr (P, H) or None
(then P = H, and ``saved_shapes`` takes P=None); lengths (B,) or None; y (T, B, P); saved: arrays of x's dtype in ``saved_shapes`` order (empty
unless ``save``); grads: :class:`~fastrnn.LSTMGrads` for every cell (c0, w_hr None where absent).
``form`` names the cell and its option in one string (FORMS). Arrays of any kind the functional API
takes go in, and results come back as the same kind (torch tensors in, torch tensors out). The lengths
kept inside each backend's record are re-derived from ``lengths``, so only float arrays are carried.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import api, backends
from ._arrays import as_kind, module_of
from ._types import Tape
from .cells import SPECS

# form -> (cell, variant as the functional API takes it)
FORMS = {"lstm": ("lstm", None), "gru": ("gru", True), "gru_cho": ("gru", False),
         "rnn_tanh": ("rnn", "tanh"), "rnn_relu": ("rnn", "relu")}


def cell_form(form: str):
    if form not in FORMS:
        raise ValueError(f"form must be one of {sorted(FORMS)}, got {form!r}")
    return FORMS[form]


def resolve_backend(form, backend, T, B, H, *, gpu=False, projections=False, training=True) -> str:
    """The backend a call of these sizes runs on ("auto" resolved: a pure function of the sizes and the
    environment, so a forward and its backward, or a fake-tensor trace, all agree)."""
    cell_form(form)
    return backends.resolve(backend, gpu=gpu, projections=projections, shape=(T, B, H), training=training)[0]


# ----------------------------------------------------------------------------- the schema, per backend

class _Schema(NamedTuple):
    layout: Callable      # (cell, variant, T, B, H, P) -> {name: shape}, in carrying order (P None: no w_hr)
    flatten: Callable     # (seq, saved) -> {name: array}
    record: Callable      # (seq, {name: array}) -> the backend's saved record


def _state_and_gates(cell, variant, T, B, H, P, always_gates):
    """The fused kernels' records: h (and c) at every step, each step's gate values (and GRU's h W_hn + b_hn;
    with projections, m = o * tanh(c) of every step)."""
    layout = {"h": (T + 1, B, H if P is None else P)}
    if cell == "lstm":
        layout["c"] = (T + 1, B, H)
    if always_gates or cell != "rnn":
        layout["gates"] = (T, B, SPECS[cell].num_gates * H)
    if cell == "gru" and variant:
        layout["ghn"] = (T, B, H)
    if P is not None:
        layout["m"] = (T, B, H)
    return layout


def _lengths_or_full(seq, dtype):
    return np.array(seq.lengths if seq.lengths is not None else np.full(seq.B, seq.T), dtype=dtype)


# numba: dict(h_states, c_states, gates, ghn, lengths, and ms with projections); absent entries are None or a
# (1, 1, 1) placeholder
_NUMBA_KEYS = {"h": "h_states", "c": "c_states", "gates": "gates", "ghn": "ghn", "m": "ms"}


def _numba_record(seq, arrays):
    placeholder = np.empty((1, 1, 1), seq.dtype)
    cho = seq.cell == "gru" and not seq.variant
    # Numba compiles separate kernels for read-only arrays (JAX hands those out): writeable copies instead
    saved = {"c_states": None, "gates": placeholder, "ghn": None if cho else placeholder,
             **{_NUMBA_KEYS[n]: a if a.flags.writeable else a.copy() for n, a in arrays.items()}}
    saved["lengths"] = _lengths_or_full(seq, np.int64)
    return saved


# cpp: the tuple (h, c, gates, ghn, m) of fastrnn._ext, None where the cell has none
_CPP_ORDER = ("h", "c", "gates", "ghn", "m")

# reference: one dict per step; every float entry is stacked over the steps, "active" re-derived
_REFERENCE_KEYS = {"lstm": ("i", "f", "g", "o", "c", "m", "c_prev"), "gru": ("r", "z", "n"), "rnn": ()}


def _reference_layout(cell, variant, T, B, H, P):
    keys = _REFERENCE_KEYS[cell] + (("hn",) if cell == "gru" and variant else ())
    layout = {key: (T, B, H) for key in keys}
    layout.update(h_prev=(T, B, H if P is None else P), h_new=(T, B, H if P is None else P))
    return layout


def _reference_record(seq, arrays):
    from .backends import reference
    absent = {"c_prev": None, "hn": None}
    return [{**absent, **{key: a[t] for key, a in arrays.items()}, "active": reference._active_mask(seq, t)}
            for t in range(seq.T)]


# cuda: dict(seq, hs, cs, acts, rhs, ms, lengths); acts holds the kernel's saved activations per unit
def _cuda_layout(cell, variant, T, B, H, P):
    from .backends import _cuda_kernels, numba_cuda
    saved_per_unit = _cuda_kernels.NUM_SAVED[numba_cuda._CODES[cell, variant]]
    layout = {"hs": (T + 1, B, H if P is None else P)}
    if cell == "lstm":
        layout["cs"] = (T + 1, B, H)
    if saved_per_unit:
        layout["acts"] = (T, B, saved_per_unit * H)
    if cell == "gru" and not variant:
        layout["rhs"] = (T, B, H)
    if P is not None:
        layout["ms"] = (T + 1, B, H)      # m_t = o * tanh(c_t) in slot t + 1
    return layout


def _cuda_record(seq, arrays):
    from .backends import numba_cuda
    xp = numba_cuda.xp_module()
    if numba_cuda._on_host(seq):
        seq = numba_cuda._to_device(xp, seq)
    placeholder = xp.empty((1, 1, 1), seq.dtype)     # what the kernels get for a record the cell lacks
    return {"cs": placeholder, "acts": placeholder, "rhs": placeholder, "ms": None,
            **{n: xp.asarray(a) for n, a in arrays.items()},
            "seq": seq, "lengths": xp.asarray(_lengths_or_full(seq, np.int32))}


_SCHEMAS = {
    "numba": _Schema(lambda cell, variant, T, B, H, P: _state_and_gates(cell, variant, T, B, H, P, False),
                     lambda seq, saved: {n: saved.get(_NUMBA_KEYS[n]) for n in _NUMBA_KEYS}, _numba_record),
    "cpp": _Schema(lambda cell, variant, T, B, H, P: _state_and_gates(cell, variant, T, B, H, P, True),
                   lambda seq, saved: dict(zip(_CPP_ORDER, saved)),
                   lambda seq, arrays: tuple(arrays.get(n) for n in _CPP_ORDER)),
    "reference": _Schema(_reference_layout,
                         lambda seq, steps: {k: np.stack([s[k] for s in steps]) for k, v in steps[0].items()
                                                            if v is not None and k != "active"},
                         _reference_record),
    "cuda": _Schema(_cuda_layout, lambda seq, saved: saved, _cuda_record),
}


def _schema(backend: str) -> _Schema:
    if backend not in _SCHEMAS:
        raise ValueError(f"backend must be a resolved backend name, one of {sorted(_SCHEMAS)}, got {backend!r} "
                         f"(resolve 'auto' with resolve_backend first)")
    return _SCHEMAS[backend]


def saved_shapes(backend, form, T, B, H, P=None) -> list[tuple]:
    """Shapes of the arrays ``forward(..., save=True)`` returns as its tape, in order (P: the projection
    size of an LSTM with w_hr, else None)."""
    cell, variant = cell_form(form)
    return list(_schema(backend).layout(cell, variant, T, B, H, P).values())


def _projection_size(seq):
    return seq.P if seq.w_hr is not None else None


# ----------------------------------------------------------------------------- forward and backward

def _args(form, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths):
    cell, variant = cell_form(form)
    return api.prepare(cell, (x, w_ih, w_hh, b_ih, b_hh, h0, c0), variant, False, lengths, w_hr)


def forward(form, backend, x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, w_hr=None, lengths=None,
            save=True):
    """One layer, one direction on the named backend: ``(y, h_n, c_n, saved)`` (c_n None unless LSTM)."""
    seq, _, kind, gpu = _args(form, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths)
    name, impl = backends.resolve(backend, gpu=gpu, projections=seq.w_hr is not None,
                                  shape=(seq.T, seq.B, seq.H), training=save)
    y, h_n, c_n, record = impl.forward(seq, save)
    saved = ()
    if save:
        schema = _schema(name)
        arrays = schema.flatten(seq, record)
        layout = schema.layout(seq.cell, seq.variant, seq.T, seq.B, seq.H, _projection_size(seq))
        saved = tuple(arrays[n] for n in layout)
    return tuple(as_kind(a, kind) for a in (y, h_n, c_n)) + (tuple(as_kind(a, kind) for a in saved),)


def backward(form, backend, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, saved, dy=None, dh_n=None,
             dc_n=None):
    """Gradients from a ``forward(..., save=True)`` of the same arguments on the same backend, given its
    ``saved`` arrays and dL/dy, dL/dh_n, dL/dc_n (each None for zero)."""
    seq, layout, kind, gpu = _args(form, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths)
    schema = _schema(backend)
    names = list(schema.layout(seq.cell, seq.variant, seq.T, seq.B, seq.H, _projection_size(seq)))
    if len(saved) != len(names):
        raise ValueError(f"saved must hold the {len(names)} arrays forward returned ({', '.join(names)}), "
                         f"got {len(saved)}")
    arrays = api._on_device({n: a for n, a in zip(names, saved)}, gpu)[0]
    xp = module_of(seq.x)
    arrays = {n: xp.ascontiguousarray(a, dtype=seq.dtype) for n, a in arrays.items()}
    tape = Tape(backend=backend, seq=seq, layout=layout, saved=schema.record(seq, arrays), kind=kind, on_gpu=gpu)
    return api._run_backward(seq.cell, tape, dy, dh_n, dc_n if seq.cell == "lstm" else None, all_fields=True)


__all__ = ["FORMS", "resolve_backend", "saved_shapes", "forward", "backward"]
