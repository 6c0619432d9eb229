"""Gradient clipping over dicts of NumPy or CuPy arrays, in place (torch.nn.utils.clip_grad_norm_/_value_).

    total = clip_grad_norm(grads, max_norm)      # grads: a dict name -> array, a module, or a list of them
    clip_grad_value(grads, clip_value)

Global norm of order p over all gradients g_1 ... g_n:

    total = (sum_k sum_j |g_kj|^p)^(1/p)        (p = inf: max_kj |g_kj|)
    g_k <- g_k * min(1, max_norm / (total + 1e-6))

which is torch's rule, 1e-6 included. Non-finite norms differ on purpose: torch multiplies by the nan/inf
coefficient and so turns every gradient into nan (or zero); here a non-finite total leaves the gradients as they
are and is returned, so the caller can see it (``math.isfinite``) and skip the step, which is what
``fastrnn.train.train_chunked`` does. ``error_if_nonfinite=True`` raises instead, as in torch.
"""
from __future__ import annotations

import math
import numbers

from .._arrays import module_of


def gradient_arrays(grads, name: str = "grads") -> list:
    """The arrays in ``grads``: a dict of arrays, an object with a ``.grads`` dict, or a list/tuple of those."""
    if hasattr(grads, "grads") and isinstance(grads.grads, dict):
        grads = grads.grads
    if isinstance(grads, dict):
        items = list(grads.values())
    elif isinstance(grads, (list, tuple)):
        items = []
        for entry in grads:
            items.extend(gradient_arrays(entry, name) if isinstance(entry, (dict, list, tuple))
                         or hasattr(entry, "grads") else [entry])
    else:
        raise TypeError(f"{name} must be a dict of arrays, a layer with .grads, or a list of those; "
                        f"got {type(grads).__name__}")
    for value in items:
        if not hasattr(value, "dtype") or not hasattr(value, "shape") or value.dtype.kind != "f":
            raise TypeError(f"{name} must hold floating-point NumPy or CuPy arrays, got "
                            f"{getattr(value, 'dtype', type(value).__name__)}")
    return items


def _positive(name: str, value) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def clip_grad_norm(grads, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    """Scale all gradients in place so that their global ``norm_type``-norm is at most ``max_norm``.

    Returns the total norm before clipping, as a Python float. See the module docstring for inf/nan.
    """
    max_norm = _positive("max_norm", max_norm)
    norm_type = _positive("norm_type", norm_type)
    arrays = gradient_arrays(grads)
    if not arrays:
        return 0.0
    xp = module_of(arrays[0])
    # accumulate in float64: a float32 sum of squares over millions of entries loses digits
    if math.isinf(norm_type):
        parts = [xp.abs(g).max() if g.size else xp.zeros((), xp.float64) for g in arrays]
        total = float(xp.stack([xp.asarray(p, dtype=xp.float64) for p in parts]).max())
    else:
        parts = [xp.sum(xp.abs(g.astype(xp.float64)) ** norm_type) for g in arrays]
        total = float(xp.stack(parts).sum()) ** (1.0 / norm_type)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise FloatingPointError(f"the total norm of order {norm_type} of the gradients is {total}; "
                                     f"pass error_if_nonfinite=False to return it without clipping")
        return total
    coefficient = max_norm / (total + 1e-6)
    if coefficient < 1.0:
        for g in arrays:
            g *= g.dtype.type(coefficient)
    return total


def clip_grad_value(grads, clip_value: float) -> None:
    """Clamp every gradient entry to [-clip_value, clip_value], in place (nan entries stay nan)."""
    clip_value = _positive("clip_value", clip_value)
    for g in gradient_arrays(grads):
        module_of(g).clip(g, -clip_value, clip_value, out=g)


__all__ = ["clip_grad_norm", "clip_grad_value", "gradient_arrays"]
