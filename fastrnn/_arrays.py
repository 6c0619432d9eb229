"""Where arrays live: NumPy on the host, or on a GPU (CuPy, Numba device arrays, PyTorch CUDA tensors).

GPU arrays are recognised by ``__cuda_array_interface__``, taken into CuPy without a copy, and the
results are handed back as the caller's kind of array (CuPy in, CuPy out; a PyTorch CUDA tensor in,
tensors out; a Numba device array in, device arrays out). CuPy is imported only when a GPU array
is seen, so ``import fastrnn`` and every CPU call stay free of it.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

HOST = "host"


def is_gpu_array(value: Any) -> bool:
    try:
        return hasattr(value, "__cuda_array_interface__")
    except Exception:           # some objects raise other errors for unknown attributes
        return False


def array_kind(value: Any) -> str:
    """"host", or the family of a GPU array: "cupy", "torch", "numba" (other exporters: "cupy")."""
    if not is_gpu_array(value):
        return HOST
    package = type(value).__module__.split(".")[0]
    return {"torch": "torch", "numba": "numba", "numba_cuda": "numba"}.get(package, "cupy")


def cupy_module():
    try:
        import cupy
    except ImportError:
        raise ImportError("GPU arrays need cupy, which is not installed; install it with: "
                          "pip install fastrnn[cuda]") from None
    return cupy


def call_kind(named: dict[str, Any]) -> str:
    """The kind of array a call works in: the first GPU array's family, else "host"."""
    for value in named.values():
        kind = array_kind(value)
        if kind != HOST:
            return kind
    return HOST


def to_device(named: dict[str, Any]) -> dict[str, Any]:
    """GPU arrays -> CuPy views; lists and scalars pass (validation converts them); host arrays are refused."""
    cupy = cupy_module()
    gpu_names = [n for n, v in named.items() if is_gpu_array(v)]
    out = {}
    for name, value in named.items():
        if value is None or isinstance(value, (list, tuple, numbers.Number)):
            out[name] = value
        elif is_gpu_array(value):
            out[name] = cupy.asarray(value)
        else:
            raise TypeError(
                f"{name} is a host array ({type(value).__name__}) but {gpu_names[0]} is on the GPU; "
                f"pass all arrays on one device (cupy.asarray({name}) moves it)")
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
    if arr is None or kind in (HOST, "cupy"):
        return arr
    if kind == "torch":
        import torch
        return torch.as_tensor(arr, device=f"cuda:{arr.device.id}")
    from numba import cuda
    return cuda.as_cuda_array(arr)


def host_array(value: Any):
    """A host (NumPy-convertible) version of a small array such as lengths."""
    if is_gpu_array(value):
        return cupy_module().asnumpy(cupy_module().asarray(value))
    return value
