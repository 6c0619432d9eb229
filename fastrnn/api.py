"""The public functional API: validate once, resolve the backend, call it, shape the results.

Shapes (time-major by default): x (T, B, I) or (B, T, I) with batch_first, or (T, I)
unbatched; w_ih (G*H, I); w_hh (G*H, H); b_ih, b_hh (G*H,); h0, c0 (B, H) or (H,).
G = 4 for LSTM (gates i, f, g, o), 3 for GRU (r, z, n), 1 for RNN.
In place of w_ih, a PackedWeights (fastrnn.pack_weights) brings all the weights, packed once for
every call (then w_hh, b_ih, b_hh and w_hr stay out): see _packed.py.
"""
from __future__ import annotations

import numpy as np

from . import backends
from ._arrays import HOST, as_kind, call_kind, call_on_gpu, cupy_module, module_of, to_device, to_host
from ._packed import PackedWeights
from ._types import Grads, LSTMGrads, Layout, Tape
from ._validation import snapshot_call, validate_grad_outputs, validate_sequence


def _user_sequence(arr, layout: Layout):
    """(T, B, H) -> the caller's layout."""
    if layout.unbatched:
        return arr[:, 0, :]
    if layout.batch_first:
        return module_of(arr).ascontiguousarray(arr.transpose(1, 0, 2))
    return arr


def _user_state(arr, layout: Layout):
    """(B, H) -> (H,) for an unbatched call."""
    if arr is None or not layout.unbatched:
        return arr
    return arr[0]


def _on_device(named: dict, gpu: bool):
    """(arrays, array module): GPU arrays become CuPy views, host arrays NumPy arrays (views where possible)."""
    if not gpu:
        return to_host(named), np
    return to_device(named), cupy_module()


def _plain_numpy(values) -> bool:
    """Every argument NumPy's own ndarray or None: the common case, with nothing to convert or move."""
    for value in values:            # (a loop: all() over a generator took twice as long)
        if value is not None and type(value) is not np.ndarray:
            return False
    return True


def _unpack(cell, args, w_hr):
    """(args, w_hr, packed): a PackedWeights in w_ih's place gives its snapshot's arrays."""
    packed = args[1]
    if not isinstance(packed, PackedWeights):
        if args[2] is None:
            raise TypeError(f"{cell}() needs w_hh (or a PackedWeights from fastrnn.pack_weights as w_ih)")
        return args, w_hr, None
    if args[2] is not None or args[3] is not None or args[4] is not None or w_hr is not None:
        given = [name for name, value in zip(("w_hh", "b_ih", "b_hh", "w_hr"), (*args[2:5], w_hr)) if value is not None]
        raise TypeError(f"w_ih is a PackedWeights, which holds all the weights; do not pass {', '.join(given)} too")
    if packed.cell != cell:
        raise ValueError(f"these PackedWeights are for {packed.cell}, not {cell}")
    w_ih, w_hh, b_ih, b_hh, w_hr = packed.arrays()
    return (args[0], w_ih, w_hh, b_ih, b_hh) + tuple(args[5:]), w_hr, packed


_TIME_MAJOR = Layout(batch_first=False, unbatched=False)


def prepare(cell, args, variant, batch_first, lengths, w_hr=None):
    """Validate a call's arguments: ``(seq, layout, kind, gpu)``; kind is what results come back as."""
    args, w_hr, packed = _unpack(cell, args, w_hr)
    if packed is not None:      # many short calls on a snapshot: their common case, checked in a few steps
        seq = snapshot_call(cell, args[0], packed, args[5], args[6],
                            batch_first=batch_first, lengths=lengths, variant=variant)
        if seq is not None:
            return seq, _TIME_MAJOR, HOST, False
    kind, gpu, xp = HOST, False, np
    if not _plain_numpy(args) or not _plain_numpy((w_hr,)):
        named = {**dict(zip(("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0"), args)), "w_hr": w_hr}
        kind, gpu = call_kind(named), call_on_gpu(named)
        named, xp = _on_device(named, gpu)
        w_hr = named.pop("w_hr")
        args = tuple(named.values())
    seq, layout = validate_sequence(cell, *args, batch_first=batch_first, lengths=lengths,
                                    variant=variant, xp=xp, w_hr=w_hr, packed=packed)
    return seq, layout, kind, gpu


def _run_forward(cell, args, variant, batch_first, lengths, backend, save, w_hr=None):
    seq, layout, kind, gpu = prepare(cell, args, variant, batch_first, lengths, w_hr)
    name, impl = backends.resolve(backend, gpu=gpu, projections=seq.w_hr is not None,
                                  shape=(seq.T, seq.B, seq.H), training=save)
    y, h_n, c_n, saved = impl.forward(seq, save)
    if kind != HOST or layout.batch_first or layout.unbatched:     # (else the results are the caller's already)
        y = as_kind(_user_sequence(y, layout), kind)
        h_n, c_n = (as_kind(_user_state(s, layout), kind) for s in (h_n, c_n))
    tape = Tape(backend=name, seq=seq, layout=layout, saved=saved, kind=kind, on_gpu=gpu) if save else None
    return y, h_n, c_n, tape


def _run_backward(cell, tape, dy, dh_n, dc_n, all_fields=False):
    """Gradients from a tape: LSTMGrads for an LSTM (or for any cell with ``all_fields``), else Grads."""
    if not isinstance(tape, Tape):
        raise TypeError(f"tape must be the Tape returned by {cell}_forward, got {type(tape).__name__}")
    if tape.cell != cell:
        raise ValueError(f"tape was made by {tape.cell}_forward; pass it to {tape.cell}_backward, "
                         f"not {cell}_backward")
    seq, layout, kind = tape.seq, tape.layout, tape.kind
    named = {"dy": dy, "dh_n": dh_n, "dc_n": dc_n}
    if not tape.on_gpu and _plain_numpy(named.values()):
        xp = np
    else:
        if not tape.on_gpu and call_on_gpu(named):
            raise TypeError("the forward ran on host arrays; pass dy, dh_n and dc_n as host arrays too")
        named, xp = _on_device(named, tape.on_gpu)
    dy, dh_n, dc_n = validate_grad_outputs(seq, layout, *named.values(), xp=xp)
    _, impl = backends.resolve(tape.backend, gpu=tape.on_gpu)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = impl.backward(seq, tape.saved, dy, dh_n, dc_n)
    dx = _user_sequence(dx, layout)
    dh0, dc0 = _user_state(dh0, layout), _user_state(dc0, layout)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = (as_kind(g, kind) for g in (
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr))
    if cell == "lstm" or all_fields:
        return LSTMGrads(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)
    return Grads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)


# ----------------------------------------------------------------------------- LSTM

def lstm_forward(x, w_ih, w_hh=None, b_ih=None, b_hh=None, h0=None, c0=None, *,
                 batch_first=False, lengths=None, backend="auto", w_hr=None):
    """LSTM over a sequence, keeping what backward needs.

    Returns ``(y, (h_n, c_n), tape)``; pass the tape to :func:`lstm_backward`.
    """
    y, h_n, c_n, tape = _run_forward("lstm", (x, w_ih, w_hh, b_ih, b_hh, h0, c0), None,
                                     batch_first, lengths, backend, save=True, w_hr=w_hr)
    return y, (h_n, c_n), tape


def lstm(x, w_ih, w_hh=None, b_ih=None, b_hh=None, h0=None, c0=None, *,
         batch_first=False, lengths=None, backend="auto", w_hr=None):
    """LSTM over a sequence (inference: nothing is saved). Returns ``(y, (h_n, c_n))``.

    i, f, g, o = sigma, sigma, tanh, sigma of x_t W_ih^T + b_ih + h W_hh^T + b_hh;
    c_t = f * c + i * g;  h_t = o * tanh(c_t).
    With projections (``w_hr`` of shape (P, H), as torch's proj_size): h_t = (o * tanh(c_t)) W_hr^T, so
    h, y and h0 have size P and w_hh is (4H, P); every backend runs them.
    """
    y, h_n, c_n, _ = _run_forward("lstm", (x, w_ih, w_hh, b_ih, b_hh, h0, c0), None,
                                  batch_first, lengths, backend, save=False, w_hr=w_hr)
    return y, (h_n, c_n)


def lstm_backward(tape, dy, dh_n=None, dc_n=None) -> LSTMGrads:
    """Gradients of an LSTM sequence given dL/dy (or None) and dL/dh_n, dL/dc_n (or None).

    Returns :class:`LSTMGrads` ``(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)``, each shaped like the
    forward's argument (bias fields None when the forward had no bias, w_hr None without projections).
    """
    return _run_backward("lstm", tape, dy, dh_n, dc_n)


# ----------------------------------------------------------------------------- GRU

def gru_forward(x, w_ih, w_hh=None, b_ih=None, b_hh=None, h0=None, *, linear_before_reset=True,
                batch_first=False, lengths=None, backend="auto"):
    """GRU over a sequence, keeping what backward needs. Returns ``(y, h_n, tape)``."""
    y, h_n, _, tape = _run_forward("gru", (x, w_ih, w_hh, b_ih, b_hh, h0, None), linear_before_reset,
                                   batch_first, lengths, backend, save=True)
    return y, h_n, tape


def gru(x, w_ih, w_hh=None, b_ih=None, b_hh=None, h0=None, *, linear_before_reset=True,
        batch_first=False, lengths=None, backend="auto"):
    """GRU over a sequence. Returns ``(y, h_n)``.

    r, z = sigma(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z});
    n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))   (linear_before_reset=True, PyTorch/cuDNN)
    n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn)   (linear_before_reset=False, Cho et al./ONNX);
    h_t = (1 - z) * n + z * h.
    """
    y, h_n, _, _ = _run_forward("gru", (x, w_ih, w_hh, b_ih, b_hh, h0, None), linear_before_reset,
                                batch_first, lengths, backend, save=False)
    return y, h_n


def gru_backward(tape, dy, dh_n=None) -> Grads:
    """Gradients of a GRU sequence. Returns :class:`Grads` ``(x, h0, w_ih, w_hh, b_ih, b_hh)``."""
    return _run_backward("gru", tape, dy, dh_n, None)


# ----------------------------------------------------------------------------- RNN

def rnn_forward(x, w_ih, w_hh=None, b_ih=None, b_hh=None, h0=None, *, nonlinearity="tanh",
                batch_first=False, lengths=None, backend="auto"):
    """Elman RNN over a sequence, keeping what backward needs. Returns ``(y, h_n, tape)``."""
    y, h_n, _, tape = _run_forward("rnn", (x, w_ih, w_hh, b_ih, b_hh, h0, None), nonlinearity,
                                   batch_first, lengths, backend, save=True)
    return y, h_n, tape


def rnn(x, w_ih, w_hh=None, b_ih=None, b_hh=None, h0=None, *, nonlinearity="tanh",
        batch_first=False, lengths=None, backend="auto"):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h W_hh^T + b_hh), act tanh or relu. Returns ``(y, h_n)``."""
    y, h_n, _, _ = _run_forward("rnn", (x, w_ih, w_hh, b_ih, b_hh, h0, None), nonlinearity,
                                batch_first, lengths, backend, save=False)
    return y, h_n


def rnn_backward(tape, dy, dh_n=None) -> Grads:
    """Gradients of an RNN sequence. Returns :class:`Grads` ``(x, h0, w_ih, w_hh, b_ih, b_hh)``."""
    return _run_backward("rnn", tape, dy, dh_n, None)
