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
// A rule is named by a RuleId (a family and up to two dims); the names ("batch0", "column",
// "split1_2") appear only in plan files, `explain` output and messages.
//
//   for (const ComputeRule& r : ShardingRules(graph, node_id)) { ... r.id, r.pre[i], r.post ... }
//   RuleId id = RuleId(RuleFamily::kSplit, 1, 2);   // or, checked at compile time: "split1_2"
//   RuleName(id);                                   // "split1_2"
//   ParseRuleName("batch0", &id);                   // true: {kBatch, 0}
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::instr {

enum class PropKind : uint8_t { kIdentity, kGather, kReduce };

// The levels of a two-level mesh (topology spec §2, docs/topology.md): the whole cluster, the
// nodes (a node's piece over the nodes), the devices of each node (a device's piece of its
// node's piece). Split groups and collectives carry one.
enum class Level : uint8_t { kWorld, kNodes, kDevices };
std::string_view LevelName(Level l);                 // "world", "nodes", "devices"
bool ParseLevel(std::string_view name, Level* out);  // inverse of LevelName

// One level's relation: I (the piece is the whole), G(dim) (a contiguous slice of dim, slices
// concatenated in order), R (the pieces sum to the whole).
struct Placement {
  PropKind kind = PropKind::kIdentity;
  int dim = -1;  // Gather only
  auto operator<=>(const Placement&) const = default;
};

struct Property {
  PropKind kind = PropKind::kIdentity;
  ir::ValueId tensor = ir::kNoValue;
  int dim = -1;  // Gather only: the split dim (non-negative)
  // A mixed form (two-level mesh only): `outer_kind`/`outer_dim` relate node pieces to the
  // tensor over the nodes, `kind`/`dim` a device's piece to its node's piece. World forms
  // (the three above) leave these at their defaults, so they compare and sort as before.
  bool mixed = false;
  PropKind outer_kind = PropKind::kIdentity;
  int outer_dim = -1;

  static Property Identity(ir::ValueId t) { return {PropKind::kIdentity, t, -1}; }
  static Property Gather(ir::ValueId t, int d) { return {PropKind::kGather, t, d}; }
  static Property Reduce(ir::ValueId t) { return {PropKind::kReduce, t, -1}; }
  // (outer, inner) over the two levels; (I, I), (G d, G d) and (R, R) are the world forms
  // Identity, Gather(d) and Reduce, any other pair a mixed form.
  static Property Mesh(ir::ValueId t, Placement outer, Placement inner);
  // The placement over the nodes and over a node's devices (world forms: the same at both).
  Placement Outer() const { return mixed ? Placement{outer_kind, outer_dim} : Placement{kind, dim}; }
  Placement Inner() const { return Placement{kind, dim}; }
  auto operator<=>(const Property&) const = default;
};

// "Gather(layers.0.attn.q, 2)", with the graph's value names; a mixed form
// "Mesh(x; nodes=Gather(0), devices=Identity)".
std::string PropertyString(const ir::Graph& g, const Property& p);
// "Identity", "Gather(0)", "Reduce": a placement as plan files spell it.
std::string PlacementString(const Placement& p);
// Inverse of PlacementString; false for any other text.
bool ParsePlacement(std::string_view text, Placement* out);

// The families of compute rules, X(CamelName, "name"); docs/instructions.md lists which op has
// which. A family's name is the stem of its rules' names.
#define HETSYNTH_INSTR_RULE_FAMILIES(X)   \
  X(Replicated, "replicated")             \
  X(Split, "split")                       \
  X(Partial, "partial")                   \
  X(Batch, "batch")                       \
  X(Column, "column")                     \
  X(Row, "row")                           \
  X(Rows, "rows")                         \
  X(Columns, "columns")                   \
  X(Inner, "inner")                       \
  X(Heads, "heads")                       \
  X(Hidden, "hidden")                     \
  X(Vocab, "vocab")                       \
  X(OutChannels, "out_channels")          \
  X(InChannels, "in_channels")            \
  X(Experts, "experts")                   \
  X(Tokens, "tokens")

enum class RuleFamily : uint8_t {
#define HETSYNTH_INSTR_RULE_ENUM_(camel, name) k##camel,
  HETSYNTH_INSTR_RULE_FAMILIES(HETSYNTH_INSTR_RULE_ENUM_)
#undef HETSYNTH_INSTR_RULE_ENUM_
};

inline constexpr std::array<std::string_view, 0
#define HETSYNTH_INSTR_RULE_COUNT_(camel, name) +1
    HETSYNTH_INSTR_RULE_FAMILIES(HETSYNTH_INSTR_RULE_COUNT_)
#undef HETSYNTH_INSTR_RULE_COUNT_
    > kRuleFamilyNames = {
#define HETSYNTH_INSTR_RULE_NAME_(camel, name) name,
        HETSYNTH_INSTR_RULE_FAMILIES(HETSYNTH_INSTR_RULE_NAME_)
#undef HETSYNTH_INSTR_RULE_NAME_
};

// Which rule of a node: a family and the dims its name carries. Ordered (family, dim, dim2),
// so rules can key ordered containers.
struct RuleId {
  RuleFamily family = RuleFamily::kReplicated;
  int dim = -1;   // the dim in the name ("batch1", "split2", the 1 of "split1_2"); -1: none
  int dim2 = -1;  // reshape: the output dim ("split1_2"); -1: none

  constexpr RuleId() = default;
  constexpr RuleId(RuleFamily f, int d = -1, int d2 = -1) : family(f), dim(d), dim2(d2) {}
  // A rule spelled as in plan files, parsed at compile time (a misspelt name does not
  // compile): `in.rule = "replicated";`.
  template <size_t N>
  consteval RuleId(const char (&name)[N]);

  auto operator<=>(const RuleId&) const = default;
  bool operator==(const RuleId&) const = default;
};

// The rule's name in plan files and messages: the family's name, then dim and "_" dim2 when
// set ("replicated", "batch0", "split1_2").
std::string RuleName(const RuleId& id);
std::ostream& operator<<(std::ostream& os, const RuleId& id);

// Inverse of RuleName; false unless `name` is exactly the name of some RuleId (no leading
// zeros, no stray characters). Whether a node has that rule is ShardingRules' business.
constexpr bool ParseRuleName(std::string_view name, RuleId* id) {
  size_t p = 0;
  auto digit = [&](size_t i) { return i < name.size() && name[i] >= '0' && name[i] <= '9'; };
  while (p < name.size() && !digit(p)) ++p;
  const std::string_view stem = name.substr(0, p);
  size_t f = 0;
  while (f < kRuleFamilyNames.size() && kRuleFamilyNames[f] != stem) ++f;
  if (f == kRuleFamilyNames.size()) return false;
  // A dim: one to six digits, no leading zero.
  auto number = [&](int* out) {
    const size_t begin = p;
    int v = 0;
    while (digit(p) && p - begin < 6) v = 10 * v + (name[p++] - '0');
    *out = v;
    return p > begin && !digit(p) && (name[begin] != '0' || p == begin + 1);
  };
  RuleId parsed(static_cast<RuleFamily>(f));
  if (p < name.size()) {
    if (!number(&parsed.dim)) return false;
    if (p < name.size()) {
      if (name[p++] != '_' || !number(&parsed.dim2)) return false;
    }
  }
  if (p != name.size()) return false;
  *id = parsed;
  return true;
}

template <size_t N>
consteval RuleId::RuleId(const char (&name)[N]) {
  // Reaching the throw makes the initialization not a constant expression: a compile error.
  if (!ParseRuleName(std::string_view(name, N - 1), this)) throw "not a rule name (instr/rules.h)";
}

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
  // Which cut of `prop`: kWorld for a world form; for a mixed form kNodes (its outer Gather)
  // or kDevices (its inner Gather).
  Level cut = Level::kWorld;
};

struct ComputeRule {
  RuleId id;                   // which rule of the node (ShardingRules gives each a distinct id)
  std::vector<Property> pre;   // one per node input, in input order
  Property post;               // the output's property
  Work work = Work::kFull;
  // Gather operands that must be split identically (same atoms, same per-device counts).
  std::vector<SplitUse> split;
  // A Reduce output whose op adds a constant term (a bias) that only one device may add.
  bool bias_once = false;
  // A mesh rule (CombineRules): `outer_id` applied to node pieces over the nodes, `id` within
  // each node; work per device = (outer share if outer_work is proportional) × (inner share if
  // work is). World rules leave mesh false.
  bool mesh = false;
  RuleId outer_id;
  Work outer_work = Work::kFull;
  bool outer_bias_once = false;
};

// Every rule for one node, all-Identity first, then in a fixed order (deterministic). Ops of a
// family shared by several ops (ir::Sharding) get the family's rules from their op table
// entry; the others have their own rules in rules.cc.
std::vector<ComputeRule> ShardingRules(const ir::Graph& g, ir::NodeId node);

// The mesh rule (outer over nodes, inner within each node) of topology spec §3: every operand's
// property is Property::Mesh(outer's, inner's); outer's split uses cut the nodes, inner's the
// devices. Identical rules give the world rule itself. An error when a different pair would
// put some operand at Gather of one dim at both levels (that is a world split: use the world
// rule) — the pairs the planner and the checker speak keep the two cuts apart.
absl::StatusOr<ComputeRule> CombineRules(const ir::Graph& g, ir::NodeId node, const ComputeRule& outer,
                                         const ComputeRule& inner);

// The rule `id` among a node's rules; nullptr when the node has no such rule.
const ComputeRule* FindRule(const std::vector<ComputeRule>& rules, const RuleId& id);
// "replicated, batch0, column, row": a node's rule names, for messages.
std::string RuleNames(const std::vector<ComputeRule>& rules);

}  // namespace hetsynth::instr
