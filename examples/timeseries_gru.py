"""A GRU forecaster of the yearly sunspot number, against the persistence forecast.

    pip install --no-deps statsmodels      # the series; nothing is downloaded at run time
    python examples/timeseries_gru.py [--window 24 --hidden 32 --epochs 150 --plot sunspots.png] [--device cuda]

Data: ``statsmodels/datasets/sunspots/sunspots.csv`` shipped by the ``statsmodels`` package (BSD-3-Clause): the
yearly mean sunspot number 1700-2008 (309 values) from NOAA's National Geophysical Data Center, in the public
domain (statsmodels' ``COPYRIGHT``: "This data is public domain").

One-step-ahead forecasting: the GRU reads the ``--window`` previous years (x (W, B, 1), time-major) and a
Linear layer on its final state predicts the next year. The series is standardised with the mean and standard
deviation of the training years only. Years from ``--test-from`` (default 1950, 59 years) are the test set, the
10 years before it validation (early stopping: the epoch with the lowest validation error is kept); every window
whose target is an earlier year trains, with MSE and Adam. Reported: test RMSE and MAE in sunspot numbers against
the persistence forecast (next year = this year) on the same years; a PNG plot of forecast against truth.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (first: it sets up threads before NumPy loads)

import numpy as np  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.train import Adam, Linear, RecurrentModel, init_recurrent, mse, progress_bar  # noqa: E402


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    path = _common.data_file("statsmodels", "datasets/sunspots/sunspots.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([int(float(r["YEAR"])) for r in rows]), np.array([float(r["SUNACTIVITY"]) for r in rows])


def windows(series: np.ndarray, targets: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """x (W, N, 1): the ``window`` values before each target index; y (N, 1): the values at ``targets``."""
    x = np.stack([series[t - window:t] for t in targets], axis=1)[:, :, None]
    return x.astype(np.float32), series[targets, None].astype(np.float32)


def errors(forecast: np.ndarray, truth: np.ndarray) -> dict:
    return {"rmse": float(np.sqrt(np.mean((forecast - truth) ** 2))), "mae": float(np.mean(np.abs(forecast - truth)))}


def plot(path, years, truth, forecast, persistence, scores) -> None:
    import matplotlib                  # lazily: only the plot needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(years, truth, "k-", lw=2, label="observed")
    ax.plot(years, forecast, "C0-o", ms=3, label=f"GRU (RMSE {scores['gru']['rmse']:.1f})")
    ax.plot(years, persistence, "C1--", label=f"persistence (RMSE {scores['persistence']['rmse']:.1f})")
    ax.set_xlabel("year")
    ax.set_ylabel("yearly mean sunspot number")
    ax.set_title("One-year-ahead forecasts on the test years")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def predict(model, run, x, mean, std) -> np.ndarray:
    model.eval()
    out, _ = model(run.device_array(x))
    model.train()
    return _common.host(out)[:, 0] * std + mean


def main(argv=None) -> dict:
    p = _common.parser(__doc__)
    p.add_argument("--window", type=int, default=24, help="years the GRU reads before each forecast")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--test-from", type=int, default=1950, help="first test year")
    p.add_argument("--plot", default="sunspots_forecast.png", help="PNG file to write ('' for none)")
    args = p.parse_args(argv)
    run = _common.Run(args)

    years, values = load_sunspots()
    first_test = int(np.searchsorted(years, args.test_from))
    first_val = first_test - 10
    if not args.window < first_val < first_test < len(years):
        raise SystemExit(f"--test-from {args.test_from} and --window {args.window} leave no training windows")
    mean, std = values[:first_val].mean(), values[:first_val].std()
    series = (values - mean) / std
    x_train, y_train = windows(series, np.arange(args.window, first_val), args.window)
    x_val, _ = windows(series, np.arange(first_val, first_test), args.window)
    x_test, _ = windows(series, np.arange(first_test, len(years)), args.window)
    truth, persistence = values[first_test:], values[first_test - 1:-1]
    run.say(f"sunspots {years[0]}-{years[-1]}: {x_train.shape[1]} training windows of {args.window} years, "
            f"validation {years[first_val]}-{years[first_test - 1]}, test {years[first_test]}-{years[-1]}")

    rnn = init_recurrent(fastrnn.GRU(1, args.hidden, backend=args.backend), rng=run.rng)
    model = run.place(RecurrentModel(rnn, Linear(args.hidden, 1, seed=args.seed + 1), readout="final"))
    optimizer = Adam(model.modules, lr=args.lr)
    bar = progress_bar(args.epochs, quiet=args.quiet)
    history, best = [], None
    for epoch in range(1, args.epochs + 1):
        order = run.rng.permutation(x_train.shape[1])
        total = 0.0
        for start in range(0, len(order), args.batch):
            chosen = order[start:start + args.batch]
            out, _ = model(run.device_array(x_train[:, chosen]))
            loss, d_out = mse(out, run.device_array(y_train[chosen]))
            model.backward(d_out)
            optimizer.step()
            optimizer.zero_grad()
            total += loss * len(chosen)
        val_rmse = errors(predict(model, run, x_val, mean, std), values[first_val:first_test])["rmse"]
        history.append({"epoch": epoch, "train_mse": total / len(order), "val_rmse": val_rmse})
        if best is None or val_rmse < best["val_rmse"]:
            best = {**history[-1], "state": model.state_dict()}
        bar.advance(f"train MSE {history[-1]['train_mse']:.4f} (standardised), validation RMSE {val_rmse:.1f}")
    bar.close()
    model.load_state_dict(best["state"])
    forecast = predict(model, run, x_test, mean, std)
    scores = {"gru": errors(forecast, truth), "persistence": errors(persistence, truth)}
    run.say(f"epoch {best['epoch']} kept (validation RMSE {best['val_rmse']:.1f}); training MSE (standardised) "
            f"{history[0]['train_mse']:.3f} at epoch 1, {history[-1]['train_mse']:.3f} at epoch {args.epochs}")
    run.say(f"test {years[first_test]}-{years[-1]}: GRU RMSE {scores['gru']['rmse']:.1f}, MAE "
            f"{scores['gru']['mae']:.1f}; persistence RMSE {scores['persistence']['rmse']:.1f}, MAE "
            f"{scores['persistence']['mae']:.1f} (sunspot numbers)")
    if args.plot:
        plot(args.plot, years[first_test:], truth, forecast, persistence, scores)
        run.say(f"plot written to {args.plot}")
    return {"history": history, "best_epoch": best["epoch"], "scores": scores, "plot": args.plot,
            "seconds": run.elapsed()}


if __name__ == "__main__":
    main()
