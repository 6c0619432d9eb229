"""Measuring one grid: every config (cell, mode, dtype, T, B, H; input size = H; with --proj-size, LSTMs
with projections of that size P) runs these steps,
all competitors built from the same arrays (see anchors.py); mode fwd is inference, fwdbwd is forward
then backward of (y * dy).sum().

1. Probe. Each competitor is built for the first PROBE_STEPS time steps of the problem (same B, I,
   H) and called three times. The first call is reported as "first call": for fastrnn that is its JIT
   compile (or disk-cache load) plus a tiny run, kept out of every timing below (a kernel that only
   larger sizes use compiles in the first full call of step 2, also reported and kept out). The faster of the
   next two, scaled by T / PROBE_STEPS, estimates one full call; a config where a competitor's
   estimate exceeds ``max_call`` seconds is skipped. A competitor that is not installed, or fails to
   build or run, is recorded as skipped with the reason.
2. Correctness. Each competitor's y, and in mode fwdbwd its dL/dW_hh, against the oracle's: torch's
   when torch runs, else the NumPy reference's (computed untimed when it is not a competitor):
   max|a-b|/max|b|, flagged above anchors.TOLERANCE. This is also every competitor's first full call.
3. Calibration. Repetitions per timing such that one timing lasts at least ``min_time`` seconds.
4. Rounds. In each of ``rounds`` rounds every competitor is timed once, interleaved (A B C A B C ...),
   so the drifts of a shared, noisy machine reach all of them alike; per-call time = timing /
   repetitions. Recorded: median over rounds, min-max spread, time per step, GFLOP/s of the median
   (anchors.flops), and ratio = best anchor's median / fastrnn's median (> 1: fastrnn is faster);
   and a round trip between two threads before and after the rounds (on the CPU; on a VM it moved
   between ~80 and ~450 ns from minute to minute, and small steps' times with it).

Every timing starts once this process is quiet (timing.settle), then one untimed call of the
competitor (its threads, asleep after the wait, awake; not for calls over WARM_UP_MAX_S), with the
garbage collector off; on the GPU every call ends with a device synchronise. The cores other processes used during a config's
rounds are measured from /proc/stat ("other load"); a row above NOISY_LOAD is unreliable.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import sys
import time
from typing import Callable, Optional

from . import anchors
from .timing import OtherLoad, calibrate, time_reps

PROBE_STEPS = 4
NOISY_LOAD = 0.25       # cores used by other processes during a config's rounds that flag it as noisy
WARM_UP_MAX_S = 0.2     # calls estimated longer than this start their timings without an untimed call
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
KEY = ("cell", "mode", "dtype", "device", "T", "B", "H", "P")      # what identifies a config across runs


@dataclasses.dataclass
class Settings:
    cells: list
    modes: list
    dtypes: list
    seq_lens: list
    batch: list
    hidden: list
    backends: list          # fastrnn backends
    against: list           # anchors
    device: str = "cpu"
    threads: int = 1
    rounds: int = 3
    min_time: float = 0.02
    max_call: float = 20.0
    budget_s: float = float("inf")
    packed_weights: bool = False    # also time fastrnn's forward on pack_weights snapshots (fastrnn[b+packed])
    proj_size: int = 0              # P > 0: LSTMs with projections of size P (torch's proj_size; ORT has none)

    def grid(self) -> list[tuple]:
        """(cell, mode, dtype, T, B, H), T varying fastest so that a plot's line fills in order."""
        product = itertools.product(self.cells, self.modes, self.dtypes, self.hidden, self.batch, self.seq_lens)
        return [(cell, mode, dtype, T, B, H) for cell, mode, dtype, H, B, T in product]

    def competitors(self) -> list[str]:
        packed = (True, False) if self.packed_weights else (False,)
        return [*self.against, *(anchors.fastrnn_name(b, p) for b in self.backends for p in packed)]

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if out["budget_s"] == float("inf"):
            out["budget_s"] = None
        return out


def config_label(cell, mode, dtype, T, B, H) -> str:
    return f"{cell} {mode} {dtype} T={T} B={B} H={H}"


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."


class ThreadLimits:
    """--threads for everything that runs: environment variables for libraries not loaded yet,
    fastrnn.config.THREADS, numba's and torch's pools if loaded (restored on exit), numpy's BLAS through
    threadpoolctl."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        saved = {var: os.environ.get(var) for var in THREAD_VARS}
        self.restore = [lambda: _restore_env(saved)]
        for var in THREAD_VARS:
            os.environ[var] = str(self.threads)
        from .. import config      # fastrnn's own kernels (cpp reads OMP_NUM_THREADS only once)
        previous_config = config.THREADS
        config.THREADS = self.threads
        self.restore.append(lambda: setattr(config, "THREADS", previous_config))
        numba = sys.modules.get("numba")
        if numba is not None:
            previous = numba.get_num_threads()
            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
            self.restore.append(lambda: numba.set_num_threads(previous))
        torch = sys.modules.get("torch")
        if torch is not None:
            previous_torch = torch.get_num_threads()
            self.restore.append(lambda: torch.set_num_threads(previous_torch))
        try:
            from threadpoolctl import threadpool_limits
            self.blas = threadpool_limits(self.threads)
            self.restore.append(self.blas.restore_original_limits)
        except ImportError:
            pass
        return self

    def __exit__(self, *exc):
        for undo in reversed(self.restore):
            undo()


def _restore_env(saved: dict) -> None:
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def _probe(problem, mode, names, settings, record) -> dict:
    """Name -> (first call s, estimated full call s) for the competitors that build and run."""
    short = problem.prefix(min(problem.T, PROBE_STEPS))
    out = {}
    for name in names:
        try:
            run = anchors.build(name, short, mode, settings.device, settings.threads)
            first = time_reps(run, 1)
            steady = min(time_reps(run, 1, quiet=False) for _ in range(2))
        except Exception as exc:          # noqa: BLE001 - any failure of a competitor is reported, not fatal
            record["skipped_competitors"][name] = _reason(exc)
            continue
        out[name] = first, steady * problem.T / short.T
    return out


def _round_trip_ns(settings) -> Optional[float]:
    """A round trip between two threads now (ns; CPU runs of 2+ threads): on a VM it moves several-fold
    from minute to minute, and small steps split between cores with it (fastrnn/backends/_workers.py)."""
    if settings.device != "cpu" or settings.threads < 2:
        return None
    from fastrnn.backends import _workers
    return _workers._measure()


def _oracle(runners, outputs, problem, mode, settings):
    """The output the others are checked against: torch's, else the reference's (untimed if needed)."""
    for name in ("torch", "reference"):
        if name in outputs:
            return name, outputs[name]
    run = anchors.build("reference", problem, mode, "cpu", settings.threads)
    return "reference (untimed)", run()


def run_config(cfg: tuple, settings: Settings) -> dict:
    """Measure one config; returns its record ("skipped" set when the whole config was skipped)."""
    cell, mode, dtype, T, B, H = cfg
    problem = anchors.make_problem(cell, T, B, H, dtype=dtype, proj_size=settings.proj_size)
    record = dict(cell=cell, mode=mode, dtype=dtype, device=settings.device, T=T, B=B, I=problem.I, H=H,
                  P=problem.P, gflop=problem.flops(mode) / 1e9, competitors={}, skipped_competitors={}, errors={})

    names = []
    for name in settings.competitors():
        if name in anchors.ANCHORS:
            if not anchors.applies(name, mode, settings.device, problem.P is not None):
                continue
            reason = anchors.anchor_missing(name, settings.device)
        else:
            backend, packed = anchors.fastrnn_backend(name)
            if packed and mode != "fwd":
                continue
            reason = anchors.backend_missing(backend)
        if reason is None:
            names.append(name)
        else:
            record["skipped_competitors"][name] = reason

    probed = _probe(problem, mode, names, settings, record)
    if too_slow := {n: est for n, (_, est) in probed.items() if est > settings.max_call}:
        slow = ", ".join(f"{n} ~{est:.3g} s" for n, est in too_slow.items())
        record["skipped"] = f"estimated call {slow} > --max-call {settings.max_call:g} s"
        return record

    runners, outputs, first_full = {}, {}, {}
    for name in probed:
        try:
            runners[name] = anchors.build(name, problem, mode, settings.device, settings.threads)
            started = time.perf_counter()
            outputs[name] = runners[name]()
            first_full[name] = time.perf_counter() - started
        except Exception as exc:          # noqa: BLE001
            runners.pop(name, None)
            record["skipped_competitors"][name] = _reason(exc)
    if not runners:
        record["skipped"] = "no competitor ran"
        return record
    record["oracle"], reference = _oracle(runners, outputs, problem, mode, settings)
    record["errors"] = {name: anchors.errors(out, reference) for name, out in outputs.items()
                        if name != record["oracle"]}
    del outputs, reference

    # each timing starts with an untimed call (timing.time_reps) unless a call is long anyway
    warm = {name: probed[name][1] < WARM_UP_MAX_S for name in runners}
    reps = {name: calibrate(run, settings.min_time, warm[name]) for name, run in runners.items()}
    samples = {name: [] for name in runners}
    cores_before = _round_trip_ns(settings)
    with OtherLoad() as other:
        for _ in range(settings.rounds):
            for name, run in runners.items():
                samples[name].append(time_reps(run, reps[name], warm_up=warm[name]) / reps[name])
    record["other_load_cores"] = other.cores
    record["round_trip_ns"] = [cores_before, _round_trip_ns(settings)]

    for name, times in samples.items():
        median = statistics.median(times)
        record["competitors"][name] = dict(
            median_ms=median * 1e3, min_ms=min(times) * 1e3, max_ms=max(times) * 1e3,
            us_per_step=median * 1e6 / T, gflops=record["gflop"] / median, reps=reps[name],
            first_call_ms=probed[name][0] * 1e3, first_full_call_ms=first_full[name] * 1e3,
            estimate_s=probed[name][1],
            samples_ms=[t * 1e3 for t in times])
    timed_anchors = [a for a in anchors.ANCHORS if a in samples]
    if timed_anchors:
        record["best_anchor"] = min(timed_anchors, key=lambda a: record["competitors"][a]["median_ms"])
        best_ms = record["competitors"][record["best_anchor"]]["median_ms"]
        record["ratio"] = {anchors.fastrnn_label(name): best_ms / c["median_ms"]
                           for name, c in record["competitors"].items() if name.startswith("fastrnn[")}
    return record


def run(settings: Settings, on_start: Optional[Callable] = None, on_done: Optional[Callable] = None,
        results: Optional[list] = None) -> list:
    """Every config of the grid in order, appended to ``results`` (kept if interrupted) and returned;
    ``on_start(label)`` and ``on_done(record)`` report progress."""
    anchors.prepare(settings.device, settings.threads, settings.against)
    started, results = time.perf_counter(), [] if results is None else results
    for cfg in settings.grid():
        if on_start:
            on_start(config_label(*cfg))
        if time.perf_counter() - started > settings.budget_s:
            cell, mode, dtype, T, B, H = cfg
            record = dict(cell=cell, mode=mode, dtype=dtype, device=settings.device, T=T, B=B, H=H,
                          skipped=f"time budget (--budget-s {settings.budget_s:g}) spent")
        else:
            config_started = time.perf_counter()
            record = run_config(cfg, settings)
            anchors.release(settings.device)
            record["wall_s"] = time.perf_counter() - config_started
        results.append(record)
        if on_done:
            on_done(record)
    return results
