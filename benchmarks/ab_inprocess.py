"""A code change timed against an earlier revision in ONE process: old and new calls alternated.

    python benchmarks/ab_inprocess.py [--old REV] [--backend numba] [--configs "512,1,128;16,8,256"]
                                      [--cells lstm,gru] [--modes fwd,fwdbwd] [--packed] [--rounds 9]
                                      [--processes 3] [--set NAME=VALUE ...]

Why: on the 2-core VM of these sessions the round trip between the cores flips between ~80 and
~450 ns from one minute to the next, and a process tends to see one state throughout; timing old and
new code in separate processes (even alternated, three rounds each) then compares two states, not two
versions (a change read 1.4x faster for the LSTM and 0.6x for the GRU in one such run, and the same
within 5% in one process). Here both versions run in the same process, round by round in turn
(ABBA order), so each round's pair sees the same machine. One process still places its arrays and
code once, and that alone moved a config's old/new by up to +-10% between processes whose rounds agreed
with each other; so the comparison runs in --processes fresh processes in turn, and the table gives the
median of their ratios and their spread (with --processes 1: that process's medians and the spread of its
rounds' ratios). Same code on both sides reads 0.95-1.05x on that VM; a config whose code path a change
did not touch once read 0.91x in all three processes (compiled code placed differently, the same way
every time), so a pattern across configs says more than one row.

How: ``git archive REV fastrnn`` is unpacked under the temporary directory as a package named
``fastrnn_<rev>`` (kept there, so its Numba cache survives between runs) and imported beside the
working tree's ``fastrnn``. The backend registry names its modules from its own package name, so the
copy runs its own kernels; for revisions from before that, the copy's registry is rewritten, and the
script checks that every backend module it loads is the copy's. The C++ extension is not rebuilt for
the old revision: "cpp" is not available to the copy unless ``--old-ext`` names a build of it (copy
``fastrnn/_ext*.so`` aside before rebuilding).
Both versions' results are compared (max relative difference), so a change that breaks the output is
seen here too. Compile time is excluded (three calls each before timing).

``--set NAME=VALUE`` changes a numeric setting of ``fastrnn.config`` for the new side only (each side has its
own config module): with ``--old HEAD`` and no code change, a setting against its default on the same code
(`--set CHUNK_BYTES=524288`), which separate processes could not compare on that VM either.
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPIES = os.path.join(tempfile.gettempdir(), "fastrnn-ab")      # where revisions' copies are unpacked


def old_package(rev: str) -> str:
    """Unpack ``rev``'s fastrnn as fastrnn_<sha> under the temporary directory (once) and import it; its name."""
    sha = subprocess.run(["git", "rev-parse", "--short=10", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    name = f"fastrnn_{sha}"
    target = os.path.join(COPIES, name)
    if not os.path.isdir(target):
        archive = subprocess.run(["git", "archive", "--format=tar", sha, "fastrnn"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        os.makedirs(COPIES, exist_ok=True)
        staging = tempfile.mkdtemp(dir=COPIES)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(staging, filter="data")
        registry = os.path.join(staging, "fastrnn", "backends", "__init__.py")
        with open(registry) as f:         # revisions whose registry named "fastrnn.backends..." outright
            text = f.read().replace('"fastrnn.backends.', f'"{name}.backends.').replace('"fastrnn._ext"',
                                                                                      f'"{name}._ext"')
        with open(registry, "w") as f:
            f.write(text)
        try:
            os.replace(os.path.join(staging, "fastrnn"), target)
        except OSError:                   # another run unpacked it meanwhile
            if not os.path.isdir(target):
                raise
        shutil.rmtree(staging)
    if COPIES not in sys.path:
        sys.path.append(COPIES)
    return name


def install_ext(name: str, so_path) -> None:
    """Put a built C++ extension into the copy ``name`` (its init function is PyInit__ext whatever the
    package is called); None: leave the copy without one."""
    if so_path is None:
        return
    if not os.path.basename(so_path).startswith("_ext."):
        raise SystemExit(f"--old-ext: expected a file named _ext.*.so, got {so_path}")
    shutil.copyfile(so_path, os.path.join(COPIES, name, os.path.basename(so_path)))


def check_own_modules(package, name: str) -> None:
    """Fail if any of ``package``'s backends would load code from outside it."""
    for backend in package.backends.registered_backends().values():
        if not backend.module.startswith(name + "."):
            raise SystemExit(f"{name}: backend {backend.name!r} loads {backend.module}, not the copy's own module")


def apply_settings(config, settings) -> None:
    """NAME=VALUE items set on ``config`` (a fastrnn.config module), each a numeric setting it has."""
    for item in settings:
        name, sep, value = item.partition("=")
        current = getattr(config, name, "") if name.isupper() else ""      # (lower case: functions)
        if not sep or isinstance(current, bool) or not isinstance(current, (int, float, type(None))):
            raise SystemExit(f"--set takes NAME=VALUE, NAME a numeric setting of fastrnn.config; got {item!r}")
        kind = int if current is None else type(current)        # (None: an optional count, unset)
        try:
            setattr(config, name, kind(value))
        except ValueError:
            raise SystemExit(f"--set {name}: {value!r} is not a {kind.__name__}") from None


def settings_note(settings) -> str:
    return f" with {', '.join(settings)}" if settings else ""


def problem(cell: str, T: int, B: int, H: int, seed: int = 0):
    from fastrnn.cells import SPECS        # (the working tree's, once main has put it first on the path)
    G = SPECS[cell].num_gates
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    w_ih, w_hh = ((rng.standard_normal((G * H, H)) * H ** -0.5).astype(np.float32) for _ in range(2))
    b_ih, b_hh = ((rng.standard_normal(G * H) * 0.1).astype(np.float32) for _ in range(2))
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    return x, (w_ih, w_hh, b_ih, b_hh), dy


def call(package, cell: str, mode: str, backend: str, packed: bool, x, weights, dy):
    """A function that runs one call of ``mode`` with ``package`` and returns its results."""
    if mode == "fwd":
        run = getattr(package, cell)
        args = (package.pack_weights(cell, *weights),) if packed else weights
        return lambda: run(x, *args, backend=backend)
    forward, backward = getattr(package, f"{cell}_forward"), getattr(package, f"{cell}_backward")

    def forward_backward():
        y, _, tape = forward(x, *weights, backend=backend)
        return (y,) + tuple(backward(tape, dy))
    return forward_backward


def leaves(result):
    if isinstance(result, (tuple, list)):
        return [leaf for item in result for leaf in leaves(item)]
    return [np.asarray(result)] if result is not None else []


def max_rel_diff(a, b) -> float:
    worst = 0.0
    for u, v in zip(leaves(a), leaves(b)):
        if u.size:
            scale = max(float(np.abs(u).max()), 1e-30)
            worst = max(worst, float(np.abs(u.astype(np.float64) - v).max()) / scale)
    return worst


def timed(fn, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n / 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", default="HEAD", help="the revision to compare against (default HEAD)")
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--configs", default="16,1,128;512,1,128;128,8,256",
                        help='"T,B,H;..." (I = H, float32)')
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--modes", default="fwd,fwdbwd")
    parser.add_argument("--packed", action="store_true", help="forward on a pack_weights snapshot")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--block-ms", type=float, default=20.0, help="about this long a timed block of calls")
    parser.add_argument("--processes", type=int, default=3,
                        help="run the comparison in this many fresh processes, one after another (default 3)")
    parser.add_argument("--old-ext", metavar="SO",
                        help="a build of the old revision's C++ extension (fastrnn/_ext*.so, copied before "
                             "rebuilding the new one), put into its copy so that \"cpp\" can be compared")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a numeric setting of fastrnn.config for the new side only (repeatable)")
    parser.add_argument("--json", help=argparse.SUPPRESS)          # (a child's results, for its parent)
    args = parser.parse_args(argv)
    if args.processes > 1:
        return parent(args, argv if argv is not None else sys.argv[1:])

    sys.path.insert(0, ROOT)
    new = importlib.import_module("fastrnn")
    name = old_package(args.old)
    install_ext(name, args.old_ext)
    old = importlib.import_module(name)
    check_own_modules(new, "fastrnn")
    check_own_modules(old, name)
    apply_settings(new.config, args.set)
    for label, package in (("the working tree", new), (f"the copy of {args.old}", old)):
        if args.backend not in package.available_backends():
            raise SystemExit(f"backend {args.backend!r} is not available to {label}"
                             + (" (give --old-ext a build of its C++ extension)" if package is old else ""))
    if args.json is None:
        print(f"old: {args.old} ({name}, {os.path.dirname(old.__file__)}); new: the working tree "
              f"({os.path.dirname(new.__file__)}{settings_note(args.set)}); backend {args.backend}, {args.rounds} "
              f"rounds, one process")
        print(HEADER)
    rows = []
    for cell in args.cells.split(","):
        for config in args.configs.split(";"):
            T, B, H = (int(v) for v in config.split(","))
            x, weights, dy = problem(cell, T, B, H)
            for mode in args.modes.split(","):
                fns = {label: call(package, cell, mode, args.backend, args.packed, x, weights, dy)
                       for label, package in (("old", old), ("new", new))}
                results = {label: [fn() for _ in range(3)][-1] for label, fn in fns.items()}   # compile, warm
                once = timed(fns["new"], 1)
                n = max(1, int(args.block_ms * 1e3 / max(once, 1e-3)))
                times = {"old": [], "new": []}
                for r in range(args.rounds):
                    for label in (("old", "new") if r % 2 == 0 else ("new", "old")):
                        times[label].append(timed(fns[label], n))
                ratios = [o / w for o, w in zip(times["old"], times["new"])]
                row = dict(cell=cell, mode=mode, T=T, B=B, H=H, old_us=float(np.median(times["old"])),
                           new_us=float(np.median(times["new"])), low=min(ratios), high=max(ratios),
                           diff=max_rel_diff(results["old"], results["new"]))
                rows.append(row)
                if args.json is None:
                    print(table_row(row, row["old_us"] / row["new_us"]), flush=True)
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(rows, f)
    return 0


HEADER = ("| cell | mode | T | B | H | old us | new us | old/new | spread of old/new | max rel diff |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def table_row(row, ratio) -> str:
    return (f"| {row['cell']} | {row['mode']} | {row['T']} | {row['B']} | {row['H']} | {row['old_us']:.1f} | "
            f"{row['new_us']:.1f} | **{ratio:.3f}x** | {row['low']:.2f}..{row['high']:.2f} | {row['diff']:.1e} |")


def parent(args, argv) -> int:
    """The comparison in ``args.processes`` fresh processes, one after another: a process places its
    arrays and code once, and on this VM that alone moved a config's old/new by up to +-10% in one
    process while its rounds agreed; the table gives per config the median over the processes of
    their ratios (old us, new us: medians of theirs), and the spread: the processes' ratios, min..max."""
    install_ext(old_package(args.old), args.old_ext)   # (once, before the children race for it)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.processes):
            out = os.path.join(tmp, f"{i}.json")
            subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--processes", "1", "--json", out],
                           check=True)
            with open(out) as f:
                runs.append(json.load(f))
    print(f"old: {args.old}; new: the working tree{settings_note(args.set)}; backend {args.backend}; "
          f"{args.processes} processes of {args.rounds} rounds each, old and new alternated in each")
    print(HEADER)
    for rows in zip(*runs):
        ratios = [row["old_us"] / row["new_us"] for row in rows]
        merged = dict(rows[0], old_us=float(np.median([row["old_us"] for row in rows])),
                      new_us=float(np.median([row["new_us"] for row in rows])), low=min(ratios), high=max(ratios),
                      diff=max(row["diff"] for row in rows))
        print(table_row(merged, float(np.median(ratios))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
