"""Weights frozen once and packed once, for many calls (inference, streaming).

    weights = fastrnn.pack_weights("lstm", w_ih, w_hh, b_ih, b_hh)
    for chunk in stream:                                   # e.g. T = 1 per call
        y, (h, c) = fastrnn.lstm(chunk, weights, h0=h, c0=c)

Every CPU kernel reads the weights in a packed layout (panels of one vector of hidden units).
Given plain arrays, a call packs them itself, every time: that is what keeps in-place updates
between calls safe, and for a long sequence it is one pass over the weights against T in the
loop. For a short call it is most of the time (T = 1, B = 1, H = 1024: 32 MiB packed for one
step). ``pack_weights`` takes a snapshot instead: private copies of the arrays, validated once;
each backend packs the snapshot on its first call and keeps the result for every later call, so
a call then reads the weights once, for its steps. A snapshot never changes: weights modified
after it was taken are not seen, so take a new one after a training step.
"""
from __future__ import annotations

import threading
from typing import Optional

import numpy as np

from ._arrays import call_on_gpu, to_host
from ._types import WEIGHT_FIELDS
from ._validation import as_float_arrays, validate_sequence
from .cells import SPECS

_DEFAULT_VARIANT = {"lstm": None, "gru": True, "rnn": "tanh"}    # packing does not depend on the variant


class PackedWeights:
    """A read-only snapshot of one layer's weights, plus each backend's packed copies of it.

    Made by :func:`pack_weights`; pass it to ``lstm``/``gru``/``rnn`` (and their ``*_forward``) in
    place of ``w_ih`` (leaving ``w_hh``, ``b_ih``, ``b_hh`` and ``w_hr`` out). Safe to share between
    threads. Its arrays are NumPy arrays, for the CPU backends: a call with GPU arrays refuses them as
    it refuses any host array; ``backend="cuda"`` with NumPy inputs copies them to the GPU each call.
    """

    def __init__(self, cell: str, arrays: dict):
        self.cell = cell
        self._arrays = arrays       # private, contiguous and writeable (Numba compiles read-only arrays apart)
        self._ordered = tuple(arrays[name] for name in WEIGHT_FIELDS)
        self._packs: dict = {}
        self._lock = threading.Lock()

    def __getattr__(self, name):
        if name in WEIGHT_FIELDS:           # read-only views of the snapshot
            arr = self.__dict__["_arrays"][name]
            if arr is None:
                return None
            view = arr.view()
            view.flags.writeable = False
            return view
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def dtype(self) -> np.dtype:
        return self._arrays["w_hh"].dtype

    @property
    def input_size(self) -> int:
        return self._arrays["w_ih"].shape[1]

    @property
    def hidden_size(self) -> int:
        w_hr = self._arrays["w_hr"]
        return w_hr.shape[1] if w_hr is not None else self._arrays["w_hh"].shape[1]

    def arrays(self) -> tuple:
        """(w_ih, w_hh, b_ih, b_hh, w_hr): the snapshot itself, for the API to validate and call with."""
        return self._ordered

    def holds(self, weights: dict) -> bool:
        """Whether ``weights`` (name -> array) are this snapshot's own arrays (not converted copies)."""
        return all(weights[name] is own for name, own in zip(WEIGHT_FIELDS, self._ordered))

    def packed(self, key: str) -> Optional[object]:
        """A backend's packed copy stored under ``key``, or None before its first call."""
        return self._packs.get(key)

    def keep(self, key: str, packed: object) -> None:
        """Store a backend's packed copy (two threads racing store equal copies; the first stays)."""
        with self._lock:
            self._packs.setdefault(key, packed)

    def __reduce__(self):
        # pickle and copy.deepcopy (a packed layer or torch module inside a saved model): the snapshot's
        # arrays, not its packed copies, which follow this CPU's vector width and are remade on first use
        return PackedWeights, (self.cell, self._arrays)

    def __repr__(self):
        return (f"PackedWeights({self.cell}, input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"dtype={self.dtype}, packed for: {sorted(self._packs) or 'none yet'})")


def pack_weights(cell: str, w_ih, w_hh, b_ih=None, b_hh=None, *, w_hr=None) -> PackedWeights:
    """Freeze one layer's weights for repeated calls: ``cell`` is "lstm", "gru" or "rnn"; the arrays
    as for :func:`fastrnn.lstm` (PyTorch's layout; NumPy, lists, CPU tensors...). Returns a
    :class:`PackedWeights` holding copies: later changes to these arrays are not seen.
    The same snapshot serves both GRU forms and both RNN nonlinearities (chosen per call)."""
    if cell not in SPECS:
        raise ValueError(f"cell must be one of {sorted(SPECS)}, got {cell!r}")
    named = dict(zip(WEIGHT_FIELDS, (w_ih, w_hh, b_ih, b_hh, w_hr)))
    if call_on_gpu(named):
        raise TypeError("pack_weights takes host arrays (NumPy, lists, CPU tensors); the packed layouts are "
                        "for the CPU backends")
    named = to_host(named)
    arrays, dtype = as_float_arrays(named)
    w_ih = arrays["w_ih"]
    if w_ih is None or w_ih.ndim != 2:
        raise ValueError(f"w_ih must be 2-D (G*H, I), got {None if w_ih is None else w_ih.shape}")
    # the call's own checks, on a one-step input of the weights' input size
    seq, _ = validate_sequence(cell, np.zeros((1, 1, w_ih.shape[1]), dtype), w_ih, arrays["w_hh"],
                               arrays["b_ih"], arrays["b_hh"], None, None, batch_first=False, lengths=None,
                               variant=_DEFAULT_VARIANT[cell], w_hr=arrays["w_hr"])
    copies = {name: None if getattr(seq, name) is None else np.array(getattr(seq, name), order="C", copy=True)
              for name in WEIGHT_FIELDS}
    return PackedWeights(cell, copies)


class PackedSlot:
    """One kernel's packed weights for one call: ``buffer`` is the snapshot's stored copy (``ready``:
    the kernel skips its packing) or else ``make()``, a new buffer the kernel packs into, which
    ``keep()`` stores in the snapshot after the call (when the call runs on one)."""

    def __init__(self, seq, key: str, make):
        stored = seq.packed.packed(key) if seq.packed is not None else None
        self.ready = stored is not None
        self.buffer = stored if self.ready else make()
        self._snapshot, self._key = seq.packed, key

    def keep(self) -> None:
        if self._snapshot is not None and not self.ready:
            self._snapshot.keep(self._key, self.buffer)
