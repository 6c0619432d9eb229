"""fastrnn.torch against torch.nn: the same model before and after ``convert`` gives the same outputs and the
same gradients (every parameter, the input, the initial states), on each CPU backend, for every cell and
option; plus gradcheck, opcheck, torch.compile, no_grad, state_dict, dropout and argument errors."""
import copy
import io

import numpy as np
import pytest

import fastrnn
from rnncases import rel_error

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastrnn.torch")
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

CPU_BACKENDS = [b for b in ("numba", "cpp", "reference") if b in fastrnn.available_backends()]
TORCH_CLASSES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
T, B, I, H = 5, 3, 4, 6

# name -> (cell, constructor options, input: "plain" | "packed" | "packed-sorted" | "unbatched", hx given)
CASES = {
    "lstm": ("lstm", dict(), "plain", True),
    "lstm-nobias-batchfirst": ("lstm", dict(bias=False, batch_first=True), "plain", False),
    "lstm-2layer-bidir": ("lstm", dict(num_layers=2, bidirectional=True), "plain", True),
    "lstm-2layer-bidir-packed": ("lstm", dict(num_layers=2, bidirectional=True), "packed", True),
    "lstm-unbatched": ("lstm", dict(num_layers=2), "unbatched", True),
    "gru": ("gru", dict(), "plain", True),
    "gru-bidir-packed-sorted": ("gru", dict(bidirectional=True, batch_first=True), "packed-sorted", False),
    "gru-2layer-nobias-batchfirst": ("gru", dict(num_layers=2, bias=False, batch_first=True), "plain", True),
    "rnn-tanh-2layer-bidir": ("rnn", dict(num_layers=2, bidirectional=True), "plain", True),
    "rnn-relu-packed": ("rnn", dict(nonlinearity="relu"), "packed", True),
    "rnn-relu-unbatched-nobias": ("rnn", dict(nonlinearity="relu", bias=False), "unbatched", False),
}


def make_input(rng, model, kind, dtype, device="cpu"):
    """(a function making the model's input, the leaf tensor the gradient is taken for)."""
    shape = (T, I) if kind == "unbatched" else ((B, T, I) if model.batch_first else (T, B, I))
    x = torch.tensor(rng.standard_normal(shape), dtype=dtype, device=device, requires_grad=True)
    if not kind.startswith("packed"):
        return (lambda: x), x
    lengths = torch.tensor([T, T, 1] if kind == "packed-sorted" else [2, T, 1])
    return (lambda: pack_padded_sequence(x, lengths, batch_first=model.batch_first,
                                         enforce_sorted=kind == "packed-sorted")), x


def make_hx(rng, model, kind, dtype, device="cpu"):
    D = 2 if model.bidirectional else 1
    batch = () if kind == "unbatched" else (B,)
    h_size = model.proj_size or model.hidden_size
    leaf = lambda size: torch.tensor(rng.standard_normal((model.num_layers * D, *batch, size)), dtype=dtype,  # noqa: E731
                                     device=device, requires_grad=True)
    if model.mode == "LSTM":
        return leaf(h_size), leaf(model.hidden_size)
    return leaf(h_size)


def outputs_and_grads(model, inp, leaf, hx, rng_seed=0):
    """Every output and every gradient of a fixed random loss, by name (for any model and input kind)."""
    model.zero_grad()
    for t in (leaf, *(hx if isinstance(hx, tuple) else (hx,))):
        if t is not None:
            t.grad = None
    y, finals = model(inp() if callable(inp) else inp, hx)
    finals = finals if isinstance(finals, tuple) else (finals,)
    y_data = y.data if isinstance(y, PackedSequence) else y
    gen = torch.Generator().manual_seed(rng_seed)
    loss = sum((torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype).to(o.device) * o).sum()
               for o in (y_data, *finals))
    loss.backward()
    out = {"y": y_data, **{f"final{k}": f for k, f in enumerate(finals)}, "dx": leaf.grad}
    if isinstance(y, PackedSequence):
        out["batch_sizes"] = y.batch_sizes.double()
        for name in ("sorted_indices", "unsorted_indices"):
            index = getattr(y, name)
            out[name] = None if index is None else index.double()
    for k, state in enumerate(hx if isinstance(hx, tuple) else (hx,)):
        if state is not None:
            out[f"dhx{k}"] = state.grad
    out.update({f"d{name.removeprefix('_orig_mod.')}": p.grad for name, p in model.named_parameters()})
    return {k: (None if v is None else v.detach().double().cpu().numpy()) for k, v in out.items()}


def run_pair(rng, cell, options, kind, with_hx, backend, dtype, proj_size=0, device="cpu"):
    """torch.nn and its converted copy on the same input: (torch results, fastrnn results)."""
    torch.manual_seed(int(rng.integers(1 << 30)))
    extra = dict(proj_size=proj_size) if proj_size else {}
    reference_model = TORCH_CLASSES[cell](I, H, dtype=dtype, device=device, **options, **extra)
    model = ft.convert(copy.deepcopy(reference_model), backend=backend)
    inp, leaf = make_input(rng, reference_model, kind, dtype, device)
    hx = make_hx(rng, reference_model, kind, dtype, device) if with_hx else None
    hx_copy = None if hx is None else (tuple(h.detach().clone().requires_grad_() for h in hx)
                                       if isinstance(hx, tuple) else hx.detach().clone().requires_grad_())
    expected = outputs_and_grads(reference_model, inp, leaf, hx)
    got = outputs_and_grads(model, inp, leaf, hx_copy)
    return expected, got


def assert_results_match(expected, got, rtol, what):
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert (value is None) == (got[name] is None), f"{what}{name}: one is None"
        if value is not None:
            err = rel_error(got[name], value)
            assert err <= rtol, f"{what}{name}: relative error {err:.3g} > {rtol:.3g}"


def check_against_torch(rng, cell, options, kind, with_hx, backend, dtype, proj_size=0):
    """float64: 1e-9 relative. float32 (DESIGN.md's rule): error against torch.nn in float64 <= 2 x the error
    of fastrnn's reference backend in float32 + 8 eps."""
    seed = int(rng.integers(1 << 30))
    run = lambda b, d: run_pair(np.random.default_rng(seed), cell, options, kind, with_hx, b, d, proj_size)  # noqa: E731
    if dtype == torch.float64:
        expected, got = run(backend, torch.float64)
        assert_results_match(expected, got, 1e-9, f"[{backend}] ")
        return
    exact, _ = run(backend, torch.float64)
    _, got = run(backend, torch.float32)
    _, low = run("reference", torch.float32)
    eps = float(np.finfo(np.float32).eps)
    for name, value in exact.items():
        if value is not None:
            bound = 2 * rel_error(low[name], value) + 8 * eps
            err = rel_error(got[name], value)
            assert err <= bound, f"[{backend}] {name}: error {err:.3g} > 2 x reference float32 error + 8 eps"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_converted_model_matches_torch_nn(rng, backend, case, dtype):
    check_against_torch(rng, *CASES[case], backend, dtype)


ON_GPU = torch.cuda.is_available() and "cuda" in fastrnn.available_backends()


@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", ["lstm", "lstm-2layer-bidir-packed", "gru-bidir-packed-sorted", "rnn-relu-packed"])
def test_converted_model_on_cuda_matches_torch_nn(rng, case):
    """CUDA tensors go to the "cuda" backend (CuPy views through __cuda_array_interface__) and come back as
    tensors; torch.nn on the same GPU (cuDNN, float64) is the anchor."""
    expected, got = run_pair(rng, *CASES[case], "auto", torch.float64, device="cuda")
    assert_results_match(expected, got, 1e-9, "[cuda] ")


@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["plain", "packed"])
def test_lstm_with_projections_on_cuda_matches_torch_nn(rng, kind):
    """proj_size with CUDA tensors: the "cuda" backend's stepwise projected LSTM against torch.nn (cuDNN)."""
    expected, got = run_pair(rng, "lstm", dict(num_layers=2, bidirectional=True), kind, True, "auto", torch.float64,
                             proj_size=2, device="cuda")
    assert_results_match(expected, got, 1e-9, "[cuda] ")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", ["plain", "packed"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_lstm_with_projections_matches_torch_nn(rng, backend, kind, dtype):
    """proj_size on every CPU backend; w_hr's gradient comes back through the op."""
    check_against_torch(rng, "lstm", dict(num_layers=2, bidirectional=True), kind, True, backend, dtype,
                        proj_size=2)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropout_masks_match_torch_nn_under_one_seed(rng, cell):
    """Training-mode dropout draws torch's masks in torch's order, so one seed gives the same outputs and
    gradients; eval mode applies none."""
    model = TORCH_CLASSES[cell](I, H, num_layers=3, dropout=0.5, dtype=torch.float64)
    fast = ft.convert(copy.deepcopy(model), backend=CPU_BACKENDS[0])
    x = torch.tensor(rng.standard_normal((T, B, I)), requires_grad=True)
    for mode in ("train", "eval"):
        results = []
        for m in (model, fast):
            getattr(m, mode)()
            torch.manual_seed(7)
            results.append(outputs_and_grads(m, x, x, None))
        assert_results_match(results[0], results[1], 1e-9, f"[{mode}] ")
    torch.manual_seed(7)
    fast.train()
    y_train = fast(x)[0]
    y_eval = fast.eval()(x)[0]
    assert not torch.allclose(y_train, y_eval)          # the masks did act in training mode


@pytest.mark.parametrize("form", sorted(ft._flat.FORMS))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_layer_op_passes_gradcheck_and_opcheck(rng, backend, form):
    G = {"lstm": 4, "gru": 3, "gru_cho": 3}.get(form, 1)
    Tn, Bn, In, Hn = 4, 3, 2, 3
    leaf = lambda *shape: torch.tensor(rng.standard_normal(shape) * 0.5, requires_grad=True)  # noqa: E731
    x, w_ih, w_hh, b_ih, b_hh, h0 = leaf(Tn, Bn, In), leaf(G * Hn, In), leaf(G * Hn, Hn), leaf(G * Hn), \
        leaf(G * Hn), leaf(Bn, Hn)
    c0 = leaf(Bn, Hn) if form == "lstm" else None
    lengths = torch.tensor([Tn, 1, 2])

    def layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
        return tuple(ft.layer_forward(form, backend, x, w_ih, w_hh, b_ih, b_hh, h0, c0, None, lengths, True)[:3])

    inputs = (x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    assert torch.autograd.gradcheck(layer, inputs)
    torch.library.opcheck(ft.layer_forward, ("lstm" if form == "lstm" else form, backend, *inputs, None, lengths,
                                             True))


def test_module_gradcheck_with_dropout_packed_and_projection(rng):
    """float64 gradcheck through the whole composition (2 bidirectional layers with projections, PackedSequence,
    dropout with a mask fixed by reseeding before each evaluation)."""
    model = ft.LSTM(2, 3, num_layers=2, bidirectional=True, dropout=0.3, proj_size=2, dtype=torch.float64)
    names = [name for name, _ in model.named_parameters()]
    x = torch.tensor(rng.standard_normal((4, 3, 2)), requires_grad=True)
    lengths = torch.tensor([2, 4, 1])

    def loss(x, *params):
        torch.manual_seed(3)
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        y, (h_n, c_n) = torch.func.functional_call(model, dict(zip(names, params)), (packed,))
        return y.data, h_n, c_n

    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    assert torch.autograd.gradcheck(loss, (x, *params))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_torch_compile_fullgraph_matches_eager(rng, dynamic):
    model = ft.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic)
    for steps in (T, T + 2):                        # dynamic: one graph for both lengths
        x = torch.tensor(rng.standard_normal((B, steps, I)), requires_grad=True)
        results = [outputs_and_grads(m, x, x, None) for m in (model, compiled)]
        assert_results_match(results[0], results[1], 1e-12, "[compiled] ")


def test_no_grad_runs_the_inference_path_without_a_tape(rng, monkeypatch):
    saves = []
    forward = ft._flat.forward

    def recording(*args):
        saves.append(args[-1])          # save, the last argument
        return forward(*args)

    monkeypatch.setattr(ft._flat, "forward", recording)
    model = ft.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.tensor(rng.standard_normal((T, B, I)))
    y_grad, _ = model(x)
    assert saves == [True] * 4 and y_grad.grad_fn is not None
    saves.clear()
    with torch.no_grad():
        y, (h_n, c_n) = model(x)
    assert saves == [False] * 4 and y.grad_fn is None
    assert torch.equal(y, y_grad.detach())
    saves.clear()
    model.requires_grad_(False)
    model(x)                                        # nothing needs a gradient: no tape either
    assert saves == [False] * 4


def test_unused_outputs_reach_the_kernels_as_none(rng, monkeypatch):
    """A loss of y alone: dh_n and dc_n are not materialised as zero tensors (nor the tape's gradients)."""
    upstream = []
    backward = ft._flat.backward

    def recording(*args):
        upstream.append(tuple(a is None for a in args[-3:]))       # dy, dh_n, dc_n
        return backward(*args)

    monkeypatch.setattr(ft._flat, "backward", recording)
    model = ft.LSTM(I, H, dtype=torch.float64)
    x = torch.tensor(rng.standard_normal((T, B, I)), requires_grad=True)
    model(x)[0].sum().backward()
    assert upstream == [(False, True, True)]


def test_state_dict_round_trip_and_parameters_match_torch(rng):
    torch.manual_seed(11)
    reference_model = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2)
    torch.manual_seed(11)
    model = ft.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2)
    # torch.nn's names, shapes and initialisation (same seed, same draws)
    assert list(reference_model.state_dict()) == list(model.state_dict())
    for (name, p), q in zip(reference_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(p, q), name
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = ft.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2)
    loaded.load_state_dict(torch.load(buffer))
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32)
    assert torch.equal(loaded(x)[0], model(x)[0])
    reference_model.load_state_dict(loaded.state_dict())
    assert rel_error(reference_model(x)[0].detach(), loaded(x)[0].detach()) < 1e-5


def test_convert_replaces_exact_classes_in_place_keeping_parameters():
    class Custom(torch.nn.LSTM):
        pass

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ModuleDict(
        {"a": torch.nn.GRU(2, 3), "b": torch.nn.RNN(2, 3, nonlinearity="relu"), "c": Custom(2, 3)}))
    params = {name: p for name, p in model.named_parameters()}
    assert ft.convert(model, backend="numba") is model
    assert type(model[1]["a"]) is ft.GRU and type(model[1]["b"]) is ft.RNN and type(model[1]["c"]) is Custom
    assert model[1]["a"].backend == "numba"
    assert all(p is params[name] for name, p in model.named_parameters())
    lstm = torch.nn.LSTM(2, 3)
    assert type(ft.convert(lstm)) is ft.LSTM


@pytest.mark.parametrize("call,exc,match", [
    (lambda m: m(torch.zeros(T, B, I, dtype=torch.float64)), TypeError, "input must have the parameters' dtype"),
    (lambda m: m(torch.zeros(T, B, I + 1)), ValueError, r"input must have shape \(T, B, I\).*input_size = 4"),
    (lambda m: m(torch.zeros(T, B, 1, I)), ValueError, "input must have shape"),
    (lambda m: m(np.zeros((T, B, I), np.float32)), TypeError, "input must be a torch.Tensor or a PackedSequence"),
    (lambda m: m(torch.zeros(T, B, I), torch.zeros(1, B, H)), TypeError, r"hx of an LSTM must be a tuple"),
    (lambda m: m(torch.zeros(T, B, I), (torch.zeros(2, B, H), torch.zeros(1, B, H))), ValueError,
     r"hx's h0 must be a tensor of shape .* = \(1, 3, 6\), got \(2, 3, 6\)"),
    (lambda m: m(torch.zeros(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, H, dtype=torch.float64))),
     TypeError, "hx's c0 must have the input's dtype"),
    (lambda m: ft.LSTM(I, H, backend=3), TypeError, "backend must be a string"),
    (lambda m: ft.RNN(I, H, nonlinearity="gelu"), ValueError, "nonlinearity must be 'tanh' or 'relu'"),
    (lambda m: ft.LSTM(I, H, backend="fortran")(torch.zeros(T, B, I)), ValueError, "backend must be 'auto' or one"),
    (lambda m: ft.convert("model"), TypeError, "model must be a torch.nn.Module"),
])
def test_bad_arguments_name_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call(ft.LSTM(I, H))


# ----------------------------------------------------------------------------- the functional API takes tensors

def test_functional_api_takes_and_returns_cpu_tensors_without_copies(rng):
    from fastrnn import _arrays
    x = torch.tensor(rng.standard_normal((T, B, I)))
    w_ih, w_hh = torch.tensor(rng.standard_normal((4 * H, I))), torch.tensor(rng.standard_normal((4 * H, H)))
    assert np.shares_memory(_arrays.to_host({"x": x})["x"], x.numpy())       # the kernels read x in place
    y, (h_n, c_n), tape = fastrnn.lstm_forward(x, w_ih, w_hh, backend=CPU_BACKENDS[0])
    assert all(isinstance(a, torch.Tensor) for a in (y, h_n, c_n))
    y_np, _ = fastrnn.lstm(x.numpy(), w_ih.numpy(), w_hh.numpy(), backend=CPU_BACKENDS[0])
    assert np.array_equal(y.numpy(), y_np)
    grads = fastrnn.lstm_backward(tape, torch.ones_like(y))
    assert isinstance(grads.w_hh, torch.Tensor) and grads.w_hh.shape == w_hh.shape


# ----------------------------------------------------------------------------- pack(): inference on snapshots

def _inference(model, inp, hx=None):
    """Every output of an inference call (no_grad), flattened: y (or a PackedSequence's data) and the finals."""
    with torch.no_grad():
        y, finals = model(inp, hx)
    finals = finals if isinstance(finals, tuple) else (finals,)
    return [y.data if isinstance(y, PackedSequence) else y, *finals]


def _assert_same(got, want, what):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f"{what}[{k}]"


@pytest.mark.parametrize("case", ["lstm", "lstm-2layer-bidir-packed", "lstm-unbatched", "gru-bidir-packed-sorted",
                                  "gru-2layer-nobias-batchfirst", "rnn-relu-packed", "lstm-projections"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_packed_module_equals_the_plain_one(rng, backend, case, monkeypatch):
    """pack(): eval-mode calls without gradients run on snapshots (not the op) and give exactly the plain
    module's outputs on the same backend, on the packing call and later ones."""
    cell, options, kind, with_hx = CASES.get(case, ("lstm", dict(proj_size=2, num_layers=2), "plain", True))
    torch.manual_seed(3)
    model = ft.convert(TORCH_CLASSES[cell](I, H, dtype=torch.float32, **options), backend=backend).eval()
    inp, _ = make_input(rng, model, kind, torch.float32)
    hx = make_hx(rng, model, kind, torch.float32) if with_hx else None
    want = _inference(model, inp(), hx)
    assert model.pack() is model
    ops = []
    monkeypatch.setattr(ft, "layer_forward", lambda *args: ops.append(args) or pytest.fail("the op ran"))
    for call in ("packing", "packed earlier"):
        _assert_same(_inference(model, inp(), hx), want, f"[{backend}] {case} {call}")
    assert not ops


def test_packed_module_follows_tracked_changes_and_train_drops_it(rng):
    """Changes torch tracks (an optimizer step, load_state_dict, to()) re-pack at the next call; .data edits are
    not tracked (pack() again); a call needing gradients runs the op; train() drops the snapshots."""
    torch.manual_seed(5)
    model = ft.LSTM(I, H, num_layers=2).eval()
    fresh = ft.LSTM(I, H, num_layers=2).eval()
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32)

    def check(what):
        dtype = model.weight_ih_l0.dtype
        fresh.to(dtype).load_state_dict(model.state_dict())
        _assert_same(_inference(model, x.to(dtype)), _inference(fresh, x.to(dtype)), what)

    model.pack()
    check("packed")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x)[0].sum().backward()                    # eval mode, gradients wanted: the op, with a tape
    optimizer.step()
    check("after an optimizer step")
    model.load_state_dict(ft.LSTM(I, H, num_layers=2).state_dict())
    check("after load_state_dict")
    model.to(torch.float64)
    check("after to(float64)")
    before = _inference(model, x.double())
    model.weight_hh_l1.data.mul_(2)                 # not tracked: the snapshot stays as it was
    _assert_same(_inference(model, x.double()), before, "after a .data edit")
    model.pack()
    check("after pack() again")
    model.train()
    assert model._fastrnn_packed is None
    with pytest.raises(RuntimeError, match="call eval"):
        model.pack()


def test_pack_whole_model_copies_and_refusals(rng):
    model = torch.nn.Sequential(torch.nn.Linear(I, I), torch.nn.GRU(I, H, batch_first=True))
    with pytest.raises(ValueError, match="convert"):
        ft.pack(model.eval())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ft.pack("model")
    ft.convert(model)
    with pytest.raises(RuntimeError, match="call eval"):
        ft.pack(model.train())
    assert ft.pack(model.eval()) is model and model[1]._fastrnn_packed is not None
    x = torch.tensor(rng.standard_normal((B, T, I)), dtype=torch.float32)
    with torch.no_grad():
        want = model(x)[0]
    buffer = io.BytesIO()
    torch.save(model, buffer)                       # pickles the snapshots' arrays, not their packing
    buffer.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        with torch.no_grad():
            assert torch.equal(clone(x)[0], want)
