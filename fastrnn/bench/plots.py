"""PNG plots of a run (matplotlib, optional): time per step against sequence length, and GFLOP/s
against hidden size, one line per implementation, one panel per cell, mode, batch and dtype."""
from __future__ import annotations

from . import machine
from .report import competitor_names

# (file suffix, x field, fixed field, y field, y label)
PLOTS = (("time-per-step", "T", "H", "us_per_step", "time per step (us)"),
         ("gflops", "H", "T", "gflops", "GFLOP/s"))


def available() -> bool:
    from .anchors import installed
    return installed("matplotlib")


def _panels(results, x, fixed):
    """{(cell, mode, B, dtype): (fixed value, {competitor: [(x, record)]})}, at the largest fixed
    value that has data in each panel."""
    panels = {}
    for r in results:
        if "skipped" not in r:
            panels.setdefault((r["cell"], r["mode"], r["B"], r["dtype"]), []).append(r)
    out = {}
    for key, records in panels.items():
        at = max(r[fixed] for r in records)
        lines = {}
        for r in sorted((r for r in records if r[fixed] == at), key=lambda r: r[x]):
            for name, c in r["competitors"].items():
                lines.setdefault(name, []).append((r[x], c))
        out[key] = at, lines
    return out


def write(run: dict, prefix: str, log=print) -> list[str]:
    """Writes ``{prefix}-time-per-step.png`` and ``{prefix}-gflops.png``; returns their paths. A plot
    whose panels all have a single x value (one sequence length, or one hidden size) is left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = competitor_names(run)
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}
    dtypes = len({r.get("dtype") for r in run["results"]}) > 1
    gpu = any(r.get("device") == "cuda" for r in run["results"])
    paths = []
    for suffix, x, fixed, y, ylabel in PLOTS:
        panels = {key: (at, lines) for key, (at, lines) in _panels(run["results"], x, fixed).items()
                  if any(len(points) > 1 for points in lines.values())}     # a line, not a dot
        if not panels:
            log(f"plot {suffix} left out: it needs at least two values of {x} in a panel")
            continue
        cols = list(dict.fromkeys((cell, mode) for cell, mode, _, _ in panels))      # the grid's order
        rows = sorted({(B, dtype) for _, _, B, dtype in panels})
        fig = Figure(figsize=(4.2 * len(cols), 3.3 * len(rows) + 0.8), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(rows), len(cols), squeeze=False)
        for (cell, mode, B, dtype), (at, lines) in panels.items():
            ax = axes[rows.index((B, dtype))][cols.index((cell, mode))]
            ticks = set()
            for name in names:
                if name in lines:
                    xs, cs = zip(*lines[name])
                    ticks.update(xs)
                    ax.plot(xs, [c[y] for c in cs], marker="o", color=colors[name],
                            linestyle="-" if name.startswith("fastrnn[") else "--",
                            label="torch (cuDNN)" if name == "torch" and gpu else name)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T" if x == "T" else "hidden size H (= input size)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{cell} {mode}{' ' + dtype if dtypes else ''}, B={B}, {fixed}={at}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        for ax in axes.flat:
            if not ax.has_data():
                ax.set_visible(False)
        fig.suptitle(machine.label(run["machine"]), fontsize=10)
        path = f"{prefix}-{suffix}.png"
        fig.savefig(path, dpi=90)
        paths.append(path)
    return paths
