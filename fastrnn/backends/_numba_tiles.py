"""Register-blocked products for the CPU kernels (Numba), all in outer-product form on vector
accumulators (_numba_simd.py), with one operand packed into panels of vector width:

    panel_product:  out[b, g*gs + i*L : +L] = X[b, :] P[g*NT + t0 + i]     the recurrent step (P: W_hh's
                    rows packed by unit tiles, pack_rows; or its columns, pack_columns, for dh = dG W_hh)
    gemm_chunk:     C = op(A) op(B), op(B) packed into 2-vector panels       whole-sequence GEMMs

A step's result holds each gate's units side by side (gs columns per gate), for the pointwise code's
vector loads. L = vlanes(...) is fixed when a kernel compiles (_numba_simd.VECTOR_BYTES, by the CPU);
Numba's disk cache keys a kernel by its own file, so a change of the vector width must come with a
change to every file whose kernels use it (or a fresh NUMBA_CACHE_DIR): a kernel cached for the old
width beside Python code sized for the new one computes garbage.
"""
import numpy as np
from numba import njit

from ._numba_simd import (prefetch_for_write, vextract, vfma, vlanes, vload, vsplat, vstore, vstore_add,
                          vtranspose_tile, vzero)

# The step products (panel_product and the kernels it calls) and the GEMMs (gemm_chunk and its
# micro-kernels) compile without Numba's reference counting (_nrt=False; none of them allocates; the
# packing functions keep it): with it, calls and array views began and ended with atomic increments
# and decrements of counts that both workers share (the per-step panel views, the GEMM blocks' stores).
# Removed from the step products: forward at B = 1 1.07-1.14x (LSTM, GRU; T = 128, H = 128-256, one
# process), elsewhere within noise; from the GEMMs: see _blocks6_body.

# ----------------------------------------------------------------------------- packed step products
# The recurrent product of a step in outer-product form, as the C++ kernels do it: the weights of
# L consecutive units (one vector) are packed once per call into a panel P[k, 0:L], and
#     out[b, col:col+L] = sum_k P[k, :] * X[b, k]
# runs on vector accumulators (no horizontal sums): 4 rows of X x 3 panels is 12 accumulators, 7
# loads per 12 FMAs. Forward panels hold W_hh's rows (pack_rows: gate g, unit tile u at g*NT + u);
# backward ones hold W_hh's columns for dh = dG W_hh (pack_columns).

@njit(cache=True, error_model="numpy")
def pack_rows(W, G, H, panels, first, last):
    """panels[p, k, l] = W[g*H + u*L + l, k] (0 past H) for panels p = g*NT + u in [first, last)."""
    L = panels.shape[2]
    NT = panels.shape[0] // G
    for p in range(first, last):
        g, u = p // NT, p % NT
        _transpose_rows(W, g * H + u * L, min(L, H - u * L), panels[p], 0)


@njit(cache=True, error_model="numpy")
def _transpose_rows(W, row, n, panel, col):
    """panel[k, col + l] = W[row + l, k] for l < n (0 for n <= l < L, one vector's lanes), k < W's
    columns: whole L x L tiles transposed in registers (vtranspose_tile), the rest one value at a time."""
    L = vlanes(panel)
    K = W.shape[1]
    k0 = 0
    if n == L:
        while k0 + L <= K:
            vtranspose_tile(W, row, k0, panel, k0, col)
            k0 += L
    for k in range(k0, K):                  # the rest: L rows read side by side, the panel written in order
        for l in range(n):
            panel[k, col + l] = W[row + l, k]
        for l in range(n, L):
            panel[k, col + l] = 0


@njit(cache=True, error_model="numpy")
def pack_columns(W, panels, first, last):
    """panels[u, j, l] = W[j, u*L + l] (0 past W's columns) for u in [first, last)."""
    L = panels.shape[2]
    N = W.shape[1]
    for u in range(first, last):
        panel = panels[u]
        n = min(L, N - u * L)
        for j in range(W.shape[0]):
            if n == L:
                vstore(panel, j, 0, vload(W, j, u * L))
            else:
                for l in range(L):
                    panel[j, l] = W[j, u * L + l] if l < n else 0


@njit(cache=True, error_model="numpy", _nrt=False)
def _rows4_panels3(P0, P1, P2, X, b, out, c0, c1, c2):
    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = a30 = a31 = a32 = vzero(out)
    for k in range(X.shape[1]):
        p0, p1, p2 = vload(P0, k, 0), vload(P1, k, 0), vload(P2, k, 0)
        x = vsplat(X[b, k])
        a00, a01, a02 = vfma(p0, x, a00), vfma(p1, x, a01), vfma(p2, x, a02)
        x = vsplat(X[b + 1, k])
        a10, a11, a12 = vfma(p0, x, a10), vfma(p1, x, a11), vfma(p2, x, a12)
        x = vsplat(X[b + 2, k])
        a20, a21, a22 = vfma(p0, x, a20), vfma(p1, x, a21), vfma(p2, x, a22)
        x = vsplat(X[b + 3, k])
        a30, a31, a32 = vfma(p0, x, a30), vfma(p1, x, a31), vfma(p2, x, a32)
    vstore(out, b, c0, a00)
    vstore(out, b, c1, a01)
    vstore(out, b, c2, a02)
    vstore(out, b + 1, c0, a10)
    vstore(out, b + 1, c1, a11)
    vstore(out, b + 1, c2, a12)
    vstore(out, b + 2, c0, a20)
    vstore(out, b + 2, c1, a21)
    vstore(out, b + 2, c2, a22)
    vstore(out, b + 3, c0, a30)
    vstore(out, b + 3, c1, a31)
    vstore(out, b + 3, c2, a32)


@njit(cache=True, error_model="numpy", _nrt=False)
def _rows4_panels2(P0, P1, X, b, out, c0, c1):
    acc00 = acc01 = acc10 = acc11 = acc20 = acc21 = acc30 = acc31 = vzero(out)
    for k in range(X.shape[1]):
        p0, p1 = vload(P0, k, 0), vload(P1, k, 0)
        x = vsplat(X[b, k])
        acc00, acc01 = vfma(p0, x, acc00), vfma(p1, x, acc01)
        x = vsplat(X[b + 1, k])
        acc10, acc11 = vfma(p0, x, acc10), vfma(p1, x, acc11)
        x = vsplat(X[b + 2, k])
        acc20, acc21 = vfma(p0, x, acc20), vfma(p1, x, acc21)
        x = vsplat(X[b + 3, k])
        acc30, acc31 = vfma(p0, x, acc30), vfma(p1, x, acc31)
    vstore(out, b, c0, acc00)
    vstore(out, b, c1, acc01)
    vstore(out, b + 1, c0, acc10)
    vstore(out, b + 1, c1, acc11)
    vstore(out, b + 2, c0, acc20)
    vstore(out, b + 2, c1, acc21)
    vstore(out, b + 3, c0, acc30)
    vstore(out, b + 3, c1, acc31)


@njit(cache=True, error_model="numpy", _nrt=False)
def _rows4_panel1(P0, X, b, out, c0):
    # two partial sums per row over even and odd k: 8 independent FMA chains
    acc0 = acc1 = acc2 = acc3 = acc4 = acc5 = acc6 = acc7 = vzero(out)
    K = X.shape[1]
    k = 0
    while k + 2 <= K:
        p, q = vload(P0, k, 0), vload(P0, k + 1, 0)
        acc0, acc1 = vfma(p, vsplat(X[b, k]), acc0), vfma(q, vsplat(X[b, k + 1]), acc1)
        acc2, acc3 = vfma(p, vsplat(X[b + 1, k]), acc2), vfma(q, vsplat(X[b + 1, k + 1]), acc3)
        acc4, acc5 = vfma(p, vsplat(X[b + 2, k]), acc4), vfma(q, vsplat(X[b + 2, k + 1]), acc5)
        acc6, acc7 = vfma(p, vsplat(X[b + 3, k]), acc6), vfma(q, vsplat(X[b + 3, k + 1]), acc7)
        k += 2
    if k < K:
        p = vload(P0, k, 0)
        acc0, acc2 = vfma(p, vsplat(X[b, k]), acc0), vfma(p, vsplat(X[b + 1, k]), acc2)
        acc4, acc6 = vfma(p, vsplat(X[b + 2, k]), acc4), vfma(p, vsplat(X[b + 3, k]), acc6)
    vstore(out, b, c0, acc0 + acc1)
    vstore(out, b + 1, c0, acc2 + acc3)
    vstore(out, b + 2, c0, acc4 + acc5)
    vstore(out, b + 3, c0, acc6 + acc7)


@njit(cache=True, error_model="numpy", _nrt=False)
def _row1_panels3(P0, P1, P2, X, b, out, c0, c1, c2):
    # one row against three panels in one pass over k: three streams of weights in flight, and two
    # partial sums each over even and odd k (6 FMA chains)
    a0 = a1 = a2 = e0 = e1 = e2 = vzero(out)
    K = X.shape[1]
    k = 0
    while k + 2 <= K:
        x, y = vsplat(X[b, k]), vsplat(X[b, k + 1])
        a0, a1, a2 = vfma(vload(P0, k, 0), x, a0), vfma(vload(P1, k, 0), x, a1), vfma(vload(P2, k, 0), x, a2)
        e0, e1, e2 = (vfma(vload(P0, k + 1, 0), y, e0), vfma(vload(P1, k + 1, 0), y, e1),
                      vfma(vload(P2, k + 1, 0), y, e2))
        k += 2
    if k < K:
        x = vsplat(X[b, k])
        a0, a1, a2 = vfma(vload(P0, k, 0), x, a0), vfma(vload(P1, k, 0), x, a1), vfma(vload(P2, k, 0), x, a2)
    vstore(out, b, c0, a0 + e0)
    vstore(out, b, c1, a1 + e1)
    vstore(out, b, c2, a2 + e2)


@njit(cache=True, error_model="numpy", _nrt=False)
def _row1_panel1(P0, X, b, out, c0):
    # four partial sums over k mod 4: a single row would otherwise wait on one FMA chain
    acc0 = acc1 = acc2 = acc3 = vzero(out)
    K = X.shape[1]
    k = 0
    while k + 4 <= K:
        acc0 = vfma(vload(P0, k, 0), vsplat(X[b, k]), acc0)
        acc1 = vfma(vload(P0, k + 1, 0), vsplat(X[b, k + 1]), acc1)
        acc2 = vfma(vload(P0, k + 2, 0), vsplat(X[b, k + 2]), acc2)
        acc3 = vfma(vload(P0, k + 3, 0), vsplat(X[b, k + 3]), acc3)
        k += 4
    while k < K:
        acc0 = vfma(vload(P0, k, 0), vsplat(X[b, k]), acc0)
        k += 1
    vstore(out, b, c0, (acc0 + acc1) + (acc2 + acc3))


@njit(cache=True, error_model="numpy", _nrt=False)
def _row1_panels4(P0, P1, P2, P3, X, b, out, c0, c1, c2, c3):
    # one row against four panels in one pass over k (an LSTM unit tile's four gates): four streams of
    # weights in flight, two partial sums each over even and odd k (8 FMA chains)
    a0 = a1 = a2 = a3 = e0 = e1 = e2 = e3 = vzero(out)
    K = X.shape[1]
    k = 0
    while k + 2 <= K:
        x, y = vsplat(X[b, k]), vsplat(X[b, k + 1])
        a0, a1 = vfma(vload(P0, k, 0), x, a0), vfma(vload(P1, k, 0), x, a1)
        a2, a3 = vfma(vload(P2, k, 0), x, a2), vfma(vload(P3, k, 0), x, a3)
        e0, e1 = vfma(vload(P0, k + 1, 0), y, e0), vfma(vload(P1, k + 1, 0), y, e1)
        e2, e3 = vfma(vload(P2, k + 1, 0), y, e2), vfma(vload(P3, k + 1, 0), y, e3)
        k += 2
    if k < K:
        x = vsplat(X[b, k])
        a0, a1 = vfma(vload(P0, k, 0), x, a0), vfma(vload(P1, k, 0), x, a1)
        a2, a3 = vfma(vload(P2, k, 0), x, a2), vfma(vload(P3, k, 0), x, a3)
    vstore(out, b, c0, a0 + e0)
    vstore(out, b, c1, a1 + e1)
    vstore(out, b, c2, a2 + e2)
    vstore(out, b, c3, a3 + e3)


@njit(cache=True, error_model="numpy", _nrt=False)
def _few_rows_by_tile(panels, G, NT, t0, n_tiles, X, B, out, gs, reverse):
    """panel_product for B < 4 rows and G = 3 or 4 gates: each unit tile's gates in one pass, as the C++
    kernels do (3-4 streams and 6-8 sums in flight, where a panel at a time had 1 and 4). Measured in one
    process against a panel at a time (benchmarks/ab_inprocess.py, 3 processes, float32, 2 threads,
    forward T = 256-512): LSTM B = 1 H = 64-256 1.10-1.17x, H = 512 1.02x, B = 2-3 1.11-1.16x; GRU B = 1
    H = 64-256 1.08-1.18x, B = 2-3 1.12-1.17x. Not for an LSTM whose panels stream from L3
    (ROW_STREAMS_BYTES): H = 1024 0.95x against three consecutive panels a pass."""
    L = panels.shape[2]
    for j in range(n_tiles):
        i = n_tiles - 1 - j if reverse else j
        P0, P1, P2 = panels[t0 + i], panels[NT + t0 + i], panels[2 * NT + t0 + i]
        c = i * L
        for b in range(B):
            if G == 4:
                _row1_panels4(P0, P1, P2, panels[3 * NT + t0 + i], X, b, out, c, gs + c, 2 * gs + c, 3 * gs + c)
            else:
                _row1_panels3(P0, P1, P2, X, b, out, c, gs + c, 2 * gs + c)


# Past this many bytes of a product's panels, the single rows that _few_rows_by_tile does not take (the B % 4
# of B >= 4, one or two gates, an LSTM at B < 4 whose weights stream from L3) read three consecutive
# panels in one pass, else one at a time. Measured (numba, forward, B = 1, T = 256, 2 threads, separate
# processes alternated, three panels / one at a time): LSTM H = 128 1.06, H = 256 1.05, H = 512 1.01 (2 MiB
# a worker), H = 1024 0.97 (8 MiB), GRU H = 256 0.99, H = 1024 0.95 (6 MiB); the by-tile grouping, measured
# in one process, beat one at a time by 8-18% up to H = 256 (_few_rows_by_tile).
ROW_STREAMS_BYTES = 4 << 20
# From this many bytes of a step's panels, odd steps read them in reverse (panel_product's ``step``); below,
# all of them stay in L2 (1 MiB a core here) anyway, and in reverse the prefetcher restarts at every panel:
# 0.96-0.98x at H = 128, B = 1 (128 KiB a worker), where H = 256 (512 KiB) still gained 1.02-1.05x.
REVERSE_MIN_BYTES = 512 << 10


@njit(cache=True, error_model="numpy", _nrt=False)
def panel_product(panels, G, NT, t0, n_tiles, X, B, out, gs, step):
    """out[b, g*gs + i*L : +L] = X[b, :] panels[g*NT + t0 + i] for g < G, i < n_tiles, b < B: the
    G gates' products of unit tiles t0..t0+n_tiles-1, gate-major with gs columns per gate.

    ``step``: the index of the step the product is for; odd steps read the panels in reverse. A step reads all of its
    panels, and the cache keeps the last ones read: in the order of the step before, those are evicted
    by the first ones long before they come round again where the panels outgrow L2 (an LSTM at H = 512
    and B = 1: 2 MiB a worker, 1 MiB L2); in reverse, the next step starts on them. Measured in one
    process against the same order every step (benchmarks/ab_inprocess.py, 3 processes, float32, forward,
    B = 1): LSTM H = 512 1.13-1.16x, GRU H = 512 1.15-1.19x, H = 1024 1.10-1.15x; B = 2-3, H = 512 1.05-1.09x;
    forward+backward B = 1 1.00-1.16x; B = 8 1.00-1.03x. Only for panels of REVERSE_MIN_BYTES or more. The
    same bits: each output's sum runs over k as before."""
    L = panels.shape[2]
    count = G * n_tiles
    # B < 4 rows with 3 or 4 gates: a unit tile's gates in one pass (_few_rows_by_tile); else the rows
    # left by the 4-row blocks one panel at a time while the weights come from L2, three in one pass
    # (three streams in flight) when they stream from L3 (ROW_STREAMS_BYTES)
    panel_bytes = count * X.shape[1] * L * panels.itemsize
    streams = panel_bytes > ROW_STREAMS_BYTES
    reverse = step % 2 == 1 and panel_bytes >= REVERSE_MIN_BYTES
    if B < 4 and (G == 3 or G == 4 and not streams):
        _few_rows_by_tile(panels, G, NT, t0, n_tiles, X, B, out, gs, reverse)
        return
    n_groups = (count + 2) // 3
    for j in range(n_groups):
        # 3 panels at a time, then 2 or 1 for the rest: with 4-cycle FMAs on 2 pipes, 8 sums in flight
        # are the bare minimum, and 2 panels' 8 accumulators left the pipes idle (4 rows x 3 panels: 10-15%
        # faster on one thread than 4 x 2, with AVX-512 and with AVX2)
        q = 3 * (n_groups - 1 - j if reverse else j)
        n_p = min(3, count - q)
        P0, c0 = panels[_panel_index(q, n_tiles, NT, t0)], _panel_column(q, n_tiles, gs, L)
        P1, c1 = panels[_panel_index(q + 1 if n_p > 1 else q, n_tiles, NT, t0)], _panel_column(q + 1, n_tiles, gs, L)
        P2, c2 = panels[_panel_index(q + 2 if n_p > 2 else q, n_tiles, NT, t0)], _panel_column(q + 2, n_tiles, gs, L)
        b = 0
        while b + 4 <= B:
            if n_p == 3:
                _rows4_panels3(P0, P1, P2, X, b, out, c0, c1, c2)
            elif n_p == 2:
                _rows4_panels2(P0, P1, X, b, out, c0, c1)
            else:
                _rows4_panel1(P0, X, b, out, c0)
            b += 4
        while b < B:
            if n_p == 3 and streams:
                _row1_panels3(P0, P1, P2, X, b, out, c0, c1, c2)
            else:
                _row1_panel1(P0, X, b, out, c0)
                if n_p > 1:
                    _row1_panel1(P1, X, b, out, c1)
                if n_p > 2:
                    _row1_panel1(P2, X, b, out, c2)
            b += 1


@njit(inline="always", error_model="numpy")
def _panel_index(q, n_tiles, NT, t0):
    """Where the q-th panel of a step product (gate q // n_tiles, tile q % n_tiles) lies in ``panels``."""
    return q // n_tiles * NT + t0 + q % n_tiles


@njit(inline="always", error_model="numpy")
def _panel_column(q, n_tiles, gs, L):
    """The first column of the q-th panel's result in ``out``."""
    return q // n_tiles * gs + q % n_tiles * L


# ----------------------------------------------------------------------------- whole-sequence GEMMs
# C = op(A) op(B), op(X) = X or X^T, every operand row-major as the kernels store it: an
# outer-product micro-kernel (6 rows of C x 2 vectors of columns: 12 vector accumulators, the
# classic AVX2 shape, kept for AVX-512's 16-lane vectors) broadcasts elements of op(A) and loads 2
# vectors of a row of op(B). op(B) is first packed, once per call, into contiguous panels of 2
# vectors' width (pack_gemm_panels: K x 2L each), which every row block then reads with unit
# stride: read in place, a panel's rows lie a row of B apart, and at N = 512 or 2048 float32 columns (2 or 8 KiB) they all fell into the same
# few L1 sets (the input projection of an H = 512 LSTM ran at 67 GFLOP/s on 2 threads); packed
# per chunk instead of once, the copies of B^T cost a quarter of the time. A chunk is GEMM_M x
# GEMM_N of C, walked in k blocks of GEMM_K so that a panel's block (16 KiB) stays in L1.
GEMM_M, GEMM_N, GEMM_K = 240, 128, 256
GEMM_N_TN = 4 * GEMM_N         # columns of a TN chunk (gemm_chunks)


@njit(cache=True, error_model="numpy")
def pack_gemm_panels(Bm, b_t, panels, first, last):
    """panels[p, k, :] = op(Bm)[k, p*2L : (p+1)*2L] for p in [first, last), k < op(Bm)'s rows (panels
    may have room for more); a last panel past op(Bm)'s N columns is filled with zeros."""
    L = panels.shape[2] // 2
    K, N = (Bm.shape[1], Bm.shape[0]) if b_t else Bm.shape
    for p in range(first, last):
        panel, n = panels[p], p * 2 * L
        if b_t:                                 # Bm's rows n.. as the panel's two vectors of columns
            _transpose_rows(Bm, n, max(0, min(L, N - n)), panel, 0)
            _transpose_rows(Bm, n + L, max(0, min(L, N - n - L)), panel, L)
        elif n + 2 * L <= N:
            for k in range(K):
                vstore(panel, k, 0, vload(Bm, k, n))
                vstore(panel, k, L, vload(Bm, k, n + L))
        else:
            for k in range(K):
                for j in range(2 * L):
                    panel[k, j] = Bm[k, n + j] if n + j < N else 0


@njit(inline="always", error_model="numpy")
def _put(C, m, n, acc, init, bias, cols):
    """C[m, n:n+L] += acc, or (``init``) = acc + bias[0, n:n+L] (bias: a row, or empty for none); only
    the first ``cols`` lanes where fewer than L are C's (a last panel past C's columns; none if <= 0)."""
    if cols < vlanes(C):
        _put_lanes(C, m, n, acc, init, bias, cols)
    elif not init:
        vstore_add(C, m, n, acc)
    elif bias.shape[1] > 0:
        vstore(C, m, n, acc + vload(bias, 0, n))
    else:
        vstore(C, m, n, acc)


@njit(cache=True, error_model="numpy")
def _put_lanes(C, m, n, acc, init, bias, cols):
    # (a call, not inlined 12 times into the micro-kernels)
    for j in range(cols):
        value = vextract(acc, j)
        if not init:
            C[m, n + j] += value
        else:
            C[m, n + j] = value + bias[0, n + j] if bias.shape[1] > 0 else value


@njit(inline="always", error_model="numpy")
def _store_panel(C, m, n, L, cols, init, bias, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51):
    _put(C, m, n, c00, init, bias, cols)
    _put(C, m, n + L, c01, init, bias, cols - L)
    _put(C, m + 1, n, c10, init, bias, cols)
    _put(C, m + 1, n + L, c11, init, bias, cols - L)
    _put(C, m + 2, n, c20, init, bias, cols)
    _put(C, m + 2, n + L, c21, init, bias, cols - L)
    _put(C, m + 3, n, c30, init, bias, cols)
    _put(C, m + 3, n + L, c31, init, bias, cols - L)
    _put(C, m + 4, n, c40, init, bias, cols)
    _put(C, m + 4, n + L, c41, init, bias, cols - L)
    _put(C, m + 5, n, c50, init, bias, cols)
    _put(C, m + 5, n + L, c51, init, bias, cols - L)


@njit(inline="always", error_model="numpy")
def _prefetch_tile(C, m, n, width):
    """The cache lines of C[m:m+6, n:n+width] fetched for writing before a micro-kernel's k loop."""
    for r in range(6):
        prefetch_for_write(C, m + r, n)
        prefetch_for_write(C, m + r, n + width - 1)


# Bp is one packed panel: row k holds op(B)[k, n:n+2L]. The micro-kernels read op(A)'s element (row, k)
# through an accessor chosen outside the k loop (a branch on the layout inside it halved their speed):
# A's rows in place (NN: A[row, k]), A's columns in place (TN, the rows the 6-row blocks leave: A[k, row]),
# or At, A's k block k0.. transposed (TN's 6-row blocks: At[row, k - k0]). ``init``: the first k block of a
# product that overwrites C: the tile is stored (with the bias row added), not added to C (a separate
# pass setting C to the bias ran as a scalar loop: 8% of an LSTM forward at B = 8, H = 128).
@njit(inline="always", error_model="numpy")
def _a_in_place(A, row, k, k0):
    return A[row, k]


@njit(inline="always", error_model="numpy")
def _a_columns(A, row, k, k0):
    return A[k, row]


@njit(inline="always", error_model="numpy")
def _a_transposed(At, row, k, k0):
    return At[row, k - k0]


@njit(inline="always", error_model="numpy")
def _blocks6_body(a_at, A, a_row, Bp, C, m, n_blocks, n, cols, k0, k1, init, bias):
    # Each block's C lines are fetched for writing before its k loop: stores to lines that are not
    # cached wait on them (a 8160 x 512 x 128 GEMM writing all of C ran at 35 GF/s a thread, at 50
    # with the prefetch, and 54 writing one L2-resident block over and over). One call for all the
    # blocks: a call a block (passing 4 arrays, spilling the 12 sums) cost 30-45 ns, 10% at K = 128.
    # The functions that run this (and the rows left, _panel4, _panel1) compile without Numba's
    # reference counting (_nrt=False; they allocate nothing): with it, every block's stores began with
    # atomic increments and decrements of the arrays' counts (the conditional call to _put_lanes kept
    # Numba's pruning from removing them), on counts that both workers share, and the 12 sums spilled
    # around those calls. Without: the 8160 x 512 x 128 GEMM 47-52 -> 60-64 GF/s on one thread (NumPy's
    # OpenBLAS sgemm, same machine: 53-55), 1024 x 512 x 128 51-53 -> 60-62 (OpenBLAS 60-62).
    L = vlanes(C)
    for mb in range(n_blocks):
        i, r = a_row + 6 * mb, m + 6 * mb
        _prefetch_tile(C, r, n, 2 * L)
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = vzero(C)
        for k in range(k0, k1):
            b0, b1 = vload(Bp, k, 0), vload(Bp, k, L)
            a = vsplat(a_at(A, i, k, k0))
            c00, c01 = vfma(a, b0, c00), vfma(a, b1, c01)
            a = vsplat(a_at(A, i + 1, k, k0))
            c10, c11 = vfma(a, b0, c10), vfma(a, b1, c11)
            a = vsplat(a_at(A, i + 2, k, k0))
            c20, c21 = vfma(a, b0, c20), vfma(a, b1, c21)
            a = vsplat(a_at(A, i + 3, k, k0))
            c30, c31 = vfma(a, b0, c30), vfma(a, b1, c31)
            a = vsplat(a_at(A, i + 4, k, k0))
            c40, c41 = vfma(a, b0, c40), vfma(a, b1, c41)
            a = vsplat(a_at(A, i + 5, k, k0))
            c50, c51 = vfma(a, b0, c50), vfma(a, b1, c51)
        _store_panel(C, r, n, L, cols, init, bias, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51)


@njit(cache=True, error_model="numpy", _nrt=False)
def _blocks6(A, a_t, Bp, C, m, n_blocks, n, cols, k0, k1, init, bias):
    """C[m:m + 6*n_blocks, n:n+cols] (+)= op(A)'s rows against the panel Bp, 6 rows x 2 vectors at a time:
    A's rows m.. in place, or (``a_t``) the rows 0.. of A's transposed block (gemm_chunk's packed_a)."""
    if a_t:
        _blocks6_body(_a_transposed, A, 0, Bp, C, m, n_blocks, n, cols, k0, k1, init, bias)
    else:
        _blocks6_body(_a_in_place, A, m, Bp, C, m, n_blocks, n, cols, k0, k1, init, bias)


@njit(cache=True, error_model="numpy", _nrt=False)
def _panel1(A, a_t, Bp, C, m, n, cols, k0, k1, init, bias):
    L = vlanes(C)
    c0 = c1 = vzero(C)
    for k in range(k0, k1):
        a = vsplat(A[k, m] if a_t else A[m, k])
        c0, c1 = vfma(a, vload(Bp, k, 0), c0), vfma(a, vload(Bp, k, L), c1)
    _put(C, m, n, c0, init, bias, cols)
    _put(C, m, n + L, c1, init, bias, cols - L)


@njit(inline="always", error_model="numpy")
def _panel4_body(a_at, A, Bp, C, m, rows, n, cols, k0, k1, init, bias):
    # rows past the block's end repeat its last row (computed, not stored): the 8 sums stay in flight
    L = vlanes(C)
    m1, m2, m3 = m + min(1, rows - 1), m + min(2, rows - 1), m + min(3, rows - 1)
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = vzero(C)
    for k in range(k0, k1):
        b0, b1 = vload(Bp, k, 0), vload(Bp, k, L)
        a = vsplat(a_at(A, m, k, k0))
        c00, c01 = vfma(a, b0, c00), vfma(a, b1, c01)
        a = vsplat(a_at(A, m1, k, k0))
        c10, c11 = vfma(a, b0, c10), vfma(a, b1, c11)
        a = vsplat(a_at(A, m2, k, k0))
        c20, c21 = vfma(a, b0, c20), vfma(a, b1, c21)
        a = vsplat(a_at(A, m3, k, k0))
        c30, c31 = vfma(a, b0, c30), vfma(a, b1, c31)
    _put(C, m, n, c00, init, bias, cols)
    _put(C, m, n + L, c01, init, bias, cols - L)
    if rows > 1:
        _put(C, m1, n, c10, init, bias, cols)
        _put(C, m1, n + L, c11, init, bias, cols - L)
    if rows > 2:
        _put(C, m2, n, c20, init, bias, cols)
        _put(C, m2, n + L, c21, init, bias, cols - L)
    if rows > 3:
        _put(C, m3, n, c30, init, bias, cols)
        _put(C, m3, n + L, c31, init, bias, cols - L)


@njit(cache=True, error_model="numpy", _nrt=False)
def _panel4(A, a_t, Bp, C, m, rows, n, cols, k0, k1, init, bias):
    """Rows m..m+rows-1 (2 <= rows <= 4) of op(A) against the panel Bp: rows the 6-row blocks leave, read
    in place. Always 4 rows' 8 sums (a row at a time, _panel1, has 2 chains waiting on the FMAs' latency,
    a quarter of the pipes; at T * B = 16 rows, 4 of them left, those took 13% of a GRU forward at B = 1,
    H = 512). Each row's sum runs in the same order as _panel1's, so the results are the same bits."""
    if a_t:         # (the layout chosen outside the k loop: a branch inside it halved the 6-row kernels)
        _panel4_body(_a_columns, A, Bp, C, m, rows, n, cols, k0, k1, init, bias)
    else:
        _panel4_body(_a_in_place, A, Bp, C, m, rows, n, cols, k0, k1, init, bias)


@njit(cache=True, error_model="numpy")
def gemm_a_buffer(C):
    """One worker's buffer for gemm_chunk's transposed blocks of A (op(A) = A^T). (Allocated here, not by
    the caller: Numba's disk cache does not see a change to another module's constants, so a caller
    compiled with an older GEMM_M would keep a buffer too small for this module's blocks.)"""
    return np.empty((GEMM_M, GEMM_K), C.dtype)


@njit(cache=True, error_model="numpy")
def _transpose_block(A, k0, k1, m0, width, out):
    """out[j, k - k0] = A[k, m0 + j] for j < width, k0 <= k < k1: whole L x L tiles transposed in
    registers (vtranspose_tile), the edges one value at a time."""
    L = vlanes(out)
    j_full, k_full = width // L * L, (k1 - k0) // L * L
    for k in range(0, k_full, L):           # (L of A's rows at a time, each read along its length)
        for j in range(0, j_full, L):
            vtranspose_tile(A, k0 + k, m0 + j, out, j, k)
    for j in range(width):
        for k in range(0 if j >= j_full else k_full, k1 - k0):
            out[j, k] = A[k0 + k, m0 + j]


@njit(cache=True, error_model="numpy", _nrt=False)
def gemm_chunk(A, a_t, C, bias, chunk, panels, packed_a, accumulate):
    """The chunk-th GEMM_M x GEMM_N block (GEMM_M x GEMM_N_TN for TN: gemm_chunks) of C = op(A) op(Bm)
    (+ bias on every row if not empty; C += that when ``accumulate``); op(A) = A^T where a_t;
    panels: op(Bm) packed (pack_gemm_panels), all of it read from there; packed_a: this worker's
    gemm_a_buffer.

    Per k block: for TN, A's rows k0..k1 (columns m0..m1) are first transposed into packed_a (GEMM_M x
    GEMM_K, in L x L register tiles), so that the 6-row micro-kernel reads op(A)'s rows with unit stride
    in k, as NN reads A's (read from an untransposed copy, a new cache line for every k, TN ran at half
    NN's speed: 59 against 116 GFLOP/s on 2 threads, M = 2048, N = 512, K = 2048; transposed, 109); then
    each panel's block (in L1) meets every 6-row block of the chunk (in L2) in turn."""
    M, N = C.shape
    K = A.shape[0] if a_t else A.shape[1]
    L = vlanes(C)
    W = 2 * L                               # columns per micro-kernel
    width = GEMM_N_TN if a_t else GEMM_N
    n_blocks = (N + width - 1) // width
    m0, n0 = (chunk // n_blocks) * GEMM_M, (chunk % n_blocks) * width
    m1, n1 = min(M, m0 + GEMM_M), min(N, n0 + width)
    # the panels: a last one past N columns (zero-filled by pack_gemm_panels) stores only C's columns
    # (those columns took a scalar loop before: 2.4 ms for a 1001 x 77 x 45 GEMM, now 0.25)
    if panels.shape[0] * W < N:
        raise ValueError("gemm_chunk: the panels must cover op(Bm)'s columns (numba_cpu._gemm_panels_shape)")
    p0, p1 = n0 // W, (n1 + W - 1) // W
    m_blocks = (m1 - m0) // 6
    m_vec = m0 + m_blocks * 6               # rows past it: the 4-row and 1-row kernels
    bias_row = bias.reshape((1, bias.shape[0]))
    if K == 0 and not accumulate:           # (no k block to store C)
        for m in range(m0, m1):
            for n in range(n0, n1):
                C[m, n] = bias[n] if bias.shape[0] > 0 else 0
    for k0 in range(0, K, GEMM_K):
        k1 = min(K, k0 + GEMM_K)
        init = k0 == 0 and not accumulate
        if a_t:                             # the block of op(A) = A^T that the 6-row blocks read
            _transpose_block(A, k0, k1, m0, 6 * m_blocks, packed_a)
        for p in range(p0, p1):
            n = p * W
            cols = min(W, N - n)
            if a_t:
                _blocks6(packed_a, True, panels[p], C, m0, m_blocks, n, cols, k0, k1, init, bias_row)
            else:
                _blocks6(A, False, panels[p], C, m0, m_blocks, n, cols, k0, k1, init, bias_row)
            for m in range(m_vec, m1, 4):        # the rows left: 4 at a time, a last single one alone
                if m1 - m > 1:
                    _panel4(A, a_t, panels[p], C, m, min(4, m1 - m), n, cols, k0, k1, init, bias_row)
                else:
                    _panel1(A, a_t, panels[p], C, m, n, cols, k0, k1, init, bias_row)
    if accumulate and bias.shape[0] > 0:
        for m in range(m0, m1):
            for n in range(n0, n1):
                C[m, n] += bias[n]


@njit(cache=True)
def gemm_chunks(M, N, a_t):
    """How many chunks gemm_chunk cuts C (M x N) into: GEMM_M x GEMM_N blocks, or for op(A) = A^T (``a_t``)
    GEMM_M x GEMM_N_TN, so that each block of A is transposed for 4 times as many columns (the transposes
    took 5% of a GRU forward+backward at B = 64, H = 256, two per block)."""
    width = GEMM_N_TN if a_t else GEMM_N
    return ((M + GEMM_M - 1) // GEMM_M) * ((N + width - 1) // width)
