// One thread's GFLOP/s in the C++ kernels' whole-sequence product (detail/kernels.h panel_product: the
// input projection, dx and the weight gradients all run it), next to this machine's FMA ceiling
// (fma_peak.cpp): how close the kernels' arithmetic runs to the bound.
//
//   g++ -O3 -std=c++17 -Wno-psabi -I kernels/include -pthread benchmarks/cpp/product_rate.cpp -o /tmp/product_rate
//   /tmp/product_rate 1024 256 1024      # rows (T*B), reduction (I), columns (G*H)
//
// Times 200 products of rows x K by K x cols in items of 64 rows, as the forward's input projection
// does on one thread; prints the best rate, the median and the quartiles.
#include <fastrnn/sequence.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

int main(int argc, char** argv) {
    const long M = argc > 1 ? std::atol(argv[1]) : 1024, K = argc > 2 ? std::atol(argv[2]) : 256,
               N = argc > 3 ? std::atol(argv[3]) : 1024;
    const auto& op = fastrnn::detail::ops<float>();
    const long R = op.lanes, tiles = (N + R - 1) / R;
    std::vector<float> panels(tiles * K * R), rows(M * K), out(M * N), bias(tiles * R);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> uniform(-1, 1);
    for (auto& v : panels) v = uniform(rng);
    for (auto& v : rows) v = uniform(rng);
    std::vector<double> seconds;
    for (int r = 0; r < 200; ++r) {
        const auto a = std::chrono::steady_clock::now();
        for (long r0 = 0; r0 < M; r0 += 64)
            op.product(panels.data(), K * R, K, rows.data() + r0 * K, K, 1, std::min(64L, M - r0), out.data() + r0 * N,
                       N, N, bias.data(), false);
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    }
    std::sort(seconds.begin(), seconds.end());
    const double flop = 2.0 * M * K * N;
    const auto rate = [&](double q) { return flop / seconds[static_cast<std::size_t>(q * (seconds.size() - 1))] / 1e9; };
    std::printf("%s product %ld x %ld x %ld, one thread, GFLOP/s: best %.1f, fast quartile %.1f, median %.1f, "
                "slow quartile %.1f\n",
                op.isa, M, K, N, rate(0), rate(0.25), rate(0.5), rate(0.75));
}
