"""Where arrays live, and what kind of array the caller gets back.

Any array goes into the functional API: NumPy, lists, anything with ``__array__``, ``__dlpack__`` or
``__cuda_array_interface__``. The kernels see NumPy arrays on the host and CuPy arrays on a GPU, made
without a copy where the input allows one:

    PyTorch tensors     CPU: ``tensor.detach().numpy()``; CUDA: CuPy view (``__cuda_array_interface__``)
    JAX arrays          CPU: ``np.asarray`` (a view where JAX allows); GPU: ``cupy.from_dlpack``
    CuPy, Numba device  CuPy view
    other ``__dlpack__`` ``np.from_dlpack`` (CPU), ``cupy.from_dlpack`` (GPU)
    NumPy, ``__array__`` as NumPy takes them

Results come back as the caller's kind of array (the first non-NumPy argument decides): tensors for
tensors (``torch.from_numpy`` on the CPU: no copy; ``torch.as_tensor`` on the GPU: no copy), JAX arrays
for JAX arrays (copied in by JAX), Numba device arrays for those, CuPy for CuPy and for other GPU
exporters, NumPy for everything else (an object with only ``__array__`` or ``__dlpack__`` gives NumPy).
CuPy, torch and JAX are imported only when their arrays are seen, so ``import fastrnn`` stays free of them.
"""
from __future__ import annotations

import importlib
import math
import numbers
import threading
import weakref
from typing import Any

import numpy as np

from . import config

HOST = "host"
_DLPACK_CPU, _DLPACK_GPUS = 1, (2, 3, 13)      # DLPack device types: CPU; CUDA, CUDA host, CUDA managed


def _package(value: Any) -> str:
    return type(value).__module__.split(".")[0]


def _dlpack_device_type(value: Any):
    try:
        return value.__dlpack_device__()[0]
    except Exception:           # no DLPack, or an exporter that refuses (e.g. a tensor that needs grad)
        return None


def is_gpu_array(value: Any) -> bool:
    """A GPU array: ``__cuda_array_interface__``, or a DLPack exporter on a CUDA device."""
    if isinstance(value, (np.ndarray, numbers.Number, list, tuple)) or value is None:
        return False
    try:
        if hasattr(value, "__cuda_array_interface__"):
            return True
    except Exception:           # some objects raise other errors for unknown attributes (CPU tensors)
        return False
    return _dlpack_device_type(value) in _DLPACK_GPUS


def array_kind(value: Any) -> str:
    """The kind of array results come back as: "torch", "jax", "numba", "cupy" (also other GPU exporters),
    or "host" (NumPy, lists, scalars, and any other object NumPy converts)."""
    if value is None or isinstance(value, (np.ndarray, numbers.Number, list, tuple)):
        return HOST
    package = _package(value)
    if package in ("torch", "jax", "jaxlib"):
        return "jax" if package == "jaxlib" else package
    if is_gpu_array(value):
        return {"numba": "numba", "numba_cuda": "numba"}.get(package, "cupy")
    return HOST


def cupy_module():
    try:
        import cupy
    except ImportError:
        raise ImportError("GPU arrays need cupy, which is not installed; install it with: "
                          "pip install fastrnn[cuda]") from None
    return cupy


def call_kind(named: dict[str, Any]) -> str:
    """The kind of array a call's results come back as: the first non-host kind among its arguments."""
    for value in named.values():
        kind = array_kind(value)
        if kind != HOST:
            return kind
    return HOST


def call_on_gpu(named: dict[str, Any]) -> bool:
    """Whether a call works on the GPU: any of its arguments is a GPU array."""
    return any(is_gpu_array(value) for value in named.values())


def _plain(value) -> bool:
    return value is None or isinstance(value, (np.ndarray, list, tuple, numbers.Number))


def to_device(named: dict[str, Any]) -> dict[str, Any]:
    """GPU arrays -> CuPy views; lists and scalars pass (validation converts them); host arrays are refused."""
    cupy = cupy_module()
    gpu_names = [n for n, v in named.items() if is_gpu_array(v)]
    out = {}
    for name, value in named.items():
        if value is None or isinstance(value, (list, tuple, numbers.Number)):
            out[name] = value
        elif is_gpu_array(value):
            if _package(value) == "torch":
                value = value.detach()      # autograd belongs to fastrnn.torch; the kernels read values
            has_cai = hasattr(value, "__cuda_array_interface__")
            out[name] = cupy.asarray(value) if has_cai else cupy.from_dlpack(value)
        else:
            raise TypeError(
                f"{name} is a host array ({type(value).__name__}) but {gpu_names[0]} is on the GPU; "
                f"pass all arrays on one device (cupy.asarray({name}) moves it)")
    return out


def to_host(named: dict[str, Any]) -> dict[str, Any]:
    """Host arrays of other libraries -> NumPy views where possible; NumPy arrays, lists, scalars pass."""
    out = {}
    for name, value in named.items():
        if _plain(value):
            out[name] = value
        elif _package(value) == "torch":
            if value.device.type != "cpu":
                raise TypeError(f"{name} is a torch tensor on {value.device}; fastrnn takes CPU and CUDA tensors")
            out[name] = value.detach().numpy()
        elif hasattr(value, "__array__"):
            out[name] = np.asarray(value)
        elif _dlpack_device_type(value) == _DLPACK_CPU:
            out[name] = np.from_dlpack(value)
        else:
            out[name] = value           # validation names it if NumPy cannot take it
    return out


def module_of(arr):
    """NumPy for NumPy arrays, CuPy for CuPy arrays."""
    return np if isinstance(arr, np.ndarray) else cupy_module()


def move_arrays(arrays: dict, device: str) -> dict:
    """A dict of arrays on ``device``: "cpu" (NumPy) or "cuda" (CuPy); arrays already there are kept."""
    if device == "cpu":
        move = lambda a: a if isinstance(a, np.ndarray) else a.get()  # noqa: E731
    elif device == "cuda":
        move = cupy_module().asarray
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return {name: move(a) for name, a in arrays.items()}


def as_kind(arr, kind: str):
    """A result array (NumPy or CuPy) as the caller's kind of array."""
    if arr is None or kind == HOST or (kind == "cupy" and not isinstance(arr, np.ndarray)):
        return arr
    if kind == "torch":
        import torch
        if isinstance(arr, np.ndarray):
            return torch.from_numpy(arr)
        return torch.as_tensor(arr, device=f"cuda:{arr.device.id}")
    if kind == "jax":
        jnp = importlib.import_module("jax.numpy")
        return jnp.asarray(arr) if isinstance(arr, np.ndarray) else jnp.from_dlpack(arr)
    if kind == "numba" and not isinstance(arr, np.ndarray):
        from numba import cuda
        return cuda.as_cuda_array(arr)
    return arr


def host_array(value: Any):
    """A host (NumPy-convertible) version of a small array such as lengths."""
    if is_gpu_array(value):
        cupy = cupy_module()
        return cupy.asnumpy(to_device({"value": value})["value"])
    return to_host({"value": value})["value"]


def aligned_empty(shape, dtype, alignment: int = 64) -> np.ndarray:
    """np.empty whose data starts on an ``alignment``-byte boundary (a cache line). NumPy's large
    arrays start 16 bytes past one (malloc's header), so every other 32-byte vector load of a packed
    panel would straddle two cache lines."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.empty(shape, dtype)
    raw = np.empty(count * dtype.itemsize + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


class _Lease:
    """A pooled buffer lent out as one array (NumPy reads ``__array_interface__``). Every view of that
    array keeps this object as its base, so it lives exactly as long as some array uses the memory (and
    it holds the buffer: the memory outlives the pool, should the pool go first)."""
    __slots__ = ("__array_interface__", "buffer", "__weakref__")

    def __init__(self, buffer, address, shape, dtype):
        self.buffer = buffer
        self.__array_interface__ = dict(shape=shape, typestr=dtype.str, version=3, data=(address, False))


class _BufferPool:
    """Free buffers that later calls reuse for arrays of the same size.

    A fresh array of megabytes is paid for on first touch: a page fault per 4 KiB, or a huge page the
    kernel zeroes first, and glibc returns blocks of over 32 MiB (smaller ones too, after some
    patterns of calls) to the system when they are freed, so every call paid again (cpp, LSTM, T = 512,
    B = 8, H = 128: 4012 faults and 9.6 ms of system time in a 17.3 ms forward+backward). A lent buffer comes
    back when the last array made from it goes (a weak reference to its _Lease, whose callback returns
    it); results the caller keeps, and tapes, simply keep theirs. Free buffers beyond config.POOL_BYTES
    are let go, the least recently used first. A buffer travels with its address, read once: per
    lending, ``ndarray.ctypes.data`` and a ``weakref.finalize`` took 7 of the 20 us a lending cost."""

    def __init__(self):
        self._lock = threading.RLock()        # (a callback may run inside a locked section, on this thread)
        self._free = []                        # (nbytes, buffer, address), the most recently freed last
        self._free_bytes = 0
        self._lent = {}                        # weak reference to a _Lease -> its (nbytes, buffer, address)

    def empty(self, shape, dtype) -> np.ndarray:
        # (kept short: this runs for every array of every call, small ones included; an isinstance
        # against numbers.Integral alone cost a fifth of a microsecond)
        if type(shape) is not tuple:
            shape = tuple(shape) if isinstance(shape, list) else (shape,)
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < config.POOL_MIN_BYTES or config.POOL_BYTES <= 0:
            return np.empty(shape, dtype)
        entry = None
        with self._lock:
            for i in range(len(self._free) - 1, -1, -1):
                if self._free[i][0] == nbytes:
                    entry = self._free.pop(i)
                    self._free_bytes -= nbytes
                    break
        if entry is None:
            buffer = aligned_empty(nbytes, np.uint8)
            entry = (nbytes, buffer, buffer.ctypes.data)
        lease = _Lease(entry[1], entry[2], tuple(int(n) for n in shape), dtype)
        self._lent[weakref.ref(lease, self._give_back)] = entry
        return np.asarray(lease)

    def _give_back(self, reference):
        entry = self._lent.pop(reference)
        with self._lock:
            self._free.append(entry)
            self._free_bytes += entry[0]
            while self._free_bytes > config.POOL_BYTES:
                self._free_bytes -= self._free.pop(0)[0]

    def release(self):
        with self._lock:
            self._free.clear()
            self._free_bytes = 0


_POOL = _BufferPool()


def pooled_empty(shape, dtype) -> np.ndarray:
    """np.empty for the CPU backends' work and result arrays: arrays of 1 MiB or more reuse a free
    buffer of the same size when the pool has one (_BufferPool)."""
    return _POOL.empty(shape, dtype)


def release_memory() -> None:
    """Let go of the free buffers the CPU backends keep for later calls (see config.POOL_BYTES);
    arrays still in use keep theirs."""
    _POOL.release()
