"""Weight initialisers, in place, on NumPy or CuPy arrays (values drawn on the host from a NumPy Generator,
so a seed gives the same numbers on either device).

    uniform_(w, bound, rng)            U(-bound, bound); torch.nn.LSTM's default is bound = 1/sqrt(H)
    xavier_uniform_(w, gain, rng)      U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)), fan_in = w.shape[1]
    orthogonal_(w, gain, rng)          gain * Q of a QR of a Gaussian matrix, signs fixed by diag(R) (Haar
                                       measure): rows orthonormal (W W^T = I) when rows <= cols, else columns
    init_recurrent(layer, scheme)      a whole fastrnn LSTM/GRU/RNN layer, gate block by gate block

``init_recurrent(layer, "xavier-orthogonal")`` (the default scheme) treats each gate's block of H rows as its
own matrix: W_ih blocks (H, I) Glorot-uniform, W_hh blocks (H, H) orthogonal (so that early on the recurrence
neither explodes nor vanishes along any direction), biases zero, and for an LSTM the forget gate's bias
``forget_bias`` (1 by default: Jozefowicz et al. 2015; it goes into ``bias_ih``, ``bias_hh``'s forget block
stays 0, so their sum, which is what the cell sees, is ``forget_bias``). ``"pytorch"`` redraws torch's
default U(-1/sqrt(H), 1/sqrt(H)) for everything.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._arrays import module_of
from ..cells import SPECS


def _generator(rng):
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, an integer seed or None, got {type(rng).__name__}")
    return rng


def _fill(w, values, name="w"):
    """Write host ``values`` into ``w`` (NumPy or CuPy), in place."""
    if not hasattr(w, "shape") or getattr(w, "dtype", np.dtype(object)).kind != "f":
        raise TypeError(f"{name} must be a floating-point NumPy or CuPy array, got {type(w).__name__}")
    xp = module_of(w)
    w[...] = xp.asarray(values.astype(w.dtype))
    return w


def _matrix(name, w):
    if not hasattr(w, "ndim") or w.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows = fan_out, columns = fan_in), "
                         f"got shape {getattr(w, 'shape', None)}")


def _gain(gain):
    if not isinstance(gain, numbers.Real) or isinstance(gain, bool) or not gain > 0:
        raise ValueError(f"gain must be a positive number, got {gain!r}")
    return float(gain)


def uniform_(w, bound: float, rng=None):
    """w <- U(-bound, bound), in place; returns w."""
    if not isinstance(bound, numbers.Real) or isinstance(bound, bool) or not bound >= 0:
        raise ValueError(f"bound must be a number >= 0, got {bound!r}")
    return _fill(w, _generator(rng).uniform(-bound, bound, getattr(w, "shape", ())))


def xavier_uniform_(w, gain: float = 1.0, rng=None):
    """Glorot/Xavier uniform for a (fan_out, fan_in) matrix, in place: variance gain^2 * 2/(fan_in+fan_out)."""
    _matrix("w", w)
    fan_out, fan_in = w.shape
    bound = _gain(gain) * math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(w, _generator(rng).uniform(-bound, bound, w.shape))


def orthogonal_(w, gain: float = 1.0, rng=None):
    """A (semi-)orthogonal matrix times ``gain``, in place (torch.nn.init.orthogonal_'s construction)."""
    _matrix("w", w)
    rows, cols = w.shape
    gaussian = _generator(rng).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(gaussian)
    q *= np.sign(np.diag(r))            # without this Q is not uniformly (Haar) distributed
    if rows < cols:
        q = q.T
    return _fill(w, _gain(gain) * q)


SCHEMES = ("xavier-orthogonal", "pytorch")


def init_recurrent(layer, scheme: str = "xavier-orthogonal", *, forget_bias: float = 1.0, rng=None):
    """Initialise every parameter of a fastrnn LSTM/GRU/RNN layer in place; returns the layer.

    See the module docstring for the schemes. ``forget_bias`` applies to LSTMs under "xavier-orthogonal".
    """
    if not hasattr(layer, "params") or getattr(layer, "cell", None) not in SPECS:
        raise TypeError(f"layer must be a fastrnn.LSTM, GRU or RNN, got {type(layer).__name__}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if not isinstance(forget_bias, numbers.Real) or isinstance(forget_bias, bool):
        raise TypeError(f"forget_bias must be a number, got {forget_bias!r}")
    rng = _generator(rng)
    spec, H = SPECS[layer.cell], layer.hidden_size
    for name, w in layer.params.items():
        if scheme == "pytorch":
            uniform_(w, 1.0 / math.sqrt(H), rng)
        elif name.startswith("bias"):
            w[...] = 0
            if spec.has_cell_state and name.startswith("bias_ih"):
                w[spec.F * H:(spec.F + 1) * H] = forget_bias
        elif name.startswith("weight_hr"):          # LSTM projection (P, H)
            xavier_uniform_(w, rng=rng)
        else:
            fill = orthogonal_ if name.startswith("weight_hh") else xavier_uniform_
            for gate in range(spec.num_gates):
                fill(w[gate * H:(gate + 1) * H], rng=rng)
    return layer


__all__ = ["uniform_", "xavier_uniform_", "orthogonal_", "init_recurrent", "SCHEMES"]
