"""Where a Numba CPU kernel spends its time: Linux `perf` samples mapped to the compiled functions.

    python benchmarks/perf_numba.py lstm 512 8 128 [--mode fwdbwd] [--seconds 6] [--offsets gemm_chunk]

perf cannot name JIT code (it shows `[JIT] 0x7f...`), so this script compiles the kernels afresh in a
child process (a private NUMBA_CACHE_DIR: code loaded from Numba's cache keeps no symbol table), writes
the address of every function of the kernels' libraries, records the child's steady-state calls
with `perf record -p`, and sums the samples per function (each sample goes to the function with the
nearest lower address). `--offsets NAME` also lists the hottest offsets inside the functions whose
name contains NAME, and writes their first 8 KiB of machine code to /tmp/fastrnn-perf/NAME.bin
(`objdump -D -b binary -m i386:x86-64` it). Needs `perf` allowed to sample user code
(perf_event_paranoid <= 2); kernel time (page faults) is not attributed.
"""
from __future__ import annotations

import argparse
import bisect
import collections
import os
import re
import shutil
import subprocess
import sys
import time

WORK = "/tmp/fastrnn-perf"


def child(args):
    import ctypes

    import numpy as np

    import fastrnn
    from fastrnn.backends import _numba_cpu_kernels as kernels

    rng = np.random.default_rng(0)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[args.cell]
    T, B, H = args.T, args.B, args.H
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    w = rng.uniform(-0.1, 0.1, (G * H, H)).astype(np.float32)
    packed = fastrnn.pack_weights(args.cell, w, w, w[:, 0].copy(), w[:, 1].copy())
    if args.mode == "fwd":
        def call():
            getattr(fastrnn, args.cell)(x, packed, backend=args.backend)
    else:
        forward, backward = getattr(fastrnn, args.cell + "_forward"), getattr(fastrnn, args.cell + "_backward")
        dy = rng.standard_normal((T, B, H), dtype=np.float32)

        def call():
            backward(forward(x, packed, backend=args.backend)[-1], dy)
    for _ in range(3):
        call()
    symbols = []
    for dispatcher in (kernels.forward, kernels.backward, kernels.gemm, kernels.forward_gru_cho,
                       kernels.backward_gru_cho):
        for compiled in dispatcher.overloads.values():
            library = compiled.library
            for function in library._final_module.functions:
                if not function.is_declaration:
                    address = library.get_pointer_to_function(function.name)
                    if address:
                        symbols.append((address, function.name))
    symbols.sort()
    with open(os.path.join(WORK, "symbols.txt"), "w") as f:
        for address, name in symbols:
            f.write(f"{address:x} {name}\n")
            if args.offsets and args.offsets in name:
                with open(os.path.join(WORK, args.offsets + ".bin"), "wb") as code:
                    code.write(ctypes.string_at(address, 8192))
    print("READY", flush=True)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds + 2:
        call()
        calls += 1
    print(f"{(time.perf_counter() - start) / calls * 1e3:.3f} ms a call", flush=True)


def short_name(mangled):
    """fastrnn8backends12_numba_tiles10gemm_chunkB3v20B44c8tJ... -> _numba_tiles.gemm_chunk"""
    name = re.sub(r"B\d+v\d+B.*", "", re.sub(r"^_ZN", "", mangled))
    parts, rest = [], name
    while (m := re.match(r"(\d+)(.*)", rest)) and int(m.group(1)) <= len(m.group(2)):
        n = int(m.group(1))
        parts.append(m.group(2)[:n])
        rest = m.group(2)[n:]
    return ".".join(parts[-2:]) if parts else mangled[:60]


def report(args):
    lines = [line.split(None, 1) for line in open(os.path.join(WORK, "symbols.txt"))]
    addresses, names = [int(a, 16) for a, _ in lines], [n.strip() for _, n in lines]
    out = subprocess.run(["perf", "report", "-i", os.path.join(WORK, "perf.data"), "--stdio", "--sort", "dso,sym"],
                         capture_output=True, text=True).stdout
    per_function, per_offset = collections.Counter(), collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S.*?)\s+\[\.\]\s+(\S+)", line)
        if not m:
            continue
        share, dso, symbol = float(m.group(1)), m.group(2).strip(), m.group(3)
        if "JIT" in dso and symbol.startswith("0x"):
            address = int(symbol, 16)
            i = bisect.bisect_right(addresses, address) - 1
            name = short_name(names[i]) if i >= 0 else "?"
            per_function[name] += share
            if args.offsets and i >= 0 and args.offsets in names[i]:
                per_offset[(name, address - addresses[i])] += share
        else:
            per_function[f"{dso} {symbol}"] += share
    print("share of samples (both threads) by function:")
    for name, share in per_function.most_common(14):
        print(f"{share:6.2f}%  {name}")
    if per_offset:
        print(f"hottest offsets in *{args.offsets}*:")
        for (name, offset), share in per_offset.most_common(16):
            print(f"{share:6.2f}%  {name} +{offset:#x}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cell", choices=["lstm", "gru", "rnn"])
    parser.add_argument("T", type=int)
    parser.add_argument("B", type=int)
    parser.add_argument("H", type=int)
    parser.add_argument("--mode", choices=["fwd", "fwdbwd"], default="fwd")
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--offsets", default="")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    if args.child:
        return child(args)
    cache = os.path.join(WORK, "numba-cache")
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    proc = subprocess.Popen([sys.executable, __file__, "--child", *sys.argv[1:]], stdout=subprocess.PIPE, text=True,
                            env=env)
    for line in proc.stdout:
        if line.startswith("READY"):
            break
    subprocess.run(["perf", "record", "-q", "-p", str(proc.pid), "-o", os.path.join(WORK, "perf.data"), "--",
                    "sleep", str(args.seconds)], check=True, stderr=subprocess.DEVNULL)
    print(proc.stdout.read().strip())
    proc.wait()
    report(args)


if __name__ == "__main__":
    main()
