"""Smoke test of benchmarks/call_gaps.py (latency after idle gaps: a script to run, not a timing to track)."""
import pytest

call_gaps = pytest.importorskip("call_gaps")


def test_call_gaps_script_prints_its_table(capsys):
    call_gaps.main(["--gaps", "0,1", "--calls", "2", "--hidden", "8"])
    table = capsys.readouterr().out
    assert "| gap ms |" in table and "| 1 |" in table and "fastrnn[" in table
