"""The competitors of ``fastrnn bench``, all built from one problem's NumPy arrays.

A :class:`Problem` holds one single-layer, single-direction LSTM or GRU in float32 or float64 (an
LSTM with projections, torch's proj_size, when it has w_hr):
random inputs, states and PyTorch-initialised weights (PyTorch layout and gate order), plus the
output gradient ``dy`` that the forward+backward competitors back-propagate. :func:`build` turns a
problem into a zero-argument callable to time, and every callable returns ``(y, dw_hh)``
(``dw_hh`` None in mode "fwd"), so the correctness check runs exactly the code that is timed:

    torch          torch.nn.LSTM / GRU: on the CPU, or on the GPU (cuDNN, TF32 off); mode fwd under
                   no_grad, fwdbwd = forward then y.backward(dy), every gradient fastrnn computes.
                   It re-packs its weights on every call: part of its real cost, kept.
    onnxruntime    ONNX Runtime running the ONNX LSTM / GRU operator (CPU, forward only), weights
                   reordered to ONNX's gate order and stored as initializers (ORT's deployment case);
                   the operator has no projections
    reference      fastrnn's NumPy reference backend (CPU): the textbook oracle
    fastrnn[name]  fastrnn.lstm / gru on backend ``name`` (mode fwd), or *_forward + *_backward(dy);
                   on the GPU its arrays are CuPy arrays
    fastrnn[name+packed]  (fastrnn bench --packed-weights) mode fwd on a fastrnn.pack_weights snapshot:
                   weights packed once, as ORT's initializers are

On the GPU every callable ends with a device synchronise, so a timing covers the work it launched.
torch, onnxruntime and cupy are imported only when a builder needs them, so this module loads
without them and after the caller has set its thread variables.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from typing import Callable, Optional

import numpy as np

import fastrnn

GATES = {"lstm": 4, "gru": 3}
MODES = ("fwd", "fwdbwd")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")
ANCHORS = ("torch", "onnxruntime", "reference")
ALIASES = {"ort": "onnxruntime", "cudnn": "torch"}
REQUIRES = {"torch": ("torch",), "onnxruntime": ("onnx", "onnxruntime"), "reference": ()}
INSTALL = {"torch": "pip install torch", "onnxruntime": "pip install onnx onnxruntime"}
TOLERANCE = {"float32": 1e-3, "float64": 1e-8}   # relative error above which a result is flagged

# ONNX's k-th gate block is PyTorch's block ONNX_GATE_ORDER[k]: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h.
ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
ONNX_OPSET = 14
ONNX_IR_VERSION = 8     # the IR version of opset 14's onnx release (onnx 1.10), so older ORTs load it too

Runner = Callable[[], tuple]


def flops(cell: str, T: int, B: int, I: int, H: int, mode: str, P: Optional[int] = None) -> float:
    """Matmul FLOPs: forward 2*T*B*(I+H)*G*H (G = 4 LSTM, 3 GRU), with projections (h of size P)
    2*T*B*((I+P)*G*H + H*P); forward+backward 3x that."""
    if P is None:
        forward = 2.0 * T * B * (I + H) * GATES[cell] * H
    else:
        forward = 2.0 * T * B * ((I + P) * GATES[cell] * H + H * P)
    return forward if mode == "fwd" else 3.0 * forward


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem: x (T, B, I), dy (T, B, P); weights (G*H, I/P), biases (G*H,); h0 (B, P), c0 (B, H); w_hr
    (P, H) for an LSTM with projections, else None and P = H."""
    cell: str
    x: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    h0: np.ndarray
    c0: Optional[np.ndarray]      # None for GRU
    dy: np.ndarray
    w_hr: Optional[np.ndarray] = None

    T = property(lambda self: self.x.shape[0], doc="sequence length")
    B = property(lambda self: self.x.shape[1], doc="batch")
    I = property(lambda self: self.x.shape[2], doc="input size")  # noqa: E741 - the dimension's letter
    H = property(lambda self: self.w_ih.shape[0] // GATES[self.cell], doc="hidden size")
    P = property(lambda self: None if self.w_hr is None else self.w_hr.shape[0], doc="projection size, or None")
    dtype = property(lambda self: self.x.dtype.name, doc="'float32' or 'float64'")

    def flops(self, mode: str) -> float:
        return flops(self.cell, self.T, self.B, self.I, self.H, mode, self.P)

    def prefix(self, steps: int) -> "Problem":
        """The same problem over its first ``steps`` time steps."""
        return dataclasses.replace(self, x=self.x[:steps], dy=self.dy[:steps])

    def fastrnn_args(self) -> tuple:
        states = (self.h0,) if self.c0 is None else (self.h0, self.c0)
        return (self.x, self.w_ih, self.w_hh, self.b_ih, self.b_hh, *states)

    def fastrnn_kwargs(self) -> dict:
        return {} if self.w_hr is None else {"w_hr": self.w_hr}


def make_problem(cell: str, T: int, B: int, H: int, I: Optional[int] = None, dtype: str = "float32",
                 seed: int = 0, proj_size: int = 0) -> Problem:
    """Random problem; weights and biases uniform in +-1/sqrt(H) as torch.nn initialises them.
    ``proj_size`` P > 0: an LSTM with projections (0 < P < H, as torch requires)."""
    if cell not in GATES:
        raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}")
    if proj_size and (cell != "lstm" or not 0 < proj_size < H):
        raise ValueError(f"proj_size must be 0 or, for an LSTM, in 1..H-1 = {H - 1}; got {proj_size} ({cell})")
    I = H if I is None else I
    P = proj_size or H
    G, k, dt = GATES[cell], H ** -0.5, np.dtype(dtype)
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal(shape, dtype=dt)

    def uniform(*shape):
        return rng.uniform(-k, k, shape).astype(dt)

    return Problem(cell=cell, x=normal(T, B, I), w_ih=uniform(G * H, I), w_hh=uniform(G * H, P),
                   b_ih=uniform(G * H), b_hh=uniform(G * H), h0=0.5 * normal(B, P),
                   c0=0.5 * normal(B, H) if cell == "lstm" else None, dy=normal(T, B, P),
                   w_hr=uniform(P, H) if proj_size else None)


# ----------------------------------------------------------------------------- availability

def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


PACKED = "+packed"      # the suffix of a competitor that runs on a pack_weights snapshot (mode fwd)


def fastrnn_name(backend: str, packed: bool = False) -> str:
    return f"fastrnn[{backend}{PACKED if packed else ''}]"


def fastrnn_label(name: str) -> str:
    """"cpp" or "cpp+packed" from fastrnn[cpp], fastrnn[cpp+packed]: the competitor's key in a record's ratios."""
    return name[len("fastrnn["):-1]


def fastrnn_backend(name: str) -> tuple[str, bool]:
    """(backend, packed) of a competitor named by fastrnn_name."""
    label = fastrnn_label(name)
    return (label[:-len(PACKED)], True) if label.endswith(PACKED) else (label, False)


def applies(anchor: str, mode: str, device: str, projections: bool = False) -> bool:
    """Whether ``anchor`` has a competitor for this mode and device at all (ORT has no backward
    and no projections; ORT and the reference run on the CPU only)."""
    if anchor == "onnxruntime":
        return mode == "fwd" and device == "cpu" and not projections
    return anchor != "reference" or device == "cpu"


def anchor_missing(anchor: str, device: str) -> Optional[str]:
    """Why ``anchor`` cannot run here (not installed, no GPU for it), or None when it can."""
    missing = [m for m in REQUIRES[anchor] if not installed(m)]
    if missing:
        return f"{' and '.join(missing)} not installed ({INSTALL[anchor]})"
    if anchor == "torch" and device == "cuda":
        import torch
        if not torch.cuda.is_available():
            return "torch sees no CUDA GPU (a CPU-only build, or no driver)"
    return None


def backend_names() -> dict[str, bool]:
    """fastrnn's backends: name -> whether it runs on a GPU (Backend.runs_on_gpu)."""
    from fastrnn import backends
    return {name: entry.runs_on_gpu for name, entry in backends.registered_backends().items()}


def backend_missing(backend: str) -> Optional[str]:
    """Why fastrnn's backend cannot run here, or None (see fastrnn.backends)."""
    from fastrnn import backends
    entry = backends.registered_backends().get(backend)
    return f"unknown backend {backend!r}" if entry is None else entry.unavailable_reason()


def gpu_missing() -> Optional[str]:
    """Why there is no real GPU for ``--device cuda`` (the CUDA simulator does not count), or None."""
    import os
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "NUMBA_ENABLE_CUDASIM=1: the Numba CUDA simulator is on, not a GPU"
    if (reason := backend_missing("cuda")) is not None:
        return reason.split("; set NUMBA_ENABLE_CUDASIM")[0]      # the simulator does not count here
    return None if installed("cupy") else "cupy not installed (pip install fastrnn[cuda])"


def prepare(device: str, threads: int, anchors) -> None:
    """Once per run, before any competitor: torch's threads (and on the GPU: TF32 off on both sides)."""
    if "torch" in anchors and installed("torch"):
        import torch
        torch.set_num_threads(threads)
        if device == "cuda":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False


def release(device: str) -> None:
    """Return the GPU memory pools' free blocks after a config (nothing on the CPU)."""
    if device == "cuda":
        import sys
        if "cupy" in sys.modules:
            sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
        if "torch" in sys.modules:
            sys.modules["torch"].cuda.empty_cache()


# ----------------------------------------------------------------------------- PyTorch

def _torch_module(p: Problem, device: str):
    import torch

    options = {} if p.P is None else {"proj_size": p.P}
    module = (torch.nn.LSTM if p.cell == "lstm" else torch.nn.GRU)(p.I, p.H, dtype=getattr(torch, p.dtype), **options)
    weights = [("weight_ih_l0", p.w_ih), ("weight_hh_l0", p.w_hh), ("bias_ih_l0", p.b_ih), ("bias_hh_l0", p.b_hh)]
    with torch.no_grad():
        for name, value in weights + ([("weight_hr_l0", p.w_hr)] if p.w_hr is not None else []):
            getattr(module, name).copy_(torch.from_numpy(value))
    return module.to(device)


def _torch_tensor(arr: np.ndarray, device: str, requires_grad: bool = False):
    import torch
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device).requires_grad_(requires_grad)


def _torch_states(p: Problem, device: str, requires_grad: bool):
    """torch.nn's initial state argument, (1, B, P) and (1, B, H) tensors: (h0, c0) for LSTM, h0 for GRU."""
    def state(arr):
        return _torch_tensor(arr[None], device, requires_grad)
    return state(p.h0) if p.c0 is None else (state(p.h0), state(p.c0))


def torch_forward(p: Problem, device: str = "cpu") -> Runner:
    """torch.nn.LSTM/GRU inference under no_grad."""
    import torch

    module, x, states = _torch_module(p, device), _torch_tensor(p.x, device), _torch_states(p, device, False)

    def run():
        with torch.no_grad():
            y, _ = module(x, states)
        return y, None
    return run


def torch_fwdbwd(p: Problem, device: str = "cpu") -> Runner:
    """torch.nn.LSTM/GRU forward then y.backward(dy), computing every gradient fastrnn does."""
    module = _torch_module(p, device)
    x = _torch_tensor(p.x, device, requires_grad=True)
    states = _torch_states(p, device, True)
    dy = _torch_tensor(p.dy, device)
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
    from onnx import helper, numpy_helper

    elem = helper.np_dtype_to_tensor_dtype(p.x.dtype)
    weights = {
        "W": _to_onnx_gates(p, p.w_ih)[None],                                     # (1, G*H, I)
        "R": _to_onnx_gates(p, p.w_hh)[None],                                     # (1, G*H, H)
        "B": np.concatenate([_to_onnx_gates(p, p.b_ih), _to_onnx_gates(p, p.b_hh)])[None],  # (1, 2*G*H)
    }
    states = ["initial_h"] if p.c0 is None else ["initial_h", "initial_c"]
    inputs = [helper.make_tensor_value_info("X", elem, [p.T, p.B, p.I])]
    inputs += [helper.make_tensor_value_info(s, elem, [1, p.B, p.H]) for s in states]
    attrs = {"hidden_size": p.H}
    if p.cell == "gru":
        attrs["linear_before_reset"] = 1          # PyTorch's GRU form (ONNX defaults to Cho et al.'s)
    node = helper.make_node(p.cell.upper(), ["X", "W", "R", "B", "", *states], ["Y"], **attrs)
    graph = helper.make_graph(
        [node], f"{p.cell}_forward", inputs,
        [helper.make_tensor_value_info("Y", elem, [p.T, 1, p.B, p.H])],
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

def fastrnn_forward(p: Problem, backend: str, device: str = "cpu", packed: bool = False) -> Runner:
    """fastrnn.lstm / fastrnn.gru (inference) on ``backend``; ``packed``: on a fastrnn.pack_weights
    snapshot taken here (the first call packs it, the timed ones read it: weights packed once, as
    ONNX Runtime's session holds them), else on the plain arrays (packed by every call)."""
    fn, args = getattr(fastrnn, p.cell), _on_device(p.fastrnn_args(), device)
    kwargs = dict(zip(p.fastrnn_kwargs(), _on_device(p.fastrnn_kwargs().values(), device)))
    if packed:
        x, w_ih, w_hh, b_ih, b_hh, *states = args
        args = (x, fastrnn.pack_weights(p.cell, w_ih, w_hh, b_ih, b_hh, **kwargs), None, None, None, *states)
        kwargs = {}

    def run():
        return fn(*args, **kwargs, backend=backend)[0], None
    return run


def fastrnn_fwdbwd(p: Problem, backend: str, device: str = "cpu") -> Runner:
    """fastrnn.*_forward then *_backward(tape, dy) on ``backend``."""
    forward, backward = getattr(fastrnn, f"{p.cell}_forward"), getattr(fastrnn, f"{p.cell}_backward")
    *args, dy = _on_device((*p.fastrnn_args(), p.dy), device)
    kwargs = dict(zip(p.fastrnn_kwargs(), _on_device(p.fastrnn_kwargs().values(), device)))

    def run():
        out = forward(*args, **kwargs, backend=backend)
        return out[0], backward(out[-1], dy).w_hh
    return run


def _on_device(arrays, device: str) -> tuple:
    if device == "cpu":
        return tuple(arrays)
    import cupy
    return tuple(cupy.asarray(a) for a in arrays)


# ----------------------------------------------------------------------------- one entry point

def build(name: str, p: Problem, mode: str, device: str, threads: int) -> Runner:
    """The callable to time for competitor ``name`` (an anchor, fastrnn[backend] or, mode fwd,
    fastrnn[backend+packed]: on a pack_weights snapshot, see fastrnn_forward)."""
    if name == "torch":
        run = (torch_forward if mode == "fwd" else torch_fwdbwd)(p, device)
    elif name == "onnxruntime":
        run = ort_forward(p, threads)
    else:
        (backend, packed), on = ((("reference", False), "cpu") if name == "reference"
                                 else (fastrnn_backend(name), device))
        run = fastrnn_forward(p, backend, on, packed) if mode == "fwd" else fastrnn_fwdbwd(p, backend, on)
    return run if device == "cpu" else _synchronised(run)


def _synchronised(run: Runner) -> Runner:
    """``run`` followed by a device-wide synchronise (CuPy's, else torch's)."""
    if installed("cupy"):
        import cupy
        sync = cupy.cuda.runtime.deviceSynchronize
    else:
        import torch
        sync = torch.cuda.synchronize

    def synced():
        out = run()
        sync()
        return out
    return synced


# ----------------------------------------------------------------------------- correctness

def to_numpy(value) -> np.ndarray:
    """A host NumPy array from a NumPy, CuPy or torch (CPU or CUDA) array."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if hasattr(value, "__cuda_array_interface__") and hasattr(value, "get"):
        return value.get()
    return np.asarray(value)


def rel_err(a, b) -> float:
    """max|a - b| / max|b|, in float64."""
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / (scale if scale > 0 else 1.0))


def errors(out, ref) -> dict[str, float]:
    """Relative errors of one competitor's ``(y, dw_hh)`` against the oracle's: {"y": .., "w_hh": ..}
    (w_hh, the recurrent weight gradient, in mode fwdbwd only)."""
    ref_y = to_numpy(ref[0])
    errs = {"y": rel_err(to_numpy(out[0]).reshape(ref_y.shape), ref_y)}
    if ref[1] is not None:
        errs["w_hh"] = rel_err(out[1], ref[1])
    return errs
