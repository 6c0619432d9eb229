"""fastrnn.LSTM/GRU/RNN layers against torch.nn with the same state_dict, and against finite differences."""
import numpy as np
import pytest

import fastrnn
from rnncases import central_difference, rel_error

torch = pytest.importorskip("torch")

FORMS = {"lstm": ("LSTM", {}), "lstm-proj": ("LSTM", {"proj_size": 2}), "gru": ("GRU", {}),
         "rnn-tanh": ("RNN", {"nonlinearity": "tanh"}), "rnn-relu": ("RNN", {"nonlinearity": "relu"})}
T, B, I, H = 5, 4, 3, 6
TOL = 1e-9


def _pair(form, num_layers, bidirectional, batch_first, seed=0, dropout=0.0):
    name, options = FORMS[form]
    ours = getattr(fastrnn, name)(I, H, num_layers=num_layers, batch_first=batch_first, dropout=dropout,
                                  bidirectional=bidirectional, dtype=np.float64, seed=seed, **options)
    theirs = getattr(torch.nn, name)(I, H, num_layers=num_layers, batch_first=batch_first, dropout=dropout,
                                     bidirectional=bidirectional, dtype=torch.float64, **options)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return ours, theirs


def _run_torch(module, x, hx, lengths, dy, dhx, batch_first):
    xt = torch.tensor(x, requires_grad=True)
    hxt = None
    if hx is not None:
        hxt = tuple(torch.tensor(h, requires_grad=True) for h in hx) if isinstance(hx, tuple) \
            else torch.tensor(hx, requires_grad=True)
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                                         enforce_sorted=False)
        out, states = module(packed, hxt)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    else:
        y, states = module(xt, hxt)
    states = states if isinstance(states, tuple) else (states,)
    loss = (y * torch.tensor(dy)).sum() + sum((s * torch.tensor(d)).sum() for s, d in zip(states, dhx))
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    d_initial = None
    if hxt is not None:
        d_initial = tuple(h.grad.numpy() for h in hxt) if isinstance(hxt, tuple) else (hxt.grad.numpy(),)
    return y.detach().numpy(), [s.detach().numpy() for s in states], xt.grad.numpy(), d_initial, grads


def _compare(rng, form, num_layers, bidirectional, batch_first, lengths, initial):
    ours, theirs = _pair(form, num_layers, bidirectional, batch_first)
    D = 2 if bidirectional else 1
    P = FORMS[form][1].get("proj_size") or H          # size of h and of each direction's output
    is_lstm = form.startswith("lstm")
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    lens = np.array([T, 2, 1, 4]) if lengths else None
    sizes = (P, H) if is_lstm else (P,)
    hx = tuple(rng.standard_normal((num_layers * D, B, n)) * 0.5 for n in sizes) if initial else None
    dy = rng.standard_normal(x.shape[:-1] + (D * P,))
    dhx = tuple(rng.standard_normal((num_layers * D, B, n)) for n in sizes)
    if lens is not None:     # outputs past a length are zero on both sides; their gradients are ignored
        mask = (np.arange(T)[:, None] < lens[None, :])
        dy = dy * (mask.T if batch_first else mask)[..., None]
    ty, tstates, tdx, tdh, tgrads = _run_torch(theirs, x, hx if is_lstm or hx is None else hx[0],
                                               lens, dy, dhx, batch_first)
    y, states = ours(x, hx if is_lstm or hx is None else hx[0], lengths=lens)
    states = states if isinstance(states, tuple) else (states,)
    dx, dh = ours.backward(dy, dhx if is_lstm else dhx[0])
    dh = dh if isinstance(dh, tuple) else (dh,)
    assert rel_error(y, ty) < TOL
    for a, b in zip(states, tstates):
        assert rel_error(a, b) < TOL
    assert rel_error(dx, tdx) < TOL
    if initial:
        for a, b in zip(dh, tdh):
            assert rel_error(a, b) < TOL
    assert set(ours.grads) == set(tgrads)
    for name, g in tgrads.items():
        assert rel_error(ours.grads[name], g) < TOL, name


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("form", list(FORMS))
def test_layers_match_torch_with_lengths_and_states(rng, form, num_layers, bidirectional):
    _compare(rng, form, num_layers, bidirectional, batch_first=num_layers == 2, lengths=True, initial=True)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("form", list(FORMS))
def test_layers_match_torch_without_lengths_or_states(rng, form, batch_first):
    _compare(rng, form, 2, True, batch_first=batch_first, lengths=False, initial=False)


def test_unbatched_input_matches_batched(rng):
    layer = fastrnn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    x = rng.standard_normal((T, I))
    y, (h, c) = layer(x)
    yb, (hb, cb) = layer(x[:, None, :])
    assert y.shape == (T, 2 * H) and h.shape == (4, H)
    np.testing.assert_allclose(y, yb[:, 0], rtol=1e-13)
    np.testing.assert_allclose(c, cb[:, 0], rtol=1e-13)


def _loss_and_grads(layer, x, lens, dy, dh):
    y, h = layer(x, lengths=lens)
    loss = float(np.sum(y * dy) + np.sum(h * dh))
    return loss


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_cho_gru_layers_match_finite_differences(rng, dropout):
    """The original-form GRU has no torch counterpart: central differences of the whole stack, dropout on
    (with the mask fixed by re-seeding before each call) and off."""
    layer = fastrnn.GRU(I, H, num_layers=2, bidirectional=True, dropout=dropout, linear_before_reset=False,
                        dtype=np.float64, seed=3, backend="reference")
    x = rng.standard_normal((T, B, I))
    lens = np.array([T, 3, 1, 2])
    dy = rng.standard_normal((T, B, 2 * H)) * (np.arange(T)[:, None] < lens)[..., None]
    dh = rng.standard_normal((4, B, H))

    def loss(x_value):
        layer._rng = np.random.default_rng(7)
        return _loss_and_grads(layer, x_value, lens, dy, dh)

    loss(x)
    layer.zero_grad()
    dx, _ = layer.backward(dy, dh)
    for name in ("weight_hh_l0_reverse", "weight_ih_l1", "bias_hh_l1_reverse"):
        p = layer.params[name]
        for idx in [tuple(rng.integers(0, n) for n in p.shape) for _ in range(3)]:
            assert abs(central_difference(lambda: loss(x), p, idx) - layer.grads[name][idx]) < 1e-6, (name, idx)
    for idx in [(0, 1, 2), (2, 0, 0), (T - 1, 3, 1)]:
        assert abs(central_difference(lambda: loss(x), x, idx) - dx[idx]) < 1e-6, idx


def test_dropout_acts_in_training_only(rng):
    layer = fastrnn.LSTM(I, H, num_layers=2, dropout=0.5, dtype=np.float64, seed=0)
    x = rng.standard_normal((T, B, I))
    y1, _ = layer(x)
    y2, _ = layer(x)
    assert not np.allclose(y1, y2)                  # fresh masks in training
    layer.eval()
    y3, _ = layer(x)
    y4, _ = layer(x)
    np.testing.assert_array_equal(y3, y4)
    theirs = torch.nn.LSTM(I, H, num_layers=2, dropout=0.5, dtype=torch.float64).eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    assert rel_error(y3, theirs(torch.tensor(x))[0].detach().numpy()) < TOL


def test_parameters_are_torch_shaped_and_initialised():
    ours = fastrnn.GRU(I, H, num_layers=2, bidirectional=True, seed=0)
    theirs = torch.nn.GRU(I, H, num_layers=2, bidirectional=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    values = np.concatenate([v.ravel() for v in ours.params.values()])
    assert np.abs(values).max() <= 1 / np.sqrt(H) and values.std() > 0.5 / np.sqrt(3 * H)
    assert all(v.dtype == np.float32 for v in ours.params.values())


def test_gradients_accumulate_and_zero_grad(rng):
    layer = fastrnn.RNN(I, H, dtype=np.float64, seed=0)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    layer(x)
    layer.backward(dy)
    once = {k: v.copy() for k, v in layer.grads.items()}
    layer(x)
    layer.backward(dy)
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k], rtol=1e-12)
    layer.zero_grad()
    assert all(not v.any() for v in layer.grads.values())


def test_bad_input_gets_clear_errors(rng):
    layer = fastrnn.LSTM(I, H, num_layers=2, dtype=np.float64)
    state = layer.state_dict()
    with pytest.raises(KeyError, match="missing \\['weight_hh_l1'\\]"):
        layer.load_state_dict({k: v for k, v in state.items() if k != "weight_hh_l1"})
    with pytest.raises(KeyError, match="unexpected \\['weight_hr_l0'\\]"):
        layer.load_state_dict({**state, "weight_hr_l0": np.zeros((H, H))})
    with pytest.raises(ValueError, match="weight_ih_l1.*shape \\(24, 6\\)"):
        layer.load_state_dict({**state, "weight_ih_l1": np.zeros((24, 5))})
    x = rng.standard_normal((T, B, I))
    with pytest.raises(ValueError, match="h0 in hx must have shape"):
        layer(x, (np.zeros((1, B, H)), np.zeros((2, B, H))))
    with pytest.raises(TypeError, match="tuple \\(h0, c0\\)"):
        layer(x, np.zeros((2, B, H)))
    with pytest.raises(ValueError, match="lengths must lie in \\[1, T\\]"):
        layer(x, lengths=[T + 1, 1, 1, 1])
    with pytest.raises(ValueError, match="I = input_size = 3"):
        layer(rng.standard_normal((T, B, I + 1)))
    with pytest.raises(TypeError, match="dtype float64"):
        layer(x.astype(np.float32))
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1"):
        fastrnn.GRU(I, 0)
    with pytest.raises(ValueError, match="dropout"):
        fastrnn.GRU(I, H, dropout=1.0)
    with pytest.raises(ValueError, match="proj_size must be 0, or \\(LSTM only\\) smaller than hidden_size"):
        fastrnn.LSTM(I, H, proj_size=H)
    with pytest.raises(ValueError, match="c0 in hx must have shape .* = \\(1, 4, 6\\)"):
        fastrnn.LSTM(I, H, proj_size=2)(x.astype(np.float32), (np.zeros((1, B, 2), np.float32),
                                                               np.zeros((1, B, 2), np.float32)))
    with pytest.raises(RuntimeError, match="forward call first"):
        fastrnn.RNN(I, H).backward(None)
