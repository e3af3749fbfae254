// The shape and attribute checks, and the host-side planning built on them, that the CPU
// kernels (backends/cpu) and the CUDA backend's operators (backends/cuda/src/ops) share, so
// that both validate alike and abort with the same messages. Everything works on shapes
// (ir::Shape), not tensors, because the GPU operators' tensors are their executor's type. The
// functions are defined in checks.cc; the checks of what forward saved for backward are
// templates over the saved tensors' type and live here.
//
//   const cpu::MatMulDims d = cpu::GetMatMulDims(node, a.shape, b.shape);  // aborts on a mismatch
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/kernel_contract.h"

namespace hetsynth::runtime::cpu {

// ---- shards --------------------------------------------------------------------------------

// Checks (HS_CHECK) that `shard` places a piece of shape `piece` inside shard.full: same rank,
// dim in range, 0 <= start, start + piece[dim] <= full[dim], every other dim equal. `what`
// names the sharded operand in the message ("dropout 'd1' output").
void CheckShard(const std::string& what, const ShardInfo& shard, const ir::Shape& piece);

// ---- elementwise ---------------------------------------------------------------------------

// b broadcast onto a (b's dims align with a's trailing dims, each equal or 1; HS_CHECK
// otherwise): a's dims with its size-1 dims dropped and neighbouring dims that b follows alike
// merged, outermost first (empty for one element); bcast[i] says whether b is broadcast along
// merged dim i (constant there) or follows a.
struct MergedBroadcast {
  std::vector<int64_t> dims;
  std::vector<bool> bcast;
};
MergedBroadcast MergeBroadcast(const ir::Shape& a, const ir::Shape& b, const std::string& node);

// A dropout operand of shape `shape` as [outer, len, inner] rows of `inner` contiguous
// elements at global row offset `start` of a dim of size full_len: the whole tensor is one row
// of n at offset 0; with ctx.shard (checked) the piece's place in the full tensor. Checks
// attrs.p (0 <= p < 1) first.
struct DropoutPiece {
  int64_t outer = 1, len = 1, inner = 1, full_len = 1, start = 0;
  // A piece cut on two dims (ctx.shard's dim2, a mixed form over a two-level mesh): the shape
  // is [outer, len, mid, len2, inner] of the full [outer, full_len, mid, full_len2, inner],
  // the first cut the lower dim; one cut leaves mid = len2 = full_len2 = 1, start2 = 0.
  int64_t mid = 1, len2 = 1, full_len2 = 1, start2 = 0;
};
DropoutPiece GetDropoutPiece(const ir::Node& node, const KernelContext& ctx, const ir::Shape& shape);

// ---- norm ----------------------------------------------------------------------------------

// Rows and row length of a tensor normalized over its last dim.
struct NormRows {
  int64_t count, len;
};
NormRows NormRowsOf(const ir::Shape& x);

void CheckLayerNormParams(const ir::Node& node, int64_t gamma_numel, int64_t beta_numel, int64_t len);

template <class T>
void CheckLayerNormSaved(const ir::Node& node, const std::vector<T>& saved, int64_t rows) {
  HS_CHECK(saved.size() == 2 && saved[0].numel() == rows,
           StrCat("layer_norm '", node.name, "': backward without the forward's statistics"));
}

// N, cross entropy's divisor: the logits' row count, or with a logits piece (ctx.shard,
// checked: split on a leading dim) the row count of the full logits, so that the pieces'
// losses sum to the full loss.
double CrossEntropyDivisor(const ir::Node& node, const KernelContext& ctx, const ir::Shape& logits,
                           int64_t rows);

// mse_loss's divisor: the element count of the whole prediction (ctx.shard's, checked, when the
// kernel runs on a piece), so that the pieces' losses sum to the whole's.
double MseLossDivisor(const ir::Node& node, const KernelContext& ctx, const ir::Shape& pred);

void CheckCrossEntropyLabels(const ir::Node& node, int64_t labels, int64_t rows);

template <class T>
void CheckCrossEntropySaved(const ir::Node& node, const std::vector<T>& saved, int64_t rows) {
  HS_CHECK(saved.size() == 1 && saved[0].numel() == rows,
           StrCat("cross_entropy '", node.name, "': backward without the forward's logsumexp"));
}

// ---- dense ---------------------------------------------------------------------------------

// linear: x's last dim must be the weight's in-features k.
void CheckLinear(const ir::Node& node, const ir::Shape& x, int64_t k);

// Sizes of a[..., m, k] × b[..., k, n]; `shared` when b is 2-D and used by every batch.
struct MatMulDims {
  int64_t batch, m, k, n;
  bool shared;
};
MatMulDims GetMatMulDims(const ir::Node& node, const ir::Shape& a, const ir::Shape& b);

// ---- attention -----------------------------------------------------------------------------

// q, k, v [B, T, C] with attrs.heads H dividing C, D = C / H.
struct AttentionDims {
  int64_t b, t, c, h, d;
};
AttentionDims ReadAttentionDims(const ir::Node& node, const ir::Shape& q, const ir::Shape& k,
                                const ir::Shape& v);

template <class T>
void CheckAttentionSaved(const ir::Node& node, const AttentionDims& d, const std::vector<T>& saved) {
  HS_CHECK(saved.size() == 1 && saved[0].shape == (ir::Shape{d.b, d.h, d.t, d.t}),
           StrCat("attention '", node.name, "': backward without the probabilities saved by "
                  "forward"));
}

void CheckCausalMaskInput(const ir::Node& node, const ir::Shape& s);

// ---- conv ----------------------------------------------------------------------------------

// Sizes of one convolution; all from the shapes except stride and padding.
struct ConvShape {
  int64_t batch, ci, h, w;  // input [batch, ci, h, w]
  int64_t co, k;            // weight [co, ci / groups, k, k]
  int64_t stride, pad;
  int64_t ho, wo;           // output [batch, co, ho, wo]
  int64_t groups = 1;       // channel groups: output channel o reads group o / (co / groups)
};
// Checks x, the weight, the output y and the bias (when given) against each other.
ConvShape ReadConvShape(const ir::Node& node, const ir::Shape& x, const ir::Shape& wt,
                        const ir::Shape& y, const ir::Shape* bias);

// max_pool2d / avg_pool2d: the output size the window, stride, padding and ceil_mode give.
void CheckPool2d(const ir::Node& node, const ir::Shape& x, const ir::Shape& out);

template <class T>
void CheckMaxPool2dSaved(const ir::Node& node, const std::vector<T>& saved, const ir::Shape& dout) {
  HS_CHECK(saved.size() == 1 && saved[0].shape == dout,
           StrCat("max_pool2d '", node.name, "': backward without the argmax saved by forward"));
}

void CheckAdaptiveAvgPool2d(const ir::Node& node, const ir::Shape& x, const ir::Shape& out);

// ---- batch norm ----------------------------------------------------------------------------

// x [B, C, ...] as C channels of `batch` blocks of `inner` elements: element (b, c, i) at
// (b·C + c)·inner + i.
struct ChannelBlocks {
  int64_t batch, channels, inner;
};
ChannelBlocks ChannelBlocksOf(const ir::Node& node, const ir::Shape& x);
// The number of elements per channel in the whole x: the piece's own, or the full tensor's
// when ctx.shard describes x as a piece (checked), so that the pieces' moments sum to the
// whole's.
double BatchMomentsCount(const ir::Node& node, const KernelContext& ctx, const ir::Shape& x);
// batch_norm's moments [2, C], gamma and beta [C] against x's channels.
void CheckBatchNorm(const ir::Node& node, const ir::Shape& x, const ir::Shape& m, const ir::Shape& gamma,
                    const ir::Shape& beta);

// ---- layout --------------------------------------------------------------------------------

// A possibly negative axis of a rank-`rank` tensor, checked.
int64_t NormAxis(const ir::Node& node, int64_t axis, int64_t rank);

// Π s[begin .. end).
int64_t Product(const ir::Shape& s, int64_t begin, int64_t end);

// The rows [first, first + count) of the full embedding table that the kernel's table holds,
// and the full vocabulary: the whole table, or the piece ctx.shard describes (checked: split
// on dim 0).
struct TableRows {
  int64_t first, count, vocab;
};
TableRows GetTableRows(const ir::Node& node, const KernelContext& ctx, const ir::Shape& table);

// concat: the inputs fill `offset` of out's `row` elements per outer index.
void CheckConcatFill(const ir::Node& node, int64_t offset, int64_t row, const ir::Shape& out);

// x viewed as [outer, n, inner]; the slice y is [outer, start : start + length, inner].
struct SliceDims {
  int64_t outer, x_row, begin, len;  // len = y's elements per outer index
};
SliceDims GetSliceDims(const ir::Node& node, const ir::Shape& x, const ir::Shape& y);

// ---- moe -----------------------------------------------------------------------------------

// A route [tokens, k, 3] (the message names the node's op).
void CheckRouteShape(const ir::Node& node, const ir::Shape& route, int64_t tokens);

// top_k_gate: logits [S, E] and route [S, k <= E, 3]; attrs.capacity > 0.
void CheckTopKGate(const ir::Node& node, const ir::Shape& logits, const ir::Shape& route);

template <class T>
void CheckTopKGateSaved(const ir::Node& node, const std::vector<T>& saved, const ir::Shape& logits) {
  HS_CHECK(saved.size() == 1 && saved[0].shape == logits,
           StrCat("top_k_gate '", node.name,
                  "': backward without the probabilities saved by forward"));
}

// moe_dispatch: x [S, C] and output [E, P, C], route [S, k, 3].
void CheckMoEDispatch(const ir::Node& node, const ir::Shape& x, const ir::Shape& route,
                      const ir::Shape& out);

// moe_combine: y [E, P, C] and output [S, C], route [S, k, 3].
void CheckMoECombine(const ir::Node& node, const ir::Shape& y, const ir::Shape& route,
                     const ir::Shape& out);

}  // namespace hetsynth::runtime::cpu
