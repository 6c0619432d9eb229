"""The "cuda" backend: in Numba's CUDA simulator without a GPU (CI), on the device when there is one.

Without a GPU the kernels run in the simulator on tiny problems (one block: the simulator runs blocks
one after another, so a grid-wide sync needs a single block there); the real kernels are compiled to
PTX for compute capability 9.0 in a subprocess. With a GPU, tests/test_backends.py runs its whole
matrix on "cuda" as well, and the GPU-only tests below check GPU arrays in and out, several blocks,
several batch tiles and the weights-from-L2 path.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from conftest import CUDA_SIMULATED
from rnncases import CELL_FORM_IDS, CELL_FORMS, assert_matches_oracle, make_problem, rel_error, run

HAVE_CUDA = "cuda" in fastrnn.available_backends()
ON_GPU = HAVE_CUDA and not CUDA_SIMULATED
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="no GPU and the CUDA simulator is off")
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")

# tiny in the simulator (every GPU thread is a Python thread there); T, B, I, H, options
SIMULATOR_CASES = {
    "T1B1I1H1-no-bias-zero-state": ((1, 1, 1, 1), dict(bias=False, init_state=False)),
    "lengths": ((3, 3, 2, 5), dict(lengths=True)),
    "two-batch-tiles-batch-first": ((2, 9, 3, 2), dict(batch_first=True)),
}


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(SIMULATOR_CASES), ids=list(SIMULATOR_CASES))
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_cuda_matches_reference(rng, cell, variant, case, dtype):
    shape, options = SIMULATOR_CASES[case]
    assert_matches_oracle(make_problem(rng, cell, variant, *shape, **options), "cuda", dtype)


# the stepwise path: a GEMM and a pointwise launch a step; 42 pairs take two simulator blocks of 32 threads
STEPWISE_CASES = {**SIMULATOR_CASES, "several-blocks": ((3, 7, 4, 6), dict(lengths=True))}


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(STEPWISE_CASES), ids=list(STEPWISE_CASES))
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_cuda_stepwise_matches_reference(rng, monkeypatch, cell, variant, case, dtype):
    from fastrnn import config
    monkeypatch.setattr(config, "CUDA_STEPWISE", "always")
    shape, options = STEPWISE_CASES[case]
    assert_matches_oracle(make_problem(rng, cell, variant, *shape, **options), "cuda", dtype)


# LSTM with projections (w_hr: h of size P), which runs stepwise: T, B, I, H, P, options
PROJECTION_CASES = {
    "T1B1I1H1P1": ((1, 1, 1, 1, 1), dict()),
    "lengths": ((5, 3, 4, 19, 11), dict(lengths=True)),
    "P-above-H-batch-first-no-bias": ((4, 7, 3, 6, 9), dict(batch_first=True, bias=False, lengths=True)),
    "zero-state-unbatched": ((3, 1, 2, 5, 3), dict(init_state=False, unbatched=True)),
}


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(PROJECTION_CASES), ids=list(PROJECTION_CASES))
def test_cuda_lstm_projections_match_reference(rng, case, dtype):
    (T, B, I, H, P), options = PROJECTION_CASES[case]
    problem = make_problem(rng, "lstm", None, T, B, I, H, proj_size=P, scale=0.2, **options)
    assert_matches_oracle(problem, "cuda", dtype)


@needs_cuda
def test_cuda_stepwise_choice(monkeypatch):
    """"auto" takes the stepwise path for large batches of large steps and where the persistent
    kernels do not fit in shared memory; "always" / "never" force it; anything else is refused."""
    from fastrnn import config
    from fastrnn.backends import numba_cuda
    monkeypatch.setattr(config, "CUDA_STEPWISE", "auto")
    assert numba_cuda.stepwise(64, 512) and numba_cuda.stepwise(256, 256)
    assert not numba_cuda.stepwise(8, 1024) and not numba_cuda.stepwise(64, 128)
    assert numba_cuda.plan(0, False, 64, 512, 4) is None and numba_cuda.plan(0, True, 8, 512, 4) is not None
    sms, _ = numba_cuda._device_limits()
    monkeypatch.setattr(numba_cuda, "_device_limits", lambda: (sms, 256))
    assert numba_cuda.plan(0, False, 2, 64, 4) is None
    for mode, taken in (("always", True), ("never", False)):
        monkeypatch.setattr(config, "CUDA_STEPWISE", mode)
        assert numba_cuda.stepwise(1, 1) is taken and numba_cuda.stepwise(256, 1024) is taken
    monkeypatch.setattr(config, "CUDA_STEPWISE", "sometimes")
    with pytest.raises(ValueError, match="FASTRNN_CUDA_STEPWISE"):
        numba_cuda.plan(0, False, 2, 4, 4)


@needs_cuda
def test_cuda_too_large_for_shared_memory_runs_stepwise(rng, monkeypatch):
    """A shape whose batch row of the persistent kernels' products does not fit in shared memory (here:
    a limit of 256 bytes) runs on the stepwise path instead of failing."""
    from fastrnn.backends import numba_cuda
    sms, _ = numba_cuda._device_limits()
    monkeypatch.setattr(numba_cuda, "_device_limits", lambda: (sms, 256))
    assert_matches_oracle(make_problem(rng, "gru", False, 3, 2, 3, 40, lengths=True, scale=0.3), "cuda",
                          np.float64)


@pytest.mark.skipif(not CUDA_SIMULATED, reason="runs the simulator's blocks at once; a GPU runs the real grid")
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_cuda_several_blocks_in_the_simulator(rng, monkeypatch, cell, variant):
    """Three unit groups of 2 units (the last one part-empty) times 2 batch groups (B = 9: two float32
    tiles of 8), all six blocks running at once with a real grid-wide barrier (tests/sim_grid.py): the
    multi-block indexing, weight packing and ordering between blocks. (It fails with the grid barrier
    reduced to a block barrier.)"""
    from fastrnn.backends import numba_cuda
    from sim_grid import concurrent_blocks
    monkeypatch.setattr(numba_cuda, "SIMULATED_UNITS", 2)
    monkeypatch.setattr(numba_cuda, "SIMULATED_BATCH_GROUPS", 2)
    problem = make_problem(rng, cell, variant, 3, 9, 2, 5, lengths=True)
    with concurrent_blocks(monkeypatch):
        assert_matches_oracle(problem, "cuda", np.float32)


@pytest.mark.skipif(not CUDA_SIMULATED, reason="the simulator with a GPU's lane count; a GPU runs it as is")
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell,variant", [("lstm", None), ("gru", False)], ids=["lstm", "gru-cho"])
def test_cuda_warp_wide_dot_products_in_the_simulator(rng, monkeypatch, cell, variant, B):
    """Dot products split over 32 lanes as on a GPU (the simulator's default is 8): the transposed lane
    sums with fewer sums than lanes (B = 1: 4 a lane) and as many (B = 3, a tile of 8 x 4 rows)."""
    from fastrnn.backends import numba_cuda
    monkeypatch.setattr(numba_cuda, "_LANES", 32)
    monkeypatch.setattr(numba_cuda, "_THREADS", 64)
    assert_matches_oracle(make_problem(rng, cell, variant, 2, B, 3, 4), "cuda", np.float32)


@pytest.mark.skipif(not CUDA_SIMULATED, reason="a tiny problem for the simulator; a GPU runs the matrix")
@pytest.mark.parametrize("tile", [16, 32])
def test_cuda_wide_batch_tiles_in_the_simulator(rng, monkeypatch, tile):
    """FASTRNN_CUDA_BATCH_TILE: tiles of 16 (2 rows a thread) and 32 (1 row), B = 17 leaving a ragged tile."""
    from fastrnn import config
    from fastrnn.backends import numba_cuda
    monkeypatch.setattr(config, "CUDA_BATCH_TILE", tile)
    split = numba_cuda.plan(0, False, 17, 4, 4)
    assert (split.batch_tile, split.row_tile) == (tile, 32 // tile)
    assert_matches_oracle(make_problem(rng, "lstm", None, 2, 17, 3, 4, lengths=True), "cuda", np.float32)


@needs_cuda
def test_cuda_batch_tile_setting_is_checked(monkeypatch):
    from fastrnn import config
    from fastrnn.backends import numba_cuda
    monkeypatch.setattr(config, "CUDA_BATCH_TILE", 12)
    with pytest.raises(ValueError, match="FASTRNN_CUDA_BATCH_TILE"):
        numba_cuda.plan(0, False, 17, 4, 4)


@needs_cuda
def test_cuda_nan_in_gives_nan_out(rng):
    problem = make_problem(rng, "lstm", None, 3, 2, 2, 3)
    problem.args["x"][1, 0, 0] = np.nan
    got = run(problem, "cuda")
    assert np.isnan(got["y"][1:, 0]).all() and np.isfinite(got["y"][:, 1]).all()
    assert np.isnan(got["dx"][:2, 0]).any()


@needs_cuda
def test_cuda_work_split_is_valid(monkeypatch):
    from fastrnn import config
    from fastrnn.backends import _cuda_kernels as kernels
    from fastrnn.backends import numba_cuda
    monkeypatch.setattr(config, "CUDA_STEPWISE", "never")      # the persistent kernels' splits at every shape
    for code in range(5):
        for backward in (False, True):
            for B, H in ((1, 1), (3, 7), (64, 1024), (256, 512)):
                split = numba_cuda.plan(code, backward, B, H, 4)
                assert split.units * split.blocks >= H > (split.blocks - 1) * split.units
                rows = split.units if (backward or code == kernels.GRU_CHO) else kernels.NUM_GATES[code] * split.units
                assert rows % split.row_tile == 0


@pytest.mark.skipif(ON_GPU, reason="checks the message on a machine without a GPU")
def test_cuda_unavailable_without_gpu_or_simulator():
    script = ("import fastrnn, numpy as np\n"
              "assert 'cuda' not in fastrnn.available_backends(), fastrnn.available_backends()\n"
              "try:\n"
              "    fastrnn.rnn(np.zeros((2, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), backend='cuda')\n"
              "except (RuntimeError, ImportError) as exc:\n"
              "    print(exc)\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "backend 'cuda'" in out.stdout and ("no CUDA GPU" in out.stdout or "not installed" in out.stdout)


def _nvvm_available():
    try:
        import numba_cuda  # noqa: F401
        from cuda.pathfinder import load_nvidia_dynamic_lib
        load_nvidia_dynamic_lib("nvrtc")
        load_nvidia_dynamic_lib("nvvm")
        return True
    except Exception:
        return False


@pytest.mark.skipif(ON_GPU, reason="on a GPU the kernels are compiled and run by the other tests")
@pytest.mark.skipif(not _nvvm_available(), reason="needs numba-cuda with NVRTC/NVVM (pip install numba-cuda[cu13])")
def test_cuda_kernels_compile_to_ptx_for_hopper():
    """The real kernels (not the simulator's Python) type-check and compile for sm_90."""
    script = Path(__file__).with_name("ptx_check.py")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok") == 23, out.stdout


# ----------------------------------------------------------------------------- GPU only

@needs_gpu
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_cuda_several_blocks_and_batch_tiles(rng, cell, variant):
    problem = make_problem(rng, cell, variant, 5, 19, 7, 300, lengths=True, scale=0.1)
    assert_matches_oracle(problem, "cuda", np.float64)
    assert_matches_oracle(problem, "cuda", np.float32)


@needs_gpu
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_cuda_stepwise_many_blocks(rng, monkeypatch, cell, variant):
    from fastrnn import config
    monkeypatch.setattr(config, "CUDA_STEPWISE", "always")
    problem = make_problem(rng, cell, variant, 5, 40, 7, 300, lengths=True, scale=0.1)
    assert_matches_oracle(problem, "cuda", np.float64)
    assert_matches_oracle(problem, "cuda", np.float32)


@needs_gpu
@pytest.mark.parametrize("cell,variant", [("lstm", None), ("gru", False)], ids=["lstm", "gru-cho"])
def test_cuda_repeated_calls_give_identical_results(rng, cell, variant):
    """Many blocks and batch groups, run again and again: any race between blocks (a read of h_t
    before every block has written it) would show as a difference between runs."""
    shape = (40, 48, 16, 256)
    problem32 = make_problem(np.random.default_rng(7), cell, variant, *shape, scale=0.3, dtype=np.float32)
    first = run(problem32, "cuda")
    for _ in range(4):
        again = run(problem32, "cuda")
        for name, value in first.items():
            if value is not None:
                assert np.array_equal(value, again[name]), name
    assert_matches_oracle(make_problem(rng, cell, variant, *shape, scale=0.3), "cuda", np.float32)


@needs_gpu
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_cuda_weights_from_l2(rng, monkeypatch, cell, variant):
    from fastrnn.backends import numba_cuda
    sms, _ = numba_cuda._device_limits()
    monkeypatch.setattr(numba_cuda, "_device_limits", lambda: (sms, 24 * 1024))
    assert not numba_cuda.plan(0, False, 9, 260, 8).on_chip and not numba_cuda.plan(0, True, 9, 260, 8).on_chip
    assert_matches_oracle(make_problem(rng, cell, variant, 4, 9, 5, 260, lengths=True, scale=0.1), "cuda",
                          np.float64)


@needs_gpu
def test_cuda_arrays_in_give_the_same_kind_out(rng):
    import cupy
    torch = pytest.importorskip("torch")
    from numba import cuda
    problem = make_problem(rng, "lstm", None, 4, 3, 5, 6)
    want = run(problem, "reference")
    a = problem.args
    for convert, kind in ((cupy.asarray, cupy.ndarray), (lambda v: torch.as_tensor(v, device="cuda"), torch.Tensor),
                          (cuda.to_device, type(cuda.to_device(np.zeros(1))))):
        args = {k: None if v is None else convert(v) for k, v in a.items()}
        y, (h, c), tape = fastrnn.lstm_forward(**args)          # "auto" picks cuda for GPU arrays
        assert isinstance(y, kind) and isinstance(h, kind)
        grads = fastrnn.lstm_backward(tape, *(convert(problem.upstream[k]) for k in ("dy", "dh_n", "dc_n")))
        assert all(isinstance(g, kind) for g in grads)
        host = lambda v: cupy.asnumpy(cupy.asarray(v))  # noqa: E731
        assert rel_error(host(y), want["y"]) < 1e-10
        assert rel_error(host(grads.w_hh), want["dw_hh"]) < 1e-10


@needs_gpu
def test_cuda_refuses_mixed_devices_and_cpu_backends(rng):
    import cupy
    problem = make_problem(rng, "gru", True, 3, 2, 4, 5)
    args = dict(problem.args)
    args["x"] = cupy.asarray(args["x"])
    with pytest.raises(TypeError, match="w_ih is a host array"):
        fastrnn.gru(**args)
    gpu_args = {k: cupy.asarray(v) for k, v in problem.args.items()}
    with pytest.raises(TypeError, match="runs on the CPU"):
        fastrnn.gru(**gpu_args, backend="numba")
