"""Named result types shared by every backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy as np


class LSTMGrads(NamedTuple):
    """Gradients of an LSTM sequence, each shaped like the forward argument (w_hr: None without projection)."""
    x: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: Optional[np.ndarray]
    b_hh: Optional[np.ndarray]
    w_hr: Optional[np.ndarray] = None


class Grads(NamedTuple):
    """Gradients of a GRU or RNN sequence, each shaped like the forward argument."""
    x: np.ndarray
    h0: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: Optional[np.ndarray]
    b_hh: Optional[np.ndarray]


@dataclass(frozen=True)
class Layout:
    """How the caller's arrays map to the internal time-major (T, B, ...) form."""
    batch_first: bool
    unbatched: bool


# Sequence's weight fields, in the order fastrnn.pack_weights keeps them
WEIGHT_FIELDS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


@dataclass(eq=False)     # (not frozen: a frozen dataclass's __init__ took 1.2 us a call, a third of it here)
class Sequence:
    """One validated single-layer, single-direction problem, time-major and contiguous.

    x (T, B, I); w_ih (G*H, I); w_hh (G*H, P); b_ih, b_hh (G*H,) or None;
    h0 (B, P); c0 (B, H) for LSTM else None; lengths (B,) int64 or None;
    w_hr (P, H) for an LSTM with projections (h_t = W_hr (o * tanh(c_t))), else None and P = H.
    ``variant`` is the cell option: linear_before_reset (GRU, bool),
    nonlinearity (RNN, "tanh"/"relu"), None for LSTM.
    """
    cell: str
    x: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: Optional[np.ndarray]
    b_hh: Optional[np.ndarray]
    h0: np.ndarray
    c0: Optional[np.ndarray]
    lengths: Optional[np.ndarray]
    variant: Any
    w_hr: Optional[np.ndarray] = None
    packed: Any = None      # the PackedWeights whose own arrays these weights are (fastrnn.pack_weights)

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
        """Hidden (cell) size."""
        return self.w_hh.shape[1] if self.w_hr is None else self.w_hr.shape[1]

    @property
    def P(self) -> int:
        """Output size: the projection size of an LSTM with projections, else H."""
        return self.w_hh.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype


@dataclass(frozen=True)
class Tape:
    """What a ``*_forward`` call saved for its ``*_backward``.

    ``backend`` names the backend that made it (backward runs there); ``saved`` is
    that backend's private record. The tape keeps references to the inputs: do not
    modify them in place between forward and backward.
    """
    backend: str
    seq: Sequence
    layout: Layout
    saved: Any
    kind: str = "host"      # the caller's kind of array ("host", "cupy", "torch", "jax", "numba")
    on_gpu: bool = False    # the forward's arrays were on a GPU (backward's must be too)

    @property
    def cell(self) -> str:
        return self.seq.cell

    @property
    def dtype(self) -> np.dtype:
        return self.seq.dtype
