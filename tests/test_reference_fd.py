"""The reference's gradients against central finite differences (float64)."""
import numpy as np
import pytest

import fastrnn

from rnncases import CELL_FORM_IDS, CELL_FORMS, assert_same_fields, central_difference, loss, make_problem, run

CONFIGS = {
    "plain": dict(),
    "no-bias": dict(bias=False),
    "zero-state": dict(init_state=False),
    "lengths": dict(lengths=True),
    "batch-first+lengths": dict(batch_first=True, lengths=True),
    "unbatched": dict(unbatched=True),
}


def finite_difference_grads(problem, eps=1e-6):
    """Central differences of the loss for every argument; a state given as None is the zero state."""
    problem = problem.astype(np.float64)
    shape = problem.upstream["dh_n"].shape
    for state in ("h0", "c0"):
        if state in problem.args and problem.args[state] is None:
            problem.args[state] = np.zeros(shape)
    grads = {}
    for name, value in problem.args.items():
        if value is None:   # no bias: no gradient
            continue
        g = np.zeros_like(value)
        flat, gflat = value.reshape(-1), g.reshape(-1)   # views: perturb in place
        for k in range(flat.size):
            gflat[k] = central_difference(lambda: loss(problem), flat, k, eps)
        grads["d" + name] = g
    return grads


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_reference_gradients_match_finite_differences(rng, cell, variant, config):
    opts = CONFIGS[config]
    problem = make_problem(rng, cell, variant, T=4, B=3, I=3, H=2, **opts)
    analytic = run(problem, "reference")
    numeric = finite_difference_grads(problem)
    analytic = {k: v for k, v in analytic.items() if k.startswith("d") and v is not None}
    assert_same_fields(analytic, numeric, 1e-6, f"{cell}/{config}: ")


@pytest.mark.parametrize("config", ["plain", "no-bias", "lengths", "batch-first+lengths", "unbatched"])
def test_reference_lstm_projection_matches_finite_differences(rng, config):
    """LSTM with projections (w_hr, torch's proj_size): h = (o * tanh(c)) W_hr^T of size P = 2 < H = 3."""
    P = 2
    problem = make_problem(rng, "lstm", None, T=4, B=3, I=3, H=3, proj_size=P, **CONFIGS[config])
    analytic = {k: v for k, v in run(problem, "reference").items() if k.startswith("d") and v is not None}
    assert analytic["dw_hr"].shape == (P, 3)
    assert_same_fields(analytic, finite_difference_grads(problem), 1e-6, f"lstm-proj/{config}: ")


def test_projection_argument_errors(rng):
    problem = make_problem(rng, "lstm", None, T=3, B=2, I=3, H=3)
    a = problem.args
    with pytest.raises(ValueError, match=r"w_hh must have shape \(4\*H, P\) with \(P, H\) = w_hr.shape"):
        fastrnn.lstm(**a, w_hr=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"h0 must have shape \(B, P\) = \(2, 2\)"):
        fastrnn.lstm(**dict(a, w_hh=np.zeros((12, 2))), w_hr=np.zeros((2, 3)))


def test_lengths_semantics(rng):
    """y is zero past each length; the final state is the state at step length-1."""
    problem = make_problem(rng, "lstm", None, T=5, B=3, I=2, H=3, lengths=True)
    lens = problem.options["lengths"]
    out = run(problem, "reference")
    for b, n in enumerate(lens):
        assert np.all(out["y"][n:, b] == 0)
        assert np.all(out["y"][:n, b] != 0)
        # the same sequence run alone, truncated to its length, ends in the same state
        alone = dict(problem.args, x=problem.args["x"][:n, b], h0=problem.args["h0"][b],
                     c0=problem.args["c0"][b])
        y_b, (h_b, c_b) = fastrnn.lstm(**alone, backend="reference")
        # (BLAS may round a batch of 1 differently from a batch of 3: allow a few ulps)
        np.testing.assert_allclose(out["h_n"][b], h_b, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(out["c_n"][b], c_b, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(out["y"][:n, b], y_b, rtol=1e-13, atol=1e-15)
        # gradients do not reach inputs past the length
        assert np.all(out["dx"][n:, b] == 0)
