"""fastrnn against PyTorch and ONNX Runtime on the CPU: one LSTM/GRU layer, float32, input size = H.

    python benchmarks/compare_cpu.py --quick
    python benchmarks/compare_cpu.py --cells lstm --hidden 256,1024 --out cpu.md --json cpu.json

Every config (cell, mode, T, B, H) runs these steps, all competitors built from the same arrays
(benchmarks/anchors.py); mode fwd is inference, fwdbwd is forward then backward of (y * dy).sum().

1. Probe. Each competitor is built for the first PROBE_STEPS time steps of the problem (same B, I,
   H) and called three times. The first call is reported as "first call": for fastrnn that is its JIT
   compile time (once per signature and process) plus a tiny run, kept out of every timing below.
   The faster of the next two, scaled by T / PROBE_STEPS, estimates one full call; a config where some
   competitor's estimate exceeds --max-call seconds is skipped.
2. Correctness. Each competitor's y, and for fwdbwd its dL/dW_hh, against torch's: max|a-b|/max|b|,
   flagged above anchors.TOLERANCE. This is also every competitor's first full-size call.
3. Calibration. The repetitions per timing are set so that one timing (that many back-to-back
   calls) lasts at least --min-time seconds.
4. Rounds. In each of --rounds rounds every competitor is timed once, in interleaved order
   (A B C A B C ...), so the drifts of a shared, noisy machine reach all of them alike; per-call
   time = timing / repetitions. Reported: the median over rounds, the min-max spread, GFLOP/s of
   the median (anchors.flops), and ratio = best anchor's median / fastrnn's median (> 1: fastrnn is
   faster), the best anchor being the faster of torch and ORT for fwd and torch for fwdbwd.

Every timing (probe calls included) starts once this process is quiet (see settle: a thread pool
spinning after one competitor's calls would slow the next), with the garbage collector off. The
cores that other processes used during a config's rounds are measured from /proc/stat and
reported as "other load"; a row above NOISY_LOAD was timed on a busy machine and is unreliable.

Threads: --threads goes to OMP/OpenBLAS/MKL/NUMBA_NUM_THREADS before torch and numba load (fastrnn
and anchors import them lazily), to torch.set_num_threads, to ORT's intra-op threads (inter-op 1)
and, through threadpoolctl, to numpy's BLAS. A requested fastrnn backend that is not available is
replaced by "reference", with a warning.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time

from threadpoolctl import threadpool_info, threadpool_limits

import anchors
import fastrnn

PROBE_STEPS = 4
NOISY_LOAD = 0.25       # cores used by other processes during a config's rounds that flag it as noisy
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
FULL_GRID = dict(seq_lens=[16, 128, 512], batch=[1, 8, 64], hidden=[128, 256, 512, 1024])
QUICK_GRID = dict(seq_lens=[16], batch=[1, 8], hidden=[64, 128])


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=_names, default=["lstm", "gru"], help="lstm,gru")
    parser.add_argument("--seq-lens", type=_ints, help=f"T values (default {FULL_GRID['seq_lens']})")
    parser.add_argument("--batch", type=_ints, help=f"B values (default {FULL_GRID['batch']})")
    parser.add_argument("--hidden", type=_ints,
                        help=f"H values, also the input size (default {FULL_GRID['hidden']})")
    parser.add_argument("--mode", type=_names, default=list(anchors.MODES), help="fwd,fwdbwd")
    parser.add_argument("--backends", type=_names, default=["numba"], help="fastrnn backends to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds one timing lasts at least")
    parser.add_argument("--max-call", type=float, default=20.0,
                        help="skip configs where a competitor's estimated single call exceeds this (s)")
    parser.add_argument("--out", help="write the markdown report here")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--quick", action="store_true", help=f"tiny default grid {QUICK_GRID}")
    args = parser.parse_args(argv)
    if bad := set(args.cells) - set(anchors.GATES):
        parser.error(f"--cells: {sorted(bad)} not in {list(anchors.GATES)}")
    if bad := set(args.mode) - set(anchors.MODES):
        parser.error(f"--mode: {sorted(bad)} not in {list(anchors.MODES)}")
    grid = QUICK_GRID if args.quick else FULL_GRID
    for key, default in grid.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    return args


# ----------------------------------------------------------------------------- machine

def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(threads: int) -> dict:
    blas = [f"{i['internal_api']} {i.get('version')}" for i in threadpool_info() if i["user_api"] == "blas"]
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        **{pkg: _version(pkg) for pkg in ("numpy", "numba", "torch", "onnxruntime", "onnx", "fastrnn")},
        "numpy_blas": ", ".join(blas) or "unknown",
        "load_average_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def numba_threading_layer() -> str:
    """The layer numba picked, known once a parallel kernel has run."""
    numba = sys.modules.get("numba")
    if numba is None:
        return "numba not loaded"
    try:
        return numba.threading_layer()
    except ValueError:
        return "no parallel kernel ran"


# ----------------------------------------------------------------------------- timing

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


def time_reps(run, reps: int) -> float:
    """Seconds for ``reps`` back-to-back calls, from a quiet process, garbage collector off."""
    gc.collect()
    settle()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(reps):
            run()
        return time.perf_counter() - start
    finally:
        gc.enable()


class OtherLoad:
    """Cores kept busy by everything but this process (other processes, hypervisor steal) while
    inside the block, from /proc/stat; None where there is no /proc/stat."""

    def __enter__(self):
        self.start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        self.cores = None
        if self.start and end:
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


def calibrate(run, min_time: float) -> int:
    """Repetitions for one timing to last at least ``min_time``.

    Starts from the fastest of three single calls (one for calls over a second), so that one
    slow outlier call cannot leave a fast competitor with too few repetitions.
    """
    per_call = time_reps(run, 1)
    if per_call < 1.0:
        per_call = min(per_call, time_reps(run, 1), time_reps(run, 1))
    reps = max(1, math.ceil(min_time / per_call))
    while (elapsed := time_reps(run, reps)) < min_time:
        reps = math.ceil(1.2 * reps * min_time / elapsed)
    return reps


def probe(problem, mode, backends, threads) -> dict[str, tuple[float, float]]:
    """Name -> (first call s, estimated full call s), from a PROBE_STEPS-step prefix of ``problem``."""
    short = problem.prefix(min(problem.T, PROBE_STEPS))
    out = {}
    for name, run in anchors.competitors(short, mode, backends, threads).items():
        first = time_reps(run, 1)
        steady = min(time_reps(run, 1) for _ in range(2))
        out[name] = first, steady * problem.T / short.T
    return out


def run_config(cell, mode, T, B, H, backends, args) -> dict:
    """Measure one config; returns its result record (with "skipped" set when it was skipped)."""
    problem = anchors.make_problem(cell, T, B, H)
    record = dict(cell=cell, mode=mode, T=T, B=B, I=problem.I, H=H, gflop=problem.flops(mode) / 1e9)
    label = f"{cell} {mode} T={T} B={B} H={H}"
    probed = probe(problem, mode, backends, args.threads)
    if too_slow := {n: est for n, (_, est) in probed.items() if est > args.max_call}:
        slow = ", ".join(f"{n} ~{est:.3g} s" for n, est in too_slow.items())
        record["skipped"] = f"estimated call {slow} > {args.max_call:g} s"
        print(f"skip {label}: {record['skipped']}", flush=True)
        return record

    print(f"{label}  ({record['gflop']:.4g} GFLOP per call)", flush=True)
    runners = anchors.competitors(problem, mode, backends, args.threads)
    record["errors"] = anchors.check(runners)
    reps = {name: calibrate(run, args.min_time) for name, run in runners.items()}
    samples = {name: [] for name in runners}
    with OtherLoad() as other:
        for _ in range(args.rounds):
            for name, run in runners.items():
                samples[name].append(time_reps(run, reps[name]) / reps[name])
    record["other_load_cores"] = other.cores

    record["competitors"] = {}
    for name, times in samples.items():
        median = statistics.median(times)
        record["competitors"][name] = dict(
            median_ms=median * 1e3, min_ms=min(times) * 1e3, max_ms=max(times) * 1e3,
            gflops=record["gflop"] / median, reps=reps[name], first_call_ms=probed[name][0] * 1e3,
            estimate_s=probed[name][1], samples_ms=[t * 1e3 for t in times])
    present = [a for a in anchors.ANCHORS[mode] if a in samples]
    record["best_anchor"] = min(present, key=lambda a: record["competitors"][a]["median_ms"])
    best_ms = record["competitors"][record["best_anchor"]]["median_ms"]
    record["ratio"] = {b: best_ms / record["competitors"][anchors.fastrnn_name(b)]["median_ms"]
                       for b in backends}
    print_config(record)
    return record


def print_config(record) -> None:
    width = max(map(len, record["competitors"]))
    for name, c in record["competitors"].items():
        print(f"  {name:<{width}}  median {c['median_ms']:10.4f} ms  [{c['min_ms']:.4f} - {c['max_ms']:.4f}]"
              f"  {c['gflops']:8.2f} GFLOP/s  first call {c['first_call_ms']:9.2f} ms  reps {c['reps']}",
              flush=True)
    for backend, ratio in record["ratio"].items():
        print(f"  {anchors.fastrnn_name(backend)}: {ratio:.3g}x the speed of {record['best_anchor']}")
    if (load := record["other_load_cores"]) is not None:
        noisy = "  ** NOISY: other processes competed for the CPUs **" if load > NOISY_LOAD else ""
        print(f"  other load during the rounds: {load:.2f} cores{noisy}", flush=True)
    for name, errs in record["errors"].items():
        flags = "  ** FLAG: above tolerance **" if max(errs.values()) > anchors.TOLERANCE else ""
        print(f"  error {name}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()) + flags, flush=True)


# ----------------------------------------------------------------------------- report

def _max_error(record) -> str:
    worst_name, worst = max(((n, max(e.values())) for n, e in record["errors"].items()),
                            key=lambda item: item[1], default=("", 0.0))
    return f"{worst:.1e} !{worst_name}" if worst > anchors.TOLERANCE else f"{worst:.1e}"


def report(machine_info, settings, results, backends) -> str:
    done = [r for r in results if "skipped" not in r]
    anchor_names = [a for a in ("torch", "ort") if any(a in r["competitors"] for r in done)]
    head = ["cell", "mode", "T", "B", "H"]
    for a in anchor_names:
        head += [f"{a} ms", f"{a} GF/s"]
    for b in backends:
        name = anchors.fastrnn_name(b)
        head += [f"{name} ms", f"{name} GF/s", f"{name} first call ms", f"{name} ratio"]
    head += ["best anchor", "max rel err", "other load"]
    rows = []
    for r in done:
        row = [r["cell"], r["mode"], r["T"], r["B"], r["H"]]
        for a in anchor_names:
            c = r["competitors"].get(a)
            row += [f"{c['median_ms']:.4g}", f"{c['gflops']:.3g}"] if c else ["-", "-"]
        for b in backends:
            c = r["competitors"][anchors.fastrnn_name(b)]
            row += [f"{c['median_ms']:.4g}", f"{c['gflops']:.3g}", f"{c['first_call_ms']:.4g}",
                    f"{r['ratio'][b]:.3g}"]
        load = r["other_load_cores"]
        row += [r["best_anchor"], _max_error(r),
                "-" if load is None else f"{load:.2f}" + (" !" if load > NOISY_LOAD else "")]
        rows.append(row)

    lines = ["# fastrnn CPU comparison", ""]
    lines += [f"- {key}: {value}" for key, value in {**machine_info, **settings}.items()]
    lines += ["", "Times are medians over rounds of the per-call time; ratio = best anchor's median / "
              "fastrnn's median (> 1: fastrnn is faster); first call = first call on a "
              f"{PROBE_STEPS}-step prefix (fastrnn: with its JIT compile, the first time a signature runs in "
              "this process); errors max|a-b|/max|b| against torch, "
              f"'!name' above {anchors.TOLERANCE:g}; other load = cores that other processes used during "
              f"the timing rounds ('!' above {NOISY_LOAD:g}: the row is unreliable).", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    skipped = [r for r in results if "skipped" in r]
    if skipped:
        lines += ["", "Skipped:", ""]
        lines += [f"- {r['cell']} {r['mode']} T={r['T']} B={r['B']} H={r['H']}: {r['skipped']}"
                  for r in skipped]
    return "\n".join(lines) + "\n"


def resolve_backends(requested) -> list[str]:
    available = fastrnn.available_backends()
    chosen = []
    for name in requested:
        if name not in available:
            print(f"warning: fastrnn backend {name!r} is not available here (available: {available}); "
                  f"timing 'reference' instead", flush=True)
            name = "reference"
        if name not in chosen:
            chosen.append(name)
    return chosen


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in THREAD_VARS:
        os.environ[var] = str(args.threads)
    if not anchors.HAVE_TORCH:
        sys.exit("torch is needed: it is the correctness reference and the main anchor")
    import torch  # only now: its OpenMP runtime reads OMP_NUM_THREADS when it loads
    torch.set_num_threads(args.threads)
    if not anchors.HAVE_ORT:
        print("note: onnx/onnxruntime not installed; ONNX Runtime is left out", flush=True)
    backends = resolve_backends(args.backends)

    machine_info = machine(args.threads)
    settings = dict(backends=",".join(backends), rounds=args.rounds, min_time_s=args.min_time,
                    max_call_s=args.max_call, dtype="float32", input_size="= H")
    print("\n".join(f"{k}: {v}" for k, v in {**machine_info, **settings}.items()), "\n", flush=True)

    grid = itertools.product(args.cells, args.mode, args.hidden, args.batch, args.seq_lens)
    with threadpool_limits(args.threads):
        results = [run_config(cell, mode, T, B, H, backends, args) for cell, mode, H, B, T in grid]

    machine_info["numba_threading_layer"] = numba_threading_layer()
    text = report(machine_info, settings, results, backends)
    print("\n" + text, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine_info, settings=settings, results=results), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
