"""Linear and Embedding layers with backward, and a RecurrentModel gluing them to a fastrnn LSTM/GRU/RNN.

Same style as ``fastrnn.LSTM``: ``params`` and ``grads`` dicts under torch.nn's names, ``__call__`` saves what
``backward`` needs, ``backward`` adds into ``grads``; NumPy arrays, or CuPy after ``.to("cuda")``.

    Linear(in_features, out_features):   y = x W^T + b       x (..., I), W (O, I), b (O,), y (..., O)
        backward(dy) -> dx = dy W;  dW += dy^T x;  db += sum(dy)   (over all leading axes)
    Embedding(num_embeddings, embedding_dim):   y = W[idx]      idx integers (...), W (V, D), y (..., D)
        backward(dy): dW[v] += sum of dy over the positions where idx == v (row padding_idx gets none)
    RecurrentModel(rnn, head, embedding=None, readout="steps" | "final"):
        "steps": out = head(y) at every step, (T, B, O)       (a language model)
        "final": out = head(h_n of the last layer), (B, O)    (a classifier/forecaster; with lengths, h_n is
                 each sequence's state at its own last step; both directions concatenated if bidirectional)

Initialisation follows torch: Linear U(-1/sqrt(I), 1/sqrt(I)) for W and b, Embedding N(0, 1).
"""
from __future__ import annotations

import numpy as np

from .._arrays import module_of, move_arrays
from .._validation import SUPPORTED_DTYPES


def _size(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


class Module:
    """What Linear and Embedding share: parameters and gradients by name, devices, modes."""

    def __init__(self, params: dict, dtype):
        self.dtype = dtype
        self.params = params
        self.grads = {name: np.zeros_like(p) for name, p in params.items()}
        self.training = True
        self._saved = None

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0

    def to(self, device: str):
        """Move parameters and gradients to "cuda" (CuPy) or "cpu" (NumPy)."""
        self.params = move_arrays(self.params, device)
        self.grads = move_arrays(self.grads, device)
        return self

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self) -> dict:
        return {name: p.copy() for name, p in self.params.items()}

    def load_state_dict(self, state) -> None:
        """Parameters by name, from arrays or torch tensors, checked against this module's shapes."""
        if set(state) != set(self.params):
            raise KeyError(f"state_dict must have the keys {sorted(self.params)}, got {sorted(state)}")
        xp = module_of(next(iter(self.params.values())))
        for name, value in state.items():
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            value = xp.asarray(value)
            if value.shape != self.params[name].shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {self.params[name].shape}, "
                                 f"got {value.shape}")
            self.params[name] = value.astype(self.dtype)

    def _forward_first(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward call first")
        return self._saved


class Linear(Module):
    """torch.nn.Linear: y = x W^T + b over the last axis of x."""

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None):
        self.in_features = _size("in_features", in_features)
        self.out_features = _size("out_features", out_features)
        dtype = _float_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = self.in_features ** -0.5
        params = {"weight": rng.uniform(-bound, bound, (self.out_features, self.in_features)).astype(dtype)}
        if bias:
            params["bias"] = rng.uniform(-bound, bound, self.out_features).astype(dtype)
        super().__init__(params, dtype)

    def __call__(self, x):
        w = self.params["weight"]
        x = module_of(w).asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., in_features) = (..., {self.in_features}), got {x.shape}")
        if x.dtype != self.dtype:
            raise TypeError(f"x must have dtype {self.dtype} (the layer's dtype), got {x.dtype}")
        self._saved = x
        # one 2-D GEMM: NumPy's stacked matmul over a 3-D x is several times slower
        y = x.reshape(-1, self.in_features) @ w.T
        if "bias" in self.params:
            y += self.params["bias"]
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, dy):
        """dL/dx for dL/dy ``dy`` (shaped like the output); adds dL/dW and dL/db into ``grads``."""
        x = self._forward_first()
        w = self.params["weight"]
        dy = module_of(w).asarray(dy)
        if dy.shape != x.shape[:-1] + (self.out_features,):
            raise ValueError(f"dy must have the output's shape {x.shape[:-1] + (self.out_features,)}, "
                             f"got {dy.shape}")
        dy2, x2 = dy.reshape(-1, self.out_features), x.reshape(-1, self.in_features)
        self.grads["weight"] += dy2.T @ x2
        if "bias" in self.params:
            self.grads["bias"] += dy2.sum(axis=0)
        return (dy2 @ w).reshape(x.shape)

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}, bias={'bias' in self.params})"


class Embedding(Module):
    """torch.nn.Embedding: rows of a (num_embeddings, embedding_dim) table picked by integer indices."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, *, dtype=np.float32, seed=None):
        self.num_embeddings = _size("num_embeddings", num_embeddings)
        self.embedding_dim = _size("embedding_dim", embedding_dim)
        if padding_idx is not None:
            if not isinstance(padding_idx, (int, np.integer)) or not -self.num_embeddings <= padding_idx \
                    < self.num_embeddings:
                raise ValueError(f"padding_idx must be None or an integer in [-{self.num_embeddings}, "
                                 f"{self.num_embeddings}), got {padding_idx!r}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        dtype = _float_dtype(dtype)
        weight = np.random.default_rng(seed).standard_normal((self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            weight[padding_idx] = 0
        super().__init__({"weight": weight.astype(dtype)}, dtype)

    def __call__(self, indices):
        w = self.params["weight"]
        xp = module_of(w)
        indices = xp.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {indices.dtype}")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(f"indices must lie in [0, num_embeddings) = [0, {self.num_embeddings}), "
                             f"got values in [{int(indices.min())}, {int(indices.max())}]")
        self._saved = indices
        return w[indices]

    def backward(self, dy) -> None:
        """Adds dL/dW into ``grads`` for dL/dy ``dy`` (shaped like the output); indices have no gradient."""
        indices = self._forward_first()
        xp = module_of(self.params["weight"])
        dy = xp.asarray(dy)
        if dy.shape != indices.shape + (self.embedding_dim,):
            raise ValueError(f"dy must have the output's shape {indices.shape + (self.embedding_dim,)}, "
                             f"got {dy.shape}")
        flat, rows = indices.reshape(-1), dy.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            rows = rows * (flat != self.padding_idx)[:, None]
        if xp is np:
            np.add.at(self.grads["weight"], flat, rows)
        else:
            import cupyx
            cupyx.scatter_add(self.grads["weight"], flat, rows)

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx})"


READOUTS = ("steps", "final")


class RecurrentModel:
    """[Embedding ->] fastrnn LSTM/GRU/RNN -> Linear head, with one backward (see the module docstring).

    ``model(x, hx, lengths) -> (out, hx_n)``; ``model.backward(d_out)`` fills every part's ``grads``;
    ``model.modules`` is the list to give an optimiser or ``clip_grad_norm``.
    """

    def __init__(self, rnn, head, embedding=None, readout: str = "steps"):
        if not hasattr(rnn, "cell") or not hasattr(rnn, "backward"):
            raise TypeError(f"rnn must be a fastrnn.LSTM, GRU or RNN, got {type(rnn).__name__}")
        if not isinstance(head, Linear):
            raise TypeError(f"head must be a fastrnn.train.Linear, got {type(head).__name__}")
        if embedding is not None and not isinstance(embedding, Embedding):
            raise TypeError(f"embedding must be a fastrnn.train.Embedding or None, got {type(embedding).__name__}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if rnn.batch_first:
            raise ValueError("rnn must be time-major (batch_first=False): RecurrentModel works on (T, B, ...)")
        features = rnn.output_size * rnn.num_directions
        if head.in_features != features:
            raise ValueError(f"head.in_features must be the rnn's output size {features}, got {head.in_features}")
        if embedding is not None and embedding.embedding_dim != rnn.input_size:
            raise ValueError(f"embedding.embedding_dim must be rnn.input_size = {rnn.input_size}, "
                             f"got {embedding.embedding_dim}")
        self.rnn, self.head, self.embedding, self.readout = rnn, head, embedding, readout
        self._final_shape = None

    @property
    def modules(self) -> list:
        return [m for m in (self.embedding, self.rnn, self.head) if m is not None]

    @property
    def training(self) -> bool:
        return self.rnn.training

    def train(self, mode: bool = True):
        for m in self.modules:
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device: str):
        for m in self.modules:
            m.to(device)
        return self

    def zero_grad(self) -> None:
        for m in self.modules:
            m.zero_grad()

    def state_dict(self) -> dict:
        """Every part's parameters, prefixed "embedding.", "rnn.", "head." (torch's nesting)."""
        return {f"{part}.{name}": value for part in ("embedding", "rnn", "head")
                if getattr(self, part) is not None for name, value in getattr(self, part).state_dict().items()}

    def load_state_dict(self, state) -> None:
        """The inverse of ``state_dict``: "embedding.*", "rnn.*" and "head.*" keys go to their parts."""
        parts = {part: {} for part in ("embedding", "rnn", "head") if getattr(self, part) is not None}
        for key, value in state.items():
            part, _, name = key.partition(".")
            if part not in parts:
                raise KeyError(f"state_dict key {key!r} must start with one of {[p + '.' for p in parts]}")
            parts[part][name] = value
        for part, entries in parts.items():
            getattr(self, part).load_state_dict(entries)

    def __call__(self, x, hx=None, lengths=None):
        inputs = self.embedding(x) if self.embedding is not None else x
        y, hx_n = self.rnn(inputs, hx, lengths)
        if self.readout == "steps":
            return self.head(y), hx_n
        h_n = hx_n[0] if self.rnn.cell == "lstm" else hx_n
        self._final_shape = h_n.shape
        D = self.rnn.num_directions
        last = h_n[-D:]                                     # (D, B, H): the last layer's directions
        features = last[0] if D == 1 else module_of(last).concatenate(list(last), axis=-1)
        return self.head(features), hx_n

    def backward(self, d_out) -> None:
        """Backward through head, rnn and embedding, adding into their ``grads``."""
        d_head = self.head.backward(d_out)
        if self.readout == "steps":
            dx, _ = self.rnn.backward(d_head)
        else:
            xp = module_of(d_head)
            D, P = self.rnn.num_directions, self.rnn.output_size
            dh = xp.zeros(self._final_shape, d_head.dtype)
            for direction in range(D):
                dh[dh.shape[0] - D + direction] = d_head[..., direction * P:(direction + 1) * P]
            if self.rnn.cell == "lstm":
                dc_shape = dh.shape[:-1] + (self.rnn.hidden_size,)
                dh = (dh, xp.zeros(dc_shape, dh.dtype))
            dx, _ = self.rnn.backward(None, dh)
        if self.embedding is not None:
            self.embedding.backward(dx)


__all__ = ["Module", "Linear", "Embedding", "RecurrentModel", "READOUTS"]
