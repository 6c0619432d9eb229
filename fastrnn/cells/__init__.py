"""Cell specifications: gate names and order, number of recurrent states.

A spec is metadata only. Gate ``k`` of a cell occupies rows ``k*H:(k+1)*H`` of
``w_ih``/``w_hh``/``b_ih``/``b_hh`` (PyTorch's layout), and code that slices a
gate writes ``spec.F * H`` rather than a literal ``1 * H``.

    LSTM: gates i, f, g, o; states h, c
    GRU:  gates r, z, n;    state h
    RNN:  gate a (the pre-activation of tanh/relu); state h
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellSpec:
    name: str
    gates: tuple[str, ...]
    has_cell_state: bool

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    def __getattr__(self, item: str) -> int:
        # LSTM.F -> 1: the row block of gate "f". Only single upper-case letters
        # are gate lookups; anything else is a genuine missing attribute.
        if len(item) == 1 and item.isupper() and item.lower() in self.gates:
            return self.gates.index(item.lower())
        raise AttributeError(item)


LSTM = CellSpec("lstm", ("i", "f", "g", "o"), has_cell_state=True)
GRU = CellSpec("gru", ("r", "z", "n"), has_cell_state=False)
RNN = CellSpec("rnn", ("a",), has_cell_state=False)

SPECS = {spec.name: spec for spec in (LSTM, GRU, RNN)}

__all__ = ["CellSpec", "LSTM", "GRU", "RNN", "SPECS"]
