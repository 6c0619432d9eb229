"""fastrnn.jax: jax.grad of every cell form on every CPU backend against the float64 reference's backward,
jax.jit and jax.vmap, and the functional API on JAX arrays."""

import numpy as np
import pytest

import fastrnn
from rnncases import CELL_FORM_IDS, CELL_FORMS, assert_same_fields, make_problem, rel_error, run

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
fj = pytest.importorskip("fastrnn.jax")
jax.config.update("jax_enable_x64", True)      # float64 comparisons; float32 arrays stay float32

CPU_BACKENDS = [b for b in ("numba", "cpp", "reference") if b in fastrnn.available_backends()]
CONFIGS = {
    "lengths": dict(lengths=True),
    "batch-first-no-bias-zero-state": dict(batch_first=True, bias=False, init_state=False),
    "unbatched": dict(unbatched=True),
}
ARG_NAMES = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")


def jax_run(problem, backend):
    """Outputs and jax.grad of L = <dy, y> + <dh_n, h_n> (+ <dc_n, c_n>), in rnncases.run's fields."""
    fn = getattr(fj, problem.cell)
    names = [n for n in ARG_NAMES if n in problem.args and problem.args[n] is not None]
    fixed = {n: v for n, v in problem.args.items() if n not in names}
    options = {k: v for k, v in problem.options.items()}
    up = problem.upstream

    def outputs(*values):
        result = fn(**dict(zip(names, values)), **fixed, **options, backend=backend)
        states = result[1] if problem.cell == "lstm" else (result[1],)
        return result[0], states

    def loss(*values):
        y, states = outputs(*values)
        total = jnp.sum(up["dy"] * y) + jnp.sum(up["dh_n"] * states[0])
        return total + (jnp.sum(up["dc_n"] * states[1]) if problem.cell == "lstm" else 0)

    values = [jnp.asarray(problem.args[n]) for n in names]
    y, states = outputs(*values)
    grads = jax.grad(loss, argnums=tuple(range(len(names))))(*values)
    out = {"y": y, "h_n": states[0]}
    if problem.cell == "lstm":
        out["c_n"] = states[1]
    by_name = dict(zip(names, grads))
    for n in ARG_NAMES:
        if n in problem.args:
            out["d" + n] = by_name.get(n)
    return {k: None if v is None else np.asarray(v) for k, v in out.items()}


def expected_fields(problem):
    """The reference's results, with None for the gradients of arguments left out (zero states, no bias)."""
    expected = run(problem, "reference")
    for n in ARG_NAMES:
        if n in problem.args and problem.args[n] is None:
            expected["d" + n] = None
    return expected


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_jax_grad_matches_the_reference(rng, backend, cell, variant, config):
    problem = make_problem(rng, cell, variant, 6, 3, 4, 5, **CONFIGS[config])
    assert_same_fields(jax_run(problem, backend), expected_fields(problem), 1e-10, f"[{backend}] ")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_jax_float32_within_twice_the_reference_error(rng, backend):
    problem64 = make_problem(rng, "lstm", None, 8, 3, 4, 5, lengths=True)
    exact = expected_fields(problem64)
    problem = problem64.astype(np.float32)
    got, low = jax_run(problem, backend), jax_run(problem, "reference")
    eps = float(np.finfo(np.float32).eps)
    for name, value in exact.items():
        assert got[name].dtype == np.float32, name
        assert rel_error(got[name], value) <= 2 * rel_error(low[name], value) + 8 * eps, name


def test_jit_and_vmap(rng):
    T, B, I, H = 5, 2, 3, 4
    x = jnp.asarray(rng.standard_normal((3, T, B, I)))
    w_ih, w_hh = jnp.asarray(rng.standard_normal((3 * H, I))), jnp.asarray(rng.standard_normal((2, 3 * H, H)))
    lengths = np.array([T, 2])

    def loss(x, w_hh):
        y, h_n = fj.gru(x, w_ih, w_hh, lengths=lengths, backend=CPU_BACKENDS[0])
        return jnp.sum(y ** 2) + jnp.sum(h_n)

    grad = jax.grad(loss, argnums=(0, 1))
    eager = [grad(x[i], w_hh[j]) for i in range(3) for j in range(2)]
    jitted = jax.jit(grad)
    for i in range(3):
        for j in range(2):
            for a, b in zip(jitted(x[i], w_hh[j]), eager[2 * i + j]):
                assert np.array_equal(np.asarray(a), np.asarray(b))
    # vmap over the input, then over the weights too (nested): every element as its own call
    mapped = jax.jit(jax.vmap(jax.vmap(grad, in_axes=(None, 0)), in_axes=(0, None)))(x, w_hh)
    for i in range(3):
        for j in range(2):
            for a, b in zip(mapped, eager[2 * i + j]):
                assert rel_error(a[i, j], b) < 1e-12
    values = jax.vmap(loss, in_axes=(0, None))(x, w_hh[0])
    assert np.allclose(values, [loss(x[i], w_hh[0]) for i in range(3)], rtol=1e-12, atol=0)


def test_lstm_projections_grad_matches_torch_shapes(rng):
    """w_hr (P, H) passes through to the reference backend and its gradient comes back."""
    T, B, I, H, P = 4, 2, 3, 5, 2
    args = [jnp.asarray(rng.standard_normal(s)) for s in ((T, B, I), (4 * H, I), (4 * H, P), (P, H))]

    def loss(x, w_ih, w_hh, w_hr):
        y, (h_n, c_n) = fj.lstm(x, w_ih, w_hh, w_hr=w_hr)
        return jnp.sum(y * y) + jnp.sum(c_n)

    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
    y, (h_n, c_n), tape = fastrnn.lstm_forward(*map(np.asarray, args[:3]), w_hr=np.asarray(args[3]))
    expected = fastrnn.lstm_backward(tape, 2 * y, None, np.ones_like(c_n))
    for got, want in zip(grads, (expected.x, expected.w_ih, expected.w_hh, expected.w_hr)):
        assert rel_error(got, want) < 1e-12


def test_bad_arguments_name_the_argument(rng):
    x = jnp.zeros((2, 3, 4, 5))
    with pytest.raises(ValueError, match="x must be 3-D"):
        fj.lstm(x, jnp.zeros((8, 5)), jnp.zeros((8, 2)))
    with pytest.raises(TypeError, match="lengths must be an array of integers"):
        fj.rnn(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4)), jnp.zeros((2, 2)), lengths=jnp.ones(3))
    with pytest.raises(ValueError, match="nonlinearity must be"):
        fj.rnn(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4)), jnp.zeros((2, 2)), nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"w_ih must have shape"):
        fj.gru(jnp.zeros((2, 3, 4)), jnp.zeros((6, 3)), jnp.zeros((6, 2)))


# ----------------------------------------------------------------------------- the functional API takes JAX arrays

def test_functional_api_returns_jax_arrays_for_jax_arrays(rng):
    x, w_ih, w_hh = (rng.standard_normal(s) for s in ((4, 2, 3), (5, 3), (5, 5)))
    y, h_n = fastrnn.rnn(jnp.asarray(x), jnp.asarray(w_ih), w_hh)
    assert isinstance(y, jax.Array) and isinstance(h_n, jax.Array)
    y_np, _ = fastrnn.rnn(x, w_ih, w_hh)
    assert np.array_equal(np.asarray(y), y_np)
