"""fastrnn.pack_weights: a frozen snapshot whose packed weights each CPU backend makes once and reuses.

The calls on a snapshot must give exactly what the same backend gives on the plain arrays (the same
kernels read the same packed values), on the first call (which packs) and on later ones (which read
the stored packing); the later ones must not read the weights again, which the poisoning test checks.
"""
import copy
import pickle
import threading

import numpy as np
import pytest

import fastrnn
from rnncases import CELL_FORM_IDS, CELL_FORMS, VARIANT_ARG, make_problem, run

from conftest import CUDA_SIMULATED

BACKENDS = [name for name in fastrnn.available_backends() if not (name == "cuda" and CUDA_SIMULATED)]
PACKING_BACKENDS = [name for name in ("numba", "cpp") if name in fastrnn.available_backends()]
WEIGHTS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def _on_snapshot(problem):
    """The problem's call arguments with its weights replaced by one PackedWeights (and the snapshot)."""
    args = dict(problem.args)
    weights = {name: args.pop(name, None) for name in WEIGHTS}
    packed = fastrnn.pack_weights(problem.cell, weights["w_ih"], weights["w_hh"], weights["b_ih"],
                                  weights["b_hh"], w_hr=weights["w_hr"])
    args["w_ih"] = packed
    return args, packed


def _outputs(problem, args, backend):
    result = getattr(fastrnn, problem.cell)(**args, **problem.options, backend=backend)
    return [result[0]] + (list(result[1]) if problem.cell == "lstm" else [result[1]])


def _assert_identical(got, want, what):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what}[{i}]"
        assert np.array_equal(a, b, equal_nan=True), f"{what}[{i}]: max diff {np.abs(a - b).max():.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (3, 2, 5, 33), (20, 7, 6, 17)],
                         ids=lambda s: "T{}B{}I{}H{}".format(*s))   # the last one: the GEMM path of numba
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_snapshot_calls_equal_plain_calls(rng, backend, cell, variant, shape, dtype):
    problem = make_problem(rng, cell, variant, *shape, lengths=shape[1] > 1, batch_first=shape[0] == 3,
                           dtype=dtype)
    args, _ = _on_snapshot(problem)
    want = _outputs(problem, problem.args, backend)
    for call in ("packing", "packed earlier", "packed earlier, again"):
        _assert_identical(_outputs(problem, args, backend), want, f"{backend} {call}")


@pytest.mark.parametrize("states", ["given", "zero"])
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_snapshot_short_checks_equal_the_full_ones(rng, monkeypatch, backend, cell, variant, states):
    """A time-major, contiguous call on a snapshot without lengths is checked in a few steps
    (_validation.snapshot_call); it must give exactly what the full checks give (forced by turning the
    short ones off)."""
    from fastrnn import api
    problem = make_problem(rng, cell, variant, 4, 3, 5, 6, init_state=states == "given")
    args, _ = _on_snapshot(problem)
    taken = []
    short = api.snapshot_call
    monkeypatch.setattr(api, "snapshot_call", lambda *a, **k: taken.append(short(*a, **k)) or taken[-1])
    got = _outputs(problem, args, backend)
    assert taken and taken[-1] is not None
    monkeypatch.setattr(api, "snapshot_call", lambda *a, **k: None)
    _assert_identical(got, _outputs(problem, args, backend), f"{backend} short checks")


@pytest.mark.parametrize("backend", BACKENDS)
def test_snapshot_serves_forward_and_backward(rng, backend):
    """*_forward on a snapshot records a tape whose backward gives the plain call's gradients."""
    problem = make_problem(rng, "lstm", None, 6, 3, 4, 5, lengths=True)
    args, _ = _on_snapshot(problem)
    want = run(problem, backend)
    result = fastrnn.lstm_forward(**args, **problem.options, backend=backend)
    grads = fastrnn.lstm_backward(result[2], **problem.upstream)
    _assert_identical([result[0], *result[1]], [want["y"], want["h_n"], want["c_n"]], "forward")
    _assert_identical([getattr(grads, name) for name in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")],
                      [want["d" + name] for name in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")], "grads")


@pytest.mark.parametrize("rows", ["fused", "separate-gemm", "gemm-in-chunks"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,variant", CELL_FORMS, ids=CELL_FORM_IDS)
@pytest.mark.parametrize("backend", PACKING_BACKENDS)
def test_later_calls_read_the_stored_packing(rng, monkeypatch, backend, cell, variant, dtype, rows):
    """After the first call, the snapshot's own w_ih and w_hh are overwritten with NaN (reaching past
    the read-only views): a later call that packed again would return NaN. The packed parts only:
    numba reads the biases as they are (and in its input GEMM, the columns beyond its last full panel
    of 2 vectors, so G*H is a multiple of 32 here: 2 vectors of float32 with AVX-512). numba's input
    projection: inside each step (fused), one GEMM before the kernel (one worker), or by the kernel
    in chunks of steps (several workers)."""
    if rows == "gemm-in-chunks":
        from fastrnn import config
        monkeypatch.setattr(config, "THREADS", 2)
        monkeypatch.setattr(config, "PARALLEL_MIN_MACS", 0)
        monkeypatch.setenv("FASTRNN_CHUNK_STEPS", "7")
    H = 32
    T, B = (3, 2) if rows == "fused" else (40, 3)       # T*B within / beyond FASTRNN_FUSE_INPUT_ROWS
    problem = make_problem(rng, cell, variant, T, B, 5, H, lengths=True, dtype=dtype)
    args, packed = _on_snapshot(problem)
    want = _outputs(problem, args, backend)
    for name in ("w_ih", "w_hh"):
        packed._arrays[name][...] = np.nan
    _assert_identical(_outputs(problem, args, backend), want, f"{backend} after the weights were poisoned")
    poisoned_y = _outputs(problem, problem.args | {"w_ih": packed.w_ih, "w_hh": packed.w_hh}, backend)[0]
    assert np.isnan(poisoned_y[0]).all()    # (the poison shows in a plain call: step 0, every sequence)


# the weights each backend keeps packed (numba reads the biases in place)
PACKED_WITH_PROJECTIONS = {"cpp": ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr"), "numba": ("w_ih", "w_hh", "w_hr")}


@pytest.mark.parametrize("backend", PACKING_BACKENDS)
def test_lstm_projections_on_a_snapshot(rng, backend):
    """w_hr travels in the snapshot too, and is packed with the rest (poisoned after the first call). (4H = 32:
    numba's GEMM panels are two vectors of columns, and it reads the columns past them in place.)"""
    problem = make_problem(rng, "lstm", None, 5, 3, 4, 8, proj_size=3, lengths=True)
    args, packed = _on_snapshot(problem)
    want = _outputs(problem, problem.args, backend)
    _assert_identical(_outputs(problem, args, backend), want, f"{backend} packing")
    for name in PACKED_WITH_PROJECTIONS[backend]:
        packed._arrays[name][...] = np.nan
    _assert_identical(_outputs(problem, args, backend), want, f"{backend} packed earlier")


def test_snapshot_is_a_copy(rng):
    problem = make_problem(rng, "gru", True, 4, 2, 3, 5)
    args, packed = _on_snapshot(problem)
    want = _outputs(problem, args, "reference")
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        problem.args[name] *= 2                       # the caller's arrays change; the snapshot does not
    _assert_identical(_outputs(problem, args, "reference"), want, "after the caller's arrays changed")
    assert not packed.w_hh.flags.writeable
    with pytest.raises(ValueError):
        packed.w_hh[0, 0] = 1.0
    assert packed.cell == "gru" and packed.input_size == 3 and packed.hidden_size == 5
    assert packed.dtype == np.float64 and packed.w_hr is None


@pytest.mark.parametrize("copy_by", ["pickle", "deepcopy"])
def test_snapshot_pickles_and_deep_copies(rng, copy_by):
    """A used snapshot (packed copies stored) pickles and deep-copies as its arrays: the copy gives the same
    results and packs for itself; so does a packed layer (saved models, copy.deepcopy(model))."""
    problem = make_problem(rng, "lstm", None, 4, 2, 3, 5)
    args, packed = _on_snapshot(problem)
    backend = PACKING_BACKENDS[0] if PACKING_BACKENDS else "reference"
    want = _outputs(problem, args, backend)
    clone = pickle.loads(pickle.dumps(packed)) if copy_by == "pickle" else copy.deepcopy(packed)
    assert clone.cell == "lstm" and not clone._packs and bool(packed._packs) == (backend != "reference")
    for name in WEIGHTS:
        a, b = getattr(packed, name), getattr(clone, name)
        assert (a is None and b is None) or (np.array_equal(a, b) and not np.shares_memory(a, b))
    _assert_identical(_outputs(problem, args | {"w_ih": clone}, backend), want, f"{copy_by} snapshot")
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    layer = _layer("gru").eval().pack()
    layer_clone = pickle.loads(pickle.dumps(layer)) if copy_by == "pickle" else copy.deepcopy(layer)
    _assert_identical(_layer_call(layer_clone, x, None), _layer_call(layer, x, None), f"{copy_by} layer")


@pytest.mark.parametrize("backend", PACKING_BACKENDS)
def test_snapshot_shared_by_threads(rng, backend):
    """Threads racing on a fresh snapshot (each may pack; one packing is kept) all get the plain result."""
    problem = make_problem(rng, "lstm", None, 50, 4, 24, 40, dtype=np.float32)
    want = _outputs(problem, problem.args, backend)
    args, _ = _on_snapshot(problem)
    results, barrier = [None] * 4, threading.Barrier(4)

    def call(i):
        barrier.wait()
        results[i] = [_outputs(problem, args, backend) for _ in range(3)]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for per_thread in results:
        for got in per_thread:
            _assert_identical(got, want, f"{backend} from a thread")


def test_variants_share_one_snapshot(rng):
    """Packing does not depend on the GRU form or the RNN nonlinearity: one snapshot serves both."""
    for cell in VARIANT_ARG:
        variants = (True, False) if cell == "gru" else ("tanh", "relu")
        problem = make_problem(rng, cell, variants[0], 4, 2, 3, 6)
        args, _ = _on_snapshot(problem)
        for variant in variants:
            options = problem.options | {VARIANT_ARG[cell]: variant}
            got = getattr(fastrnn, cell)(**args, **options, backend="reference")
            want = getattr(fastrnn, cell)(**problem.args, **options, backend="reference")
            _assert_identical(list(got), list(want), f"{cell} {variant}")


def test_bad_snapshots_and_calls_are_refused(rng):
    H, I = 4, 3
    w_ih, w_hh = rng.standard_normal((4 * H, I)), rng.standard_normal((4 * H, H))
    with pytest.raises(ValueError, match="cell must be one of"):
        fastrnn.pack_weights("lstmm", w_ih, w_hh)
    with pytest.raises(ValueError, match=r"w_hh must have shape \(4\*H, H\)"):
        fastrnn.pack_weights("lstm", w_ih, w_hh[:, :3])
    with pytest.raises(ValueError, match=r"w_ih must have shape"):
        fastrnn.pack_weights("lstm", w_ih[:5], w_hh)
    with pytest.raises(ValueError, match="w_ih must be 2-D"):
        fastrnn.pack_weights("lstm", w_ih[0], w_hh)
    with pytest.raises(TypeError, match="share one dtype"):
        fastrnn.pack_weights("lstm", w_ih.astype(np.float32), w_hh)
    with pytest.raises(TypeError, match="integer|float"):
        fastrnn.pack_weights("lstm", w_ih.astype(np.int64), w_hh.astype(np.int64))
    packed = fastrnn.pack_weights("lstm", w_ih, w_hh)
    x = rng.standard_normal((2, 1, I))
    with pytest.raises(TypeError, match="do not pass w_hh"):
        fastrnn.lstm(x, packed, w_hh)
    with pytest.raises(TypeError, match="do not pass b_ih, b_hh"):
        fastrnn.lstm(x, packed, None, np.zeros(4 * H), np.zeros(4 * H))
    with pytest.raises(ValueError, match="for lstm, not gru"):
        fastrnn.gru(x, packed)
    with pytest.raises(TypeError, match="needs w_hh"):
        fastrnn.lstm(x, w_ih)
    with pytest.raises(TypeError, match="share one dtype"):
        fastrnn.lstm(x.astype(np.float32), packed)
    with pytest.raises(ValueError, match="w_ih must have shape"):
        fastrnn.lstm(rng.standard_normal((2, 1, I + 1)), packed)
    # (states that the short checks of a snapshot call pass on to the full ones, for their messages)
    with pytest.raises(TypeError, match="share one dtype"):
        fastrnn.lstm(x, packed, h0=np.zeros((1, H), np.float32))
    with pytest.raises(ValueError, match=r"c0 must have shape \(B, H\)"):
        fastrnn.lstm(x, packed, c0=np.zeros((2, H)))
    with pytest.raises(TypeError, match="batch_first must be True or False"):
        fastrnn.lstm(x, packed, batch_first=None)


def test_pack_weights_takes_cpu_tensors(rng):
    torch = pytest.importorskip("torch")
    layer = torch.nn.GRU(3, 5)
    packed = fastrnn.pack_weights("gru", layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
    x = torch.randn(4, 2, 3)
    y, h_n = fastrnn.gru(x, packed, backend="reference")
    with torch.no_grad():
        want, want_h = layer(x)
    assert isinstance(y, torch.Tensor)
    assert torch.allclose(y, want, atol=1e-5) and torch.allclose(h_n, want_h[0], atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_empty_starts_on_a_cache_line(dtype):
    from fastrnn._arrays import aligned_empty
    for shape in ((1,), (7,), (33, 5), (1000,), (10 ** 6,), (3, 5, 8)):
        arr = aligned_empty(shape, dtype)
        assert arr.shape == shape and arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.writeable
        assert arr.ctypes.data % 64 == 0
    assert aligned_empty((0, 4), dtype).shape == (0, 4)


@pytest.mark.skipif("cuda" not in fastrnn.available_backends(),
                    reason="needs the cuda backend (a GPU or the simulator)")
def test_cuda_backend_takes_a_snapshot_of_host_arrays(rng):
    """backend="cuda" with NumPy inputs copies a snapshot's arrays to the GPU like plain ones (tiny: the
    simulator runs it too)."""
    problem = make_problem(rng, "gru", True, 2, 1, 2, 3, dtype=np.float32)
    args, _ = _on_snapshot(problem)
    _assert_identical(_outputs(problem, args, "cuda"), _outputs(problem, problem.args, "cuda"), "cuda")


# ----------------------------------------------------------------------------- layers: pack()

LAYER_FORMS = {"lstm": ("LSTM", {}), "lstm-proj": ("LSTM", {"proj_size": 3}), "gru": ("GRU", {}),
               "gru-cho": ("GRU", {"linear_before_reset": False}), "rnn-relu": ("RNN", {"nonlinearity": "relu"})}


def _layer(form, seed=0):
    name, options = LAYER_FORMS[form]
    return getattr(fastrnn, name)(4, 5, num_layers=2, bidirectional=True, dtype=np.float32, seed=seed, **options)


def _layer_call(layer, x, lengths):
    y, states = layer(x, lengths=lengths)
    return [y, *(states if isinstance(states, tuple) else (states,))]


@pytest.mark.parametrize("form", list(LAYER_FORMS))
def test_packed_layer_equals_the_plain_one(rng, form):
    """pack(): eval calls on snapshots give the plain calls' outputs, then backward their gradients."""
    x, lengths = rng.standard_normal((6, 3, 4)).astype(np.float32), [6, 2, 1]
    plain, packed = _layer(form).eval(), _layer(form).eval().pack()
    dy = rng.standard_normal((6, 3, 2 * plain.output_size)).astype(np.float32)
    want = _layer_call(plain, x, lengths)
    want_dx, _ = plain.backward(dy)
    for call in ("packing", "packed earlier"):
        _assert_identical(_layer_call(packed, x, lengths), want, f"{form} {call}")
    dx, _ = packed.backward(dy)
    _assert_identical([dx, *packed.grads.values()], [want_dx, *plain.grads.values()], f"{form} backward")


def test_layer_pack_needs_eval_mode():
    """A snapshot taken in training mode would go stale at the next optimizer step."""
    layer = _layer("gru")
    with pytest.raises(RuntimeError, match="call eval"):
        layer.pack()
    assert layer._packed is None


def test_layer_pack_is_a_snapshot_until_dropped(rng):
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    layer = _layer("lstm").eval().pack()
    before = _layer_call(layer, x, None)
    layer.params["weight_hh_l0"] *= 2                   # in place: the snapshot does not see it
    _assert_identical(_layer_call(layer, x, None), before, "after an in-place change")
    other = _layer("lstm", seed=1).eval()
    layer.load_state_dict(other.state_dict())           # load_state_dict drops the snapshots
    _assert_identical(_layer_call(layer, x, None), _layer_call(other, x, None), "after load_state_dict")
    layer.pack()
    layer.params["weight_hh_l0"] *= 2
    layer.train()                                       # so does train(): training changes parameters
    assert layer._packed is None
    reference = _layer("lstm", seed=1).eval()
    reference.params["weight_hh_l0"] *= 2
    _assert_identical(_layer_call(layer.eval(), x, None), _layer_call(reference, x, None), "after train()")
