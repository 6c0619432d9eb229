"""Register-tiled products for the CPU kernels: the recurrent product and whole-sequence GEMMs.

    product:  out[b, j] = sum_k W[row(j), k] * X[b, k]      row(j) = (j % G) * H + u0 + j // G
    gemm_nt:  C[m, n] = sum_k A[m, k] * Bt[n, k]            (both operands read along k)

``row`` walks the G gate rows of hidden units u0, u0+1, ... in PyTorch's gate-major
layout, so the forward reads ``w_hh`` as given (no packing) and a chunk's result holds
all gates of its units together; with G = 1 it is a plain row range (the backward's
transposed weights). The tile is 4 weight rows x 3 batch rows: 12 accumulators that
fit AVX2's 16 vector registers (a 4x4 tile spills). Each accumulator is a dot product
over k, which LLVM vectorises with ``reassoc``; the 4 rows stay in L1 while the batch
streams past them. 1-row and 1-batch variants handle the edges. The tiles take a k range
and either store or add, so a GEMM can block k to keep its operands in L2.
"""
import numpy as np
from numba import njit

FASTMATH = {"reassoc", "contract"}   # no nnan/ninf: NaN in must stay NaN out


@njit(inline="always", error_model="numpy")
def _store4(out, b, j, s0, s1, s2, s3, add):
    if add:
        out[b, j] += s0
        out[b, j + 1] += s1
        out[b, j + 2] += s2
        out[b, j + 3] += s3
    else:
        out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3] = s0, s1, s2, s3


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def tile_4x3(W, r0, r1, r2, r3, X, b, k0, k1, out, j, add):
    zero = W.dtype.type(0)
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = zero
    # an unsigned loop index: Numba then emits no negative-index wraparound, which would keep
    # the loop scalar (slicing 1-D views does the same but costs more for short rows)
    for k in range(np.uint64(k0), np.uint64(k1)):
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
    _store4(out, b, j, s00, s10, s20, s30, add)
    _store4(out, b + 1, j, s01, s11, s21, s31, add)
    _store4(out, b + 2, j, s02, s12, s22, s32, add)


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def tile_4x1(W, r0, r1, r2, r3, X, b, k0, k1, out, j, add):
    zero = W.dtype.type(0)
    s0 = s1 = s2 = s3 = zero
    for k in range(np.uint64(k0), np.uint64(k1)):
        x = X[b, k]
        s0 += W[r0, k] * x
        s1 += W[r1, k] * x
        s2 += W[r2, k] * x
        s3 += W[r3, k] * x
    _store4(out, b, j, s0, s1, s2, s3, add)


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def tile_1x1(W, r, X, b, k0, k1, out, j, add):
    s = W.dtype.type(0)
    for k in range(np.uint64(k0), np.uint64(k1)):
        s += W[r, k] * X[b, k]
    out[b, j] = out[b, j] + s if add else s


@njit(cache=True, error_model="numpy")
def gate_row(j, G, H, u0):
    return (j % G) * H + u0 + j // G


@njit(cache=True, error_model="numpy")
def product(W, G, H, u0, n_rows, X, B, out):
    """out[b, j] = W[gate_row(j), :] . X[b, :] for j < n_rows, b < B."""
    K = X.shape[1]
    j = 0
    while j + 4 <= n_rows:
        r0, r1 = gate_row(j, G, H, u0), gate_row(j + 1, G, H, u0)
        r2, r3 = gate_row(j + 2, G, H, u0), gate_row(j + 3, G, H, u0)
        b = 0
        while b + 3 <= B:
            tile_4x3(W, r0, r1, r2, r3, X, b, 0, K, out, j, False)
            b += 3
        while b < B:
            tile_4x1(W, r0, r1, r2, r3, X, b, 0, K, out, j, False)
            b += 1
        j += 4
    while j < n_rows:
        r = gate_row(j, G, H, u0)
        for b in range(B):
            tile_1x1(W, r, X, b, 0, K, out, j, False)
        j += 1


# GEMM blocking: a chunk is GEMM_M rows of A x GEMM_N rows of Bt, walked in k blocks of GEMM_K
# so that A's block (GEMM_M x GEMM_K) sits in L2 and the 4 rows of Bt in use sit in L1.
GEMM_M, GEMM_N, GEMM_K = 48, 64, 512


@njit(cache=True, error_model="numpy")
def gemm_nt_chunk(A, Bt, C, bias, chunk):
    """The part of C = A Bt^T (+ bias on every row, unless bias is empty) covered by chunk
    number ``chunk`` (row-major over the blocks)."""
    M, K = A.shape
    N = Bt.shape[0]
    n_blocks = (N + GEMM_N - 1) // GEMM_N
    m0, n0 = (chunk // n_blocks) * GEMM_M, (chunk % n_blocks) * GEMM_N
    m1, n1 = min(M, m0 + GEMM_M), min(N, n0 + GEMM_N)
    for k0 in range(0, max(K, 1), GEMM_K):
        k1 = min(K, k0 + GEMM_K)
        add = k0 > 0
        n = n0
        while n + 4 <= n1:
            m = m0
            while m + 3 <= m1:
                tile_4x3(Bt, n, n + 1, n + 2, n + 3, A, m, k0, k1, C, n, add)
                m += 3
            while m < m1:
                tile_4x1(Bt, n, n + 1, n + 2, n + 3, A, m, k0, k1, C, n, add)
                m += 1
            n += 4
        while n < n1:
            for m in range(m0, m1):
                tile_1x1(Bt, n, A, m, k0, k1, C, n, add)
            n += 1
    if bias.shape[0] > 0:
        for m in range(m0, m1):
            for n in range(n0, n1):
                C[m, n] += bias[n]


@njit(cache=True)
def gemm_nt_chunks(M, N):
    return ((M + GEMM_M - 1) // GEMM_M) * ((N + GEMM_N - 1) // GEMM_N)
