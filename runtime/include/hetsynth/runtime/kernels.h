// CPU kernels: forward and backward of every IR operator, on whole tensors or on shards.
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
#include <vector>

#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// Where the piece a kernel runs on sits in the full tensor of the single-device graph: the
// piece is full[..., start : start + piece.dim(dim), ...] along `dim`.
struct ShardInfo {
  ir::Shape full;   // shape of the full tensor
  int dim = -1;
  int64_t start = 0;
};

struct KernelContext {
  int64_t step = 0;  // training step (0-based); dropout masks depend on it
  // Set when the kernel runs on a piece of a tensor split across ranks; nullptr for a whole
  // tensor. Only three kernels read it (the others ignore it), and each checks that it matches
  // the piece it is given (same rank, dim in range, start + length <= full[dim], other dims
  // equal):
  //  - dropout: describes the output (= input) piece. Each element's keep/drop decision uses
  //    its row-major index in the full tensor, so the pieces drop exactly the elements the
  //    single-device run drops (forward and backward).
  //  - embedding: describes the table (input 1) piece, split on dim 0: it holds rows
  //    [start, start + table.dim(0)) of the full table. Ids are validated against the full
  //    vocabulary full[0]; an id outside the piece's rows gives a zero output row and no
  //    gradient, one inside uses row id − start. The pieces' outputs sum to the full output.
  //  - cross_entropy: describes the logits piece, split on a dim other than the last. The loss
  //    is the sum over the piece's rows divided by the full logits' row count (product of the
  //    full dims except the last), and backward uses the same divisor, so the pieces' losses
  //    sum to the single-device loss.
  const ShardInfo* shard = nullptr;
};

// Tensors a forward kernel keeps for its backward.
struct SavedState {
  std::vector<Tensor> tensors;
};

// `out` is already shaped (ir::InferShape on the inputs' shapes) and zero-filled.
void Forward(const ir::Node& node, const KernelContext& ctx, std::span<const Tensor* const> in,
             Tensor& out, SavedState& saved);

// din[i] is nullptr when input i needs no gradient (labels, ids, routes, inputs), else a
// zero-filled tensor shaped like in[i]; the kernel adds dLoss/d in[i] into it.
void Backward(const ir::Node& node, const KernelContext& ctx, std::span<const Tensor* const> in,
              const Tensor& out, const Tensor& dout, const SavedState& saved,
              std::span<Tensor* const> din);

// Whether input i of an op of this kind can carry a gradient (false for labels, ids, routes).
bool Differentiable(ir::OpKind kind, size_t input);

// Row-major single-precision GEMM: C[m,n] = alpha · op(A) · op(B) + beta · C, where op(A) is
// [m,k] (A stored [k,m] when trans_a) and op(B) is [k,n] (B stored [n,k] when trans_b).
// beta must be 0 or 1.
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, const float* b, float beta, float* c);

}  // namespace hetsynth::runtime
