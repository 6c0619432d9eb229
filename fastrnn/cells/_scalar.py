"""Scalar activation functions shared by every cell's pointwise code (compiled by Numba)."""
import math

from numba import njit


@njit(inline="always", cache=True)
def sigmoid(a):
    # exp of a non-positive argument only: no overflow for any input; NaN propagates
    e = math.exp(-abs(a))
    return 1.0 / (1.0 + e) if a >= 0 else e / (1.0 + e)
