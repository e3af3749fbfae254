// Device functors of the normalization operators (norm.h): layer norm, softmax, log-softmax and
// cross entropy over the last dim. C++17; see hd.h.
//
// Every op views its input as [R, C] rows. A "row" functor (one call per row) does the row's
// reductions — in double, like cpu/src/norm.cc — and writes a few floats of per-row statistics; an
// "element" functor (one call per element) then computes the outputs from them, so the writes
// are coalesced. The row functors walk their whole row in one thread: a warp (or block) per row
// with a shuffle reduction would be faster for long rows (vocabularies), at the price of a
// different summation order.
//
// Row maxima use `v > m ? v : m` starting from -inf, as the CPU's RowMax: NaN entries are
// skipped there and resurface through exp(NaN − max); a row of -inf gives NaN (−inf − −inf).
#pragma once

#include "hetsynth/runtime/ops/hd.h"

namespace hetsynth::runtime::gpu {

// max_j x[j] (NaN skipped, -inf for an empty row).
HS_HD inline float NormRowMax(const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// ---- layer norm ----------------------------------------------------------------------------

// Row i: mean[i] = μ, rstd[i] = 1/√(var + eps), both from double sums (two passes, as the CPU).
struct LayerNormStats {
  const float* x;
  int64_t len;
  double eps;
  float* mean;
  float* rstd;
  HS_HD void operator()(int64_t i) const {
    const float* xi = x + i * len;
    double s = 0;
    for (int64_t j = 0; j < len; ++j) s += xi[j];
    const double mu = s / static_cast<double>(len);
    double v = 0;
    for (int64_t j = 0; j < len; ++j) {
      const double d = xi[j] - mu;
      v += d * d;
    }
    const double rs = 1.0 / sqrt(v / static_cast<double>(len) + eps);
    mean[i] = static_cast<float>(mu);
    rstd[i] = static_cast<float>(rs);
  }
};

// Element k: y = (x − μ) · rstd · γ + β.
struct LayerNormOut {
  const float* x;
  const float* gamma;
  const float* beta;
  const float* mean;
  const float* rstd;
  int64_t len;
  float* y;
  HS_HD void operator()(int64_t k) const {
    const int64_t i = k / len, j = k - i * len;
    y[k] = (x[k] - mean[i]) * rstd[i] * gamma[j] + beta[j];
  }
};

// Row i of the input gradient's statistics: stats[2i] = mean_j(g), stats[2i+1] = mean_j(g·x̂)
// with g = dy ⊙ γ and x̂ = (x − μ)·rstd (floats, sums in double).
struct LayerNormBwdStats {
  const float* x;
  const float* dy;
  const float* gamma;
  const float* mean;
  const float* rstd;
  int64_t len;
  float* stats;
  HS_HD void operator()(int64_t i) const {
    const float* xi = x + i * len;
    const float* gi = dy + i * len;
    double sum_g = 0, sum_gx = 0;
    for (int64_t j = 0; j < len; ++j) {
      const float xhat = (xi[j] - mean[i]) * rstd[i];
      const float g = gi[j] * gamma[j];
      sum_g += g;
      sum_gx += double(g) * xhat;
    }
    stats[2 * i] = static_cast<float>(sum_g / static_cast<double>(len));
    stats[2 * i + 1] = static_cast<float>(sum_gx / static_cast<double>(len));
  }
};

// Element k: dx += rstd · (dy·γ − mean(g) − x̂ · mean(g·x̂)).
struct LayerNormBwdX {
  const float* x;
  const float* dy;
  const float* gamma;
  const float* mean;
  const float* rstd;
  const float* stats;
  int64_t len;
  float* dx;
  HS_HD void operator()(int64_t k) const {
    const int64_t i = k / len, j = k - i * len;
    const float xhat = (x[k] - mean[i]) * rstd[i];
    dx[k] += rstd[i] * (dy[k] * gamma[j] - stats[2 * i] - xhat * stats[2 * i + 1]);
  }
};

// Column j (a gather over the rows, sums in double): dγ[j] += Σ_i dy·x̂, dβ[j] += Σ_i dy.
// Either output may be null.
struct LayerNormBwdParams {
  const float* x;
  const float* dy;
  const float* mean;
  const float* rstd;
  int64_t rows, len;
  float* dgamma;
  float* dbeta;
  HS_HD void operator()(int64_t j) const {
    double sg = 0, sb = 0;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t k = i * len + j;
      const float xhat = (x[k] - mean[i]) * rstd[i];
      sg += double(dy[k]) * xhat;
      sb += dy[k];
    }
    if (dgamma) dgamma[j] += static_cast<float>(sg);
    if (dbeta) dbeta[j] += static_cast<float>(sb);
  }
};

// ---- softmax -------------------------------------------------------------------------------

// Row i: stats[2i] = max, stats[2i+1] = 1/Σ_j exp(x − max) (the float exponentials summed in
// double, as the CPU sums the outputs it has written).
struct SoftmaxStats {
  const float* x;
  int64_t len;
  float* stats;
  HS_HD void operator()(int64_t i) const {
    const float* xi = x + i * len;
    const float m = NormRowMax(xi, len);
    double s = 0;
    for (int64_t j = 0; j < len; ++j) s += expf(xi[j] - m);
    stats[2 * i] = m;
    stats[2 * i + 1] = static_cast<float>(1.0 / s);
  }
};

// Element k: y = exp(x − max) · inv.
struct SoftmaxOut {
  const float* x;
  const float* stats;
  int64_t len;
  float* y;
  HS_HD void operator()(int64_t k) const {
    const int64_t i = k / len;
    y[k] = expf(x[k] - stats[2 * i]) * stats[2 * i + 1];
  }
};

// Row i: dot[i] = Σ_j dy·y (double).
struct RowDotStats {
  const float* a;
  const float* b;
  int64_t len;
  float* dot;
  HS_HD void operator()(int64_t i) const {
    const float* ai = a + i * len;
    const float* bi = b + i * len;
    double s = 0;
    for (int64_t j = 0; j < len; ++j) s += double(ai[j]) * double(bi[j]);
    dot[i] = static_cast<float>(s);
  }
};

// Element k: dx += y · (dy − dot).
struct SoftmaxBwd {
  const float* y;
  const float* dy;
  const float* dot;
  int64_t len;
  float* dx;
  HS_HD void operator()(int64_t k) const { dx[k] += y[k] * (dy[k] - dot[k / len]); }
};

// ---- log-softmax ---------------------------------------------------------------------------

// Row i: lse[i] = max + log Σ_j exp(x − max) (double, rounded to float).
struct LogSumExpRows {
  const float* x;
  int64_t len;
  float* lse;
  HS_HD void operator()(int64_t i) const {
    const float* xi = x + i * len;
    const float m = NormRowMax(xi, len);
    double s = 0;
    for (int64_t j = 0; j < len; ++j) s += expf(xi[j] - m);
    lse[i] = static_cast<float>(double(m) + log(s));
  }
};

// Element k: y = x − lse.
struct LogSoftmaxOut {
  const float* x;
  const float* lse;
  int64_t len;
  float* y;
  HS_HD void operator()(int64_t k) const { y[k] = x[k] - lse[k / len]; }
};

// Row i: sum[i] = Σ_j a (double).
struct RowSumStats {
  const float* a;
  int64_t len;
  float* sum;
  HS_HD void operator()(int64_t i) const {
    const float* ai = a + i * len;
    double s = 0;
    for (int64_t j = 0; j < len; ++j) s += ai[j];
    sum[i] = static_cast<float>(s);
  }
};

// Element k: dx += dy − exp(y) · Σ dy.
struct LogSoftmaxBwd {
  const float* y;
  const float* dy;
  const float* sum;
  int64_t len;
  float* dx;
  HS_HD void operator()(int64_t k) const { dx[k] += dy[k] - expf(y[k]) * sum[k / len]; }
};

// ---- cross entropy -------------------------------------------------------------------------

// Whether v encodes a class id in [0, k) (the CPU's Label check).
HS_HD inline bool CrossEntropyLabelOk(float v, int64_t k) {
  return v >= 0.0f && v < static_cast<float>(k) && v == floorf(v);
}

// Row i: lse[i] = logsumexp of the row (float, saved for backward) and its loss term
// lse − x[label] in double, kept as two floats part[3i] + part[3i+1] (hi + lo, ~48 bits) so the
// loss sums to double precision like the CPU's; part[3i+2] = 1 when the label is not a class id
// (the term is then 0 and the operator aborts on the host).
struct CrossEntropyRows {
  const float* x;
  const float* labels;
  int64_t len;
  float* lse;
  float* part;
  HS_HD void operator()(int64_t i) const {
    const float* xi = x + i * len;
    const float m = NormRowMax(xi, len);
    double s = 0;
    for (int64_t j = 0; j < len; ++j) s += expf(xi[j] - m);
    const double l = double(m) + log(s);
    lse[i] = static_cast<float>(l);
    const float v = labels[i];
    const bool ok = CrossEntropyLabelOk(v, len);
    const double t = ok ? l - double(xi[static_cast<int64_t>(v)]) : 0.0;
    const float hi = static_cast<float>(t);
    part[3 * i] = hi;
    part[3 * i + 1] = static_cast<float>(t - double(hi));
    part[3 * i + 2] = ok ? 0.0f : 1.0f;
  }
};

// Chunk c of kCrossEntropyChunk rows of `in` ([rows, 3]: hi, lo, bad count) summed into out[c]
// (same layout; double sums). Applied twice — rows into chunks, chunks into one — it replaces a
// single-thread pass over every row (a tree reduction over blocks would be faster still).
constexpr int64_t kCrossEntropyChunk = 256;
struct CrossEntropyChunkSum {
  const float* in;
  int64_t rows;
  float* out;
  HS_HD void operator()(int64_t c) const {
    const int64_t end = (c + 1) * kCrossEntropyChunk < rows ? (c + 1) * kCrossEntropyChunk : rows;
    double s = 0, bad = 0;
    for (int64_t i = c * kCrossEntropyChunk; i < end; ++i) {
      s += double(in[3 * i]) + double(in[3 * i + 1]);
      bad += in[3 * i + 2];
    }
    const float hi = static_cast<float>(s);
    out[3 * c] = hi;
    out[3 * c + 1] = static_cast<float>(s - double(hi));
    out[3 * c + 2] = static_cast<float>(bad);
  }
};

// One call: loss[0] = (hi + lo) / divisor from a summed [1, 3] triple; bad[0] = its bad count.
struct CrossEntropyLoss {
  const float* sum;
  double divisor;
  float* loss;
  float* bad;
  HS_HD void operator()(int64_t) const {
    loss[0] = static_cast<float>((double(sum[0]) + double(sum[1])) / divisor);
    bad[0] = sum[2];
  }
};

// One call, only when a label is bad: where[0..2] = the first bad position (hi · 2^24 + lo, both
// exact in a float) and its label value, for the error message.
struct CrossEntropyFirstBad {
  const float* labels;
  int64_t rows, len;
  float* where;
  HS_HD void operator()(int64_t) const {
    for (int64_t i = 0; i < rows; ++i) {
      if (!CrossEntropyLabelOk(labels[i], len)) {
        where[0] = static_cast<float>(i >> 24);
        where[1] = static_cast<float>(i & ((int64_t{1} << 24) - 1));
        where[2] = labels[i];
        return;
      }
    }
  }
};

// Element k: dx += exp(x − lse) · scale, then −= scale at the label, with
// scale = dloss / divisor (dloss read here: it is device memory). Rows with a bad label (the
// forward aborted on them) get no one-hot term rather than an out-of-row write.
struct CrossEntropyBwd {
  const float* x;
  const float* labels;
  const float* lse;
  const float* dloss;
  double divisor;
  int64_t len;
  float* dx;
  HS_HD void operator()(int64_t k) const {
    const int64_t i = k / len, j = k - i * len;
    const float scale = static_cast<float>(double(dloss[0]) / divisor);
    float d = dx[k] + expf(x[k] - lse[i]) * scale;
    const float v = labels[i];
    if (CrossEntropyLabelOk(v, len) && static_cast<int64_t>(v) == j) d -= scale;
    dx[k] = d;
  }
};

}  // namespace hetsynth::runtime::gpu
