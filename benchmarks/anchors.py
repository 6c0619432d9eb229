"""Competitors for the CPU benchmarks, all built from one problem's NumPy arrays.

A :class:`Problem` holds one single-layer, single-direction LSTM or GRU in float32:
random inputs, states and PyTorch-initialised weights (PyTorch layout and gate order),
plus the output gradient ``dy`` that the forward+backward competitors back-propagate.
Every builder below turns a problem into a zero-argument callable to time, and every
callable returns ``(y, dw_hh)`` (``dw_hh`` None for a forward-only competitor), so the
correctness check runs exactly the code that is timed:

    torch_forward / torch_fwdbwd    torch.nn.LSTM / GRU (it re-packs its weights on every
                                    call: that is part of its real cost and is kept)
    ort_forward                     ONNX Runtime running the ONNX LSTM / GRU operator, the
                                    weights reordered to ONNX's gate order and stored as
                                    initializers (ORT's deployment case; it may pre-pack them)
    fastrnn_forward / fastrnn_fwdbwd   fastrnn.lstm / gru, and *_forward + *_backward(dy)

torch and onnxruntime are imported only when a builder needs them, so this module loads
without them (see HAVE_TORCH, HAVE_ORT) and after the caller has set its thread variables.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from typing import Callable, Optional

import numpy as np

import fastrnn

GATES = {"lstm": 4, "gru": 3}
MODES = ("fwd", "fwdbwd")
ANCHORS = {"fwd": ("torch", "ort"), "fwdbwd": ("torch",)}   # ORT has no backward
TOLERANCE = 1e-3        # relative error above which a result is flagged as wrong

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))

# ONNX's k-th gate block is PyTorch's block ONNX_GATE_ORDER[k]: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h.
ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
ONNX_OPSET = 14
ONNX_IR_VERSION = 8     # the IR version of opset 14's onnx release (onnx 1.10), so older ORTs load it too

Runner = Callable[[], tuple]


def flops(cell: str, T: int, B: int, I: int, H: int, mode: str) -> float:
    """Matmul FLOPs: forward 2*T*B*(I+H)*G*H (G = 4 LSTM, 3 GRU); forward+backward 3x that."""
    forward = 2.0 * T * B * (I + H) * GATES[cell] * H
    return forward if mode == "fwd" else 3.0 * forward


@dataclasses.dataclass(frozen=True)
class Problem:
    """One float32 problem: x, dy (T, B, I/H); weights (G*H, I/H), biases (G*H,); h0, c0 (B, H)."""
    cell: str
    x: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    h0: np.ndarray
    c0: Optional[np.ndarray]      # None for GRU
    dy: np.ndarray

    @property
    def T(self) -> int:
        return self.x.shape[0]

    @property
    def B(self) -> int:
        return self.x.shape[1]

    @property
    def I(self) -> int:  # noqa: E743 - the dimension letter is the clearest name
        return self.x.shape[2]

    @property
    def H(self) -> int:
        return self.w_hh.shape[1]

    def flops(self, mode: str) -> float:
        return flops(self.cell, self.T, self.B, self.I, self.H, mode)

    def prefix(self, steps: int) -> "Problem":
        """The same problem over its first ``steps`` time steps."""
        return dataclasses.replace(self, x=self.x[:steps], dy=self.dy[:steps])

    def fastrnn_args(self) -> tuple:
        states = (self.h0,) if self.c0 is None else (self.h0, self.c0)
        return (self.x, self.w_ih, self.w_hh, self.b_ih, self.b_hh, *states)


def make_problem(cell: str, T: int, B: int, H: int, I: Optional[int] = None, seed: int = 0) -> Problem:
    """Random float32 problem; weights and biases uniform in +-1/sqrt(H) as torch.nn initialises them."""
    if cell not in GATES:
        raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}")
    I = H if I is None else I
    G, k = GATES[cell], H ** -0.5
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    def uniform(*shape):
        return rng.uniform(-k, k, shape).astype(np.float32)

    return Problem(cell=cell, x=normal(T, B, I), w_ih=uniform(G * H, I), w_hh=uniform(G * H, H),
                   b_ih=uniform(G * H), b_hh=uniform(G * H), h0=0.5 * normal(B, H),
                   c0=0.5 * normal(B, H) if cell == "lstm" else None, dy=normal(T, B, H))


# ----------------------------------------------------------------------------- PyTorch

def _torch_module(p: Problem):
    import torch

    module = (torch.nn.LSTM if p.cell == "lstm" else torch.nn.GRU)(p.I, p.H, dtype=torch.float32)
    with torch.no_grad():
        for name, value in (("weight_ih_l0", p.w_ih), ("weight_hh_l0", p.w_hh),
                            ("bias_ih_l0", p.b_ih), ("bias_hh_l0", p.b_hh)):
            getattr(module, name).copy_(torch.from_numpy(value))
    return module


def _torch_states(p: Problem, requires_grad: bool):
    """torch.nn's initial state argument, (1, B, H) tensors: (h0, c0) for LSTM, h0 for GRU."""
    import torch

    def state(arr):
        return torch.from_numpy(arr[None].copy()).requires_grad_(requires_grad)

    return state(p.h0) if p.c0 is None else (state(p.h0), state(p.c0))


def torch_forward(p: Problem) -> Runner:
    """torch.nn.LSTM/GRU inference under no_grad."""
    import torch

    module, x, states = _torch_module(p), torch.from_numpy(p.x), _torch_states(p, False)

    def run():
        with torch.no_grad():
            y, _ = module(x, states)
        return y, None
    return run


def torch_fwdbwd(p: Problem) -> Runner:
    """torch.nn.LSTM/GRU forward then y.backward(dy), computing every gradient fastrnn does."""
    import torch

    module = _torch_module(p)
    x = torch.from_numpy(p.x.copy()).requires_grad_()
    states = _torch_states(p, True)
    dy = torch.from_numpy(p.dy)
    leaves = [x, *(states if isinstance(states, tuple) else (states,)), *module.parameters()]

    def run():
        for leaf in leaves:       # fresh gradients each call, as fastrnn returns
            leaf.grad = None
        y, _ = module(x, states)
        y.backward(dy)
        return y, module.weight_hh_l0.grad
    return run


# ----------------------------------------------------------------------------- ONNX Runtime

def _to_onnx_gates(p: Problem, arr: np.ndarray) -> np.ndarray:
    """Reorder the gate blocks (along axis 0) from PyTorch's order to ONNX's."""
    blocks = np.split(arr, GATES[p.cell])
    return np.concatenate([blocks[k] for k in ONNX_GATE_ORDER[p.cell]])


def _onnx_model(p: Problem):
    """A one-node ONNX model: Y = LSTM/GRU(X, initial_h[, initial_c]) with the weights as initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = {
        "W": _to_onnx_gates(p, p.w_ih)[None],                                     # (1, G*H, I)
        "R": _to_onnx_gates(p, p.w_hh)[None],                                     # (1, G*H, H)
        "B": np.concatenate([_to_onnx_gates(p, p.b_ih), _to_onnx_gates(p, p.b_hh)])[None],  # (1, 2*G*H)
    }
    states = ["initial_h"] if p.c0 is None else ["initial_h", "initial_c"]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [p.T, p.B, p.I])]
    inputs += [helper.make_tensor_value_info(s, TensorProto.FLOAT, [1, p.B, p.H]) for s in states]
    attrs = {"hidden_size": p.H}
    if p.cell == "gru":
        attrs["linear_before_reset"] = 1          # PyTorch's GRU form (ONNX defaults to Cho et al.'s)
    node = helper.make_node(p.cell.upper(), ["X", "W", "R", "B", "", *states], ["Y"], **attrs)
    graph = helper.make_graph(
        [node], f"{p.cell}_forward", inputs,
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [p.T, 1, p.B, p.H])],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION)
    onnx.checker.check_model(model)
    return model


def ort_forward(p: Problem, threads: int) -> Runner:
    """An ONNX Runtime session of the ONNX LSTM/GRU operator, intra-op threads = ``threads``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(_onnx_model(p).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {"X": p.x, "initial_h": p.h0[None]}
    if p.c0 is not None:
        feeds["initial_c"] = p.c0[None]

    def run():
        return session.run(None, feeds)[0], None     # Y is (T, 1, B, H)
    return run


# ----------------------------------------------------------------------------- fastrnn

def fastrnn_forward(p: Problem, backend: str) -> Runner:
    """fastrnn.lstm / fastrnn.gru (inference) on ``backend``."""
    fn, args = getattr(fastrnn, p.cell), p.fastrnn_args()

    def run():
        return fn(*args, backend=backend)[0], None
    return run


def fastrnn_fwdbwd(p: Problem, backend: str) -> Runner:
    """fastrnn.*_forward then *_backward(tape, dy) on ``backend``."""
    forward, backward = getattr(fastrnn, f"{p.cell}_forward"), getattr(fastrnn, f"{p.cell}_backward")
    args = p.fastrnn_args()

    def run():
        out = forward(*args, backend=backend)
        return out[0], backward(out[-1], p.dy).w_hh
    return run


# ----------------------------------------------------------------------------- all of them

def fastrnn_name(backend: str) -> str:
    return f"fastrnn[{backend}]"


def competitors(p: Problem, mode: str, backends, threads: int) -> dict[str, Runner]:
    """Name -> callable: the installed anchors of ``mode`` (torch first), then fastrnn per backend."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    runners = {}
    if HAVE_TORCH:
        runners["torch"] = torch_forward(p) if mode == "fwd" else torch_fwdbwd(p)
    if mode == "fwd" and HAVE_ORT:
        runners["ort"] = ort_forward(p, threads)
    build = fastrnn_forward if mode == "fwd" else fastrnn_fwdbwd
    for backend in backends:
        runners[fastrnn_name(backend)] = build(p, backend)
    return runners


# ----------------------------------------------------------------------------- correctness

def _numpy(value) -> np.ndarray:
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


def rel_err(a, b) -> float:
    """max|a - b| / max|b|, in float64."""
    a, b = _numpy(a).astype(np.float64), _numpy(b).astype(np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / (scale if scale > 0 else 1.0))


def check(runners: dict[str, Runner]) -> dict[str, dict[str, float]]:
    """Relative errors of every competitor against the "torch" entry (which must be there).

    Returns ``{name: {"y": err}}``, plus ``"w_hh": err`` (the recurrent weight gradient against
    torch's weight_hh_l0.grad) for the forward+backward competitors.
    """
    ref_y, ref_dw_hh = runners["torch"]()
    ref_y = _numpy(ref_y)
    errors = {}
    for name, run in runners.items():
        if name == "torch":
            continue
        y, dw_hh = run()
        errors[name] = {"y": rel_err(_numpy(y).reshape(ref_y.shape), ref_y)}
        if ref_dw_hh is not None:
            errors[name]["w_hh"] = rel_err(dw_hh, ref_dw_hh)
    return errors
