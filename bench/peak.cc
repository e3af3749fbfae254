#include "peak.h"

#include <chrono>

namespace hetsynth::bench {
namespace {

typedef float V8 __attribute__((vector_size(32)));

// 12 independent accumulators hide the FMA latency (4 cycles × 2 ports + slack).
__attribute__((noinline)) V8 FmaChains(long iters, V8 a, V8 b) {
  V8 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = a * static_cast<float>(i + 1);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = acc[i] * a + b;
  }
  V8 sum = acc[0];
  for (int i = 1; i < 12; ++i) sum += acc[i];
  return sum;
}

double Measure() {
  const V8 a = {0.999f, 0.999f, 0.999f, 0.999f, 0.999f, 0.999f, 0.999f, 0.999f};
  const V8 b = {1e-3f, 1e-3f, 1e-3f, 1e-3f, 1e-3f, 1e-3f, 1e-3f, 1e-3f};
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const long iters = 4'000'000;
    const auto t0 = std::chrono::steady_clock::now();
    volatile V8 sink = FmaChains(iters, a, b);
    (void)sink;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(iters) * 12 * 8 * 2 / s / 1e9);
  }
  return best;
}

}  // namespace

double MeasuredPeakGflops() {
  static const double peak = Measure();
  return peak;
}

}  // namespace hetsynth::bench
