"""fastrnn's "cuda" backend against cuDNN (torch.nn.LSTM/GRU on the GPU), in one process, interleaved.

    python benchmarks/compare_cuda.py [--cells lstm,gru] [--seq-len 1024] [--batch 1,8,64,256]
                                      [--hidden 128,256,512,1024] [--rounds 5] [--out results/x.md]

Float32 on both sides with TF32 off (exact float32 products); same weights; inputs as CuPy arrays
for fastrnn and torch tensors for cuDNN. Each round times fastrnn then cuDNN (each call followed by
a device synchronise, wall clock); the table gives medians, the ratio cuDNN / fastrnn (> 1: fastrnn
is faster) and the relative difference of y and of dW_hh against cuDNN. First-call time (compile
included) is reported separately. Rows are printed as they finish, the table again at the end.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _ints(text):
    return [int(v) for v in text.split(",") if v]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", default="1,8,64,256")
    parser.add_argument("--hidden", default="128,256,512,1024")
    parser.add_argument("--extra", default="16x256", help="extra BxH points, e.g. 16x256 (FlashRNN's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="fwd,fwdbwd")
    parser.add_argument("--budget-s", type=float, default=1e9, help="stop starting new rows after this")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import cupy
    import numpy as np
    import torch

    import fastrnn

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(0)
    T = args.seq_len
    points = [(b, h) for h in _ints(args.hidden) for b in _ints(args.batch)]
    points += [tuple(int(v) for v in p.split("x")) for p in args.extra.split(",") if p]
    started = time.perf_counter()
    rows = []
    header = ("| cell | mode | B | H | fastrnn ms | cuDNN ms | cuDNN/fastrnn | first call s | "
              "err y | err dW_hh |\n|---|---|---|---|---|---|---|---|---|---|")
    print(f"# {gpu}; torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; T={T}; float32, TF32 off",
          flush=True)
    print(header, flush=True)
    for cell in args.cells.split(","):
        for B, H in points:
            if time.perf_counter() - started > args.budget_s:
                print(f"(budget reached: skipped the rest from {cell} B={B} H={H})", flush=True)
                break
            module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(H, H).to(device)
            x_t = torch.randn(T, B, H, device=device)
            dy_t = torch.randn(T, B, H, device=device)
            w = [p.detach() for p in (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)]
            cp = lambda t: cupy.asarray(t.detach())  # noqa: E731  (zero-copy view)
            x, dy, (w_ih, w_hh, b_ih, b_hh) = cp(x_t), cp(dy_t), [cp(p) for p in w]
            h0 = cupy.zeros((B, H), cupy.float32)
            fwd = getattr(fastrnn, cell)
            fwd_tape = getattr(fastrnn, f"{cell}_forward")
            bwd = getattr(fastrnn, f"{cell}_backward")
            extra = (h0,) if cell == "gru" else (h0, h0)

            def ours(mode):
                if mode == "fwd":
                    return fwd(x, w_ih, w_hh, b_ih, b_hh, *extra, backend="cuda")[0], None
                y, _, tape = fwd_tape(x, w_ih, w_hh, b_ih, b_hh, *extra, backend="cuda")
                return y, bwd(tape, dy).w_hh

            def theirs(mode):
                if mode == "fwd":
                    with torch.no_grad():
                        return module(x_t)[0], None
                module.zero_grad(set_to_none=True)
                y = module(x_t)[0]
                y.backward(dy_t)
                return y, module.weight_hh_l0.grad

            for mode in args.modes.split(","):
                def timed(fn):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    out = fn(mode)
                    torch.cuda.synchronize()
                    return time.perf_counter() - t0, out
                first, (y_ours, dw_ours) = timed(ours)
                _, (y_ref, dw_ref) = timed(theirs)
                times_ours, times_ref = [], []
                for _ in range(args.rounds):
                    times_ours.append(timed(ours)[0])
                    times_ref.append(timed(theirs)[0])
                rel = lambda a, b: float(abs(cupy.asarray(a) - cupy.asarray(b.detach())).max()  # noqa: E731
                                         / max(float(abs(cupy.asarray(b.detach())).max()), 1e-30))
                ms_ours, ms_ref = statistics.median(times_ours) * 1e3, statistics.median(times_ref) * 1e3
                row = dict(cell=cell, mode=mode, T=T, B=B, H=H, fastrnn_ms=ms_ours, cudnn_ms=ms_ref,
                           speedup=ms_ref / ms_ours, first_call_s=first, err_y=rel(y_ours, y_ref),
                           err_dw_hh=rel(dw_ours, dw_ref) if dw_ours is not None else None,
                           fastrnn_spread=(min(times_ours) * 1e3, max(times_ours) * 1e3),
                           cudnn_spread=(min(times_ref) * 1e3, max(times_ref) * 1e3))
                rows.append(row)
                print(_row_text(row), flush=True)
            torch.cuda.empty_cache()
            cupy.get_default_memory_pool().free_all_blocks()
    table = "\n".join([header] + [_row_text(r) for r in rows])
    print("\nFINAL TABLE\n" + table, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# fastrnn cuda vs cuDNN on {gpu} (T={T}, float32, TF32 off; medians of {args.rounds})\n\n")
            f.write(table + "\n")
        with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
            json.dump(dict(gpu=gpu, torch=torch.__version__, cudnn=torch.backends.cudnn.version(),
                           numpy=np.__version__, rows=rows), f, indent=1)
    return 0


def _row_text(r):
    err_dw = "-" if r["err_dw_hh"] is None else f"{r['err_dw_hh']:.1e}"
    return (f"| {r['cell']} | {r['mode']} | {r['B']} | {r['H']} | {r['fastrnn_ms']:.2f} | {r['cudnn_ms']:.2f} | "
            f"**{r['speedup']:.2f}x** | {r['first_call_s']:.1f} | {r['err_y']:.1e} | {err_dw} |")


if __name__ == "__main__":
    sys.exit(main())
