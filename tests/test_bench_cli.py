"""``fastrnn bench`` on a tiny grid: it runs, writes valid JSON / CSV / Markdown / PNG, compares two
runs, refuses bad flags with exit status 2 and a message naming the flag, and reports a missing
anchor as skipped."""
import csv
import json
import os
import subprocess
import sys

import pytest

from fastrnn.bench import anchors, cli, report

TINY = ["--seq-lens", "2", "--batch", "1", "--hidden", "4", "--cells", "lstm", "--rounds", "1",
        "--min-time", "0.0001", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"
RESULTS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "results")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One in-process run of a tiny grid (two T and two H for the plots' lines), both modes, every
    installed anchor."""
    out = tmp_path_factory.mktemp("bench")
    status = cli.main([*TINY, "--mode", "fwd,fwdbwd", "--seq-lens", "2,3", "--hidden", "3,4",
                       "--out-dir", str(out), "--name", "tiny"])
    return status, out


def test_run_writes_json_csv_md(tiny_run):
    status, out = tiny_run
    assert status == 0
    with open(out / "tiny.json") as f:
        run = json.load(f)
    assert {"cpu", "cpus", "gpu", "numpy", "fastrnn", "date"} <= set(run["machine"])
    assert [(r["mode"], r["T"], r["H"]) for r in run["results"]] == [
        (mode, T, H) for mode in ("fwd", "fwdbwd") for H in (3, 4) for T in (2, 3)]
    for record in run["results"]:
        timed = record["competitors"]["fastrnn[numba]"]
        assert timed["median_ms"] > 0 and timed["min_ms"] <= timed["median_ms"] <= timed["max_ms"]
        assert timed["gflops"] > 0 and timed["us_per_step"] > 0
        assert max(record["errors"]["fastrnn[numba]"].values()) < anchors.TOLERANCE["float32"]
        assert "numba" in record["ratio"]           # against the best anchor that ran
    with open(out / "tiny.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == report.CSV_FIELDS
    assert {r["competitor"] for r in rows} >= {"fastrnn[numba]", "reference"}
    assert all(float(r["median_ms"]) > 0 for r in rows if r["status"] == "ok")
    assert "| lstm | fwd | 2 | 1 | 3 |" in (out / "tiny.md").read_text()


def test_machine_names_the_core_behind_the_model_name():
    from fastrnn.bench import machine
    info = machine.describe("cpu", 1)
    if sys.platform == "linux":             # LLVM names the host core; /proc/cpuinfo gives its vector ISA
        assert isinstance(info["cpu_core"], str) and info["cpu_core"] not in ("", "generic")
        assert info.get("simd") in (None, "AVX-512", "AVX2", "NEON")
    assert machine.label({"cpu": "AMD EPYC", "cpu_core": "znver3", "simd": "AVX2", "threads": 2, "cpus_usable": 2,
                          "date": "2026-11-29T04:51:37"}) == "AMD EPYC (znver3, AVX2), 2 threads on 2 cores, 2026-11-29"
    assert machine.label({"cpu": "X", "threads": 2, "cpus_usable": 2}) == "X, 2 threads on 2 cores"


def test_run_writes_png_plots(tiny_run):
    pytest.importorskip("matplotlib")
    _, out = tiny_run
    for name in ("tiny-time-per-step.png", "tiny-gflops.png"):
        assert (out / name).read_bytes()[:8] == PNG


def test_plot_of_saved_run_and_legacy_results(tiny_run, tmp_path, capsys):
    _, out = tiny_run
    assert cli.main(["--plot", str(out / "tiny.json"), "--out-dir", str(tmp_path)]) == 0
    assert "fastrnn[numba] ms" in capsys.readouterr().out
    legacy = report.load(os.path.join(RESULTS, "cuda-h200.json"))     # compare_cuda.py's format
    assert legacy["results"][0]["competitors"]["fastrnn[cuda]"]["median_ms"] > 0
    assert report.markdown_table(legacy).count("\n") == len(legacy["results"]) + 1


def test_compare_two_runs(tiny_run, tmp_path, capsys):
    _, out = tiny_run
    with open(out / "tiny.json") as f:
        run = json.load(f)
    for record in run["results"]:
        for c in record["competitors"].values():
            c["median_ms"] *= 2                      # the "new" run is twice as slow
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(run))
    assert cli.console(["bench", "--compare", str(out / "tiny.json"), str(slower)]) == 0
    text = capsys.readouterr().out
    assert "speed-up" in text and "0.5x" in text and "fastrnn[numba]" in text
    # the JSON of the older compare_cpu.py loads too (its "ort" is onnxruntime now)
    legacy = os.path.join(RESULTS, "cpu-epyc-zen3-2core.json")
    assert cli.main(["--compare", legacy, legacy]) == 0
    assert "onnxruntime" in capsys.readouterr().out


def test_packed_weights_run(tmp_path):
    """--packed-weights: each backend's forward also on a pack_weights snapshot, checked like the rest."""
    assert cli.main([*TINY, "--mode", "fwd", "--packed-weights", "--out-dir", str(tmp_path), "--name", "pk"]) == 0
    with open(tmp_path / "pk.json") as f:
        run = json.load(f)
    assert run["settings"]["packed_weights"] is True
    for record in run["results"]:
        for name in ("fastrnn[numba]", "fastrnn[numba+packed]"):
            assert record["competitors"][name]["median_ms"] > 0
            assert max(record["errors"][name].values()) < anchors.TOLERANCE["float32"]
        assert "numba+packed" in record["ratio"]


def test_projections_run(tmp_path):
    """--proj-size: LSTMs with projections (h of size P) on every competitor that has them, checked against
    torch (or the reference) like the rest; ORT, whose operator has none, is left out."""
    assert cli.main([*TINY, "--hidden", "5", "--proj-size", "3", "--mode", "fwd,fwdbwd", "--packed-weights",
                     "--out-dir", str(tmp_path), "--name", "proj"]) == 0
    with open(tmp_path / "proj.json") as f:
        run = json.load(f)
    assert run["settings"]["proj_size"] == 3
    for record in run["results"]:
        assert record["P"] == 3 and record["H"] == 5 and "onnxruntime" not in record["competitors"]
        assert record["gflop"] == pytest.approx(anchors.flops("lstm", 2, 1, 5, 5, record["mode"], 3) / 1e9)
        assert "fastrnn[numba]" in record["competitors"]
        assert ("fastrnn[numba+packed]" in record["competitors"]) == (record["mode"] == "fwd")
        for name in record["competitors"]:
            if name.startswith("fastrnn["):
                assert max(record["errors"][name].values()) < anchors.TOLERANCE["float32"], name
    assert "| P |" in (tmp_path / "proj.md").read_text()


def test_missing_anchors_are_skipped_not_fatal(monkeypatch, tmp_path, capsys):
    # neither torch nor onnxruntime "installed": both reported as skipped, the untimed NumPy
    # reference becomes the correctness oracle, and there is no anchor to take a ratio against
    monkeypatch.setitem(anchors.REQUIRES, "torch", ("no_such_module_for_torch",))
    monkeypatch.setitem(anchors.REQUIRES, "onnxruntime", ("no_such_module_for_ort",))
    status = cli.main([*TINY, "--mode", "fwd", "--against", "torch,ort", "--out-dir", str(tmp_path),
                       "--name", "missing", "--no-plots"])
    assert status == 0
    out = capsys.readouterr().out
    assert "skipped torch" in out and "skipped onnxruntime" in out and "not installed" in out
    record = json.loads((tmp_path / "missing.json").read_text())["results"][0]
    assert set(record["skipped_competitors"]) == {"torch", "onnxruntime"}
    assert record["oracle"] == "reference (untimed)" and "ratio" not in record
    assert record["errors"]["fastrnn[numba]"]["y"] < 1e-5


def test_python_dash_m(tmp_path):
    command = [sys.executable, "-m", "fastrnn.bench", *TINY, "--mode", "fwd", "--against", "reference",
               "--out-dir", str(tmp_path), "--name", "sub", "--no-plots"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "fastrnn[numba] ms" in done.stdout
    assert json.loads((tmp_path / "sub.json").read_text())["results"][0]["competitors"]


def test_import_stays_light():
    code = ("import sys, fastrnn, fastrnn.bench.cli; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'matplotlib', 'cupy', 'numba.cuda') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize("flags, words", [
    (["--cells", "lstn"], ["--cells", "lstn"]),
    (["--hidden", "abc"], ["--hidden", "positive integers"]),
    (["--seq-lens", "16,0"], ["--seq-lens"]),
    (["--batch", "1.5"], ["--batch"]),
    (["--mode", "bwd"], ["--mode", "bwd"]),
    (["--dtype", "float16"], ["--dtype", "float16"]),
    (["--backends", "nope"], ["--backends", "nope"]),
    (["--backends", "cuda"], ["--backends", "--device cuda"]),
    (["--against", "tensorflow"], ["--against", "tensorflow"]),
    (["--against", "ort", "--mode", "fwdbwd"], ["--against", "onnxruntime"]),
    (["--rounds", "0"], ["--rounds"]),
    (["--device", "tpu"], ["--device"]),
    (["--packed-weights", "--device", "cuda"], ["--packed-weights"]),
    (["--proj-size", "2", "--cells", "lstm,gru"], ["--proj-size", "--cells lstm"]),
    (["--proj-size", "4", "--cells", "lstm", "--hidden", "8,4"], ["--proj-size", "P < every hidden size"]),
    (["--proj-size", "0"], ["--proj-size", "positive integer"]),
    (["--compare", "no-such-old.json", "no-such-new.json"], ["--compare", "no-such-old.json"]),
])
def test_bad_flags_exit_2_naming_the_flag(flags, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*flags, "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_device_cuda_without_gpu_exits_2(capsys):
    if anchors.gpu_missing() is None:
        pytest.skip("a GPU is usable here")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cuda: no GPU" in capsys.readouterr().err


def test_console_needs_the_bench_command(capsys):
    for argv in ([], ["benchmark"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.console(argv)
        assert exit_info.value.code == 2
    assert "bench" in capsys.readouterr().err


def test_thread_limits_reach_fastrnn_and_are_restored(monkeypatch):
    """--threads sets fastrnn's own thread count too (the cpp backend reads OMP_NUM_THREADS only once),
    and everything is put back afterwards."""
    from fastrnn import config
    from fastrnn.backends import cpp
    from fastrnn.bench import runner
    monkeypatch.setattr(config, "THREADS", 0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seq = type("Seq", (), dict(B=64, H=256, cell="lstm"))()
    with runner.ThreadLimits(3):
        assert config.THREADS == 3 and cpp._threads(seq) == 3 and os.environ["OMP_NUM_THREADS"] == "3"
    assert config.THREADS == 0 and "OMP_NUM_THREADS" not in os.environ
