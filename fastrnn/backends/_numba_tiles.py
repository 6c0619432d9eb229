"""Register-tiled products for the persistent CPU kernels.

    out[b, j] = sum_k W[row(j), k] * X[b, k]      row(j) = (j % G) * H + u0 + j // G

``row`` walks the G gate rows of hidden units u0, u0+1, ... in PyTorch's gate-major
layout, so the forward reads ``w_hh`` as given (no packing) and a chunk's result holds
all gates of its units together; with G = 1 it is a plain row range (the backward's
transposed weights). The tile is 4 weight rows x 3 batch rows: 12 accumulators that
fit AVX2's 16 vector registers (a 4x4 tile spills). Each accumulator is a dot product
over k, which LLVM vectorises with ``reassoc``; the 4 rows stay in L1 while the batch
streams past them. 1-row and 1-batch variants handle the edges.
"""
from numba import njit

FASTMATH = {"reassoc", "contract"}   # no nnan/ninf: NaN in must stay NaN out


@njit(fastmath=FASTMATH, cache=True)
def tile_4x3(W, r0, r1, r2, r3, X, b, K, out, j):
    zero = W.dtype.type(0)
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = zero
    for k in range(K):
        w0, w1, w2, w3 = W[r0, k], W[r1, k], W[r2, k], W[r3, k]
        x0, x1, x2 = X[b, k], X[b + 1, k], X[b + 2, k]
        s00 += w0 * x0
        s01 += w0 * x1
        s02 += w0 * x2
        s10 += w1 * x0
        s11 += w1 * x1
        s12 += w1 * x2
        s20 += w2 * x0
        s21 += w2 * x1
        s22 += w2 * x2
        s30 += w3 * x0
        s31 += w3 * x1
        s32 += w3 * x2
    out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3] = s00, s10, s20, s30
    out[b + 1, j], out[b + 1, j + 1], out[b + 1, j + 2], out[b + 1, j + 3] = s01, s11, s21, s31
    out[b + 2, j], out[b + 2, j + 1], out[b + 2, j + 2], out[b + 2, j + 3] = s02, s12, s22, s32


@njit(fastmath=FASTMATH, cache=True)
def tile_4x1(W, r0, r1, r2, r3, X, b, K, out, j):
    zero = W.dtype.type(0)
    s0 = s1 = s2 = s3 = zero
    for k in range(K):
        x = X[b, k]
        s0 += W[r0, k] * x
        s1 += W[r1, k] * x
        s2 += W[r2, k] * x
        s3 += W[r3, k] * x
    out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3] = s0, s1, s2, s3


@njit(fastmath=FASTMATH, cache=True)
def tile_1x1(W, r, X, b, K, out, j):
    s = W.dtype.type(0)
    for k in range(K):
        s += W[r, k] * X[b, k]
    out[b, j] = s


@njit(cache=True)
def gate_row(j, G, H, u0):
    return (j % G) * H + u0 + j // G


@njit(cache=True)
def product(W, G, H, u0, n_rows, X, B, out):
    """out[b, j] = W[gate_row(j), :] . X[b, :] for j < n_rows, b < B."""
    K = X.shape[1]
    j = 0
    while j + 4 <= n_rows:
        r0, r1 = gate_row(j, G, H, u0), gate_row(j + 1, G, H, u0)
        r2, r3 = gate_row(j + 2, G, H, u0), gate_row(j + 3, G, H, u0)
        b = 0
        while b + 3 <= B:
            tile_4x3(W, r0, r1, r2, r3, X, b, K, out, j)
            b += 3
        while b < B:
            tile_4x1(W, r0, r1, r2, r3, X, b, K, out, j)
            b += 1
        j += 4
    while j < n_rows:
        r = gate_row(j, G, H, u0)
        for b in range(B):
            tile_1x1(W, r, X, b, K, out, j)
        j += 1
