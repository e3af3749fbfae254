// Device functors of the dense operators (dense.h): linear's bias add and bias gradient, and
// attention's head packing and row softmax (forward and backward). C++17; see hd.h.
#pragma once

#include "hetsynth/runtime/ops/hd.h"

namespace hetsynth::runtime::gpu {

// y[r, j] += b[j] over a row-major [rows, n] block (one call per element).
struct BiasAddRows {
  const float* b;
  float* y;
  int64_t n;
  HS_HD void operator()(int64_t i) const { y[i] += b[i % n]; }
};

// db[j] += Σ_r dy[r, j] (one call per output feature j, summing the m rows in double like the
// CPU kernel). Consecutive j read consecutive addresses, so a warp's loads coalesce; a
// block-per-column-tile tree reduction would be faster when m is large and n small.
struct BiasGradCols {
  const float* dy;
  float* db;
  int64_t m, n;
  HS_HD void operator()(int64_t j) const {
    double acc = 0.0;
    for (int64_t r = 0; r < m; ++r) acc += dy[r * n + j];
    db[j] += static_cast<float>(acc);
  }
};

// dst[b, h, t, d] = src[b, t, h·D + d]: splits a [B, T, C] tensor into contiguous per-head
// [T, D] blocks (C = H·D), one call per element of dst.
struct PackHeads {
  const float* src;
  float* dst;
  int64_t t, h, d;
  HS_HD void operator()(int64_t i) const {
    const int64_t di = i % d;
    int64_t r = i / d;
    const int64_t ti = r % t;
    r /= t;
    const int64_t hi = r % h;
    const int64_t bi = r / h;
    dst[i] = src[(bi * t + ti) * (h * d) + hi * d + di];
  }
};

// dst[b, t, h·D + d] += src[b, h, t, d]: the inverse of PackHeads, accumulating. Gather form:
// one call per element of dst, which exactly one element of src feeds (no atomics).
struct UnpackHeadsAdd {
  const float* src;
  float* dst;
  int64_t t, h, d;
  HS_HD void operator()(int64_t i) const {
    const int64_t c = h * d;
    const int64_t ci = i % c;
    const int64_t r = i / c;  // b·T + t
    const int64_t ti = r % t;
    const int64_t bi = r / t;
    const int64_t hi = ci / d, di = ci % d;
    dst[i] += src[((bi * h + hi) * t + ti) * d + di];
  }
};

// Row softmax in place of score blocks [N, T, T] (one call per row, N·T rows). With `causal`,
// row i (the query position) only sees keys j <= i and the rest become exactly 0, which the
// backward relies on. The sum goes in double; the row is then scaled by the float reciprocal
// as on the CPU. A warp-per-row version (shuffle reductions for max and sum) would be faster
// for long rows.
struct AttnSoftmaxRows {
  float* s;
  int64_t t;
  int causal;
  HS_HD void operator()(int64_t r) const {
    float* row = s + r * t;
    const int64_t qi = r % t;
    const int64_t n = causal ? qi + 1 : t;
    float mx = row[0];
    for (int64_t j = 1; j < n; ++j) mx = row[j] > mx ? row[j] : mx;
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      const float e = expf(row[j] - mx);
      row[j] = e;
      sum += e;
    }
    const float inv = 1.0f / static_cast<float>(sum);
    for (int64_t j = 0; j < n; ++j) row[j] *= inv;
    for (int64_t j = n; j < t; ++j) row[j] = 0.0f;
  }
};

// Softmax backward in place, one call per row of [N, T, T]: ds = p ⊙ (dp − Σ_j dp_j·p_j), the
// row dot in double as on the CPU. ds holds dP on entry. (Warp-per-row would be faster.)
struct AttnSoftmaxBwdRows {
  const float* p;
  float* ds;
  int64_t t;
  HS_HD void operator()(int64_t r) const {
    float* row = ds + r * t;
    const float* prow = p + r * t;
    double dot = 0.0;
    for (int64_t j = 0; j < t; ++j) dot += static_cast<double>(row[j]) * prow[j];
    const float fdot = static_cast<float>(dot);
    for (int64_t j = 0; j < t; ++j) row[j] = prow[j] * (row[j] - fdot);
  }
};

}  // namespace hetsynth::runtime::gpu
