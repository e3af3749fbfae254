// Inputs and reference results for the communicator tests (threads and MPI): random buffers
// and uneven counts, and sums in rank order — what every communicator must reproduce bit for bit.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace hetsynth::runtime::comm_testing {

using Buffers = std::vector<std::vector<float>>;  // one buffer per rank

inline std::vector<float> Random(std::mt19937& rng, int64_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Counts per rank in [0, max_count], about a third of them zero.
inline std::vector<int64_t> RandomCounts(std::mt19937& rng, int n, int64_t max_count) {
  std::vector<int64_t> c(n);
  for (int64_t& x : c) {
    x = std::uniform_int_distribution<int>(0, 2)(rng) == 0
            ? 0
            : std::uniform_int_distribution<int64_t>(0, max_count)(rng);
  }
  return c;
}

inline int64_t Sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

// ((x₀ + x₁) + x₂) + … for each element.
inline std::vector<float> RankOrderSum(const Buffers& in) {
  std::vector<float> out = in[0];
  for (size_t k = 1; k < in.size(); ++k) {
    for (size_t i = 0; i < out.size(); ++i) out[i] += in[k][i];
  }
  return out;
}

}  // namespace hetsynth::runtime::comm_testing
