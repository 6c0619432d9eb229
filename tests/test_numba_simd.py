"""The Numba CPU kernels' vector arithmetic (backends/_numba_simd.py) and the cells' math on vectors.

The kernels run the cells' pointwise code (cells/) on vectors of units and the units left over one by
one; both must give the same bits, and the float32 activations must stay within 3 ulps of the
exact values, NaN in giving NaN out.
"""
import numpy as np
import pytest
from numba import njit

from fastrnn.backends._numba_simd import (_transpose_masks, prefetch_for_write, vabs, vfloor, vlanes, vload,
                                          vselect_eq, vselect_ge, vselect_gt, vselect_le, vselect_lt, vstore,
                                          vtranspose_tile)
from fastrnn.cells import gru as gru_cell
from fastrnn.cells import lstm as lstm_cell
from fastrnn.cells._scalar import sigmoid, tanh

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 0.35, -0.35, 0.3499, 1.0, -1.0, 20.0, -20.0,
           87.0, -87.0, 88.0, -88.0, 100.0, -100.0, 1e4, -1e4]


def values(dtype, n=4096, seed=0):
    """Special values first, then a wide normal sample; a whole number of vectors."""
    rng = np.random.default_rng(seed)
    out = (rng.standard_normal(n) * 6).astype(dtype)
    out[:len(SPECIAL)] = SPECIAL
    return out.reshape(1, n)


@njit(error_model="numpy")
def activations_by_vector(x, s, t):
    L = vlanes(x)
    for k in range(0, x.shape[1], L):
        a = vload(x, 0, k)
        vstore(s, 0, k, sigmoid(a))
        vstore(t, 0, k, tanh(a))


@njit(error_model="numpy")
def activations_by_unit(x, s, t):
    for k in range(x.shape[1]):
        s[0, k] = sigmoid(x[0, k])
        t[0, k] = tanh(x[0, k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_activations_equal_the_scalar_ones_bit_for_bit(dtype):
    x = values(dtype)
    vs, vt, ss, st = (np.zeros_like(x) for _ in range(4))
    activations_by_vector(x, vs, vt)
    activations_by_unit(x, ss, st)
    np.testing.assert_array_equal(vs, ss)      # (assert_array_equal treats NaN == NaN)
    np.testing.assert_array_equal(vt, st)
    assert np.isnan(vs[0, 0]) and np.isnan(vt[0, 0])


def float32_sample(n=1 << 20, seed=0):
    """The special values, then n float32 of both signs drawn uniformly by bit pattern below 16 (every
    binade alike, subnormals included), then a grid over [-20, 20]; a whole number of vectors."""
    rng = np.random.default_rng(seed)
    magnitudes = rng.integers(0, 0x41800000, n, dtype=np.uint32).view(np.float32)
    signs = np.where(rng.random(n) < 0.5, -1, 1).astype(np.float32)
    x = np.concatenate([np.array(SPECIAL, np.float32), magnitudes * signs, np.linspace(-20, 20, n, dtype=np.float32)])
    return x[:len(x) // 16 * 16].reshape(1, -1)


def test_float32_activations_are_within_a_few_ulps():
    # (measured: within 2.3 ulps (tanh) and 2.7 (sigmoid) over 10^8 such inputs, 2026-11-29)
    x = float32_sample()
    s, t = np.zeros_like(x), np.zeros_like(x)
    activations_by_vector(x, s, t)
    exact = x.astype(np.float64)
    with np.errstate(over="ignore"):
        exact_s = 1 / (1 + np.exp(-exact))
    exact_t = np.tanh(exact)
    finite = ~np.isnan(exact)
    ulp_s = np.spacing(exact_s[finite].astype(np.float32)).astype(np.float64)
    ulp_t = np.spacing(np.abs(exact_t[finite]).astype(np.float32)).astype(np.float64)
    # below -87 the exponential is clamped (e^-87 ~ 1.6e-38, a normal float32): sigmoid's absolute error
    # there is under 2e-38
    assert np.all(np.abs(s[finite] - exact_s[finite]) <= np.maximum(3 * ulp_s, 2e-38))
    assert np.all(np.abs(t[finite] - exact_t[finite]) <= 3 * ulp_t)
    assert np.all((s >= 0) & (s <= 1) | np.isnan(x)) and np.all((np.abs(t) <= 1) | np.isnan(x))


@njit(error_model="numpy")
def cells_by_vector(x, out):
    L = vlanes(x)
    for k in range(0, x.shape[1], L):
        a, b, c = vload(x, 0, k), vload(x, 1, k), vload(x, 2, k)
        h, cs, i, f, g, o = lstm_cell.forward(a, b, a * b, b - a, -c)
        da_i, da_f, da_g, da_o, dc = lstm_cell.backward(c, a, i, f, g, o, b, cs)
        hg, r, z, n = gru_cell.forward(a, b, c, b, a, c, h)
        dr, dz, dn, dghn, dhd = gru_cell.backward(c, r, z, n, b, a)
        for row, v in enumerate((h, cs, i, f, g, o, da_i, da_f, da_g, da_o, dc, hg, r, z, n, dr, dz, dn, dghn, dhd)):
            vstore(out, row, k, v)


@njit(error_model="numpy")
def cells_by_unit(x, out):
    for k in range(x.shape[1]):
        a, b, c = x[0, k], x[1, k], x[2, k]
        h, cs, i, f, g, o = lstm_cell.forward(a, b, a * b, b - a, -c)
        da_i, da_f, da_g, da_o, dc = lstm_cell.backward(c, a, i, f, g, o, b, cs)
        hg, r, z, n = gru_cell.forward(a, b, c, b, a, c, h)
        dr, dz, dn, dghn, dhd = gru_cell.backward(c, r, z, n, b, a)
        for row, v in enumerate((h, cs, i, f, g, o, da_i, da_f, da_g, da_o, dc, hg, r, z, n, dr, dz, dn, dghn, dhd)):
            out[row, k] = v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cells_on_vectors_equal_the_cells_one_unit_at_a_time(dtype):
    x = np.concatenate([values(dtype, 1024, seed) for seed in range(3)])
    by_vector, by_unit = np.zeros((20, 1024), dtype), np.zeros((20, 1024), dtype)
    cells_by_vector(x, by_vector)
    cells_by_unit(x, by_unit)
    np.testing.assert_array_equal(by_vector, by_unit)
    assert np.isnan(by_vector[0, 0])           # NaN in, NaN out


@njit(error_model="numpy")
def arithmetic(x, y, out):
    L = vlanes(x)
    one = x.dtype.type(1.5)
    for k in range(0, x.shape[1], L):
        a, b = vload(x, 0, k), vload(y, 0, k)
        results = (a + b, a - b, a * b, a / b, a + one, one - a, a * one, one / b, -a, abs(a), vabs(b),
                   vfloor(a), vselect_lt(a, b, a, b), vselect_ge(a, one, a, b), vselect_eq(a, a, a, b),
                   vselect_gt(a, b, one, b), vselect_le(a, b, a, one))
        for row in range(len(results)):
            vstore(out, row, k, results[row])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_arithmetic_matches_numpy_elementwise(dtype):
    x, y = values(dtype, 256, 1), values(dtype, 256, 2)
    y[0, :4] = [0.0, -0.0, np.nan, 2.0]
    out = np.zeros((17, 256), dtype)
    arithmetic(x, y, out)
    a, b, one = x[0], y[0], dtype(1.5)
    with np.errstate(all="ignore"):
        expected = [a + b, a - b, a * b, a / b, a + one, one - a, a * one, one / b, -a, np.abs(a), np.abs(b),
                    np.floor(a), np.where(a < b, a, b), np.where(a >= one, a, b), np.where(a == a, a, b),
                    np.where(a > b, one, b), np.where(a <= b, a, one)]
    for row, want in enumerate(expected):
        np.testing.assert_array_equal(out[row], want.astype(dtype), err_msg=f"row {row}")


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_transpose_masks_transpose(lanes):
    """The shuffle rounds of vtranspose_tile, replayed on NumPy rows, give the transpose."""
    tile = np.arange(lanes * lanes).reshape(lanes, lanes)
    rows = list(tile)
    for s, low, high in _transpose_masks(lanes):
        for a in range(lanes):
            if a & s == 0:
                pair = np.concatenate([rows[a], rows[a + s]])
                rows[a], rows[a + s] = pair[low], pair[high]
    np.testing.assert_array_equal(np.array(rows), tile.T)


@njit(error_model="numpy")
def transpose_one_tile(src, dst, i, j, r, c):
    vtranspose_tile(src, i, j, dst, r, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vtranspose_tile_moves_one_tile_and_nothing_else(dtype):
    L = vlanes_of(dtype)
    src = values(dtype, (L + 3) * (2 * L + 1), 3).reshape(L + 3, 2 * L + 1)
    dst = np.full((L + 5, 3 * L), -7.0, dtype)
    transpose_one_tile(src, dst, 2, 1, 4, L + 2)
    expected = np.full_like(dst, -7.0)
    expected[4:4 + L, L + 2:2 * L + 2] = src[2:2 + L, 1:1 + L].T
    np.testing.assert_array_equal(dst, expected)


@njit(error_model="numpy")
def prefetch_then_write(arr, i, j, value):
    prefetch_for_write(arr, i, j)
    prefetch_for_write(arr, arr.shape[0], 0)        # a hint past the array's end: no fault, no effect
    arr[i, j] = value


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prefetch_for_write_changes_nothing_but_the_write_that_follows(dtype):
    arr = values(dtype, 6 * 40, 5).reshape(6, 40)
    expected = arr.copy()
    prefetch_then_write(arr, 5, 39, 2.5)
    expected[5, 39] = 2.5
    np.testing.assert_array_equal(arr, expected)


@njit(error_model="numpy")
def _lanes_for(x):
    return vlanes(x)


def vlanes_of(dtype):
    return _lanes_for(np.zeros((1, 1), dtype))
