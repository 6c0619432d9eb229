"""Several thread blocks at once in Numba's CUDA simulator, so that multi-block kernels can be checked on a CPU.

The simulator runs a grid's blocks one after another, gives them one shared-memory buffer, and its grid
sync is only a block barrier: a persistent kernel with a grid-wide sync per step can run there as a single
block only. Inside ``concurrent_blocks()``:
  - every block of a launch runs at the same time (each still as its own Python threads);
  - each block gets its own dynamic shared memory;
  - ``cuda.cg.this_grid().sync()`` waits for every thread of every block.
Memory is coherent in the simulator, so this finds ordering and indexing errors between blocks (a block
reading what another has not written yet, wrong unit or batch ranges), not stale-cache effects of a GPU.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np


@contextmanager
def concurrent_blocks(monkeypatch):
    from numba.cuda.simulator import kernel as sim_kernel
    from numba.cuda.simulator import kernelapi

    state = {"barrier": None}
    SerialManager = sim_kernel.BlockManager

    class ConcurrentManager(SerialManager):
        """run() of all blocks but the last starts a thread and returns; the last block's run() runs
        here and then waits for the others, so the launch returns when every block is done."""
        pending: list = []

        def run(self, grid_point, *args):
            grid = tuple(self._grid_dim)
            last = tuple(d - 1 for d in grid)
            if state["barrier"] is None:
                state["barrier"] = threading.Barrier(int(np.prod(grid)))
            if tuple(grid_point) != last:
                errors = []

                def body():
                    try:
                        SerialManager.run(self, grid_point, *args)
                    except BaseException as exc:        # re-raised by the last block
                        errors.append(exc)
                        state["barrier"].abort()
                worker = threading.Thread(target=body, daemon=True)
                worker.start()
                ConcurrentManager.pending.append((worker, errors))
                return
            try:
                SerialManager.run(self, grid_point, *args)
            finally:
                for worker, errors in ConcurrentManager.pending:
                    worker.join()
                    if errors:
                        raise errors[0]
                ConcurrentManager.pending = []
                state["barrier"] = None

    def grid_sync(group):
        thread = threading.current_thread()
        thread.syncthreads()
        if thread.thread_id == 0:
            state["barrier"].wait()
        thread.syncthreads()

    original_array = kernelapi.FakeCUDAShared.array

    def per_block_array(shared, shape, dtype, alignment=None):
        if shape != 0:
            return original_array(shared, shape, dtype, alignment)
        block = tuple(threading.current_thread().blockIdx)
        buffers = shared.__dict__.setdefault("_per_block", {})
        with kernelapi.addlock:
            if block not in buffers:
                buffers[block] = np.zeros(shared._dynshared_size, dtype=np.byte)
        dtype = np.dtype(dtype) if not hasattr(dtype, "bitwidth") else kernelapi.numpy_support.as_dtype(dtype)
        return np.frombuffer(buffers[block].data, dtype=dtype, count=shared._dynshared_size // dtype.itemsize)

    monkeypatch.setattr(sim_kernel, "BlockManager", ConcurrentManager)
    monkeypatch.setattr(kernelapi.GridGroup, "sync", grid_sync)
    monkeypatch.setattr(kernelapi.FakeCUDAShared, "array", per_block_array)
    yield
