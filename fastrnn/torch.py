"""PyTorch modules on fastrnn's kernels: drop-in torch.nn.LSTM / GRU / RNN, and ``convert`` for whole models.

    import fastrnn.torch
    lstm = fastrnn.torch.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)   # torch.nn's arguments
    y, (h_n, c_n) = lstm(x)                  # x (B, T, I) -> y (B, T, 2H); h_n, c_n (4, B, H); or PackedSequence
    y.sum().backward()                       # gradients through fastrnn's backward kernels
    model = fastrnn.torch.convert(model)     # every nn.LSTM / GRU / RNN inside runs on fastrnn (in place)
    fastrnn.torch.pack(model.eval())         # inference: weights packed once, not on every call (or lstm.pack())

The classes subclass torch.nn.RNNBase, the base of torch.nn.LSTM / GRU / RNN (not those classes
themselves, which torch.compile refuses to trace), so constructor arguments, parameter names
(``weight_ih_l0``, ..., ``_reverse``), initialisation, state_dict, ``forward(input, hx=None)`` and its
results are torch's; only the computation differs. Each layer and direction is one call of a
``torch.library`` custom op (``fastrnn::layer_forward``) whose backward is a second op
(``fastrnn::layer_backward``) fed with the forward's tape, which the first op returns as tensors
(fastrnn._flat: the kernels' saved gates and states, never recomputed). Custom ops with fake
(meta) implementations keep ``torch.compile(fullgraph=True)`` and ``torch.library.opcheck`` working.
Layers, directions, dropout and PackedSequence are composed here in torch, so autograd flows
through them: the reverse direction runs on each sequence reversed within its length (a gather),
dropout is ``torch.nn.functional.dropout`` on every layer's output but the last (training mode),
a PackedSequence is padded (original batch order, with lengths), run, and packed again with the
input's sorted_indices / unsorted_indices. Under ``torch.no_grad()`` (or with no input needing a
gradient) the op runs the inference kernels and keeps nothing.

Arrays: CPU tensors reach the kernels as NumPy views (``tensor.numpy()``) and results come back
with ``torch.from_numpy``, no copies; CUDA tensors go to the "cuda" backend as CuPy views through
``__cuda_array_interface__`` and come back with ``torch.as_tensor`` (written for, not yet run on, a GPU).
``backend`` (a keyword, default "auto") picks fastrnn's backend as in the functional API, LSTMs with
``proj_size`` included (every backend has projections).
``pack()`` (eval mode, CPU parameters) snapshots every layer and direction with fastrnn.pack_weights:
calls that need no gradient then run on the snapshots through the functional API, NumPy views in and
out (not through the op), and re-pack when torch's version counters or storage show a parameter
changed (see ``_FastRecurrent.pack``).
"""
from __future__ import annotations

from typing import Optional

try:
    import torch
except ImportError as exc:      # fastrnn itself never needs torch: name the extra that brings it
    raise ImportError("fastrnn.torch needs PyTorch, which is not installed; install it with: "
                      "pip install fastrnn[torch]") from exc
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _flat
from ._packed import pack_weights

# ----------------------------------------------------------------------------- the ops: one layer, one direction

_NOTHING = 0        # size of the empty tensor that stands for an absent result (c_n of a GRU, db without bias)


def _sizes(x, w_hh, w_hr):
    T, B = x.shape[0], x.shape[1]
    P = w_hh.shape[1]
    return T, B, (P if w_hr is None else w_hr.shape[1]), P


def _backend_name(form, backend, x, w_hh, w_hr):
    """The backend the op runs on: resolved the same way by the forward, its backward and the fake kernel."""
    T, B, H, _ = _sizes(x, w_hh, w_hr)
    return _flat.resolve_backend(form, backend, T, B, H, gpu=x.device.type == "cuda",
                                 projections=w_hr is not None, training=True)


@torch.library.custom_op("fastrnn::layer_forward", mutates_args=())
def layer_forward(form: str, backend: str, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                  b_hh: Optional[Tensor], h0: Tensor, c0: Optional[Tensor], w_hr: Optional[Tensor],
                  lengths: Optional[Tensor], save: bool) -> list[Tensor]:
    """[y (T, B, P), h_n (B, P), c_n (B, H) or empty, *tape]: one layer and direction of ``form``
    (fastrnn._flat.FORMS), time-major; the tape (``save``) is what layer_backward needs."""
    name = _backend_name(form, backend, x, w_hh, w_hr) if save else backend
    y, h_n, c_n, saved = _flat.forward(form, name, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, save)
    return [y, h_n, c_n if c_n is not None else x.new_empty(_NOTHING), *saved]


@layer_forward.register_fake
def _layer_forward_fake(form, backend, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, save):
    T, B, H, P = _sizes(x, w_hh, w_hr)
    name = _backend_name(form, backend, x, w_hh, w_hr)
    tape = _flat.saved_shapes(name, form, T, B, H, P if w_hr is not None else None) if save else []
    c_n = x.new_empty((B, H)) if c0 is not None else x.new_empty(_NOTHING)
    return [x.new_empty((T, B, P)), x.new_empty((B, P)), c_n, *(x.new_empty(shape) for shape in tape)]


@torch.library.custom_op("fastrnn::layer_backward", mutates_args=())
def layer_backward(form: str, backend: str, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                   b_hh: Optional[Tensor], h0: Tensor, c0: Optional[Tensor], w_hr: Optional[Tensor],
                   lengths: Optional[Tensor], saved: list[Tensor], dy: Optional[Tensor], dh_n: Optional[Tensor],
                   dc_n: Optional[Tensor]) -> list[Tensor]:
    """[dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr] (empty where the forward had no such input)."""
    name = _backend_name(form, backend, x, w_hh, w_hr)
    grads = _flat.backward(form, name, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, saved, dy, dh_n, dc_n)
    return [g if g is not None else x.new_empty(_NOTHING) for g in grads]


@layer_backward.register_fake
def _layer_backward_fake(form, backend, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, saved, dy, dh_n, dc_n):
    return [torch.empty_like(a) if a is not None else x.new_empty(_NOTHING)
            for a in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)]


def _setup_context(ctx, inputs, output):
    form, backend, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, save = inputs
    ctx.form, ctx.backend, ctx.saved_tape = form, backend, save
    ctx.save_for_backward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, *output[3:])
    # the tape is not differentiable, and unused outputs (often h_n, c_n) reach backward as None, not as
    # zero tensors: the kernels take None as zero without reading (or allocating) anything
    ctx.mark_non_differentiable(*output[3:])
    ctx.set_materialize_grads(False)


def _layer_grads(ctx, grads):
    if not ctx.saved_tape:
        raise RuntimeError("fastrnn::layer_forward ran with save=False (no tape); it cannot be differentiated")
    x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, *saved = ctx.saved_tensors
    dy, dh_n, dc_n = grads[0], grads[1], (grads[2] if c0 is not None else None)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = layer_backward(
        ctx.form, ctx.backend, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, saved, dy, dh_n, dc_n)
    present = lambda grad, given: grad if given is not None else None  # noqa: E731
    return (None, None, dx, dw_ih, dw_hh, present(db_ih, b_ih), present(db_hh, b_hh), dh0, present(dc0, c0),
            present(dw_hr, w_hr), None, None)


layer_forward.register_autograd(_layer_grads, setup_context=_setup_context)


# ----------------------------------------------------------------------------- the modules

def _reverse_within_lengths(a: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """a (T, B, ...) with each sequence b's first lengths[b] steps reversed (the rest stays): its own inverse."""
    if lengths is None:
        return a.flip(0)
    T = a.shape[0]
    steps = torch.arange(T, device=a.device)[:, None]
    last = lengths.to(a.device)[None, :] - 1
    index = torch.where(steps <= last, last - steps, steps)
    return a.gather(0, index.view(T, -1, *([1] * (a.dim() - 2))).expand_as(a))


class _FastRecurrent:
    """The forward shared by LSTM, GRU and RNN (mixed into their subclasses of torch.nn.RNNBase)."""

    def _init_backend(self, backend):
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a string such as 'auto', 'numba', 'cpp', got {backend!r}")
        self.backend = backend

    def _form(self) -> str:
        if self.mode == "RNN_TANH":
            return "rnn_tanh"
        if self.mode == "RNN_RELU":
            return "rnn_relu"
        return self.mode.lower()        # "lstm", "gru"

    def _layer_weights(self, layer: int, direction: int):
        suffix = f"_l{layer}{'_reverse' if direction else ''}"
        get = lambda kind: getattr(self, f"{kind}{suffix}", None)  # noqa: E731
        return (get("weight_ih"), get("weight_hh"), get("bias_ih") if self.bias else None,
                get("bias_hh") if self.bias else None, get("weight_hr") if self.proj_size else None)

    def _layers_and_directions(self) -> list:
        return [(layer, d) for layer in range(self.num_layers) for d in range(2 if self.bidirectional else 1)]

    def _weights(self) -> list:
        """Every layer's and direction's weight tensors, in order (absent biases and w_hr left out)."""
        return [p for slot in self._layers_and_directions() for p in self._layer_weights(*slot) if p is not None]

    def _weights_key(self) -> tuple:
        # what torch tracks of a tensor's contents: an in-place update bumps _version (optimizer steps,
        # load_state_dict, copy_ under no_grad), a new tensor (to(), a reassigned Parameter) moves data_ptr
        return tuple((w.data_ptr(), w._version) for w in self._weights())

    def pack(self):
        """Inference on frozen weights: snapshot each layer and direction (``fastrnn.pack_weights``) so that
        calls in eval mode that need no gradient read weights packed once, not packed per call (a short
        call, T = 1, runs several times faster on the CPU). Returns the module.

        The snapshots follow every change torch tracks: an optimizer step, ``load_state_dict``, ``copy_``
        under ``no_grad``, ``to()`` re-pack them at the next call; edits through ``.data`` are not tracked,
        so call ``pack()`` again after those. ``train()`` drops them. Calls that need gradients, calls
        under ``torch.compile`` (which traces the custom op instead) and CUDA parameters do not use them.
        """
        if self.training:
            raise RuntimeError("pack() is for eval mode (a snapshot would go stale in training); call eval() first")
        device = self.weight_ih_l0.device
        if device.type != "cpu":
            raise TypeError(f"pack() is for parameters on the CPU (packed for the CPU backends); these are on "
                            f"{device}")
        cell = {"LSTM": "lstm", "GRU": "gru"}.get(self.mode, "rnn")
        snapshots = {}
        for slot in self._layers_and_directions():      # (pack_weights copies the tensors, detached)
            w_ih, w_hh, b_ih, b_hh, w_hr = self._layer_weights(*slot)
            snapshots[slot] = pack_weights(cell, w_ih, w_hh, b_ih, b_hh, w_hr=w_hr)
        self._fastrnn_packed = (self._weights_key(), snapshots)
        return self

    def train(self, mode: bool = True):
        if mode:
            self._fastrnn_packed = None     # training changes the parameters: see pack()
        return super().train(mode)

    def _snapshots(self, save: bool):
        """The pack() snapshots this call runs on, re-packed if the weights changed since; None: the op."""
        packed = getattr(self, "_fastrnn_packed", None)    # (convert() makes modules without the attribute)
        if packed is None or save or self.training or _compiling():
            return None
        if packed[0] != self._weights_key():
            if self.weight_ih_l0.device.type != "cpu":
                self._fastrnn_packed = None
                return None
            self.pack()
        return self._fastrnn_packed[1]

    def _check_input(self, x: Tensor, packed: bool):
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor or a PackedSequence, got {type(x).__name__}")
        weight = self.weight_ih_l0
        if x.dtype != weight.dtype:
            raise TypeError(f"input must have the parameters' dtype {weight.dtype}, got {x.dtype}")
        if x.device != weight.device:
            raise ValueError(f"input must be on the parameters' device {weight.device}, got {x.device}")
        expected = "(sum of lengths, I)" if packed else ("(B, T, I)" if self.batch_first else "(T, B, I)")
        if (x.dim() not in ((2,) if packed else (2, 3))) or x.shape[-1] != self.input_size:
            raise ValueError(f"input must have shape {expected}{'' if packed else ' or (T, I) unbatched'} with "
                             f"I = input_size = {self.input_size}, got {tuple(x.shape)}")

    def _initial_states(self, hx, x: Tensor, unbatched: bool):
        """hx -> [h0] or [h0, c0], each (L*D, B, size), zeros where not given."""
        B = x.shape[1]
        LD = self.num_layers * (2 if self.bidirectional else 1)
        lstm = self.mode == "LSTM"
        sizes = [("h0", self.proj_size or self.hidden_size)] + ([("c0", self.hidden_size)] if lstm else [])
        if hx is None:
            return [x.new_zeros((LD, B, size)) for _, size in sizes]
        given = hx
        if lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("hx of an LSTM must be a tuple (h_0, c_0)")
        else:
            given = (hx,)
        states = []
        for (name, size), value in zip(sizes, given):
            shape = (LD, size) if unbatched else (LD, B, size)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                found = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"hx's {name} must be a tensor of shape (num_layers * num_directions, "
                                 f"{'' if unbatched else 'B, '}{'P' if name == 'h0' and self.proj_size else 'H'})"
                                 f" = {shape}, got {found}")
            if value.dtype != x.dtype:
                raise TypeError(f"hx's {name} must have the input's dtype {x.dtype}, got {value.dtype}")
            states.append(value.unsqueeze(1) if unbatched else value)
        return states

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            self._check_input(input.data, packed=True)
            x, lengths = pad_packed_sequence(input)         # (T, B, I) in the caller's batch order
            lengths = lengths.to(device="cpu", dtype=torch.int64)
            unbatched = False
        else:
            self._check_input(input, packed=False)
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        states = self._initial_states(hx, x, unbatched)
        save = torch.is_grad_enabled() and any(t.requires_grad for t in [x, *states, *self._weights()])
        y, finals = self._layers(x.contiguous(), lengths, states, save)
        if packed:
            sorted_indices = input.sorted_indices
            if sorted_indices is not None:
                y = y.index_select(1, sorted_indices)
                lengths = lengths[sorted_indices.cpu()]
            repacked = pack_padded_sequence(y, lengths, enforce_sorted=True)
            output = PackedSequence(repacked.data, repacked.batch_sizes, sorted_indices, input.unsorted_indices)
        elif unbatched:
            output = y.squeeze(1)
            finals = [f.squeeze(1) for f in finals]
        else:
            output = y.transpose(0, 1) if self.batch_first else y
        return (output, tuple(finals)) if self.mode == "LSTM" else (output, finals[0])

    def _layers(self, x, lengths, states, save):
        """All layers and directions, time-major: (y (T, B, D*P), [h_n, c_n] each (L*D, B, size))."""
        D = 2 if self.bidirectional else 1
        form = self._form()
        snapshots = self._snapshots(save)
        finals = [[] for _ in states]
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                index = layer * D + direction
                inp = _reverse_within_lengths(layer_input, lengths) if direction else layer_input
                w_ih, w_hh, b_ih, b_hh, w_hr = self._layer_weights(layer, direction)
                init = [s[index] for s in states] + [None] * (2 - len(states))
                h0, c0 = init[0].contiguous(), None if init[1] is None else init[1].contiguous()
                if snapshots is not None:       # pack(): inference on the layer's snapshot, NumPy in and out
                    y, h_n, c_n = _on_snapshot(form, self.backend, snapshots[layer, direction], inp, h0, c0, lengths)
                else:
                    y, h_n, c_n = layer_forward(form, self.backend, inp.contiguous(), w_ih, w_hh, b_ih, b_hh, h0,
                                                c0, w_hr, lengths, save)[:3]
                outputs.append(_reverse_within_lengths(y, lengths) if direction else y)
                for k, state in enumerate((h_n, c_n)[:len(states)]):
                    finals[k].append(state)
            layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        return layer_input, [torch.stack(f) for f in finals]


def _on_snapshot(form, backend, snapshot, x, h0, c0, lengths):
    """One layer and direction on a pack() snapshot (no gradient wanted): CPU tensors as NumPy views, the
    functional API's plain-NumPy path (no per-array conversion), results as tensors on the same memory."""
    host = lambda t: None if t is None else t.detach().numpy()     # noqa: E731
    y, h_n, c_n, _ = _flat.forward(form, backend, host(x.contiguous()), snapshot, None, None, None, host(h0),
                                   host(c0), None, host(lengths), save=False)
    return torch.from_numpy(y), torch.from_numpy(h_n), None if c_n is None else torch.from_numpy(c_n)


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


# Subclasses of RNNBase, not of nn.LSTM / GRU / RNN themselves: torch.compile refuses to trace instances of those.
class LSTM(_FastRecurrent, nn.RNNBase):
    """torch.nn.LSTM on fastrnn's kernels: the same arguments, parameters and results, plus ``backend``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, backend="auto"):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)
        self._init_backend(backend)


class GRU(_FastRecurrent, nn.RNNBase):
    """torch.nn.GRU on fastrnn's kernels: the same arguments, parameters and results, plus ``backend``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, backend="auto"):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype)
        self._init_backend(backend)


class RNN(_FastRecurrent, nn.RNNBase):
    """torch.nn.RNN on fastrnn's kernels: the same arguments, parameters and results, plus ``backend``."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, backend="auto"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(f"RNN_{nonlinearity.upper()}", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype)
        self.nonlinearity = nonlinearity
        self._init_backend(backend)


_REPLACEMENTS = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN}


def convert(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Make every torch.nn.LSTM / GRU / RNN in ``model`` (``model`` itself included) run on fastrnn; returns it.

    In place: each such module becomes an instance of the fastrnn class of the same name, keeping its
    Parameter objects (so an optimizer made before still updates them), buffers, hooks, device, dtype and
    training mode. Only those exact classes are converted: a user subclass may override ``forward``, so
    it is left alone. ``fastrnn.torch.convert(copy.deepcopy(model))`` keeps the original as it was.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        replacement = _REPLACEMENTS.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
            module._init_backend(backend)
    return model


def pack(model: nn.Module) -> nn.Module:
    """``pack()`` every fastrnn LSTM / GRU / RNN in ``model`` (``model`` itself included), which must be in
    eval mode: its inference calls then read weights packed once (see ``LSTM.pack``). Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    found = [m for m in model.modules() if isinstance(m, _FastRecurrent)]
    if not found:
        raise ValueError("model holds no fastrnn LSTM / GRU / RNN to pack; fastrnn.torch.convert(model) first")
    for module in found:
        module.pack()
    return model


__all__ = ["LSTM", "GRU", "RNN", "convert", "pack", "layer_forward", "layer_backward"]
