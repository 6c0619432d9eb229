import ctypes.util
import os
import zlib

import numpy as np
import pytest

# Without an NVIDIA driver the "cuda" backend's kernels run in Numba's CUDA simulator (tests/test_cuda.py
# keeps those problems tiny). numba reads this once, at import, so it is set before any test imports it.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and ctypes.util.find_library("cuda") is None:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

CUDA_SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


@pytest.fixture
def rng(request):
    # fresh, reproducible inputs per test: the seed follows the test's id
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def fixed_worker_threshold(monkeypatch):
    """Steps of fewer than 32768 multiply-adds on one worker, as FASTRNN_PARALLEL_MIN_MACS=32768 would: by
    default the threshold follows a measured round trip between cores (backends/_workers.py), which
    would let two calls of one test take different paths (tests/test_workers.py tests that policy;
    split_work fixtures force several workers)."""
    from fastrnn import config
    if config.PARALLEL_MIN_MACS is None:
        monkeypatch.setattr(config, "PARALLEL_MIN_MACS", 32768)
