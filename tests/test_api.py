"""The public API: accepted inputs, shapes of results, and every error path."""
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import backends
from rnncases import CELL_FORM_IDS, CELL_FORMS, EDGE_SHAPES, assert_same_fields, make_problem, run


def lstm_args(rng, T=3, B=2, I=4, H=5, dtype=np.float64):
    return dict(x=rng.standard_normal((T, B, I)).astype(dtype),
                w_ih=rng.standard_normal((4 * H, I)).astype(dtype),
                w_hh=rng.standard_normal((4 * H, H)).astype(dtype),
                b_ih=rng.standard_normal(4 * H).astype(dtype), b_hh=rng.standard_normal(4 * H).astype(dtype))


# ----------------------------------------------------------------------------- results

@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_dtypes_of_results(rng, cell, variant, shape, dtype):
    T, B, I, H = shape
    problem = make_problem(rng, cell, variant, *shape, dtype=dtype)
    out = run(problem, "reference")
    expected = {"y": (T, B, H), "h_n": (B, H), "c_n": (B, H), "dx": (T, B, I), "dh0": (B, H),
                "dc0": (B, H), "dw_ih": problem.args["w_ih"].shape, "dw_hh": problem.args["w_hh"].shape,
                "db_ih": (problem.args["w_ih"].shape[0],), "db_hh": (problem.args["w_ih"].shape[0],)}
    for name, value in out.items():
        assert value.shape == expected[name], name
        assert value.dtype == dtype, name
        assert np.all(np.isfinite(value)), name


@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
def test_layouts_agree(rng, cell, variant):
    """batch_first and unbatched calls give the time-major results, transposed/squeezed."""
    base = make_problem(rng, cell, variant, 4, 3, 2, 5, lengths=True)
    ref = run(base, "reference")
    bf = base.astype(np.float64)
    bf.options["batch_first"] = True
    bf.args["x"] = base.args["x"].transpose(1, 0, 2)
    bf.upstream["dy"] = base.upstream["dy"].transpose(1, 0, 2)
    got = run(bf, "reference")
    got["y"], got["dx"] = got["y"].transpose(1, 0, 2), got["dx"].transpose(1, 0, 2)
    assert_same_fields(got, ref, 1e-14)
    for b in range(3):   # each sequence alone, unbatched, truncated to its length
        n = base.options["lengths"][b]
        one = base.astype(np.float64)
        del one.options["lengths"]
        one.args = {k: (v if v is None or k.startswith(("w_", "b_")) else (v[:n, b] if k == "x" else v[b]))
                    for k, v in one.args.items()}
        one.upstream = {k: (v[:n, b] if k == "dy" else v[b]) for k, v in one.upstream.items()}
        alone = run(one, "reference")
        assert alone["y"].shape == (n, 5) and alone["h_n"].shape == (5,)
        np.testing.assert_allclose(alone["y"], ref["y"][:n, b], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(alone["dx"], ref["dx"][:n, b], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(alone["dh0"], ref["dh0"][b], rtol=1e-12, atol=1e-14)


BACKENDS = fastrnn.available_backends()


def test_auto_picks_the_first_available_backend_of_the_config(rng):
    from fastrnn import config
    args = lstm_args(rng)
    T, B, _ = args["x"].shape
    order = config.cpu_backend_order((T, B, args["w_hh"].shape[1]), training=True)
    expected = next(name for name in order if name in BACKENDS)
    y, state, tape = fastrnn.lstm_forward(**args)
    assert tape.backend == expected


def test_auto_order_follows_the_measured_shape_rule(monkeypatch):
    from fastrnn import config
    monkeypatch.setattr(config, "CPU_BACKEND_ORDER", ("cpp", "numba", "reference"))
    monkeypatch.setattr(config, "CPU_ORDER_BY_SHAPE", True)
    # "cpp" everywhere: numba, faster at B >= 8 once compiled, costs minutes on a cold first call, and
    # "auto" must not depend on whether it is compiled (config.prefer_numba)
    assert config.cpu_backend_order((128, 8, 512)) == ("cpp", "numba", "reference")
    assert config.cpu_backend_order((16, 1, 1024)) == ("cpp", "numba", "reference")
    assert config.cpu_backend_order(None) == ("cpp", "numba", "reference")
    # a forward that saves for backward: "cpp" too
    assert config.cpu_backend_order((128, 8, 1024), training=True) == ("cpp", "numba", "reference")
    assert config.cpu_backend_order((512, 64, 128), training=True) == ("cpp", "numba", "reference")
    assert config.cpu_backend_order((16, 8, 128), training=True) == ("cpp", "numba", "reference")
    # where a rule moves numba ahead, the order follows it, unless FASTRNN_CPU_BACKENDS fixed the order
    monkeypatch.setattr(config, "prefer_numba", lambda T, B, H, training=False: training and H >= 256)
    assert config.cpu_backend_order((128, 8, 1024), training=True) == ("numba", "cpp", "reference")
    assert config.cpu_backend_order((128, 8, 1024)) == ("cpp", "numba", "reference")
    monkeypatch.setattr(config, "CPU_ORDER_BY_SHAPE", False)     # FASTRNN_CPU_BACKENDS set: the order is fixed
    assert config.cpu_backend_order((128, 8, 1024), training=True) == ("cpp", "numba", "reference")


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_call_matches_forward(rng, backend):
    args = lstm_args(rng)
    y, (h, c) = fastrnn.lstm(**args, backend=backend)
    y2, (h2, c2), tape = fastrnn.lstm_forward(**args, backend=backend)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(h, h2)
    np.testing.assert_array_equal(c, c2)
    assert tape.backend == backend and tape.cell == "lstm"


@pytest.mark.parametrize("backend", BACKENDS)
def test_array_likes_are_accepted(rng, backend):
    """Lists, Fortran order, non-contiguous views and read-only arrays give the same answer."""
    args = lstm_args(rng)
    y, (h, c) = fastrnn.lstm(**args, backend=backend)
    big = np.zeros((3, 4, 8))
    big[:, ::2, ::2] = args["x"]
    variants = [
        dict(args, x=args["x"].tolist(), w_hh=args["w_hh"].tolist()),
        dict(args, w_ih=np.asfortranarray(args["w_ih"]), x=np.asfortranarray(args["x"])),
        dict(args, x=big[:, ::2, ::2]),
    ]
    readonly = args["w_hh"].copy()
    readonly.flags.writeable = False
    variants.append(dict(args, w_hh=readonly))
    for kw in variants:
        y2, (h2, c2) = fastrnn.lstm(**kw, backend=backend)
        np.testing.assert_array_equal(y2, y)
        np.testing.assert_array_equal(c2, c)


class OnlyArray:
    """An array-like known to NumPy only through __array__."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a


class OnlyDLPack:
    """An array-like known only through the DLPack protocol (on the CPU)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


@pytest.mark.parametrize("wrap", [OnlyArray, OnlyDLPack])
def test_array_protocols_go_in_and_numpy_comes_out(rng, wrap):
    args = lstm_args(rng)
    y, (h, c), tape = fastrnn.lstm_forward(**args, backend="reference")
    wrapped = {name: wrap(value) for name, value in args.items()}
    y2, (h2, c2), tape2 = fastrnn.lstm_forward(**wrapped, backend="reference")
    for got, expected in ((y2, y), (h2, h), (c2, c)):
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, expected)
    grads = fastrnn.lstm_backward(tape2, wrap(np.ones_like(y)))
    np.testing.assert_array_equal(grads.w_hh, fastrnn.lstm_backward(tape, np.ones_like(y)).w_hh)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lists_adopt_the_arrays_dtype(rng, backend):
    args = lstm_args(rng, dtype=np.float32)
    y, (h, c) = fastrnn.lstm(**dict(args, h0=np.zeros((2, 5)).tolist()), backend=backend)
    assert y.dtype == h.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_are_not_modified(rng, backend):
    args = lstm_args(rng)
    copies = {k: v.copy() for k, v in args.items()}
    y, state, tape = fastrnn.lstm_forward(**args, backend=backend)
    dy = np.ones_like(y)
    fastrnn.lstm_backward(tape, dy)
    for k in args:
        np.testing.assert_array_equal(args[k], copies[k])
    assert np.all(dy == 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_twice_gives_the_same_gradients(rng, backend):
    y, state, tape = fastrnn.lstm_forward(**lstm_args(rng), backend=backend)
    dy = rng.standard_normal(y.shape)
    g1, g2 = fastrnn.lstm_backward(tape, dy), fastrnn.lstm_backward(tape, dy)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_final_state_gradients(rng, backend):
    """dy=None means no gradient flows in through y."""
    args = lstm_args(rng)
    y, (h, c), tape = fastrnn.lstm_forward(**args, backend=backend)
    dh = rng.standard_normal(h.shape)
    g_none = fastrnn.lstm_backward(tape, None, dh_n=dh)
    g_zero = fastrnn.lstm_backward(tape, np.zeros_like(y), dh_n=dh, dc_n=np.zeros_like(c))
    for a, b in zip(g_none, g_zero):
        np.testing.assert_array_equal(a, b)
    assert np.abs(g_none.w_hh).max() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_gives_nan_out(rng, backend):
    args = lstm_args(rng, B=3)
    args["x"][1, 0, 2] = np.nan
    y, (h, c), tape = fastrnn.lstm_forward(**args, backend=backend)
    assert np.all(np.isnan(y[1:, 0])) and np.all(np.isfinite(y[:1])) and np.all(np.isfinite(y[:, 1:]))
    assert np.all(np.isnan(h[0])) and np.all(np.isfinite(h[1:]))
    g = fastrnn.lstm_backward(tape, np.ones_like(y))
    assert np.isnan(g.w_hh).any()


@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
def test_large_inputs_saturate_without_warnings(rng, cell, variant, dtype, backend):
    problem = make_problem(rng, cell, variant, 4, 3, 5, 6, dtype=dtype)
    problem.args["x"] = (problem.args["x"] * 1e4).astype(dtype)
    problem.args["w_hh"] = (problem.args["w_hh"] * 1e3).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = run(problem, backend)
    for name, value in out.items():
        assert np.all(np.isfinite(value)), name
    if variant != "relu":   # gates saturate: |h| stays within tanh's range (GRU: or |h0|'s)
        assert np.abs(out["y"]).max() <= max(1.0, np.abs(problem.args["h0"]).max())


def test_available_backends_lists_the_reference():
    assert "reference" in fastrnn.available_backends()


def test_all_public_names_exist():
    for name in fastrnn.__all__:
        assert hasattr(fastrnn, name)


def test_import_is_light():
    import subprocess
    import sys
    code = ("import sys, fastrnn; heavy = [m for m in ('torch', 'jax', 'cupy', 'numba.cuda', 'fastrnn.torch', "
            "'fastrnn.jax') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_framework_adapter_without_the_framework_names_the_extra(framework):
    import subprocess
    import sys
    code = (f"import sys; sys.modules[{framework!r}] = None\n"     # as if it were not installed
            f"try:\n    import fastrnn.{framework}\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"pip install fastrnn[{framework}]" in out.stdout


# ----------------------------------------------------------------------------- errors

def call_error(fn, exc, match, **kw):
    with pytest.raises(exc, match=match):
        fn(**kw)


@pytest.mark.parametrize("change,exc,match", [
    (dict(x=np.zeros((3, 2, 4, 1))), ValueError, r"x must be 3-D \(T, B, I\) or 2-D"),
    (dict(x=np.zeros(4)), ValueError, r"x must be 3-D"),
    (dict(w_hh=np.zeros((20, 4))), ValueError, r"w_hh must have shape \(4\*H, H\).*got \(20, 4\)"),
    (dict(w_hh=np.zeros((15, 5))), ValueError, r"w_hh must have shape \(4\*H, H\)"),
    (dict(w_ih=np.zeros((20, 3))), ValueError, r"w_ih must have shape \(4\*H, I\) = \(20, 4\), got \(20, 3\)"),
    (dict(w_ih=np.zeros((16, 4))), ValueError, r"w_ih must have shape .* = \(20, 4\), got \(16, 4\)"),
    (dict(b_ih=np.zeros(19)), ValueError, r"b_ih must have shape \(4\*H,\) = \(20,\), got \(19,\)"),
    (dict(b_hh=np.zeros((1, 20))), ValueError, r"b_hh must have shape"),
    (dict(h0=np.zeros((3, 5))), ValueError, r"h0 must have shape \(B, H\) = \(2, 5\), got \(3, 5\)"),
    (dict(c0=np.zeros((1, 2, 5))), ValueError, r"c0 must have shape \(B, H\) = \(2, 5\)"),
    (dict(x=np.zeros((0, 2, 4))), ValueError, r"x must have T >= 1"),
    (dict(x=np.zeros((3, 0, 4))), ValueError, r"x must have B >= 1"),
    (dict(x=np.zeros((3, 2, 4), np.int64)), TypeError, r"x must be a floating array .* got dtype int64"),
    (dict(w_hh=np.zeros((20, 5), complex)), TypeError, r"w_hh must be real"),
    (dict(x=np.zeros((3, 2, 4), object)), TypeError, r"x must be a floating array .*object"),
    (dict(x=np.zeros((3, 2, 4), np.float16)), TypeError, r"x has dtype float16; supported"),
    (dict(x=np.zeros((3, 2, 4), bool)), TypeError, r"x must be a floating array .* got dtype bool"),
    (dict(x=[[1.0, 2.0], [3.0]]), ValueError, r"x must be a rectangular numeric array"),
    (dict(w_ih=np.zeros((20, 4), np.float32)), TypeError, r"share one dtype; got x is float64, w_ih is float32"),
    (dict(lengths=[3, 4]), ValueError, r"lengths must lie in \[1, T\] = \[1, 3\], got values from 3 to 4"),
    (dict(lengths=[0, 2]), ValueError, r"lengths must lie in \[1, T\]"),
    (dict(lengths=[3, 2, 1]), ValueError, r"lengths must have shape \(B,\) = \(2,\), got \(3,\)"),
    (dict(lengths=[2.0, 3.0]), TypeError, r"lengths must be an array of integers, got dtype float64"),
    (dict(batch_first="yes"), TypeError, r"batch_first must be True or False"),
    (dict(backend="fortran"), ValueError, r"backend must be 'auto' or one of \[.*'reference'.*\], got 'fortran'"),
    (dict(backend=3), TypeError, r"backend must be a string"),
])
def test_lstm_argument_errors(rng, change, exc, match):
    args = lstm_args(rng)
    args.update(change)
    call_error(fastrnn.lstm, exc, match, **args)
    call_error(fastrnn.lstm_forward, exc, match, **args)


def test_unbatched_errors(rng):
    args = lstm_args(rng)
    args["x"] = args["x"][:, 0]
    call_error(fastrnn.lstm, ValueError, r"h0 must have shape \(H,\) = \(5,\), got \(1, 5\)",
               **args, h0=np.zeros((1, 5)))
    call_error(fastrnn.lstm, ValueError, r"lengths applies to batched input only", **args, lengths=[2])


def test_option_errors(rng):
    x, w3, w1 = rng.standard_normal((3, 2, 4)), np.zeros((15, 5)), np.zeros((5, 5))
    call_error(fastrnn.rnn, ValueError, r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'",
               x=x, w_ih=np.zeros((5, 4)), w_hh=w1, nonlinearity="sigmoid")
    call_error(fastrnn.gru, TypeError, r"linear_before_reset must be True or False",
               x=x, w_ih=np.zeros((15, 4)), w_hh=w3, linear_before_reset="no")
    call_error(fastrnn.gru, ValueError, r"w_hh must have shape \(3\*H, H\) for gru",
               x=x, w_ih=np.zeros((20, 4)), w_hh=np.zeros((20, 5)))


def test_backward_argument_errors(rng):
    y, (h, c), tape = fastrnn.lstm_forward(**lstm_args(rng))
    with pytest.raises(ValueError, match=r"dy must have shape \(T, B, H\) = \(3, 2, 5\), got \(2, 3, 5\)"):
        fastrnn.lstm_backward(tape, np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"dh_n must have shape \(B, H\) = \(2, 5\)"):
        fastrnn.lstm_backward(tape, None, dh_n=np.zeros(5))
    with pytest.raises(ValueError, match=r"dc_n must have shape"):
        fastrnn.lstm_backward(tape, None, dc_n=np.zeros((5, 2)))
    with pytest.raises(TypeError, match=r"dy must have dtype float64 \(the forward's dtype\), got float32"):
        fastrnn.lstm_backward(tape, np.zeros((3, 2, 5), np.float32))
    with pytest.raises(TypeError, match=r"dy must be a floating array"):
        fastrnn.lstm_backward(tape, np.zeros((3, 2, 5), np.int32))
    with pytest.raises(TypeError, match=r"tape must be the Tape returned by gru_forward"):
        fastrnn.gru_backward(object(), None)
    with pytest.raises(ValueError, match=r"tape was made by lstm_forward; pass it to lstm_backward"):
        fastrnn.gru_backward(tape, None)
    x = rng.standard_normal((3, 2, 4))
    y, h, tape = fastrnn.gru_forward(x, np.zeros((15, 4)), np.zeros((15, 5)), batch_first=True)
    with pytest.raises(ValueError, match=r"dy must have shape \(B, T, H\) = \(3, 2, 5\)"):
        fastrnn.gru_backward(tape, np.zeros((2, 2, 5)))
    with pytest.raises(TypeError, match=r"fastrnn.gru_backward|unexpected keyword"):
        fastrnn.gru_backward(tape, None, dc_n=np.zeros((2, 5)))


def test_backend_known_but_not_installed(rng, monkeypatch):
    fake = backends.Backend("fake", "fastrnn_fake_module", requires=("fastrnn_missing_dependency",),
                            install_hint="install it with: pip install 'fastrnn[fake]'")
    monkeypatch.setitem(backends._REGISTRY, "fake", fake)
    assert "fake" not in fastrnn.available_backends()
    with pytest.raises(ImportError, match=r"backend 'fake' needs fastrnn_missing_dependency.*fastrnn\[fake\]"):
        fastrnn.lstm(**lstm_args(rng), backend="fake")
