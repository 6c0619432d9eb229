"""Timing primitives: quiet-waits, back-to-back repetitions, calibration, other processes' load."""
from __future__ import annotations

import gc
import math
import os
import time


def settle(max_wait: float = 1.0, window: float = 0.01) -> None:
    """Sleep until this process's threads stop using CPU, at most ``max_wait`` seconds.

    Thread pools spin-wait after a call (OpenMP runtimes, OpenBLAS, ORT): on a 2-core machine
    the pool of one competitor, still spinning for ~0.1 s, slowed the next one's calls
    several-fold. Waiting for quiet before every timing keeps competitors from slowing each other.
    """
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        before = time.process_time()
        time.sleep(window)
        if time.process_time() - before < 0.1 * window:
            return


def time_reps(run, reps: int, quiet: bool = True) -> float:
    """Seconds for ``reps`` back-to-back calls, garbage collector off; from a quiet process (settle)
    unless ``quiet`` is False (a repeat of the same competitor: no other pool ran in between).

    The collection before it covers the young generations only: the last calls' garbage is there,
    and a full one costs ~0.15 s once torch, onnx and numba are loaded (250k objects)."""
    gc.collect(1)
    if quiet:
        settle()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(reps):
            run()
        return time.perf_counter() - start
    finally:
        gc.enable()


def calibrate(run, min_time: float) -> int:
    """Repetitions for one timing to last at least ``min_time``.

    Starts from the fastest of three single calls (one for a call that lasts ``min_time``), so
    that one slow outlier call cannot leave a fast competitor with too few repetitions.
    """
    per_call = time_reps(run, 1)
    if per_call >= min_time:
        return 1
    per_call = min(per_call, time_reps(run, 1, quiet=False), time_reps(run, 1, quiet=False))
    reps = max(1, math.ceil(min_time / max(per_call, 1e-9)))
    while (elapsed := time_reps(run, reps, quiet=False)) < min_time:
        reps = math.ceil(1.2 * reps * min_time / max(elapsed, 1e-9))
    return reps


class OtherLoad:
    """Cores kept busy by everything but this process (other processes, hypervisor steal) while
    inside the block, from /proc/stat; None where there is no /proc/stat."""

    cores = None

    def __enter__(self):
        self.start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        if self.start and end and end[2] > self.start[2]:
            (busy0, own0, wall0), (busy1, own1, wall1) = self.start, end
            self.cores = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)

    @staticmethod
    def _sample():
        """(machine busy s, this process's CPU s, wall s)."""
        try:
            with open("/proc/stat") as f:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        except (OSError, ValueError):
            return None
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return busy, own.user + own.system, time.perf_counter()
