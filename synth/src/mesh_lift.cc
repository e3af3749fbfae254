#include "mesh_lift.h"

#include "hetsynth/base/status.h"

namespace hetsynth::synth {

using instr::Instruction;
using instr::InstrKind;
using instr::Placement;
using instr::PropKind;
using instr::Property;

costmodel::Cluster NodeCluster(const costmodel::Cluster& c, int node, double scale) {
  costmodel::Cluster out;
  out.name = StrCat(c.name, "/", c.nodes[static_cast<size_t>(node)].name);
  out.nodes = {c.nodes[static_cast<size_t>(node)]};
  out.nodes[0].intra.bandwidth *= scale;
  out.inter_node = c.inter_node;
  for (const costmodel::Device& d : c.devices) {
    if (d.node != node) continue;
    costmodel::Device x = d;
    x.node = 0;
    x.flops *= scale;
    x.memory_bandwidth *= scale;
    x.gemm_operand_bandwidth *= scale;
    out.devices.push_back(x);
  }
  return out;
}

std::vector<bool> BatchedValues(const ir::Graph& g) {
  std::vector<bool> batched(g.values().size(), false);
  int64_t batch = -1;
  for (ir::ValueId v : g.inputs()) {
    batched[static_cast<size_t>(v)] = true;
    if (batch < 0 && !g.value(v).shape.empty()) batch = g.value(v).shape[0];
  }
  for (size_t k = 0; k < g.nodes().size(); ++k) {  // nodes are in topological order
    const ir::NodeId id = static_cast<ir::NodeId>(k);
    const ir::Node& n = g.node(id);
    for (ir::ValueId x : n.inputs) {
      if (batched[static_cast<size_t>(x)]) batched[static_cast<size_t>(n.output)] = true;
    }
    // A parameter broadcast over the batch (vit's class token expanded to [B, 1, C]): batched
    // when a rule splits its output's dim 0 from whole inputs.
    const ir::Shape& shape = g.value(n.output).shape;
    if (batched[static_cast<size_t>(n.output)] || shape.empty() || shape[0] != batch) continue;
    for (const instr::ComputeRule& r : instr::ShardingRules(g, id)) {
      bool whole = r.post == Property::Gather(n.output, 0);
      for (const Property& q : r.pre) whole = whole && q.kind == PropKind::kIdentity;
      if (whole) batched[static_cast<size_t>(n.output)] = true;
    }
  }
  return batched;
}

namespace {

// The node's batch rule over the nodes: batched inputs split on dim 0, the others whole; the
// output split on dim 0 (the loss: a partial sum). nullopt when the node has none.
std::optional<instr::RuleId> BatchRule(const ir::Graph& g, ir::NodeId k, const std::vector<bool>& batched) {
  const ir::Node& n = g.node(k);
  for (const instr::ComputeRule& r : instr::ShardingRules(g, k)) {
    bool ok = n.output == g.loss() ? r.post == Property::Reduce(n.output) : r.post == Property::Gather(n.output, 0);
    for (size_t i = 0; ok && i < n.inputs.size(); ++i) {
      const ir::ValueId x = n.inputs[i];
      ok = r.pre[i] == (batched[static_cast<size_t>(x)] ? Property::Gather(x, 0) : Property::Identity(x));
    }
    if (ok) return r.id;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<instr::Program> LiftDpNodes(const ir::Graph& g, const instr::Program& inner,
                                           const std::vector<std::vector<int>>& nodes, int num_devices) {
  const std::vector<bool> batched = BatchedValues(g);
  auto outer_of = [&](ir::ValueId v) {
    if (!batched[static_cast<size_t>(v)]) return Placement{PropKind::kIdentity, -1};
    if (v == g.loss()) return Placement{PropKind::kReduce, -1};
    return Placement{PropKind::kGather, 0};
  };
  instr::Program p;
  p.num_devices = num_devices;
  p.nodes = nodes;
  p.overlap = inner.overlap;
  p.ratios = {std::vector<double>(static_cast<size_t>(num_devices), 1.0 / num_devices)};
  for (const Instruction& src : inner.instructions) {
    Instruction in = src;
    in.pre.clear();
    in.post.clear();
    in.segment = 0;
    switch (src.kind) {
      case InstrKind::kCompute: {
        const ir::Node& n = g.node(src.node);
        if (batched[static_cast<size_t>(n.output)]) {
          const std::optional<instr::RuleId> outer = BatchRule(g, src.node, batched);
          if (!outer) {
            // At batch 1 the sharding rules take a dim of size 1 for a broadcast one, so no rule
            // splits it: say so rather than blame the node.
            bool batch1 = !g.inputs().empty();  // every input's dim 0 is 1
            for (ir::ValueId x : g.inputs()) batch1 = batch1 && !g.value(x).shape.empty() && g.value(x).shape[0] == 1;
            return absl::FailedPreconditionError(
                StrCat("node '", n.name, "' has no batch rule over the nodes (batched inputs split on dim 0, the "
                       "output too); data parallelism across nodes (megatron, mesh-level plans) needs one for every node computed from the inputs",
                       batch1 ? " (at batch 1 the rules take a batch dim of size 1 for a broadcast one: use a batch of at "
                                "least 2)"
                              : ""));
          }
          if (*outer != src.rule) in.outer_rule = *outer;
        } else if (src.rule != instr::RuleId(instr::RuleFamily::kReplicated)) {
          in.outer_rule = instr::RuleId(instr::RuleFamily::kReplicated);
        }
        break;
      }
      case InstrKind::kPlaceInput:
      case InstrKind::kPlaceParameter: {
        const Placement o = outer_of(src.tensor);
        const Placement i = src.dim < 0 ? Placement{PropKind::kIdentity, -1} : Placement{PropKind::kGather, src.dim};
        if (o != i) in.outer = o;
        break;
      }
      default:
        // A collective inside the node: at level devices, the tensor's node pieces kept.
        in.level = instr::Level::kDevices;
        in.outer = outer_of(src.tensor);
        if (in.impl == instr::CollImpl::kHierarchical) in.impl = instr::CollImpl::kGrouped;
        break;
    }
    absl::Status st = instr::DeriveTriple(g, in);
    if (!st.ok()) return absl::FailedPreconditionError(StrCat("dp-nodes: ", st.message()));
    p.instructions.push_back(std::move(in));
  }
  return p;
}

}  // namespace hetsynth::synth
