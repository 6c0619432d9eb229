"""The reference against PyTorch's nn.LSTM/GRU/RNN in float64: outputs, final states, every gradient."""
import numpy as np
import pytest

from rnncases import assert_same_fields, make_problem, run

torch = pytest.importorskip("torch")

# PyTorch has no GRU of Cho et al.'s form (linear_before_reset=False): finite differences cover it
TORCH_FORMS = [("lstm", None), ("gru", True), ("rnn", "tanh"), ("rnn", "relu")]
CONFIGS = {
    "plain": dict(),
    "no-bias": dict(bias=False),
    "zero-state": dict(init_state=False),
    "lengths": dict(lengths=True),
    "batch-first+lengths": dict(batch_first=True, lengths=True),
    "batch-first": dict(batch_first=True),
    "unbatched": dict(unbatched=True),
}
SHAPES = [(1, 1, 1, 1), (7, 4, 5, 3), (3, 1, 2, 33), (9, 5, 6, 6)]


def run_torch(problem):
    """The same problem through torch.nn (PackedSequence for lengths); returns fastrnn's field names."""
    cell, args, opts = problem.cell, problem.args, problem.options
    x = torch.tensor(args["x"], requires_grad=True)
    unbatched = x.dim() == 2
    I, H = args["w_ih"].shape[1], args["w_hh"].shape[1]
    bias, batch_first = args["b_ih"] is not None, opts["batch_first"]
    if cell == "lstm":
        module = torch.nn.LSTM(I, H, bias=bias, batch_first=batch_first, dtype=torch.float64)
    elif cell == "gru":
        module = torch.nn.GRU(I, H, bias=bias, batch_first=batch_first, dtype=torch.float64)
    else:
        module = torch.nn.RNN(I, H, bias=bias, batch_first=batch_first, nonlinearity=problem.variant,
                              dtype=torch.float64)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.tensor(args["w_ih"]))
        module.weight_hh_l0.copy_(torch.tensor(args["w_hh"]))
        if bias:
            module.bias_ih_l0.copy_(torch.tensor(args["b_ih"]))
            module.bias_hh_l0.copy_(torch.tensor(args["b_hh"]))
    state_shape = problem.upstream["dh_n"].shape
    leaves = {"dx": x}
    states = []
    for name in (("h0", "c0") if cell == "lstm" else ("h0",)):
        value = args[name] if args[name] is not None else np.zeros(state_shape)
        leaf = torch.tensor(value, requires_grad=True)
        leaves["d" + name] = leaf
        states.append(leaf.unsqueeze(0))   # (1, B, H) or (1, H): one layer
    hx = tuple(states) if cell == "lstm" else states[0]

    lengths = opts.get("lengths")
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                                         enforce_sorted=False)
        out, hn = module(packed, hx)
        T = args["x"].shape[1 if batch_first else 0]
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    else:
        y, hn = module(x, hx)
    finals = hn if cell == "lstm" else (hn,)
    outputs = {"y": y, "h_n": finals[0][0]}
    if cell == "lstm":
        outputs["c_n"] = finals[1][0]
    L = (y * torch.tensor(problem.upstream["dy"])).sum() + (outputs["h_n"] * torch.tensor(problem.upstream["dh_n"])).sum()
    if cell == "lstm":
        L = L + (outputs["c_n"] * torch.tensor(problem.upstream["dc_n"])).sum()
    L.backward()
    result = {k: v.detach().numpy() for k, v in outputs.items()}
    result.update({k: v.grad.numpy() for k, v in leaves.items()})
    result["dw_ih"] = module.weight_ih_l0.grad.numpy()
    result["dw_hh"] = module.weight_hh_l0.grad.numpy()
    result["db_ih"] = module.bias_ih_l0.grad.numpy() if bias else None
    result["db_hh"] = module.bias_hh_l0.grad.numpy() if bias else None
    assert not unbatched or result["y"].ndim == 2
    return result


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize("cell,variant", TORCH_FORMS, ids=["lstm", "gru", "rnn-tanh", "rnn-relu"])
def test_reference_matches_torch(rng, cell, variant, config, shape):
    problem = make_problem(rng, cell, variant, *shape, **CONFIGS[config])
    ours = run(problem, "reference")
    theirs = run_torch(problem)
    assert_same_fields(ours, theirs, 1e-10, f"{cell}/{config}: ")
