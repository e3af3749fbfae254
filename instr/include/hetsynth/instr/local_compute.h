// What one rank must do to run one compute instruction of a program: the decisions that follow
// from the instruction's rule, the split groups' shard lengths and the op table, taken here so
// that a runtime only runs kernels on pieces and never matches rules or op kinds itself
// (docs/runtime.md lists them):
// - the node with attributes for the local pieces (the op table's LocalAttrs: attention's head
//   count on a head split, reshape/expand's target = the output piece, moe_dispatch's experts);
// - the output piece's shape, and whether the rank has nothing to compute (an empty piece);
// - how many inputs the kernel gets (a bias_once rule's bias only on the rank with the largest
//   piece; for a mesh rule, per level: the node with the largest node piece, the device with
//   the largest piece within its node);
// - where the rank's piece sits in the whole tensor for kernels that need it (ir::Locate:
//   dropout's output, embedding's table rows, cross_entropy's logits);
// - on an expert split of an MoE op, which input holds routes and the rank's experts.
//
//   HS_ASSIGN_OR_RETURN(LocalCompute lc, LocalComputeOf(graph, program, i, rank));
//   if (!lc.skip) Forward(lc.node, {inputs, lc.num_inputs}, out /* lc.out_shape */);
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/instr/rules.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::instr {

// Where a rank's piece of a tensor sits in the whole tensor.
struct Shard {
  ir::Shape full;      // the whole tensor's shape
  int dim = -1;        // the split dim
  int64_t start = 0;   // the piece's first index along dim
  int dim2 = -1;       // a mixed form cut at both levels: the devices' cut dim (else -1)
  int64_t start2 = 0;  // and the piece's first index along it
};

// One cut of a piece: rows [start, start + len) of the whole tensor's `dim`.
struct Cut {
  int dim = -1;
  int64_t start = 0;
  int64_t len = 0;
};

// A rank's experts on an expert split of an MoE op: routes name global experts, so the kernel
// needs them renumbered to [0, count) (entries of other experts dropped).
struct LocalExperts {
  int route_input = -1;  // the input holding the routes
  int64_t offset = 0;    // the rank's first expert
  int64_t count = 0;     // its number of experts
};

struct LocalCompute {
  ComputeRule rule;           // the instruction's rule: pre[i] / post name the rank's pieces
  ir::Node node;              // the node, with attributes for the local pieces
  ir::Shape out_shape;        // the rank's piece of the output (the whole shape unless Gather)
  size_t num_inputs = 0;      // inputs passed to the kernel: the first num_inputs of the node's
  bool skip = false;          // an input or the output piece is empty: nothing to compute (the
                              // output piece is empty, or zeros for a Reduce output)
  std::optional<Shard> shard;  // for kernels that need their piece's place (ir::Locate)
  std::optional<LocalExperts> experts;  // expert splits of MoE ops (ir::ExpertRoutes)
};

// Where rank `rank`'s piece of a tensor held as `prop` sits in the whole tensor: one cut per
// Gather level — a world Gather(d) one (the rank's shard of d); a mixed form one for its outer
// Gather (the node's piece, NodeLengths) and one for its inner Gather (the device's piece of
// the node's, ShardLengths), outer first; none for a whole piece (Identity, Reduce). The two
// cuts of a mixed form are on different dims, so the piece is the box they make.
std::vector<Cut> PieceCuts(const ir::Graph& g, const Program& p, const Property& prop, int rank);

// The shape of rank `rank`'s piece of a tensor held as `prop`: the whole shape with its cuts
// applied (Identity and Reduce pieces are whole).
ir::Shape PieceShape(const ir::Graph& g, const Program& p, const Property& prop, int rank);

// What rank `rank` runs for compute instruction `instruction` of a program that passed
// CheckProgram (world or mesh rules). An error when the index is not a compute instruction of
// the program, the rank is out of range, the node has no such rule, or a kernel that needs
// its piece's place gets a piece cut at both mesh levels it cannot take (ir::Locate::two_cuts:
// embedding's table) or an expert split over a mesh level.
absl::StatusOr<LocalCompute> LocalComputeOf(const ir::Graph& g, const Program& p, size_t instruction, int rank);

}  // namespace hetsynth::instr
