// Device functors of the elementwise operators (elementwise.h). C++17; see hd.h. The unary ops
// with shared math (relu, ...) have theirs in runtime/ops/unary_math.h.
#pragma once

#include <math.h>
#include <stdint.h>

#include "hetsynth/runtime/ops/hd.h"

namespace hetsynth::runtime::gpu {

// ---- Broadcasting (add, mul, expand) -------------------------------------------------------
// The large operand a is walked row-major; `wb` maps a's element i to the offset of the small
// operand b's element paired with it (stride 0 along broadcast dims).

// y[i] = a[i] + b[wb(i)].
struct BroadcastAddFwd {
  const float* a;
  const float* b;
  float* y;
  Walk wb;
  HS_HD void operator()(int64_t i) const { y[i] = a[i] + b[wb.Offset(i)]; }
};

// y[i] = a[i] · b[wb(i)].
struct BroadcastMulFwd {
  const float* a;
  const float* b;
  float* y;
  Walk wb;
  HS_HD void operator()(int64_t i) const { y[i] = a[i] * b[wb.Offset(i)]; }
};

// y[i] = x[wb(i)] (expand).
struct BroadcastCopy {
  const float* x;
  float* y;
  Walk wb;
  HS_HD void operator()(int64_t i) const { y[i] = x[wb.Offset(i)]; }
};

// dx[i] += g[i].
struct AccumulateFn {
  const float* g;
  float* dx;
  HS_HD void operator()(int64_t i) const { dx[i] += g[i]; }
};

// da[i] += g[i] · b[wb(i)] (mul's gradient for the large operand).
struct MulBwdA {
  const float* g;
  const float* b;
  float* da;
  Walk wb;
  HS_HD void operator()(int64_t i) const { da[i] += g[i] * b[wb.Offset(i)]; }
};

// The gradient of the small operand: db[j] += Σ over the elements i of a paired with b's
// element j of g[i] (· a[i] when `a` is set: mul), accumulated in double like the CPU. A gather:
// one call per element of b. `kept` maps j to the offset in a of its first paired element (b's
// non-broadcast dims with a's strides), `red` maps r in [0, nred) to the offset of the r-th
// paired element from there (the broadcast dims with a's strides).
// Note: a bias gradient ([C] from [B, T, C]) runs only C threads, each looping over B·T values;
// a block-per-element (or two-pass) reduction would be faster for small C and large B·T.
struct ReduceBroadcast {
  const float* g;
  const float* a;  // nullptr: add/expand
  float* db;
  Walk kept;
  Walk red;
  int64_t nred;
  HS_HD void operator()(int64_t j) const {
    const int64_t base = kept.Offset(j);
    double s = 0.0;
    if (a) {
      for (int64_t r = 0; r < nred; ++r) {
        const int64_t off = base + red.Offset(r);
        s += static_cast<double>(g[off]) * static_cast<double>(a[off]);
      }
    } else {
      for (int64_t r = 0; r < nred; ++r) s += g[base + red.Offset(r)];
    }
    db[j] += static_cast<float>(s);
  }
};

// ---- Gelu ----------------------------------------------------------------------------------
// The CPU's formula (cpu/src/elementwise.cc Phi and ops/fast_math.h ExpF), written with plain
// a*b + c: nvcc contracts those to fused multiply-adds and g++ may contract other ones, so the
// two can differ in the last bits (tested within 1e-5, not bitwise; unary_math.h is the code
// written to give both compilers the same bits).

// e^x for x <= 88 within 2 ulp (Cephes' expf polynomial); below -87 it returns 0 (-inf gives
// exactly 0); NaN stays NaN. Same as cpu::ExpF.
HS_HD inline float GeluExpF(float x) {
  const bool in_range = x >= -87.0f;
  const float xc = in_range ? x : -87.0f;
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to integer
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;             // xc − n·ln 2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  const float e = y * BitsToFloat(static_cast<uint32_t>((static_cast<int32_t>(n) + 127) << 23));  // · 2^n
  return in_range ? e : (x == x ? 0.0f : x);
}

// Φ(x) = erfc(−x/√2)/2 via Numerical Recipes' erfcc, Φ(x) = 1 − Φ(−x) for x >= 0.
HS_HD inline float GeluPhi(float x) {
  const float z = fabsf(x) * static_cast<float>(0.70710678118654752440);  // 1/√2
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float half_erfc = 0.5f * t * GeluExpF(p - z * z);
  return x >= 0.0f ? 1.0f - half_erfc : half_erfc;
}

// gelu(x) = x·Φ(x).
struct GeluFwd {
  const float* x;
  float* y;
  HS_HD void operator()(int64_t i) const { y[i] = x[i] * GeluPhi(x[i]); }
};

// dx += g · (Φ(x) + x·φ(x)).
struct GeluBwd {
  const float* x;
  const float* g;
  float* dx;
  HS_HD void operator()(int64_t i) const {
    const float inv_sqrt_2pi = static_cast<float>(0.39894228040143267794);  // 1/√(2π)
    const float v = x[i];
    dx[i] += g[i] * (GeluPhi(v) + v * inv_sqrt_2pi * GeluExpF(-0.5f * v * v));
  }
};

// ---- Dropout -------------------------------------------------------------------------------
// The CPU's stateless stream (runtime/random.h Mix / SplitMix64, cpu/src/elementwise.cc Kept):
// element j is kept iff (splitmix64(seed ^ splitmix64(step ^ splitmix64(j))) >> 40) >= threshold.

HS_HD inline uint64_t DropoutSplitMix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// y[i] (+)= kept(global(i)) ? x[i]·scale : (unchanged), over a tensor seen as [outer, len,
// inner] whose element (o, k, q) has index (o·full_len + start + k)·inner + q in the full
// tensor (a whole tensor: len = full_len = 1, start = 0, inner = n). keep_all: p = 0, y (+)= x.
struct DropoutFn {
  const float* x;
  float* y;
  uint64_t seed, step, threshold;
  float scale;
  int64_t len, inner, full_len, start;
  // A piece cut on two dims (cpu::DropoutPiece): [outer, len, mid, len2, inner] of
  // [outer, full_len, mid, full_len2, inner]; one cut: mid = len2 = full_len2 = 1, start2 = 0.
  int64_t mid, len2, full_len2, start2;
  bool accumulate, keep_all;
  HS_HD void operator()(int64_t i) const {
    if (keep_all) {
      y[i] = accumulate ? y[i] + x[i] : x[i];
      return;
    }
    const int64_t q = i % inner, row2 = i / inner;
    const int64_t k2 = row2 % len2, r1 = row2 / len2;
    const int64_t m = r1 % mid, row = r1 / mid;
    const int64_t k = row % len, o = row / len;
    const int64_t global = (((o * full_len + start + k) * mid + m) * full_len2 + start2 + k2) * inner + q;
    const uint64_t h = DropoutSplitMix64(seed ^ DropoutSplitMix64(step ^ DropoutSplitMix64(static_cast<uint64_t>(global))));
    if ((h >> 40) < threshold) return;
    const float v = x[i] * scale;
    y[i] = accumulate ? y[i] + v : v;
  }
};

// ---- Causal mask ---------------------------------------------------------------------------
// Over [..., T, T]: element (row, col) of each T×T block keeps its value where col <= row and is
// -inf above the diagonal; backward passes the gradient through the kept part only.

struct CausalMaskFwd {
  const float* x;
  float* y;
  int64_t t;
  HS_HD void operator()(int64_t i) const {
    const int64_t col = i % t, row = (i / t) % t;
    y[i] = col <= row ? x[i] : -INFINITY;
  }
};

struct CausalMaskBwd {
  const float* g;
  float* dx;
  int64_t t;
  HS_HD void operator()(int64_t i) const {
    const int64_t col = i % t, row = (i / t) % t;
    if (col <= row) dx[i] += g[i];
  }
};

// ---- Clip ----------------------------------------------------------------------------------
// y = min(max(x, lo), hi) as cpu/src/elementwise.cc writes it (NaN stays NaN); the gradient
// passes strictly inside (lo, hi), as PyTorch's hardtanh (ReLU6).

struct ClipFwd {
  const float* x;
  float* y;
  float lo, hi;
  HS_HD void operator()(int64_t i) const {
    const float v = x[i];
    y[i] = v < lo ? lo : v > hi ? hi : v;
  }
};

struct ClipBwd {
  const float* x;
  const float* g;
  float* dx;
  float lo, hi;
  HS_HD void operator()(int64_t i) const {
    const float v = x[i];
    dx[i] += (v > lo && v < hi) ? g[i] : 0.0f;
  }
};

}  // namespace hetsynth::runtime::gpu
