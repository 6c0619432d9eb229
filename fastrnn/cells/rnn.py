"""Elman RNN pointwise math for one hidden unit: h' = tanh(a) or relu(a), a = gx + gh.

Backward: da = dh' (1 - h'^2) for tanh, dh' [h' > 0] for relu.
"""
import math

from numba import njit


@njit(inline="always", cache=True)
def forward(a, relu):
    if relu:
        if a > 0:
            return a
        return 0.0 * a if a <= 0 else a   # NaN stays NaN
    return math.tanh(a)


@njit(inline="always", cache=True)
def backward(dh, h, relu):
    if relu:
        if h > 0:
            return dh
        return 0.0 * h if h <= 0 else h   # NaN h stays NaN
    return dh * (1.0 - h * h)
