"""Smoke test of the C++ probes in benchmarks/cpp (tools to run by hand, not timings to track): each
compiles with the command in its header and prints its table."""
import pathlib
import platform
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def avx2_fma():
    try:
        return {"avx2", "fma"} <= set(pathlib.Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False


pytestmark = pytest.mark.skipif(shutil.which("g++") is None or platform.machine() not in ("x86_64", "AMD64")
                                or not avx2_fma(), reason="the probes are AVX2 + FMA programs built with g++")


def build(tmp_path, source, *flags, libraries=()):
    exe = tmp_path / pathlib.Path(source).stem
    command = ["g++", "-O2", "-std=c++17", "-mavx2", "-mfma", "-Wno-psabi", *flags, str(ROOT / source), *libraries,
               "-o", str(exe)]
    subprocess.run(command, check=True)
    return exe


def test_fma_peak_prints_percentiles(tmp_path):
    out = subprocess.run([build(tmp_path, "benchmarks/cpp/fma_peak.cpp", "-pthread"), "1", "0.05"],
                         capture_output=True, text=True, check=True).stdout
    assert "GFLOP/s per core p10" in out and "median" in out


def test_activations_probe_reports_cost_and_accuracy(tmp_path):
    exe = build(tmp_path, "benchmarks/cpp/activations.cpp", "-I", str(ROOT / "kernels" / "include"))
    out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    assert out.count("cycles per 8 units") == 3
    # the library's activations keep the accuracy the kernels' tests rely on (a few ulps)
    for name in ("library  tanh", "library  sigmoid"):
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert float(line.split("max ")[1].split(" ulp")[0]) < 4, line


def test_product_rate_prints_its_rates(tmp_path):
    exe = build(tmp_path, "benchmarks/cpp/product_rate.cpp", "-pthread", "-I", str(ROOT / "kernels" / "include"))
    out = subprocess.run([exe, "64", "16", "40"], capture_output=True, text=True, check=True).stdout
    assert "product 64 x 16 x 40" in out and "median" in out


def numpy_openblas():
    """NumPy's bundled OpenBLAS (numpy >= 2 wheels: numpy.libs/libscipy_openblas64_*.so), or None."""
    import numpy
    found = sorted((pathlib.Path(numpy.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas64_*.so"))
    return found[0] if found else None


@pytest.mark.skipif(numpy_openblas() is None, reason="this NumPy does not bundle libscipy_openblas64_")
def test_product_vs_openblas_prints_both_rates(tmp_path):
    lib = numpy_openblas()
    exe = build(tmp_path, "benchmarks/cpp/product_vs_openblas.cpp", "-pthread", "-I", str(ROOT / "kernels" / "include"),
                libraries=(str(lib), f"-Wl,-rpath,{lib.parent}"))
    out = subprocess.run([exe, "128", "16", "32", "16", "5"], capture_output=True, text=True, check=True).stdout
    assert "128 x 16 x 32 (H = 16), 1 thread(s)" in out and "fastrnn best" in out and "OpenBLAS best" in out
