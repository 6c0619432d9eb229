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
def forward(a_i, a_f, a_g, a_o, c_prev):
    i = sigmoid(a_i)
    f = sigmoid(a_f)
    g = tanh(a_g)
    o = sigmoid(a_o)
    c = f * c_prev + i * g
    return o * tanh(c), c, i, f, g, o


@njit(inline="always", cache=True, error_model="numpy")
def backward(dh, dc, i, f, g, o, c_prev, c):
    tanh_c = tanh(c)
    dc = dc + dh * o * (ONE - tanh_c * tanh_c)
    da_i = dc * g * i * (ONE - i)
    da_f = dc * c_prev * f * (ONE - f)
    da_g = dc * i * (ONE - g * g)
    da_o = dh * tanh_c * o * (ONE - o)
    return da_i, da_f, da_g, da_o, dc * f
