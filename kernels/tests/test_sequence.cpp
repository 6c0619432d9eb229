// Checks fastrnn/sequence.h against a plain double-precision loop of the textbook equations (the same
// as fastrnn/backends/reference.py): forward outputs directly, every gradient by central differences
// of that loop's loss  L = sum(y * dy) + sum(h_n * dh_n) + sum(c_n * dc_n).
// Every cell form, with lengths (one sequence of length 1, one of T), H not a multiple of the tile
// width, several threads, and the LSTM with projections (h_t = W_hr m_t of size P); float against the
// same loop with a float-sized tolerance.
// Exit status 0 when everything matches; the first mismatch is printed.
#include <fastrnn/sequence.h>

#include <atomic>
#include <thread>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

using fastrnn::Cell;
typedef std::vector<double> Vd;

struct Case {
    Cell cell;
    long T, B, I, H;
    Vd x, w_ih, w_hh, b_ih, b_hh, h0, c0, dy, dh_n, dc_n;
    std::vector<std::int64_t> lengths;
    long P = 0;           // LSTM with projections: w_hr (P, H); h, h0, y have P columns (else H)
    Vd w_hr;
    long state() const { return P ? P : H; }
};

double sig(double a) { return 1.0 / (1.0 + std::exp(-a)); }

// The oracle: y, h_n, c_n of the problem, step by step.
void naive_forward(const Case& k, Vd& y, Vd& h_n, Vd& c_n) {
    const long T = k.T, B = k.B, I = k.I, H = k.H, G = fastrnn::num_gates(k.cell), P = k.state();
    Vd h = k.h0, c = k.c0;
    y.assign(T * B * P, 0.0);
    for (long t = 0; t < T; ++t)
        for (long b = 0; b < B; ++b) {
            if (t >= k.lengths[b]) continue;                 // carried unchanged, y stays 0
            Vd gx(G * H), gh(G * H), hb(h.begin() + b * P, h.begin() + (b + 1) * P), m(H);
            for (long r = 0; r < G * H; ++r) {
                gx[r] = k.b_ih[r];
                for (long i = 0; i < I; ++i) gx[r] += k.w_ih[r * I + i] * k.x[(t * B + b) * I + i];
                gh[r] = k.b_hh[r];
                for (long j = 0; j < P; ++j) gh[r] += k.w_hh[r * P + j] * hb[j];
            }
            if (k.cell == Cell::gru_cho) {                   // n's product takes r * h
                for (long u = 0; u < H; ++u) {
                    gh[2 * H + u] = k.b_hh[2 * H + u];
                    for (long j = 0; j < H; ++j)
                        gh[2 * H + u] += k.w_hh[(2 * H + u) * H + j] * sig(gx[j] + gh[j]) * hb[j];
                }
            }
            for (long u = 0; u < H; ++u) {
                double hn;
                if (k.cell == Cell::lstm) {
                    double i = sig(gx[u] + gh[u]), f = sig(gx[H + u] + gh[H + u]);
                    double g = std::tanh(gx[2 * H + u] + gh[2 * H + u]), o = sig(gx[3 * H + u] + gh[3 * H + u]);
                    c[b * H + u] = f * c[b * H + u] + i * g;
                    hn = o * std::tanh(c[b * H + u]);
                } else if (k.cell == Cell::gru || k.cell == Cell::gru_cho) {
                    double r = sig(gx[u] + gh[u]), z = sig(gx[H + u] + gh[H + u]);
                    double n = k.cell == Cell::gru ? std::tanh(gx[2 * H + u] + r * gh[2 * H + u])
                                                   : std::tanh(gx[2 * H + u] + gh[2 * H + u]);
                    hn = (1 - z) * n + z * hb[u];
                } else {
                    double a = gx[u] + gh[u];
                    hn = k.cell == Cell::rnn_tanh ? std::tanh(a) : (a > 0 ? a : 0.0);
                }
                m[u] = hn;
            }
            for (long q = 0; q < P; ++q) {                   // h_t = W_hr m_t with projections, else m_t
                double hq = k.P ? 0.0 : m[q];
                for (long u = 0; k.P && u < H; ++u) hq += k.w_hr[q * H + u] * m[u];
                h[b * P + q] = hq;
                y[(t * B + b) * P + q] = hq;
            }
        }
    h_n = h;
    c_n = c;
}

double loss(const Case& k) {
    Vd y, h_n, c_n;
    naive_forward(k, y, h_n, c_n);
    double L = 0;
    for (size_t i = 0; i < y.size(); ++i) L += y[i] * k.dy[i];
    for (size_t i = 0; i < h_n.size(); ++i) L += h_n[i] * k.dh_n[i];
    if (k.cell == Cell::lstm)
        for (size_t i = 0; i < c_n.size(); ++i) L += c_n[i] * k.dc_n[i];
    return L;
}

// dL/d(array) by central differences, every element.
Vd numeric_grad(Case k, Vd Case::*array) {
    Vd g((k.*array).size());
    const double eps = 1e-6;
    for (size_t i = 0; i < g.size(); ++i) {
        double saved = (k.*array)[i];
        (k.*array)[i] = saved + eps;
        double plus = loss(k);
        (k.*array)[i] = saved - eps;
        double minus = loss(k);
        (k.*array)[i] = saved;
        g[i] = (plus - minus) / (2 * eps);
    }
    return g;
}

std::atomic<int> failures{0};

template <class Real> void expect_close(const std::string& what, const std::vector<Real>& got, const Vd& want, double rtol) {
    double diff = 0, scale = 1e-300;
    for (size_t i = 0; i < want.size(); ++i) {
        if (!std::isfinite(static_cast<double>(got[i]))) diff = INFINITY;
        diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
        scale = std::max(scale, std::fabs(want[i]));
    }
    if (!(diff / scale <= rtol)) {
        std::printf("FAIL %s: relative error %.3g > %.3g\n", what.c_str(), diff / scale, rtol);
        ++failures;
    }
}

template <class Real> std::vector<Real> as(const Vd& v) { return std::vector<Real>(v.begin(), v.end()); }

template <class Real> void check(const Case& k, int threads, double rtol_forward, double rtol_grad, const std::string& name) {
    const long T = k.T, B = k.B, I = k.I, H = k.H, G = fastrnn::num_gates(k.cell), P = k.state();
    auto x = as<Real>(k.x), w_ih = as<Real>(k.w_ih), w_hh = as<Real>(k.w_hh), b_ih = as<Real>(k.b_ih),
         b_hh = as<Real>(k.b_hh), h0 = as<Real>(k.h0), c0 = as<Real>(k.c0), dy = as<Real>(k.dy),
         dh_n = as<Real>(k.dh_n), dc_n = as<Real>(k.dc_n), w_hr = as<Real>(k.w_hr);
    const Real nan = std::nan("");
    std::vector<Real> y(T * B * P, nan), h_n(B * P, nan), c_n(B * H, nan), th((T + 1) * B * P, nan),
        tc((T + 1) * B * H, nan), gates(T * B * G * H, nan), ghn(T * B * H, nan), tm(T * B * H, nan);
    fastrnn::Problem<Real> p{k.cell, T, B, I, H, x.data(), w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data(),
                             k.lengths.data(), k.P ? w_hr.data() : nullptr, k.P};
    fastrnn::Tape<Real> tape{th.data(), tc.data(), gates.data(), ghn.data(), tm.data()};
    fastrnn::forward(p, h0.data(), c0.data(), y.data(), h_n.data(), c_n.data(), &tape, threads);

    Vd ry, rh, rc;
    naive_forward(k, ry, rh, rc);
    expect_close(name + " y", y, ry, rtol_forward);
    expect_close(name + " h_n", h_n, rh, rtol_forward);
    if (k.cell == Cell::lstm) expect_close(name + " c_n", c_n, rc, rtol_forward);

    // inference (no tape) gives the same outputs
    std::vector<Real> y2(T * B * P, nan), h_n2(B * P, nan), c_n2(B * H, nan);
    fastrnn::forward(p, h0.data(), c0.data(), y2.data(), h_n2.data(), c_n2.data(),
                     static_cast<const fastrnn::Tape<Real>*>(nullptr), threads);
    expect_close(name + " y (inference)", y2, ry, rtol_forward);

    // weights packed by one call (PackedForward not ready) and read by the next (ready), which is
    // given NaN for every weight and bias: it must read only the packed copy
    std::vector<Real> packed(fastrnn::packed_forward_size(p), nan), y3(T * B * P, nan), h_n3(B * P, nan),
        c_n3(B * H, nan);
    std::vector<Real> w_ih_nan(w_ih.size(), nan), w_hh_nan(w_hh.size(), nan), b_nan(G * H, nan),
        w_hr_nan(w_hr.size(), nan);
    fastrnn::Problem<Real> frozen = p;
    frozen.w_ih = w_ih_nan.data();
    frozen.w_hh = w_hh_nan.data();
    frozen.b_ih = frozen.b_hh = b_nan.data();
    if (k.P) frozen.w_hr = w_hr_nan.data();
    for (bool ready : {false, true}) {
        std::fill(y3.begin(), y3.end(), nan);
        fastrnn::forward(ready ? frozen : p, h0.data(), c0.data(), y3.data(), h_n3.data(), c_n3.data(),
                         static_cast<const fastrnn::Tape<Real>*>(nullptr), threads, {packed.data(), ready});
        expect_close(name + (ready ? " y (packed earlier)" : " y (packing)"), y3, ry, rtol_forward);
        expect_close(name + (ready ? " h_n (packed earlier)" : " h_n (packing)"), h_n3, rh, rtol_forward);
    }

    std::vector<Real> dx(T * B * I, nan), dh0(B * P, nan), dc0(B * H, nan), dw_ih(G * H * I, nan),
        dw_hh(G * H * P, nan), db_ih(G * H, nan), db_hh(G * H, nan), dw_hr(P * H, nan);
    fastrnn::Grads<Real> grads{dx.data(), dh0.data(), dc0.data(), dw_ih.data(), dw_hh.data(), db_ih.data(), db_hh.data(),
                               dw_hr.data()};
    fastrnn::backward(p, tape, dy.data(), dh_n.data(), dc_n.data(), grads, threads);
    expect_close(name + " dx", dx, numeric_grad(k, &Case::x), rtol_grad);
    expect_close(name + " dh0", dh0, numeric_grad(k, &Case::h0), rtol_grad);
    if (k.cell == Cell::lstm) expect_close(name + " dc0", dc0, numeric_grad(k, &Case::c0), rtol_grad);
    expect_close(name + " dw_ih", dw_ih, numeric_grad(k, &Case::w_ih), rtol_grad);
    expect_close(name + " dw_hh", dw_hh, numeric_grad(k, &Case::w_hh), rtol_grad);
    expect_close(name + " db_ih", db_ih, numeric_grad(k, &Case::b_ih), rtol_grad);
    expect_close(name + " db_hh", db_hh, numeric_grad(k, &Case::b_hh), rtol_grad);
    if (k.P) expect_close(name + " dw_hr", dw_hr, numeric_grad(k, &Case::w_hr), rtol_grad);
}

Case make_case(Cell cell, long T, long B, long I, long H, unsigned seed, long P = 0) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    const long G = fastrnn::num_gates(cell);
    auto draw = [&](long n, double scale) {
        Vd v(n);
        for (auto& e : v) e = scale * normal(gen);
        return v;
    };
    const long S = P ? P : H;       // columns of h
    Case k{cell, T, B, I, H, draw(T * B * I, 1), draw(G * H * I, 0.5), draw(G * H * S, 0.5), draw(G * H, 0.5),
           draw(G * H, 0.5), draw(B * S, 0.5), draw(B * H, 0.5), draw(T * B * S, 1), draw(B * S, 1),
           draw(B * H, 1), {}, P, draw(P * H, 0.5)};
    for (long b = 0; b < B; ++b) k.lengths.push_back(b == 0 ? T : (b == B - 1 ? 1 : 1 + long(gen() % T)));
    return k;
}

}  // namespace

int main() {
    const std::pair<Cell, const char*> cells[] = {{Cell::lstm, "lstm"}, {Cell::gru, "gru"}, {Cell::gru_cho, "gru_cho"},
                                                  {Cell::rnn_tanh, "rnn_tanh"}, {Cell::rnn_relu, "rnn_relu"}};
    unsigned seed = 1;
    for (auto [cell, name] : cells)
        for (int threads : {1, 3}) {
            // H = 19: three double tiles and two float tiles, the last ones partial
            Case k = make_case(cell, 5, 3, 4, 19, seed++);
            std::string tag = std::string(name) + " threads=" + std::to_string(threads);
            check<double>(k, threads, 1e-12, 1e-6, tag + " double");
            check<float>(k, threads, 1e-5, 2e-4, tag + " float");
        }
    for (int threads : {1, 3})
        for (long P : {1L, 11L, 18L}) {      // P below, across and beside a tile; H = 19
            Case k = make_case(Cell::lstm, 5, 3, 4, 19, seed++, P);
            std::string tag = "lstm projections P=" + std::to_string(P) + " threads=" + std::to_string(threads);
            check<double>(k, threads, 1e-12, 1e-6, tag + " double");
            check<float>(k, threads, 1e-5, 2e-4, tag + " float");
        }
    // callers on several threads at once: one has the pool, the others run alone (detail/team.h)
    std::vector<std::thread> callers;
    for (int c = 0; c < 3; ++c)
        callers.emplace_back([c] {
            for (int round = 0; round < 2; ++round) {
                Case k = make_case(c == 0 ? Cell::lstm : Cell::gru, 5, 3, 4, 19, 100u + 10u * c + round);
                check<double>(k, 2, 1e-12, 1e-6, "concurrent caller " + std::to_string(c) + " double");
            }
        });
    for (std::thread& t : callers) t.join();
    const int failed = failures.load();
    std::printf("%s (isa %s): %d failure(s)\n", failed ? "FAILED" : "passed", fastrnn::isa(), failed);
    return failed ? 1 : 0;
}
