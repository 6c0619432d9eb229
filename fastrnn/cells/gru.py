"""GRU pointwise math for one hidden unit of one sequence, forward and backward.

gx = x W_ih^T + b_ih and gh = h W_hh^T + b_hh, split into gates r, z, n:
    r = sigma(gx_r + gh_r),  z = sigma(gx_z + gh_z)
    n = tanh(gx_n + r gh_n)                     linear_before_reset=True (PyTorch, cuDNN)
    n = tanh(gx_n + gh_n),  gh_n from (r h)     linear_before_reset=False (Cho et al.; two phases)
    h' = (1 - z) n + z h
Backward, given dh' (incl. dL/dy):
    da_n = dh' (1-z)(1-n^2);  da_z = dh' (h-n) z(1-z);  dh_direct = dh' z
    linear before reset: da_r = da_n gh_n r(1-r); the recurrent gradient of gate n is da_n r
    Cho: with drh = da_n W_hn (d/d(r h)): da_r = drh h r(1-r); dh_direct += drh r
"""
from numba import njit

from ._scalar import ONE, sigmoid, tanh


@njit(inline="always", cache=True, error_model="numpy")
def gates_rz(a_r, a_z):
    return sigmoid(a_r), sigmoid(a_z)


@njit(inline="always", cache=True, error_model="numpy")
def candidate(a_n):
    return tanh(a_n)


@njit(inline="always", cache=True, error_model="numpy")
def update(z, n, h_prev):
    return (ONE - z) * n + z * h_prev


@njit(inline="always", cache=True, error_model="numpy")
def forward(gx_r, gx_z, gx_n, gh_r, gh_z, gh_n, h_prev):
    """linear_before_reset=True: returns h', r, z, n."""
    r, z = gates_rz(gx_r + gh_r, gx_z + gh_z)
    n = candidate(gx_n + r * gh_n)
    return update(z, n, h_prev), r, z, n


@njit(inline="always", cache=True, error_model="numpy")
def backward_zn(dh, z, n, h_prev):
    """The part shared by both forms: returns da_z, da_n, dh_direct."""
    da_n = dh * (ONE - z) * (ONE - n * n)
    da_z = dh * (h_prev - n) * z * (ONE - z)
    return da_z, da_n, dh * z


@njit(inline="always", cache=True, error_model="numpy")
def backward(dh, r, z, n, gh_n, h_prev):
    """linear_before_reset=True: returns da_r, da_z, da_n, dgh_n, dh_direct."""
    da_z, da_n, dh_direct = backward_zn(dh, z, n, h_prev)
    da_r = da_n * gh_n * r * (ONE - r)
    return da_r, da_z, da_n, da_n * r, dh_direct


@njit(inline="always", cache=True, error_model="numpy")
def backward_reset(drh, r, h_prev):
    """Cho form, given drh = d/d(r h): returns da_r and the part of dh_prev through r h."""
    return drh * h_prev * r * (ONE - r), drh * r
