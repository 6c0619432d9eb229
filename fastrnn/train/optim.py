"""SGD and Adam, updating parameters in place: torch.optim's update rules, on NumPy or CuPy arrays.

    opt = Adam([embedding, lstm, head], lr=2e-3)   # anything with .params and .grads dicts of the same names
    ...; model.backward(...); opt.step(); opt.zero_grad()

A parameter source is a fastrnn layer (or Linear/Embedding, or any object with ``params`` and ``grads`` dicts)
or a pair ``(params, grads)`` of dicts. The optimiser looks the arrays up by name on every step, so it keeps
working after ``layer.to("cuda")`` or ``load_state_dict`` (which replace the arrays); its state (momentum,
moments) is created on the first step, on the parameter's device.

SGD (g = grad + weight_decay * p; torch.optim.SGD):

    b <- g (first step) | momentum * b + (1 - dampening) * g
    d = g + momentum * b (nesterov) | b (momentum > 0) | g
    p <- p - lr * d

Adam (torch.optim.Adam, amsgrad off; weight_decay is L2 added to g; ``AdamW`` decouples it, p <- p(1 - lr wd)):

    m <- beta1 m + (1 - beta1) g            v <- beta2 v + (1 - beta2) g^2          (t = step count)
    p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

eps is added after the bias correction of sqrt(v), as torch does (not to v-hat inside the root).
"""
from __future__ import annotations

import math
import numbers

from .._arrays import module_of


def _sources(params) -> list:
    """Normalise to a list of (params dict owner) getters: each yields (params, grads) on demand."""
    if hasattr(params, "params") or (isinstance(params, tuple) and len(params) == 2
                                     and all(isinstance(d, dict) for d in params)):
        params = [params]
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError("params must be a layer with .params and .grads dicts, a (params, grads) pair of dicts, "
                        f"or a non-empty list of those; got {type(params).__name__}")
    sources = []
    for i, source in enumerate(params):
        if isinstance(source, tuple) and len(source) == 2 and all(isinstance(d, dict) for d in source):
            pair = source
            sources.append(lambda pair=pair: pair)
        elif isinstance(getattr(source, "params", None), dict) and isinstance(getattr(source, "grads", None), dict):
            sources.append(lambda source=source: (source.params, source.grads))
        else:
            raise TypeError(f"params[{i}] must be a layer with .params and .grads dicts or a (params, grads) "
                            f"pair of dicts, got {type(source).__name__}")
        p, g = sources[-1]()
        if set(p) != set(g):
            raise ValueError(f"params[{i}]: params and grads must have the same names; "
                             f"differ in {sorted(set(p) ^ set(g))}")
    return sources


def _number(name, value, low=0.0, high=math.inf, low_open=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (value > low if low_open else value >= low) and value < high
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high})"
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")
    return float(value)


class Optimizer:
    """Shared by SGD and Adam: the parameter sources, the per-parameter state, zero_grad."""

    def __init__(self, params, lr):
        self._sources = _sources(params)
        self.lr = _number("lr", lr, low_open=True)
        self.state: dict = {}                 # (source index, name) -> dict of arrays
        self.steps = 0

    def _parameters(self):
        for i, source in enumerate(self._sources):
            params, grads = source()
            for name, p in params.items():
                yield (i, name), p, grads[name]

    def zero_grad(self) -> None:
        for _, _, g in self._parameters():
            g[...] = 0

    def step(self) -> None:
        self.steps += 1
        for key, p, g in self._parameters():
            if p.shape != g.shape:
                raise ValueError(f"gradient of {key[1]!r} has shape {g.shape}, its parameter {p.shape}")
            self._update(self.state.setdefault(key, {}), p, g)

    def _update(self, state, p, g):      # pragma: no cover - defined by subclasses
        raise NotImplementedError


class SGD(Optimizer):
    """torch.optim.SGD: momentum, dampening, weight decay (L2), Nesterov."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum = _number("momentum", momentum)
        self.dampening = _number("dampening", dampening)
        self.weight_decay = _number("weight_decay", weight_decay)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)

    def _update(self, state, p, g):
        d = g + self.weight_decay * p if self.weight_decay else g
        if self.momentum:
            if "momentum" not in state:
                state["momentum"] = d.copy()
            else:
                b = state["momentum"]
                b *= self.momentum
                b += (1 - self.dampening) * d
            d = d + self.momentum * state["momentum"] if self.nesterov else state["momentum"]
        p -= p.dtype.type(self.lr) * d


class Adam(Optimizer):
    """torch.optim.Adam (amsgrad off), with bias correction and torch's placement of eps."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = _number("betas[0]", betas[0], high=1.0)
        self.beta2 = _number("betas[1]", betas[1], high=1.0)
        self.eps = _number("eps", eps)
        self.weight_decay = _number("weight_decay", weight_decay)

    def _update(self, state, p, g):
        xp = module_of(p)
        if "m" not in state:
            state["m"], state["v"] = xp.zeros_like(p), xp.zeros_like(p)
        if self.weight_decay:
            if self.decoupled:
                p *= p.dtype.type(1 - self.lr * self.weight_decay)
            else:
                g = g + self.weight_decay * p
        m, v, t = state["m"], state["v"], self.steps
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        step_size = self.lr / (1 - self.beta1 ** t)
        denominator = xp.sqrt(v) / math.sqrt(1 - self.beta2 ** t) + p.dtype.type(self.eps)
        p -= p.dtype.type(step_size) * (m / denominator)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 0.01)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
