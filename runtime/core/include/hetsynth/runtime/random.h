// Deterministic random streams for parameter initialization and synthetic data.
//
// Everything random in hetsynth comes from splitmix64 so that it is reproducible in any
// language (docs/models.md gives the exact recipe):
//   state_0 = Mix(seed) ^ Mix(stream)
//   next()  = splitmix64 step: state += 0x9E3779B97F4A7C15; z = state; ...finalizer...
//   uniform = (next() >> 40) · 2^-24            in [0, 1), 24 bits
//   normal  = √(−2·ln(1 − u1)) · cos(2π·u2)     one Box–Muller draw per two uniforms
//
//   Rng rng(seed, Fnv1a("fc.weight"));
//   float w = rng.Normal() * 0.02f;
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

namespace hetsynth::runtime {

// The splitmix64 finalizer (a bijective 64-bit mix).
inline uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// splitmix64 as a hash: Mix(x + golden gamma); the dropout masks use it (docs/models.md).
inline uint64_t SplitMix64(uint64_t x) { return Mix(x + 0x9E3779B97F4A7C15ULL); }

// 64-bit FNV-1a of a string: names parameters' streams.
inline uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001B3ULL;
  }
  return h;
}

class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream) : state_(Mix(seed) ^ Mix(stream)) {}

  uint64_t Next() {
    state_ += 0x9E3779B97F4A7C15ULL;
    return Mix(state_);
  }
  // Uniform in [0, 1) with 24 random bits (exact in fp32).
  float Uniform() { return static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f); }
  // Uniform integer in [0, n).
  int64_t Below(int64_t n) { return static_cast<int64_t>(Next() % static_cast<uint64_t>(n)); }
  // Standard normal (one Box–Muller draw; the sine half is discarded for simplicity).
  float Normal() {
    const double u1 = Uniform(), u2 = Uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  uint64_t state_;
};

}  // namespace hetsynth::runtime
