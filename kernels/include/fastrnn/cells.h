// fastrnn/cells.h - the pointwise math of the LSTM, GRU and RNN cells, on one vector of hidden units.
//
// Notation (one hidden unit j of one sequence b; the same for every lane of a vector):
//   gx = x_t W_ih^T + b_ih,  gh = h_{t-1} W_hh^T + b_hh,  split by gate in PyTorch's order.
// LSTM (gates i, f, g, o):
//   i, f, o = sigma(gx + gh),  g = tanh(gx_g + gh_g),  c' = f c + i g,  h' = o tanh(c')
//   backward, given dh' (dL/dy included) and the carried dc':
//   dc = dc' + dh' o (1 - tanh(c')^2);  da_i = dc g i(1-i);  da_f = dc c f(1-f);
//   da_g = dc i (1-g^2);  da_o = dh' tanh(c') o(1-o);  dc_prev = dc f
// GRU (gates r, z, n), h' = (1 - z) n + z h:
//   r = sigma(gx_r + gh_r),  z = sigma(gx_z + gh_z)
//   n = tanh(gx_n + r gh_n)                      linear_before_reset (PyTorch, cuDNN)
//   n = tanh(gx_n + (r h) W_hn^T + b_hn)         Cho et al. 2014 (ONNX's default)
//   backward: da_n = dh' (1-z)(1-n^2);  da_z = dh' (h-n) z(1-z);  dh_direct = dh' z;
//   linear_before_reset: da_r = da_n gh_n r(1-r), the h-side gradient of gate n is da_n r;
//   Cho: with drh = da_n W_hn (d/d(r h)): da_r = drh h r(1-r), dh_direct += drh r.
// RNN: h' = tanh(a) or relu(a), a = gx + gh;  da = dh' (1 - h'^2) or dh' [h' > 0].
//
// These are the equations of fastrnn/cells/*.py (the Numba kernels' single source), written once
// more for C++. Everything here is a template on V, a GCC/Clang vector of float or double, so the
// same code is compiled for each instruction set (and its vector width) the kernels are built for.
//
// Activations: float32 uses branch-free polynomials (Cody-Waite exp, as fastrnn/cells/_scalar.py,
// within a few ulps) so a whole vector is evaluated at once; float64 calls libm per lane, the exact
// path the float64 checks (1e-10 against the reference) rely on. Neither overflows for any finite
// input, and NaN in gives NaN out.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

// Everything here is inlined into the instruction-set-specific kernels (detail/kernels.h): a call
// with 64-byte vectors across a target boundary would go through memory.
#define FASTRNN_INLINE inline __attribute__((always_inline))
// The loops over a register block's accumulators (a few, their count a template constant) must be
// unrolled for the accumulators to live in registers: GCC does so by itself only from -O3 (at -O2 the
// kernels ran 3x slower: T = 512, B = 64, H = 128), so an embedding build's optimisation level
// does not decide it.
#if defined(__clang__)
#define FASTRNN_UNROLL _Pragma("unroll")
#else
#define FASTRNN_UNROLL _Pragma("GCC unroll 16")
#endif

namespace fastrnn {
namespace simd {

// A GCC/Clang vector of W bytes of Real: the kernels use the target's native width (64 bytes with
// AVX-512, 32 with AVX2, 16 on the portable path); wider generic vectors are lowered through memory.
template <class Real, int W> struct VecOf { typedef Real type __attribute__((vector_size(W))); };
template <class Real, int W> using Vec = typename VecOf<Real, W>::type;
template <class V> using Elem = std::decay_t<decltype(std::declval<V>()[0])>;
template <class V> constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(Elem<V>));
template <class V> struct IntOf {
    typedef std::conditional_t<sizeof(Elem<V>) == 4, std::int32_t, std::int64_t> I;
    typedef I type __attribute__((vector_size(sizeof(V))));
};

// Loads and stores of the first n lanes (n < lanes at the tail of a row; the rest read as 0).
// (a whole vector is one instruction; a partial one a short copy)
template <class V> FASTRNN_INLINE V load(const Elem<V>* p, int n) {
    V v = V{};
    if (n == kLanes<V>) std::memcpy(&v, p, sizeof v);
    else std::memcpy(&v, p, sizeof(Elem<V>) * static_cast<std::size_t>(n));
    return v;
}
template <class V> FASTRNN_INLINE V load(const Elem<V>* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
template <class V> FASTRNN_INLINE void store(Elem<V>* p, V v, int n) {
    if (n == kLanes<V>) std::memcpy(p, &v, sizeof v);
    else std::memcpy(p, &v, sizeof(Elem<V>) * static_cast<std::size_t>(n));
}

// ----------------------------------------------------------------------------- activations

// e^x for x <= 0 (clamped at -87, where e^x is still a normal float), float lanes.
template <class V> FASTRNN_INLINE V exp_nonpositive(V x) {
    typedef typename IntOf<V>::type I;
    x = x < V{} - 87.0f ? V{} - 87.0f : x;          // written so that NaN passes through
    const V magic = V{} + 12582912.0f;                  // 1.5 * 2^23: adding it rounds to an integer
    V n = (x * 1.4426950408889634f + magic) - magic;
    V r = x - n * 0.693359375f - n * -2.12194440e-4f;   // ln 2 in two parts: n * hi is exact
    V p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720
                 + r * (1.0f / 5040)))))));
    n = n == n ? n : V{};                                // NaN: any finite scale keeps p's NaN
    I bits = (__builtin_convertvector(n, I) + 127) << 23;
    V scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

FASTRNN_INLINE double sigmoid_scalar(double a) {
    double e = std::exp(-std::fabs(a));
    return a >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

template <class V> FASTRNN_INLINE V sigmoid(V a) {
    if constexpr (std::is_same_v<Elem<V>, float>) {
        V e = exp_nonpositive(a < 0.0f ? a : -a);       // e^-|a| (NaN stays NaN)
        V s = 1.0f / (1.0f + e);
        return a >= 0.0f ? s : e * s;
    } else {
        for (int l = 0; l < kLanes<V>; ++l) a[l] = sigmoid_scalar(a[l]);
        return a;
    }
}

template <class V> FASTRNN_INLINE V tanh(V a) {
    if constexpr (std::is_same_v<Elem<V>, float>) {
        V ax = a < 0.0f ? -a : a;
        V a2 = a * a;
        V small = a + a * a2 * (-1.0f / 3 + a2 * (2.0f / 15 + a2 * (-17.0f / 315 + a2 * (62.0f / 2835
                     + a2 * (-1382.0f / 155925 + a2 * (21844.0f / 6081075))))));
        V e = exp_nonpositive(-2.0f * ax);
        V large = (1.0f - e) / (1.0f + e);
        large = a >= 0.0f ? large : -large;
        return ax < 0.35f ? small : large;
    } else {
        for (int l = 0; l < kLanes<V>; ++l) a[l] = std::tanh(static_cast<double>(a[l]));
        return a;
    }
}

template <class V> FASTRNN_INLINE V relu(V a) {
    V zero = V{};
    return a > zero ? a : (a <= zero ? zero : a);        // NaN stays NaN
}

}  // namespace simd

// ----------------------------------------------------------------------------- cells
namespace cells {
using simd::sigmoid;
using simd::tanh;

template <class V> struct LstmForward { V h, c, i, f, g, o; };

template <class V> FASTRNN_INLINE LstmForward<V> lstm_forward(V a_i, V a_f, V a_g, V a_o, V c_prev) {
    LstmForward<V> s;
    s.i = sigmoid(a_i);
    s.f = sigmoid(a_f);
    s.g = tanh(a_g);
    s.o = sigmoid(a_o);
    s.c = s.f * c_prev + s.i * s.g;
    s.h = s.o * tanh(s.c);
    return s;
}

template <class V> struct LstmBackward { V da_i, da_f, da_g, da_o, dc_prev; };

template <class V> FASTRNN_INLINE LstmBackward<V> lstm_backward(V dh, V dc, V i, V f, V g, V o, V c_prev, V c) {
    V tanh_c = tanh(c);
    dc = dc + dh * o * (1 - tanh_c * tanh_c);
    return {dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
            dh * tanh_c * o * (1 - o), dc * f};
}

template <class V> FASTRNN_INLINE V gru_update(V z, V n, V h_prev) { return (1 - z) * n + z * h_prev; }

template <class V> struct GruBackward { V da_z, da_n, dh_direct; };

// The part both GRU forms share.
template <class V> FASTRNN_INLINE GruBackward<V> gru_backward_zn(V dh, V z, V n, V h_prev) {
    return {dh * (h_prev - n) * z * (1 - z), dh * (1 - z) * (1 - n * n), dh * z};
}

// d/d(pre-activation of r), given d/d(r): sigma' = r (1 - r).
template <class V> FASTRNN_INLINE V sigmoid_backward(V d, V s) { return d * s * (1 - s); }

template <class V> FASTRNN_INLINE V rnn_forward(V a, bool relu) { return relu ? simd::relu(a) : tanh(a); }

template <class V> FASTRNN_INLINE V rnn_backward(V dh, V h, bool relu) {
    if (relu) {
        V zero = V{};
        return h > zero ? dh : (h <= zero ? zero : h);   // NaN h stays NaN
    }
    return dh * (1 - h * h);
}

}  // namespace cells
}  // namespace fastrnn
