// The GPU backend's operators: forward and backward of every IR operator, written once as
// templates over an executor X (GpuExec on a CUDA device, HostExec on the host — see
// exec/exec_host.h) with the contracts of kernel_contract.h: `out` is already shaped and zero-filled;
// din[i] is nullptr or a zero-filled tensor shaped like in[i] into which backward *adds*
// dLoss/d in[i]; `saved` carries what forward keeps for backward; ctx.shard describes a piece
// of a split tensor for dropout, embedding and cross entropy exactly as for the CPU kernels.
//
// Each family of operators lives in <family>.h (the templates; host C++20) and
// <family>_kernels.h (their device functors; C++17, compiled by nvcc too), and <family>.cu
// instantiates the functors' launches (HS_GPU_FOR). dispatch.h maps an OpKind to its pair. The
// unary ops with shared math (runtime/ops/unary_math.h) have their pair and launches generated.
#pragma once

#include <span>
#include <vector>

#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/kernel_contract.h"
#include "hetsynth/runtime/ops/unary_math.h"

namespace hetsynth::runtime::gpu {

template <class X>
using TIn = std::span<const typename X::Tensor* const>;
template <class X>
using TDIn = std::span<typename X::Tensor* const>;

template <class X>
struct Saved {
  std::vector<typename X::Tensor> tensors;
};

// Declares <Op>Forward / <Op>Backward for every executor; each family header defines them.
#define HS_GPU_DECLARE_OP(Op)                                                                   \
  template <class X>                                                                            \
  void Op##Forward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,             \
                   typename X::Tensor& out, Saved<X>& saved);                                   \
  template <class X>                                                                            \
  void Op##Backward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,            \
                    const typename X::Tensor& out, const typename X::Tensor& dout,              \
                    const Saved<X>& saved, TDIn<X> din);

// elementwise.h
HS_GPU_DECLARE_OP(Add)
HS_GPU_DECLARE_OP(Mul)
HS_GPU_DECLARE_OP(Gelu)
HS_GPU_DECLARE_OP(Dropout)
HS_GPU_DECLARE_OP(Expand)
HS_GPU_DECLARE_OP(CausalMask)
HS_GPU_DECLARE_OP(Clip)
// norm.h
HS_GPU_DECLARE_OP(LayerNorm)
HS_GPU_DECLARE_OP(Softmax)
HS_GPU_DECLARE_OP(LogSoftmax)
HS_GPU_DECLARE_OP(CrossEntropy)
HS_GPU_DECLARE_OP(BatchMoments)
HS_GPU_DECLARE_OP(BatchNorm)
HS_GPU_DECLARE_OP(MseLoss)
// layout.h
HS_GPU_DECLARE_OP(Embedding)
HS_GPU_DECLARE_OP(Flatten)
HS_GPU_DECLARE_OP(Reshape)
HS_GPU_DECLARE_OP(Transpose)
HS_GPU_DECLARE_OP(Concat)
HS_GPU_DECLARE_OP(Slice)
// dense.h
HS_GPU_DECLARE_OP(Linear)
HS_GPU_DECLARE_OP(MatMul)
HS_GPU_DECLARE_OP(Attention)
// conv.h
HS_GPU_DECLARE_OP(Conv2d)
HS_GPU_DECLARE_OP(MaxPool2d)
HS_GPU_DECLARE_OP(AdaptiveAvgPool2d)
HS_GPU_DECLARE_OP(AvgPool2d)
// moe.h
HS_GPU_DECLARE_OP(TopKGate)
HS_GPU_DECLARE_OP(MoEDispatch)
HS_GPU_DECLARE_OP(MoECombine)

// elementwise.h, generated: one generic operator pair over UnaryMath<K>
HETSYNTH_UNARY_MATH_OPS(HS_GPU_DECLARE_OP)

#undef HS_GPU_DECLARE_OP

}  // namespace hetsynth::runtime::gpu
