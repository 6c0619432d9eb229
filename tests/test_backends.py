"""Every fast backend against the float64 reference, on every output and gradient.

A new backend joins these comparisons by being listed in fastrnn.available_backends().
"""
import os

import numba
import numpy as np
import pytest

import fastrnn
from fastrnn import backends
from rnncases import CELL_FORM_IDS, CELL_FORMS, EDGE_SHAPES, assert_matches_oracle, make_problem, rel_error, run

from conftest import CUDA_SIMULATED

# (the simulated "cuda" backend is far too slow for this matrix: tests/test_cuda.py checks it on tiny
# problems; on a machine with a GPU, "cuda" runs every test here)
FAST_BACKENDS = [name for name in fastrnn.available_backends()
                 if name != "reference" and not (name == "cuda" and CUDA_SIMULATED)]
CONFIGS = {
    "plain": dict(),
    "no-bias": dict(bias=False),
    "zero-state": dict(init_state=False),
    "lengths": dict(lengths=True),
    "batch-first+lengths": dict(batch_first=True, lengths=True),
    "unbatched": dict(unbatched=True),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_on_edge_shapes(rng, backend, cell, variant, shape, dtype):
    assert_matches_oracle(make_problem(rng, cell, variant, *shape, lengths=shape[1] > 1), backend, dtype)


@pytest.mark.parametrize("path", ["fused", "ring", "separate-gemm"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_on_options(rng, monkeypatch, backend, cell, variant, config, dtype, path):
    """The one-worker paths of the numba backend (this problem's step is below the split): the forward's
    input product inside the recurrent kernel (forced by thresholds above this problem's 35 rows), or
    computed by the kernel into its ring of steps (the default here: the GEMM is too small for two
    threads), or one GEMM over all steps before it (forced by a zero threshold of a parallel GEMM);
    the backward's whole-sequence products inside the kernel (the first two) or after it (the last)."""
    from fastrnn import config as fastrnn_config
    if path == "fused":
        monkeypatch.setattr(fastrnn_config, "FUSE_INPUT_ROWS", 64)
        monkeypatch.setattr(fastrnn_config, "FUSE_INPUT_REREAD_BYTES", 1 << 30)
    else:
        monkeypatch.setattr(fastrnn_config, "FUSE_INPUT_ROWS", 0)
    if path == "separate-gemm":
        monkeypatch.setattr(fastrnn_config, "PARALLEL_MIN_GEMM_MACS", 0)
    assert_matches_oracle(make_problem(rng, cell, variant, 7, 5, 6, 9, **CONFIGS[config]), backend, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_on_long_reductions(rng, backend, cell, variant, dtype):
    """Products whose reductions span several of the kernels' chunks (the weight gradients sum over
    T*B = 333 rows, dx over G*H >= 201 columns, the input projection over I = 270) and whose row and
    column counts are not multiples of any register block."""
    assert_matches_oracle(make_problem(rng, cell, variant, 37, 9, 270, 67, lengths=True, scale=0.2), backend,
                          dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_past_the_reverse_size(rng, backend, cell, variant, dtype):
    """Step weights of over 512 KiB a worker (H = 300; cpp's kReverseMinBytes, numba's
    _numba_tiles.REVERSE_MIN_BYTES): odd steps walk the unit tiles in reverse, forward and backward."""
    assert_matches_oracle(make_problem(rng, cell, variant, 5, 2, 7, 300, lengths=True, scale=0.1), backend, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (5, 3, 4, 19, 11), (37, 9, 30, 67, 20)],
                         ids=lambda s: "T{}B{}I{}H{}P{}".format(*s))
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_with_projections(rng, backend, shape, config, dtype):
    """LSTM with projections (h_t = W_hr (o * tanh(c_t)) of size P < H, torch's proj_size). (Weights of
    scale 0.2: at 0.5 the longest problem is chaotic, the float64 reference's own rounding grows to 1e-9.)"""
    T, B, I, H, P = shape
    assert_matches_oracle(make_problem(rng, "lstm", None, T, B, I, H, proj_size=P, scale=0.2, **CONFIGS[config]),
                          backend, dtype)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_projections_work_split(rng, split_work, backend):
    assert_matches_oracle(make_problem(rng, "lstm", None, 6, 4, 7, 33, proj_size=17, lengths=True), backend,
                          np.float64)


def test_auto_takes_a_fast_backend_for_projections(rng):
    """The same backend as for an LSTM of the same sizes without projections (every built-in one has them)."""
    _, _, projected = fastrnn.lstm_forward(**make_problem(rng, "lstm", None, 3, 2, 4, 6, proj_size=3).args)
    _, _, plain = fastrnn.lstm_forward(**make_problem(rng, "lstm", None, 3, 2, 4, 6).args)
    assert projected.backend == plain.backend
    assert projected.backend != "reference" or not FAST_BACKENDS


def test_backends_without_projections_are_passed_over_or_refused(rng, monkeypatch):
    """A registered backend that declares no projections: "auto" passes over it for an LSTM with w_hr (and
    takes it without), and asking for it by name is an error, not a call that would drop w_hr."""
    from fastrnn import config
    monkeypatch.setitem(backends._REGISTRY, "plain-only",
                        backends.Backend("plain-only", "fastrnn.backends.reference", projections=False))
    monkeypatch.setattr(config, "CPU_BACKEND_ORDER", ("plain-only", "reference"))
    projected = make_problem(rng, "lstm", None, 3, 2, 4, 6, proj_size=3).args
    assert fastrnn.lstm_forward(**projected)[2].backend == "reference"
    assert fastrnn.lstm_forward(**make_problem(rng, "lstm", None, 3, 2, 4, 6).args)[2].backend == "plain-only"
    with pytest.raises(NotImplementedError, match=r"backend 'plain-only' has no LSTM projections \(w_hr\)"):
        fastrnn.lstm(**projected, backend="plain-only")
    monkeypatch.setattr(config, "CPU_BACKEND_ORDER", ("plain-only",))
    with pytest.raises(RuntimeError, match="is available with LSTM projections"):
        fastrnn.lstm(**projected)


@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_reference_float32_is_close_to_float64(rng, cell, variant):
    """Keeps the float32 rule of assert_matches_oracle meaningful: the reference itself is accurate there."""
    problem = make_problem(rng, cell, variant, 20, 4, 16, 24, lengths=True)
    exact = run(problem, "reference")
    low = run(problem.astype(np.float32), "reference")
    for name, value in exact.items():
        assert rel_error(low[name], value) < 1e-4, name   # ~1000 float32 ulps over 20 steps


CHUNKED_BACKENDS = [name for name in ("cpp", "numba") if name in FAST_BACKENDS]
CHUNK_CASES = [pytest.param(backend, cell, variant, config, id=f"{backend}-{name}-{config}")
               for backend in CHUNKED_BACKENDS
               for (cell, variant), name in zip(CELL_FORMS, CELL_FORM_IDS)
               for config in ("plain", "no-bias", "lengths", "batch-first+lengths")]
CHUNK_CASES += [pytest.param(backend, "lstm", None, "projections", id=f"{backend}-lstm-projections")
                for backend in CHUNKED_BACKENDS]


@pytest.mark.parametrize("sizes,dtype", [((5, 9), np.float64), ((5, 9), np.float32), ((36, 40), np.float64)],
                         ids=["I5H9-float64", "I5H9-float32", "I36H40-float64"])
@pytest.mark.parametrize("backend,cell,variant,config", CHUNK_CASES)
def test_in_chunks_of_steps(rng, monkeypatch, split_work, backend, cell, variant, config, sizes, dtype):
    """The CPU forwards compute the input projection a chunk of steps ahead (cpp: sequence.h, without a
    tape in one ring of gates; numba: kernels.forward, in a ring of projections), and the backwards
    run the whole-sequence products (dx, the weight and bias gradients summed over the chunks) after
    each chunk of steps, their dG in a ring (numba: all but Cho's GRU): chunks of 3 steps over T = 8
    (3 + 3 + 2; at test sizes a call is one chunk), on 3 workers; I, H = 36, 40 reach the products'
    vector paths (numba: 2 vectors of columns, 6-row blocks), 5, 9 their edges only. With a tape every
    output and gradient against the reference; the inference call must give the taped forward's
    outputs exactly. (I, H = 36, 40 in float64 only, whose 1e-10 finds any misplaced chunk: in float32
    the rounding of dh0 over 8 RNN steps spreads wider than the float32 rule's margin over the
    reference's own error, whatever the backend: over 6 draws reference 1.5e-6 to 1.3e-5, cpp 1.2e-6
    to 1.2e-5, numba 0.9e-6 to 5.4e-6.)"""
    monkeypatch.setenv("FASTRNN_CHUNK_STEPS", "3")
    options = dict(proj_size=4, lengths=True) if config == "projections" else CONFIGS[config]
    problem = make_problem(rng, cell, variant, 8, 3, *sizes, **options).astype(dtype)
    assert_matches_oracle(problem, backend, dtype)
    taped = run(problem, backend)
    y, states = getattr(fastrnn, cell)(**problem.args, **problem.options, backend=backend)
    np.testing.assert_array_equal(y, taped["y"])
    for got, name in zip(states if cell == "lstm" else (states,), ("h_n", "c_n")):
        np.testing.assert_array_equal(got, taped[name])


@pytest.mark.parametrize("backend", CHUNKED_BACKENDS)
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_in_chunks_of_one_step(rng, monkeypatch, split_work, backend, cell, variant):
    """FASTRNN_CHUNK_STEPS=1: the backwards' dG rings must still hold two steps where a step's dh reads
    its successor's dG while other workers write its own (cpp's one phase a step, numba's steps), and
    the chunks' products then follow every step or two."""
    monkeypatch.setenv("FASTRNN_CHUNK_STEPS", "1")
    problem = make_problem(rng, cell, variant, 7, 3, 6, 40, lengths=True)
    assert_matches_oracle(problem, backend, np.float64)


@pytest.fixture
def split_work(monkeypatch):
    """Force the multi-worker path even at test sizes: 3 workers (more than CI's 2 cores, so one
    thread runs two workers and the others must claim its chunks), several chunks per step."""
    from fastrnn import config
    monkeypatch.setattr(config, "THREADS", 3)
    monkeypatch.setattr(config, "PARALLEL_MIN_MACS", 0)
    monkeypatch.setattr(config, "FORWARD_CHUNKS_PER_THREAD", 2)
    monkeypatch.setattr(config, "BACKWARD_CHUNKS_PER_THREAD", 2)
    monkeypatch.setattr(config, "FUSE_INPUT_ROWS", 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6, 4, 7, 33), (5, 1, 3, 9), (3, 7, 5, 24)], ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_with_work_split(rng, split_work, backend, cell, variant, shape, dtype):
    assert_matches_oracle(make_problem(rng, cell, variant, *shape, lengths=shape[1] > 1), backend, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(8, 7, 5, 33), (6, 12, 4, 40), (5, 3, 6, 24)], ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_numba_with_the_batch_split(rng, monkeypatch, split_work, cell, variant, shape, dtype):
    """The numba forward and backward with each worker's own sequences (FASTRNN_BATCH_SPLIT=always): 3
    workers on slices of 3, 3 and 1, of 4 each, of 1 each, in chunks of 3 steps of the input projection and
    of dG's ring (so the slices meet before each chunk and its products), ragged lengths; and the forward
    without a tape. (The
    RNN's weights at scale 0.2: at 0.5, its float32 dx and dh0 over 8 steps spread past the float32 rule's
    margin over the reference's own error with either split, as in test_in_chunks_of_steps.)"""
    if "numba" not in FAST_BACKENDS:
        pytest.skip("numba backend unavailable")
    from fastrnn.backends import numba_cpu
    monkeypatch.setenv("FASTRNN_BATCH_SPLIT", "always")
    monkeypatch.setenv("FASTRNN_CHUNK_STEPS", "3")
    T, B, I, H = shape
    calls = []
    batch_rows = numba_cpu._batch_rows
    monkeypatch.setattr(numba_cpu, "_batch_rows",
                        lambda *args, **kwargs: calls.append(batch_rows(*args, **kwargs)) or calls[-1])
    problem = make_problem(rng, cell, variant, *shape, lengths=True, scale=0.2 if cell == "rnn" else 0.5)
    assert_matches_oracle(problem, "numba", dtype)
    y, _ = getattr(fastrnn, cell)(**problem.astype(dtype).args, **problem.options, backend="numba")
    np.testing.assert_array_equal(y, run(problem.astype(dtype), "numba")["y"])
    if (cell, variant) != ("gru", False):          # (Cho's GRU: its own kernels, with the unit split)
        assert calls and all(rows == -(-B // 3) for rows in calls), calls


def test_numba_batch_split_rule(monkeypatch):
    """"auto" splits the batch where every worker gets a multiple of 4 sequences; never with one worker,
    nor with the input product fused into the forward's steps, nor into more slices than unit chunks."""
    from fastrnn.backends import numba_cpu
    rows = numba_cpu._batch_rows
    monkeypatch.delenv("FASTRNN_BATCH_SPLIT", raising=False)
    assert [rows(B, 128, 64, 2) for B in (1, 4, 6, 8, 12, 16, 64)] == [0, 0, 0, 4, 0, 8, 32]
    assert rows(8, 128, 64, 1) == 0 and rows(8, 128, 64, 2, fused=True) == 0
    assert rows(24, 128, 32, 3) == 8 and rows(24, 128, 64, 3) == 0
    assert rows(8, 128, 64, 2, step_weight_bytes=256 << 10) == 4 and rows(8, 128, 64, 2, step_weight_bytes=1 << 20) == 0
    monkeypatch.setenv("FASTRNN_BATCH_SPLIT", "never")
    assert rows(8, 128, 64, 2) == 0
    monkeypatch.setenv("FASTRNN_BATCH_SPLIT", "always")
    assert rows(5, 128, 64, 2) == 3 and rows(1, 128, 64, 2) == 0
    assert rows(8, 128, 64, 2, step_weight_bytes=1 << 20) == 4
    monkeypatch.setenv("FASTRNN_BATCH_SPLIT", "sometimes")
    with pytest.raises(ValueError, match="FASTRNN_BATCH_SPLIT"):
        rows(8, 128, 64, 2)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_calls_from_several_python_threads(rng, backend):
    from concurrent.futures import ThreadPoolExecutor
    problems = [make_problem(rng, cell, variant, 8, 3, 5, 40, lengths=True)
                for cell, variant in CELL_FORMS for _ in range(2)]
    expected = [run(p, backend) for p in problems]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: run(p, backend), problems * 2))
    for got, want in zip(results, expected * 2):
        for name in want:
            if want[name] is not None:
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_on_random_problems(backend):
    """Hypothesis draws shapes, options and cell forms; float64 must match the oracle to 1e-10."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(form=st.sampled_from(CELL_FORMS), T=st.integers(1, 6), B=st.integers(1, 5), I=st.integers(1, 6),
           H=st.integers(1, 12), bias=st.booleans(), init_state=st.booleans(), lengths=st.booleans(),
           batch_first=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
    def check(form, T, B, I, H, bias, init_state, lengths, batch_first, seed):
        rng = np.random.default_rng(seed)
        problem = make_problem(rng, *form, T, B, I, H, bias=bias, init_state=init_state,
                               lengths=lengths and B > 1, batch_first=batch_first)
        assert_matches_oracle(problem, backend, np.float64)

    check()


@pytest.mark.skipif(not hasattr(os, "fork") or "numba" not in FAST_BACKENDS, reason="needs fork() and numba")
def test_a_child_forked_after_numba_ran_is_served_not_killed(rng):
    """Numba terminates a child forked after its kernels ran on the (GNU) OpenMP layer if the child opens a
    parallel region: there "numba" reports itself unavailable, "auto" takes another backend (a DataLoader
    worker keeps working), and asking for "numba" is a RuntimeError saying why; on other layers it runs."""
    problem = make_problem(rng, "lstm", None, 5, 3, 4, 6)
    want = fastrnn.lstm(**problem.args, backend="numba")[0]       # the parent's kernels run first
    layer = numba.threading_layer()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            assert np.allclose(fastrnn.lstm(**problem.args)[0], want, rtol=1e-9, atol=1e-12)
            if layer == "omp":
                assert "numba" not in fastrnn.available_backends()
                with pytest.raises(RuntimeError, match="forked from one whose Numba kernels ran on OpenMP"):
                    fastrnn.lstm(**problem.args, backend="numba")
            else:
                assert np.allclose(fastrnn.lstm(**problem.args, backend="numba")[0], want, rtol=1e-9, atol=1e-12)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
