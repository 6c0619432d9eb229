"""The machine description stored with every run: CPU, cores, GPU, library versions, load, date."""
from __future__ import annotations

import datetime
import functools
import glob
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys

PACKAGES = ("fastrnn", "numpy", "numba", "numba-cuda", "cupy-cuda13x", "cupy-cuda12x", "torch",
            "onnxruntime", "onnx", "matplotlib")


def version(package: str):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict:
    """Each field's first value in /proc/cpuinfo (Linux; empty elsewhere), the file read once."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def _l2_size():
    """The first CPU's level-2 cache size as sysfs gives it ("512K"), or None."""
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(os.path.join(index, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(index, "size")) as f:
                return f.read().strip()
        except OSError:
            continue
    return None


def cpu_core() -> dict:
    """What a VM's model name hides ("AMD EPYC" was a Zen 3 with AVX2 one day and a Zen 5 with AVX-512 the
    next, twice the speed per core): the core as LLVM names it (what Numba compiles for), the widest
    vector instructions, and the L2 per core. Keys whose value cannot be read are left out."""
    info = {}
    try:
        import llvmlite.binding
        info["cpu_core"] = llvmlite.binding.get_host_cpu_name()
    except Exception:       # (no llvmlite, or one too old to answer: the other keys still tell)
        pass
    fields = _cpuinfo()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    simd = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON"))
                 if flag in flags), None)
    if simd:
        info["simd"] = simd
    l2 = _l2_size()
    if l2:
        info["l2_per_core"] = l2
    return info


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gpu_name(device: str) -> str:
    """The GPU that ran (device cuda), else the first one nvidia-smi lists, else "none"."""
    if device == "cuda":
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            return sys.modules["torch"].cuda.get_device_name(0)
        if "cupy" in sys.modules:
            return sys.modules["cupy"].cuda.runtime.getDeviceProperties(0)["name"].decode()
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            return out.splitlines()[0] if out else "none"
        except (OSError, subprocess.SubprocessError):
            pass
    return "none"


def describe(device: str, threads: int) -> dict:
    """Taken at the end of a run, when the libraries that ran are loaded."""
    info = {
        "cpu": cpu_model(),
        **cpu_core(),
        "cpus": os.cpu_count(),
        "cpus_usable": usable_cpus(),
        "threads": threads,
        "device": device,
        "gpu": gpu_name(device),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        **{pkg: v for pkg in PACKAGES if (v := version(pkg)) is not None},
    }
    if device == "cuda" and "torch" in sys.modules:
        info["cudnn"] = sys.modules["torch"].backends.cudnn.version()
    try:
        from threadpoolctl import threadpool_info
        info["numpy_blas"] = ", ".join(f"{i['internal_api']} {i.get('version')}"
                                       for i in threadpool_info() if i["user_api"] == "blas") or "unknown"
    except ImportError:
        pass
    if "numba" in sys.modules:
        try:
            info["numba_threading_layer"] = sys.modules["numba"].threading_layer()
        except ValueError:
            pass
    if hasattr(os, "getloadavg"):
        info["load_average"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    info["date"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return info


def label(info: dict) -> str:
    """One line naming the machine: for plot titles and table headers."""
    if info.get("device") == "cuda" or ("cpu" not in info and info.get("gpu")):
        what = f"{info.get('gpu', 'GPU')}"
        libs = [f"torch {info['torch']}" if "torch" in info else "",
                f"cuDNN {info['cudnn']}" if "cudnn" in info else ""]
    else:
        core = ", ".join(info[key] for key in ("cpu_core", "simd") if info.get(key))
        what = (f"{info.get('cpu', 'CPU')}{f' ({core})' if core else ''}, {info.get('threads', '?')} threads on "
                f"{info.get('cpus_usable', '?')} cores")
        libs = [f"torch {info['torch']}" if "torch" in info else "",
                f"ORT {info['onnxruntime']}" if "onnxruntime" in info else ""]
    date = str(info.get("date", ""))[:10]
    return ", ".join(p for p in [what, *libs, date] if p)
