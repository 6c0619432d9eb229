"""``fastrnn bench``: fastrnn's backends timed against PyTorch, ONNX Runtime and the NumPy reference.

    anchors   the problem and every competitor (same arrays, each returns (y, dW_hh))
    timing    quiet-waits, repetitions, calibration, other processes' load
    runner    the method: probe, correctness, calibration, interleaved rounds, statistics
    report    tables, CSV, JSON, comparison of two runs
    plots     PNG plots (matplotlib, optional)
    machine   the machine description stored with a run
    cli       the command line (``fastrnn bench``, ``python -m fastrnn.bench``)

Nothing here is imported by ``import fastrnn``; torch, onnxruntime, cupy and matplotlib load only
when a run needs them.
"""


def main(argv=None) -> int:
    from .cli import main as cli_main
    return cli_main(argv)
