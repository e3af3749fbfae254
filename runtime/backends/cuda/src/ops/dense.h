// GPU dense operators: linear, matmul and fused multi-head attention (contracts in ops.h;
// semantics exactly those of cpu/src/dense.cc and cpu/src/attention.cc).
//
// Every matrix product goes through x.Gemm (cuBLAS on the GPU). Linear and a matmul with a
// shared 2-D right operand fold the leading dims into the GEMM's row count; a batched matmul is
// one strided-batched GEMM. Attention packs q, k, v into per-head contiguous [B, H, T, D]
// buffers (GemmArgs has no leading dimensions, so the head slice of a [B, T, C] tensor cannot
// be addressed by the GEMM directly), runs each product as one strided-batched GEMM over the
// B·H heads and saves the softmax probabilities P [B, H, T, T] for backward, as the CPU does.
#pragma once

#include <cmath>

#include "exec/gemm_args.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "ops/dense_kernels.h"
#include "ops/ops.h"

namespace hetsynth::runtime::gpu {

namespace dense_internal {

inline GemmArgs Mm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, float beta,
                   int64_t batch = 1, int64_t sa = 0, int64_t sb = 0, int64_t sc = 0) {
  GemmArgs g;
  g.trans_a = ta;
  g.trans_b = tb;
  g.m = m;
  g.n = n;
  g.k = k;
  g.alpha = alpha;
  g.beta = beta;
  g.batch = batch;
  g.stride_a = sa;
  g.stride_b = sb;
  g.stride_c = sc;
  return g;
}

}  // namespace dense_internal

// ---- linear: y = x[M, in] · W[out, in]ᵀ (+ b), M the product of x's leading dims ----

template <class X>
void LinearForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                   typename X::Tensor& out, Saved<X>& saved) {
  const auto& xt = *in[0];
  const auto& w = *in[1];
  const int64_t k = w.dim(1), n = w.dim(0);
  cpu::CheckLinear(node, xt.shape, k);
  const int64_t m = k == 0 ? out.numel() / (n == 0 ? 1 : n) : xt.numel() / k;
  x.Gemm(dense_internal::Mm(false, true, m, n, k, 1.0f, 0.0f), xt.ptr(), w.ptr(), out.ptr());
  // The executor drops the bias input on ranks that do not hold it (in.size() == 2).
  if (in.size() > 2 && in[2] != nullptr && n > 0) {
    x.For(m * n, BiasAddRows{in[2]->ptr(), out.ptr(), n});
  }
}

template <class X>
void LinearBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                    const typename X::Tensor& out, const typename X::Tensor& dout,
                    const Saved<X>& saved, TDIn<X> din) {
  const auto& xt = *in[0];
  const auto& w = *in[1];
  const int64_t k = w.dim(1), n = w.dim(0);
  const int64_t m = k == 0 ? dout.numel() / (n == 0 ? 1 : n) : xt.numel() / k;
  const float* dy = dout.ptr();
  using dense_internal::Mm;
  if (din[0]) x.Gemm(Mm(false, false, m, k, n, 1.0f, 1.0f), dy, w.ptr(), din[0]->ptr());
  if (din.size() > 1 && din[1]) x.Gemm(Mm(true, false, n, k, m, 1.0f, 1.0f), dy, xt.ptr(), din[1]->ptr());
  if (din.size() > 2 && din[2]) x.For(n, BiasGradCols{dy, din[2]->ptr(), m, n});
}

// ---- matmul: a[..., m, k] × b[..., k, n] (batch dims equal) or × b[k, n] (shared) ----

template <class X>
void MatMulForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                   typename X::Tensor& out, Saved<X>& saved) {
  const auto& a = *in[0];
  const auto& b = *in[1];
  const cpu::MatMulDims d = cpu::GetMatMulDims(node, a.shape, b.shape);
  using dense_internal::Mm;
  if (d.shared) {
    x.Gemm(Mm(false, false, d.batch * d.m, d.n, d.k, 1.0f, 0.0f), a.ptr(), b.ptr(), out.ptr());
    return;
  }
  x.Gemm(Mm(false, false, d.m, d.n, d.k, 1.0f, 0.0f, d.batch, d.m * d.k, d.k * d.n, d.m * d.n),
         a.ptr(), b.ptr(), out.ptr());
}

template <class X>
void MatMulBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                    const typename X::Tensor& out, const typename X::Tensor& dout,
                    const Saved<X>& saved, TDIn<X> din) {
  const auto& a = *in[0];
  const auto& b = *in[1];
  const cpu::MatMulDims d = cpu::GetMatMulDims(node, a.shape, b.shape);
  const float* dc = dout.ptr();
  using dense_internal::Mm;
  if (d.shared) {
    const int64_t rows = d.batch * d.m;
    if (din[0]) x.Gemm(Mm(false, true, rows, d.k, d.n, 1.0f, 1.0f), dc, b.ptr(), din[0]->ptr());
    if (din[1]) x.Gemm(Mm(true, false, d.k, d.n, rows, 1.0f, 1.0f), a.ptr(), dc, din[1]->ptr());
    return;
  }
  if (din[0]) {
    x.Gemm(Mm(false, true, d.m, d.k, d.n, 1.0f, 1.0f, d.batch, d.m * d.n, d.k * d.n, d.m * d.k), dc,
           b.ptr(), din[0]->ptr());
  }
  if (din[1]) {
    x.Gemm(Mm(true, false, d.k, d.n, d.m, 1.0f, 1.0f, d.batch, d.m * d.k, d.m * d.n, d.k * d.n),
           a.ptr(), dc, din[1]->ptr());
  }
}

// ---- attention: per head softmax(q·kᵀ/√D + mask)·v over q, k, v [B, T, C], D = C/heads ----
//
// heads comes from the node's attrs and C from the tensors, so a shard holding a subset of the
// heads (the executor sets attrs.heads to the local head count) runs unchanged.

template <class X>
void AttentionForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                      typename X::Tensor& out, Saved<X>& saved) {
  const auto &q = *in[0], &k = *in[1], &v = *in[2];
  const auto [nb, t, c, nh, d] = cpu::ReadAttentionDims(node, q.shape, k.shape, v.shape);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const ir::Shape p_shape = {nb, nh, t, t};
  // Reuse last step's buffer: every entry is overwritten (the score GEMM with beta = 0, then the
  // softmax rows including their masked tails).
  if (saved.tensors.size() != 1 || saved.tensors[0].shape != p_shape) {
    saved.tensors.clear();
    saved.tensors.push_back(x.Make(p_shape));
  }
  auto& probs = saved.tensors[0];
  const int64_t n = nb * t * c;  // elements of one [B, T, C] / [B, H, T, D] tensor
  if (n == 0) return;
  const int64_t heads = nb * nh, hd = t * d, tt = t * t;
  using dense_internal::Mm;

  auto qh = x.Make({nb, nh, t, d});
  auto kh = x.Make({nb, nh, t, d});
  x.For(n, PackHeads{q.ptr(), qh.ptr(), t, nh, d});
  x.For(n, PackHeads{k.ptr(), kh.ptr(), t, nh, d});
  // S = scale · Q·Kᵀ per head, then P = softmax(S) in place.
  x.Gemm(Mm(false, true, t, t, d, scale, 0.0f, heads, hd, hd, tt), qh.ptr(), kh.ptr(), probs.ptr());
  x.For(heads * t, AttnSoftmaxRows{probs.ptr(), t, node.attrs.causal ? 1 : 0});
  // O = P·V per head (V packed into kh's buffer, O into qh's), scattered back to [B, T, C].
  x.For(n, PackHeads{v.ptr(), kh.ptr(), t, nh, d});
  x.Gemm(Mm(false, false, t, d, t, 1.0f, 0.0f, heads, tt, hd, hd), probs.ptr(), kh.ptr(), qh.ptr());
  x.For(n, UnpackHeadsAdd{qh.ptr(), out.ptr(), t, nh, d});
}

template <class X>
void AttentionBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                       const typename X::Tensor& out, const typename X::Tensor& dout,
                       const Saved<X>& saved, TDIn<X> din) {
  const auto &q = *in[0], &k = *in[1], &v = *in[2];
  const auto [nb, t, c, nh, d] = cpu::ReadAttentionDims(node, q.shape, k.shape, v.shape);
  cpu::CheckAttentionSaved(node, {nb, t, c, nh, d}, saved.tensors);
  const auto& probs = saved.tensors[0];
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  auto *dq = din[0], *dk = din[1], *dv = din[2];
  const int64_t n = nb * t * c;
  if (n == 0 || (!dq && !dk && !dv)) return;
  const int64_t heads = nb * nh, hd = t * d, tt = t * t;
  using dense_internal::Mm;

  auto doh = x.Make({nb, nh, t, d});  // dO per head
  auto buf = x.Make({nb, nh, t, d});  // a packed input
  auto gh = x.Make({nb, nh, t, d});   // a per-head gradient before scattering
  x.For(n, PackHeads{dout.ptr(), doh.ptr(), t, nh, d});
  if (dv) {
    // dV = Pᵀ·dO.
    x.Gemm(Mm(true, false, t, d, t, 1.0f, 0.0f, heads, tt, hd, hd), probs.ptr(), doh.ptr(), gh.ptr());
    x.For(n, UnpackHeadsAdd{gh.ptr(), dv->ptr(), t, nh, d});
  }
  if (!dq && !dk) return;
  // dP = dO·Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)) in place.
  auto ds = x.Make({nb, nh, t, t});
  x.For(n, PackHeads{v.ptr(), buf.ptr(), t, nh, d});
  x.Gemm(Mm(false, true, t, t, d, 1.0f, 0.0f, heads, hd, hd, tt), doh.ptr(), buf.ptr(), ds.ptr());
  x.For(heads * t, AttnSoftmaxBwdRows{probs.ptr(), ds.ptr(), t});
  if (dq) {
    // dQ = scale · dS·K.
    x.For(n, PackHeads{k.ptr(), buf.ptr(), t, nh, d});
    x.Gemm(Mm(false, false, t, d, t, scale, 0.0f, heads, tt, hd, hd), ds.ptr(), buf.ptr(), gh.ptr());
    x.For(n, UnpackHeadsAdd{gh.ptr(), dq->ptr(), t, nh, d});
  }
  if (dk) {
    // dK = scale · dSᵀ·Q.
    x.For(n, PackHeads{q.ptr(), buf.ptr(), t, nh, d});
    x.Gemm(Mm(true, false, t, d, t, scale, 0.0f, heads, tt, hd, hd), ds.ptr(), buf.ptr(), gh.ptr());
    x.For(n, UnpackHeadsAdd{gh.ptr(), dk->ptr(), t, nh, d});
  }
}

}  // namespace hetsynth::runtime::gpu
