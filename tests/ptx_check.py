"""Compile the real CUDA kernels to PTX for compute capability 9.0 without a GPU (run by test_cuda.py).

Kernels with a grid-wide sync ask the driver for the current device while compiling; a fixed
compute capability stands in for it here. Prints one "ok" line per kernel: the persistent ones
(build) and the stepwise path's (build_stepwise).
"""
from unittest import mock

from numba import cuda, types
from numba.cuda import dispatcher

from fastrnn.backends import _cuda_kernels as kernels


class _Hopper:
    compute_capability = (9, 0)


def signatures(dt):
    a1, a2, a3 = (types.Array(dt, n, "C") for n in (1, 2, 3))
    lengths = types.Array(types.int32, 1, "C")
    forward = (a3, a3, a1, a3, a3, a3, a3, a3, lengths, types.int64)
    backward = (a3, a3, a3, a3, a3, lengths, a3, a3, a2, a2, a2)
    return {"forward": forward, "backward": backward}


def stepwise_signatures(dt):
    a1, a2, a3 = (types.Array(dt, n, "C") for n in (1, 2, 3))
    lengths = types.Array(types.int32, 1, "C")
    i64 = types.int64
    forward = (i64,) * 3 + (a3, a2, a1, a3, a3, a3, a3, a3, lengths)
    backward = (i64,) * 3 + (a2, a3, a3, a3, a3, lengths, a3, a3, a2, a2, a2)
    # the LSTM's projections
    projected = {"projected_cell_step": (i64, i64, a3, a2, a1, a3, a3, a3, lengths),
                 "project_step": (i64, a3, a3, lengths),
                 "projected_dh": (i64, i64, a2, a3, a2, a3, lengths, a2)}
    return {"forward": forward, "backward": backward, **projected}


with mock.patch.object(dispatcher, "get_current_device", lambda: _Hopper()):
    for code in range(5):
        built = kernels.build(code, 8, 1, 32, 256, "float32")
        for direction, sig in signatures(types.float32).items():
            ptx, _ = cuda.compile_ptx(built[direction][0].py_func, sig, cc=(9, 0))
            assert ".target sm_90" in ptx and "cudaCGSynchronize" in ptx
            print(f"ok {code} {direction} ({len(ptx)} bytes of PTX)", flush=True)
        stepwise = kernels.build_stepwise(code, "float32")
        for direction, sig in stepwise_signatures(types.float32).items():
            if direction not in stepwise:
                continue            # (projections: the LSTM's only)
            ptx, _ = cuda.compile_ptx(stepwise[direction].py_func, sig, cc=(9, 0))
            assert ".target sm_90" in ptx and "cudaCGSynchronize" not in ptx
            print(f"ok {code} stepwise {direction} ({len(ptx)} bytes of PTX)", flush=True)
