"""LSTM pointwise math for one hidden unit of one sequence, forward and backward.

    i, f, g, o = sigma(a_i), sigma(a_f), tanh(a_g), sigma(a_o)      (a = x W_ih^T + b_ih + h W_hh^T + b_hh)
    c' = f c + i g,   h' = o tanh(c')
Backward, given dh' (incl. dL/dy) and dc' (carried):
    dc = dc' + dh' o (1 - tanh(c')^2);  da_i = dc g i(1-i);  da_f = dc c f(1-f);
    da_g = dc i (1-g^2);  da_o = dh' tanh(c') o(1-o);  dc_prev = dc f
Plain scalar Python + math: compiled into every Numba kernel (CPU and CUDA).
"""
import math

from numba import njit

from ._scalar import sigmoid


@njit(inline="always", cache=True)
def forward(a_i, a_f, a_g, a_o, c_prev):
    i = sigmoid(a_i)
    f = sigmoid(a_f)
    g = math.tanh(a_g)
    o = sigmoid(a_o)
    c = f * c_prev + i * g
    return o * math.tanh(c), c, i, f, g, o


@njit(inline="always", cache=True)
def backward(dh, dc, i, f, g, o, c_prev, c):
    tanh_c = math.tanh(c)
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    da_i = dc * g * i * (1.0 - i)
    da_f = dc * c_prev * f * (1.0 - f)
    da_g = dc * i * (1.0 - g * g)
    da_o = dh * tanh_c * o * (1.0 - o)
    return da_i, da_f, da_g, da_o, dc * f
