"""fastrnn.train against PyTorch: clipping, initialisers, optimisers, losses, Linear/Embedding, truncated BPTT."""
import io
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn.train import (SGD, Adam, AdamW, Embedding, Linear, RecurrentModel, bptt_chunks, clip_grad_norm,
                           clip_grad_value, cross_entropy, evaluate_chunked, init_recurrent, mse,
                           next_token_chunks, orthogonal_, progress_bar, stream_batches, train_chunked,
                           uniform_, xavier_uniform_)

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _close(ours, theirs, tol=1e-10):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


def _grads_pair(rng, shapes=((3, 4), (5,), (2, 2, 3))):
    ours = {f"g{k}": rng.standard_normal(s) for k, s in enumerate(shapes)}
    theirs = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in shapes]
    for p, g in zip(theirs, ours.values()):
        p.grad = torch.tensor(g)
    return ours, theirs


# ----------------------------------------------------------------------------- clipping

@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(rng, norm_type, max_norm):
    ours, theirs = _grads_pair(rng)
    total = clip_grad_norm(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert total == pytest.approx(float(expected), rel=1e-12)
    for g, p in zip(ours.values(), theirs):
        _close(g, p.grad)
    if max_norm < total:       # clipped: the new norm is max_norm (up to torch's 1e-6)
        assert clip_grad_norm(ours, 1e9, norm_type=norm_type) == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_over_layers_and_float32(rng):
    layer, head = fastrnn.GRU(3, 4, seed=0), Linear(4, 2, seed=0)
    for g in [*layer.grads.values(), *head.grads.values()]:
        g[...] = rng.standard_normal(g.shape)
    everything = np.concatenate([g.ravel() for g in [*layer.grads.values(), *head.grads.values()]])
    total = clip_grad_norm([layer, head.grads], 0.1)
    assert total == pytest.approx(float(np.linalg.norm(everything.astype(np.float64))), rel=1e-6)
    assert all(g.dtype == np.float32 for g in layer.grads.values())
    assert clip_grad_norm([layer, head], 1e9) == pytest.approx(0.1, rel=1e-4)


def test_clip_grad_norm_nonfinite_leaves_gradients(rng):
    for bad in (np.nan, np.inf):
        grads = {"a": rng.standard_normal(4), "b": rng.standard_normal(3)}
        grads["b"][1] = bad
        before = {k: v.copy() for k, v in grads.items()}
        total = clip_grad_norm(grads, 1.0)
        assert not np.isfinite(total)
        for k in grads:
            np.testing.assert_array_equal(grads[k], before[k])
        with pytest.raises(FloatingPointError, match="error_if_nonfinite"):
            clip_grad_norm(grads, 1.0, error_if_nonfinite=True)


def test_clip_grad_value_matches_torch(rng):
    ours, theirs = _grads_pair(rng)
    clip_grad_value(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for g, p in zip(ours.values(), theirs):
        _close(g, p.grad, tol=0)
    assert max(np.abs(g).max() for g in ours.values()) == 0.7


def test_clip_bad_arguments():
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm({"a": np.ones(3)}, 0)
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm({"a": np.ones(3)}, 1.0, norm_type=-2)
    with pytest.raises(TypeError, match="grads"):
        clip_grad_norm(np.ones(3), 1.0)
    with pytest.raises(TypeError, match="grads must hold floating-point"):
        clip_grad_norm({"a": np.ones(3, dtype=np.int64)}, 1.0)
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value({"a": np.ones(3)}, -1)


# ----------------------------------------------------------------------------- initialisers

@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_orthogonal_is_orthogonal_like_torch(shape):
    ours = orthogonal_(np.empty(shape), gain=1.5, rng=0)
    theirs = torch.nn.init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=1.5).numpy()
    rows, cols = shape
    for w in (ours, theirs):       # the same property holds for both constructions
        gram = w @ w.T if rows <= cols else w.T @ w
        np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(min(shape)), atol=1e-12)
    # Haar-distributed: over many draws the entries have mean 0 and variance gain^2 / max(rows, cols)
    draws = np.stack([orthogonal_(np.empty(shape), rng=seed) for seed in range(400)])
    assert abs(draws.mean()) < 0.02
    assert draws.var() == pytest.approx(1 / max(shape), rel=0.05)


def test_xavier_uniform_bounds_and_variance_like_torch():
    shape, gain = (300, 200), 2.0
    bound = gain * np.sqrt(6 / sum(shape))
    ours = xavier_uniform_(np.empty(shape, np.float32), gain=gain, rng=1)
    torch.manual_seed(1)
    theirs = torch.nn.init.xavier_uniform_(torch.empty(shape), gain=gain).numpy()
    for w in (ours, theirs):
        assert np.abs(w).max() <= bound * (1 + 1e-6) and np.abs(w).max() > 0.99 * bound
        assert w.var() == pytest.approx(gain ** 2 * 2 / sum(shape), rel=0.03)
    assert ours.dtype == np.float32


def test_uniform_is_seeded():
    a, b = uniform_(np.empty(50), 0.3, rng=5), uniform_(np.empty(50), 0.3, rng=5)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 0.3


def test_init_recurrent_blocks():
    H, I = 5, 3
    lstm = init_recurrent(fastrnn.LSTM(I, H, num_layers=2, bidirectional=True), forget_bias=1.0, rng=0)
    spec = fastrnn.cells.LSTM
    for name, w in lstm.params.items():
        if name.startswith("weight_hh"):
            for gate in range(4):
                block = w[gate * H:(gate + 1) * H]
                np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-5)
        elif name.startswith("weight_ih"):
            bound = np.sqrt(6 / (H + w.shape[1]))
            assert np.abs(w).max() <= bound * (1 + 1e-6)
        elif name.startswith("bias_ih"):
            expected = np.zeros(4 * H)
            expected[spec.F * H:(spec.F + 1) * H] = 1
            np.testing.assert_array_equal(w, expected)
        else:
            np.testing.assert_array_equal(w, 0)
    gru = init_recurrent(fastrnn.GRU(I, H), rng=0)
    assert all(np.all(gru.params[n] == 0) for n in ("bias_ih_l0", "bias_hh_l0"))
    rnn = init_recurrent(fastrnn.RNN(I, H), "pytorch", rng=0)
    assert all(np.abs(w).max() <= H ** -0.5 for w in rnn.params.values())
    assert all(np.any(w != 0) for w in rnn.params.values())
    with pytest.raises(ValueError, match="scheme"):
        init_recurrent(rnn, "he")
    with pytest.raises(TypeError, match="layer"):
        init_recurrent(Linear(2, 2))
    with pytest.raises(ValueError, match="w must be a 2-D"):
        orthogonal_(np.empty(3))
    with pytest.raises(TypeError, match="rng"):
        uniform_(np.empty(3), 1.0, rng="seed")


# ----------------------------------------------------------------------------- optimisers

def _optimiser_run(rng, ours_class, theirs_class, steps=6, **options):
    shapes = [(4, 3), (7,)]
    params = {f"p{k}": rng.standard_normal(s) for k, s in enumerate(shapes)}
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    theirs = [torch.nn.Parameter(torch.tensor(v)) for v in params.values()]
    ours_opt, theirs_opt = ours_class((params, grads), **options), theirs_class(theirs, **options)
    for _ in range(steps):
        for (name, g), p in zip(grads.items(), theirs):
            g[...] = rng.standard_normal(g.shape)
            p.grad = torch.tensor(g)
        ours_opt.step()
        theirs_opt.step()
        for v, p in zip(params.values(), theirs):
            _close(v, p, tol=1e-12)
    ours_opt.zero_grad()
    assert all(np.all(g == 0) for g in grads.values())


@pytest.mark.parametrize("options", [dict(lr=0.1), dict(lr=0.05, momentum=0.9),
                                     dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01),
                                     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)])
def test_sgd_matches_torch(rng, options):
    _optimiser_run(rng, SGD, torch.optim.SGD, **options)


@pytest.mark.parametrize("options", [dict(lr=1e-2), dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6),
                                     dict(lr=1e-2, weight_decay=0.1)])
def test_adam_matches_torch(rng, options):
    _optimiser_run(rng, Adam, torch.optim.Adam, **options)


def test_adamw_matches_torch(rng):
    _optimiser_run(rng, AdamW, torch.optim.AdamW, lr=1e-2, weight_decay=0.05)


def test_optimiser_follows_replaced_arrays_and_float32():
    layer = fastrnn.RNN(2, 3, seed=0)
    opt = SGD(layer, lr=0.5)
    layer.load_state_dict({k: np.ones_like(v) for k, v in layer.params.items()})   # new arrays
    for g in layer.grads.values():
        g[...] = 1
    opt.step()
    assert all(np.all(p == 0.5) and p.dtype == np.float32 for p in layer.params.values())


def test_optimiser_bad_arguments():
    pair = ({"w": np.ones(2)}, {"w": np.ones(2)})
    with pytest.raises(ValueError, match="lr"):
        SGD(pair, lr=0)
    with pytest.raises(ValueError, match="momentum"):
        SGD(pair, lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(pair, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        Adam(pair, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="betas"):
        Adam(pair, betas=0.9)
    with pytest.raises(TypeError, match="params"):
        Adam("weights")
    with pytest.raises(TypeError, match=r"params\[1\]"):
        Adam([pair, 3])
    with pytest.raises(ValueError, match="same names"):
        Adam(({"w": np.ones(2)}, {"v": np.ones(2)}))


# ----------------------------------------------------------------------------- losses

@pytest.mark.parametrize("case", ["plain", "weight", "ignore", "3d", "mask"])
def test_cross_entropy_matches_torch(rng, case):
    shape, C = ((5, 3) if case == "3d" else (11,)), 6
    logits = rng.standard_normal(shape + (C,)) * 3
    targets = rng.integers(0, C, shape)
    weight = rng.uniform(0.2, 2.0, C) if case == "weight" else None
    ignore = -100
    if case == "ignore":
        targets[[1, 4]] = ignore = 2 * C      # any integer outside [0, C) may be the ignored one
    mask = None
    if case == "mask":
        mask = rng.random(shape) < 0.7
    loss, grad = cross_entropy(logits, targets, weight=weight, ignore_index=ignore, mask=mask)
    z = torch.tensor(logits, requires_grad=True)
    t = torch.tensor(np.where(mask, targets, ignore) if mask is not None else targets)
    expected = F.cross_entropy(z.reshape(-1, C), t.reshape(-1), ignore_index=ignore,
                               weight=None if weight is None else torch.tensor(weight))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    _close(grad, z.grad)


def test_cross_entropy_stable_and_edge_cases():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], np.float32)
    loss, grad = cross_entropy(logits, np.array([1, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad)) and grad.dtype == np.float32
    assert loss == pytest.approx(500.0, rel=1e-6)
    loss, grad = cross_entropy(logits, np.array([-100, -100]))
    assert loss == 0.0 and np.all(grad == 0)
    with pytest.raises(ValueError, match="targets must lie"):
        cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(TypeError, match="targets must be integer"):
        cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="targets must have shape"):
        cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="logits"):
        cross_entropy([[1.0, 2.0]], np.array([0]))
    with pytest.raises(ValueError, match="weight"):
        cross_entropy(logits, np.array([0, 1]), weight=np.ones(2))
    with pytest.raises(ValueError, match="mask"):
        cross_entropy(logits, np.array([0, 1]), mask=np.ones(2))


def test_mse_matches_torch(rng):
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss, grad = mse(pred, target)
    p = torch.tensor(pred, requires_grad=True)
    expected = F.mse_loss(p, torch.tensor(target))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    _close(grad, p.grad)
    with pytest.raises(ValueError, match="target must have"):
        mse(pred, target[:2])
    with pytest.raises(TypeError, match="pred"):
        mse(np.ones(3, dtype=int), np.ones(3))


# ----------------------------------------------------------------------------- Linear, Embedding

def test_linear_and_embedding_backward_match_torch(rng):
    V, E, O = 7, 4, 3
    emb = Embedding(V, E, padding_idx=0, dtype=np.float64, seed=0)
    lin = Linear(E, O, dtype=np.float64, seed=1)
    t_emb, t_lin = torch.nn.Embedding(V, E, padding_idx=0).double(), torch.nn.Linear(E, O).double()
    t_emb.load_state_dict({k: torch.tensor(v) for k, v in emb.state_dict().items()})
    t_lin.load_state_dict({k: torch.tensor(v) for k, v in lin.state_dict().items()})
    indices = rng.integers(0, V, (5, 2))
    indices[0, 0] = indices[3, 1] = 0                   # padding rows get no gradient
    dy = rng.standard_normal((5, 2, O))
    out = lin(emb(indices))
    d_features = lin.backward(dy)
    emb.backward(d_features)
    t_out = t_lin(t_emb(torch.tensor(indices)))
    (t_out * torch.tensor(dy)).sum().backward()
    _close(out, t_out)
    _close(lin.grads["weight"], t_lin.weight.grad)
    _close(lin.grads["bias"], t_lin.bias.grad)
    _close(emb.grads["weight"], t_emb.weight.grad)
    assert np.all(emb.grads["weight"][0] == 0) and np.all(emb.params["weight"][0] == 0)


def test_linear_embedding_bad_input():
    lin, emb = Linear(3, 2), Embedding(5, 3)
    with pytest.raises(ValueError, match="x must have shape"):
        lin(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="x must have dtype"):
        lin(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="forward call first"):
        lin.backward(np.ones((2, 2), np.float32))
    lin(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="dy must have"):
        lin.backward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="indices must lie"):
        emb(np.array([0, 5]))
    with pytest.raises(TypeError, match="indices must be integers"):
        emb(np.array([0.0]))
    with pytest.raises(ValueError, match="in_features"):
        Linear(0, 2)
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(5, 3, padding_idx=5)
    with pytest.raises(TypeError, match="dtype"):
        Linear(2, 2, dtype=np.int32)
    with pytest.raises(ValueError, match="head.in_features"):
        RecurrentModel(fastrnn.LSTM(3, 4), Linear(5, 2))
    with pytest.raises(ValueError, match="readout"):
        RecurrentModel(fastrnn.LSTM(3, 4), Linear(4, 2), readout="last")
    with pytest.raises(ValueError, match="embedding.embedding_dim"):
        RecurrentModel(fastrnn.LSTM(3, 4), Linear(4, 2), Embedding(5, 2))


# ----------------------------------------------------------------------------- RecurrentModel, truncated BPTT

class TorchModel(torch.nn.Module):
    """The same Embedding -> LSTM/GRU -> Linear as RecurrentModel, built from its state_dict."""

    def __init__(self, model: RecurrentModel):
        super().__init__()
        rnn = model.rnn
        self.embedding = torch.nn.Embedding(model.embedding.num_embeddings, model.embedding.embedding_dim)
        self.rnn = getattr(torch.nn, rnn.cell.upper())(rnn.input_size, rnn.hidden_size, rnn.num_layers,
                                                        bidirectional=rnn.bidirectional)
        self.head = torch.nn.Linear(model.head.in_features, model.head.out_features)
        self.double()
        self.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})

    def grads(self):
        return {k: p.grad.numpy() for k, p in self.named_parameters()}


def _language_model(cell="lstm", layers=1, V=9, E=4, H=6):
    rnn = init_recurrent(getattr(fastrnn, cell.upper())(E, H, num_layers=layers, dtype=np.float64), rng=0)
    return RecurrentModel(rnn, Linear(H, V, dtype=np.float64, seed=1), Embedding(V, E, dtype=np.float64, seed=2))


def _model_grads(model):
    return {f"{part}.{name}": g for part in ("embedding", "rnn", "head")
            for name, g in getattr(model, part).grads.items()}


def test_stream_batches_and_chunks():
    streams = stream_batches(np.arange(23), 3)
    np.testing.assert_array_equal(streams[:, 1], np.arange(7, 14))
    assert streams.shape == (7, 3) and streams.flags.c_contiguous
    chunks = list(next_token_chunks(streams, 4))
    assert [len(x) for x, _ in chunks] == [4, 2]
    np.testing.assert_array_equal(np.concatenate([y for _, y in chunks]), streams[1:])
    np.testing.assert_array_equal(np.concatenate([x for x, _ in chunks]), streams[:-1])
    with pytest.raises(ValueError, match="steps"):
        list(bptt_chunks(streams, streams, 0))
    with pytest.raises(ValueError, match="same length"):
        list(bptt_chunks(streams, streams[1:], 2))
    with pytest.raises(ValueError, match="batch_size"):
        stream_batches(np.arange(5), 3)
    with pytest.raises(ValueError, match="tokens"):
        stream_batches(np.ones((4, 4), int), 2)
    with pytest.raises(ValueError, match="streams"):
        list(next_token_chunks(np.arange(5), 2))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chunked_forward_carries_the_state(rng, cell):
    model = _language_model(cell, layers=2)
    streams = stream_batches(rng.integers(0, 9, 3 * 14), 3)
    x, y = streams[:-1], streams[1:]
    whole = evaluate_chunked(model, cross_entropy, x, y, len(x))
    chunked = evaluate_chunked(model, cross_entropy, x, y, 4)
    assert chunked.chunks == 4 and whole.chunks == 1
    for a, b in zip(*(r.hx if cell == "lstm" else (r.hx,) for r in (whole, chunked))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-12)


def _torch_chunks(theirs, x, y, k, hx=None, step=None):
    """Torch's truncated BPTT: the state is carried, detached at every border; returns the final state."""
    for start in range(0, len(x), k):
        xc, yc = torch.tensor(x[start:start + k]), torch.tensor(y[start:start + k])
        out, hx = theirs.rnn(theirs.embedding(xc), hx)
        loss = F.cross_entropy(theirs.head(out).reshape(-1, theirs.head.out_features), yc.reshape(-1))
        loss.backward()
        if step is not None:
            step()
        hx = tuple(h.detach() for h in hx) if isinstance(hx, tuple) else hx.detach()
    return hx


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_truncated_bptt_gradients_match_torch_detach(rng, cell):
    model = _language_model(cell)
    theirs = TorchModel(model)
    streams = stream_batches(rng.integers(0, 9, 2 * 12), 2)
    x, y = streams[:-1], streams[1:]                   # 11 steps in chunks of 4, 4, 3
    run = train_chunked(model, cross_entropy, x, y, 4, progress=False)
    hx = _torch_chunks(theirs, x, y, 4)
    ours, expected = _model_grads(model), theirs.grads()
    assert set(ours) == set(expected)
    for name in ours:
        np.testing.assert_allclose(ours[name], expected[name], rtol=1e-9, atol=1e-12, err_msg=name)
    for a, b in zip(run.hx if cell == "lstm" else (run.hx,), hx if cell == "lstm" else (hx,)):
        _close(a, b)
    # the border matters: one pass over all 11 steps gives different gradients
    model.zero_grad()
    train_chunked(model, cross_entropy, x, y, len(x), progress=False)
    assert not np.allclose(_model_grads(model)["rnn.weight_hh_l0"], expected["rnn.weight_hh_l0"], rtol=1e-3)


def test_train_chunked_with_adam_and_clipping_matches_torch(rng):
    model = _language_model("lstm")
    theirs = TorchModel(model)
    streams = stream_batches(rng.integers(0, 9, 3 * 10), 3)
    x, y = streams[:-1], streams[1:]
    opt = Adam(model.modules, lr=0.05)
    t_opt = torch.optim.Adam(theirs.parameters(), lr=0.05)
    norms = []

    def step():
        norms.append(float(torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)))
        t_opt.step()
        t_opt.zero_grad()

    for epoch in range(2):
        run = train_chunked(model, cross_entropy, x, y, 3, optimizer=opt, clip_norm=0.5, progress=False)
        _torch_chunks(theirs, x, y, 3, step=step)
    assert run.skipped == 0 and max(norms) > 0.5          # clipping was active
    expected = dict(theirs.named_parameters())
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[name].detach().numpy(), rtol=1e-8, atol=1e-10, err_msg=name)
    assert all(np.all(g == 0) for g in _model_grads(model).values())
    copy = _language_model("lstm")
    copy.load_state_dict(model.state_dict())
    for name, value in copy.state_dict().items():
        np.testing.assert_array_equal(value, model.state_dict()[name])
    with pytest.raises(KeyError, match="must start with one of"):
        copy.load_state_dict({"decoder.weight": np.zeros(3)})
    with pytest.raises(ValueError, match="clip_norm needs an optimizer"):
        train_chunked(model, cross_entropy, x, y, 3, clip_norm=1.0)


@pytest.mark.parametrize("cell, bidirectional", [("lstm", False), ("lstm", True), ("gru", False)])
def test_final_readout_with_lengths_matches_torch(rng, cell, bidirectional):
    V, E, H, C, T, B = 8, 3, 5, 2, 6, 4
    rnn = getattr(fastrnn, cell.upper())(E, H, num_layers=2, bidirectional=bidirectional, dtype=np.float64,
                                         seed=0)
    D = 2 if bidirectional else 1
    model = RecurrentModel(rnn, Linear(D * H, C, dtype=np.float64, seed=1), Embedding(V, E, dtype=np.float64,
                                                                                       seed=2), readout="final")
    theirs = TorchModel(model)
    tokens, lengths, labels = rng.integers(0, V, (T, B)), np.array([6, 1, 3, 4]), rng.integers(0, C, B)
    logits, _ = model(tokens, lengths=lengths)
    loss, d_logits = cross_entropy(logits, labels)
    model.backward(d_logits)
    packed = torch.nn.utils.rnn.pack_padded_sequence(theirs.embedding(torch.tensor(tokens)),
                                                     torch.tensor(lengths), enforce_sorted=False)
    _, hx = theirs.rnn(packed)
    h_n = hx[0] if cell == "lstm" else hx
    t_logits = theirs.head(torch.cat(list(h_n[-D:]), dim=-1))
    expected = F.cross_entropy(t_logits, torch.tensor(labels))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    _close(logits, t_logits)
    ours, torch_grads = _model_grads(model), theirs.grads()
    for name in ours:
        np.testing.assert_allclose(ours[name], torch_grads[name], rtol=1e-9, atol=1e-12, err_msg=name)


# ----------------------------------------------------------------------------- progress, imports

class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_quiet_unless_terminal(rng):
    model = _language_model()
    streams = stream_batches(rng.integers(0, 9, 2 * 9), 2)
    for stream, quiet, shown in ((io.StringIO(), False, False), (_Terminal(), True, False),
                                 (_Terminal(), False, True)):
        bar = progress_bar(3, quiet=quiet, stream=stream)
        train_chunked(model, cross_entropy, streams[:-1], streams[1:], 3, progress=bar)
        assert ("3/3 train loss" in stream.getvalue()) == shown


def test_importing_train_imports_no_framework():
    code = ("import sys, fastrnn; assert 'fastrnn.train' not in sys.modules; import fastrnn.train; "
            "assert not {'torch', 'matplotlib', 'cupy'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
