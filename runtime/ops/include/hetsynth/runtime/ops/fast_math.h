// Vectorizable float helpers of the CPU kernels (GCC does not vectorize std::exp under the
// project's flags, nor float ternaries under -ftrapping-math). The CUDA backend's gelu computes
// bit for bit the same ExpF (GeluExpF in backends/cuda/src/ops/elementwise_kernels.h: C++17 and
// __host__ __device__, so it cannot include this C++20 header).
//
//   const float e = ExpF(x - row_max);   // within 2 ulp of e^x; 0 below -87
#pragma once

#include <bit>
#include <cstdint>

namespace hetsynth::runtime::cpu {

// All-ones when b. Selects go through bit masks because GCC's default -ftrapping-math keeps it
// from if-converting float ternaries, which would stop the loops around them vectorizing.
inline uint32_t Mask(bool b) { return 0u - static_cast<uint32_t>(b); }

inline float Select(uint32_t mask, float a, float b) {
  return std::bit_cast<float>((std::bit_cast<uint32_t>(a) & mask) |
                              (std::bit_cast<uint32_t>(b) & ~mask));
}

// e^x for x <= 88 within 2 ulp (Cephes' expf polynomial); below -87 it returns 0, so -inf gives
// exactly 0; NaN stays NaN.
inline float ExpF(float x) {
  const uint32_t in_range = Mask(x >= -87.0f);
  const float xc = Select(in_range, x, -87.0f);
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to integer
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;             // xc − n·ln 2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  const float e = y * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);  // · 2^n
  return Select(in_range, e, x == x ? 0.0f : x);
}

}  // namespace hetsynth::runtime::cpu
