// Private: the per-operator CPU kernels behind Forward/Backward (kernels.cc dispatches, with a
// case per op generated from HETSYNTH_IR_OPS: an op without its pair here does not compile).
// Each op has a <Op>Forward / <Op>Backward pair with the contracts of kernels.h; the unary ops
// with shared math (runtime/ops/unary_math.h) get theirs generated.
#pragma once

#include <span>
#include <string>

#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/ops/unary_math.h"

namespace hetsynth::runtime::cpu {

using In = std::span<const Tensor* const>;
using DIn = std::span<Tensor* const>;

#define HS_DECLARE_KERNEL_PAIR(Op)                                                          \
  void Op##Forward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,       \
                   SavedState& saved);                                                        \
  void Op##Backward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out, \
                    const Tensor& dout, const SavedState& saved, DIn din);

// dense.cc
HS_DECLARE_KERNEL_PAIR(Linear)
HS_DECLARE_KERNEL_PAIR(MatMul)
// elementwise.cc
HS_DECLARE_KERNEL_PAIR(Add)
HS_DECLARE_KERNEL_PAIR(Mul)
HS_DECLARE_KERNEL_PAIR(Gelu)
HS_DECLARE_KERNEL_PAIR(Dropout)
HS_DECLARE_KERNEL_PAIR(Expand)
HS_DECLARE_KERNEL_PAIR(Clip)
// norm.cc
HS_DECLARE_KERNEL_PAIR(LayerNorm)
HS_DECLARE_KERNEL_PAIR(Softmax)
HS_DECLARE_KERNEL_PAIR(LogSoftmax)
HS_DECLARE_KERNEL_PAIR(CrossEntropy)
HS_DECLARE_KERNEL_PAIR(MseLoss)
// layout.cc
HS_DECLARE_KERNEL_PAIR(Embedding)
HS_DECLARE_KERNEL_PAIR(Flatten)
HS_DECLARE_KERNEL_PAIR(Reshape)
HS_DECLARE_KERNEL_PAIR(Transpose)
HS_DECLARE_KERNEL_PAIR(Concat)
HS_DECLARE_KERNEL_PAIR(Slice)
// attention.cc
HS_DECLARE_KERNEL_PAIR(Attention)
HS_DECLARE_KERNEL_PAIR(CausalMask)
// conv.cc
HS_DECLARE_KERNEL_PAIR(Conv2d)
HS_DECLARE_KERNEL_PAIR(MaxPool2d)
HS_DECLARE_KERNEL_PAIR(AdaptiveAvgPool2d)
HS_DECLARE_KERNEL_PAIR(AvgPool2d)
// batch_norm.cc
HS_DECLARE_KERNEL_PAIR(BatchMoments)
HS_DECLARE_KERNEL_PAIR(BatchNorm)
// moe.cc
HS_DECLARE_KERNEL_PAIR(TopKGate)
HS_DECLARE_KERNEL_PAIR(MoEDispatch)
HS_DECLARE_KERNEL_PAIR(MoECombine)

// elementwise.cc, generated: one generic kernel pair over UnaryMath<K>
HETSYNTH_UNARY_MATH_OPS(HS_DECLARE_KERNEL_PAIR)

#undef HS_DECLARE_KERNEL_PAIR

}  // namespace hetsynth::runtime::cpu
