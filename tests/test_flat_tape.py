"""The flat tape (fastrnn._flat): forward's record as arrays of the listed shapes, and a backward rebuilt
from those arrays equal to the functional API's backward, on every backend and cell form."""
import numpy as np
import pytest

import fastrnn
from fastrnn import _flat
from rnncases import assert_same_fields, make_problem, run

from conftest import CUDA_SIMULATED

FORM_OF = {("lstm", None): "lstm", ("gru", True): "gru", ("gru", False): "gru_cho", ("rnn", "tanh"): "rnn_tanh",
           ("rnn", "relu"): "rnn_relu"}
BACKENDS = fastrnn.available_backends()


def flat_run(problem, backend):
    """forward -> saved arrays (copied, as a framework would hold them) -> backward, in run()'s fields."""
    form = FORM_OF[problem.cell, problem.variant]
    a, opts = problem.args, problem.options
    w_hr = a.get("w_hr")
    inputs = (a["x"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["h0"], a.get("c0"), w_hr, opts.get("lengths"))
    y, h_n, c_n, saved = _flat.forward(form, backend, *inputs, save=True)
    T, B, _ = a["x"].shape
    H, P = (a["w_hh"].shape[1], None) if w_hr is None else w_hr.shape[::-1]
    assert [s.shape for s in saved] == _flat.saved_shapes(backend, form, T, B, H, P)
    assert all(s.dtype == a["x"].dtype for s in saved)
    saved = tuple(np.array(s) for s in saved)
    grads = _flat.backward(form, backend, *inputs, saved, **problem.upstream)
    out = {"y": y, "h_n": h_n}
    if problem.cell == "lstm":
        out["c_n"] = c_n
    for name, value in grads._asdict().items():
        if value is not None or name in ("b_ih", "b_hh"):
            out["d" + name] = value
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_flat_tape_with_projections(rng, backend):
    problem = make_problem(rng, "lstm", None, 5, 3, 4, 6, proj_size=2, lengths=True)
    assert_same_fields(flat_run(problem, backend), run(problem, backend), 0.0, f"[{backend}] ")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("cell,variant", list(FORM_OF), ids=list(FORM_OF.values()))
@pytest.mark.parametrize("backend", BACKENDS)
def test_flat_tape_gives_the_functional_backward(rng, backend, cell, variant, bias):
    shape = (2, 2, 3, 2) if backend == "cuda" and CUDA_SIMULATED else (5, 3, 4, 6)
    problem = make_problem(rng, cell, variant, *shape, lengths=True, bias=bias)
    assert_same_fields(flat_run(problem, backend), run(problem, backend), 0.0, f"[{backend}] ")


@pytest.mark.parametrize("cell,variant", list(FORM_OF), ids=list(FORM_OF.values()))
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "cuda"])
def test_flat_tape_holds_no_uninitialised_values(rng, backend, cell, variant):
    """The saved arrays are outputs (fastrnn.torch's op returns them): past a sequence's length they must
    hold values too, not whatever the memory held before. Freed blocks of NaN, then of zeros, are offered
    to the allocator before two identical forwards."""
    problem = make_problem(rng, cell, variant, 5, 3, 4, 6, lengths=True)
    form = FORM_OF[cell, variant]
    a, opts = problem.args, problem.options
    inputs = (a["x"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["h0"], a.get("c0"), None, opts.get("lengths"))
    tapes = []
    for fill in (np.nan, 0.0):
        for shape in _flat.saved_shapes(backend, form, 5, 3, 6):
            junk = np.full(shape, fill)
            del junk
        tapes.append(_flat.forward(form, backend, *inputs, save=True)[3])
    for first, second in zip(*tapes):
        assert np.isfinite(first).all()
        np.testing.assert_array_equal(first, second)


def test_flat_backward_refuses_a_wrong_tape(rng):
    problem = make_problem(rng, "lstm", None, 3, 2, 2, 2)
    a = problem.args
    inputs = (a["x"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["h0"], a["c0"], None, None)
    with pytest.raises(ValueError, match="saved must hold the 3 arrays"):
        _flat.backward("lstm", "numba", *inputs, (a["x"],), a["x"])
    with pytest.raises(ValueError, match="resolved backend name"):
        _flat.saved_shapes("auto", "lstm", 3, 2, 2)
    with pytest.raises(ValueError, match="form must be one of"):
        _flat.saved_shapes("numba", "lstm_cho", 3, 2, 2)
