"""Backend registry: name -> Backend(is_available, load); "auto" resolution.

A backend module provides two functions on validated, time-major problems
(see :class:`fastrnn._types.Sequence`):

    forward(seq, save) -> (y, h_n, c_n, saved)
        y (T, B, H), h_n (B, H), c_n (B, H) or None; ``saved`` is the backend's
        private record for backward (None when ``save`` is False).
    backward(seq, saved, dy, dh_n, dc_n) -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
        dy (T, B, H), dh_n, dc_n (B, H), each possibly None (zero); dc0 None
        unless LSTM; db_* None when the forward had no bias.

Modules are imported only when a backend is first used, so ``import fastrnn``
stays light and optional dependencies stay optional.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

from .. import config


@dataclass
class Backend:
    name: str
    module: str                      # import path of the implementing module
    requires: tuple[str, ...] = ()   # top-level modules that must import
    install_hint: str = ""           # what installs it, shown when it is missing
    description: str = ""
    _loaded: object = field(default=None, repr=False)

    def is_available(self) -> bool:
        return all(importlib.util.find_spec(req) is not None for req in self.requires)

    def load(self):
        if self._loaded is None:
            if not self.is_available():
                missing = [r for r in self.requires if importlib.util.find_spec(r) is None]
                raise ImportError(
                    f"backend {self.name!r} needs {', '.join(missing)}, which is not installed; "
                    f"{self.install_hint}")
            self._loaded = importlib.import_module(self.module)
        return self._loaded


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


register(Backend("numba", "fastrnn.backends.numba_cpu", requires=("numba",),
                 install_hint="install it with: pip install numba",
                 description="fused persistent CPU kernels compiled by Numba"))
register(Backend("reference", "fastrnn.backends.reference",
                 description="NumPy oracle: textbook equations, exact to float64 rounding"))


def available_backends() -> list[str]:
    """Names of the backends that can run here, in registry order."""
    return [name for name, b in _REGISTRY.items() if b.is_available()]


def resolve(name) -> tuple[str, object]:
    """Map a backend name (or "auto") to ``(name, module)``; errors say what is wrong."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type(name).__name__}")
    if name == "auto":
        for candidate in config.CPU_BACKEND_ORDER:
            backend = _REGISTRY.get(candidate)
            if backend is not None and backend.is_available():
                return candidate, backend.load()
        raise RuntimeError(
            f"no backend of FASTRNN_CPU_BACKENDS={','.join(config.CPU_BACKEND_ORDER)} is available; "
            f"available: {available_backends()}")
    backend = _REGISTRY.get(name)
    if backend is None:
        raise ValueError(f"backend must be 'auto' or one of {sorted(_REGISTRY)}, got {name!r}")
    return name, backend.load()


__all__ = ["Backend", "register", "available_backends", "resolve"]
