"""Whether a step is worth splitting among the CPU kernels' workers (cpp and numba): its multiply-adds
against the cost of the sync a split adds to every step, which is a round trip between two cores.

That round trip is not a constant of the machine. On the 2-core VM of these sessions it moved between
~80 and ~450 ns from one minute to the next (the hypervisor placing the two vCPUs near or far), and
with it the best choice for small steps (cpp, T = 256, B = 1, one worker's time / two workers'):

    round trip    GRU H = 64   LSTM H = 64   GRU H = 128   LSTM H = 128   GRU H = 256
     80-200 ns    0.98-1.10    1.09-1.34     1.07-1.46     1.37-1.70      1.55-1.84
    370-490 ns    0.41-0.46    0.46-0.50     0.79-0.85     0.95-1.03      1.32-1.38

Two workers take about t1 / 2 + 2.5 round trips a step (t1: one worker's step), so they win when t1
exceeds ~5 round trips; at B = 1 one worker runs ~30 multiply-adds a ns, so the split pays from about
MACS_PER_ROUND_TRIP_NS multiply-adds a step per ns of round trip. round_trip_ns() measures it (two
Numba workers pass a token back and forth; ~0.3-1.5 ms) at most every PROBE_EVERY_S seconds, and
only for steps where the answer depends on it (SURE_SERIAL..SURE_PARALLEL multiply-adds). Where it
cannot measure (one thread), and wherever FASTRNN_PARALLEL_MIN_MACS is set, a fixed threshold decides.
A forked child (a DataLoader worker, say) keeps what its parent measured and never measures: Numba's
OpenMP layer terminates a child that opens a parallel region after its parent did.
"""
from __future__ import annotations

import math
import os
import threading
import time
from typing import Optional

import numpy as np

from .. import config

MACS_PER_ROUND_TRIP_NS = 150
DEFAULT_MIN_MACS = 32768          # the threshold when the round trip is unknown (~220 ns of it)
SURE_SERIAL = 60 * MACS_PER_ROUND_TRIP_NS      # below: one worker even at the fastest round trip seen
SURE_PARALLEL = 600 * MACS_PER_ROUND_TRIP_NS   # above: all of them even at the slowest
PROBE_EVERY_S = 10.0
_SHORT, _LONG = 32, 1056          # round trips of the two timed runs (their difference cancels the launch,
                                  # whose ~10-50 us would swamp fewer)
_MAX_SPINS = 1 << 22              # a worker's wait for the other before the probe gives up (~ms)

_state = {"at": -math.inf, "ns": None, "forked": False}
_probe_lock = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _state.update(forked=True))


def split_step(step_macs: int) -> bool:
    """Whether a step of ``step_macs`` multiply-adds runs on all workers (else on one)."""
    if config.PARALLEL_MIN_MACS is not None:
        return step_macs >= config.PARALLEL_MIN_MACS
    if step_macs < SURE_SERIAL:
        return False
    if step_macs >= SURE_PARALLEL:
        return True
    ns = round_trip_ns()
    return step_macs >= (DEFAULT_MIN_MACS if ns is None else MACS_PER_ROUND_TRIP_NS * ns)


def round_trip_ns() -> Optional[float]:
    """A recent measurement of a round trip between two of the kernels' threads (ns), or None where it
    cannot be taken (fewer than two threads). Re-measured when older than PROBE_EVERY_S; a call that
    finds another thread measuring takes the last value, and a forked child its parent's."""
    now = time.monotonic()
    if _state["forked"] or now - _state["at"] < PROBE_EVERY_S or not _probe_lock.acquire(blocking=False):
        return _state["ns"]
    try:
        _state["ns"], _state["at"] = _measure(), time.monotonic()
    finally:
        _probe_lock.release()
    return _state["ns"]


def _measure() -> Optional[float]:
    import numba

    from . import numba_cpu
    from ._numba_sync import ping_pong
    if numba.get_num_threads() < 2:
        return None
    token = np.zeros(2, np.int64)

    def seconds(rounds):
        token[:] = 0
        start = time.perf_counter()
        numba_cpu._locked_call(ping_pong, (token, rounds, _MAX_SPINS))
        elapsed = time.perf_counter() - start
        return elapsed if token[1] == 0 else math.inf      # a worker gave up: no partner ran beside it
    seconds(1)                      # (the first call compiles or loads the kernel)
    short, long = (min(seconds(n) for _ in range(3)) for n in (_SHORT, _LONG))
    if not math.isfinite(long):
        return None
    return max(long - short, 0.0) / (_LONG - _SHORT) * 1e9
