"""The C++ side: its own test (ctest) built from kernels/, the binding's argument checks, and the
optional build (FASTRNN_NO_EXT=1, or no compiler, installs the pure-Python package without "cpp").

The "cpp" backend's results are checked with every other backend in test_backends.py.
"""
import multiprocessing
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import fastrnn

ROOT = Path(__file__).resolve().parents[1]
HAS_EXT = "cpp" in fastrnn.available_backends()
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="fastrnn._ext is not built here")


def _have_cxx() -> bool:
    return any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "c++", "g++", "clang++"))


@pytest.mark.skipif(shutil.which("cmake") is None or not _have_cxx(), reason="needs cmake and a C++ compiler")
def test_kernels_ctest(tmp_path):
    """Configure kernels/ on its own (as an embedding project would), build, run ctest: the kernels
    against a double-precision loop of the equations and central differences, every ISA this CPU has."""
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(ROOT / "kernels"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    result = subprocess.run(["ctest", "--output-on-failure"], cwd=build, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_ext
def test_binding_refuses_bad_arrays():
    from fastrnn import _ext
    T, B, I, H = 3, 2, 4, 5
    x = np.zeros((T, B, I), np.float32)
    w_ih, w_hh = np.zeros((4 * H, I), np.float32), np.zeros((4 * H, H), np.float32)
    h0 = c0 = np.zeros((B, H), np.float32)

    def call(**changes):
        args = dict(cell=0, x=x, w_ih=w_ih, w_hh=w_hh, b_ih=None, b_hh=None, h0=h0, c0=c0, lengths=None,
                    save=False, threads=1)
        args.update(changes)
        return _ext.forward(**args)

    call()
    with pytest.raises(TypeError, match="w_hh must have dtype float32"):
        call(w_hh=w_hh.astype(np.float64))
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        call(x=x.astype(np.int32))
    with pytest.raises(ValueError, match=r"w_ih must have shape \(20, 4\), got \(20, 3\)"):
        call(w_ih=w_ih[:, :3].copy())
    with pytest.raises(ValueError, match="w_ih must be C-contiguous"):
        call(w_ih=np.asfortranarray(w_ih))
    with pytest.raises(TypeError, match="h0 must be a NumPy array"):
        call(h0=[[0.0] * H] * B)
    with pytest.raises(ValueError, match="lengths must lie in"):
        call(lengths=np.array([0, 3], np.int64))
    with pytest.raises(ValueError, match="cell must be"):
        call(cell=7)
    size = _ext.packed_forward_size(0, x, w_ih, w_hh)
    assert size >= w_ih.size + w_hh.size
    call(packed=np.empty(size, np.float32))
    with pytest.raises(ValueError, match=rf"packed must have shape \({size},\), got \({size - 1},\)"):
        call(packed=np.empty(size - 1, np.float32))
    with pytest.raises(TypeError, match="packed must have dtype float32"):
        call(packed=np.empty(size, np.float64))
    read_only = np.empty(size, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="packed must be writeable"):
        call(packed=read_only)


@needs_ext
def test_nan_in_gives_nan_out():
    T, B, I, H = 4, 2, 3, 20
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    x[1, 0, 0] = np.nan
    y, (h_n, c_n) = fastrnn.lstm(x, rng.standard_normal((4 * H, I)).astype(np.float32),
                                 rng.standard_normal((4 * H, H)).astype(np.float32), backend="cpp")
    assert np.isnan(y[1:, 0]).all() and np.isnan(h_n[0]).all() and np.isnan(c_n[0]).all()
    assert np.isfinite(y[:, 1]).all() and np.isfinite(y[0]).all()


def _cpp_lstm(x, w_ih, w_hh):
    return fastrnn.lstm(x, w_ih, w_hh, backend="cpp")[0]


@needs_ext
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_runs_the_cpp_backend():
    """The kernels' thread pool does not survive fork() (its workers stay in the parent): a child, e.g. a
    DataLoader worker, starts its own and gets the parent's results, on a problem that takes 2 threads."""
    T, B, I, H = 6, 2, 5, 160          # B * 4H * H = 204800 multiply-adds a step: split whatever the threshold
    rng = np.random.default_rng(4)
    args = (rng.standard_normal((T, B, I)), rng.standard_normal((4 * H, I)) * 0.2,
            rng.standard_normal((4 * H, H)) * 0.2)
    want = _cpp_lstm(*args)            # the parent's pool is running now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_cpp_lstm, args).get(timeout=120)
    np.testing.assert_array_equal(got, want)


def _install_and_import(tmp_path, env_changes):
    """pip install the repository into a fresh venv (dependencies come from this environment through a
    .pth path, not from the index) and report what `import fastrnn` finds there."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # this environment's site-packages for numpy and numba; its .pth files (our editable install) are not read
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = dict(os.environ, **env_changes)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "-C", f"build-dir={tmp_path / 'build'}", str(ROOT)], check=True, env=env, cwd=tmp_path)
    probe = ("import fastrnn, numpy as np; print(fastrnn.__file__); print(','.join(fastrnn.available_backends()));"
             "y, _ = fastrnn.lstm(np.ones((2, 1, 3)), np.ones((8, 3)), np.ones((8, 2)), backend='reference');"
             "print(y.shape)")
    out = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout.splitlines()
    return out


@pytest.mark.parametrize("env_changes", [{"FASTRNN_NO_EXT": "1"}, {"CXX": "/nonexistent/c++", "CC": "/nonexistent/cc"}],
                         ids=["FASTRNN_NO_EXT=1", "no-compiler"])
def test_install_without_extension_is_pure_python(tmp_path, env_changes):
    location, backends, shape = _install_and_import(tmp_path, env_changes)
    assert location.startswith(str(tmp_path / "venv")), location
    assert "cpp" not in backends.split(",") and "reference" in backends.split(",")
    assert shape == "(2, 1, 2)"
