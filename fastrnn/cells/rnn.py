"""Elman RNN pointwise math for one hidden unit: h' = tanh(a) or relu(a), a = gx + gh.

Backward: da = dh' (1 - h'^2) for tanh, dh' [h' > 0] for relu.
"""
from numba import njit

from ._scalar import ONE, ZERO, tanh


@njit(inline="always", cache=True, error_model="numpy")
def forward(a, relu):
    if relu:
        if a > ZERO:
            return a
        return ZERO if a <= ZERO else a   # NaN stays NaN
    return tanh(a)


@njit(inline="always", cache=True, error_model="numpy")
def backward(dh, h, relu):
    if relu:
        if h > ZERO:
            return dh
        return ZERO if h <= ZERO else h   # NaN h stays NaN
    return dh * (ONE - h * h)
