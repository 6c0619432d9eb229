"""benchmarks/backend_ratio.py on hand-made runs: the ratio per config and weight form, and the summary by batch."""
import json

import pytest

backend_ratio = pytest.importorskip("backend_ratio")


def run(path, *records):
    path.write_text(json.dumps({"results": list(records)}))
    return str(path)


def record(B, mode="fwd", **medians_ms):
    names = {"numba": "fastrnn[numba]", "cpp": "fastrnn[cpp]", "numba_packed": "fastrnn[numba+packed]",
             "cpp_packed": "fastrnn[cpp+packed]", "torch": "torch"}
    return dict(cell="lstm", mode=mode, dtype="float32", T=128, B=B, H=256,
                competitors={names[k]: dict(median_ms=v) for k, v in medians_ms.items()})


def test_ratios_per_config_form_and_run(tmp_path):
    first = run(tmp_path / "a.json", record(8, numba=2.0, cpp=3.0, numba_packed=1.0, cpp_packed=1.5, torch=9.0),
                record(1, numba=2.0, torch=1.0))                  # no cpp: left out
    second = run(tmp_path / "b.json", record(8, numba=2.0, cpp=1.0))
    table = backend_ratio.ratios([first, second], "numba", "cpp")
    assert table == {("lstm", "fwd", "float32", 128, 8, 256, "plain"): [1.5, 0.5],
                     ("lstm", "fwd", "float32", 128, 8, 256, "packed"): [1.5]}


def test_summary_by_mode_and_batch(tmp_path, capsys):
    path = run(tmp_path / "a.json", record(8, numba=1.0, cpp=4.0), record(64, numba=1.0, cpp=1.0),
               record(1, numba=2.0, cpp=1.0), record(8, mode="fwdbwd", numba=3.0, cpp=3.0))
    assert backend_ratio.main([path]) == 0
    out = capsys.readouterr().out
    assert "| fwd | >= 8 | 2 | 2.000 | 1.00 | 4.00 |" in out            # geometric mean of 4 and 1
    assert "| fwd | 1-2 | 1 | 0.500 | 0.50 | 0.50 |" in out
    assert "| fwdbwd | >= 8 | 1 | 1.000 | 1.00 | 1.00 |" in out


def test_runs_without_both_backends_are_an_error(tmp_path):
    path = run(tmp_path / "a.json", record(8, numba=1.0, torch=2.0))
    with pytest.raises(SystemExit):
        backend_ratio.main([path])
