"""fastrnn.torch under DistributedDataParallel: 2 processes (gloo, a file store on this machine) train the same
model with torch.nn.LSTM and after fastrnn.torch.convert; every gradient of every step must agree (float64)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from rnncases import rel_error

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

WORKER = Path(__file__).with_name("ddp_worker.py")
WORLD = 2


def test_ddp_gradients_match_torch_nn(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    backend = next(b for b in ("numba", "cpp", "reference") if b in fastrnn.available_backends())
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}   # 2 ranks on 2 cores
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), str(WORLD), str(store),
                               str(tmp_path / f"rank{rank}.npz"), backend], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(WORLD)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{out}"
    ranks = [dict(np.load(tmp_path / f"rank{rank}.npz")) for rank in range(WORLD)]
    torch_keys = [k for k in ranks[0] if k.startswith("torch/")]
    assert len(torch_keys) == 3 * (2 * 2 * 4 + 2)       # 3 steps x (2 layers x 2 directions x 4 tensors + linear)
    for results in ranks:
        for key in torch_keys:
            fast = results[key.replace("torch/", "fastrnn/", 1)]
            assert rel_error(fast, results[key]) <= 1e-9, key
    for key in ranks[0]:                                # DDP averaged: every rank holds the same gradients
        assert np.array_equal(ranks[0][key], ranks[1][key]), key
