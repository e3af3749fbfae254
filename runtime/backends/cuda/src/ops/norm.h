// GPU normalization operators: over the last dim layer norm, softmax, log-softmax, cross entropy
// (contracts in ops.h; semantics exactly those of cpu/src/norm.cc, functors in norm_kernels.h);
// per channel (dim 1) batch_moments and batch_norm (cpu/src/batch_norm.cc); mse_loss over all
// elements (cpu/src/norm.cc).
//
// What forward saves matches the CPU: layer norm {mean[R], rstd[R]}; softmax and log-softmax
// nothing (backward uses the output); cross entropy {lse[R]} only — backward recomputes the
// softmax from the logits. With a logits piece (ctx.shard, split on a leading dim) the loss
// divides by the full tensor's row count; with a prediction piece mse_loss divides by the full
// tensor's element count.
//
// Labels are validated as on the CPU (a class id in [0, K), HS_CHECK aborts with the first bad
// position): the rows flag bad labels on the device and the forward reads one float back, which
// waits for the stream — once per loss evaluation.
#pragma once

#include <string>
#include <utility>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "ops/norm_kernels.h"
#include "ops/ops.h"

namespace hetsynth::runtime::gpu {

using cpu::NormRows;

template <class T>
NormRows NormRowsOf(const T& x) {
  return cpu::NormRowsOf(x.shape);
}

// ---- layer norm ----------------------------------------------------------------------------

// saved.tensors = {mean[R], rstd[R]} with rstd = 1/√(var + eps).
template <class X>
void LayerNormForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                      typename X::Tensor& out, Saved<X>& saved) {
  const auto& xin = *in[0];
  const NormRows r = NormRowsOf(xin);
  cpu::CheckLayerNormParams(node, in[1]->numel(), in[2]->numel(), r.len);
  typename X::Tensor mean = x.Make({r.count}), rstd = x.Make({r.count});
  x.For(r.count, LayerNormStats{xin.ptr(), r.len, node.attrs.eps, mean.ptr(), rstd.ptr()});
  x.For(r.count * r.len, LayerNormOut{xin.ptr(), in[1]->ptr(), in[2]->ptr(), mean.ptr(),
                                      rstd.ptr(), r.len, out.ptr()});
  saved.tensors.clear();
  saved.tensors.push_back(std::move(mean));
  saved.tensors.push_back(std::move(rstd));
}

// With x̂ = (x − μ)·rstd and g = dy ⊙ γ:  dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂));
// dγ = Σ_rows dy ⊙ x̂, dβ = Σ_rows dy.
template <class X>
void LayerNormBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                       const typename X::Tensor& out, const typename X::Tensor& dout,
                       const Saved<X>& saved, TDIn<X> din) {
  const auto& xin = *in[0];
  const float* gamma = in[1]->ptr();
  const NormRows r = NormRowsOf(xin);
  cpu::CheckLayerNormSaved(node, saved.tensors, r.count);
  const float* mean = saved.tensors[0].ptr();
  const float* rstd = saved.tensors[1].ptr();
  if (din[1] || din[2]) {
    x.For(r.len, LayerNormBwdParams{xin.ptr(), dout.ptr(), mean, rstd, r.count, r.len,
                                    din[1] ? din[1]->ptr() : nullptr,
                                    din[2] ? din[2]->ptr() : nullptr});
  }
  if (din[0]) {
    typename X::Tensor stats = x.Make({r.count, 2});
    x.For(r.count, LayerNormBwdStats{xin.ptr(), dout.ptr(), gamma, mean, rstd, r.len, stats.ptr()});
    x.For(r.count * r.len, LayerNormBwdX{xin.ptr(), dout.ptr(), gamma, mean, rstd, stats.ptr(),
                                         r.len, din[0]->ptr()});
  }
}

// ---- softmax -------------------------------------------------------------------------------

template <class X>
void SoftmaxForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                    typename X::Tensor& out, Saved<X>& saved) {
  const NormRows r = NormRowsOf(*in[0]);
  typename X::Tensor stats = x.Make({r.count, 2});
  x.For(r.count, SoftmaxStats{in[0]->ptr(), r.len, stats.ptr()});
  x.For(r.count * r.len, SoftmaxOut{in[0]->ptr(), stats.ptr(), r.len, out.ptr()});
}

// dx = y ⊙ (dy − Σ dy ⊙ y); the output is all backward needs.
template <class X>
void SoftmaxBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                     const typename X::Tensor& out, const typename X::Tensor& dout,
                     const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  const NormRows r = NormRowsOf(out);
  typename X::Tensor dot = x.Make({r.count});
  x.For(r.count, RowDotStats{dout.ptr(), out.ptr(), r.len, dot.ptr()});
  x.For(r.count * r.len, SoftmaxBwd{out.ptr(), dout.ptr(), dot.ptr(), r.len, din[0]->ptr()});
}

// ---- log-softmax ---------------------------------------------------------------------------

template <class X>
void LogSoftmaxForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                       typename X::Tensor& out, Saved<X>& saved) {
  const NormRows r = NormRowsOf(*in[0]);
  typename X::Tensor lse = x.Make({r.count});
  x.For(r.count, LogSumExpRows{in[0]->ptr(), r.len, lse.ptr()});
  x.For(r.count * r.len, LogSoftmaxOut{in[0]->ptr(), lse.ptr(), r.len, out.ptr()});
}

// dx = dy − softmax · Σ dy, with softmax = exp(y).
template <class X>
void LogSoftmaxBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                        const typename X::Tensor& out, const typename X::Tensor& dout,
                        const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  const NormRows r = NormRowsOf(out);
  typename X::Tensor sum = x.Make({r.count});
  x.For(r.count, RowSumStats{dout.ptr(), r.len, sum.ptr()});
  x.For(r.count * r.len, LogSoftmaxBwd{out.ptr(), dout.ptr(), sum.ptr(), r.len, din[0]->ptr()});
}

// ---- cross entropy -------------------------------------------------------------------------

// loss = (1/N) Σ_i (lse_i − logits[i, label_i]); saved.tensors = {lse[rows]}.
template <class X>
void CrossEntropyForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                         typename X::Tensor& out, Saved<X>& saved) {
  const auto& logits = *in[0];
  const NormRows r = NormRowsOf(logits);
  const double divisor = cpu::CrossEntropyDivisor(node, ctx, logits.shape, r.count);
  cpu::CheckCrossEntropyLabels(node, in[1]->numel(), r.count);
  const float* labels = in[1]->ptr();
  typename X::Tensor lse = x.Make({r.count});
  // Per-row terms, then chunked passes down to one (hi, lo, bad) triple (each pass divides the
  // count by kCrossEntropyChunk: two up to 65,536 rows, more beyond).
  int64_t count = r.count;
  typename X::Tensor part = x.Make({count > 0 ? count : 1, 3});  // zeros when there are no rows
  x.For(count, CrossEntropyRows{logits.ptr(), labels, r.len, lse.ptr(), part.ptr()});
  do {
    const int64_t next = count > 1 ? (count + kCrossEntropyChunk - 1) / kCrossEntropyChunk : 1;
    typename X::Tensor mid = x.Make({next, 3});
    x.For(next, CrossEntropyChunkSum{part.ptr(), count, mid.ptr()});
    part = std::move(mid);
    count = next;
  } while (count > 1);
  typename X::Tensor bad = x.Make({1});
  x.For(1, CrossEntropyLoss{part.ptr(), divisor, out.ptr(), bad.ptr()});
  if (x.Read(bad.ptr()) > 0.0f) {
    typename X::Tensor where = x.Make({3});
    x.For(1, CrossEntropyFirstBad{labels, r.count, r.len, where.ptr()});
    const int64_t i = static_cast<int64_t>(x.Read(where.ptr())) * (int64_t{1} << 24) +
                      static_cast<int64_t>(x.Read(where.ptr() + 1));
    const float v = x.Read(where.ptr() + 2);
    HS_CHECK(false, StrCat("cross_entropy '", node.name, "': label ", v, " at position ", i,
                           " is not a class id in [0, ", r.len, ")"));
  }
  saved.tensors.clear();
  saved.tensors.push_back(std::move(lse));
}

// dlogits = (softmax − onehot) · dout / N with softmax = exp(logits − lse).
template <class X>
void CrossEntropyBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                          const typename X::Tensor& out, const typename X::Tensor& dout,
                          const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  const auto& logits = *in[0];
  const NormRows r = NormRowsOf(logits);
  cpu::CheckCrossEntropySaved(node, saved.tensors, r.count);
  const double divisor = cpu::CrossEntropyDivisor(node, ctx, logits.shape, r.count);
  x.For(r.count * r.len, CrossEntropyBwd{logits.ptr(), in[1]->ptr(), saved.tensors[0].ptr(),
                                         dout.ptr(), divisor, r.len, din[0]->ptr()});
}

// ---- batch norm ----------------------------------------------------------------------------
// cpu/src/batch_norm.cc's math (its header comment has the gradients); functors and the two-pass
// per-channel sums in norm_kernels.h. Nothing is saved: backward recomputes from the moments.

namespace norm_internal {

// The per-channel chunk count and the [C · chunks, 4] partial sums of x (moments: dy null) or of
// dy and dy·(x − μ) (batch_norm backward, μ from the moments m).
template <class X>
typename X::Tensor BatchChannelPartialSums(X& x, const cpu::ChannelBlocks& c, const float* xin, const float* dy,
                                           const float* m, int64_t* chunks) {
  *chunks = (c.batch * c.inner + kBatchNormChunk - 1) / kBatchNormChunk;
  typename X::Tensor part = x.Make({c.channels * *chunks, 4});
  x.For(c.channels * *chunks, BatchChannelPartials{xin, dy, m, c.batch, c.channels, c.inner, *chunks, part.ptr()});
  return part;
}

}  // namespace norm_internal

// out [2, C] = per channel Σ x / n and Σ x² / n, n = BatchMomentsCount (the whole tensor's
// count when ctx.shard says x is a piece).
template <class X>
void BatchMomentsForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                         Saved<X>& saved) {
  const auto& xin = *in[0];
  const cpu::ChannelBlocks c = cpu::ChannelBlocksOf(node, xin.shape);
  const double n = cpu::BatchMomentsCount(node, ctx, xin.shape);
  int64_t chunks = 0;
  const typename X::Tensor part = norm_internal::BatchChannelPartialSums(x, c, xin.ptr(), nullptr, nullptr, &chunks);
  x.For(c.channels, BatchMomentsOut{part.ptr(), chunks, c.channels, n, out.ptr()});
}

// dx += dout[0, c]/n + 2·dout[1, c]/n · x.
template <class X>
void BatchMomentsBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                          const typename X::Tensor& out, const typename X::Tensor& dout, const Saved<X>& saved,
                          TDIn<X> din) {
  if (!din[0]) return;
  const auto& xin = *in[0];
  const cpu::ChannelBlocks c = cpu::ChannelBlocksOf(node, xin.shape);
  const double n = cpu::BatchMomentsCount(node, ctx, xin.shape);
  typename X::Tensor d = x.Make({2, c.channels});
  x.For(c.channels, BatchMomentsBwdScale{dout.ptr(), c.channels, n, d.ptr()});
  x.For(xin.numel(), BatchMomentsBwdX{xin.ptr(), d.ptr(), c.channels, c.inner, din[0]->ptr()});
}

// y = (x − μ)·(r·γ) + β per channel, r = 1/√(E[x²] − μ² + eps) (as the CPU kernel: centred
// first).
template <class X>
void BatchNormForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                      Saved<X>& saved) {
  const auto& xin = *in[0];
  cpu::CheckBatchNorm(node, xin.shape, in[1]->shape, in[2]->shape, in[3]->shape);
  const cpu::ChannelBlocks c = cpu::ChannelBlocksOf(node, xin.shape);
  typename X::Tensor ss = x.Make({3, c.channels});
  x.For(c.channels, BatchNormScaleShift{in[1]->ptr(), in[2]->ptr(), in[3]->ptr(), node.attrs.eps, c.channels,
                                       ss.ptr()});
  x.For(xin.numel(), BatchNormOut{xin.ptr(), ss.ptr(), c.channels, c.inner, out.ptr()});
}

// dx += dy·γ·r; the moments', γ's and β's gradients from per-channel Σ dy and Σ dy·(x − μ).
template <class X>
void BatchNormBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                       const typename X::Tensor& out, const typename X::Tensor& dout, const Saved<X>& saved,
                       TDIn<X> din) {
  const auto& xin = *in[0];
  cpu::CheckBatchNorm(node, xin.shape, in[1]->shape, in[2]->shape, in[3]->shape);
  const cpu::ChannelBlocks c = cpu::ChannelBlocksOf(node, xin.shape);
  const float* m = in[1]->ptr();
  const float* gamma = in[2]->ptr();
  if (din[1] || din[2] || din[3]) {
    int64_t chunks = 0;
    const typename X::Tensor part =
        norm_internal::BatchChannelPartialSums(x, c, xin.ptr(), dout.ptr(), m, &chunks);
    x.For(c.channels, BatchNormBwdChannel{part.ptr(), m, gamma, node.attrs.eps, chunks, c.channels,
                                          din[1] ? din[1]->ptr() : nullptr, din[2] ? din[2]->ptr() : nullptr,
                                          din[3] ? din[3]->ptr() : nullptr});
  }
  if (din[0]) {
    // The forward's per-channel factors: ss[ch] = γ·r is dy's factor in dx.
    typename X::Tensor ss = x.Make({3, c.channels});
    x.For(c.channels, BatchNormScaleShift{m, gamma, in[3]->ptr(), node.attrs.eps, c.channels, ss.ptr()});
    x.For(xin.numel(), BatchNormBwdX{dout.ptr(), ss.ptr(), c.channels, c.inner, din[0]->ptr()});
  }
}

// ---- mse loss ------------------------------------------------------------------------------

// loss = Σ (p − t)² / N, N = MseLossDivisor (the whole prediction's element count when ctx.shard
// says it is a piece); the chunked double sums of norm_kernels.h. Nothing is saved.
template <class X>
void MseLossForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                    Saved<X>& saved) {
  const auto& p = *in[0];
  const auto& t = *in[1];
  HS_CHECK(t.shape == p.shape, StrCat("mse_loss '", node.name, "': target has shape ", ir::ShapeString(t.shape),
                                      "; expected the prediction's ", ir::ShapeString(p.shape)));
  const double divisor = cpu::MseLossDivisor(node, ctx, p.shape);
  int64_t count = (p.numel() + kMseLossChunk - 1) / kMseLossChunk;
  typename X::Tensor part = x.Make({count > 0 ? count : 1, 2});  // zeros when there are no elements
  x.For(count, MseLossPartials{p.ptr(), t.ptr(), p.numel(), part.ptr()});
  while (count > 1) {
    const int64_t next = (count + kMseLossChunk - 1) / kMseLossChunk;
    typename X::Tensor mid = x.Make({next, 2});
    x.For(next, MseLossChunkSum{part.ptr(), count, mid.ptr()});
    part = std::move(mid);
    count = next;
  }
  x.For(1, MseLossOut{part.ptr(), divisor, out.ptr()});
}

// dp += 2·(p − t)·dout/N, dt −= the same.
template <class X>
void MseLossBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                     const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0] && !din[1]) return;
  const auto& p = *in[0];
  const double divisor = cpu::MseLossDivisor(node, ctx, p.shape);
  x.For(p.numel(), MseLossBwd{p.ptr(), in[1]->ptr(), dout.ptr(), divisor, din[0] ? din[0]->ptr() : nullptr,
                              din[1] ? din[1]->ptr() : nullptr});
}

}  // namespace hetsynth::runtime::gpu
