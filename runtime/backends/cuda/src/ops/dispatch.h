// Forward/Backward of any IR operator on an executor: the GPU counterpart of runtime::Forward /
// runtime::Backward (kernels.h), mapping an OpKind to its operator pair with a case per op
// generated from HETSYNTH_IR_OPS: an op without its pair (ops.h) is a compile error naming it.
#pragma once

#include "ops/conv.h"
#include "ops/dense.h"
#include "ops/elementwise.h"
#include "ops/layout.h"
#include "ops/moe.h"
#include "ops/norm.h"
#include "ops/ops.h"

namespace hetsynth::runtime::gpu {

template <class X>
void Forward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
             Saved<X>& saved) {
  switch (node.kind) {
#define HS_FWD_CASE(Op, snake)                         \
  case ir::OpKind::k##Op:                              \
    gpu::Op##Forward<X>(x, node, ctx, in, out, saved); \
    return;
    HETSYNTH_IR_OPS(HS_FWD_CASE)
#undef HS_FWD_CASE
  }
  HS_CHECK(false, StrCat("no GPU operator for '", ir::OpName(node.kind), "'"));
}

template <class X>
void Backward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
              const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  switch (node.kind) {
#define HS_BWD_CASE(Op, snake)                                     \
  case ir::OpKind::k##Op:                                          \
    gpu::Op##Backward<X>(x, node, ctx, in, out, dout, saved, din); \
    return;
    HETSYNTH_IR_OPS(HS_BWD_CASE)
#undef HS_BWD_CASE
  }
  HS_CHECK(false, StrCat("no GPU operator for '", ir::OpName(node.kind), "'"));
}

}  // namespace hetsynth::runtime::gpu
