"""The Numba CPU backend's whole-sequence products (backends/_numba_tiles.gemm_chunk) against NumPy.

The sequence tests reach these products only at their own shapes (K = I or H, a few dozen rows), so
the edges are checked here directly: rows past the 6-row micro-kernel blocks (1 to 5 of them), columns past the
2-vector panels, K over several k blocks (GEMM_K), both transposes, a bias or none, and the
accumulating form (C += op(A) op(B)) that the backward's weight gradients use.
"""
import numpy as np
import pytest
from numba import njit

from fastrnn.backends import _numba_tiles as tiles
from fastrnn.backends import numba_cpu


@njit(cache=True)
def _accumulate_all(A, a_t, Bm, b_t, C, bias, panels):
    """C += op(A) op(Bm) (+ bias), every chunk on this thread."""
    tiles.pack_gemm_panels(Bm, b_t, panels, 0, panels.shape[0])
    packed_a = tiles.gemm_a_buffer(C)
    for chunk in range(tiles.gemm_chunks(C.shape[0], C.shape[1], a_t)):
        tiles.gemm_chunk(A, a_t, C, bias, chunk, panels, packed_a, True)


def _operands(M, N, K, a_t, b_t, dtype, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, M) if a_t else (M, K)).astype(dtype)
    Bm = rng.standard_normal((N, K) if b_t else (K, N)).astype(dtype)
    return A, Bm, rng.standard_normal(N).astype(dtype)


def _expected(A, a_t, Bm, b_t):
    a = A.astype(np.float64)
    b = Bm.astype(np.float64)
    return (a.T if a_t else a) @ (b.T if b_t else b)


def _tolerance(dtype, K):
    return (1e-12 if dtype == np.float64 else 2e-5) * np.sqrt(K) * 4


SHAPES = [(1, 1, 1), (3, 20, 7), (7, 3, 5), (6, 32, 16), (8, 33, 40), (13, 40, 300), (16, 64, 17), (250, 130, 9),
          (245, 257, 513)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_t", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("b_t", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_gemm_matches_numpy(M, N, K, a_t, b_t, dtype, with_bias):
    A, Bm, bias = _operands(M, N, K, a_t, b_t, dtype)
    C = numba_cpu._gemm(A, Bm, bias if with_bias else None, a_transposed=a_t, b_transposed=b_t)
    expected = _expected(A, a_t, Bm, b_t) + (bias if with_bias else 0)
    assert C.dtype == dtype and C.shape == (M, N)
    np.testing.assert_allclose(C, expected, rtol=0, atol=_tolerance(dtype, K) * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_t", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("M,N,K", [(7, 3, 5), (13, 40, 300), (245, 257, 513)])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_gemm_accumulates(M, N, K, a_t, dtype, with_bias):
    A, Bm, bias = _operands(M, N, K, a_t, False, dtype, seed=1)
    C0 = np.random.default_rng(2).standard_normal((M, N)).astype(dtype)
    C = C0.copy()
    _accumulate_all(A, a_t, Bm, False, C, bias if with_bias else bias[:0], numba_cpu._panels_of(Bm, False))
    expected = C0 + _expected(A, a_t, Bm, False) + (bias if with_bias else 0)
    np.testing.assert_allclose(C, expected, rtol=0, atol=_tolerance(dtype, K) * np.abs(expected).max())


def test_gemm_refuses_panels_short_of_the_columns():
    # (gemm_chunk reads op(B) only from its panels: one fewer than N columns need would leave C's last ones unset)
    A, Bm, bias = _operands(7, 40, 5, False, False, np.float32)
    panels = numba_cpu._panels_of(Bm, False)
    with pytest.raises(ValueError, match="panels must cover"):
        _accumulate_all(A, False, Bm, False, np.zeros((7, 40), np.float32), bias, panels[:-1])


def test_gemm_nan_propagates():
    A, Bm, bias = _operands(13, 40, 300, False, True, np.float32)
    A[4, 7] = np.nan
    C = numba_cpu._gemm(A, Bm, bias, b_transposed=True)
    assert np.isnan(C[4]).all() and not np.isnan(np.delete(C, 4, axis=0)).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H,K", [(1, 1), (5, 3), (16, 16), (40, 33), (64, 100)])
def test_packed_rows_match_their_definition(H, K, dtype):
    """pack_rows (the forward's W_hh and fused W_ih): panels[g*NT + u, k, l] = W[g*H + u*L + l, k], 0 past
    H; whole tiles go through the register transpose, partial ones and the last K % L rows one by one."""
    G = 3
    L = numba_cpu._lanes(dtype)
    NT = -(-H // L)
    W = np.random.default_rng(1).standard_normal((G * H, K)).astype(dtype)
    panels = np.full((G * NT, K, L), np.nan, dtype)
    tiles.pack_rows(W, G, H, panels, 0, G * NT)
    expected = np.zeros((G, NT * L, K), dtype)
    expected[:, :H] = W.reshape(G, H, K)
    expected = expected.reshape(G, NT, L, K).transpose(0, 1, 3, 2).reshape(G * NT, K, L)
    np.testing.assert_array_equal(panels, expected)


@pytest.mark.parametrize("B", [1, 3, 6])
@pytest.mark.parametrize("K,past", [(40, 0), (300, tiles.REVERSE_MIN_BYTES), (1100, tiles.ROW_STREAMS_BYTES)],
                         ids=["small", "past-reverse-min", "streamed"])
@pytest.mark.parametrize("G", [1, 3, 4])
@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])
def test_panel_product_matches_numpy(B, K, past, G, reverse):
    """The step product on packed panels: 4-row blocks and the rows left over (a unit tile's 3-4 gates in
    one pass at B < 4; else one panel at a time for small panels, three in one pass for panels beyond
    tiles.ROW_STREAMS_BYTES), panels in order or reversed (from tiles.REVERSE_MIN_BYTES of them): ``past``
    is the size the panels exceed, enough tiles for it at this vector width."""
    dtype = np.float32
    L = numba_cpu._lanes(dtype)
    n_tiles = past // (G * K * L * 4) + 1 if past else 3
    rng = np.random.default_rng(2)
    NT = n_tiles + 1                      # the product takes tiles 1..n_tiles of each gate
    panels = rng.standard_normal((G * NT, K, L)).astype(dtype)
    X = rng.standard_normal((B, K)).astype(dtype)
    gs = n_tiles * L
    out = np.full((B, G * gs), np.nan, dtype)
    tiles.panel_product(panels, G, NT, 1, n_tiles, X, B, out, gs, 1 if reverse else 0)   # (the step's index)
    expected = np.einsum("bk,gtkl->bgtl", X.astype(np.float64),
                         panels.reshape(G, NT, K, L)[:, 1:].astype(np.float64)).reshape(B, G * gs)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5 * np.sqrt(K) * np.abs(expected).max())
