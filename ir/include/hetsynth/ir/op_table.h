// The operator table: everything the modules above ir need to know about an operator kind, in
// one entry per kind (ir/src/op_table.cc), in the order of HETSYNTH_IR_OPS (op_kind.h) —
// checked at compile time. An entry holds the op's name and attributes, its arity, which inputs
// carry a gradient, its compute class (for the cost model), its shape inference and FLOP
// count, how instr builds its sharding rules, and what a device must change to run it on
// pieces.
//
// Adding an elementwise unary op (say sigmoid) takes one X line in op_kind.h and one entry here,
// e.g. {.kind = OpKind::kSigmoid, .shape = SameShape, .flops = PerOutput<4, 4>,
// .sharding = {.family = Sharding::Family::kKeepDims}} — its sharding rules, local pieces and
// cost then follow from the entry; only its math remains to be written (its forward and
// derivative in runtime/ops/unary_math.h, from which both backends' kernels are generated).
//
//   const ir::OpDef& def = ir::DefOf(node.kind);
//   if (def.max_inputs != ir::kVariadic && node.inputs.size() > def.max_inputs) ...
//   bool grad = ir::IsDifferentiableInput(node.kind, 1);   // false for embedding ids
//   bool gemm = ir::IsGemmLike(node.kind);                 // linear, matmul, attention, conv2d
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/ir/op.h"

namespace hetsynth::ir {

// How the cost model prices an op's work on a device.
enum class ComputeClass : uint8_t {
  kGemm,         // matrix-multiply-like: priced by FLOPs at the device's GEMM speed
  kMemoryBound,  // elementwise, normalization, data movement: priced by FLOPs or by bytes over
                 // memory bandwidth, whichever the cluster is slower at (costmodel)
};

// Which Reduce (partial-sum) inputs an op turns into a Reduce output: the op is linear in them.
enum class Partial : uint8_t {
  kNone,   // not linear in its inputs
  kSum,    // Σ_i f(a_i, b_i) = f(Σ a_i, Σ b_i) for inputs of one shape (add)
  kFirst,  // Σ_i f(a_i, b) = f(Σ a_i, b) with the other inputs replicated (mul by b)
};

// How instr builds an op's sharding rules beyond the all-Identity one (docs/instructions.md).
// The families several ops share are built from this description alone, so an op of a family
// needs no code in instr; kOwn ops have their own rules in instr/src/rules.cc.
struct Sharding {
  enum class Family : uint8_t {
    kReplicatedOnly,  // only all-Identity
    kKeepDims,        // per element along the split: Gather(x, d) → Gather(y, d) for every d
                      // below rank(y) − whole_trailing_dims, the other inputs Identity
    kBroadcasting,    // (a, b), b broadcast onto a: a split on d, b split on its matching dim
                      // where it has it at full size, else Identity
    kOwn,             // op-specific rules (instr/src/rules.cc)
  };
  Family family = Family::kOwn;
  int whole_trailing_dims = 0;  // kKeepDims: trailing dims the op works across (never split)
  Partial partial = Partial::kNone;
};

// Operand positions in a node: an input index (>= 0), the output, or none.
inline constexpr int kOutputOperand = -1;
inline constexpr int kNoOperand = -2;

// The operand whose place in the whole tensor a kernel needs when it runs on a piece (the
// runtime passes it as the kernel's shard: full shape, split dim, start): dropout indexes its
// mask stream by global position, embedding offsets ids by its first table row, cross_entropy
// divides by the global number of positions, conv2d groups a batch piece's images as one device
// groups the whole batch's (so that each image's bits do not depend on the split).
struct Locate {
  int operand = kNoOperand;  // kOutputOperand, an input index, or kNoOperand
  int dim = -1;              // only when that operand is split on this dim; -1: on any dim
  // The kernel also takes a piece cut on two dims (a mixed form over a two-level mesh,
  // ShardInfo::dim2): dropout's global index, the divisors of cross_entropy, mse_loss and
  // batch_moments (they read only the whole shape), conv2d's batch cut (whichever cut is on dim
  // 0). Embedding's table needs one cut.
  bool two_cuts = false;
};

// MoE ops whose route input names global experts: a device holding experts [o, o + n) of the
// expert operand's dim 0 must renumber the routes to its own experts (dropping the others).
struct ExpertRoutes {
  int input = kNoOperand;                 // the input holding routes [S, k, 3]
  int expert_operand = kNoOperand;        // the operand whose dim 0 counts experts
};

// An input that holds integers (class labels, token ids) that index a dim of another input:
// values in [0, n) with n = dim `bound_dim` of input `bound_input`. Data files and batches fed
// to such an input are checked against n (runtime/data.h); it carries no gradient.
struct IntegerInput {
  int input = kNoOperand;        // the integer input; kNoOperand: none
  int bound_input = kNoOperand;  // the input whose dim bounds the integers
  int bound_dim = 0;             // that dim; negative counts from the end
};

// Output shape for input shapes already checked for arity and positive dims; the error says
// which input and what was expected (the caller adds the node).
using ShapeFn = absl::StatusOr<Shape> (*)(const std::vector<Shape>& inputs, const Attrs& attrs);
// Forward and backward FLOPs for the given input and output shapes.
using FlopsFn = Flops (*)(const std::vector<Shape>& inputs, const Shape& output, const Attrs& attrs);
// Rewrites the attributes that state sizes so that the op applied to a device's input pieces
// gives its output piece `piece` of the whole output `whole` (attention: the local head count).
using LocalAttrsFn = void (*)(const Shape& whole, const Shape& piece, Attrs& attrs);

// Output size of a pooling window k with step s and padding p over n elements (ONNX and PyTorch):
// ⌊(n + 2p − k)/s⌋ + 1, or with ceil_mode ⌈(n + 2p − k)/s⌉ + 1 less a last window that would
// start inside the right padding.
inline int64_t PoolOutputSize(int64_t n, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  const int64_t span = n + 2 * p - k;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= n + p) --out;
  return out;
}

inline constexpr int kVariadic = -1;  // max_inputs of an op that takes any number of inputs
inline constexpr size_t kMaxAttrs = 5;

struct OpDef {
  OpKind kind = OpKind::kAdd;
  std::string_view name;   // snake_case, from HETSYNTH_IR_OPS: graph JSON and messages
  std::string_view camel;  // CamelCase, from HETSYNTH_IR_OPS: generated dispatch
  // The Attrs fields the op reads, by JSON name; unused slots are empty.
  std::array<std::string_view, kMaxAttrs> attrs{};
  int min_inputs = 1;
  int max_inputs = 1;  // kVariadic: no upper bound
  // Bit i set: input i gets no gradient (integer ids and labels; routes that only select).
  uint32_t no_grad_inputs = 0;
  IntegerInput integer_input;  // ids or labels, if the op takes them
  ComputeClass compute = ComputeClass::kMemoryBound;
  ShapeFn shape = nullptr;
  FlopsFn flops = nullptr;
  Sharding sharding;
  LocalAttrsFn local_attrs = nullptr;  // none: the attributes hold for every piece
  Locate locate;
  ExpertRoutes routes;
};

// The entry of a kind.
const OpDef& DefOf(OpKind kind);
// Every entry, in OpKind order.
std::span<const OpDef> OpTable();

// Whether input `input` of an op of this kind carries a gradient.
bool IsDifferentiableInput(OpKind kind, size_t input);
// Whether the op is priced as a GEMM (ComputeClass::kGemm).
bool IsGemmLike(OpKind kind);

}  // namespace hetsynth::ir
