"""Losses that return (loss, dL/dprediction): softmax cross-entropy and mean squared error, NumPy or CuPy.

    loss, dlogits = cross_entropy(logits, targets, weight=None, ignore_index=-100)
        logits (..., C) floats, targets (...) integers in [0, C) or ignore_index; mean over the kept positions,
        weighted as torch.nn.functional.cross_entropy does:
            log p = z - max(z) - log sum exp(z - max(z))               (stable: no exp of a large number)
            L = sum_n w[t_n] * (-log p_n[t_n]) / sum_n w[t_n]
            dL/dz_n = w[t_n] * (softmax(z_n) - onehot(t_n)) / sum_n w[t_n]
        positions whose target is ignore_index (or masked out with mask=False) count for nothing. If none is
        left the loss is 0 with a zero gradient (torch returns nan), so one empty batch cannot poison training.
    loss, dpred = mse(pred, target):  L = mean((pred - target)^2),  dL/dpred = 2 (pred - target) / N

``loss`` is a Python float; the gradient is an array of the prediction's shape, dtype and device.
"""
from __future__ import annotations

from .._arrays import module_of


def _float_array(name, value):
    if not hasattr(value, "dtype") or value.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point NumPy or CuPy array, got "
                        f"{getattr(value, 'dtype', type(value).__name__)}")
    return value


def log_softmax(logits, axis: int = -1):
    """log softmax along ``axis``, computed stably (the max is subtracted first)."""
    xp = module_of(logits)
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits, axis: int = -1):
    return module_of(logits).exp(log_softmax(logits, axis))


def cross_entropy(logits, targets, weight=None, ignore_index: int = -100, mask=None):
    """Mean softmax cross-entropy and its gradient with respect to ``logits`` (see the module docstring)."""
    _float_array("logits", logits)
    xp = module_of(logits)
    if logits.ndim < 1:
        raise ValueError("logits must have shape (..., C), got a scalar")
    C = logits.shape[-1]
    targets = xp.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets must have shape logits.shape[:-1] = {logits.shape[:-1]}, got {targets.shape}")
    z, t = logits.reshape(-1, C), targets.reshape(-1)
    keep = t != ignore_index
    if mask is not None:
        mask = xp.asarray(mask)
        if mask.shape != targets.shape or mask.dtype.kind != "b":
            raise ValueError(f"mask must be a boolean array of the targets' shape {targets.shape}, "
                             f"got {mask.dtype} {mask.shape}")
        keep &= mask.reshape(-1)
    kept = t[keep]
    if kept.size and (int(kept.min()) < 0 or int(kept.max()) >= C):
        raise ValueError(f"targets must lie in [0, C) = [0, {C}) or equal ignore_index = {ignore_index}, "
                         f"got values in [{int(kept.min())}, {int(kept.max())}]")
    safe = xp.where(keep, t, 0)
    if weight is None:
        w = keep.astype(z.dtype)
    else:
        weight = xp.asarray(weight)
        if weight.shape != (C,):
            raise ValueError(f"weight must have shape (C,) = ({C},), got {weight.shape}")
        w = weight.astype(z.dtype)[safe] * keep
    total = float(w.sum())
    rows = xp.arange(z.shape[0])
    if total == 0:
        return 0.0, xp.zeros_like(logits)
    log_p = log_softmax(z)
    loss = float(-(w * log_p[rows, safe]).sum()) / total
    grad = xp.exp(log_p)
    grad[rows, safe] -= 1
    grad *= (w / z.dtype.type(total))[:, None]
    return loss, grad.reshape(logits.shape)


def mse(pred, target):
    """Mean squared error over all entries and its gradient with respect to ``pred``."""
    _float_array("pred", pred)
    xp = module_of(pred)
    target = xp.asarray(target)
    if target.shape != pred.shape:
        raise ValueError(f"target must have the prediction's shape {pred.shape}, got {target.shape}")
    if pred.size == 0:
        raise ValueError("pred must not be empty")
    diff = pred - target.astype(pred.dtype)
    return float((diff.astype(xp.float64) ** 2).mean()), diff * pred.dtype.type(2.0 / pred.size)


__all__ = ["cross_entropy", "mse", "log_softmax", "softmax"]
