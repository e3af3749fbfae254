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

std::vector<Cut> PieceCuts(const ir::Graph& g, const Program& p, const Property& prop, int rank) {
  std::vector<Cut> cuts;
  auto at = [](const std::vector<int64_t>& len, size_t from, size_t i) {
    return Cut{-1, std::accumulate(len.begin() + static_cast<std::ptrdiff_t>(from), len.begin() + static_cast<std::ptrdiff_t>(i), int64_t{0}), len.at(i)};
  };
  const size_t r = static_cast<size_t>(rank);
  if (!prop.mixed) {
    if (prop.kind != PropKind::kGather) return cuts;
    Cut c = at(p.ShardLengths(g, prop), 0, r);
    c.dim = prop.dim;
    cuts.push_back(c);
    return cuts;
  }
  const Placement o = prop.Outer(), in = prop.Inner();
  const std::vector<int> node_of = p.NodeOfDevice();
  const size_t node = static_cast<size_t>(node_of.at(r));
  if (o.kind == PropKind::kGather) {
    Cut c = at(p.NodeLengths(g, prop), 0, node);
    c.dim = o.dim;
    cuts.push_back(c);
  }
  if (in.kind == PropKind::kGather) {
    // The node's devices are contiguous ranks (a two-level mesh): the device's piece starts
    // after those of the node's devices before it.
    const size_t first = node < p.nodes.size() && !p.nodes[node].empty() ? static_cast<size_t>(p.nodes[node].front()) : 0;
    Cut c = at(p.ShardLengths(g, prop), first, r);
    c.dim = in.dim;
    cuts.push_back(c);
  }
  return cuts;
}

ir::Shape PieceShape(const ir::Graph& g, const Program& p, const Property& prop, int rank) {
  ir::Shape shape = g.value(prop.tensor).shape;
  for (const Cut& c : PieceCuts(g, p, prop, rank)) shape[static_cast<size_t>(c.dim)] = c.len;
  return shape;
}

namespace {

// Whether a property cuts the tensor at some level (world Gather, or a mixed form's Gather).
bool IsCut(const Property& q) { return q.kind == PropKind::kGather || (q.mixed && q.outer_kind == PropKind::kGather); }

// The index of the largest entry among lens[from, to) (the first of equals, so every rank agrees).
size_t LargestIn(const std::vector<int64_t>& lens, size_t from, size_t to) {
  return static_cast<size_t>(std::max_element(lens.begin() + static_cast<std::ptrdiff_t>(from),
                                              lens.begin() + static_cast<std::ptrdiff_t>(to)) - lens.begin());
}

// Whether `rank` adds the constant term of a bias_once rule: one device adds it — the one with
// the largest piece (never an empty one) — or, for a mesh rule, per level: only the node with the
// largest node piece (outer_bias_once) and, within each node that adds it, only the device with
// the largest piece of the node's (bias_once).
absl::StatusOr<bool> AddsBias(const ir::Graph& g, const Program& p, const ComputeRule& rule, int rank) {
  const size_t r = static_cast<size_t>(rank);
  if (!rule.mesh) {
    if (!rule.bias_once) return true;
    const std::vector<int64_t> len = p.ShardLengths(g, rule.split.at(0).prop);
    return LargestIn(len, 0, len.size()) == r;
  }
  auto use = [&](Level cut) -> absl::StatusOr<Property> {
    for (const SplitUse& u : rule.split) {
      if (u.cut == cut) return u.prop;
    }
    return absl::InternalError(StrCat("rule ", RuleName(rule.id), " adds its bias once per ", LevelName(cut),
                                      " level but splits nothing there"));
  };
  const std::vector<int> node_of = p.NodeOfDevice();
  const size_t node = static_cast<size_t>(node_of.at(r));
  bool adds = true;
  if (rule.outer_bias_once) {
    HS_ASSIGN_OR_RETURN(const Property q, use(Level::kNodes));
    const std::vector<int64_t> len = p.NodeLengths(g, q);
    adds = adds && LargestIn(len, 0, len.size()) == node;
  }
  if (rule.bias_once) {
    HS_ASSIGN_OR_RETURN(const Property q, use(Level::kDevices));
    const std::vector<int64_t> len = p.ShardLengths(g, q);
    const std::vector<int>& devices = p.nodes.at(node);
    adds = adds && LargestIn(len, static_cast<size_t>(devices.front()), static_cast<size_t>(devices.back()) + 1) == r;
  }
  return adds;
}

}  // namespace

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
  HS_ASSIGN_OR_RETURN(const ComputeRule rule, InstructionRule(g, in));

  LocalCompute lc;
  lc.rule = rule;
  lc.node = node;
  lc.out_shape = PieceShape(g, p, rule.post, rank);
  lc.num_inputs = node.inputs.size();
  for (const Property& q : rule.pre) {
    if (IsCut(q) && ir::NumElements(PieceShape(g, p, q, rank)) == 0) lc.skip = true;
  }
  if (ir::NumElements(lc.out_shape) == 0) lc.skip = true;
  if (rule.bias_once || rule.outer_bias_once) {
    HS_ASSIGN_OR_RETURN(const bool adds, AddsBias(g, p, rule, rank));
    if (!adds) lc.num_inputs = 2;
  }
  const ir::OpDef& def = ir::DefOf(node.kind);
  if (def.local_attrs != nullptr) def.local_attrs(g.value(node.output).shape, lc.out_shape, lc.node.attrs);
  if (def.locate.operand != ir::kNoOperand) {
    const Property& q = OperandProperty(rule, def.locate.operand);
    std::vector<Cut> cuts = PieceCuts(g, p, q, rank);
    if (def.locate.dim >= 0) {
      // Only a cut of that dim places the piece; a piece cut elsewhere is used as if whole.
      const bool on_dim = std::any_of(cuts.begin(), cuts.end(), [&](const Cut& c) { return c.dim == def.locate.dim; });
      if (!on_dim) cuts.clear();
    }
    if (cuts.size() > 1 && !def.locate.two_cuts) {
      return Bad(StrCat(ir::OpName(node.kind), " '", node.name, "' would run on a piece of ", PropertyString(g, q),
                        ", cut on dims ", cuts[0].dim, " and ", cuts[1].dim,
                        "; its kernel places a piece cut on one dim only (this runtime cannot run that mesh rule)"));
    }
    if (!cuts.empty()) {
      lc.shard = Shard{g.value(q.tensor).shape, cuts[0].dim, cuts[0].start};
      if (cuts.size() > 1) {
        lc.shard->dim2 = cuts[1].dim;
        lc.shard->start2 = cuts[1].start;
      }
    }
  }
  if (def.routes.input != ir::kNoOperand) {
    // An expert split cuts dim 0 of the expert operand (moe_dispatch's output, moe_combine's y).
    const Property& q = OperandProperty(rule, def.routes.expert_operand);
    if (q.mixed && IsCut(q)) {
      return Bad(StrCat(ir::OpName(node.kind), " '", node.name, "' would split experts over a mesh level (",
                        PropertyString(g, q), "); this runtime splits experts over the world only"));
    }
    if (q.kind == PropKind::kGather && q.dim == 0) {
      const std::vector<Cut> cuts = PieceCuts(g, p, q, rank);
      lc.experts = LocalExperts{def.routes.input, cuts.at(0).start, cuts.at(0).len};
    }
  }
  return lc;
}

}  // namespace hetsynth::instr
