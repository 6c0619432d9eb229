"""Run an LSTM forward and backward in NumPy and check the gradient by finite differences.

    python examples/quickstart.py
"""
import time

import numpy as np

import fastrnn

rng = np.random.default_rng(0)
T, B, I, H = 50, 8, 32, 64                      # steps, batch, input size, hidden size
x = rng.standard_normal((T, B, I))
w_ih = rng.uniform(-H ** -0.5, H ** -0.5, (4 * H, I))   # PyTorch layout, gates i, f, g, o
w_hh = rng.uniform(-H ** -0.5, H ** -0.5, (4 * H, H))
b_ih, b_hh = np.zeros(4 * H), np.zeros(4 * H)
lengths = rng.integers(1, T + 1, size=B)        # variable-length sequences

dy = rng.standard_normal((T, B, H))             # dL/dy for the loss L = sum(dy * y)
timings = []
for _ in range(2):                              # the first call compiles (or loads from the cache)
    start = time.perf_counter()
    y, (h_n, c_n), tape = fastrnn.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, lengths=lengths)
    grads = fastrnn.lstm_backward(tape, dy)
    timings.append(time.perf_counter() - start)
print(f"backend {tape.backend!r}: LSTM T={T} B={B} I={I} H={H} forward+backward in {timings[1] * 1e3:.2f} ms "
      f"(first call, with compilation or cache load: {timings[0]:.1f} s)")
print(f"y {y.shape}, h_n {h_n.shape}, grads.w_hh {grads.w_hh.shape}, grads.x {grads.x.shape}")

# check a few entries of dL/dW_hh against central finite differences
worst = 0.0
for row, col in [(0, 0), (H + 3, 5), (2 * H + 7, H - 1), (4 * H - 1, 11)]:
    eps, saved = 1e-6, w_hh[row, col]
    w_hh[row, col] = saved + eps
    plus = np.sum(dy * fastrnn.lstm(x, w_ih, w_hh, b_ih, b_hh, lengths=lengths)[0])
    w_hh[row, col] = saved - eps
    minus = np.sum(dy * fastrnn.lstm(x, w_ih, w_hh, b_ih, b_hh, lengths=lengths)[0])
    w_hh[row, col] = saved
    numeric = (plus - minus) / (2 * eps)
    worst = max(worst, abs(numeric - grads.w_hh[row, col]) / max(abs(numeric), 1e-12))
print(f"dL/dW_hh vs finite differences at 4 entries: worst relative error {worst:.1e}")
print(f"outputs past each length are zero: {all(np.all(y[n:, b] == 0) for b, n in enumerate(lengths))}")
assert worst < 1e-5, "gradient check failed"
print("OK")
