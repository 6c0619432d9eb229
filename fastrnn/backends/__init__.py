"""Backend registry: name -> Backend(is_available, load); "auto" resolution.

A backend module provides two functions on validated, time-major problems
(see :class:`fastrnn._types.Sequence`):

    forward(seq, save) -> (y, h_n, c_n, saved)
        y (T, B, P), h_n (B, P), c_n (B, H) or None; ``saved`` is the backend's
        private record for backward (None when ``save`` is False).
    backward(seq, saved, dy, dh_n, dc_n) -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)
        dy (T, B, P), dh_n (B, P), dc_n (B, H), each possibly None (zero); dc0 None
        unless LSTM; db_* None when the forward had no bias; dw_hr None without projections
        (P = H then; only a Backend with ``projections`` gets seq.w_hr).

Modules are imported only when a backend is first used, so ``import fastrnn``
stays light and optional dependencies stay optional.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Callable, Optional

from .. import config


@dataclass
class Backend:
    name: str
    module: str                      # import path of the implementing module
    requires: tuple[str, ...] = ()   # top-level modules that must import
    install_hint: str = ""           # what installs it, shown when it is missing
    description: str = ""
    _loaded: object = field(default=None, repr=False)

    device_check: Optional[Callable[[], Optional[str]]] = None   # None when usable, else why not
    runs_on_gpu: bool = False
    projections: bool = True         # it runs the LSTM with projections (seq.w_hr, torch's proj_size)
    # once loaded: the name of a cheap function of the module, asked on every resolution, that says why this
    # process cannot run it now (None when it can): numba's kernels in a child forked after OpenMP ran
    process_check: Optional[str] = None

    def _missing(self) -> list[str]:
        return [req for req in self.requires if _find_spec(req) is None]

    def unavailable_reason(self) -> Optional[str]:
        missing = self._missing()
        if missing:
            return (f"backend {self.name!r} needs {', '.join(missing)}, which is not installed; "
                    f"{self.install_hint}")
        return self.device_check() if self.device_check is not None else None

    def is_available(self) -> bool:
        # once loaded it stays available but for its process check (and "auto" asks on every call:
        # find_spec costs ~10 us)
        if self._loaded is not None:
            return self._process_reason() is None
        return self.unavailable_reason() is None

    def load(self):
        if self._loaded is None:
            reason = self.unavailable_reason()
            if reason is not None:
                raise (ImportError if self._missing() else RuntimeError)(reason)
            self._loaded = importlib.import_module(self.module)
        if (reason := self._process_reason()) is not None:
            raise RuntimeError(reason)
        return self._loaded

    def _process_reason(self) -> Optional[str]:
        return None if self.process_check is None else getattr(self._loaded, self.process_check)()


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):       # a parent package is missing
        return None


def _cuda_device_check() -> Optional[str]:
    """Why the "cuda" backend cannot run here (None when it can): a GPU, or the simulator."""
    from numba import config as numba_config
    if numba_config.ENABLE_CUDASIM:
        return None
    from numba import cuda
    if cuda.is_available():
        if _find_spec("cupy") is None:
            return ("backend 'cuda' needs cupy for its GEMMs and arrays, which is not installed; "
                    "install it with: pip install fastrnn[cuda]")
        return None
    return ("backend 'cuda' found no CUDA GPU (numba.cuda.is_available() is False: no NVIDIA driver or "
            "device); set NUMBA_ENABLE_CUDASIM=1 to run its kernels in the Numba CUDA simulator (slow, "
            "for testing)")


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


# modules named from this package's own name, so that a renamed copy of the package runs its own code
# (benchmarks/ab_inprocess.py times a revision's copy beside the working tree in one process)
_PACKAGE = __name__.rpartition(".")[0]
register(Backend("numba", f"{__name__}.numba_cpu", requires=("numba",),
                 install_hint="install it with: pip install numba", process_check="fork_reason",
                 description="fused persistent CPU kernels compiled by Numba"))
register(Backend("cpp", f"{__name__}.cpp", requires=(f"{_PACKAGE}._ext",),
                 install_hint="it is built by `pip install .` with a C++17 compiler (unless FASTRNN_NO_EXT=1)",
                 description="fused persistent CPU kernels in C++ (a thread pool, AVX-512/AVX2 chosen at run time)"))
register(Backend("cuda", f"{__name__}.numba_cuda", requires=("numba", "numba_cuda"),
                 install_hint="install it with: pip install fastrnn[cuda]",
                 description="persistent fused GPU kernels (Numba CUDA), cuBLAS GEMMs through CuPy",
                 device_check=_cuda_device_check, runs_on_gpu=True))
register(Backend("reference", f"{__name__}.reference",
                 description="NumPy oracle: textbook equations, exact to float64 rounding"))


def registered_backends() -> dict[str, Backend]:
    """Every known backend by name, available here or not (see Backend.unavailable_reason)."""
    return dict(_REGISTRY)


def available_backends() -> list[str]:
    """Names of the backends that can run here, in registry order."""
    return [name for name, b in _REGISTRY.items() if b.is_available()]


def resolve(name, gpu: bool = False, projections: bool = False, shape=None,
            training: bool = False) -> tuple[str, object]:
    """Map a backend name (or "auto") to ``(name, module)``; errors say what is wrong.

    ``gpu``: the call's arrays are on a GPU; "auto" then means "cuda", and CPU backends refuse.
    ``projections``: an LSTM with projections; "auto" then skips backends without them, and others refuse.
    ``shape``: (T, B, H) of the call; "auto" on the CPU then takes the backend measured faster there,
    for forward+backward when ``training`` (config.cpu_backend_order).
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type(name).__name__}")
    if gpu:
        if name not in ("auto", "cuda") and name in _REGISTRY:
            raise TypeError(f"backend {name!r} runs on the CPU but the arrays are on a GPU; use "
                            f"backend='cuda' (or 'auto'), or copy the arrays to the host first")
        name = "cuda" if name == "auto" else name
    if name == "auto":
        for candidate in config.cpu_backend_order(shape, training):
            backend = _REGISTRY.get(candidate)
            if backend is not None and backend.is_available() and (backend.projections or not projections):
                return candidate, backend.load()
        raise RuntimeError(
            f"no backend of FASTRNN_CPU_BACKENDS={','.join(config.CPU_BACKEND_ORDER)} is available"
            f"{' with LSTM projections' if projections else ''}; available: {available_backends()}")
    backend = _REGISTRY.get(name)
    if backend is None:
        raise ValueError(f"backend must be 'auto' or one of {sorted(_REGISTRY)}, got {name!r}")
    if projections and not backend.projections:
        raise NotImplementedError(f"backend {name!r} has no LSTM projections (w_hr); use backend='auto' or one of "
                                  f"{[n for n, b in _REGISTRY.items() if b.projections]}")
    return name, backend.load()


__all__ = ["Backend", "register", "registered_backends", "available_backends", "resolve"]
