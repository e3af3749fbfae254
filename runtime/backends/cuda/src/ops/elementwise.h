// GPU elementwise operators (contracts in ops.h; semantics exactly those of cpu/src/elementwise.cc,
// and cpu/src/attention.cc for the causal mask).
//
// Add, mul and expand broadcast the small operand b onto the large one a as the CPU does (b's
// dims align with a's trailing dims, each equal or 1). The host plans the broadcast once —
// a's size-1 dims dropped, neighbouring dims broadcast alike merged — into strided walks
// (gpu::Walk) that the functors follow; b's gradient is a gather over the broadcast dims,
// accumulated in double.
//
// Dropout regenerates the CPU's stateless mask (a function of seed, step and each element's
// index in the full tensor, ctx.shard giving a piece's place in it) inside the functor.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "hetsynth/runtime/ops/unary_math.h"
#include "ops/elementwise_kernels.h"
#include "ops/ops.h"

namespace hetsynth::runtime::gpu {
namespace elementwise_internal {

// b broadcast onto a: `pair` walks a (merged dims) with b's strides; `kept` and `red` split a's
// merged dims into those b follows and those b is broadcast along, with a's strides, so that
// b's element j pairs with a's elements kept(j) + red(r), r in [0, nred).
struct BroadcastWalks {
  Walk pair, kept, red;
  int64_t nred = 1;
};

inline BroadcastWalks PlanBroadcast(const ir::Shape& a, const ir::Shape& b, const std::string& node) {
  const cpu::MergedBroadcast merged = cpu::MergeBroadcast(a, b, node);
  const std::vector<int64_t>& dims = merged.dims;
  const std::vector<bool>& bcast = merged.bcast;
  // Merged dims alternate between broadcast and not, so there are at most rank of them.
  HS_CHECK(dims.size() <= static_cast<size_t>(kMaxDims),
           StrCat("'", node, "': broadcast of ", ir::ShapeString(b), " onto ", ir::ShapeString(a), " has ",
                  dims.size(), " merged dims; at most ", kMaxDims, " supported"));
  BroadcastWalks w;
  int64_t sb = 1, sa = 1;
  std::vector<int64_t> astride(dims.size()), bstride(dims.size());
  for (size_t i = dims.size(); i-- > 0;) {
    astride[i] = sa;
    sa *= dims[i];
    bstride[i] = bcast[i] ? 0 : sb;
    if (!bcast[i]) sb *= dims[i];
  }
  for (size_t i = 0; i < dims.size(); ++i) {
    w.pair.dims[w.pair.nd] = dims[i];
    w.pair.stride[w.pair.nd++] = bstride[i];
    Walk& part = bcast[i] ? w.red : w.kept;
    part.dims[part.nd] = dims[i];
    part.stride[part.nd++] = astride[i];
    if (bcast[i]) w.nred *= dims[i];
  }
  return w;
}

// db += Σ over broadcast dims of g (· a when a is set), for b broadcast onto a_shape.
template <class X>
void ReduceIntoB(X& x, const ir::Shape& a_shape, const typename X::Tensor& b, const std::string& node,
                 const float* g, const float* a, float* db) {
  const BroadcastWalks w = PlanBroadcast(a_shape, b.shape, node);
  x.For(b.numel(), ReduceBroadcast{g, a, db, w.kept, w.red, w.nred});
}

}  // namespace elementwise_internal

template <class X>
void AddForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                Saved<X>& saved) {
  const auto w = elementwise_internal::PlanBroadcast(in[0]->shape, in[1]->shape, node.name);
  x.For(out.numel(), BroadcastAddFwd{in[0]->ptr(), in[1]->ptr(), out.ptr(), w.pair});
}

template <class X>
void AddBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                 const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (din[0]) x.For(dout.numel(), AccumulateFn{dout.ptr(), din[0]->ptr()});
  if (din[1]) {
    elementwise_internal::ReduceIntoB(x, in[0]->shape, *in[1], node.name, dout.ptr(), nullptr, din[1]->ptr());
  }
}

template <class X>
void MulForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                Saved<X>& saved) {
  const auto w = elementwise_internal::PlanBroadcast(in[0]->shape, in[1]->shape, node.name);
  x.For(out.numel(), BroadcastMulFwd{in[0]->ptr(), in[1]->ptr(), out.ptr(), w.pair});
}

template <class X>
void MulBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                 const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (din[0]) {
    const auto w = elementwise_internal::PlanBroadcast(in[0]->shape, in[1]->shape, node.name);
    x.For(dout.numel(), MulBwdA{dout.ptr(), in[1]->ptr(), din[0]->ptr(), w.pair});
  }
  if (din[1]) {
    elementwise_internal::ReduceIntoB(x, in[0]->shape, *in[1], node.name, dout.ptr(), in[0]->ptr(),
                                      din[1]->ptr());
  }
}

// The unary ops with shared math (runtime/ops/unary_math.h): the functors the CPU kernels run
// too, launched over every element (elementwise.cu instantiates the launches from the list).
template <ir::OpKind K, class X>
void UnaryForward(X& x, TIn<X> in, typename X::Tensor& out) {
  x.For(out.numel(), ops::UnaryFwd<K>{in[0]->ptr(), out.ptr()});
}

template <ir::OpKind K, class X>
void UnaryBackward(X& x, TIn<X> in, const typename X::Tensor& out, const typename X::Tensor& dout, TDIn<X> din) {
  if (!din[0]) return;
  x.For(dout.numel(), ops::UnaryBwd<K>{in[0]->ptr(), out.ptr(), dout.ptr(), din[0]->ptr()});
}

#define HS_GPU_DEFINE_UNARY_OP(Op)                                                                            \
  template <class X>                                                                                          \
  void Op##Forward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,    \
                   Saved<X>& saved) {                                                                         \
    UnaryForward<ir::OpKind::k##Op>(x, in, out);                                                              \
  }                                                                                                           \
  template <class X>                                                                                          \
  void Op##Backward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,                          \
                    const typename X::Tensor& out, const typename X::Tensor& dout, const Saved<X>& saved,     \
                    TDIn<X> din) {                                                                            \
    UnaryBackward<ir::OpKind::k##Op>(x, in, out, dout, din);                                                  \
  }
HETSYNTH_UNARY_MATH_OPS(HS_GPU_DEFINE_UNARY_OP)
#undef HS_GPU_DEFINE_UNARY_OP

// gelu(x) = x·Φ(x), Φ through erfc exactly as the CPU computes it.
template <class X>
void GeluForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                 Saved<X>& saved) {
  x.For(out.numel(), GeluFwd{in[0]->ptr(), out.ptr()});
}

template <class X>
void GeluBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                  const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  x.For(dout.numel(), GeluBwd{in[0]->ptr(), dout.ptr(), din[0]->ptr()});
}

namespace elementwise_internal {

// y (+)= mask ⊙ src / (1 − p) over a tensor of shape `shape` (cpu/src/elementwise.cc ApplyDropout).
template <class X>
void ApplyDropout(X& x, const ir::Node& node, const KernelContext& ctx, const ir::Shape& shape, const float* src,
                  float* y, bool accumulate) {
  const double p = node.attrs.p;
  const cpu::DropoutPiece piece = cpu::GetDropoutPiece(node, ctx, shape);
  const int64_t n = ir::NumElements(shape);
  DropoutFn f{};
  f.x = src;
  f.y = y;
  f.accumulate = accumulate;
  f.len = piece.len;
  f.inner = piece.inner;
  f.full_len = piece.full_len;
  f.start = piece.start;
  f.mid = piece.mid;
  f.len2 = piece.len2;
  f.full_len2 = piece.full_len2;
  f.start2 = piece.start2;
  f.keep_all = p == 0.0;
  f.scale = static_cast<float>(1.0 / (1.0 - p));
  f.threshold = static_cast<uint64_t>(std::ceil(p * 16777216.0));
  f.seed = node.attrs.seed;
  f.step = static_cast<uint64_t>(ctx.step);
  x.For(n, f);
}

}  // namespace elementwise_internal

template <class X>
void DropoutForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                    Saved<X>& saved) {
  elementwise_internal::ApplyDropout(x, node, ctx, out.shape, in[0]->ptr(), out.ptr(), /*accumulate=*/false);
}

template <class X>
void DropoutBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                     const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  elementwise_internal::ApplyDropout(x, node, ctx, dout.shape, dout.ptr(), din[0]->ptr(), /*accumulate=*/true);
}

template <class X>
void ExpandForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                   Saved<X>& saved) {
  const auto w = elementwise_internal::PlanBroadcast(out.shape, in[0]->shape, node.name);
  x.For(out.numel(), BroadcastCopy{in[0]->ptr(), out.ptr(), w.pair});
}

template <class X>
void ExpandBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                    const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  elementwise_internal::ReduceIntoB(x, dout.shape, *in[0], node.name, dout.ptr(), nullptr, din[0]->ptr());
}

template <class X>
void CausalMaskForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                       Saved<X>& saved) {
  const auto& s = *in[0];
  cpu::CheckCausalMaskInput(node, s.shape);
  x.For(out.numel(), CausalMaskFwd{s.ptr(), out.ptr(), s.dim(-1)});
}

template <class X>
void CausalMaskBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                        const typename X::Tensor& out, const typename X::Tensor& dout, const Saved<X>& saved,
                        TDIn<X> din) {
  if (!din[0]) return;
  x.For(dout.numel(), CausalMaskBwd{dout.ptr(), din[0]->ptr(), dout.dim(-1)});
}

// clip(x) = min(max(x, min), max) with the bounds as floats, as the CPU kernel.
template <class X>
void ClipForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                 Saved<X>& saved) {
  x.For(out.numel(), ClipFwd{in[0]->ptr(), out.ptr(), static_cast<float>(node.attrs.min),
                             static_cast<float>(node.attrs.max)});
}

template <class X>
void ClipBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                  const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  x.For(dout.numel(), ClipBwd{in[0]->ptr(), dout.ptr(), din[0]->ptr(), static_cast<float>(node.attrs.min),
                              static_cast<float>(node.attrs.max)});
}

}  // namespace hetsynth::runtime::gpu
