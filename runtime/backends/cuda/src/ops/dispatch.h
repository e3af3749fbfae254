// Forward/Backward of any IR operator on an executor: the GPU counterpart of runtime::Forward /
// runtime::Backward (kernels.h), mapping an OpKind to its operator pair.
#pragma once

#include "ops/conv.h"
#include "ops/dense.h"
#include "ops/elementwise.h"
#include "ops/layout.h"
#include "ops/moe.h"
#include "ops/norm.h"
#include "ops/ops.h"

namespace hetsynth::runtime::gpu {

#define HS_GPU_OP_CASES(CASE)   \
  CASE(kLinear, Linear)         \
  CASE(kMatMul, MatMul)         \
  CASE(kAdd, Add)               \
  CASE(kMul, Mul)               \
  CASE(kRelu, Relu)             \
  CASE(kGelu, Gelu)             \
  CASE(kDropout, Dropout)       \
  CASE(kLayerNorm, LayerNorm)   \
  CASE(kSoftmax, Softmax)       \
  CASE(kLogSoftmax, LogSoftmax) \
  CASE(kAttention, Attention)   \
  CASE(kCausalMask, CausalMask) \
  CASE(kEmbedding, Embedding)   \
  CASE(kConv2d, Conv2d)         \
  CASE(kMaxPool2d, MaxPool2d)   \
  CASE(kAdaptiveAvgPool2d, AdaptiveAvgPool2d) \
  CASE(kFlatten, Flatten)       \
  CASE(kReshape, Reshape)       \
  CASE(kTranspose, Transpose)   \
  CASE(kConcat, Concat)         \
  CASE(kSlice, Slice)           \
  CASE(kExpand, Expand)         \
  CASE(kCrossEntropy, CrossEntropy) \
  CASE(kTopKGate, TopKGate)     \
  CASE(kMoEDispatch, MoEDispatch) \
  CASE(kMoECombine, MoECombine)

template <class X>
void Forward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
             Saved<X>& saved) {
  switch (node.kind) {
#define HS_FWD_CASE(K, Op)                     \
  case ir::OpKind::K:                          \
    Op##Forward<X>(x, node, ctx, in, out, saved); \
    return;
    HS_GPU_OP_CASES(HS_FWD_CASE)
#undef HS_FWD_CASE
  }
  HS_CHECK(false, StrCat("no GPU operator for '", ir::OpName(node.kind), "'"));
}

template <class X>
void Backward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
              const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  switch (node.kind) {
#define HS_BWD_CASE(K, Op)                                 \
  case ir::OpKind::K:                                      \
    Op##Backward<X>(x, node, ctx, in, out, dout, saved, din); \
    return;
    HS_GPU_OP_CASES(HS_BWD_CASE)
#undef HS_BWD_CASE
  }
  HS_CHECK(false, StrCat("no GPU operator for '", ir::OpName(node.kind), "'"));
}

#undef HS_GPU_OP_CASES

}  // namespace hetsynth::runtime::gpu
