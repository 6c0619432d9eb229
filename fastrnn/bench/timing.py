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


def time_reps(run, reps: int, quiet: bool = True, warm_up: bool = False) -> float:
    """Seconds for ``reps`` back-to-back calls, garbage collector off; from a quiet process (settle)
    unless ``quiet`` is False (a repeat of the same competitor: no other pool ran in between).

    ``warm_up``: one untimed call after the quiet wait. The wait lets the competitor's own threads fall
    asleep too, and on the 2-core VM waking them took milliseconds now and then (an idle vCPU is
    descheduled by the host): numba calls of ~40 us timed at 3-12 ms when a timing held one call, and
    that first call also set the calibration to one call a timing. Steady back-to-back calls are what a
    timing measures; the latency after idle gaps is benchmarks/call_gaps.py's.

    The collection before it covers the young generations only: the last calls' garbage is there,
    and a full one costs ~0.15 s once torch, onnx and numba are loaded (250k objects)."""
    gc.collect(1)
    if quiet:
        settle()
        if warm_up:
            run()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(reps):
            run()
        return time.perf_counter() - start
    finally:
        gc.enable()


def calibrate(run, min_time: float, warm_up: bool = True) -> int:
    """Repetitions for one timing to last at least ``min_time``.

    Starts from the fastest of three single calls (one for a call that lasts ``min_time``), so
    that one slow outlier call cannot leave a fast competitor with too few repetitions; the first
    after a warm-up call (time_reps) unless ``warm_up`` is False.
    """
    per_call = time_reps(run, 1, warm_up=warm_up)
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
