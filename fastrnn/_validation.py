"""Input checks for the public API: shapes, dtypes, lengths, options.

Every public call passes through here once. Errors name the argument and what
was expected. The output is a :class:`~fastrnn._types.Sequence`: time-major,
C-contiguous arrays of one float dtype, which backends use without checking.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np

from ._arrays import host_array
from ._types import WEIGHT_FIELDS, Layout, Sequence
from .cells import SPECS

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_LAYOUTS = {(first, unbatched): Layout(batch_first=first, unbatched=unbatched)
            for first in (False, True) for unbatched in (False, True)}
_SUPPORTED_TEXT = "float32 or float64"


def _has_own_dtype(value: Any) -> bool:
    """Arrays (NumPy, anything with __array__/dtype) carry a dtype; lists and scalars do not."""
    return not isinstance(value, (list, tuple, numbers.Number))


def _to_array(name: str, value: Any, xp=np) -> np.ndarray:
    try:
        arr = xp.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged lists, unconvertible objects
        raise ValueError(f"{name} must be a rectangular numeric array, could not convert it: {exc}") from None
    if arr.dtype.kind == "O":
        raise TypeError(f"{name} must be a floating array ({_SUPPORTED_TEXT}), got an object array")
    return arr


def _check_float_kind(name: str, arr: np.ndarray, typed: bool) -> None:
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real ({_SUPPORTED_TEXT}), got complex dtype {arr.dtype}")
    if kind not in "fiu" or (typed and kind != "f"):
        raise TypeError(f"{name} must be a floating array ({_SUPPORTED_TEXT}), got dtype {arr.dtype}")
    if kind == "f" and arr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {arr.dtype}; supported dtypes are {_SUPPORTED_TEXT}")


def as_float_arrays(named: dict[str, Any], dtype: Optional[np.dtype] = None, xp=np):
    """Convert array-likes to arrays of one float dtype.

    Arrays that carry a dtype must all have the same one (float32 or float64);
    lists and scalars adopt it (float64 when nothing carries a dtype). When
    ``dtype`` is given (backward: the forward's dtype), typed arrays must match it.
    Returns ``(arrays, dtype)``; None values stay None. Nothing is copied here
    unless a list must be converted. ``xp`` is the array module (NumPy, or CuPy for GPU arrays).
    """
    common = dtype
    for value in named.values():        # the common case first: NumPy arrays of one supported dtype
        if value is None:
            continue
        if type(value) is not np.ndarray or value.dtype not in SUPPORTED_DTYPES or (
                common is not None and value.dtype != common):
            break
        common = value.dtype
    else:
        return named.copy(), np.dtype(np.float64 if common is None else common)
    arrays: dict[str, Optional[np.ndarray]] = {}
    typed_dtypes: dict[str, np.dtype] = {}
    for name, value in named.items():
        if value is None:
            arrays[name] = None
            continue
        if type(value) is np.ndarray and value.dtype in SUPPORTED_DTYPES:     # the common case, quickly
            arrays[name] = value
            typed_dtypes[name] = value.dtype
            continue
        arr = _to_array(name, value, xp)
        typed = _has_own_dtype(value)
        _check_float_kind(name, arr, typed)
        arrays[name] = arr
        if typed:
            typed_dtypes[name] = arr.dtype
    if dtype is None:
        distinct = set(typed_dtypes.values())
        if len(distinct) > 1:
            listing = ", ".join(f"{n} is {d}" for n, d in typed_dtypes.items())
            raise TypeError(f"all floating arrays must share one dtype; got {listing}")
        dtype = distinct.pop() if distinct else np.dtype(np.float64)
    else:
        for name, d in typed_dtypes.items():
            if d != dtype:
                raise TypeError(f"{name} must have dtype {dtype} (the forward's dtype), got {d}")
    for name, arr in arrays.items():
        if arr is not None and arr.dtype != dtype:
            arrays[name] = arr.astype(dtype)
    return arrays, np.dtype(dtype)


def _check_shape(name: str, arr: Optional[np.ndarray], expected: tuple, described: str, *fields) -> None:
    """``described``: the shape in letters, a format string of ``fields`` (formatted only for the error:
    this runs for every array of every call)."""
    if arr is not None and arr.shape != expected:
        raise ValueError(f"{name} must have shape {described.format(*fields)} = {expected}, got {arr.shape}")


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_variant(cell: str, variant: Any) -> Any:
    if cell == "gru":
        return _check_bool("linear_before_reset", variant)
    if cell == "rnn":
        if variant not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {variant!r}")
        return variant
    return None


def check_lengths(lengths: Any, T: int, B: int) -> np.ndarray:
    arr = np.asarray(host_array(lengths))
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an array of integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), got {arr.shape}")
    if arr.min() < 1 or arr.max() > T:
        raise ValueError(
            f"lengths must lie in [1, T] = [1, {T}], got values from {arr.min()} to {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def validate_sequence(cell: str, x, w_ih, w_hh, b_ih, b_hh, h0, c0, *,
                      batch_first, lengths, variant, xp=np, w_hr=None, packed=None) -> tuple[Sequence, Layout]:
    """Check one call's arguments and bring them to the internal time-major form (arrays of ``xp``).
    ``packed``: the PackedWeights the weights came from; kept in the Sequence if they are still its
    own arrays (not converted, e.g. moved to a GPU)."""
    spec = SPECS[cell]
    G = spec.num_gates
    if batch_first is not False and batch_first is not True:
        batch_first = _check_bool("batch_first", batch_first)
    variant = check_variant(cell, variant)
    named = {"x": x, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh, "h0": h0}
    if spec.has_cell_state:
        named["c0"] = c0
        named["w_hr"] = w_hr
    elif w_hr is not None:
        raise TypeError(f"w_hr (projections) is only for LSTM, not {cell}")
    arrays, dtype = as_float_arrays(named, xp=xp)
    x, w_hh = arrays["x"], arrays["w_hh"]

    if x.ndim not in (2, 3):
        raise ValueError(
            f"x must be 3-D {'(B, T, I)' if batch_first else '(T, B, I)'} or 2-D (T, I) for one "
            f"unbatched sequence, got shape {x.shape}")
    unbatched = x.ndim == 2
    layout = _LAYOUTS[batch_first, unbatched]
    if unbatched:
        x = x[:, None, :]
    elif batch_first:
        x = x.transpose(1, 0, 2)
    T, B, I = x.shape
    if 0 in x.shape:
        letter = "TBI"[x.shape.index(0)]
        raise ValueError(f"x must have {letter} >= 1, got shape {arrays['x'].shape}")

    w_hr = arrays.get("w_hr")
    if w_hr is not None:        # LSTM with projections: w_hr (P, H), w_hh (4H, P), h (B, P), c (B, H)
        if w_hr.ndim != 2 or 0 in w_hr.shape:
            raise ValueError(f"w_hr must have shape (P, H) with P, H >= 1, got {w_hr.shape}")
        P, H = w_hr.shape
        _check_shape("w_hh", w_hh, (G * H, P), "({}*H, P) with (P, H) = w_hr.shape", G)
    elif w_hh.ndim != 2 or w_hh.shape[1] == 0 or w_hh.shape[0] != G * w_hh.shape[1]:
        raise ValueError(
            f"w_hh must have shape ({G}*H, H) for {cell} (gates {','.join(spec.gates)}), with H >= 1; "
            f"got {w_hh.shape}")
    else:
        P = H = w_hh.shape[1]
    _check_shape("w_ih", arrays["w_ih"], (G * H, I), "({}*H, I)", G)
    _check_shape("b_ih", arrays["b_ih"], (G * H,), "({}*H,)", G)
    _check_shape("b_hh", arrays["b_hh"], (G * H,), "({}*H,)", G)
    states = {}
    for name, size, letter in (("h0", P, "P" if w_hr is not None else "H"), ("c0", H, "H")):
        if name not in arrays:
            continue
        state_shape, state_text = ((size,), "({},)") if unbatched else ((B, size), "(B, {})")
        _check_shape(name, arrays[name], state_shape, state_text, letter)
        given = arrays[name]
        states[name] = (xp.zeros((B, size), dtype) if given is None
                        else xp.ascontiguousarray(given.reshape(B, size)))

    if lengths is not None:
        if unbatched:
            raise ValueError("lengths applies to batched input only; x is 2-D (one unbatched sequence)")
        lengths = check_lengths(lengths, T, B)

    weights = dict.fromkeys(WEIGHT_FIELDS)
    for name in WEIGHT_FIELDS:
        arr = arrays.get(name)
        if arr is not None:
            weights[name] = xp.ascontiguousarray(arr)
    if packed is not None and not packed.holds(weights):
        packed = None
    seq = Sequence(cell=cell, x=xp.ascontiguousarray(x), h0=states["h0"], c0=states.get("c0"), lengths=lengths,
                   variant=variant, packed=packed, **weights)
    return seq, layout


def snapshot_call(cell: str, x, packed, h0, c0, *, batch_first, lengths, variant) -> Optional[Sequence]:
    """The common case of a call on a pack_weights snapshot (streaming inference: many short calls),
    checked in a few steps: x a C-contiguous (T, B, I) NumPy array of the snapshot's dtype and input
    size, h0 and c0 None or C-contiguous (B, size) arrays of that dtype, time-major, no lengths. Returns
    its Sequence, or None for anything else, which validate_sequence then takes (and every error
    message stays there). The weights were checked when the snapshot was taken."""
    if batch_first is not False or lengths is not None or type(x) is not np.ndarray or x.ndim != 3:
        return None
    w_ih, w_hh, b_ih, b_hh, w_hr = packed.arrays()
    dtype = w_hh.dtype
    T, B, I = x.shape
    if x.dtype != dtype or I != w_ih.shape[1] or T == 0 or B == 0 or not x.flags.c_contiguous:
        return None
    P, H = w_hh.shape[1], w_hh.shape[1] if w_hr is None else w_hr.shape[1]
    states = []
    for given, size, needed in ((h0, P, True), (c0, H, cell == "lstm")):
        if given is None:
            states.append(np.zeros((B, size), dtype) if needed else None)
        elif needed and type(given) is np.ndarray and given.dtype == dtype and given.shape == (B, size) and \
                given.flags.c_contiguous:
            states.append(given)
        else:
            return None
    return Sequence(cell=cell, x=x, h0=states[0], c0=states[1], lengths=None, variant=check_variant(cell, variant),
                    packed=packed, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr)


def validate_grad_outputs(seq: Sequence, layout: Layout, dy, dh_n, dc_n, xp=np):
    """Check the upstream gradients of a backward call; return them time-major (or None)."""
    T, B, H, P = seq.T, seq.B, seq.H, seq.P
    out = "P" if seq.w_hr is not None else "H"       # the letter of the output size in messages
    named = {"dy": dy, "dh_n": dh_n}
    if seq.c0 is not None:
        named["dc_n"] = dc_n
    elif dc_n is not None:
        raise TypeError(f"dc_n is only for LSTM; a {seq.cell} has no cell state")
    arrays, _ = as_float_arrays(named, dtype=seq.dtype, xp=xp)
    if layout.unbatched:
        y_shape, y_text = (T, P), "(T, {})"
    elif layout.batch_first:
        y_shape, y_text = (B, T, P), "(B, T, {})"
    else:
        y_shape, y_text = (T, B, P), "(T, B, {})"
    _check_shape("dy", arrays["dy"], y_shape, y_text, out)
    dy = arrays["dy"]
    if dy is not None:
        if layout.unbatched:
            dy = dy[:, None, :]
        elif layout.batch_first:
            dy = dy.transpose(1, 0, 2)
        dy = xp.ascontiguousarray(dy)
    states = []
    for name, size, letter in (("dh_n", P, out), ("dc_n", H, "H")):
        if name not in arrays:
            states.append(None)
            continue
        state_shape, state_text = ((size,), "({},)") if layout.unbatched else ((B, size), "(B, {})")
        _check_shape(name, arrays[name], state_shape, state_text, letter)
        arr = arrays[name]
        states.append(None if arr is None else xp.ascontiguousarray(arr.reshape(B, size)))
    return dy, states[0], states[1]
