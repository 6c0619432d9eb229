// The cost and the accuracy of the C++ kernels' float32 activations (cells.h), against a cheaper
// rational tanh of the form ONNX Runtime's MLAS uses (Eigen's x P(x^2) / Q(x^2), clamped at +-9; our
// own fit here), to show why the kernels keep the exponential-based ones
// (see benchmarks/results/cpu-bounds-epyc-2core.md).
//
//   g++ -O3 -std=c++17 -mavx2 -mfma -Wno-psabi -I kernels/include benchmarks/cpp/activations.cpp -o /tmp/activations
//   /tmp/activations            # cycles per 8 units of an LSTM cell, then max errors over sampled floats
//
// Cycles assume the clock given by FASTRNN_GHZ (default 3.17, the 2-core EPYC VM's measured FMA clock).
// The rational alternative: tanh(x) = x P(x^2) / Q(x^2) on |x| <= 9 (degree 4 each, a minimax fit of
// tanh(x)/x to 2.1e-8 relative), sigmoid(x) = (1 + tanh(x / 2)) / 2.
#include <fastrnn/cells.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace fastrnn;
typedef simd::Vec<float, 32> V;

namespace rational {
inline V tanh(V x) {
    x = x > 9.0f ? V{} + 9.0f : x;
    x = x < -9.0f ? V{} - 9.0f : x;
    const V s = x * x;
    const V p = (((1.335475522e-08f * s + 2.060917655e-05f) * s + 3.495595065e-03f) * s + 1.338103191e-01f) * s
                + 9.999999795e-01f;
    const V q = (((7.776604447e-07f * s + 3.285645297e-04f) * s + 2.587700990e-02f) * s + 4.671434752e-01f) * s
                + 1.0f;
    return x * p / q;
}
inline V sigmoid(V a) { return 0.5f + 0.5f * rational::tanh(0.5f * a); }
}  // namespace rational

namespace library {
inline V tanh(V a) { return simd::tanh(a); }
inline V sigmoid(V a) { return simd::sigmoid(a); }
}  // namespace library

// One LSTM cell per 8 units, as the forward step runs it: 4 gate activations, c, h = o tanh(c).
template <V (*Sig)(V), V (*Tanh)(V)>
__attribute__((noinline)) void lstm_cells(const float* a, float* c, float* h, float* act, long n) {
    for (long i = 0; i < n; i += 8) {
        V ig = Sig(simd::load<V>(a + 4 * i)), fg = Sig(simd::load<V>(a + 4 * i + 8));
        V gg = Tanh(simd::load<V>(a + 4 * i + 16)), og = Sig(simd::load<V>(a + 4 * i + 24));
        V cn = fg * simd::load<V>(c + i) + ig * gg;
        simd::store(c + i, cn, 8);
        simd::store(h + i, og * Tanh(cn), 8);
        simd::store(act + 4 * i, ig, 8);
        simd::store(act + 4 * i + 8, fg, 8);
        simd::store(act + 4 * i + 16, gg, 8);
        simd::store(act + 4 * i + 24, og, 8);
    }
}

template <class F> double median_ns(F f, int rounds = 31, int reps = 2000) {
    std::vector<double> t;
    for (int r = 0; r < rounds; ++r) {
        auto a = std::chrono::steady_clock::now();
        for (int i = 0; i < reps; ++i) f();
        t.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - a).count() / reps);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// Max error over every `stride`-th positive float below `hi`, and its negative: (ulps, absolute).
template <V (*F)(V)> void max_error(bool is_tanh, float hi, unsigned stride, double& ulps, double& absolute) {
    ulps = absolute = 0;
    unsigned end;
    std::memcpy(&end, &hi, 4);
    for (unsigned u = 1; u < end; u += 8 * stride) {
        V x;
        for (int l = 0; l < 8; ++l) {
            unsigned b = u + l * stride;
            std::memcpy(&x[l], &b, 4);
        }
        for (int sign = 0; sign < 2; ++sign, x = -x) {
            V y = F(x);
            for (int l = 0; l < 8; ++l) {
                double xd = x[l], exact = is_tanh ? std::tanh(xd) : 1 / (1 + std::exp(-xd));
                float rounded = static_cast<float>(std::fabs(exact));
                double ulp = std::nextafter(rounded, INFINITY) - rounded, err = std::fabs(y[l] - exact);
                absolute = std::max(absolute, err);
                if (exact != 0 && std::fabs(exact) > 1e-6) ulps = std::max(ulps, err / ulp);
            }
        }
    }
}

int main() {
    const char* env = std::getenv("FASTRNN_GHZ");
    const double ghz = env ? std::atof(env) : 3.17;
    const long n = 1024;
    std::vector<float> a(4 * n), c(n), h(n), act(4 * n);
    for (long i = 0; i < 4 * n; ++i) a[i] = static_cast<float>(i % 97) * 0.05f - 2.4f;
    for (long i = 0; i < n; ++i) c[i] = static_cast<float>(i % 13) * 0.1f - 0.6f;
    for (int round = 0; round < 3; ++round) {
        double lib = median_ns([&] { lstm_cells<library::sigmoid, library::tanh>(a.data(), c.data(), h.data(), act.data(), n); });
        double rat = median_ns([&] { lstm_cells<rational::sigmoid, rational::tanh>(a.data(), c.data(), h.data(), act.data(), n); });
        std::printf("LSTM cell, cycles per 8 units: library (exp-based) %.0f, rational %.0f\n", lib * ghz / (n / 8),
                    rat * ghz / (n / 8));
    }
    double u, e;
    max_error<library::tanh>(true, 12.0f, 61, u, e);
    std::printf("library  tanh:    max %.2f ulp, max abs error %.2e\n", u, e);
    max_error<library::sigmoid>(false, 30.0f, 61, u, e);
    std::printf("library  sigmoid: max %.2f ulp (where sigmoid > 1e-6), max abs error %.2e\n", u, e);
    max_error<rational::tanh>(true, 12.0f, 61, u, e);
    std::printf("rational tanh:    max %.2f ulp, max abs error %.2e\n", u, e);
    max_error<rational::sigmoid>(false, 30.0f, 61, u, e);
    std::printf("rational sigmoid: max %.2f ulp (where sigmoid > 1e-6), max abs error %.2e\n", u, e);
}
