// The C++ kernels' whole-sequence product (the forward's input projection: items of 64 rows x one gate,
// claimed by a team of threads as sequence.h does) against OpenBLAS's sgemm on the same shapes, in one
// process, on 1 or 2 threads: is our product what holds the kernels back?
//
//   LIB=$(python -c "import numpy, glob, os; print(glob.glob(os.path.join(os.path.dirname(numpy.__file__), '..', 'numpy.libs', 'libscipy_openblas64_*.so'))[0])")
//   g++ -O3 -std=c++17 -Wno-psabi -I kernels/include -pthread benchmarks/cpp/product_vs_openblas.cpp "$LIB" \
//       -Wl,-rpath,"$(dirname "$LIB")" -o /tmp/product_vs_openblas
//   THREADS=2 OPENBLAS_NUM_THREADS=2 ONLY=ours /tmp/product_vs_openblas 1024 128 512 128
//   THREADS=2 OPENBLAS_NUM_THREADS=2 ONLY=blas /tmp/product_vs_openblas 1024 128 512 128
//   # rows (T*B), reduction (I), columns (G*H), H (a gate's columns); ONLY unset: the two alternate
//
// NumPy's wheels bundle OpenBLAS as libscipy_openblas64_ (ILP64, symbols prefixed scipy_). With two
// threads do not alternate them: each library's pool spins after its call and slows the other's next
// one (measured: our median halves), so time each alone (ONLY) a few times over. CI builds and runs it
// once where NumPy bundles that library (benchmarks/test_cpp_probes.py); results in
// benchmarks/results/cpu-bounds-epyc-2core.md.
#include <fastrnn/sequence.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

extern "C" void scipy_cblas_sgemm64_(int order, int trans_a, int trans_b, long m, long n, long k, float alpha,
                                     const float* a, long lda, const float* b, long ldb, float beta, float* c,
                                     long ldc);

int main(int argc, char** argv) {
    const long M = argc > 1 ? std::atol(argv[1]) : 1024, K = argc > 2 ? std::atol(argv[2]) : 128,
               N = argc > 3 ? std::atol(argv[3]) : 512, H = argc > 4 ? std::atol(argv[4]) : N;
    const int reps = argc > 5 ? std::atoi(argv[5]) : 100;
    const int threads = std::getenv("THREADS") ? std::atoi(std::getenv("THREADS")) : 1;
    const char* only = std::getenv("ONLY");
    const bool run_ours = !only || std::strcmp(only, "blas") != 0, run_blas = !only || std::strcmp(only, "ours") != 0;
    const auto& op = fastrnn::detail::ops<float>();
    const long R = op.lanes, NT = (H + R - 1) / R, G = N / H;
    if (G * H != N || H % R != 0) {
        std::fprintf(stderr, "columns must be a whole number of gates of H columns, H a multiple of %ld\n", R);
        return 2;
    }
    std::vector<float> panels(G * NT * K * R), rows(M * K), w(N * K), out(M * N), out_blas(M * N), bias(N);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> uniform(-1, 1);
    for (auto* v : {&panels, &rows, &w})
        for (auto& x : *v) x = uniform(rng);
    const long row_items = (M + 63) / 64, items = row_items * G;
    const auto ours = [&] {
        fastrnn::detail::Phases sync({items});
        fastrnn::detail::run_team(threads, [&] {
            sync.run(0, items, [&](long item) {
                const long r0 = item / G * 64, g = item % G;
                op.product(panels.data() + g * NT * K * R, K * R, K, rows.data() + r0 * K, K, 1,
                           std::min(64L, M - r0), out.data() + r0 * N + g * H, N, H, bias.data() + g * H, false);
            });
        });
    };
    const auto blas = [&] {        // row-major, rows (M x K) times w^T (w: N x K), as x W_ih^T
        scipy_cblas_sgemm64_(101, 111, 112, M, N, K, 1.0f, rows.data(), K, w.data(), K, 0.0f, out_blas.data(), N);
    };
    std::vector<double> t_ours, t_blas;
    for (int r = 0; r < reps; ++r) {
        const auto a = std::chrono::steady_clock::now();
        if (run_ours) ours();
        const auto b = std::chrono::steady_clock::now();
        if (run_blas) blas();
        const auto c = std::chrono::steady_clock::now();
        t_ours.push_back(std::chrono::duration<double>(b - a).count());
        t_blas.push_back(std::chrono::duration<double>(c - b).count());
    }
    std::sort(t_ours.begin(), t_ours.end());
    std::sort(t_blas.begin(), t_blas.end());
    const double gflop = 2.0 * M * K * N / 1e9;
    std::printf("%ld x %ld x %ld (H = %ld), %d thread(s), GFLOP/s:", M, K, N, H, threads);
    if (run_ours) std::printf(" fastrnn best %.1f median %.1f", gflop / t_ours[0], gflop / t_ours[reps / 2]);
    if (run_blas) std::printf("%s OpenBLAS best %.1f median %.1f", run_ours ? " |" : "", gflop / t_blas[0],
                              gflop / t_blas[reps / 2]);
    std::printf("\n");
}
