// Normalization CPU kernels over the last dim: layer norm, softmax, log-softmax, cross entropy.
//
// Every op works row by row on [R, C] where R is the product of the leading dims. Row sums
// (moments, partition functions, the loss) accumulate in double: rows are as long as a
// vocabulary (tens of thousands of entries) and the loss sums over every position of a batch.
// Softmax-type rows subtract the row max before exponentiating, so -inf entries give exactly 0
// as long as the row has one finite entry. The exponentials use a branch-free expf and the row
// reductions keep 8 independent partial results: without -ffast-math GCC neither vectorizes
// std::exp nor reorders a sum, and these loops see every logit of a language model.
//
// Cross entropy keeps only the per-row logsumexp for backward and recomputes the softmax from
// the logits: the full probability tensor would be as large as the logits themselves
// (4096 × 33278 floats for a GPT-2-sized vocabulary and batch). On a piece of the logits split
// along a leading dim (ctx.shard) the loss still divides by the full row count, so the
// per-rank losses and gradients sum to the single-device ones.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "hetsynth/runtime/ops/fast_math.h"
#include "ops.h"

namespace hetsynth::runtime::cpu {

namespace {

using Rows = NormRows;

Rows RowsOf(const Tensor& x) { return NormRowsOf(x.shape); }

constexpr int kLanes = 8;

// max_j x[j]; NaN entries are skipped here and resurface through exp(NaN − max).
float RowMax(const float* x, int64_t n) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float lane[kLanes];
  for (int k = 0; k < kLanes; ++k) lane[k] = kNegInf;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane[k] = Select(Mask(x[j + k] > lane[k]), x[j + k], lane[k]);
  }
  float m = kNegInf;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  for (int k = 0; k < kLanes; ++k) m = lane[k] > m ? lane[k] : m;
  return m;
}

// Σ_j a[j]·b[j] in double.
double RowDot(const float* a, const float* b, int64_t n) {
  double lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane[k] += double(a[j + k]) * double(b[j + k]);
  }
  double s = 0;
  for (; j < n; ++j) s += double(a[j]) * double(b[j]);
  for (int k = 0; k < kLanes; ++k) s += lane[k];
  return s;
}

// Σ_j a[j] in double.
double RowSum(const float* a, int64_t n) {
  double lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane[k] += a[j + k];
  }
  double s = 0;
  for (; j < n; ++j) s += a[j];
  for (int k = 0; k < kLanes; ++k) s += lane[k];
  return s;
}

// logsumexp of a row: max + log Σ exp(x − max); `scratch` holds the n exponentials.
double LogSumExp(const float* x, int64_t n, float* scratch) {
  const float m = RowMax(x, n);
  for (int64_t j = 0; j < n; ++j) scratch[j] = ExpF(x[j] - m);
  return double(m) + std::log(RowSum(scratch, n));
}

}  // namespace

// saved.tensors = {mean[R], rstd[R]} with rstd = 1/√(var + eps).
void LayerNormForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                      SavedState& saved) {
  const Tensor& x = *in[0];
  const float* gamma = in[1]->ptr();
  const float* beta = in[2]->ptr();
  const Rows r = RowsOf(x);
  CheckLayerNormParams(node, in[1]->numel(), in[2]->numel(), r.len);
  Tensor mean({r.count}), rstd({r.count});
  const double eps = node.attrs.eps;
  for (int64_t i = 0; i < r.count; ++i) {
    const float* xi = x.ptr() + i * r.len;
    float* yi = out.ptr() + i * r.len;
    // Two passes: Σ(x − μ)² is not subject to the cancellation of Σx² − Cμ².
    double s = 0;
    for (int64_t j = 0; j < r.len; ++j) s += xi[j];
    const double mu = s / static_cast<double>(r.len);
    double v = 0;
    for (int64_t j = 0; j < r.len; ++j) {
      const double d = xi[j] - mu;
      v += d * d;
    }
    const double rs = 1.0 / std::sqrt(v / static_cast<double>(r.len) + eps);
    const float muf = static_cast<float>(mu), rsf = static_cast<float>(rs);
    for (int64_t j = 0; j < r.len; ++j) yi[j] = (xi[j] - muf) * rsf * gamma[j] + beta[j];
    mean.data[i] = muf;
    rstd.data[i] = rsf;
  }
  saved.tensors = {std::move(mean), std::move(rstd)};
}

// With x̂ = (x − μ)·rstd and g = dy ⊙ γ:  dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)).
void LayerNormBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                       const Tensor& dout, const SavedState& saved, DIn din) {
  const Tensor& x = *in[0];
  const float* gamma = in[1]->ptr();
  const Rows r = RowsOf(x);
  CheckLayerNormSaved(node, saved.tensors, r.count);
  const float* mean = saved.tensors[0].ptr();
  const float* rstd = saved.tensors[1].ptr();
  std::vector<double> dgamma(din[1] ? r.len : 0, 0.0), dbeta(din[2] ? r.len : 0, 0.0);
  std::vector<float> xhat(static_cast<size_t>(r.len));
  for (int64_t i = 0; i < r.count; ++i) {
    const float* xi = x.ptr() + i * r.len;
    const float* gi = dout.ptr() + i * r.len;
    double sum_g = 0, sum_gx = 0;
    for (int64_t j = 0; j < r.len; ++j) {
      xhat[j] = (xi[j] - mean[i]) * rstd[i];
      const float g = gi[j] * gamma[j];
      sum_g += g;
      sum_gx += double(g) * xhat[j];
    }
    if (din[1]) {
      for (int64_t j = 0; j < r.len; ++j) dgamma[j] += double(gi[j]) * xhat[j];
    }
    if (din[2]) {
      for (int64_t j = 0; j < r.len; ++j) dbeta[j] += gi[j];
    }
    if (din[0]) {
      const float mg = static_cast<float>(sum_g / static_cast<double>(r.len));
      const float mgx = static_cast<float>(sum_gx / static_cast<double>(r.len));
      float* dxi = din[0]->ptr() + i * r.len;
      for (int64_t j = 0; j < r.len; ++j) {
        dxi[j] += rstd[i] * (gi[j] * gamma[j] - mg - xhat[j] * mgx);
      }
    }
  }
  for (int64_t j = 0; j < static_cast<int64_t>(dgamma.size()); ++j) {
    din[1]->data[j] += static_cast<float>(dgamma[j]);
  }
  for (int64_t j = 0; j < static_cast<int64_t>(dbeta.size()); ++j) {
    din[2]->data[j] += static_cast<float>(dbeta[j]);
  }
}

void SoftmaxForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                    SavedState& saved) {
  const Rows r = RowsOf(*in[0]);
  for (int64_t i = 0; i < r.count; ++i) {
    const float* xi = in[0]->ptr() + i * r.len;
    float* yi = out.ptr() + i * r.len;
    const float m = RowMax(xi, r.len);
    for (int64_t j = 0; j < r.len; ++j) yi[j] = ExpF(xi[j] - m);
    const float inv = static_cast<float>(1.0 / RowSum(yi, r.len));
    for (int64_t j = 0; j < r.len; ++j) yi[j] *= inv;
  }
}

// dx = y ⊙ (dy − Σ dy ⊙ y); the output is all backward needs.
void SoftmaxBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                     const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const Rows r = RowsOf(out);
  for (int64_t i = 0; i < r.count; ++i) {
    const float* yi = out.ptr() + i * r.len;
    const float* gi = dout.ptr() + i * r.len;
    float* dxi = din[0]->ptr() + i * r.len;
    const float d = static_cast<float>(RowDot(gi, yi, r.len));
    for (int64_t j = 0; j < r.len; ++j) dxi[j] += yi[j] * (gi[j] - d);
  }
}

void LogSoftmaxForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                       SavedState& saved) {
  const Rows r = RowsOf(*in[0]);
  for (int64_t i = 0; i < r.count; ++i) {
    const float* xi = in[0]->ptr() + i * r.len;
    float* yi = out.ptr() + i * r.len;
    // yi holds the exponentials until the last loop overwrites them.
    const float lse = static_cast<float>(LogSumExp(xi, r.len, yi));
    for (int64_t j = 0; j < r.len; ++j) yi[j] = xi[j] - lse;
  }
}

// dx = dy − softmax · Σ dy, with softmax = exp(y).
void LogSoftmaxBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                        const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const Rows r = RowsOf(out);
  for (int64_t i = 0; i < r.count; ++i) {
    const float* yi = out.ptr() + i * r.len;
    const float* gi = dout.ptr() + i * r.len;
    float* dxi = din[0]->ptr() + i * r.len;
    const float sf = static_cast<float>(RowSum(gi, r.len));
    for (int64_t j = 0; j < r.len; ++j) dxi[j] += gi[j] - ExpF(yi[j]) * sf;
  }
}

namespace {

// The class id held by labels[i], checked against [0, k).
int64_t Label(const ir::Node& node, const float* labels, int64_t i, int64_t k) {
  const float v = labels[i];
  HS_CHECK(v >= 0.0f && v < static_cast<float>(k) && v == std::floor(v),
           StrCat("cross_entropy '", node.name, "': label ", v, " at position ", i,
                  " is not a class id in [0, ", k, ")"));
  return static_cast<int64_t>(v);
}

}  // namespace

// loss = (1/N) Σ_i (lse_i − logits[i, label_i]); saved.tensors = {lse[rows]}. N is the row
// count of the full logits (CrossEntropyDivisor).
void CrossEntropyForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                         SavedState& saved) {
  const Tensor& logits = *in[0];
  const Rows r = RowsOf(logits);
  const double divisor = CrossEntropyDivisor(node, ctx, logits.shape, r.count);
  CheckCrossEntropyLabels(node, in[1]->numel(), r.count);
  const float* labels = in[1]->ptr();
  Tensor lse({r.count});
  std::vector<float> scratch(static_cast<size_t>(r.len));
  double loss = 0;
  for (int64_t i = 0; i < r.count; ++i) {
    const float* xi = logits.ptr() + i * r.len;
    const int64_t y = Label(node, labels, i, r.len);
    const double l = LogSumExp(xi, r.len, scratch.data());
    lse.data[i] = static_cast<float>(l);
    loss += l - double(xi[y]);
  }
  out.data[0] = static_cast<float>(loss / divisor);
  saved.tensors = {std::move(lse)};
}

// dlogits = (softmax − onehot) · dout / N with softmax = exp(logits − lse).
void CrossEntropyBackward(const ir::Node& node, const KernelContext& ctx, In in,
                          const Tensor& out, const Tensor& dout, const SavedState& saved,
                          DIn din) {
  if (!din[0]) return;
  const Tensor& logits = *in[0];
  const Rows r = RowsOf(logits);
  CheckCrossEntropySaved(node, saved.tensors, r.count);
  const float* labels = in[1]->ptr();
  const float* lse = saved.tensors[0].ptr();
  const double divisor = CrossEntropyDivisor(node, ctx, logits.shape, r.count);
  const float scale = static_cast<float>(double(dout.data[0]) / divisor);
  for (int64_t i = 0; i < r.count; ++i) {
    const float* xi = logits.ptr() + i * r.len;
    float* dxi = din[0]->ptr() + i * r.len;
    for (int64_t j = 0; j < r.len; ++j) dxi[j] += ExpF(xi[j] - lse[i]) * scale;
    dxi[Label(node, labels, i, r.len)] -= scale;
  }
}

// mse_loss = Σ (p − t)² / N, summed in double; N the whole prediction's element count.
void MseLossForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out, SavedState& saved) {
  const Tensor &p = *in[0], &t = *in[1];
  const double n = MseLossDivisor(node, ctx, p.shape);
  double sum = 0;
  for (int64_t i = 0; i < p.numel(); ++i) {
    const double d = double(p.data[i]) - double(t.data[i]);
    sum += d * d;
  }
  out.data[0] = static_cast<float>(sum / n);
}

// dp = 2·(p − t)·dout/N, dt = −dp.
void MseLossBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out, const Tensor& dout,
                     const SavedState& saved, DIn din) {
  const Tensor &p = *in[0], &t = *in[1];
  const float scale = static_cast<float>(2.0 * double(dout.data[0]) / MseLossDivisor(node, ctx, p.shape));
  for (int64_t i = 0; i < p.numel(); ++i) {
    const float g = (p.data[i] - t.data[i]) * scale;
    if (din[0]) din[0]->data[i] += g;
    if (din[1]) din[1]->data[i] -= g;
  }
}

}  // namespace hetsynth::runtime::cpu
