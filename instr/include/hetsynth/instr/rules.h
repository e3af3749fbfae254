// The distributed instruction set, part 1: properties and the sharding rules of compute
// instructions.
//
// A property says how the pieces held by the n devices relate to a reference tensor t of the
// single-device graph (DESIGN §2):
//   Gather(t, d)  device i holds a contiguous slice of t along dim d; concatenating the slices
//                 in rank order gives t;
//   Reduce(t)     every device holds a full-shape tensor; their elementwise sum is t;
//   Identity(t)   every device holds all of t.
// A compute rule is the Hoare triple {pre} op {post} of one way to run an operator on pieces:
// one required property per input and the property it establishes for the output. Every
// operator has the all-Identity rule; the others are the data, tensor, head, channel and
// expert splits listed in docs/instructions.md.
//
//   for (const ComputeRule& r : ShardingRules(graph, node_id)) { ... r.pre[i], r.post ... }
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetsynth/ir/graph.h"

namespace hetsynth::instr {

enum class PropKind : uint8_t { kIdentity, kGather, kReduce };

struct Property {
  PropKind kind = PropKind::kIdentity;
  ir::ValueId tensor = ir::kNoValue;
  int dim = -1;  // Gather only: the split dim (non-negative)

  static Property Identity(ir::ValueId t) { return {PropKind::kIdentity, t, -1}; }
  static Property Gather(ir::ValueId t, int d) { return {PropKind::kGather, t, d}; }
  static Property Reduce(ir::ValueId t) { return {PropKind::kReduce, t, -1}; }
  auto operator<=>(const Property&) const = default;
};

// "Gather(layers.0.attn.q, 2)", with the graph's value names.
std::string PropertyString(const ir::Graph& g, const Property& p);

// How much of the operator's work one device does under a rule.
enum class Work : uint8_t {
  kFull,          // every device computes the whole op (all-Identity)
  kProportional,  // device i does a share equal to its slice of the split dim
};

// A split constraint a rule puts on one Gather operand: its dim is cut into at most
// `max_atoms` equal indivisible units (atoms), e.g. the hidden dim of attention q/k/v into
// `heads` atoms of one head each. Operands of one rule that share a split are in one group.
struct SplitUse {
  Property prop;       // a Gather property of an input or of the output
  int64_t max_atoms;   // the dim can be cut into this many atoms at most (divides its size)
};

struct ComputeRule {
  std::string name;            // "batch", "column", "row", "heads", "experts", "replicated", ...
  std::vector<Property> pre;   // one per node input, in input order
  Property post;               // the output's property
  Work work = Work::kFull;
  // Gather operands that must be split identically (same atoms, same per-device counts).
  std::vector<SplitUse> split;
  // A Reduce output whose op adds a constant term (a bias) that only one device may add.
  bool bias_once = false;
};

// Every rule for one node, all-Identity first, then in a fixed order (deterministic).
std::vector<ComputeRule> ShardingRules(const ir::Graph& g, ir::NodeId node);

}  // namespace hetsynth::instr
