"""Shared test helpers: problem generation, running any backend, the oracle comparison.

A later backend plugs into every comparison by appearing in ``fastrnn.available_backends()``
(tests/test_backends.py parametrises over it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import fastrnn

# (cell, variant): every cell form the API offers
CELL_FORMS = [("lstm", None), ("gru", True), ("gru", False), ("rnn", "tanh"), ("rnn", "relu")]
CELL_FORM_IDS = ["lstm", "gru-lbr", "gru-cho", "rnn-tanh", "rnn-relu"]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
VARIANT_ARG = {"gru": "linear_before_reset", "rnn": "nonlinearity"}

# (T, B, I, H) edge shapes: T=1, B=1, H=1, I != H, H not a power of two
EDGE_SHAPES = [(1, 1, 1, 1), (1, 3, 2, 5), (4, 1, 3, 2), (5, 2, 1, 4), (3, 4, 7, 33), (6, 3, 5, 5)]


@dataclass
class Problem:
    """One forward call's arguments plus upstream gradients, in the caller's layout."""
    cell: str
    variant: object
    args: dict                     # positional-ish: x, w_ih, w_hh, b_ih, b_hh, h0 (, c0)
    options: dict = field(default_factory=dict)   # batch_first, lengths, variant
    upstream: dict = field(default_factory=dict)  # dy, dh_n (, dc_n)

    def astype(self, dtype):
        cast = lambda v: v if v is None else np.asarray(v).astype(dtype)  # noqa: E731
        return Problem(self.cell, self.variant, {k: cast(v) for k, v in self.args.items()},
                       dict(self.options), {k: cast(v) for k, v in self.upstream.items()})


def make_problem(rng, cell, variant, T, B, I, H, *, bias=True, init_state=True, lengths=False,
                 batch_first=False, unbatched=False, scale=0.5, dtype=np.float64, proj_size=0) -> Problem:
    """``proj_size`` P > 0: an LSTM with projections (w_hr (P, H); h, y and w_hh's columns of size P)."""
    G, P = GATES[cell], proj_size or H
    normal = lambda *shape: (scale * rng.standard_normal(shape)).astype(dtype)  # noqa: E731
    xshape = (T, I) if unbatched else ((B, T, I) if batch_first else (T, B, I))
    yshape = xshape[:-1] + (P,)
    lead = () if unbatched else (B,)
    args = {"x": rng.standard_normal(xshape).astype(dtype), "w_ih": normal(G * H, I),
            "w_hh": normal(G * H, P), "b_ih": normal(G * H) if bias else None,
            "b_hh": normal(G * H) if bias else None, "h0": normal(*lead, P) if init_state else None}
    if proj_size:
        args["w_hr"] = normal(P, H)
    upstream = {"dy": rng.standard_normal(yshape).astype(dtype), "dh_n": rng.standard_normal(lead + (P,)).astype(dtype)}
    if cell == "lstm":
        args["c0"] = normal(*lead, H) if init_state else None
        upstream["dc_n"] = rng.standard_normal(lead + (H,)).astype(dtype)
    options = {"batch_first": batch_first}
    if cell in VARIANT_ARG:
        options[VARIANT_ARG[cell]] = variant
    if lengths:
        lens = rng.integers(1, T + 1, size=B)
        lens[0] = T          # the longest and the shortest possible are always there
        lens[-1] = 1
        options["lengths"] = lens
    return Problem(cell, variant, args, options, upstream)


def forward_fn(cell):
    return getattr(fastrnn, f"{cell}_forward")


def run(problem: Problem, backend: str) -> dict:
    """Forward with tape, then backward; returns every output and gradient by name."""
    fwd = forward_fn(problem.cell)
    bwd = getattr(fastrnn, f"{problem.cell}_backward")
    result = fwd(**problem.args, **problem.options, backend=backend)
    out = {"y": result[0]}
    if problem.cell == "lstm":
        out["h_n"], out["c_n"] = result[1]
    else:
        out["h_n"] = result[1]
    grads = bwd(result[2], **problem.upstream)
    for name, value in grads._asdict().items():
        if name != "w_hr" or value is not None:     # dw_hr only for an LSTM with projections
            out["d" + name] = value
    return out


def loss(problem: Problem, backend: str = "reference") -> float:
    """Scalar L = <dy, y> + <dh_n, h_n> (+ <dc_n, c_n>): its gradient is what backward returns."""
    fwd = getattr(fastrnn, problem.cell)
    result = fwd(**problem.args, **problem.options, backend=backend)
    states = result[1] if problem.cell == "lstm" else (result[1],)
    total = np.sum(problem.upstream["dy"] * result[0])
    total += np.sum(problem.upstream["dh_n"] * states[0])
    if problem.cell == "lstm":
        total += np.sum(problem.upstream["dc_n"] * states[1])
    return float(total)


def central_difference(f, array, index, eps=1e-6) -> float:
    """(f() at array[index] + eps - f() at array[index] - eps) / (2 eps); array[index] is restored."""
    saved = array[index]
    array[index] = saved + eps
    plus = f()
    array[index] = saved - eps
    minus = f()
    array[index] = saved
    return (plus - minus) / (2 * eps)


def rel_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: one number per array, robust to tiny entries."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual) == np.isfinite(expected)), "NaN/inf pattern differs"
    finite = np.isfinite(expected)
    if not finite.any():
        return 0.0
    diff = np.abs(actual[finite] - expected[finite]).max()
    return float(diff / max(np.abs(expected[finite]).max(), 1e-300))


def assert_same_fields(actual: dict, expected: dict, rtol: float, what: str = "") -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        a, e = actual[name], expected[name]
        assert (a is None) == (e is None), f"{what}{name}: one is None"
        if e is not None:
            err = rel_error(a, e)
            assert err <= rtol, f"{what}{name}: relative error {err:.3g} > {rtol:.3g}"


def assert_matches_oracle(problem64: Problem, backend: str, dtype) -> None:
    """Compare a backend with the float64 reference on every output and gradient.

    float64: relative error <= 1e-10. Lower precision (DESIGN.md's rule): the backend's
    error <= 2 x the error of the reference run in the same precision + 8 eps.
    """
    dtype = np.dtype(dtype)
    problem = problem64.astype(dtype)
    oracle = run(problem.astype(np.float64), "reference")   # same (rounded) values, exact arithmetic
    got = run(problem, backend)
    for name, value in got.items():
        assert value is None or value.dtype == dtype, f"{name} has dtype {value.dtype}, expected {dtype}"
    if dtype == np.float64:
        assert_same_fields(got, oracle, 1e-10, f"[{backend}] ")
        return
    low = run(problem, "reference")
    eps = float(np.finfo(dtype).eps)
    for name, expected in oracle.items():
        if expected is None:
            assert got[name] is None, name
            continue
        ref_err = rel_error(low[name], expected)
        err = rel_error(got[name], expected)
        assert err <= 2 * ref_err + 8 * eps, (
            f"[{backend}] {name}: error {err:.3g} > 2 x reference {dtype} error {ref_err:.3g} + 8 eps")
