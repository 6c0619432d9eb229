"""Layers: multi-layer, bidirectional, variable-length LSTM / GRU / RNN objects with parameters and gradients.

    lstm = fastrnn.LSTM(input_size, hidden_size, num_layers=2, bidirectional=True, seed=0)
    y, (h_n, c_n) = lstm(x, (h0, c0), lengths=lengths)     # hx optional; GRU/RNN take and return h only
    dx, (dh0, dc0) = lstm.backward(dy, (dh_n, dc_n))        # accumulates into lstm.grads
    lstm.load_state_dict(torch_lstm.state_dict())           # torch.nn's names and shapes
    lstm.eval().pack()                                      # frozen, packed once: many short calls

Semantics follow torch.nn.LSTM/GRU/RNN: parameters ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}`` (suffix ``_reverse`` for the backward direction), initialised uniform in
+-1/sqrt(hidden_size); ``y`` holds both directions' outputs concatenated (forward first); ``h_n`` is
``(num_layers * num_directions, B, H)``; ``proj_size = P > 0`` gives an LSTM with projections
(``weight_hr_l{k}`` of shape (P, H), h_t = W_hr (o * tanh(c_t)), h and y of size P; it runs on the
"cpp" backend, else the reference); dropout acts on the outputs of every layer but the last, in
training mode only; with ``lengths`` the reverse direction of sequence b starts at its own last step
``lengths[b] - 1``, and outputs past a sequence's length are zero (PackedSequence semantics).

Composition lives here, once: a backend only runs one layer in one direction (``fastrnn.*_forward`` and
``*_backward``); the reverse direction runs the same kernels on each sequence reversed within its
length. Arrays follow the parameters' array module: NumPy, or CuPy after ``.to("cuda")``.
"""
from __future__ import annotations

import math
import numpy as np

from . import api
from ._arrays import module_of, move_arrays
from ._packed import pack_weights
from ._validation import SUPPORTED_DTYPES, check_lengths, check_variant
from .cells import SPECS


def reverse_within_lengths(a, lengths):
    """a (T, B, ...) with each sequence b's first lengths[b] steps reversed; the rest unchanged.

    Its own inverse. ``lengths`` None reverses all T steps.
    """
    if lengths is None:
        return a[::-1]
    xp = module_of(a)
    T, B = a.shape[0], a.shape[1]
    steps = np.arange(T)[:, None]
    index = np.where(steps < lengths[None, :], lengths[None, :] - 1 - steps, steps)
    return a[xp.asarray(index), xp.asarray(np.arange(B))[None, :]]


class _RecurrentLayers:
    """Shared machinery of LSTM, GRU and RNN; use those classes."""

    cell = ""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, *, variant=None, dtype=np.float32, backend="auto",
                 seed=None):
        for name, value, low in (("input_size", input_size, 1), ("hidden_size", hidden_size, 1),
                                 ("num_layers", num_layers, 1), ("proj_size", proj_size, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if proj_size and (self.cell != "lstm" or proj_size >= hidden_size):
            raise ValueError(f"proj_size must be 0, or (LSTM only) smaller than hidden_size = {hidden_size}; "
                             f"got {proj_size}")
        dtype = np.dtype(dtype)
        if dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout, self.proj_size, self.dtype, self.backend = float(dropout), int(proj_size), dtype, backend
        self.output_size = self.proj_size or self.hidden_size     # size of h and of each direction's y
        self.variant = check_variant(self.cell, variant)
        self.num_directions = 2 if bidirectional else 1
        self.training = True
        self._rng = np.random.default_rng(seed)
        self._saved = None
        self._packed = None     # (layer, direction) -> PackedWeights, from pack(); eval-mode calls only
        self.params: dict = {}
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, shape in self._shapes().items():
            self.params[name] = self._rng.uniform(-bound, bound, shape).astype(dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    # ------------------------------------------------------------------ parameters

    def _suffix(self, direction):
        return "_reverse" if direction else ""

    def _shapes(self) -> dict:
        G, H, P = SPECS[self.cell].num_gates, self.hidden_size, self.output_size
        shapes = {}
        for layer in range(self.num_layers):
            inputs = self.input_size if layer == 0 else P * self.num_directions
            for direction in range(self.num_directions):
                s = f"l{layer}{self._suffix(direction)}"
                shapes[f"weight_ih_{s}"] = (G * H, inputs)
                shapes[f"weight_hh_{s}"] = (G * H, P)
                if self.bias:
                    shapes[f"bias_ih_{s}"] = (G * H,)
                    shapes[f"bias_hh_{s}"] = (G * H,)
                if self.proj_size:
                    shapes[f"weight_hr_{s}"] = (P, H)
        return shapes

    def state_dict(self) -> dict:
        """Copies of the parameters under torch.nn's names."""
        return {name: p.copy() for name, p in self.params.items()}

    def load_state_dict(self, state) -> None:
        """Load parameters by torch.nn's names: NumPy arrays, torch tensors, anything np.asarray takes."""
        expected = self._shapes()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise KeyError(f"state_dict does not match this {type(self).__name__}: missing {missing}, "
                           f"unexpected {unexpected}")
        xp = module_of(next(iter(self.params.values())))
        loaded = {}
        for name, shape in expected.items():
            value = state[name]
            if hasattr(value, "detach"):            # torch tensors, on any device
                value = value.detach().cpu().numpy()
            value = np.asarray(value) if xp is np else xp.asarray(value)
            if value.shape != shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {shape}, got {value.shape}")
            if value.dtype.kind not in "fiu":
                raise TypeError(f"state_dict[{name!r}] must be numeric, got dtype {value.dtype}")
            loaded[name] = value.astype(self.dtype)
        self.params.update(loaded)
        self._packed = None

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0

    def train(self, mode: bool = True):
        self.training = bool(mode)
        if self.training:
            self._packed = None     # training changes the parameters: a snapshot would go stale
        return self

    def eval(self):
        return self.train(False)

    def pack(self):
        """Freeze the current parameters for eval-mode calls (many short calls, streaming): each layer
        and direction then runs on a ``fastrnn.pack_weights`` snapshot, whose packed weights its
        backend makes on the first call and keeps. Snapshots are copies: parameters changed in place
        afterwards are not seen, so call ``pack()`` again; ``load_state_dict``, ``to`` and
        ``train()`` drop them. Eval mode (``eval()`` first: a snapshot taken in training mode would
        go stale at the next optimizer step and be used by the next eval-mode call). Host (NumPy)
        parameters only. Returns self."""
        if self.training:
            raise RuntimeError("pack() is for eval mode (a snapshot would go stale in training); call eval() first")
        if module_of(next(iter(self.params.values()))) is not np:
            raise TypeError("pack() is for parameters on the host (NumPy); these are on the GPU")
        self._packed = {}
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                self._packed[layer, direction] = pack_weights(
                    self.cell, *self._weights(layer, direction), w_hr=self._options(layer, direction).get("w_hr"))
        return self

    def to(self, device: str):
        """Move parameters and gradients to "cuda" (CuPy arrays) or "cpu" (NumPy arrays)."""
        self.params = move_arrays(self.params, device)
        self.grads = move_arrays(self.grads, device)
        self._packed = None
        return self

    # ------------------------------------------------------------------ forward / backward

    def _states_in(self, hx, B, unbatched, xp):
        """hx -> tuple of (L*D, B, H) arrays (or Nones), after checking shapes."""
        names = ("h0", "c0") if self.cell == "lstm" else ("h0",)
        if hx is None:
            return (None,) * len(names)
        if self.cell == "lstm":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("hx of an LSTM must be a tuple (h0, c0)")
            given = tuple(hx)
        else:
            given = (hx,)
        LD = self.num_layers * self.num_directions
        states = []
        for name, value in zip(names, given):
            size, letter = ((self.output_size, "P" if self.proj_size else "H") if name == "h0"
                            else (self.hidden_size, "H"))
            shape = (LD, size) if unbatched else (LD, B, size)
            value = xp.asarray(value)
            if value.shape != shape:
                raise ValueError(f"{name} in hx must have shape (num_layers*num_directions, "
                                 f"{letter if unbatched else 'B, ' + letter}) = {shape}, got {value.shape}")
            if value.dtype != self.dtype:
                raise TypeError(f"{name} in hx must have dtype {self.dtype}, got {value.dtype}")
            states.append(value[:, None, :] if unbatched else value)
        return tuple(states)

    def _weights(self, layer, direction):
        s = f"l{layer}{self._suffix(direction)}"
        p = self.params
        return (p[f"weight_ih_{s}"], p[f"weight_hh_{s}"], p.get(f"bias_ih_{s}"), p.get(f"bias_hh_{s}"))

    def _options(self, layer, direction):
        if self.proj_size:
            return {"w_hr": self.params[f"weight_hr_l{layer}{self._suffix(direction)}"]}
        if self.cell == "gru":
            return {"linear_before_reset": self.variant}
        if self.cell == "rnn":
            return {"nonlinearity": self.variant}
        return {}

    def __call__(self, x, hx=None, lengths=None):
        """Run all layers and directions. Returns ``y, (h_n, c_n)`` (LSTM) or ``y, h_n``."""
        xp = module_of(next(iter(self.params.values())))
        x = xp.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"x must have dtype {self.dtype} (the layer's dtype), got {x.dtype}")
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be {'(B, T, I)' if self.batch_first else '(T, B, I)'} or (T, I) "
                             f"with I = input_size = {self.input_size}, got shape {x.shape}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        T, B = x.shape[0], x.shape[1]
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths applies to batched input only; x is 2-D (one unbatched sequence)")
            lengths = check_lengths(lengths, T, B)
        states = self._states_in(hx, B, unbatched, xp)
        forward = getattr(api, f"{self.cell}_forward")
        tapes, masks, finals = [], [], []
        layer_input = xp.ascontiguousarray(x)
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                init = [None if s is None else s[index] for s in states]
                inp = reverse_within_lengths(layer_input, lengths) if direction else layer_input
                weights, options = self._weights(layer, direction), self._options(layer, direction)
                if self._packed is not None and not self.training:      # pack(): the snapshot
                    weights = (self._packed[layer, direction], None, None, None)
                    options.pop("w_hr", None)
                y, final, tape = forward(inp, *weights, *init, lengths=lengths, backend=self.backend, **options)
                outputs.append(reverse_within_lengths(y, lengths) if direction else y)
                finals.append(final if self.cell == "lstm" else (final,))
                tapes.append(tape)
            layer_output = outputs[0] if len(outputs) == 1 else xp.concatenate(outputs, axis=2)
            mask = None
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                keep = self._rng.random(layer_output.shape) >= self.dropout
                mask = xp.asarray(keep.astype(self.dtype) / (1 - self.dropout))
                layer_output = layer_output * mask
            masks.append(mask)
            layer_input = layer_output
        self._saved = dict(tapes=tapes, masks=masks, lengths=lengths, unbatched=unbatched, T=T, B=B)
        y = layer_input
        if unbatched:
            y = y[:, 0, :]
        elif self.batch_first:
            y = xp.ascontiguousarray(y.transpose(1, 0, 2))
        final_states = [xp.stack([f[k] for f in finals]) for k in range(len(finals[0]))]
        if unbatched:
            final_states = [s[:, 0, :] for s in final_states]
        if self.cell == "lstm":
            return y, (final_states[0], final_states[1])
        return y, final_states[0]

    def backward(self, dy, dhx=None):
        """Gradients of the last call, given dL/dy (or None) and dL/dh_n (and dL/dc_n; or None).

        Adds every parameter's gradient into ``self.grads`` and returns ``(dx, dhx)``: dx shaped like x,
        dhx like hx (``(dh0, dc0)`` for an LSTM).
        """
        if self._saved is None:
            raise RuntimeError("backward needs a forward call first")
        saved = self._saved
        xp = module_of(next(iter(self.params.values())))
        T, B, lengths, unbatched = saved["T"], saved["B"], saved["lengths"], saved["unbatched"]
        D, P, L = self.num_directions, self.output_size, self.num_layers
        y_shape = (T, D * P) if unbatched else ((B, T, D * P) if self.batch_first else (T, B, D * P))
        if dy is None:
            dy = xp.zeros((T, B, D * P), self.dtype)
        else:
            dy = xp.asarray(dy)
            if dy.shape != y_shape:
                raise ValueError(f"dy must have the shape of y, {y_shape}, got {dy.shape}")
            dy = dy[:, None, :] if unbatched else (dy.transpose(1, 0, 2) if self.batch_first else dy)
        d_states = self._states_in(dhx, B, unbatched, xp)
        backward = getattr(api, f"{self.cell}_backward")
        initial_grads = [[None] * (L * D) for _ in d_states]
        d_output = dy
        for layer in reversed(range(L)):
            if saved["masks"][layer] is not None:
                d_output = d_output * saved["masks"][layer]
            d_input = None
            for direction in range(D):
                index = layer * D + direction
                d_y = xp.ascontiguousarray(d_output[:, :, direction * P:(direction + 1) * P])
                if direction:
                    d_y = reverse_within_lengths(d_y, lengths)
                finals = [None if s is None else s[index] for s in d_states]
                grads = backward(saved["tapes"][index], d_y, *finals)
                s = f"l{layer}{self._suffix(direction)}"
                for field, name in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                                    ("b_hh", "bias_hh"), ("w_hr", "weight_hr")):
                    value = getattr(grads, field, None)
                    if value is not None:
                        self.grads[f"{name}_{s}"] += value
                initial_grads[0][index] = grads.h0
                if self.cell == "lstm":
                    initial_grads[1][index] = grads.c0
                dx = reverse_within_lengths(grads.x, lengths) if direction else grads.x
                d_input = dx if d_input is None else d_input + dx
            d_output = d_input
        dx = d_output
        dh = [xp.stack(g) for g in initial_grads]
        if unbatched:
            dx = dx[:, 0, :]
            dh = [g[:, 0, :] for g in dh]
        elif self.batch_first:
            dx = xp.ascontiguousarray(dx.transpose(1, 0, 2))
        return dx, (tuple(dh) if self.cell == "lstm" else dh[0])

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, dtype={self.dtype}, backend={self.backend!r})")


class LSTM(_RecurrentLayers):
    """torch.nn.LSTM's constructor, parameters and semantics on fastrnn's kernels (see the module doc)."""
    cell = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, *, dtype=np.float32, backend="auto", seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, dtype=dtype, backend=backend, seed=seed)


class GRU(_RecurrentLayers):
    """torch.nn.GRU on fastrnn's kernels; ``linear_before_reset=False`` gives the original (Cho) form."""
    cell = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, linear_before_reset=True, dtype=np.float32, backend="auto",
                 seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         variant=linear_before_reset, dtype=dtype, backend=backend, seed=seed)


class RNN(_RecurrentLayers):
    """torch.nn.RNN (Elman, ``nonlinearity`` "tanh" or "relu") on fastrnn's kernels."""
    cell = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32, backend="auto",
                 seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         variant=nonlinearity, dtype=dtype, backend=backend, seed=seed)


__all__ = ["LSTM", "GRU", "RNN", "reverse_within_lengths"]
