// GPU mixture-of-experts operators: top_k_gate, moe_dispatch, moe_combine (contracts in ops.h;
// semantics exactly those of cpu/src/moe.cc, including the route format [S, k, 3] of (expert, slot,
// weight), slot −1 for dropped choices, and the abort on a route that points outside the
// [E, P, C] tensor or, for dispatch, reuses a slot).
//
// Route checks: dispatch and combine forward check their route on the device and read one
// number back (a stream synchronization per call) so that a bad route aborts with the CPU
// kernels' message instead of corrupting memory. Backward runs on the route forward checked
// (the functors also skip invalid entries, so it stays in bounds regardless).
#pragma once

#include "hetsynth/ir/op.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "ops/moe_kernels.h"
#include "ops/ops.h"

namespace hetsynth::runtime::gpu {
namespace moe_internal {

// Aborts like cpu/src/moe.cc's ReadRoute (and dispatch's reused-slot check when `unique_slots`)
// on the first bad entry of `route` for `experts` experts of `capacity` slots each.
template <class X>
void CheckRoute(X& x, const ir::Node& node, const typename X::Tensor& route, int64_t experts, int64_t capacity,
                bool unique_slots) {
  const int64_t entries = route.dim(0) * route.dim(1);
  if (entries == 0) return;
  typename X::Tensor bad = x.Make({2});
  typename X::Tensor taken = x.Make({unique_slots ? experts * capacity : 0});
  float* taken_ptr = unique_slots ? taken.ptr() : nullptr;
  x.For(entries, MoeRouteCheck{route.ptr(), experts, capacity, taken_ptr, bad.ptr()});
  if (unique_slots) x.For(experts * capacity, MoeSlotCheck{taken.ptr(), bad.ptr()});
  if (x.Read(bad.ptr()) == 0.0f) return;

  // Error path: find the first bad entry in the CPU's order, for the same message.
  if (unique_slots) x.Zero(taken.ptr(), taken.numel());
  x.For(1, MoeFirstBadRoute{route.ptr(), entries, experts, capacity, taken_ptr, bad.ptr()});
  const float where = x.Read(bad.ptr()), kind = x.Read(bad.ptr() + 1);
  if (where < 0.0f) return;  // unreachable
  const auto i = static_cast<int64_t>(where);
  const int64_t nk = route.dim(1), s = i / nk, j = i - s * nk;
  const float e = x.Read(route.ptr() + i * 3), slot = x.Read(route.ptr() + i * 3 + 1);
  HS_CHECK(kind != 1.0f, StrCat(ir::OpName(node.kind), " '", node.name, "': route[", s, "][", j, "] = (expert ", e,
                                ", slot ", slot, "); expected an integer expert in [0, ", experts,
                                ") and an integer slot in [-1, ", capacity, ")"));
  HS_CHECK(kind != 2.0f, StrCat(ir::OpName(node.kind), " '", node.name, "': route[", s, "][", j, "] reuses slot ",
                                static_cast<int64_t>(slot), " of expert ", static_cast<int64_t>(e)));
}

}  // namespace moe_internal

// TopKGate: logits [S, E] -> route [S, k, 3] with attrs.capacity slots per expert (k is the
// route's dim 1). Saved: p = softmax(logits) [S, E].
template <class X>
void TopKGateForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                     Saved<X>& saved) {
  const auto& logits = *in[0];
  cpu::CheckTopKGate(node, logits.shape, out.shape);
  const int64_t ns = logits.dim(0), ne = logits.dim(1), nk = out.dim(1);
  const int64_t capacity = node.attrs.capacity;

  saved.tensors.clear();
  saved.tensors.push_back(x.Make({ns, ne}));
  x.For(ns, TopKGateRow{logits.ptr(), saved.tensors[0].ptr(), out.ptr(), ne, nk});
  x.For(ne, TopKGateSlots{out.ptr(), ns, nk, capacity});
}

template <class X>
void TopKGateBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                      const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  const int64_t ne = in[0]->dim(1), nk = out.dim(1);
  cpu::CheckTopKGateSaved(node, saved.tensors, in[0]->shape);
  x.For(in[0]->numel(), TopKGateBwd{saved.tensors[0].ptr(), out.ptr(), dout.ptr(), din[0]->ptr(), ne, nk});
}

// MoEDispatch: x [S, C], route [S, k, 3] -> [E, P, C] (E and P from the output's shape).
template <class X>
void MoEDispatchForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                        Saved<X>& saved) {
  const auto &xs = *in[0], &route = *in[1];
  cpu::CheckMoEDispatch(node, xs.shape, route.shape, out.shape);
  const int64_t c = xs.dim(1), nk = route.dim(1), ne = out.dim(0), cap = out.dim(1);
  moe_internal::CheckRoute(x, node, route, ne, cap, /*unique_slots=*/true);
  x.For(route.dim(0) * nk * c, MoeDispatchFwd{xs.ptr(), route.ptr(), out.ptr(), nk, c, ne, cap});
}

// Only x gets a gradient (the route only selects slots).
template <class X>
void MoEDispatchBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                         const typename X::Tensor& out, const typename X::Tensor& dout, const Saved<X>& saved,
                         TDIn<X> din) {
  if (!din[0]) return;
  const auto& route = *in[1];
  const int64_t c = in[0]->dim(1), nk = route.dim(1), ne = dout.dim(0), cap = dout.dim(1);
  x.For(in[0]->numel(), MoeDispatchBwd{dout.ptr(), route.ptr(), din[0]->ptr(), nk, c, ne, cap});
}

// MoECombine: y [E, P, C], route [S, k, 3] -> [S, C], the weighted sum of each token's slots.
template <class X>
void MoECombineForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                       Saved<X>& saved) {
  const auto &y = *in[0], &route = *in[1];
  cpu::CheckMoECombine(node, y.shape, route.shape, out.shape);
  const int64_t c = out.dim(1), nk = route.dim(1), ne = y.dim(0), cap = y.dim(1);
  moe_internal::CheckRoute(x, node, route, ne, cap, /*unique_slots=*/false);
  x.For(out.numel(), MoeCombineFwd{y.ptr(), route.ptr(), out.ptr(), nk, c, ne, cap});
}

// Gradients for y and for the route's weights (channel 2); channels 0 and 1 get none.
template <class X>
void MoECombineBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                        const typename X::Tensor& out, const typename X::Tensor& dout, const Saved<X>& saved,
                        TDIn<X> din) {
  const auto &y = *in[0], &route = *in[1];
  const int64_t c = dout.dim(1), nk = route.dim(1), ne = y.dim(0), cap = y.dim(1);
  const int64_t entries = route.dim(0) * nk;
  if (din[0]) x.For(entries * c, MoeCombineBwdY{dout.ptr(), route.ptr(), din[0]->ptr(), nk, c, ne, cap});
  if (din.size() > 1 && din[1]) {
    x.For(entries, MoeCombineBwdRoute{dout.ptr(), y.ptr(), route.ptr(), din[1]->ptr(), nk, c, ne, cap});
  }
}

}  // namespace hetsynth::runtime::gpu
