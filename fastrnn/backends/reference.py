r"""Reference backend: the NumPy oracle every fast kernel is checked against.

Readable, step by step, following the textbook equations; it shares no code with
the fast backends. It computes in the input's dtype, so in float64 it is exact to
float64 rounding. Shapes: x_t (B, I), h, c (B, H); weights in PyTorch's layout.

LSTM (gates i, f, g, o):
    [a_i, a_f, a_g, a_o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
    i = sigma(a_i), f = sigma(a_f), g = tanh(a_g), o = sigma(a_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)                         (with projections: h_t = (o * tanh(c_t)) W_hr^T, size P)

GRU (gates r, z, n), with  xr, xz, xn = x_t W_ih^T + b_ih  and W_hr, W_hz, W_hn the blocks of W_hh:
    r = sigma(xr + h W_hr^T + b_hr)
    z = sigma(xz + h W_hz^T + b_hz)
    n = tanh(xn + r * (h W_hn^T + b_hn))        linear_before_reset=True  (PyTorch, cuDNN)
    n = tanh(xn + (r * h) W_hn^T + b_hn)        linear_before_reset=False (Cho et al., ONNX default)
    h_t = (1 - z) * n + z * h_{t-1}

RNN:
    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),  act = tanh or relu

Lengths (PyTorch PackedSequence semantics): sequence b takes part in steps
t < lengths[b]; past that its state is carried unchanged (so the final state is
the one at step lengths[b]-1) and y is zero.

Backward through time runs the same steps in reverse with the chain rule,
carrying dh (and dc). A step where sequence b is past its length passes its dh
and dc through unchanged and contributes nothing to the parameter gradients.
"""
from __future__ import annotations

import numpy as np


def sigmoid(a):
    # exp of a non-positive number only: no overflow for any finite input, NaN stays NaN
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def _affine(v, w, b):
    out = v @ w.T
    return out if b is None else out + b


def _zeros_if_none(arr, shape, dtype):
    return np.zeros(shape, dtype) if arr is None else arr


def _active_mask(seq, t):
    """(B, 1) booleans: which sequences take part in step t."""
    if seq.lengths is None:
        return np.ones((seq.B, 1), dtype=bool)
    return (t < seq.lengths)[:, None]


# ----------------------------------------------------------------------------- forward

def _lstm_step(seq, x_t, h, c):
    i, f, g, o = np.split(_affine(x_t, seq.w_ih, seq.b_ih) + _affine(h, seq.w_hh, seq.b_hh), 4, axis=1)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c_new = f * c + i * g
    m = o * np.tanh(c_new)
    h_new = m if seq.w_hr is None else m @ seq.w_hr.T
    return h_new, c_new, {"i": i, "f": f, "g": g, "o": o, "c": c_new, "m": m}


def _gru_step(seq, x_t, h):
    H = seq.H
    xr, xz, xn = np.split(_affine(x_t, seq.w_ih, seq.b_ih), 3, axis=1)
    w_hr, w_hz, w_hn = seq.w_hh[:H], seq.w_hh[H:2 * H], seq.w_hh[2 * H:]
    b_hr, b_hz, b_hn = (None, None, None) if seq.b_hh is None else np.split(seq.b_hh, 3)
    r = sigmoid(xr + _affine(h, w_hr, b_hr))
    z = sigmoid(xz + _affine(h, w_hz, b_hz))
    if seq.variant:  # linear_before_reset
        hn = _affine(h, w_hn, b_hn)
        n = np.tanh(xn + r * hn)
    else:
        hn = None
        n = np.tanh(xn + _affine(r * h, w_hn, b_hn))
    h_new = (1 - z) * n + z * h
    return h_new, {"r": r, "z": z, "n": n, "hn": hn}


def _rnn_step(seq, x_t, h):
    a = _affine(x_t, seq.w_ih, seq.b_ih) + _affine(h, seq.w_hh, seq.b_hh)
    h_new = np.tanh(a) if seq.variant == "tanh" else np.maximum(a, 0)
    return h_new, {}


def forward(seq, save):
    T, B, P = seq.T, seq.B, seq.P
    h, c = seq.h0.copy(), (None if seq.c0 is None else seq.c0.copy())
    y = np.zeros((T, B, P), seq.dtype)
    steps = []
    for t in range(T):
        active = _active_mask(seq, t)
        h_prev, c_prev = h, c
        if seq.cell == "lstm":
            h_new, c_new, record = _lstm_step(seq, seq.x[t], h_prev, c_prev)
            c = np.where(active, c_new, c_prev)
        elif seq.cell == "gru":
            h_new, record = _gru_step(seq, seq.x[t], h_prev)
        else:
            h_new, record = _rnn_step(seq, seq.x[t], h_prev)
        h = np.where(active, h_new, h_prev)
        y[t] = np.where(active, h_new, 0)
        if save:
            record.update(h_prev=h_prev, c_prev=c_prev, h_new=h_new, active=active)
            steps.append(record)
    return y, h, c, (steps if save else None)


# ----------------------------------------------------------------------------- backward

def _lstm_step_backward(s, dh, dc):
    """Gradients w.r.t. the gate pre-activations (B, 4H) and the carried dc_{t-1}."""
    tanh_c = np.tanh(s["c"])
    do = dh * tanh_c
    dc = dc + dh * s["o"] * (1 - tanh_c ** 2)
    di, df, dg = dc * s["g"], dc * s["c_prev"], dc * s["i"]
    da = np.concatenate([di * s["i"] * (1 - s["i"]), df * s["f"] * (1 - s["f"]),
                         dg * (1 - s["g"] ** 2), do * s["o"] * (1 - s["o"])], axis=1)
    return da, dc * s["f"]


def backward(seq, steps, dy, dh_n, dc_n):
    T, B, H, P = seq.T, seq.B, seq.H, seq.P
    dtype = seq.dtype
    dh = _zeros_if_none(dh_n, (B, P), dtype).copy()
    dc = _zeros_if_none(dc_n, (B, H), dtype).copy() if seq.cell == "lstm" else None
    dx = np.zeros_like(seq.x)
    dw_ih, dw_hh = np.zeros_like(seq.w_ih), np.zeros_like(seq.w_hh)
    db_ih = np.zeros(seq.w_ih.shape[0], dtype)
    db_hh = np.zeros(seq.w_hh.shape[0], dtype)
    dw_hr = None if seq.w_hr is None else np.zeros_like(seq.w_hr)

    for t in reversed(range(T)):
        s = steps[t]
        active = s["active"]
        x_t, h_prev = seq.x[t], s["h_prev"]
        dh_out = dh if dy is None else dh + np.where(active, dy[t], 0)

        if seq.cell == "lstm":
            if dw_hr is not None:       # h = m W_hr^T: back to m = o * tanh(c), and W_hr's gradient
                dw_hr += np.where(active, dh_out, 0).T @ s["m"]
                dh_out = dh_out @ seq.w_hr
            da, dc_prev = _lstm_step_backward(s, dh_out, dc)
            da = np.where(active, da, 0)
            dx_part, dh_prev = da @ seq.w_ih, da @ seq.w_hh
            dw_ih += da.T @ x_t
            dw_hh += da.T @ h_prev
            db_ih += da.sum(0)
            db_hh += da.sum(0)
            dc = np.where(active, dc_prev, dc)
        elif seq.cell == "gru":
            r, z, n = s["r"], s["z"], s["n"]
            dn = dh_out * (1 - z)
            dz = dh_out * (h_prev - n)
            dh_prev = dh_out * z
            dan = dn * (1 - n ** 2)                     # d/d(pre-activation of n)
            w_hr, w_hz, w_hn = seq.w_hh[:H], seq.w_hh[H:2 * H], seq.w_hh[2 * H:]
            if seq.variant:  # n = tanh(xn + r * hn), hn = h W_hn^T + b_hn
                dr = dan * s["hn"]
                dhn = dan * r                           # d/d(hn)
                hn_input = h_prev
            else:            # n = tanh(xn + (r*h) W_hn^T + b_hn)
                dhn = dan                               # d/d((r*h) W_hn^T + b_hn)
                drh = dan @ w_hn                        # d/d(r*h)
                dr = drh * h_prev
                dh_prev = dh_prev + drh * r
                hn_input = r * h_prev
            dar = dr * r * (1 - r)
            daz = dz * z * (1 - z)
            mask = lambda a: np.where(active, a, 0)  # noqa: E731
            dar, daz, dan, dhn = mask(dar), mask(daz), mask(dan), mask(dhn)
            dgi = np.concatenate([dar, daz, dan], axis=1)
            dx_part = dgi @ seq.w_ih
            dh_prev = dh_prev + dar @ w_hr + daz @ w_hz
            if seq.variant:
                dh_prev = dh_prev + dhn @ w_hn
            dw_ih += dgi.T @ x_t
            dw_hh[:H] += dar.T @ h_prev
            dw_hh[H:2 * H] += daz.T @ h_prev
            dw_hh[2 * H:] += dhn.T @ hn_input
            db_ih += dgi.sum(0)
            db_hh += np.concatenate([dar, daz, dhn], axis=1).sum(0)
        else:
            h_new = s["h_new"]
            da = dh_out * ((1 - h_new ** 2) if seq.variant == "tanh" else (h_new > 0))
            da = np.where(active, da, 0).astype(dtype, copy=False)
            dx_part, dh_prev = da @ seq.w_ih, da @ seq.w_hh
            dw_ih += da.T @ x_t
            dw_hh += da.T @ h_prev
            db_ih += da.sum(0)
            db_hh += da.sum(0)

        dx[t] = dx_part
        dh = np.where(active, dh_prev, dh)   # a finished sequence carries dh through

    has_bias = seq.b_ih is not None, seq.b_hh is not None
    return (dx, dh, dc, dw_ih, dw_hh,
            db_ih if has_bias[0] else None, db_hh if has_bias[1] else None, dw_hr)
