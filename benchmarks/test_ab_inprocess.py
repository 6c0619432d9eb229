"""benchmarks/ab_inprocess.py: a revision's copy runs its own code beside the working tree, in one process."""
import subprocess
import sys

import pytest

ab = pytest.importorskip("ab_inprocess")


def _git_checkout():
    try:
        subprocess.run(["git", "rev-parse", "HEAD"], cwd=ab.ROOT, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


@pytest.mark.skipif(not _git_checkout(), reason="needs the repository's git history")
def test_old_revision_runs_its_own_modules(capsys):
    assert ab.main(["--old", "HEAD", "--backend", "reference", "--configs", "3,2,5", "--cells", "gru",
                    "--rounds", "2", "--block-ms", "1", "--processes", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| gru |")]
    assert [row.split("|")[2].strip() for row in rows] == ["fwd", "fwdbwd"]
    # the reference at HEAD and in the working tree (the same code in a clean checkout) agree; and the
    # copy's backends load from the copy
    assert all(float(row.split("|")[-2]) < 1e-6 for row in rows)
    copy = next(name for name in sys.modules if name.startswith("fastrnn_") and "." not in name)
    assert sys.modules[f"{copy}.backends.reference"].__file__.startswith(ab.tempfile.gettempdir())
    assert all(backend.module.startswith(copy + ".")
               for backend in sys.modules[copy].backends.registered_backends().values())


@pytest.mark.skipif(not _git_checkout(), reason="needs the repository's git history")
def test_processes_are_merged_per_config(capsys):
    assert ab.main(["--backend", "reference", "--configs", "2,1,3;3,2,5", "--cells", "lstm", "--modes", "fwd",
                    "--rounds", "1", "--block-ms", "1", "--processes", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 processes of 1 rounds" in out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| lstm |")]
    assert [(row[3].strip(), row[4].strip(), row[5].strip()) for row in rows] == [("2", "1", "3"), ("3", "2", "5")]
    assert all(float(row[-2]) < 1e-6 for row in rows)


@pytest.mark.skipif(not _git_checkout(), reason="needs the repository's git history")
def test_settings_change_the_new_side_only(capsys, monkeypatch):
    import fastrnn
    default = fastrnn.config.CHUNK_BYTES
    monkeypatch.setattr(fastrnn.config, "CHUNK_BYTES", default)      # (restored after the test)
    assert ab.main(["--old", "HEAD", "--backend", "reference", "--configs", "2,1,3", "--cells", "rnn",
                    "--modes", "fwd", "--rounds", "1", "--block-ms", "1", "--processes", "1",
                    "--set", f"CHUNK_BYTES={default // 16}"]) == 0
    assert f"with CHUNK_BYTES={default // 16}" in capsys.readouterr().out
    copy = next(name for name in sys.modules if name.startswith("fastrnn_") and "." not in name)
    assert (fastrnn.config.CHUNK_BYTES, sys.modules[copy].config.CHUNK_BYTES) == (default // 16, default)


@pytest.mark.parametrize("item", ["CHUNK_BYTES", "NO_SUCH_SETTING=1", "chunk_steps=1", "CHUNK_BYTES=lots"])
def test_bad_settings_are_refused(item):
    import fastrnn
    with pytest.raises(SystemExit, match="--set"):
        ab.apply_settings(fastrnn.config, [item])
