// CPU kernels: forward and backward of every IR operator, on whole tensors or on shards, with
// the contract of kernel_contract.h.
//
// Kernels take their shapes from the tensors they are given, not from the graph, so the same
// kernel runs a full tensor on one device or a shard of it on one rank. Forward may keep
// extra tensors in `saved` (softmax probabilities, normalization statistics, masks) for
// backward.
//
//   SavedState saved;
//   Tensor y(InferShape(node.kind, {x.shape, w.shape}, node.attrs).value());
//   Forward(node, ctx, {&x, &w}, y, saved);
//   Backward(node, ctx, {&x, &w}, y, dy, saved, {&dx, &dw});
#pragma once

#include <cstdint>
#include <span>

#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/kernel_contract.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// `out` is already shaped (ir::InferShape on the inputs' shapes) and zero-filled — except for
// the kinds of ForwardWritesWholeOutput, whose kernels write every element of `out` without
// reading it, so that callers may hand them an uninitialized one (Tensor::Uninitialized).
void Forward(const ir::Node& node, const KernelContext& ctx, std::span<const Tensor* const> in,
             Tensor& out, SavedState& saved);

// linear, matmul, add, gelu, layer_norm: the big outputs of a transformer step, which then skip
// a zero-fill (ops_dense_test checks each against an output full of NaNs).
bool ForwardWritesWholeOutput(ir::OpKind kind);

// din[i] is nullptr when input i needs no gradient (labels, ids, routes, inputs), else a
// zero-filled tensor shaped like in[i]; the kernel adds dLoss/d in[i] into it.
void Backward(const ir::Node& node, const KernelContext& ctx, std::span<const Tensor* const> in,
              const Tensor& out, const Tensor& dout, const SavedState& saved,
              std::span<Tensor* const> din);

// Row-major single-precision GEMM: C[m,n] = alpha · op(A) · op(B) + beta · C, where op(A) is
// [m,k] (A stored [k,m] when trans_a) and op(B) is [k,n] (B stored [n,k] when trans_b).
// beta must be 0 or 1.
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, const float* b, float beta, float* c);

}  // namespace hetsynth::runtime
