// fastrnn/detail/kernels.h - the hot loops of sequence.h, written once as always-inline templates and
// instantiated per instruction set by FASTRNN_DEFINE_OPS (target attributes: AVX-512, AVX2+FMA, and
// the compiler's default target, which is the portable path, e.g. NEON on ARM).
//
// Every product here has the shape of one "tile": R = one native vector of consecutive output columns
// (W bytes: 64 AVX-512, 32 AVX2, 16 portable; R = W / sizeof(Real)), whose weights were packed once per call as P[k][R] (k the reduction
// index), times rows of a matrix V read as V[b*vb + k*vk]:
//     out[b][r] = sum_k P[k][r] V[b][k]          (outer-product form: no horizontal sums)
// The recurrent step, the input projection, dx and the weight gradients are all this product.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "../cells.h"

namespace fastrnn {

enum class Cell : int { lstm = 0, gru = 1, gru_cho = 2, rnn_tanh = 3, rnn_relu = 4 };

namespace detail {

using simd::load;
using simd::store;
using simd::Vec;
using std::ptrdiff_t;

// Rows of V per register block: 8 vector accumulators (+ a panel vector and a broadcast: 10 of the 16
// registers of AVX2 or SSE), so a batch of up to 8 reads each weight panel once per step.
constexpr int kRowBlock = 8;
// Reduction chunk: the packed tile slice (kChunk x W bytes, at most 128 KiB) stays in L2 while every
// row block of an item passes over it.
constexpr ptrdiff_t kChunk = 2048;

// What the forward kernels read and write (all row-major; see sequence.h for the shapes).
template <class Real> struct ForwardCtx {
    Cell cell;
    ptrdiff_t T, B, I, H, G, NT;  // NT = ceil(H / R) unit tiles
    const std::int64_t* lengths;   // (B,)
    const Real* pk_hh;             // (G, NT, P, R)
    const Real* pb_hh;             // (G, NT, R) biases, zero-padded
    Real* gates;                   // (T, B, G*H): the input projection, overwritten by the activations;
                                   // without a tape a ring of gates_steps steps (step t in slot t % gates_steps)
    ptrdiff_t gates_steps;         // T with a tape
    Real* gates_at(ptrdiff_t t, ptrdiff_t b) const { return gates + ((t % gates_steps) * B + b) * G * H; }
    Real* ghn;                     // (T, B, H) GRU linear_before_reset: h W_hn^T + b_hn, when saving; else null
    Real* h;                       // (S, B, P) states, S = T + 1 when saving, else 2 (ping-pong)
    Real* c;                       // (S, B, H) LSTM
    ptrdiff_t S;
    Real* y;                       // (T, B, P)
    Real* rh;                      // (B, H) GRU Cho: r * h_{t-1}
    // LSTM with projections (h_t = W_hr m_t of size P): else P = H, NP = NT and the rest null
    ptrdiff_t P, NP;               // NP = ceil(P / R) output tiles
    const Real* pk_hr;             // (NP, H, R): W_hr's rows by output tile
    Real* m;                       // m_t = o * tanh(c_t) (B, H) at m + t * m_step
    ptrdiff_t m_step;              // B*H when the tape keeps every step's m, else 0 (one slot)
    bool projected() const { return pk_hr != nullptr; }
    bool keep_activations;         // the gate activations replace the input projection (a tape's gates)
};

template <class Real> struct BackwardCtx {
    Cell cell;
    ptrdiff_t T, B, I, H, G, NT;
    const std::int64_t* lengths;
    const Real* h;                 // (T + 1, B, P)
    const Real* c;                 // (T + 1, B, H) LSTM
    const Real* gates;             // (T, B, G*H)
    const Real* ghn;               // (T, B, H) GRU linear_before_reset
    const Real* dy;                // (T, B, H) or null
    const Real* pkT_hh;            // (NP, G*H, R): W_hh's columns of each tile of h
    Real* dgi;                     // (S, B, G*H) d/d(input-side pre-activations), step t in slot t % S
    Real* dgh;                     // (S, B, G*H) d/d(h-side ones); == dgi except for the GRU
    Real* dh;                      // (B, P) carried dL/dh
    Real* dc;                      // (B, H) carried dL/dc (LSTM)
    // LSTM with projections: else P = H, NP = NT and the rest null
    ptrdiff_t P, NP;
    const Real* pkT_hr;            // (NT, P, R): W_hr's columns of each unit tile
    Real* dh_step;                 // (S, B, P): dL/dh_t in full (carried + dy_t) for the sequences active at t
    bool projected() const { return pkT_hr != nullptr; }
    // dgi, dgh and dh_step are rings of S steps (a chunk of steps, whose whole-sequence products run
    // before the next chunk's steps overwrite them): the row of sequence b at step t
    ptrdiff_t S;
    ptrdiff_t row(ptrdiff_t t, ptrdiff_t b) const { return (t % S) * B + b; }
};

// out[b*ldo + r] (+)= sum_{k<K} P[k*R + r] V[b*vb + k*vk] (+ bias[r]) for b < NB, r < cols.
template <class Real, int W, int NB>
FASTRNN_INLINE void tile_block(const Real* P, ptrdiff_t K, const Real* V, ptrdiff_t vb, ptrdiff_t vk,
                               Real* out, ptrdiff_t ldo, int cols, const Real* bias, bool accumulate) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    // few rows: several independent sums per row so that FMA latency does not serialise the loop
    constexpr int U = NB >= 4 ? 1 : 4 / NB;
    Vr acc[U][NB];
    FASTRNN_UNROLL for (int u = 0; u < U; ++u)
        FASTRNN_UNROLL for (int b = 0; b < NB; ++b) acc[u][b] = Vr{};
    ptrdiff_t k = 0;
    for (; k + U <= K; k += U)
        FASTRNN_UNROLL for (int u = 0; u < U; ++u) {
            Vr p = load<Vr>(P + (k + u) * R);
            FASTRNN_UNROLL for (int b = 0; b < NB; ++b) acc[u][b] += p * V[b * vb + (k + u) * vk];
        }
    for (; k < K; ++k) {
        Vr p = load<Vr>(P + k * R);
        FASTRNN_UNROLL for (int b = 0; b < NB; ++b) acc[0][b] += p * V[b * vb + k * vk];
    }
    FASTRNN_UNROLL for (int b = 0; b < NB; ++b) {
        Vr s = acc[0][b];
        FASTRNN_UNROLL for (int u = 1; u < U; ++u) s += acc[u][b];
        if (bias) s += load<Vr>(bias);
        Real* o = out + b * ldo;
        if (accumulate) s += load<Vr>(o, cols);
        store(o, s, cols);
    }
}

// The tile product for `rows` rows of V, the reduction cut into L2-sized chunks.
template <class Real, int W>
FASTRNN_INLINE void tile_rows(const Real* P, ptrdiff_t K, const Real* V, ptrdiff_t vb, ptrdiff_t vk,
                              ptrdiff_t rows, Real* out, ptrdiff_t ldo, int cols, const Real* bias,
                              bool accumulate) {
    constexpr int R = W / static_cast<int>(sizeof(Real));
    for (ptrdiff_t k0 = 0; k0 < K || k0 == 0; k0 += kChunk) {
        ptrdiff_t kn = std::min(kChunk, K - k0);
        bool acc = accumulate || k0 > 0;
        const Real* bk = k0 == 0 ? bias : nullptr;
        const Real* Pk = P + k0 * R;
        const Real* Vk = V + k0 * vk;
        ptrdiff_t b = 0;
        for (; b + kRowBlock <= rows; b += kRowBlock)
            tile_block<Real, W, kRowBlock>(Pk, kn, Vk + b * vb, vb, vk, out + b * ldo, ldo, cols, bk, acc);
        switch (rows - b) {
#define FASTRNN_TAIL(NB) \
    case NB: tile_block<Real, W, NB>(Pk, kn, Vk + b * vb, vb, vk, out + b * ldo, ldo, cols, bk, acc); break;
            FASTRNN_TAIL(7) FASTRNN_TAIL(6) FASTRNN_TAIL(5) FASTRNN_TAIL(4) FASTRNN_TAIL(3) FASTRNN_TAIL(2) FASTRNN_TAIL(1)
#undef FASTRNN_TAIL
            default: break;
        }
        if (K == 0) break;
    }
}

// The whole-sequence products (input projection, dx, weight gradients): every column tile of `cols`
// columns (panels `panel_size` apart, each P[k][R]) times `rows` rows of V read as V[b*vb + k*vk]:
//     out[b*ldo + c] (+)= sum_k P_tile(c)[k][c % R] V[b][k] (+ bias[c])     (+= when `accumulate`)
// A register block is kPanelRows rows x 2 tiles (12 accumulators, 2 panel vectors, a broadcast:
// 15 of AVX2's 16 registers), against the recurrent step's 8 x 1 (9 loads per 8 FMAs there, 8 per
// 12 here). Rows of V whose values lie in a row (vk = 1: x, dG) are read in place; a V whose rows
// are strided (a weight gradient's V is dG^T: one row of G*H values apart per k, a page per step of
// k) is first copied, per reduction chunk, into contiguous [k][kPanelRows] strips (64 rows x 256:
// 64 KiB of floats, in L2) that every tile pair then reads.
constexpr int kPanelRows = 6;
constexpr ptrdiff_t kProductChunk = 256;

// out rows [0, MR) (+)= the block's MR rows A[i*a_row + k*a_k] times 2 (NTL) or 1 tiles.
template <class Real, int W, int NTL, int MR>
FASTRNN_INLINE void product_block(const Real* P, ptrdiff_t panel_size, const Real* A, ptrdiff_t a_row, ptrdiff_t a_k,
                                  ptrdiff_t kn, Real* out, ptrdiff_t ldo, int cols_last, const Real* bias,
                                  bool accumulate) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    // the block's lines of out fetched for writing before the k loop: stores to uncached lines wait
    // on them (the numba GEMMs' input projection ran 1.3x faster so: _numba_tiles._blocks6_body)
    FASTRNN_UNROLL for (int i = 0; i < MR; ++i) {
        __builtin_prefetch(out + i * ldo, 1, 3);
        __builtin_prefetch(out + i * ldo + (NTL - 1) * R + cols_last - 1, 1, 3);
    }
    Vr acc[MR][NTL];
    FASTRNN_UNROLL for (int i = 0; i < MR; ++i)
        FASTRNN_UNROLL for (int j = 0; j < NTL; ++j) acc[i][j] = Vr{};
    for (ptrdiff_t k = 0; k < kn; ++k) {
        Vr p[NTL];
        FASTRNN_UNROLL for (int j = 0; j < NTL; ++j) p[j] = load<Vr>(P + j * panel_size + k * R);
        FASTRNN_UNROLL for (int i = 0; i < MR; ++i) {
            const Real a = A[i * a_row + k * a_k];
            FASTRNN_UNROLL for (int j = 0; j < NTL; ++j) acc[i][j] += p[j] * a;
        }
    }
    FASTRNN_UNROLL for (int i = 0; i < MR; ++i)
        FASTRNN_UNROLL for (int j = 0; j < NTL; ++j) {
            const int n = j == NTL - 1 ? cols_last : R;
            Vr s = acc[i][j];
            if (bias) s += load<Vr>(bias + j * R);
            Real* o = out + i * ldo + j * R;
            if (accumulate) s += load<Vr>(o, n);
            store(o, s, n);
        }
}

// product_block for a block of `rows` (1..kPanelRows) rows: a short last block (a call of one or a
// few rows: a step's input projection at B = 1) computes only its rows, not kPanelRows.
template <class Real, int W, int NTL>
FASTRNN_INLINE void product_rows(int rows, const Real* P, ptrdiff_t panel_size, const Real* A, ptrdiff_t a_row,
                                 ptrdiff_t a_k, ptrdiff_t kn, Real* out, ptrdiff_t ldo, int cols_last,
                                 const Real* bias, bool accumulate) {
    static_assert(kPanelRows == 6, "one case per block height");
    switch (rows) {
        case 1: return product_block<Real, W, NTL, 1>(P, panel_size, A, a_row, a_k, kn, out, ldo, cols_last, bias, accumulate);
        case 2: return product_block<Real, W, NTL, 2>(P, panel_size, A, a_row, a_k, kn, out, ldo, cols_last, bias, accumulate);
        case 3: return product_block<Real, W, NTL, 3>(P, panel_size, A, a_row, a_k, kn, out, ldo, cols_last, bias, accumulate);
        case 4: return product_block<Real, W, NTL, 4>(P, panel_size, A, a_row, a_k, kn, out, ldo, cols_last, bias, accumulate);
        case 5: return product_block<Real, W, NTL, 5>(P, panel_size, A, a_row, a_k, kn, out, ldo, cols_last, bias, accumulate);
        default: return product_block<Real, W, NTL, 6>(P, panel_size, A, a_row, a_k, kn, out, ldo, cols_last, bias, accumulate);
    }
}

template <class Real, int W>
FASTRNN_INLINE void panel_product(const Real* panels, ptrdiff_t panel_size, ptrdiff_t K, const Real* V, ptrdiff_t vb,
                                  ptrdiff_t vk, ptrdiff_t rows, Real* out, ptrdiff_t ldo, ptrdiff_t cols,
                                  const Real* bias, bool accumulate) {
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t tiles = (cols + R - 1) / R, blocks = (rows + kPanelRows - 1) / kPanelRows;
    const ptrdiff_t strip_size = kPanelRows * kProductChunk;
    // rows read in place (vk = 1) except a last block of fewer than kPanelRows rows, which is copied
    // (zero-padded) like the strided ones
    const bool in_place = vk == 1;
    const ptrdiff_t first_copied = in_place ? rows / kPanelRows : 0;
    thread_local std::vector<Real> strips;      // this thread's [block][k][kPanelRows], kept between calls
    if (static_cast<ptrdiff_t>(strips.size()) < (blocks - first_copied) * strip_size)
        strips.resize((blocks - first_copied) * strip_size);
    for (ptrdiff_t k0 = 0; k0 < K || k0 == 0; k0 += kProductChunk) {
        const ptrdiff_t kn = std::min(kProductChunk, K - k0);
        const bool first = k0 == 0, add = accumulate || !first;
        for (ptrdiff_t block = first_copied; block < blocks; ++block) {
            Real* strip = strips.data() + (block - first_copied) * strip_size;
            const ptrdiff_t b0 = block * kPanelRows;
            const int nb = static_cast<int>(std::min<ptrdiff_t>(kPanelRows, rows - b0));
            for (ptrdiff_t k = 0; k < kn; ++k)
                for (int i = 0; i < kPanelRows; ++i)
                    strip[k * kPanelRows + i] = i < nb ? V[(b0 + i) * vb + (k0 + k) * vk] : Real(0);
        }
        for (ptrdiff_t tile = 0; tile < tiles; tile += 2) {
            const Real* P = panels + tile * panel_size + k0 * R;
            const Real* bt = bias && first ? bias + tile * R : nullptr;
            const bool pair = tile + 1 < tiles;
            const int last = static_cast<int>(std::min<ptrdiff_t>(R, cols - (pair ? tile + 1 : tile) * R));
            for (ptrdiff_t block = 0; block < blocks; ++block) {
                const ptrdiff_t b0 = block * kPanelRows;
                const int nb = static_cast<int>(std::min<ptrdiff_t>(kPanelRows, rows - b0));
                const bool copied = block >= first_copied;
                const Real* A = copied ? strips.data() + (block - first_copied) * strip_size : V + b0 * vb + k0;
                const ptrdiff_t a_row = copied ? 1 : vb, a_k = copied ? kPanelRows : 1;
                Real* o = out + b0 * ldo + tile * R;
                if (pair) product_rows<Real, W, 2>(nb, P, panel_size, A, a_row, a_k, kn, o, ldo, last, bt, add);
                else product_rows<Real, W, 1>(nb, P, panel_size, A, a_row, a_k, kn, o, ldo, last, bt, add);
            }
        }
        if (K == 0) break;
    }
}

FASTRNN_INLINE bool active(const std::int64_t* lengths, ptrdiff_t t, ptrdiff_t b) { return t < lengths[b]; }

// Units in tile u (R wide) of H: R, or fewer in the last tile.
FASTRNN_INLINE int tile_width(ptrdiff_t H, ptrdiff_t u, int R) { return static_cast<int>(std::min<ptrdiff_t>(R, H - u * R)); }

// NPAN panels (`ps` apart) times NB rows of V (read in place, rows vb apart), every panel in the same
// pass over k (one stream each):
//     out[j*os + b*R + r] = bias[j*bs + r] (or 0 when null) + sum_k P_j[k*R + r] V[b*vb + k]
// Three or four panels on 4 rows (the gates of a unit tile) are the recurrent steps' main block: 12 or
// 16 accumulators (16 where AVX-512's 32 registers hold them), 7 loads per 12 FMAs. Two panels' 8
// accumulators, 6 loads per 8 FMAs, had beaten tile_block's 9 per 8 (one thread, LSTM step products:
// B = 64 80 -> 96 GFLOP/s), but 8 sums are the bare minimum in flight for 4-cycle FMAs on 2 pipes:
// 3-4 panels made the forward 2-5% faster at B = 8-64 (Zen 5, AVX-512 and AVX2). For the few rows
// (1-3) that 4-row blocks leave, all of a step's panels: one panel per pass would leave one load per
// FMA with one stream in flight, and its few sums short of FMA latency (measured at B = 1, H = 256,
// LSTM, one step's product: 4.2 -> 2.8 us, the L2's bandwidth for its weights being 2.4).
template <class Real, int W, int NPAN, int NB>
FASTRNN_INLINE void panels_block(const Real* P, ptrdiff_t ps, ptrdiff_t K, const Real* V, ptrdiff_t vb, Real* out,
                                 ptrdiff_t os, const Real* bias, ptrdiff_t bs) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    constexpr int U = NPAN * NB >= 8 ? 1 : (8 + NPAN * NB - 1) / (NPAN * NB);    // at least 8 sums in flight
    Vr acc[U][NPAN][NB];
    FASTRNN_UNROLL for (int u = 0; u < U; ++u)
        FASTRNN_UNROLL for (int j = 0; j < NPAN; ++j)
            FASTRNN_UNROLL for (int b = 0; b < NB; ++b) acc[u][j][b] = Vr{};
    ptrdiff_t k = 0;
    // per k: the panels' vectors, then each row's value once for all of them
    const auto step = [&](ptrdiff_t kk, Vr (&sums)[NPAN][NB]) {
        Vr p[NPAN];
        FASTRNN_UNROLL for (int j = 0; j < NPAN; ++j) p[j] = load<Vr>(P + j * ps + kk * R);
        FASTRNN_UNROLL for (int b = 0; b < NB; ++b) {
            const Real a = V[b * vb + kk];
            FASTRNN_UNROLL for (int j = 0; j < NPAN; ++j) sums[j][b] += p[j] * a;
        }
    };
    for (; k + U <= K; k += U)
        FASTRNN_UNROLL for (int u = 0; u < U; ++u) step(k + u, acc[u]);
    for (; k < K; ++k) step(k, acc[0]);
    FASTRNN_UNROLL for (int j = 0; j < NPAN; ++j)
        FASTRNN_UNROLL for (int b = 0; b < NB; ++b) {
            Vr sum = acc[0][j][b];
            FASTRNN_UNROLL for (int u = 1; u < U; ++u) sum += acc[u][j][b];
            if (bias) sum += load<Vr>(bias + j * bs);
            store(out + j * os + b * R, sum, R);
        }
}

template <class Real, int W, int NPAN>
FASTRNN_INLINE void panels_rows(int rows, const Real* P, ptrdiff_t ps, ptrdiff_t K, const Real* V, ptrdiff_t vb,
                                Real* out, ptrdiff_t os, const Real* bias, ptrdiff_t bs) {
    switch (rows) {
        case 1: return panels_block<Real, W, NPAN, 1>(P, ps, K, V, vb, out, os, bias, bs);
        case 2: return panels_block<Real, W, NPAN, 2>(P, ps, K, V, vb, out, os, bias, bs);
        default: return panels_block<Real, W, NPAN, 3>(P, ps, K, V, vb, out, os, bias, bs);
    }
}

// panels_block for 2-4 panels and 1-3 rows.
template <class Real, int W>
FASTRNN_INLINE void panel_group(int panels, int rows, const Real* P, ptrdiff_t ps, ptrdiff_t K, const Real* V,
                                ptrdiff_t vb, Real* out, ptrdiff_t os, const Real* bias, ptrdiff_t bs) {
    switch (panels) {
        case 2: return panels_rows<Real, W, 2>(rows, P, ps, K, V, vb, out, os, bias, bs);
        case 3: return panels_rows<Real, W, 3>(rows, P, ps, K, V, vb, out, os, bias, bs);
        default: return panels_rows<Real, W, 4>(rows, P, ps, K, V, vb, out, os, bias, bs);
    }
}

// gh (G, B, R) = h_{t-1} W_hh^T + b_hh for unit tile u and the gates [g0, g1): gates by 4 (AVX-512), 3
// or 2 on blocks of 4 rows (a single gate left by tile_rows), then the rows left (B % 4) with every gate at once
// (panel_group). One gate: tile_rows on every row (its few-row blocks keep several sums in flight).
template <class Real, int W>
FASTRNN_INLINE void recurrent_product(const ForwardCtx<Real>& s, const Real* h_in, ptrdiff_t u, ptrdiff_t g0,
                                      ptrdiff_t g1, Real* gh) {
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t B = s.B, P = s.P, gate_panels = s.NT * P * R;
    const Real* pk = s.pk_hh + u * P * R;           // gate g's panel: pk + g * gate_panels
    const Real* pb = s.pb_hh + u * R;               // its bias: pb + g * NT * R
    if (g1 - g0 == 1) {
        tile_rows<Real, W>(pk + g0 * gate_panels, P, h_in, P, 1, B, gh + g0 * B * R, R, R, pb + g0 * s.NT * R, false);
        return;
    }
    const ptrdiff_t paired_rows = B / 4 * 4;
    if (paired_rows > 0) {
        ptrdiff_t g = g0;
        const auto gates_by = [&](auto group) {     // `group` gates at a time on each block of 4 rows
            constexpr int N = decltype(group)::value;
            for (; g + N <= g1; g += N)
                for (ptrdiff_t b = 0; b < paired_rows; b += 4)
                    panels_block<Real, W, N, 4>(pk + g * gate_panels, gate_panels, P, h_in + b * P, P,
                                                gh + (g * B + b) * R, B * R, pb + g * s.NT * R, s.NT * R);
        };
        if constexpr (W >= 64) gates_by(std::integral_constant<int, 4>{});
        gates_by(std::integral_constant<int, 3>{});
        gates_by(std::integral_constant<int, 2>{});
        if (g < g1)
            tile_rows<Real, W>(pk + g * gate_panels, P, h_in, P, 1, paired_rows, gh + g * B * R, R, R,
                               pb + g * s.NT * R, false);
    }
    if (paired_rows < B)
        panel_group<Real, W>(static_cast<int>(g1 - g0), static_cast<int>(B - paired_rows), pk + g0 * gate_panels,
                             gate_panels, P, h_in + paired_rows * P, P, gh + (g0 * B + paired_rows) * R, B * R,
                             pb + g0 * s.NT * R, s.NT * R);
}

// The state entering step t: slot t of the tape, or of the ping-pong pair (h: (B, P), c: (B, H)).
template <class Real> FASTRNN_INLINE Real* h_state(const ForwardCtx<Real>& s, ptrdiff_t t) {
    return s.h + (t % s.S) * s.B * s.P;
}
template <class Real> FASTRNN_INLINE Real* c_state(const ForwardCtx<Real>& s, ptrdiff_t t) {
    return s.c + (t % s.S) * s.B * s.H;
}

// Past its length, sequence b keeps its state and outputs 0 at step t: h and y at columns j of P
// (when `h_part`), c at units j of H (when `c_part`; LSTM). Without projections both are one tile.
template <class Real, int W>
FASTRNN_INLINE void carry(const ForwardCtx<Real>& s, ptrdiff_t t, ptrdiff_t b, ptrdiff_t j, int n, bool h_part = true,
                          bool c_part = true) {
    typedef Vec<Real, W> Vr;
    if (h_part) {
        const ptrdiff_t bj = b * s.P + j;
        store(h_state(s, t + 1) + bj, load<Vr>(h_state(s, t) + bj, n), n);
        store(s.y + t * s.B * s.P + bj, Vr{}, n);
    }
    if (c_part && s.cell == Cell::lstm) {
        const ptrdiff_t bj = b * s.H + j;
        store(c_state(s, t + 1) + bj, load<Vr>(c_state(s, t) + bj, n), n);
    }
}

// Within its length, sequence b's new state h_new (columns j of P) is h_t and its output at step t.
template <class Real, int W>
FASTRNN_INLINE void advance(const ForwardCtx<Real>& s, ptrdiff_t t, ptrdiff_t b, ptrdiff_t j, Vec<Real, W> h_new, int n) {
    const ptrdiff_t bj = b * s.P + j;
    store(h_state(s, t + 1) + bj, h_new, n);
    store(s.y + t * s.B * s.P + bj, h_new, n);
}

// One step of unit tile u for LSTM, GRU (linear before reset) and RNN. gh: (G, B, R) scratch.
// With projections the LSTM's tile ends at c_t and m_t (forward_project makes h_t from every unit's m_t).
template <class Real, int W> FASTRNN_INLINE void forward_step(const ForwardCtx<Real>& s, ptrdiff_t t, ptrdiff_t u,
                                                       Real* gh) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t B = s.B, H = s.H, GH = s.G * s.H, j = u * R;
    const int n = tile_width(H, u, R);
    const bool projected = s.projected();
    const Real* h_in = h_state(s, t);
    recurrent_product<Real, W>(s, h_in, u, 0, s.G, gh);
    for (ptrdiff_t b = 0; b < B; ++b) {
        const ptrdiff_t bj = b * H + j;
        Real* gates = s.gates_at(t, b) + j;
        const Real* gh_b = gh + b * R;                  // gate g at gh_b + g * B * R
        if (!active(s.lengths, t, b)) {
            carry<Real, W>(s, t, b, j, n, !projected);
            if (projected) store(s.m + t * s.m_step + bj, Vr{}, n);   // (backward's dW_hr sums over every row)
            // the tape is an output (fastrnn.torch returns it from its op): no uninitialised values in it
            if (s.ghn) store(s.ghn + (t * B + b) * H + j, Vr{}, n);
            continue;
        }
        Vr h_new;
        if (s.cell == Cell::lstm) {
            const Real* c_in = c_state(s, t);
            Real* c_out = c_state(s, t + 1);
            auto st = cells::lstm_forward(load<Vr>(gates, n) + load<Vr>(gh_b), load<Vr>(gates + H, n) + load<Vr>(gh_b + B * R),
                                          load<Vr>(gates + 2 * H, n) + load<Vr>(gh_b + 2 * B * R),
                                          load<Vr>(gates + 3 * H, n) + load<Vr>(gh_b + 3 * B * R), load<Vr>(c_in + bj, n));
            if (s.keep_activations) {
                store(gates, st.i, n);
                store(gates + H, st.f, n);
                store(gates + 2 * H, st.g, n);
                store(gates + 3 * H, st.o, n);
            }
            store(c_out + bj, st.c, n);
            if (projected) {
                store(s.m + t * s.m_step + bj, st.h, n);
                continue;
            }
            h_new = st.h;
        } else if (s.cell == Cell::gru) {
            Vr r = simd::sigmoid(load<Vr>(gates, n) + load<Vr>(gh_b));
            Vr z = simd::sigmoid(load<Vr>(gates + H, n) + load<Vr>(gh_b + B * R));
            Vr ghn = load<Vr>(gh_b + 2 * B * R);
            Vr nn = simd::tanh(load<Vr>(gates + 2 * H, n) + r * ghn);
            if (s.keep_activations) {
                store(gates, r, n);
                store(gates + H, z, n);
                store(gates + 2 * H, nn, n);
            }
            if (s.ghn) store(s.ghn + (t * B + b) * H + j, ghn, n);   // saved for backward only
            h_new = cells::gru_update(z, nn, load<Vr>(h_in + bj, n));     // (P = H without projections)
        } else {
            h_new = cells::rnn_forward(load<Vr>(gates, n) + load<Vr>(gh_b), s.cell == Cell::rnn_relu);
        }
        advance<Real, W>(s, t, b, j, h_new, n);
    }
}

// LSTM with projections, second phase of step t: h_t = m_t W_hr^T for output tile v (columns v*R of P).
template <class Real, int W> FASTRNN_INLINE void forward_project(const ForwardCtx<Real>& s, ptrdiff_t t, ptrdiff_t v,
                                                          Real* scratch) {
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t j = v * R;
    const int n = tile_width(s.P, v, R);
    tile_rows<Real, W>(s.pk_hr + v * s.H * R, s.H, s.m + t * s.m_step, s.H, 1, s.B, scratch, R, R, nullptr, false);
    for (ptrdiff_t b = 0; b < s.B; ++b) {
        if (active(s.lengths, t, b)) advance<Real, W>(s, t, b, j, load<Vec<Real, W>>(scratch + b * R), n);
        else carry<Real, W>(s, t, b, j, n, true, false);
    }
}

// GRU of Cho et al., first phase of step t: r and z, and r * h_{t-1} for every unit of the tile.
template <class Real, int W> FASTRNN_INLINE void forward_cho_rz(const ForwardCtx<Real>& s, ptrdiff_t t, ptrdiff_t u,
                                                         Real* gh) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t B = s.B, H = s.H, GH = s.G * s.H, j = u * R;
    const int n = tile_width(H, u, R);
    const Real* h_in = h_state(s, t);
    recurrent_product<Real, W>(s, h_in, u, 0, 2, gh);
    for (ptrdiff_t b = 0; b < B; ++b) {
        Real* gates = s.gates_at(t, b) + j;
        Vr r = simd::sigmoid(load<Vr>(gates, n) + load<Vr>(gh + b * R));
        Vr z = simd::sigmoid(load<Vr>(gates + H, n) + load<Vr>(gh + (B + b) * R));
        store(gates, r, n);
        store(gates + H, z, n);
        store(s.rh + b * H + j, r * load<Vr>(h_in + b * H + j, n), n);
    }
}

// Second phase: n = tanh(xn + (r h) W_hn^T + b_hn) (reads r * h of every unit) and the new state.
template <class Real, int W> FASTRNN_INLINE void forward_cho_n(const ForwardCtx<Real>& s, ptrdiff_t t, ptrdiff_t u,
                                                        Real* gh) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t B = s.B, H = s.H, GH = s.G * s.H, j = u * R;
    const int n = tile_width(H, u, R);
    const Real* h_in = h_state(s, t);
    const ptrdiff_t tile = 2 * s.NT + u;
    tile_rows<Real, W>(s.pk_hh + tile * H * R, H, s.rh, H, 1, B, gh, R, R, s.pb_hh + tile * R, false);
    for (ptrdiff_t b = 0; b < B; ++b) {
        const ptrdiff_t bj = b * H + j;
        Real* gates = s.gates_at(t, b) + j;
        if (!active(s.lengths, t, b)) {
            carry<Real, W>(s, t, b, j, n);
            continue;
        }
        Vr nn = simd::tanh(load<Vr>(gates + 2 * H, n) + load<Vr>(gh + b * R));
        if (s.keep_activations) store(gates + 2 * H, nn, n);
        advance<Real, W>(s, t, b, j, cells::gru_update(load<Vr>(gates + H, n), nn, load<Vr>(h_in + bj, n)), n);
    }
}

// LSTM with projections, first part of backward step t for output tile v (columns v*R of P): the
// full dL/dh_t = carried dh + dy_t of the sequences active at t moves to dh_step[t] (0 for the others,
// whose carried dh stays), for backward_pointwise's dm_t = dh_t W_hr and the final dW_hr = dh^T m.
template <class Real, int W> FASTRNN_INLINE void backward_gather(const BackwardCtx<Real>& s, ptrdiff_t t, ptrdiff_t v) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t B = s.B, P = s.P, j = v * R;
    const int n = tile_width(P, v, R);
    for (ptrdiff_t b = 0; b < B; ++b) {
        Real* dh_t = s.dh_step + s.row(t, b) * P + j;
        if (!active(s.lengths, t, b)) {
            store(dh_t, Vr{}, n);
            continue;
        }
        Vr dh = load<Vr>(s.dh + b * P + j, n);
        if (s.dy) dh += load<Vr>(s.dy + (t * B + b) * P + j, n);
        store(dh_t, dh, n);
        store(s.dh + b * P + j, Vr{}, n);
    }
}

// Backward, step t, unit tile u, first part: the cell's pointwise backward. Writes dgi/dgh[t] of
// the tile (zero past a sequence's length) and leaves in dh the part of dL/dh_{t-1} that does not
// go through W_hh (dh' z for the GRU, 0 otherwise; dh itself when past the length), in dc dc_{t-1}.
// With projections the LSTM's dL/dm_t = dh_step[t] W_hr comes first (scratch: (B, R)).
template <class Real, int W> FASTRNN_INLINE void backward_pointwise(const BackwardCtx<Real>& s, ptrdiff_t t,
                                                             ptrdiff_t u, Real* scratch) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t B = s.B, H = s.H, GH = s.G * s.H, j = u * R;
    const int n = tile_width(H, u, R);
    const bool projected = s.projected();
    if (projected)
        tile_rows<Real, W>(s.pkT_hr + u * s.P * R, s.P, s.dh_step + s.row(t, 0) * s.P, s.P, 1, B, scratch, R, R, nullptr,
                           false);
    for (ptrdiff_t b = 0; b < B; ++b) {
        const ptrdiff_t bj = b * H + j, row = s.row(t, b) * GH + j;
        Real* dgi = s.dgi + row;
        Real* dgh = s.dgh + row;
        if (!active(s.lengths, t, b)) {
            for (ptrdiff_t g = 0; g < s.G; ++g) {
                store(dgi + g * H, Vr{}, n);
                store(dgh + g * H, Vr{}, n);
            }
            continue;
        }
        Vr dh;
        if (projected) {
            dh = load<Vr>(scratch + b * R);
        } else {
            dh = load<Vr>(s.dh + bj, n);
            if (s.dy) dh += load<Vr>(s.dy + t * B * H + bj, n);
        }
        const Real* gates = s.gates + (t * B + b) * GH + j;
        if (s.cell == Cell::lstm) {
            auto d = cells::lstm_backward(dh, load<Vr>(s.dc + bj, n), load<Vr>(gates, n), load<Vr>(gates + H, n),
                                          load<Vr>(gates + 2 * H, n), load<Vr>(gates + 3 * H, n),
                                          load<Vr>(s.c + t * B * H + bj, n), load<Vr>(s.c + (t + 1) * B * H + bj, n));
            store(dgi, d.da_i, n);
            store(dgi + H, d.da_f, n);
            store(dgi + 2 * H, d.da_g, n);
            store(dgi + 3 * H, d.da_o, n);
            store(s.dc + bj, d.dc_prev, n);
            if (!projected) store(s.dh + bj, Vr{}, n);        // (projected: backward_gather cleared it)
        } else if (s.cell == Cell::gru || s.cell == Cell::gru_cho) {
            Vr r = load<Vr>(gates, n);
            auto d = cells::gru_backward_zn(dh, load<Vr>(gates + H, n), load<Vr>(gates + 2 * H, n),
                                            load<Vr>(s.h + t * B * H + bj, n));
            store(dgi + H, d.da_z, n);
            store(dgi + 2 * H, d.da_n, n);
            store(s.dh + bj, d.dh_direct, n);
            if (s.cell == Cell::gru) {                 // Cho's gate r needs every unit's da_n first
                Vr da_r = cells::sigmoid_backward(d.da_n * load<Vr>(s.ghn + (t * B + b) * H + j, n), r);
                store(dgi, da_r, n);
                store(dgh, da_r, n);
                store(dgh + H, d.da_z, n);
                store(dgh + 2 * H, d.da_n * r, n);
            }
        } else {
            store(dgi, cells::rnn_backward(dh, load<Vr>(s.h + (t + 1) * B * H + bj, n), s.cell == Cell::rnn_relu), n);
            store(s.dh + bj, Vr{}, n);
        }
    }
}

// dh_{t-1} += dgh[t][:, k0:k1] W_hh[k0:k1, tiles 2v, 2v+1] for the sequences active at step t (tiles
// of P; one when it is the last and P has an odd count): both tiles' panels on 4-row blocks
// (panels_block: 6 loads per 8 FMAs, against tile_rows' 9 per 8), the rows left over by panel_group.
// scratch: 2 * B * R values.
template <class Real, int W> FASTRNN_INLINE void backward_dh(const BackwardCtx<Real>& s, ptrdiff_t t, ptrdiff_t v,
                                                      ptrdiff_t k0, ptrdiff_t k1, Real* scratch) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t B = s.B, P = s.P, GH = s.G * s.H, u0 = 2 * v, K = k1 - k0;
    const int tiles = static_cast<int>(std::min<ptrdiff_t>(2, s.NP - u0));
    const Real* dg = s.dgh + s.row(t, 0) * GH + k0;
    const Real* panel[2] = {s.pkT_hh + (u0 * GH + k0) * R, s.pkT_hh + ((u0 + tiles - 1) * GH + k0) * R};
    Real* out[2] = {scratch, scratch + B * R};
    const ptrdiff_t paired_rows = tiles == 2 ? B / 4 * 4 : 0;
    for (ptrdiff_t b = 0; b < paired_rows; b += 4)
        panels_block<Real, W, 2, 4>(panel[0], panel[1] - panel[0], K, dg + b * GH, GH, out[0] + b * R, B * R, nullptr, 0);
    if (tiles == 1)
        tile_rows<Real, W>(panel[0], K, dg, GH, 1, B, out[0], R, R, nullptr, false);
    else if (paired_rows < B)           // both tiles' panels in one pass for the rows left (B % 4)
        panel_group<Real, W>(2, static_cast<int>(B - paired_rows), panel[0], panel[1] - panel[0], K,
                             dg + paired_rows * GH, GH, out[0] + paired_rows * R, B * R, nullptr, 0);
    for (int j = 0; j < tiles; ++j) {
        const ptrdiff_t col = (u0 + j) * R;
        const int n = tile_width(P, u0 + j, R);
        for (ptrdiff_t b = 0; b < B; ++b)
            if (active(s.lengths, t, b))
                store(s.dh + b * P + col, load<Vr>(s.dh + b * P + col, n) + load<Vr>(out[j] + b * R), n);
    }
}

// GRU of Cho et al., second part of step t: drh = da_n W_hn, then da_r and drh * r into dh.
template <class Real, int W> FASTRNN_INLINE void backward_cho_reset(const BackwardCtx<Real>& s, ptrdiff_t t,
                                                             ptrdiff_t u, Real* scratch) {
    typedef Vec<Real, W> Vr;
    constexpr int R = W / static_cast<int>(sizeof(Real));
    const ptrdiff_t B = s.B, H = s.H, GH = s.G * s.H, j = u * R;
    const int n = tile_width(H, u, R);
    tile_rows<Real, W>(s.pkT_hh + (u * GH + 2 * H) * R, H, s.dgi + s.row(t, 0) * GH + 2 * H, GH, 1, B, scratch, R, R,
                    nullptr, false);
    for (ptrdiff_t b = 0; b < B; ++b) {
        if (!active(s.lengths, t, b)) continue;
        const ptrdiff_t bj = b * H + j;
        Real* dgi = s.dgi + s.row(t, b) * GH + j;
        Vr drh = load<Vr>(scratch + b * R), r = load<Vr>(s.gates + (t * B + b) * GH + j, n);
        store(dgi, cells::sigmoid_backward(drh * load<Vr>(s.h + t * B * H + bj, n), r), n);
        store(s.dh + bj, load<Vr>(s.dh + bj, n) + drh * r, n);
    }
}

// ----------------------------------------------------------------------------- packing

// An R x R tile transposed in registers: log2(R) rounds, round S pairing rows a and a + S (a & S == 0)
// and swapping their off-diagonal blocks of S values (the rounds of the Numba backend's vtranspose_tile).
template <int S, class V, std::size_t... L> FASTRNN_INLINE V swap_low(V x, V y, std::index_sequence<L...>) {
    return __builtin_shufflevector(x, y, ((L & S) == 0 ? int(L) : int(sizeof...(L) + L - S))...);
}
template <int S, class V, std::size_t... L> FASTRNN_INLINE V swap_high(V x, V y, std::index_sequence<L...>) {
    return __builtin_shufflevector(x, y, ((L & S) == 0 ? int(L + S) : int(sizeof...(L) + L))...);
}
template <int S, class V> FASTRNN_INLINE void transpose_rounds(V* rows) {
    constexpr int R = simd::kLanes<V>;
#pragma GCC unroll 16
    for (int a = 0; a < R; ++a) {
        if ((a & S) == 0) {
            const V x = rows[a], y = rows[a + S];
            rows[a] = swap_low<S>(x, y, std::make_index_sequence<R>{});
            rows[a + S] = swap_high<S>(x, y, std::make_index_sequence<R>{});
        }
    }
    if constexpr (S > 1) transpose_rounds<S / 2>(rows);
}

// dst[k][r] = src[r*ld + k] for r < n (0 beyond): R rows of a matrix as a [K][R] panel. Whole tiles
// (n = R) go R x R at a time through registers, the rest one value at a time (LSTM on plain weights,
// T = 1, B = 1: H = 128 53 -> 33 us a call, H = 512 586 -> 299 us against the scalar copy of every value).
template <class Real, int W> FASTRNN_INLINE void pack_rows(const Real* src, ptrdiff_t ld, int n, ptrdiff_t K, Real* dst) {
    using V = Vec<Real, W>;
    constexpr int R = simd::kLanes<V>;
    ptrdiff_t k0 = 0;
    if (n == R) {
        for (; k0 + R <= K; k0 += R) {
            V rows[R];
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) rows[r] = load<V>(src + r * ld + k0);
            if constexpr (R > 1) transpose_rounds<R / 2>(rows);
#pragma GCC unroll 16
            for (int a = 0; a < R; ++a) store(dst + (k0 + a) * R, rows[a], R);
        }
    }
    for (ptrdiff_t k = k0; k < K; ++k)
        for (int r = 0; r < R; ++r) dst[k * R + r] = r < n ? src[r * ld + k] : Real(0);
}

// The per-instruction-set entry points: plain functions (so that they can carry a target
// attribute) that the driver in sequence.h calls through a table chosen once at run time.
template <class Real> struct Ops {
    void (*product)(const Real*, ptrdiff_t, ptrdiff_t, const Real*, ptrdiff_t, ptrdiff_t, ptrdiff_t, Real*,
                    ptrdiff_t, ptrdiff_t, const Real*, bool);
    void (*forward_step)(const ForwardCtx<Real>&, ptrdiff_t, ptrdiff_t, Real*);
    void (*forward_cho_rz)(const ForwardCtx<Real>&, ptrdiff_t, ptrdiff_t, Real*);
    void (*forward_cho_n)(const ForwardCtx<Real>&, ptrdiff_t, ptrdiff_t, Real*);
    void (*forward_project)(const ForwardCtx<Real>&, ptrdiff_t, ptrdiff_t, Real*);
    void (*backward_gather)(const BackwardCtx<Real>&, ptrdiff_t, ptrdiff_t);
    void (*backward_pointwise)(const BackwardCtx<Real>&, ptrdiff_t, ptrdiff_t, Real*);
    void (*backward_dh)(const BackwardCtx<Real>&, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, Real*);
    void (*backward_cho_reset)(const BackwardCtx<Real>&, ptrdiff_t, ptrdiff_t, Real*);
    void (*pack_rows)(const Real*, ptrdiff_t, int, ptrdiff_t, Real*);
    const char* isa;
    int lanes;                     // R: the tile width the packed panels must have
};

#define FASTRNN_OPS_FOR(REAL, ATTR, W)                                                                         \
    ATTR inline void product_##REAL(const REAL* P, ptrdiff_t panel_size, ptrdiff_t K, const REAL* V,          \
                                    ptrdiff_t vb, ptrdiff_t vk, ptrdiff_t rows, REAL* out, ptrdiff_t ldo,        \
                                    ptrdiff_t cols, const REAL* bias, bool accumulate) {                       \
        detail::panel_product<REAL, W>(P, panel_size, K, V, vb, vk, rows, out, ldo, cols, bias, accumulate);    \
    }                                                                                                          \
    ATTR inline void forward_step_##REAL(const ForwardCtx<REAL>& s, ptrdiff_t t, ptrdiff_t u, REAL* w) {       \
        detail::forward_step<REAL, W>(s, t, u, w);                                                                \
    }                                                                                                          \
    ATTR inline void forward_cho_rz_##REAL(const ForwardCtx<REAL>& s, ptrdiff_t t, ptrdiff_t u, REAL* w) {     \
        detail::forward_cho_rz<REAL, W>(s, t, u, w);                                                              \
    }                                                                                                          \
    ATTR inline void forward_cho_n_##REAL(const ForwardCtx<REAL>& s, ptrdiff_t t, ptrdiff_t u, REAL* w) {      \
        detail::forward_cho_n<REAL, W>(s, t, u, w);                                                               \
    }                                                                                                          \
    ATTR inline void forward_project_##REAL(const ForwardCtx<REAL>& s, ptrdiff_t t, ptrdiff_t v, REAL* w) {    \
        detail::forward_project<REAL, W>(s, t, v, w);                                                             \
    }                                                                                                          \
    ATTR inline void backward_gather_##REAL(const BackwardCtx<REAL>& s, ptrdiff_t t, ptrdiff_t v) {            \
        detail::backward_gather<REAL, W>(s, t, v);                                                                \
    }                                                                                                          \
    ATTR inline void backward_pointwise_##REAL(const BackwardCtx<REAL>& s, ptrdiff_t t, ptrdiff_t u, REAL* w) {\
        detail::backward_pointwise<REAL, W>(s, t, u, w);                                                          \
    }                                                                                                          \
    ATTR inline void backward_dh_##REAL(const BackwardCtx<REAL>& s, ptrdiff_t t, ptrdiff_t u, ptrdiff_t k0,    \
                                        ptrdiff_t k1, REAL* w) {                                               \
        detail::backward_dh<REAL, W>(s, t, u, k0, k1, w);                                                         \
    }                                                                                                          \
    ATTR inline void backward_cho_reset_##REAL(const BackwardCtx<REAL>& s, ptrdiff_t t, ptrdiff_t u, REAL* w) {\
        detail::backward_cho_reset<REAL, W>(s, t, u, w);                                                          \
    }                                                                                                          \
    ATTR inline void pack_rows_##REAL(const REAL* src, ptrdiff_t ld, int n, ptrdiff_t K, REAL* dst) {           \
        detail::pack_rows<REAL, W>(src, ld, n, K, dst);                                                           \
    }

#define FASTRNN_DEFINE_OPS(NS, ATTR, NAME, W)                                                                   \
    namespace NS {                                                                                           \
    FASTRNN_OPS_FOR(float, ATTR, W)                                                                             \
    FASTRNN_OPS_FOR(double, ATTR, W)                                                                            \
    template <class Real> Ops<Real> ops();                                                                   \
    template <> inline Ops<float> ops<float>() {                                                             \
        return {product_float, forward_step_float, forward_cho_rz_float, forward_cho_n_float,                \
                forward_project_float, backward_gather_float, backward_pointwise_float, backward_dh_float,    \
                backward_cho_reset_float, pack_rows_float,                                                     \
                NAME, W / 4};                                                                                       \
    }                                                                                                        \
    template <> inline Ops<double> ops<double>() {                                                          \
        return {product_double, forward_step_double, forward_cho_rz_double, forward_cho_n_double,           \
                forward_project_double, backward_gather_double, backward_pointwise_double, backward_dh_double, \
                backward_cho_reset_double, pack_rows_double, NAME, W / 8};                                     \
    }                                                                                                        \
    }

FASTRNN_DEFINE_OPS(portable, , "portable", 16)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(FASTRNN_PORTABLE_ONLY)
#define FASTRNN_HAVE_X86_DISPATCH 1
FASTRNN_DEFINE_OPS(avx2, __attribute__((target("avx2,fma"))), "avx2", 32)
FASTRNN_DEFINE_OPS(avx512, __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma"))), "avx512", 64)
#endif

}  // namespace detail
}  // namespace fastrnn
