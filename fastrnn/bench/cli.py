"""``fastrnn bench`` (also ``python -m fastrnn.bench``): fastrnn's backends against PyTorch, ONNX
Runtime and the NumPy reference over a grid of sequence lengths, hidden sizes and batches.

    fastrnn bench                                # the default grid on the CPU, about a minute
    fastrnn bench --quick                        # a few seconds once the kernels are compiled
    fastrnn bench --seq-lens 16,128,512 --hidden 128,256 --batch 1,8 --cells lstm,gru \\
                  --mode fwd,fwdbwd --dtype float32 --backends numba --against torch,onnxruntime
    fastrnn bench --device cuda                  # the "cuda" backend against cuDNN
    fastrnn bench --compare old.json new.json    # the change between two runs
    fastrnn bench --plot run.json                # plots and table of a saved run

Prints a progress bar (on a terminal) and, at the end, the table; writes NAME.json (machine, settings,
every sample), NAME.csv (a row per config and competitor), NAME.md (the table) and the plots
NAME-time-per-step.png, NAME-gflops.png (with matplotlib) into --out-dir. The method is in
fastrnn/bench/runner.py. Exit status: 0, 1 when a result was wrong, 2 for bad flags.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from . import anchors, machine, report, runner
from .progress import Progress

DEFAULTS = {   # per device and --quick: the grid and the timing effort
    ("cpu", False): dict(seq_lens=[16, 64, 256], hidden=[64, 128, 256], batch=[1], rounds=3, min_time=0.02),
    ("cpu", True): dict(seq_lens=[8, 32], hidden=[32, 64], batch=[1], rounds=2, min_time=0.005),
    ("cuda", False): dict(seq_lens=[256, 1024], hidden=[128, 256, 512, 1024], batch=[1, 8, 64], rounds=5,
                          min_time=0.05),
    ("cuda", True): dict(seq_lens=[64, 256], hidden=[128, 256], batch=[1, 8], rounds=3, min_time=0.02),
}
# the CPU default: the compiled CPU backends that "auto" chooses between, those built here
DEFAULT_BACKENDS = {"cpu": ["cpp", "numba"], "cuda": ["cuda"]}
DEFAULT_ANCHORS = {"cpu": list(anchors.ANCHORS), "cuda": ["torch"]}


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {'integer' if kind is int else 'number'}, "
                                              f"got {text!r}")
        return value
    return parse


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 16,128, got {text!r}")
    return values


def _name_list(kind: str, choices, aliases=None):
    def parse(text: str) -> list[str]:
        values = []
        for raw in text.split(","):
            name = (aliases or {}).get(raw.strip().lower(), raw.strip().lower())
            if name and name not in choices:
                raise argparse.ArgumentTypeError(f"unknown {kind} {raw.strip()!r} (choose from {', '.join(choices)})")
            if name and name not in values:
                values.append(name)
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind}s, got {text!r}")
        return values
    return parse


def _join(values) -> str:
    return ",".join(map(str, values))


def build_parser(prog=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        description="Time fastrnn's backends against PyTorch, ONNX Runtime and the NumPy reference over a grid\n"
                    "of sequence lengths, hidden sizes and batches; check their results against each other.")
    grid = parser.add_argument_group("grid", "defaults: " + "; ".join(
        f"{device}{' --quick' * quick}: T={_join(d['seq_lens'])} H={_join(d['hidden'])} B={_join(d['batch'])}, "
        f"{d['rounds']} rounds of >= {d['min_time']:g} s" for (device, quick), d in DEFAULTS.items()))
    grid.add_argument("--seq-lens", type=_int_list, metavar="T,..", help="sequence lengths")
    grid.add_argument("--hidden", type=_int_list, metavar="H,..", help="hidden sizes (input size = H)")
    grid.add_argument("--batch", type=_int_list, metavar="B,..", help="batch sizes")
    grid.add_argument("--cells", type=_name_list("cell", list(anchors.GATES)), default=list(anchors.GATES),
                      help="lstm,gru (default both)")
    grid.add_argument("--mode", "--modes", dest="modes", type=_name_list("mode", anchors.MODES),
                      default=list(anchors.MODES), help="fwd (inference), fwdbwd (forward+backward); default both")
    grid.add_argument("--dtype", "--dtypes", dest="dtypes", type=_name_list("dtype", anchors.DTYPES),
                      default=["float32"], help="float32,float64 (default float32)")
    grid.add_argument("--quick", action="store_true", help="a much smaller default grid and fewer rounds")
    who = parser.add_argument_group("competitors")
    who.add_argument("--device", choices=anchors.DEVICES, default="cpu", help="cpu (default) or cuda")
    who.add_argument("--backends", type=_name_list("backend", list(anchors.backend_names())),
                     help="fastrnn backends to time (default: cpp (where built) and numba on the CPU, cuda on the GPU)")
    who.add_argument("--against", type=_name_list("anchor", anchors.ANCHORS, anchors.ALIASES),
                     help="anchors: torch (cuDNN with --device cuda), onnxruntime (alias ort), reference; "
                          "default: all on the CPU, torch on the GPU; those not installed are reported as skipped")
    grid.add_argument("--proj-size", type=_positive(int), default=0, metavar="P",
                      help="LSTMs with projections of size P < every H (torch's proj_size; needs --cells lstm; "
                           "ONNX Runtime has none)")
    who.add_argument("--packed-weights", action="store_true",
                     help="also time each backend's forward (mode fwd, CPU) on a fastrnn.pack_weights snapshot, "
                          "as fastrnn[BACKEND+packed]: weights packed once, as ONNX Runtime's session holds them "
                          "(plain arrays are packed by every call, so that weights changed in place are seen)")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--threads", type=_positive(int), default=machine.usable_cpus(),
                        help="threads for every competitor (default: the usable cores, %(default)s)")
    timing.add_argument("--rounds", type=_positive(int), help="interleaved rounds per config (median over them)")
    timing.add_argument("--min-time", type=_positive(float), metavar="S", help="seconds one timing lasts at least")
    timing.add_argument("--max-call", type=_positive(float), default=20.0, metavar="S",
                        help="skip configs where a competitor's estimated call exceeds this (default %(default)s s)")
    timing.add_argument("--budget-s", type=_positive(float), default=float("inf"), metavar="S",
                        help="start no new config after this many seconds (the rest is reported as skipped)")
    out = parser.add_argument_group("output")
    out.add_argument("--out-dir", default="bench-results", help="where files go (default %(default)s)")
    out.add_argument("--name", help="file name stem (default fastrnn-bench-DEVICE-DATE-TIME)")
    out.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    out.add_argument("--no-progress", action="store_true", help="no progress bar (also off when stderr is no terminal)")
    out.add_argument("-v", "--verbose", action="store_true", help="print each config's details as it finishes")
    other = parser.add_argument_group("instead of a run")
    other.add_argument("--compare", nargs=2, metavar=("OLD.json", "NEW.json"), help="show the change between two runs")
    other.add_argument("--plot", metavar="RUN.json", help="print the table and write the plots of a saved run")
    return parser


def settings_from(args, parser) -> runner.Settings:
    if args.packed_weights and args.device == "cuda":
        parser.error("--packed-weights: the packed layouts are the CPU backends'; leave it out with --device cuda")
    if args.device == "cuda" and (reason := anchors.gpu_missing()) is not None:
        parser.error(f"--device cuda: no GPU to run on: {reason}")
    gpu = anchors.backend_names()
    backends = args.backends or [b for b in DEFAULT_BACKENDS[args.device]
                                 if args.device == "cuda" or anchors.backend_missing(b) is None]
    for b in backends:
        if gpu[b] != (args.device == "cuda"):
            parser.error(f"--backends: backend {b!r} runs on the {'GPU' if gpu[b] else 'CPU'}; "
                         + ("add --device cuda" if gpu[b] else "with --device cuda time --backends cuda"))
    for anchor in args.against or ():
        if not any(anchors.applies(anchor, mode, args.device) for mode in args.modes):
            parser.error(f"--against: {anchor} has no {'/'.join(args.modes)} competitor on the {args.device} "
                         "(onnxruntime: CPU forward only; reference: CPU only)")
    defaults = DEFAULTS[args.device, args.quick]
    pick = {key: getattr(args, key) if getattr(args, key) is not None else value for key, value in defaults.items()}
    if args.proj_size and (args.cells != ["lstm"] or args.proj_size >= min(pick["hidden"])):
        parser.error(f"--proj-size {args.proj_size}: projections are for the LSTM (add --cells lstm) and need "
                     f"P < every hidden size (H = {_join(pick['hidden'])})")
    return runner.Settings(cells=args.cells, modes=args.modes, dtypes=args.dtypes, backends=backends,
                           against=args.against or DEFAULT_ANCHORS[args.device], device=args.device,
                           threads=args.threads, max_call=args.max_call, budget_s=args.budget_s,
                           packed_weights=args.packed_weights, proj_size=args.proj_size, **pick)


def _color(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def _show(run: dict, stream=None) -> None:
    stream = stream or sys.stdout
    print(f"\n{machine.label(run['machine'])}", file=stream)
    print(report.text_table(run, color=_color(stream)), file=stream)
    for note in report.notes(run):
        print(note, file=stream)


def _write(run: dict, prefix: str, plots: bool) -> list[str]:
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    written = []
    for ext, write in (("json", report.write_json), ("csv", report.write_csv)):
        write(run, f"{prefix}.{ext}")
        written.append(f"{prefix}.{ext}")
    with open(f"{prefix}.md", "w") as f:
        f.write(report.markdown(run))
    written.append(f"{prefix}.md")
    return written + _plots(run, prefix, plots)


def _plots(run: dict, prefix: str, wanted: bool) -> list[str]:
    from . import plots
    if not wanted:
        return []
    if not plots.available():
        print("plots skipped: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return []
    return plots.write(run, prefix, log=lambda text: print(text, file=sys.stderr))


def main(argv=None, prog=None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.compare:
        try:
            old, new = (report.load(path) for path in args.compare)
        except ValueError as exc:
            parser.error(f"--compare: {exc}")
        print(report.compare(old, new, *args.compare))
        return 0
    if args.plot:
        try:
            run = report.load(args.plot)
        except ValueError as exc:
            parser.error(f"--plot: {exc}")
        _show(run)
        name = args.name or os.path.splitext(os.path.basename(args.plot))[0]
        for path in _plots(run, os.path.join(args.out_dir, name), True):
            print(f"wrote {path}")
        return 0

    settings = settings_from(args, parser)
    grid = settings.grid()
    print(f"fastrnn bench: {len(grid)} configs x {len(settings.competitors())} competitors on {settings.device} "
          f"({settings.threads} threads, {settings.rounds} rounds)", file=sys.stderr, flush=True)
    progress = Progress(len(grid), enabled=not args.no_progress and sys.stderr.isatty())
    started, results, interrupted = time.perf_counter(), [], False

    def done(record):
        progress.advance(runner.config_label(*(record[k] for k in ("cell", "mode", "dtype", "T", "B", "H"))))
        if args.verbose:
            progress.close()            # ends the bar's line (when there is a bar)
            print("\n".join(report.config_lines(record)), file=sys.stderr, flush=True)

    progress.show()
    try:
        with runner.ThreadLimits(settings.threads):
            runner.run(settings, on_start=progress.show, on_done=done, results=results)
    except KeyboardInterrupt:
        interrupted = True
    progress.close()

    run = dict(format=report.FORMAT, machine=machine.describe(settings.device, settings.threads),
               settings=settings.as_dict(), results=results, wall_s=time.perf_counter() - started)
    if interrupted:
        run["interrupted"] = True
    _show(run)
    name = args.name or f"fastrnn-bench-{settings.device}-{time.strftime('%Y%m%d-%H%M%S')}"
    for path in _write(run, os.path.join(args.out_dir, name), not args.no_plots):
        print(f"wrote {path}")
    print(f"wall time {run['wall_s']:.1f} s" + (" (interrupted)" if interrupted else ""))
    return 1 if interrupted or any(report.wrong(r) for r in results) else 0


def console(argv=None) -> int:
    """The ``fastrnn`` command: ``fastrnn bench [flags]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    top = argparse.ArgumentParser(prog="fastrnn", description="fastrnn's command line tools")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("bench", add_help=False, help="time fastrnn against PyTorch and ONNX Runtime "
                                                       "(fastrnn bench --help)")
    top.parse_args(argv[:1])
    return main(argv[1:], prog="fastrnn bench")
