"""benchmarks/targets.py on hand-made runs: which configs each target checks, and its verdicts."""
import json

import pytest

targets = pytest.importorskip("targets")


def record(cell, mode, T, B, H, gflop=1.0, device="cpu", **medians_ms):
    names = {"numba_packed": "fastrnn[numba+packed]", "cpp_packed": "fastrnn[cpp+packed]", "numba": "fastrnn[numba]",
             "cpp": "fastrnn[cpp]", "cuda": "fastrnn[cuda]", "ort": "onnxruntime", "torch": "torch"}
    return dict(cell=cell, mode=mode, dtype="float32", device=device, T=T, B=B, H=H, gflop=gflop,
                competitors={names[k]: dict(median_ms=v) for k, v in medians_ms.items()})


def rows_by_target(records):
    return {row["target"]: row for row in targets.check(records)}


def test_forward_takes_the_faster_weights_and_the_faster_anchor():
    # numba: plain 2.0 ms, packed 1.0; anchors torch 3.0, ORT 1.2: the ratio is 1.2 / 1.0
    rows = rows_by_target([record("lstm", "fwd", 512, 1, 128, torch=3.0, ort=1.2, numba=2.0, numba_packed=1.0,
                                  cpp=0.5)])
    every = rows["numba forward vs the faster of torch and ORT, every config"]
    assert (every["met"], every["checked"], every["worst"]) == (1, 1, pytest.approx(1.2))
    at_b1 = rows["numba forward vs the faster anchor at B = 1"]
    assert at_b1["met"] == 0 and at_b1["missed"] == [("lstm fwd T=512 B=1 H=128", pytest.approx(1.2))]
    assert rows["cpp forward vs numba at B <= 8"]["worst"] == pytest.approx(2.0)       # 1.0 / 0.5
    assert rows["cpp forward vs the faster anchor at B <= 8"]["met"] == 1               # 1.2 / 0.5 = 2.4


def test_forward_backward_targets_by_cell_and_batch():
    rows = rows_by_target([
        record("lstm", "fwdbwd", 512, 8, 256, torch=15.0, numba=10.0, cpp=16.0),    # 1.5x: met; cpp 0.94x
        record("gru", "fwdbwd", 512, 1, 256, torch=20.0, numba=10.0, cpp=5.0),      # 2x: missed (3x)
        record("gru", "fwdbwd", 512, 64, 512, gflop=3.0, torch=10.0, numba=12.5, cpp=9.0),  # 0.8x, 240 GF/s
    ])
    assert rows["numba LSTM forward+backward vs torch at B <= 8"]["met"] == 1
    gru = rows["numba GRU forward+backward vs torch at B <= 8"]
    assert (gru["met"], gru["worst"]) == (0, pytest.approx(2.0))
    b64 = rows["numba forward+backward vs torch at B = 64"]
    assert (b64["checked"], b64["met"], b64["worst"]) == (1, 0, pytest.approx(0.8))
    rate = rows["numba GFLOP/s at B = 64, H >= 256 (both modes)"]
    assert (rate["met"], rate["worst"]) == (1, pytest.approx(240.0))
    cpp = rows["cpp forward+backward vs torch, every config"]
    assert (cpp["checked"], cpp["met"], cpp["worst_config"]) == (3, 2, "lstm fwdbwd T=512 B=8 H=256")


def test_gpu_targets_and_times(tmp_path, capsys):
    run = {"results": [
        record("lstm", "fwd", 1024, 16, 256, device="cuda", torch=6.0, cuda=3.0),       # 2x (3x wanted), 3.0 < 3.7 ms
        record("gru", "fwdbwd", 1024, 256, 1024, device="cuda", torch=10.0, cuda=8.0),  # 1.25x of 1x: met
        dict(cell="lstm", mode="fwd", dtype="float32", device="cuda", T=1024, B=1, H=128, skipped="budget"),
    ]}
    rows = rows_by_target(run["results"])
    assert rows["cuda vs cuDNN at B <= 64, H <= 512 (both modes)"]["met"] == 0
    assert rows["cuda vs cuDNN at B > 64 or H > 512 (both modes)"]["met"] == 1
    assert rows["cuda forward at B = 16, H = 256, T = 1024"]["met"] == 1
    assert "cuda forward+backward at B = 16, H = 256, T = 1024" not in rows     # not measured: not listed
    assert not any(row["issue"] in (3, 7) for row in rows.values())               # CPU targets: no CPU configs
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    assert targets.main([str(path)]) == 0
    table = capsys.readouterr().out
    assert "| #6 | cuda vs cuDNN at B <= 64, H <= 512 (both modes) | 0/1 | 2x (lstm fwd T=1024 B=16 H=256) |" in table
