// What every backend's Profile (backend.h) shares for its kernels: per-node medians of the
// seconds a trainer's kernel timer reports over repeated passes (1 warm-up, then `repeats`).
//
//   std::vector<double> t(num_nodes, 0.0);  // the kernel timer adds each kernel's seconds to t[node]
//   HS_ASSIGN_OR_RETURN(out.node_forward_seconds,
//                       NodeMedians(repeats, t, [&] { return trainer->Loss(batch).status(); }));
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/base/median.h"
#include "hetsynth/base/status.h"

namespace hetsynth::runtime {

// Runs `pass` (returning absl::Status) 1 + `repeats` times, zeroing `t` before each; per node,
// the median of what t[node] held after each timed pass (the first warms up and is dropped).
template <class Pass>
absl::StatusOr<std::vector<double>> NodeMedians(int repeats, std::vector<double>& t, Pass&& pass) {
  std::vector<std::vector<double>> samples(t.size());
  for (int run = 0; run <= repeats; ++run) {
    std::fill(t.begin(), t.end(), 0.0);
    HS_RETURN_IF_ERROR(pass());
    if (run > 0) {
      for (size_t n = 0; n < t.size(); ++n) samples[n].push_back(t[n]);
    }
  }
  std::vector<double> medians;
  medians.reserve(t.size());
  for (const std::vector<double>& s : samples) medians.push_back(Median(s));
  return medians;
}

}  // namespace hetsynth::runtime
