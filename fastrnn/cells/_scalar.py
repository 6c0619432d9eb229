"""Scalar activations for the Numba kernels: float32 versions LLVM can vectorise, libm for float64.

A loop calling libm's expf/tanhf stays scalar (about 5 ns an element here); these float32
versions are branch-free arithmetic (Cody-Waite range reduction, a degree-7 polynomial, and a
bit-cast for 2^n), so a loop of them becomes AVX2 code (under 1 ns an element), within
about 3 float32 ulps. float64 keeps libm: it is the exact path the float64 checks rely on.

    sigmoid(a) = 1 / (1 + e^-a), evaluated as 1/(1+e) or e/(1+e) with e = exp(-|a|) <= 1
    tanh(a)    = a + a^3 p(a^2) for |a| < 0.35, else sign(a) (1 - e) / (1 + e), e = exp(-2|a|)
Both never overflow, and NaN in gives NaN out. Kernels using them need error_model="numpy"
(no ZeroDivisionError branch, which would stop vectorisation).
"""
import math

import llvmlite.ir as llvm_ir
import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

from ..backends._numba_simd import (Vector, fma_scalar, vextract, vfloor, vfma, vinsert, vpow2, vselect_eq,
                                    vselect_ge, vselect_lt, vwidth)

F = np.float32
# float32 constants keep float32 arithmetic in float32 (a Python float would promote it to float64)
ZERO, HALF, ONE, TWO = F(0), F(0.5), F(1), F(2)
_LOG2E = F(1.4426950408889634)
_LN2_HI, _LN2_LO = F(0.693359375), F(-2.12194440e-4)     # ln 2 split so n * LN2_HI is exact
_EXP_LO = F(-87.0)                                        # e^-87 is still a normal float32
_EXP_POLY = tuple(F(1.0 / math.factorial(k)) for k in range(2, 8))
_TANH_SMALL = F(0.35)
_TANH_POLY = (F(-1 / 3), F(2 / 15), F(-17 / 315), F(62 / 2835), F(-1382 / 155925), F(21844 / 6081075))


@intrinsic
def _float32_from_bits(typingctx, bits):
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, llvm_ir.IntType(32))
        return builder.bitcast(value, llvm_ir.FloatType())
    return types.float32(bits), codegen


# Branch-free building blocks, for a scalar or (in the CPU kernels) a Vector of units: the float32
# functions below are written once with them and compile for both. select_*(a, b, x, y) is
# ``x if a <op> b else y`` (lane by lane; a NaN comparison takes y, as in Python).
def select_lt(a, b, x, y):
    return x if a < b else y


def select_ge(a, b, x, y):
    return x if a >= b else y


def select_eq(a, b, x, y):
    return x if a == b else y


def floor(x):
    return np.floor(x)


def mul_add(a, b, c):
    """a * b + c, one FMA where the CPU has it (the polynomials' Horner steps: half the instructions)."""
    return a * b + c


def pow2(n):
    """2^n, float32, for an integral n in [-126, 127]."""
    raise NotImplementedError("pow2 is for Numba-compiled code")


def _any_vector(*args):
    return any(isinstance(a, Vector) for a in args)


for _select, _vector_select in ((select_lt, vselect_lt), (select_ge, vselect_ge), (select_eq, vselect_eq)):
    def _register(python_select=_select, vector_select=_vector_select):
        @overload(python_select, target="cpu")
        def _select_overload(a, b, x, y):
            if _any_vector(a, b, x, y):
                return lambda a, b, x, y: vector_select(a, b, x, y)
            return python_select
    _register()


@overload(mul_add, target="cpu")
def _mul_add_overload(a, b, c):
    if _any_vector(a, b, c):
        return lambda a, b, c: vfma(a, b, c)
    return lambda a, b, c: fma_scalar(a, b, c)


@overload(floor, target="cpu")
def _floor_overload(x):
    if isinstance(x, Vector):
        return lambda x: vfloor(x)
    return lambda x: np.floor(x)


@overload(pow2, target="cpu")
def _pow2_overload(n):
    if isinstance(n, Vector):
        return lambda n: vpow2(n)
    return lambda n: _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(cache=True, error_model="numpy")
def _exp_nonpositive_f32(x):
    """e^x for x <= 0 (clamped at -87), float32, vectorisable."""
    x = select_lt(x, _EXP_LO, _EXP_LO, x)      # written so that NaN passes through
    n = floor(mul_add(x, _LOG2E, HALF))
    r = mul_add(n, -_LN2_LO, mul_add(n, -_LN2_HI, x))
    c2, c3, c4, c5, c6, c7 = _EXP_POLY
    q = mul_add(r, mul_add(r, mul_add(r, mul_add(r, mul_add(r, c7, c6), c5), c4), c3), c2)
    p = mul_add(r, mul_add(r, q, ONE), ONE)
    n = select_eq(n, n, n, ZERO)               # NaN: any finite scale keeps p's NaN
    return p * pow2(n)


@njit(cache=True, error_model="numpy")
def _sigmoid_f32(a):
    e = _exp_nonpositive_f32(-abs(a))
    s = ONE / (ONE + e)
    return select_ge(a, ZERO, s, e * s)


@njit(cache=True, error_model="numpy")
def _tanh_f32(a):
    ax = abs(a)
    a2 = a * a
    c3, c5, c7, c9, c11, c13 = _TANH_POLY
    small = mul_add(a * a2, mul_add(a2, mul_add(a2, mul_add(a2, mul_add(a2, mul_add(a2, c13, c11), c9), c7), c5), c3), a)
    e = _exp_nonpositive_f32(-TWO * ax)
    large = (ONE - e) / (ONE + e)
    large = select_ge(a, ZERO, large, -large)
    return select_lt(ax, _TANH_SMALL, small, large)


@njit(cache=True, error_model="numpy")
def _sigmoid_f64(a):
    e = math.exp(-abs(a))
    return 1.0 / (1.0 + e) if a >= 0 else e / (1.0 + e)


@njit(cache=True, error_model="numpy")
def _tanh_f64(a):
    return math.tanh(a)


# float64 vectors: libm lane by lane (the exact path the float64 checks rely on)
@njit(cache=True, error_model="numpy")
def _sigmoid_f64_lanes(a):
    out = a
    for i in range(vwidth(a)):
        out = vinsert(out, i, _sigmoid_f64(vextract(a, i)))
    return out


@njit(cache=True, error_model="numpy")
def _tanh_f64_lanes(a):
    out = a
    for i in range(vwidth(a)):
        out = vinsert(out, i, _tanh_f64(vextract(a, i)))
    return out


def sigmoid(a):
    """1 / (1 + exp(-a)), stable for every input (Numba-compiled code only)."""
    raise NotImplementedError("sigmoid is for Numba-compiled code")


def tanh(a):
    """tanh(a) (Numba-compiled code only)."""
    raise NotImplementedError("tanh is for Numba-compiled code")


def _is_float32(a):
    return isinstance(a, types.Float) and a.bitwidth == 32


@overload(sigmoid, target="cpu")
def _sigmoid_overload(a):
    if isinstance(a, Vector):
        return (lambda a: _sigmoid_f32(a)) if _is_float32(a.dtype) else (lambda a: _sigmoid_f64_lanes(a))
    if isinstance(a, types.Float):
        return (lambda a: _sigmoid_f32(a)) if _is_float32(a) else (lambda a: _sigmoid_f64(a))


@overload(tanh, target="cpu")
def _tanh_overload(a):
    if isinstance(a, Vector):
        return (lambda a: _tanh_f32(a)) if _is_float32(a.dtype) else (lambda a: _tanh_f64_lanes(a))
    if isinstance(a, types.Float):
        return (lambda a: _tanh_f32(a)) if _is_float32(a) else (lambda a: _tanh_f64(a))
