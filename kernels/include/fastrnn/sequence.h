// fastrnn/sequence.h - fused LSTM / GRU / RNN sequence kernels, forward and backward, header-only C++17.
//
//   #include <fastrnn/sequence.h>      // CMake: target_link_libraries(app PRIVATE fastrnn::kernels)
//   fastrnn::Problem<float> p{fastrnn::Cell::lstm, T, B, I, H, x, w_ih, w_hh, b_ih, b_hh, lengths};
//   fastrnn::forward(p, h0, c0, y, h_n, c_n, &tape, threads);     // tape: nullptr for inference
//   fastrnn::backward(p, tape, dy, dh_n, dc_n, grads, threads);
//   // frozen weights, many short calls: pack once, then skip the packing (PackedForward)
//   std::vector<float> buf(fastrnn::packed_forward_size(p));
//   fastrnn::forward(p, h0, c0, y, h_n, c_n, nullptr, threads, {buf.data(), false});  // packs into buf
//   fastrnn::forward(p, h0, c0, y, h_n, c_n, nullptr, threads, {buf.data(), true});   // reads buf
//
// Shapes (row-major, contiguous; G = 4 LSTM, 3 GRU, 1 RNN; PyTorch's weight layout and gate order):
//   x (T, B, I); w_ih (G*H, I); w_hh (G*H, H); b_ih, b_hh (G*H) or null; h0, c0 (B, H) or null (zeros);
//   lengths (B) in [1, T] or null (all T): sequence b takes part in steps t < lengths[b]; past that its
//   state is carried unchanged and y is 0 (PyTorch's PackedSequence semantics).
//   y (T, B, H); h_n, c_n (B, H) (c_n: LSTM; may be null).
//   Tape (what backward needs, caller-owned): h (T+1, B, H) the state entering each step, then the
//   final one; c (T+1, B, H) LSTM; gates (T, B, G*H) the activations (LSTM i,f,g,o; GRU r,z,n; RNN:
//   scratch); ghn (T, B, H) GRU linear_before_reset: h W_hn^T + b_hn. Unused fields may be null.
//   Grads: dx (T, B, I), dh0, dc0 (B, H), dw_ih, dw_hh, db_ih, db_hh like their arguments (db_* may
//   be null). dy (T, B, H), dh_n, dc_n (B, H) may be null (zero).
//   LSTM with projections (Problem::w_hr (P, H), P = Problem::P; PyTorch's proj_size, cuDNN's
//   recurrent projection): m_t = o * tanh(c_t), h_t = m_t W_hr^T. Then h, h0, h_n, dh0, dh_n and y,
//   dy have P columns in place of H, w_hh is (4H, P), the tape's h is (T+1, B, P) and its m (T, B, H)
//   keeps every m_t, and Grads::dw_hr (P, H) receives dL/dW_hr.
// Equations: cells.h. Cells: Cell::lstm, Cell::gru (linear_before_reset: PyTorch, cuDNN),
// Cell::gru_cho (Cho et al. 2014, ONNX's default), Cell::rnn_tanh, Cell::rnn_relu. Real: float, double.
//
// How it runs. The hidden units are cut into tiles of one vector (R = 16 floats with AVX-512, 8 with
// AVX2, 4 portable). ONE team of threads per call walks the whole sequence (detail/team.h: pooled
// std::threads; the caller never waits for a worker late to join); per step the tiles are shared out
// (Phases: each thread claims its own share first, so it keeps the same weight panels in its cache,
// and takes over a late thread's tiles) and a count of finished tiles is the step's barrier. First
// each tile's weights are packed once (the W_ih and W_hh rows of every gate as [k][R] panels, read
// with unit-stride vector loads); then the steps go in chunks (about 8 MiB of gates each): the chunk's
// input projection x W_ih^T + b_ih as one product, then per step each tile's recurrent product and
// pointwise cell update (Cho's GRU: two phases, the reset gate of every unit before the candidate's
// product). Without a tape the chunks share one ring of gates, so inference needs O(chunk) memory, not
// O(T) (at T = 512, B = 64 the T-long array's fresh pages cost 15-30% of a call). Backward mirrors it,
// in chunks of steps from the last: per step, pairs of tiles take their dh_t = dG_{t+1} W_hh (W_hh
// packed by columns) and then their pointwise backward, one barrier a step (Cho's GRU: the pointwise
// backward of every tile, its reset gate, then dh_{t-1}); after each chunk its rows of dx and its
// share of the weight gradients, products on the same team while its dG (a ring of one chunk) is in
// cache. Workspace blocks of 2 MiB or more ask for transparent huge pages (Workspace). With projections
// a step has two phases forward (the unit tiles up to c_t and m_t, then h_t by tiles of P) and three
// backward (dL/dh_t by tiles of P, the pointwise backward from dL/dm_t = dL/dh_t W_hr, dh_{t-1} by tiles of P).
// Instruction set: AVX-512, AVX2+FMA or the portable path, chosen once at run time (kernels.h;
// FASTRNN_ISA=portable|avx2|avx512 forces one). Built with FASTRNN_SINGLE_THREAD defined, everything runs
// on the calling thread.
// Needs GCC or Clang (vector extensions).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>   // madvise (Workspace)
#endif

#include "detail/kernels.h"
#include "detail/team.h"

namespace fastrnn {

inline int num_gates(Cell cell) {
    switch (cell) {
        case Cell::lstm: return 4;
        case Cell::gru:
        case Cell::gru_cho: return 3;
        default: return 1;
    }
}

template <class Real> struct Problem {
    Cell cell;
    std::int64_t T, B, I, H;
    const Real* x;
    const Real* w_ih;
    const Real* w_hh;
    const Real* b_ih;
    const Real* b_hh;
    const std::int64_t* lengths;
    // LSTM with projections (PyTorch's proj_size): w_hr (P, H), h_t = W_hr (o * tanh(c_t)) of size P
    const Real* w_hr = nullptr;
    std::int64_t P = 0;
};

// The size of h (and y): P with projections, else H.
template <class Real> std::int64_t state_size(const Problem<Real>& p) { return p.w_hr ? p.P : p.H; }

template <class Real> struct Tape {
    Real* h;
    Real* c;
    Real* gates;
    Real* ghn;
    Real* m = nullptr;     // (T, B, H) LSTM with projections: o * tanh(c_t)
};

template <class Real> struct Grads {
    Real* dx;
    Real* dh0;
    Real* dc0;
    Real* dw_ih;
    Real* dw_hh;
    Real* db_ih;
    Real* db_hh;
    Real* dw_hr = nullptr;  // (P, H) LSTM with projections
};

// Forward's packed weights, kept by the caller across calls (fastrnn.pack_weights: a frozen snapshot
// of the weights serving many short calls). `data` holds packed_forward_size(p) values; when `ready`,
// forward reads them and skips its packing phase, otherwise it packs into them, ready for the next
// call. The layout follows this CPU's vector width: fill and read them in the same process.
template <class Real> struct PackedForward {
    Real* data = nullptr;
    bool ready = false;
};

namespace detail {

// The kernels for this CPU, chosen on first use.
template <class Real> const Ops<Real>& ops() {
    static const Ops<Real> table = [] {
        const char* forced = std::getenv("FASTRNN_ISA");
        std::string want = forced ? forced : "";
#ifdef FASTRNN_HAVE_X86_DISPATCH
        __builtin_cpu_init();
        bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
        bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        if (has512 && (want.empty() || want == "avx512")) return avx512::ops<Real>();
        if (has2 && (want.empty() || want == "avx2" || want == "avx512")) return avx2::ops<Real>();
#endif
        return portable::ops<Real>();
    }();
    return table;
}

// Frees a block of Workspace with the alignment it was made with.
struct AlignedFree {
    std::size_t align = 64;
    void operator()(unsigned char* p) const { ::operator delete[](p, std::align_val_t(align)); }
};

// Memory for one call, 64-byte aligned. Blocks up to kKeepBytes stay with the calling thread for its
// later calls: fresh pages cost a page fault each (about 1 ms for the 4 MiB of packed weights of an
// H = 512 LSTM, as much as a short sequence's compute). Slots are handed out in call order, so the
// same call shape gets the same blocks back.
class Workspace {
public:
    template <class Real> Real* get(std::int64_t n) {
        const std::size_t bytes = (static_cast<std::size_t>(n > 0 ? n : 1) * sizeof(Real) + 63) / 64 * 64;
        const std::size_t slot = next_++;
        if (bytes <= kKeepBytes && slot < kSlots) {
            Cached& c = cache()[slot];
            if (c.bytes < bytes) {
                c.block = new_block(bytes);
                c.bytes = bytes;
            }
            return reinterpret_cast<Real*>(c.block.get());
        }
        owned_.push_back(new_block(bytes));
        return reinterpret_cast<Real*>(owned_.back().get());
    }

private:
    using Block = std::unique_ptr<unsigned char[], AlignedFree>;
    struct Cached {
        Block block;
        std::size_t bytes = 0;
    };
    static constexpr std::size_t kSlots = 12, kKeepBytes = std::size_t(32) << 20;
    // Blocks of 2 MiB or more are asked to be backed by transparent huge pages where Linux offers them
    // (madvise mode): a block too big to keep costs a page fault per 2 MiB on each call rather than
    // one per 4 KiB (measured: 9-15% of a T = 512, B = 64 forward+backward), and the whole-sequence
    // products that stream it miss the TLB less. (NumPy does the same for its arrays of 4 MiB or more.)
    static constexpr std::size_t kHugePage = std::size_t(2) << 20;
    static Block new_block(std::size_t bytes) {
        const bool huge = bytes >= kHugePage;
        const std::size_t align = huge ? kHugePage : 64;
        if (huge) bytes = (bytes + kHugePage - 1) / kHugePage * kHugePage;
        Block block(static_cast<unsigned char*>(::operator new[](bytes, std::align_val_t(align))), AlignedFree{align});
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (huge) madvise(block.get(), bytes, MADV_HUGEPAGE);      // advice only: failure changes nothing
#endif
        return block;
    }
    static std::array<Cached, kSlots>& cache() {
        thread_local std::array<Cached, kSlots> blocks;
        return blocks;
    }
    std::size_t next_ = 0;
    std::vector<Block> owned_;
};

// dst[k][r] = src[k*ld + r] (times mul[k*mul_ld + r]) for r < n (0 beyond): R columns as a panel.
template <class Real>
void pack_cols(const Real* src, std::ptrdiff_t ld, int n, std::ptrdiff_t K, Real* dst, int R,
               const Real* mul = nullptr, std::ptrdiff_t mul_ld = 0) {
    for (std::ptrdiff_t k = 0; k < K; ++k)
        for (int r = 0; r < R; ++r)
            dst[k * R + r] = r < n ? src[k * ld + r] * (mul ? mul[k * mul_ld + r] : Real(1)) : Real(0);
}

inline int resolve_threads(int threads) {
#ifdef FASTRNN_SINGLE_THREAD
    (void)threads;
    return 1;
#else
    return threads > 0 ? threads : default_threads();
#endif
}

// The step-by-step synchronisation of one call's team (detail/team.h): each phase (a step, or part of
// one) is cut into chunks (unit tiles) that the threads claim with an atomic flag, each walking its own
// share first so that it keeps the same weights in its cache from step to step; a per-phase count of
// finished chunks is the barrier. A thread that is late or descheduled (a busy machine) does not hold
// the others up: they claim its chunks; one that joins late passes the finished phases at a glance.
class Phases {
public:
    // sizes[i]: the most chunks phase i has
    explicit Phases(const std::vector<std::ptrdiff_t>& sizes) : offset_(sizes.size() + 1, 0) {
        for (std::size_t i = 0; i < sizes.size(); ++i) offset_[i + 1] = offset_[i] + sizes[i];
        claims_.reset(new std::atomic<int>[offset_.back() > 0 ? offset_.back() : 1]());
        done_.reset(new std::atomic<std::ptrdiff_t>[sizes.size()]());
    }

    // work(chunk) for every chunk (of n) of `phase` this thread claims, then wait until all are done.
    // `reverse`: its own share last chunk first (then the others' downwards): see kReverseMinBytes.
    template <class Work> void run(std::ptrdiff_t phase, std::ptrdiff_t n, Work&& work, bool reverse = false) {
        if (done_[phase].load(std::memory_order_acquire) >= n) return;
        const std::ptrdiff_t start = n * team_id() / team_size(), end = n * (team_id() + 1) / team_size();
        std::atomic<int>* claims = claims_.get() + offset_[phase];
        for (std::ptrdiff_t i = 0; i < n; ++i) {
            const std::ptrdiff_t chunk = reverse ? ((end - 1 - i) % n + n) % n : (start + i) % n;
            if (claims[chunk].exchange(1, std::memory_order_relaxed) == 0) {
                work(chunk);
                done_[phase].fetch_add(1, std::memory_order_release);
            }
        }
        wait_until([&] { return done_[phase].load(std::memory_order_acquire) >= n; });
    }

private:
    std::vector<std::ptrdiff_t> offset_;
    std::unique_ptr<std::atomic<int>[]> claims_;
    std::unique_ptr<std::atomic<std::ptrdiff_t>[]> done_;
};

template <class Real> void check_problem(const Problem<Real>& p) {
    if (p.T < 1 || p.B < 1 || p.I < 1 || p.H < 1)
        throw std::invalid_argument("fastrnn: T, B, I and H must be >= 1");
    if (!p.x || !p.w_ih || !p.w_hh) throw std::invalid_argument("fastrnn: x, w_ih and w_hh are required");
    if (p.w_hr && (p.cell != Cell::lstm || p.P < 1))
        throw std::invalid_argument("fastrnn: projections (w_hr) are for the LSTM, with P >= 1");
    if (p.lengths)
        for (std::int64_t b = 0; b < p.B; ++b)
            if (p.lengths[b] < 1 || p.lengths[b] > p.T)
                throw std::invalid_argument("fastrnn: lengths must lie in [1, T]");
}

// Sequence lengths, all T when none are given.
template <class Real> std::vector<std::int64_t> lengths_of(const Problem<Real>& p) {
    return p.lengths ? std::vector<std::int64_t>(p.lengths, p.lengths + p.B) : std::vector<std::int64_t>(p.B, p.T);
}

template <class Real> void copy_or_zero(Real* dst, const Real* src, std::int64_t n) {
    if (src) std::memcpy(dst, src, sizeof(Real) * n);
    else std::fill(dst, dst + n, Real(0));
}

// Rows per work item of the whole-sequence products.
constexpr std::ptrdiff_t kItemRows = 64;

// Steps per chunk of the forward's input projection: about kInputChunkBytes of gates (in the last
// level cache when the chunk's steps read them), at least kItemRows rows (whole product items); the
// backward's chunks of dG too.
// (Measured against 2 MiB chunks, which cost 3-5% at T = 128, and against one chunk of all T steps.)
// FASTRNN_CHUNK_STEPS = n > 0, read per call, fixes it (the tests run several chunks at small sizes).
constexpr std::size_t kInputChunkBytes = std::size_t(8) << 20;
inline std::ptrdiff_t input_chunk_steps(std::ptrdiff_t T, std::ptrdiff_t B, std::ptrdiff_t GH, std::size_t real_size) {
    const char* forced = std::getenv("FASTRNN_CHUNK_STEPS");
    if (forced && std::atol(forced) > 0) return std::min<std::ptrdiff_t>(T, std::atol(forced));
    const auto step_bytes = static_cast<std::size_t>(B * GH) * real_size;
    const auto by_size = static_cast<std::ptrdiff_t>(kInputChunkBytes / step_bytes);
    return std::min(T, std::max<std::ptrdiff_t>({1, by_size, (kItemRows + B - 1) / B}));
}

// From this many bytes of weights a thread reads each step, odd steps walk its unit tiles in reverse
// (Phases::run's `reverse`): a step reads all of them, and the cache keeps the last ones read; in the
// same order every step those are evicted by the first ones before they come round again once the
// weights outgrow the L2 (an LSTM at H = 512 and B = 1: 2 MiB a thread, 1 MiB of L2 here), while in
// reverse the next step starts on them. Below it everything stays in L2, and in reverse the
// prefetcher restarts at every tile. The numba kernels do the same (_numba_tiles.REVERSE_MIN_BYTES).
constexpr std::size_t kReverseMinBytes = std::size_t(512) << 10;
inline bool reverse_odd_steps(std::ptrdiff_t step_weights, std::size_t real_size, int threads) {
    return static_cast<std::size_t>(step_weights) * real_size / static_cast<std::size_t>(threads) >= kReverseMinBytes;
}

// Columns per work item of the bias gradients' sums: 32 doubles stay in registers (8 of AVX2's 16).
constexpr std::ptrdiff_t kBiasColumns = 32;

// sums[k] += sum over r < rows of a[r*ld + k], k < cols (<= kBiasColumns), in double.
template <class Real> void column_sums(const Real* a, std::ptrdiff_t ld, std::ptrdiff_t rows, std::ptrdiff_t cols,
                                       double* sums) {
    double acc[kBiasColumns] = {};
    if (cols == kBiasColumns)       // the common case, with a constant trip count the compiler unrolls
        for (std::ptrdiff_t r = 0; r < rows; ++r)
            FASTRNN_UNROLL for (std::ptrdiff_t k = 0; k < kBiasColumns; ++k) acc[k] += a[r * ld + k];
    else
        for (std::ptrdiff_t r = 0; r < rows; ++r)
            for (std::ptrdiff_t k = 0; k < cols; ++k) acc[k] += a[r * ld + k];
    for (std::ptrdiff_t k = 0; k < cols; ++k) sums[k] += acc[k];
}

// Sizes of the packed forward weights' parts, in their order: W_ih and W_hh by unit tiles
// ([tile][k][R]), the b_ih and b_hh tiles, W_hr by tiles of its P rows (0 without projections).
template <class Real> std::array<std::int64_t, 5> packed_forward_parts(const Problem<Real>& p) {
    const std::int64_t R = ops<Real>().lanes, G = num_gates(p.cell), NT = (p.H + R - 1) / R;
    const std::int64_t P = state_size(p), NP = (P + R - 1) / R;
    return {G * NT * p.I * R, G * NT * P * R, G * NT * R, G * NT * R, p.w_hr ? NP * p.H * R : 0};
}

}  // namespace detail

// The number of values PackedForward::data must hold for problems of p's cell and sizes.
template <class Real> std::int64_t packed_forward_size(const Problem<Real>& p) {
    std::int64_t n = 0;
    for (std::int64_t part : detail::packed_forward_parts(p)) n += part;
    return n;
}

// Runs the sequence forward; with a tape, records what backward needs. threads <= 0: every CPU this
// process may use.
// packed: weights packed by an earlier call, or room to pack them for later ones (PackedForward).
template <class Real>
void forward(const Problem<Real>& p, const Real* h0, const Real* c0, Real* y, Real* h_n, Real* c_n,
             const Tape<Real>* tape, int threads, PackedForward<Real> packed = {}) {
    using namespace detail;
    check_problem(p);
    const Ops<Real>& op = ops<Real>();
    const int R = op.lanes;
    const std::ptrdiff_t T = p.T, B = p.B, I = p.I, H = p.H, G = num_gates(p.cell), GH = G * H;
    const std::ptrdiff_t P = state_size(p), NT = (H + R - 1) / R, NP = (P + R - 1) / R;
    const bool lstm = p.cell == Cell::lstm, cho = p.cell == Cell::gru_cho, projected = p.w_hr != nullptr;
    const std::vector<std::int64_t> lengths = lengths_of(p);

    Workspace ws;
    // the packed weights: the caller's (PackedForward), else each part in this call's workspace
    std::array<Real*, 5> pk{};
    Real* next = packed.data;
    const auto packed_parts = packed_forward_parts(p);
    for (std::size_t i = 0; i < packed_parts.size(); ++i) {
        if (packed_parts[i] == 0) continue;
        pk[i] = next ? next : ws.get<Real>(packed_parts[i]);
        if (next) next += packed_parts[i];
    }
    Real *pk_ih = pk[0], *pk_hh = pk[1], *pb_ih = pk[2], *pb_hh = pk[3], *pk_hr = pk[4];
    const std::ptrdiff_t S = tape ? T + 1 : 2;
    // the input projection runs a chunk of steps ahead of them (its gates still in cache when read);
    // without a tape the chunks share one ring of chunk_steps steps
    const std::ptrdiff_t chunk_steps = input_chunk_steps(T, B, GH, sizeof(Real));
    const bool ring = !(tape && tape->gates);
    Real* gates = ring ? ws.get<Real>(chunk_steps * B * GH) : tape->gates;
    Real* h = tape ? tape->h : ws.get<Real>(2 * B * P);
    Real* c = nullptr;
    if (lstm) c = tape ? tape->c : ws.get<Real>(2 * B * H);
    if (!h || (lstm && !c) || (tape && p.cell == Cell::gru && !tape->ghn) || (tape && projected && !tape->m))
        throw std::invalid_argument("fastrnn: the tape lacks an array this cell needs");
    Real* rh = cho ? ws.get<Real>(B * H) : nullptr;
    Real* m = projected ? (tape ? tape->m : ws.get<Real>(B * H)) : nullptr;
    copy_or_zero(h, h0, B * P);
    if (lstm) copy_or_zero(c, c0, B * H);

    const int n_threads = resolve_threads(threads);
    const std::ptrdiff_t scratch_size = G * B * R;
    Real* scratch = ws.get<Real>(scratch_size * n_threads);
    ForwardCtx<Real> s{p.cell, T, B, I, H, G, NT, lengths.data(), pk_hh, pb_hh, gates, ring ? chunk_steps : T,
                       tape && p.cell == Cell::gru ? tape->ghn : nullptr, h, c, S, y, rh,
                       P, NP, pk_hr, m, tape ? B * H : 0, !ring};
    // a chunk's input projection items: up to 64 rows of x times one gate's tiles, or a part of them
    // when the rows are few (a short call), so that every thread gets a share of W_ih to read
    struct InputItems {
        std::ptrdiff_t part_tiles, parts, count;
    };
    const auto input_items = [&](std::ptrdiff_t steps) {
        const std::ptrdiff_t row_items = (steps * B + kItemRows - 1) / kItemRows;
        const std::ptrdiff_t wanted_parts = std::min(NT, (4 * n_threads + row_items * G - 1) / (row_items * G));
        const std::ptrdiff_t part_tiles = (NT + wanted_parts - 1) / wanted_parts;
        const std::ptrdiff_t parts = (NT + part_tiles - 1) / part_tiles;
        return InputItems{part_tiles, parts, row_items * G * parts};
    };
    const std::ptrdiff_t per_step = cho || projected ? 2 : 1;
    // packing; then per chunk of steps its input projection and its steps
    std::vector<std::ptrdiff_t> phase_sizes{std::max(NT, NP)};
    for (std::ptrdiff_t t0 = 0; t0 < T; t0 += chunk_steps) {
        phase_sizes.push_back(input_items(std::min(chunk_steps, T - t0)).count);
        phase_sizes.resize(phase_sizes.size() + per_step * std::min(chunk_steps, T - t0), std::max(NT, NP));
    }
    const bool reverse = reverse_odd_steps(G * H * P, sizeof(Real), n_threads);
    Phases sync(phase_sizes);
    run_team(n_threads, [&] {
        Real* gh = scratch + team_id() * scratch_size;
        sync.run(0, packed.ready ? 0 : std::max(NT, NP), [&](std::ptrdiff_t u) {
            if (projected && u < NP)
                op.pack_rows(p.w_hr + u * R * H, H, tile_width(P, u, R), H, pk_hr + u * H * R);
            if (u >= NT) return;
            const int n = tile_width(H, u, R);
            for (std::ptrdiff_t g = 0; g < G; ++g) {
                const std::ptrdiff_t tile = g * NT + u, row = g * H + u * R;
                op.pack_rows(p.w_ih + row * I, I, n, I, pk_ih + tile * I * R);
                op.pack_rows(p.w_hh + row * P, P, n, P, pk_hh + tile * P * R);
                pack_cols(p.b_ih ? p.b_ih + row : p.w_ih, 0, p.b_ih ? n : 0, 1, pb_ih + tile * R, R);
                pack_cols(p.b_hh ? p.b_hh + row : p.w_hh, 0, p.b_hh ? n : 0, 1, pb_hh + tile * R, R);
            }
        });
        std::ptrdiff_t phase = 1;
        for (std::ptrdiff_t t0 = 0; t0 < T; t0 += chunk_steps) {
            const std::ptrdiff_t t1 = std::min(T, t0 + chunk_steps), rows = (t1 - t0) * B;
            // the input projection x W_ih^T + b_ih of the chunk's steps (rows x tiles of a gate)
            const InputItems in = input_items(t1 - t0);
            const Real* x = p.x + t0 * B * I;
            Real* chunk_gates = s.gates_at(t0, 0);
            sync.run(phase++, in.count, [&](std::ptrdiff_t item) {
                const std::ptrdiff_t r0 = item / (G * in.parts) * kItemRows, g = item / in.parts % G;
                const std::ptrdiff_t u0 = item % in.parts * in.part_tiles, tile = g * NT + u0;
                op.product(pk_ih + tile * I * R, I * R, I, x + r0 * I, I, 1, std::min(kItemRows, rows - r0),
                           chunk_gates + r0 * GH + g * H + u0 * R, GH, std::min(in.part_tiles * R, H - u0 * R),
                           pb_ih + tile * R, false);
            });
            for (std::ptrdiff_t t = t0; t < t1; ++t) {
                const bool rev = reverse && t % 2 == 1;
                if (cho) {
                    sync.run(phase++, NT, [&](std::ptrdiff_t u) { op.forward_cho_rz(s, t, u, gh); }, rev);
                    sync.run(phase++, NT, [&](std::ptrdiff_t u) { op.forward_cho_n(s, t, u, gh); }, rev);
                } else if (projected) {
                    sync.run(phase++, NT, [&](std::ptrdiff_t u) { op.forward_step(s, t, u, gh); }, rev);
                    sync.run(phase++, NP, [&](std::ptrdiff_t v) { op.forward_project(s, t, v, gh); }, rev);
                } else {
                    sync.run(phase++, NT, [&](std::ptrdiff_t u) { op.forward_step(s, t, u, gh); }, rev);
                }
            }
        }
    });
    if (h_n) std::memcpy(h_n, h + (T % S) * B * P, sizeof(Real) * B * P);
    if (lstm && c_n) std::memcpy(c_n, c + (T % S) * B * H, sizeof(Real) * B * H);
}

// Backpropagation through time over a tape recorded by forward with the same problem.
template <class Real>
void backward(const Problem<Real>& p, const Tape<Real>& tape, const Real* dy, const Real* dh_n, const Real* dc_n,
              const Grads<Real>& out, int threads) {
    using namespace detail;
    check_problem(p);
    const Ops<Real>& op = ops<Real>();
    const int R = op.lanes;
    const std::ptrdiff_t T = p.T, B = p.B, I = p.I, H = p.H, G = num_gates(p.cell), GH = G * H;
    const std::ptrdiff_t P = state_size(p), NT = (H + R - 1) / R, NP = (P + R - 1) / R, NI = (I + R - 1) / R;
    const bool lstm = p.cell == Cell::lstm, cho = p.cell == Cell::gru_cho, gru = p.cell == Cell::gru;
    const bool projected = p.w_hr != nullptr;
    if (!tape.h || !tape.gates || (lstm && !tape.c) || (gru && !tape.ghn) || (projected && !tape.m))
        throw std::invalid_argument("fastrnn: the tape lacks an array this cell needs");
    if (!out.dx || !out.dh0 || !out.dw_ih || !out.dw_hh || (lstm && !out.dc0) || (projected && !out.dw_hr))
        throw std::invalid_argument("fastrnn: a gradient output is missing");
    const std::vector<std::int64_t> lengths = lengths_of(p);
    // The steps go in chunks of about kInputChunkBytes of dG, the last chunk first; right after a
    // chunk's steps come its whole-sequence products (its rows of dx, its part of the weight gradients,
    // summed over the chunks), while its dG is still in cache. dG and the products' packed operands
    // are rings of one chunk: O(chunk) memory, not O(T) (a T-long dG's fresh pages cost more than
    // the backward's pointwise work at T = 512, B = 64: two threads faulting in the same huge pages).
    // One phase a step where the cell allows it (not Cho's GRU, not projections): unit tiles 2v, 2v+1
    // take their dh_t = dG_{t+1} W_hh (all of dG_{t+1} done at the last barrier), then their pointwise
    // backward of step t, which writes dG_t into another slot of the ring (so it holds >= 2 steps).
    // (Two phases a step, pointwise then dh, meant two barriers: forward+backward, LSTM T = 128, B = 1,
    // H = 128 1.05 -> 0.84 ms, T = 16 216 -> 185 us, T = 512, B = 8, H = 256 43.1 -> 41.1 ms; GRU T = 128,
    // B = 1, H = 256 2.07 -> 1.87 ms.)
    const bool one_phase = p.cell != Cell::gru_cho && !projected;
    const std::ptrdiff_t chunk_steps =
        std::min(T, std::max<std::ptrdiff_t>(one_phase ? 2 : 1, input_chunk_steps(T, B, GH, sizeof(Real))));
    const std::ptrdiff_t NC = chunk_steps * B;
    const std::ptrdiff_t chunks = (T + chunk_steps - 1) / chunk_steps;

    Workspace ws;
    Real *pkT_hh = ws.get<Real>(NP * GH * R), *pkT_ih = ws.get<Real>(NI * GH * R), *dgi = ws.get<Real>(NC * GH);
    Real* dgh = gru ? ws.get<Real>(NC * GH) : dgi;
    Real *pk_x = ws.get<Real>(NI * NC * R), *pk_h = ws.get<Real>(NP * NC * R);
    Real* pk_rh = cho ? ws.get<Real>(NT * NC * R) : nullptr;
    Real* pkT_hr = projected ? ws.get<Real>(NT * P * R) : nullptr;
    Real* pk_m = projected ? ws.get<Real>(NT * NC * R) : nullptr;
    Real* dh_step = projected ? ws.get<Real>(NC * P) : nullptr;
    double* bias_sums = ws.get<double>(2 * GH);       // db_ih's, then db_hh's (the GRU's), over the chunks
    std::fill(bias_sums, bias_sums + 2 * GH, 0.0);
    Real* dh = out.dh0;                 // carried in place: dh0 after the last step
    Real* dc = lstm ? out.dc0 : nullptr;
    copy_or_zero(dh, dh_n, B * P);
    if (lstm) copy_or_zero(dc, dc_n, B * H);

    const int n_threads = resolve_threads(threads);
    Real* scratch = ws.get<Real>(2 * B * R * n_threads);     // (backward_dh: two tiles)
    BackwardCtx<Real> s{p.cell, T, B, I, H, G, NT, lengths.data(), tape.h, tape.c, tape.gates, tape.ghn, dy,
                        pkT_hh, dgi, dgh, dh, dc, P, NP, pkT_hr, dh_step, chunk_steps};
    const auto row_items = [](std::ptrdiff_t rows) { return (rows + kItemRows - 1) / kItemRows; };
    // packing W_hh (and W_hr) by columns for the steps and W_ih by columns for dx; then per step the
    // pointwise backward and dh_{t-1}, with Cho's reset gate between them, or the projection's dL/dh_t
    // before them (one_phase: dh_t and the pointwise backward in one, and dh0 after the last step);
    // per chunk three more phases: packing the weight gradients' operands by columns (x, h_{t-1}, Cho's
    // r * h_{t-1}, m), the products (dx by rows; dW_ih, dW_hh by rows of a gate; dW_hr), the bias sums
    const std::ptrdiff_t per_step = one_phase ? 1 : cho || projected ? 3 : 2;
    const std::ptrdiff_t gate_row_items = row_items(H), gate_items = G * gate_row_items;
    const std::ptrdiff_t projection_items = projected ? row_items(P) : 0;
    const std::ptrdiff_t bias_items = (GH + kBiasColumns - 1) / kBiasColumns;
    const std::ptrdiff_t tiles = std::max({NT, NP, NI});
    std::vector<std::ptrdiff_t> phase_sizes{tiles};
    for (std::ptrdiff_t c = chunks - 1; c >= 0; --c) {
        const std::ptrdiff_t steps = std::min(T, (c + 1) * chunk_steps) - c * chunk_steps;
        phase_sizes.resize(phase_sizes.size() + per_step * steps + (one_phase && c == 0), std::max(NT, NP));
        phase_sizes.insert(phase_sizes.end(),
                           {tiles, row_items(steps * B) + 2 * gate_items + projection_items, bias_items});
    }
    const bool reverse = reverse_odd_steps(G * H * P, sizeof(Real), n_threads);
    Phases sync(phase_sizes);
    run_team(n_threads, [&] {
        Real* work = scratch + team_id() * 2 * B * R;
        sync.run(0, tiles, [&](std::ptrdiff_t u) {
            if (u < NP) pack_cols(p.w_hh + u * R, P, tile_width(P, u, R), GH, pkT_hh + u * GH * R, R);
            if (u < NI) pack_cols(p.w_ih + u * R, I, tile_width(I, u, R), GH, pkT_ih + u * GH * R, R);
            if (projected && u < NT) pack_cols(p.w_hr + u * R, H, tile_width(H, u, R), P, pkT_hr + u * P * R, R);
        });
        std::ptrdiff_t phase = 1;
        for (std::ptrdiff_t c = chunks - 1; c >= 0; --c) {
            const std::ptrdiff_t t0 = c * chunk_steps, t1 = std::min(T, t0 + chunk_steps), n = (t1 - t0) * B;
            if (one_phase) {
                for (std::ptrdiff_t t = t1 - 1; t >= t0; --t)
                    sync.run(phase++, (NP + 1) / 2, [&](std::ptrdiff_t v) {
                        if (t + 1 < T) op.backward_dh(s, t + 1, v, 0, GH, work);
                        for (std::ptrdiff_t u = 2 * v; u < std::min(NT, 2 * v + 2); ++u)
                            op.backward_pointwise(s, t, u, work);
                    }, reverse && t % 2 == 1);
                if (c == 0)                     // dh0 = dh_{-1}: step 0's dG times W_hh
                    sync.run(phase++, (NP + 1) / 2, [&](std::ptrdiff_t v) { op.backward_dh(s, 0, v, 0, GH, work); });
            } else {
                for (std::ptrdiff_t t = t1 - 1; t >= t0; --t) {
                    if (projected) sync.run(phase++, NP, [&](std::ptrdiff_t v) { op.backward_gather(s, t, v); });
                    sync.run(phase++, NT, [&](std::ptrdiff_t u) { op.backward_pointwise(s, t, u, work); });
                    if (cho) sync.run(phase++, NT, [&](std::ptrdiff_t u) { op.backward_cho_reset(s, t, u, work); });
                    sync.run(phase++, (NP + 1) / 2,
                             [&](std::ptrdiff_t v) { op.backward_dh(s, t, v, 0, cho ? 2 * H : GH, work); },
                             reverse && t % 2 == 1);
                }
            }

            // the chunk's rows (t0 * B onwards; slot 0 of the rings) of dx = dgi W_ih, dW_ih += dgi^T x,
            // dW_hh += dgh^T h_prev (Cho: (r h_prev) for n), dW_hr += dh^T m
            const Real* h_prev = tape.h + t0 * B * P;
            sync.run(phase++, tiles, [&](std::ptrdiff_t u) {
                if (u < NI) pack_cols(p.x + t0 * B * I + u * R, I, tile_width(I, u, R), n, pk_x + u * NC * R, R);
                if (u < NP) pack_cols(h_prev + u * R, P, tile_width(P, u, R), n, pk_h + u * NC * R, R);
                if (u >= NT) return;
                if (cho)
                    pack_cols(h_prev + u * R, H, tile_width(H, u, R), n, pk_rh + u * NC * R, R, tape.gates + t0 * B * GH + u * R,
                              GH);
                if (projected) pack_cols(tape.m + t0 * B * H + u * R, H, tile_width(H, u, R), n, pk_m + u * NC * R, R);
            });
            const bool add = c < chunks - 1;        // the weight gradients sum over the chunks
            const std::ptrdiff_t dx_items = row_items(n);
            // items: 64 rows of dx; 64 rows of one gate of dW_ih, then of dW_hh; 64 rows of dW_hr
            sync.run(phase++, dx_items + 2 * gate_items + projection_items, [&](std::ptrdiff_t item) {
                if (item < dx_items) {
                    const std::ptrdiff_t r0 = item * kItemRows;
                    op.product(pkT_ih, GH * R, GH, dgi + r0 * GH, GH, 1, std::min(kItemRows, n - r0),
                               out.dx + (t0 * B + r0) * I, I, I, nullptr, false);
                    return;
                }
                item -= dx_items;
                if (item >= 2 * gate_items) {
                    const std::ptrdiff_t r0 = (item - 2 * gate_items) * kItemRows;
                    op.product(pk_m, NC * R, n, dh_step + r0, 1, P, std::min(kItemRows, P - r0), out.dw_hr + r0 * H,
                               H, H, nullptr, add);
                    return;
                }
                const bool ih = item < gate_items;
                const std::ptrdiff_t rest = ih ? item : item - gate_items, g = rest / gate_row_items;
                const std::ptrdiff_t r0 = g * H + (rest % gate_row_items) * kItemRows;
                const std::ptrdiff_t rows = std::min(kItemRows, (g + 1) * H - r0), cols = ih ? I : P;
                const Real* panels = ih ? pk_x : (cho && g == 2 ? pk_rh : pk_h);
                op.product(panels, NC * R, n, (ih ? dgi : dgh) + r0, 1, GH, rows,
                           (ih ? out.dw_ih : out.dw_hh) + r0 * cols, cols, cols, nullptr, add);
            });
            // bias gradients: column sums, accumulated in double (one pass where dgh is dgi)
            sync.run(phase++, bias_items, [&](std::ptrdiff_t item) {
                const std::ptrdiff_t k0 = item * kBiasColumns, k1 = std::min(GH, k0 + kBiasColumns);
                column_sums(dgi + k0, GH, n, k1 - k0, bias_sums + k0);
                if (dgh != dgi) column_sums(dgh + k0, GH, n, k1 - k0, bias_sums + GH + k0);
                if (c > 0) return;
                const double* sums_hh = dgh != dgi ? bias_sums + GH : bias_sums;
                for (std::ptrdiff_t k = k0; k < k1; ++k) {
                    if (out.db_ih) out.db_ih[k] = static_cast<Real>(bias_sums[k]);
                    if (out.db_hh) out.db_hh[k] = static_cast<Real>(sums_hh[k]);
                }
            });
        }
    });
}

// The instruction set the kernels use on this CPU: "avx512", "avx2" or "portable".
inline const char* isa() { return detail::ops<float>().isa; }

}  // namespace fastrnn
