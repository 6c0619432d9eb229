// This machine's float32 FMA ceiling per core, sampled: the bound the CPU GFLOP/s figures compare to.
//
//   g++ -O2 -std=c++17 -mavx2 -mfma -pthread benchmarks/cpp/fma_peak.cpp -o /tmp/fma_peak
//   /tmp/fma_peak 2 10        # 2 threads, 10 s: GFLOP/s per core over ~1 ms slices (p10, median, p90)
//
// Ten independent 8-lane FMA chains per thread (enough to cover the FMA latency on two pipes), no
// memory traffic: what the cores deliver when nothing else limits them, slice by slice, so that a
// virtual machine's slow spells show in the low percentiles.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

typedef float V __attribute__((vector_size(32)));

__attribute__((noinline)) V chains(long n, V x) {
    V a0 = x, a1 = x + 1, a2 = x + 2, a3 = x + 3, a4 = x + 4, a5 = x + 5, a6 = x + 6, a7 = x + 7, a8 = x + 8,
      a9 = x + 9, b = x * 0.999f;
    for (long i = 0; i < n; ++i) {
        asm volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4));   // keep every chain live
        a0 = a0 * b + x; a1 = a1 * b + x; a2 = a2 * b + x; a3 = a3 * b + x; a4 = a4 * b + x;
        a5 = a5 * b + x; a6 = a6 * b + x; a7 = a7 * b + x; a8 = a8 * b + x; a9 = a9 * b + x;
    }
    return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9;
}

int main(int argc, char** argv) {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
    const double seconds = argc > 2 ? std::atof(argv[2]) : 5;
    const long n = 300000;     // 3M FMAs: about 1 ms a slice
    std::vector<std::vector<double>> rates(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            const V x = {1, 1, 1, 1, 1, 1, 1, 1};
            const auto start = std::chrono::steady_clock::now();
            float sink = 0;
            while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
                const auto a = std::chrono::steady_clock::now();
                sink += chains(n, x * 0.5f)[0];
                const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
                rates[t].push_back(n * 10.0 * 16 / s / 1e9);     // 10 chains x 8 lanes x 2 flops
            }
            if (sink == 12345) std::printf(" ");
        });
    for (auto& t : pool) t.join();
    std::vector<double> all;
    for (auto& r : rates) all.insert(all.end(), r.begin(), r.end());
    std::sort(all.begin(), all.end());
    auto q = [&](double f) { return all[static_cast<std::size_t>(f * (all.size() - 1))]; };
    std::printf("%d thread(s), %.0f s: float32 GFLOP/s per core p10 %.1f, median %.1f, p90 %.1f\n", threads, seconds,
                q(0.1), q(0.5), q(0.9));
}
