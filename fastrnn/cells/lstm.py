"""LSTM pointwise math for one hidden unit of one sequence, forward and backward.

    i, f, g, o = sigma(a_i), sigma(a_f), tanh(a_g), sigma(a_o)      (a = x W_ih^T + b_ih + h W_hh^T + b_hh)
    c' = f c + i g,   h' = o tanh(c')
Backward, given dh' (incl. dL/dy) and dc' (carried):
    dc = dc' + dh' o (1 - tanh(c')^2);  da_i = dc g i(1-i);  da_f = dc c f(1-f);
    da_g = dc i (1-g^2);  da_o = dh' tanh(c') o(1-o);  dc_prev = dc f
Plain scalar Python + math: compiled into every Numba kernel (CPU and CUDA).
"""
from numba import njit

from ._scalar import ONE, sigmoid, tanh


@njit(inline="always", cache=True, error_model="numpy")
def gate(k, a):
    """Gate k's activation (k = 0..3: i, f, g, o)."""
    return tanh(a) if k == 2 else sigmoid(a)


@njit(inline="always", cache=True, error_model="numpy")
def state(i, f, g, o, c_prev):
    """Returns h', c'."""
    c = f * c_prev + i * g
    return o * tanh(c), c


@njit(inline="always", cache=True, error_model="numpy")
def forward(a_i, a_f, a_g, a_o, c_prev):
    """Returns h', c', i, f, g, o."""
    i, f, g, o = gate(0, a_i), gate(1, a_f), gate(2, a_g), gate(3, a_o)
    h, c = state(i, f, g, o, c_prev)
    return h, c, i, f, g, o


@njit(inline="always", cache=True, error_model="numpy")
def backward(dh, dc, i, f, g, o, c_prev, c):
    tanh_c = tanh(c)
    dc = dc + dh * o * (ONE - tanh_c * tanh_c)
    da_i = dc * g * i * (ONE - i)
    da_f = dc * c_prev * f * (ONE - f)
    da_g = dc * i * (ONE - g * g)
    da_o = dh * tanh_c * o * (ONE - o)
    return da_i, da_f, da_g, da_o, dc * f
