// The machine's measured single-core fp32 peak: independent FMA chains on 8-wide vectors,
// the ceiling every kernel's GFLOP/s is compared with in the same run.
#pragma once

#include <chrono>
#include <cstdint>

namespace hetsynth::bench {

// GFLOP/s of one core running FMAs back to back (measured once, ~0.2 s, then cached).
double MeasuredPeakGflops();

// Runs body once per benchmark iteration and reports plain counters: GFLOPs achieved
// (flops_per_iter over the measured wall time), peak_GFLOPs and of_peak = GFLOPs / peak.
template <typename State, typename Body>
void RunAndReport(State& state, double flops_per_iter, Body&& body) {
  double seconds = 0;
  int64_t iters = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++iters;
  }
  const double gflops = seconds > 0 ? flops_per_iter * static_cast<double>(iters) / seconds / 1e9 : 0;
  const double peak = MeasuredPeakGflops();
  state.counters["GFLOPs"] = gflops;
  state.counters["peak_GFLOPs"] = peak;
  state.counters["of_peak"] = gflops / peak;
}

}  // namespace hetsynth::bench
