#include "hetsynth/instr/local_compute.h"

#include <algorithm>
#include <numeric>

#include "hetsynth/ir/op_table.h"
#include "hetsynth/base/status.h"

namespace hetsynth::instr {
namespace {

absl::Status Bad(const std::string& m) { return absl::InvalidArgumentError(m); }

// The property a rule gives an operand (kOutputOperand or an input index).
const Property& OperandProperty(const ComputeRule& r, int operand) {
  return operand == ir::kOutputOperand ? r.post : r.pre.at(static_cast<size_t>(operand));
}

}  // namespace

ir::Shape PieceShape(const ir::Graph& g, const Program& p, const Property& prop, int rank) {
  ir::Shape shape = g.value(prop.tensor).shape;
  if (prop.kind == PropKind::kGather) {
    shape[static_cast<size_t>(prop.dim)] = p.ShardLengths(g, prop).at(static_cast<size_t>(rank));
  }
  return shape;
}

absl::StatusOr<LocalCompute> LocalComputeOf(const ir::Graph& g, const Program& p, size_t instruction, int rank) {
  if (instruction >= p.instructions.size()) {
    return Bad(StrCat("instruction ", instruction, " does not exist; the program has ", p.instructions.size(),
                      " instructions"));
  }
  const Instruction& in = p.instructions[instruction];
  if (in.kind != InstrKind::kCompute) {
    return Bad(StrCat("instruction ", instruction, " is ", InstrKindName(in.kind), "; expected a compute instruction"));
  }
  if (rank < 0 || rank >= p.num_devices) {
    return Bad(StrCat("rank ", rank, " is out of range; expected 0 <= rank < ", p.num_devices));
  }
  const ir::Node& node = g.node(in.node);
  const std::vector<ComputeRule> rules = ShardingRules(g, in.node);
  const ComputeRule* rule = FindRule(rules, in.rule);
  if (rule == nullptr) return Bad(StrCat("node '", node.name, "' has no rule '", in.rule, "'"));

  LocalCompute lc;
  lc.rule = *rule;
  lc.node = node;
  lc.out_shape = PieceShape(g, p, rule->post, rank);
  lc.num_inputs = node.inputs.size();
  for (const Property& q : rule->pre) {
    if (q.kind == PropKind::kGather && ir::NumElements(PieceShape(g, p, q, rank)) == 0) lc.skip = true;
  }
  if (ir::NumElements(lc.out_shape) == 0) lc.skip = true;
  // Where the piece of a split starts on this rank.
  auto start = [&](const Property& q) {
    const std::vector<int64_t> len = p.ShardLengths(g, q);
    return std::accumulate(len.begin(), len.begin() + rank, int64_t{0});
  };
  if (rule->bias_once) {
    // One device adds the bias: the one with the largest piece (never an empty one; the first
    // of equals, so every rank agrees).
    const std::vector<int64_t> len = p.ShardLengths(g, rule->split.at(0).prop);
    const int owner = static_cast<int>(std::max_element(len.begin(), len.end()) - len.begin());
    if (owner != rank) lc.num_inputs = 2;
  }
  const ir::OpDef& def = ir::DefOf(node.kind);
  if (def.local_attrs != nullptr) def.local_attrs(g.value(node.output).shape, lc.out_shape, lc.node.attrs);
  if (def.locate.operand != ir::kNoOperand) {
    const Property& q = OperandProperty(*rule, def.locate.operand);
    if (q.kind == PropKind::kGather && (def.locate.dim < 0 || q.dim == def.locate.dim)) {
      lc.shard = Shard{g.value(q.tensor).shape, q.dim, start(q)};
    }
  }
  if (def.routes.input != ir::kNoOperand) {
    // An expert split cuts dim 0 of the expert operand (moe_dispatch's output, moe_combine's y).
    const Property& q = OperandProperty(*rule, def.routes.expert_operand);
    if (q.kind == PropKind::kGather && q.dim == 0) {
      lc.experts = LocalExperts{def.routes.input, start(q), p.ShardLengths(g, q).at(static_cast<size_t>(rank))};
    }
  }
  return lc;
}

}  // namespace hetsynth::instr
