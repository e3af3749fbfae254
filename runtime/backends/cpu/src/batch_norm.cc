// Batch normalization in training mode, as two ops (docs/graph-format.md): batch_moments takes
// the per-channel means of x and x² over the batch and spatial dims, batch_norm normalizes with
// them. Split so that a batch-split plan sums the ranks' partial moments with one small
// all-reduce (the synthesizer inserts it, as for any Reduce value) and every rank normalizes
// with the whole batch's statistics, as one device does (PyTorch's SyncBatchNorm, not DDP's
// per-rank statistics). Sums accumulate in double; batch_moments keeps what rounding its
// moments to float dropped (SavedState::remainder), for the executor's all-reduce.
//
// With v = E[x²] − μ², r = 1/√(v + eps), x̂ = (x − μ)·r, y = γ·x̂ + β, and g = dy·γ summed
// per channel as S1 = Σ g, S2 = Σ g·(x − μ):
//   dx += g·r,  dμ += −r·S1 + μ·r³·S2,  dE[x²] += −½·r³·S2,  dγ += Σ dy·x̂,  dβ += Σ dy;
// batch_moments' backward then adds dμ/N + 2·x·dE[x²]/N to dx — together the usual
// batch-norm gradient.
#include <algorithm>
#include <cmath>

#include "hetsynth/runtime/ops/checks.h"
#include "ops.h"

namespace hetsynth::runtime::cpu {

void BatchMomentsForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                         SavedState& saved) {
  const Tensor& x = *in[0];
  const ChannelBlocks c = ChannelBlocksOf(node, x.shape);
  const double n = BatchMomentsCount(node, ctx, x.shape);
  saved.remainder = Tensor::Uninitialized(out.shape);
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    double s1 = 0, s2 = 0;
    for (int64_t b = 0; b < c.batch; ++b) {
      const float* xp = x.ptr() + (b * c.channels + ch) * c.inner;
      for (int64_t i = 0; i < c.inner; ++i) {
        const double v = xp[i];
        s1 += v;
        s2 += v * v;
      }
    }
    const double m1 = s1 / n, m2 = s2 / n;
    out.data[ch] = static_cast<float>(m1);
    out.data[c.channels + ch] = static_cast<float>(m2);
    saved.remainder.data[ch] = static_cast<float>(m1 - out.data[ch]);
    saved.remainder.data[c.channels + ch] = static_cast<float>(m2 - out.data[c.channels + ch]);
  }
}

void BatchMomentsBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                          const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const Tensor& x = *in[0];
  const ChannelBlocks c = ChannelBlocksOf(node, x.shape);
  const double n = BatchMomentsCount(node, ctx, x.shape);
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    const float d1 = static_cast<float>(dout.data[ch] / n);
    const float d2 = static_cast<float>(2.0 * dout.data[c.channels + ch] / n);
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t o = (b * c.channels + ch) * c.inner;
      const float* xp = x.ptr() + o;
      float* dx = din[0]->ptr() + o;
      for (int64_t i = 0; i < c.inner; ++i) dx[i] += d1 + d2 * xp[i];
    }
  }
}

namespace {
// μ and 1/√(v + eps) of channel ch from the moments (a negative v from rounding counts as 0).
void ChannelStats(const ir::Node& node, const Tensor& m, int64_t channels, int64_t ch, double* mu, double* r) {
  *mu = m.data[ch];
  const double v = std::max(0.0, double(m.data[channels + ch]) - *mu * *mu);
  *r = 1.0 / std::sqrt(v + node.attrs.eps);
}
}  // namespace

void BatchNormForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                      SavedState& saved) {
  const Tensor &x = *in[0], &m = *in[1], &gamma = *in[2], &beta = *in[3];
  CheckBatchNorm(node, x.shape, m.shape, gamma.shape, beta.shape);
  const ChannelBlocks c = ChannelBlocksOf(node, x.shape);
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    double mu, r;
    ChannelStats(node, m, c.channels, ch, &mu, &r);
    // (x − μ)·(r·γ) + β: centred first, so that x near μ keeps its relative accuracy (x·s + t
    // would round at the scale of μ·s).
    const float muf = static_cast<float>(mu), scale = static_cast<float>(r * gamma.data[ch]), shift = beta.data[ch];
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t o = (b * c.channels + ch) * c.inner;
      const float* xp = x.ptr() + o;
      float* y = out.ptr() + o;
      for (int64_t i = 0; i < c.inner; ++i) y[i] = (xp[i] - muf) * scale + shift;
    }
  }
}

void BatchNormBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                       const Tensor& dout, const SavedState& saved, DIn din) {
  const Tensor &x = *in[0], &m = *in[1], &gamma = *in[2];
  CheckBatchNorm(node, x.shape, m.shape, gamma.shape, in[3]->shape);
  const ChannelBlocks c = ChannelBlocksOf(node, x.shape);
  Tensor *dx = din[0], *dm = din[1], *dgamma = din[2], *dbeta = din[3];
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    double mu, r;
    ChannelStats(node, m, c.channels, ch, &mu, &r);
    const double gam = gamma.data[ch];
    double sdy = 0, sdyx = 0;  // Σ dy, Σ dy·(x − μ)
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t o = (b * c.channels + ch) * c.inner;
      const float* xp = x.ptr() + o;
      const float* dy = dout.ptr() + o;
      for (int64_t i = 0; i < c.inner; ++i) {
        sdy += dy[i];
        sdyx += double(dy[i]) * (double(xp[i]) - mu);
      }
      if (dx) {
        const float gr = static_cast<float>(gam * r);
        float* dxp = dx->ptr() + o;
        for (int64_t i = 0; i < c.inner; ++i) dxp[i] += dy[i] * gr;
      }
    }
    if (dgamma) dgamma->data[ch] += static_cast<float>(sdyx * r);
    if (dbeta) dbeta->data[ch] += static_cast<float>(sdy);
    if (dm) {
      const double s1 = gam * sdy, s2 = gam * sdyx, r3 = r * r * r;
      dm->data[ch] += static_cast<float>(-r * s1 + mu * r3 * s2);
      dm->data[c.channels + ch] += static_cast<float>(-0.5 * r3 * s2);
    }
  }
}

}  // namespace hetsynth::runtime::cpu
