// What every backend's kernels agree on: where a piece of a split tensor sits (ShardInfo), what
// a kernel is told besides its tensors (KernelContext), what forward keeps for backward
// (SavedState, and the remainder of a sum it rounded), and which inputs carry a gradient
// (Differentiable).
//
// The forward/backward contract, shared by the CPU kernels (hetsynth/runtime/kernels.h) and the
// CUDA backend's operators: kernels take their shapes from the tensors they are given, not from
// the graph, so the same kernel runs a full tensor on one device or a shard of it on one rank;
// `out` arrives shaped and zero-filled; din[i] is nullptr when input i needs no gradient, else a
// zero-filled tensor shaped like in[i] into which backward adds dLoss/d in[i].
//
//   KernelContext ctx{.step = trainer_step};
//   ShardInfo piece{.full = {8, 16}, .dim = 0, .start = 4};   // rows [4, 4 + rows) of [8, 16]
//   ctx.shard = &piece;
//   if (Differentiable(node.kind, i)) { /* input i gets a gradient */ }
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// Where the piece a kernel runs on sits in the full tensor of the single-device graph: the
// piece is full[..., start : start + piece.dim(dim), ...] along `dim` (and, for a piece of a
// mixed form cut at both levels of a two-level mesh, along `dim2` from `start2` too).
struct ShardInfo {
  ir::Shape full;   // shape of the full tensor
  int dim = -1;
  int64_t start = 0;
  int dim2 = -1;    // a second cut dim, or -1; only kernels that read just `full` accept one
  int64_t start2 = 0;
};

struct KernelContext {
  int64_t step = 0;  // training step (0-based); dropout masks depend on it
  // Set when the kernel runs on a piece of a tensor split across ranks; nullptr for a whole
  // tensor. Only the kernels of ops with an ir::Locate read it (the others ignore it), and each
  // checks that it matches the piece it is given (same rank, dim in range, start + length <=
  // full[dim], other dims equal):
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
  //    sum to the single-device loss. mse_loss likewise; batch_moments divides its sums by
  //    the full count.
  //  - conv2d: describes x's piece; a cut on dim 0 holds images [start, start + x.dim(0)) of
  //    the batch. With one_device_bits the CPU kernel lowers images in chunks cut in the full
  //    batch, as one device does, so each image's output bits do not depend on the split.
  const ShardInfo* shard = nullptr;
  // Kernels that can give a piece one device's bits at a cost do so (ExecutorOptions::bitwise):
  // the CPU conv2d computes the whole batch's chunks that meet its piece, so a rank holding 3
  // images of a 1×1 map computes a chunk of up to 256 (2–6× its own GEMM on small maps).
  bool one_device_bits = false;
};

// A forward output for `node` from backend b: b.MakeOutput(node, shape) where the backend has it
// (the CPU's: uninitialized for kernels that overwrite the whole output), else b.Make(shape)
// (zero-filled).
template <class B>
auto MakeForwardOutput(B& b, const ir::Node& node, ir::Shape shape) {
  if constexpr (requires { b.MakeOutput(node, shape); }) {
    return b.MakeOutput(node, std::move(shape));
  } else {
    return b.Make(std::move(shape));
  }
}

// Tensors a forward kernel keeps for its backward; and, for a CPU kernel whose output is a sum
// (ForwardKeepsRemainder), `remainder`: shaped like the output, out + remainder = the sum as the
// kernel accumulated it (in double) to about 48 bits. The executor's all-reduce of such an
// output across CPU ranks sums out + remainder in double, so that the ranks' partial sums add up
// to what one device computes — not to the float sum of rounded partials — before rounding once.
// (Device backends all-reduce on the device and their kernels leave it empty.)
struct SavedState {
  std::vector<Tensor> tensors;
  Tensor remainder;
};

// Whether CPU forward kernels of this kind set SavedState::remainder: batch_moments, whose partial
// moments a batch-split plan all-reduces — batch norm's statistics steer every activation after
// it, and a rounding of them seen by one layout and not the other moves a ReLU's kink.
inline bool ForwardKeepsRemainder(ir::OpKind kind) { return kind == ir::OpKind::kBatchMoments; }

// Whether input i of an op of this kind can carry a gradient (false for labels, ids, routes):
// ir::IsDifferentiableInput, the op table's no-grad inputs, under the runtime's name.
bool Differentiable(ir::OpKind kind, size_t input);

}  // namespace hetsynth::runtime
