// Device functors of the normalization operators (norm.h): layer norm, softmax, log-softmax and
// cross entropy over the last dim, batch_moments / batch_norm per channel, and mse_loss over all
// elements (at the end).
// C++17; see hd.h.
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

// A double in the 8 bytes at p (two floats of a tensor of partial sums), and back: stored whole,
// so a partial beyond float's range, or an infinite one, stays what it is (batch norm's and
// mse_loss's chunk partials).
HS_HD inline void StoreDouble(double v, float* p) { memcpy(p, &v, sizeof v); }
HS_HD inline double LoadDouble(const float* p) {
  double v;
  memcpy(&v, p, sizeof v);
  return v;
}

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
// (same layout; double sums). Applied until one is left — rows into chunks, chunks into one —
// it replaces a single-thread pass over every row (a tree reduction over blocks would be faster
// still).
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

// ---- batch norm ----------------------------------------------------------------------------
// batch_moments and batch_norm (cpu/src/batch_norm.cc) see x [B, C, ...] as C channels of B
// blocks of `inner` elements: element (b, c, i) at (b·C + c)·inner + i. A channel's sums run
// over its B·inner elements in the order t = b·inner + i, in two passes: BatchChannelPartials
// sums chunks of kBatchNormChunk consecutive t (one call per chunk, in double), each kept as a
// whole double in two floats (StoreDouble); a per-channel functor then adds its chunks in order,
// in double — the CPU's one double sum up to the order of the additions.

constexpr int64_t kBatchNormChunk = 512;


// μ and r = 1/√(v + eps) of channel ch from moments m [2, C], v = E[x²] − μ² (a negative v from
// rounding counts as 0), as the CPU's ChannelStats.
HS_HD inline void BatchNormChannelStats(const float* m, int64_t channels, int64_t ch, double eps, double* mu,
                                        double* r) {
  *mu = m[ch];
  const double v0 = double(m[channels + ch]) - *mu * *mu;
  const double v = v0 > 0.0 ? v0 : 0.0;
  *r = 1.0 / sqrt(v + eps);
}

// Chunk p of channel ch (call e = ch·chunks + p): part[4e..4e+3] = S1, S2 (a double each)
// over t in [p·kBatchNormChunk, min((p+1)·kBatchNormChunk, B·inner)) with
//   moments (dy null):  S1 = Σ x,  S2 = Σ x²;
//   batch_norm backward: S1 = Σ dy, S2 = Σ dy·(x − μ), μ = m[ch] (m the moments [2, C]).
struct BatchChannelPartials {
  const float* x;
  const float* dy;
  const float* m;
  int64_t batch, channels, inner, chunks;
  float* part;
  HS_HD void operator()(int64_t e) const {
    const int64_t ch = e / chunks, p = e - ch * chunks;
    const int64_t count = batch * inner;
    const int64_t t0 = p * kBatchNormChunk;
    const int64_t t1 = t0 + kBatchNormChunk < count ? t0 + kBatchNormChunk : count;
    const double mu = dy ? double(m[ch]) : 0.0;
    double s1 = 0, s2 = 0;
    int64_t b = t0 / inner, i = t0 - b * inner;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t k = (b * channels + ch) * inner + i;
      if (dy) {
        s1 += dy[k];
        s2 += double(dy[k]) * (double(x[k]) - mu);
      } else {
        const double v = x[k];
        s1 += v;
        s2 += v * v;
      }
      if (++i == inner) i = 0, ++b;
    }
    StoreDouble(s1, part + 4 * e);
    StoreDouble(s2, part + 4 * e + 2);
  }
};

// Channel ch's totals S1, S2 from its `chunks` partials, in chunk order.
HS_HD inline void BatchChannelTotals(const float* part, int64_t chunks, int64_t ch, double* s1, double* s2) {
  *s1 = 0;
  *s2 = 0;
  for (int64_t p = 0; p < chunks; ++p) {
    const float* q = part + 4 * (ch * chunks + p);
    *s1 += LoadDouble(q);
    *s2 += LoadDouble(q + 2);
  }
}

// Channel ch: out[ch] = Σ x / n, out[C + ch] = Σ x² / n (n: the whole tensor's count per channel).
struct BatchMomentsOut {
  const float* part;
  int64_t chunks, channels;
  double n;
  float* out;
  HS_HD void operator()(int64_t ch) const {
    double s1, s2;
    BatchChannelTotals(part, chunks, ch, &s1, &s2);
    out[ch] = static_cast<float>(s1 / n);
    out[channels + ch] = static_cast<float>(s2 / n);
  }
};

// Channel ch of batch_moments' backward: d[ch] = dμ/n, d[C + ch] = 2·dE[x²]/n (as floats).
struct BatchMomentsBwdScale {
  const float* dout;
  int64_t channels;
  double n;
  float* d;
  HS_HD void operator()(int64_t ch) const {
    d[ch] = static_cast<float>(dout[ch] / n);
    d[channels + ch] = static_cast<float>(2.0 * dout[channels + ch] / n);
  }
};

// Element k: dx += d[c] + d[C + c]·x with c its channel.
struct BatchMomentsBwdX {
  const float* x;
  const float* d;
  int64_t channels, inner;
  float* dx;
  HS_HD void operator()(int64_t k) const {
    const int64_t c = (k / inner) % channels;
    dx[k] += d[c] + d[channels + c] * x[k];
  }
};

// Channel ch of batch_norm: ss[ch] = r·γ, ss[C + ch] = β, ss[2C + ch] = μ (floats; r·γ from
// doubles).
struct BatchNormScaleShift {
  const float* m;
  const float* gamma;
  const float* beta;
  double eps;
  int64_t channels;
  float* ss;
  HS_HD void operator()(int64_t ch) const {
    double mu, r;
    BatchNormChannelStats(m, channels, ch, eps, &mu, &r);
    ss[ch] = static_cast<float>(r * gamma[ch]);
    ss[channels + ch] = beta[ch];
    ss[2 * channels + ch] = static_cast<float>(mu);
  }
};

// Element k: y = (x − μ)·scale + β of its channel.
struct BatchNormOut {
  const float* x;
  const float* ss;
  int64_t channels, inner;
  float* y;
  HS_HD void operator()(int64_t k) const {
    const int64_t c = (k / inner) % channels;
    y[k] = (x[k] - ss[2 * channels + c]) * ss[c] + ss[channels + c];
  }
};

// Channel ch of batch_norm's backward from the partials of S1 = Σ dy, S2 = Σ dy·(x − μ):
// dγ += S2·r, dβ += S1, dμ += −r·γ·S1 + μ·r³·γ·S2, dE[x²] += −½·r³·γ·S2 (each output may be
// null; dm is [2, C]).
struct BatchNormBwdChannel {
  const float* part;
  const float* m;
  const float* gamma;
  double eps;
  int64_t chunks, channels;
  float* dm;
  float* dgamma;
  float* dbeta;
  HS_HD void operator()(int64_t ch) const {
    double mu, r, sdy, sdyx;
    BatchNormChannelStats(m, channels, ch, eps, &mu, &r);
    BatchChannelTotals(part, chunks, ch, &sdy, &sdyx);
    if (dgamma) dgamma[ch] += static_cast<float>(sdyx * r);
    if (dbeta) dbeta[ch] += static_cast<float>(sdy);
    if (dm) {
      const double gam = gamma[ch];
      const double s1 = gam * sdy, s2 = gam * sdyx, r3 = r * r * r;
      dm[ch] += static_cast<float>(-r * s1 + mu * r3 * s2);
      dm[channels + ch] += static_cast<float>(-0.5 * r3 * s2);
    }
  }
};

// Element k: dx += dy·gr of its channel.
struct BatchNormBwdX {
  const float* dy;
  const float* gr;
  int64_t channels, inner;
  float* dx;
  HS_HD void operator()(int64_t k) const { dx[k] += dy[k] * gr[(k / inner) % channels]; }
};

// ---- mse loss ------------------------------------------------------------------------------
// mse_loss = Σ (p − t)² / N over all elements, summed in double like cpu/src/norm.cc, in passes
// of kMseLossChunk: MseLossPartials sums chunks of consecutive elements, MseLossChunkSum chunks
// of those partials, repeated until one is left. Each partial is a double stored whole in two
// floats (StoreDouble), so the total differs from the CPU's one double sum by summation order
// only.

constexpr int64_t kMseLossChunk = 256;


// Chunk c: part[2c..2c+1] = Σ (p − t)² over elements [c·kMseLossChunk, …) below n.
struct MseLossPartials {
  const float* p;
  const float* t;
  int64_t n;
  float* part;
  HS_HD void operator()(int64_t c) const {
    const int64_t begin = c * kMseLossChunk;
    const int64_t end = begin + kMseLossChunk < n ? begin + kMseLossChunk : n;
    double s = 0;
    for (int64_t i = begin; i < end; ++i) {
      const double d = double(p[i]) - double(t[i]);
      s += d * d;
    }
    StoreDouble(s, part + 2 * c);
  }
};

// Chunk c of kMseLossChunk partials of `in` ([count, 2]: a double each) summed into out[c] (same
// layout).
struct MseLossChunkSum {
  const float* in;
  int64_t count;
  float* out;
  HS_HD void operator()(int64_t c) const {
    const int64_t begin = c * kMseLossChunk;
    const int64_t end = begin + kMseLossChunk < count ? begin + kMseLossChunk : count;
    double s = 0;
    for (int64_t i = begin; i < end; ++i) s += LoadDouble(in + 2 * i);
    StoreDouble(s, out + 2 * c);
  }
};

// One call: loss[0] = sum / divisor from the one partial left (all-zero bytes are 0.0).
struct MseLossOut {
  const float* sum;
  double divisor;
  float* loss;
  HS_HD void operator()(int64_t) const { loss[0] = static_cast<float>(LoadDouble(sum) / divisor); }
};

// Element k: g = (p − t)·scale with scale = 2·dloss/divisor rounded to float (dloss read here: it
// is device memory), as the CPU; dp += g, dt −= g (either may be null).
struct MseLossBwd {
  const float* p;
  const float* t;
  const float* dloss;
  double divisor;
  float* dp;
  float* dt;
  HS_HD void operator()(int64_t k) const {
    const float scale = static_cast<float>(2.0 * double(dloss[0]) / divisor);
    const float g = (p[k] - t[k]) * scale;
    if (dp) dp[k] += g;
    if (dt) dt[k] -= g;
  }
};

}  // namespace hetsynth::runtime::gpu
