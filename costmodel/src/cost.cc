#include "hetsynth/costmodel/cost.h"

#include <algorithm>
#include <map>

#include "hetsynth/ir/op_table.h"
#include "hetsynth/base/status.h"

namespace hetsynth::costmodel {

Shares ProgramShares(const instr::Program& p) {
  Shares s;
  const std::vector<int> node_of = p.NodeOfDevice();
  for (const instr::SplitGroup& g : p.groups) {
    std::vector<double> row;
    auto share = [&](int64_t c) { return g.atoms > 0 ? static_cast<double>(c) / static_cast<double>(g.atoms) : 0.0; };
    if (g.level == instr::Level::kNodes) {
      // Per device: its node's share.
      for (int i = 0; i < p.num_devices; ++i) row.push_back(share(g.counts.at(static_cast<size_t>(node_of[static_cast<size_t>(i)]))));
    } else {
      for (int64_t c : g.counts) row.push_back(share(c));
    }
    s.push_back(std::move(row));
  }
  return s;
}

double ValueBytes(const ir::Graph& g, ir::ValueId v) {
  return kElementBytes * static_cast<double>(ir::NumElements(g.value(v).shape));
}

double NodeComputeBytes(const ir::Graph& g, ir::NodeId node) {
  const ir::Node& n = g.node(node);
  double bytes = ValueBytes(g, n.output);
  for (ir::ValueId v : n.inputs) bytes += ValueBytes(g, v);
  return bytes * 3.0;
}

bool MemoryBound(double flops, double bytes, const Cluster& c) {
  // The same as the ClusterModel overload, without building one (calibration asks often).
  double f = 0, bw = 0;
  for (const Device& d : c.devices) f += d.flops, bw += d.memory_bandwidth;
  return bytes / bw > flops / f;
}

bool ForwardMemoryBound(const ir::Graph& g, ir::NodeId node, const Cluster& c) {
  const ir::Flops f = g.NodeFlops(node);
  return !ir::IsGemmLike(g.node(node).kind) && MemoryBound(f.forward + f.backward, NodeComputeBytes(g, node), c);
}

double ForwardBytes(const ir::Graph& g, ir::NodeId node) { return NodeComputeBytes(g, node) / 3.0; }

double ForwardSeconds(const ir::Graph& g, ir::NodeId node, const Cluster& c, const Device& d) {
  return ForwardMemoryBound(g, node, c) ? ForwardBytes(g, node) / d.ForwardMemoryBandwidth()
                                        : g.NodeFlops(node).forward / d.ForwardFlops();
}

double MeasureShares(ShareMeasure m, int n, const std::vector<double>& shares) {
  const double nm1 = n - 1.0;
  double measure = m == ShareMeasure::kNone ? 1.0 : 0.0;
  for (double s : shares) {
    if (m == ShareMeasure::kMaxShare) measure = std::max(measure, s);
    if (m == ShareMeasure::kGroupedMax) measure = std::max(measure, std::max(1.0 - s, nm1 * s));
  }
  return measure;
}

CollectiveCoefficients CollectiveCost(TermKind kind, int n) {
  const double nm1 = n - 1.0;
  switch (kind) {
    case TermKind::kGatherPadded: return {nm1, 1.0, 1.0, ShareMeasure::kMaxShare};
    case TermKind::kGatherGrouped: return {1.0, static_cast<double>(n), 1.0, ShareMeasure::kGroupedMax};
    case TermKind::kAllToAll: return {1.0, nm1, 1.0, ShareMeasure::kMaxShare};
    case TermKind::kAllReduce: return {1.0, 2 * nm1, 2 * nm1 / n, ShareMeasure::kNone};
    default: return {};
  }
}

double CollectiveSeconds(const CollectiveCoefficients& k, double measure, double alpha, double beta, double bytes) {
  return k.rounds * (k.latencies * alpha + k.volume * beta * bytes * measure);
}

bool MemoryBound(double flops, double bytes, const ClusterModel& m) {
  return bytes / m.total_bandwidth() > flops / m.total_flops();
}

namespace {

// `memory_bound(flops, bytes)` says how the cluster prices a node of that work.
template <typename MemoryBoundFn>
Term MakeComputeTerm(const ir::Graph& g, ir::NodeId node, const instr::ComputeRule& rule, MemoryBoundFn memory_bound) {
  const ir::Node& n = g.node(node);
  const ir::Flops f = g.NodeFlops(node);
  const double bytes = NodeComputeBytes(g, node);
  Term t;
  t.kind = rule.work == instr::Work::kFull ? TermKind::kComputeFull : TermKind::kComputeSplit;
  const double flops = f.forward + f.backward;
  t.memory_bound = !ir::IsGemmLike(n.kind) && memory_bound(flops, bytes);
  t.coefficient = t.memory_bound ? bytes : flops;
  if (ir::IsGemmLike(n.kind)) {
    // Every operand (inputs and output) the rule splits shrinks with the share; the others
    // (replicated, or partial sums of the whole shape) are streamed whole on every device.
    auto add = [&](ir::ValueId v, const instr::Property& q) {
      const bool split = t.kind == TermKind::kComputeSplit &&
                         (q.kind == instr::PropKind::kGather || (q.mixed && q.outer_kind == instr::PropKind::kGather));
      (split ? t.operand_bytes_split : t.operand_bytes_whole) += OperandBytes(g, v);
    };
    for (size_t k = 0; k < n.inputs.size() && k < rule.pre.size(); ++k) add(n.inputs[k], rule.pre[k]);
    add(n.output, rule.post);
  }
  // Forward reads the inputs and writes the output: a third of NodeComputeBytes.
  t.forward_fraction = t.memory_bound ? 1.0 / 3.0 : (flops > 0 ? f.forward / flops : 0.5);
  return t;
}

}  // namespace

Term ComputeTerm(const ir::Graph& g, ir::NodeId node, const instr::ComputeRule& rule, const ClusterModel& m) {
  return MakeComputeTerm(g, node, rule, [&](double f, double b) { return MemoryBound(f, b, m); });
}

Term ComputeTerm(const ir::Graph& g, ir::NodeId node, const instr::ComputeRule& rule, const Cluster& c) {
  return MakeComputeTerm(g, node, rule, [&](double f, double b) { return MemoryBound(f, b, c); });
}

double OperandBytes(const ir::Graph& g, ir::ValueId v) { return 3.0 * ValueBytes(g, v); }

double ComputeSeconds(const Term& t, double share, const Device& d) {
  double s = t.coefficient * share / (t.memory_bound ? d.memory_bandwidth : d.flops);
  if (d.gemm_operand_bandwidth > 0) s += (t.operand_bytes_whole + t.operand_bytes_split * share) / d.gemm_operand_bandwidth;
  return s;
}

bool IsMeshKind(TermKind k) {
  return k >= TermKind::kDevicesGatherPadded && k <= TermKind::kComputeMesh;
}

TermKind CollectiveKind(instr::InstrKind kind, instr::CollImpl impl, instr::Level level) {
  using instr::CollImpl;
  if (level == instr::Level::kDevices) {
    switch (kind) {
      case instr::InstrKind::kAllGather:
      case instr::InstrKind::kReduceScatter:
        return impl == CollImpl::kGrouped ? TermKind::kDevicesGatherGrouped : TermKind::kDevicesGatherPadded;
      case instr::InstrKind::kAllToAll: return TermKind::kDevicesAllToAll;
      case instr::InstrKind::kAllReduce: return TermKind::kDevicesAllReduce;
      default: return TermKind::kFree;
    }
  }
  if (level == instr::Level::kNodes) {
    switch (kind) {
      case instr::InstrKind::kAllGather:
      case instr::InstrKind::kReduceScatter: return TermKind::kNodesGather;
      case instr::InstrKind::kAllToAll: return TermKind::kNodesAllToAll;
      case instr::InstrKind::kAllReduce: return TermKind::kNodesAllReduce;
      default: return TermKind::kFree;
    }
  }
  switch (kind) {
    case instr::InstrKind::kAllGather:
    case instr::InstrKind::kReduceScatter:
      if (impl == CollImpl::kHierarchical) return TermKind::kGatherHierarchical;
      return impl == CollImpl::kGrouped ? TermKind::kGatherGrouped : TermKind::kGatherPadded;
    case instr::InstrKind::kAllToAll: return TermKind::kAllToAll;
    case instr::InstrKind::kAllReduce:
      return impl == CollImpl::kHierarchical ? TermKind::kAllReduceHierarchical : TermKind::kAllReduce;
    default: return TermKind::kFree;
  }
}

Term CollectiveTerm(const ir::Graph& g, const instr::Instruction& in) {
  Term t;
  t.bytes = ValueBytes(g, in.tensor);
  t.times = 2;  // the forward collective and its backward dual
  t.op = in.kind;
  t.kind = CollectiveKind(in.kind, in.impl, in.level);
  if (in.kind == instr::InstrKind::kAllGather && g.value(in.tensor).kind == ir::ValueKind::kParameter) {
    t.role = TermRole::kParameterGather;
  }
  return t;
}

Term GradientAllReduceTerm(const ir::Graph& g, ir::ValueId param, instr::CollImpl impl) {
  Term t;
  t.kind = CollectiveKind(instr::InstrKind::kAllReduce, impl);
  t.role = TermRole::kGradientSync;
  t.op = instr::InstrKind::kAllReduce;
  t.bytes = ValueBytes(g, param);
  t.times = 1;
  return t;
}

Term BucketTerm(const ir::Graph& g, const instr::Bucket& b) {
  Term t = GradientAllReduceTerm(g, b.params.front(), b.impl);
  t.bytes = 0;
  for (ir::ValueId v : b.params) t.bytes += ValueBytes(g, v);
  return t;
}

Term OptimizerTerm(const ir::Graph& g, ir::ValueId param, bool sharded, const CostOptions& o) {
  Term t;
  t.kind = sharded ? TermKind::kComputeSplit : TermKind::kComputeFull;
  t.role = TermRole::kOptimizer;
  t.memory_bound = true;
  t.coefficient = o.optimizer_bytes_factor * ValueBytes(g, param);
  t.forward_fraction = 0;
  return t;
}

namespace {

instr::InstrKind Dual(instr::InstrKind k) {
  if (k == instr::InstrKind::kAllGather) return instr::InstrKind::kReduceScatter;
  if (k == instr::InstrKind::kReduceScatter) return instr::InstrKind::kAllGather;
  return k;
}

// A compute term's seconds on device i; `node_share` per node: only kComputeMesh reads it.
double DeviceTime(const Term& t, const std::vector<double>& shares, const ClusterModel& m,
                  const std::vector<double>* node_share, int i) {
  const Device& d = m.cluster().devices[static_cast<size_t>(i)];
  double share = t.kind == TermKind::kComputeFull ? 1.0 : shares[static_cast<size_t>(i)];
  if (t.kind == TermKind::kComputeMesh) {
    share = t.group >= 0 ? shares[static_cast<size_t>(i)] : 1.0;
    if (t.node_group >= 0 && node_share != nullptr) {
      share *= (*node_share)[static_cast<size_t>(m.mesh().node_of[static_cast<size_t>(i)])];
    }
  }
  return ComputeSeconds(t, share, d);
}

// A compute term's time: its slowest device's.
double ComputeTime(const Term& t, const std::vector<double>& shares, const ClusterModel& m,
                   const std::vector<double>* node_share = nullptr) {
  double worst = 0;
  for (int i = 0; i < m.size(); ++i) worst = std::max(worst, DeviceTime(t, shares, m, node_share, i));
  return worst;
}

// Per node: the share S_j a group gives node j (a world group: summed over its devices; a
// nodes group: its first device's); all 1 for group -1.
std::vector<double> NodeShares(const Mesh& mesh, const Shares& shares, int group, bool world) {
  std::vector<double> out(static_cast<size_t>(std::max(1, mesh.num_nodes())), 1.0);
  if (group < 0) return out;
  const std::vector<double>& s = shares[static_cast<size_t>(group)];
  for (size_t j = 0; j < mesh.nodes.size(); ++j) {
    double sum = 0;
    for (DeviceId i : mesh.nodes[j]) sum += s[static_cast<size_t>(i)];
    out[j] = world ? sum : s[static_cast<size_t>(mesh.nodes[j].front())];
  }
  return out;
}

// A mesh-level term's parts given its node shares and within-node shares (Evaluate derives
// them from the groups).
TermParts MeshTermSplit(const Term& t, const std::vector<double>& shares, const std::vector<double>& node_share,
                        const std::vector<double>& within, const std::vector<double>& node_share2,
                        const ClusterModel& m) {
  if (t.kind == TermKind::kComputeMesh) {
    const double time = ComputeTime(t, shares, m, &node_share);
    const double fwd = t.role == TermRole::kOptimizer ? 0.0 : time * t.forward_fraction;
    return {fwd, time - fwd};
  }
  if (m.size() < 2) return {};
  const double op = m.MeshSeconds(t.kind, t.bytes, node_share, within, node_share2);
  if (t.times == 1) return t.role == TermRole::kGradientSync ? TermParts{0, op} : TermParts{op, 0};
  // The dual: the same bytes over the same links (an all-to-all's node shares swapped).
  const double dual = t.kind == TermKind::kNodesAllToAll ? m.MeshSeconds(t.kind, t.bytes, node_share2, within, node_share)
                                                         : op;
  return {op, (t.times - 1) * dual};
}

}  // namespace

TermParts TermSplit(const Term& t, const std::vector<double>& shares, const std::vector<double>& post,
                    const ClusterModel& m) {
  if (t.kind == TermKind::kFree) return {};
  if (t.kind == TermKind::kComputeFull || t.kind == TermKind::kComputeSplit) {
    const double time = ComputeTime(t, shares, m);
    const double fwd = t.role == TermRole::kOptimizer ? 0.0 : time * t.forward_fraction;
    return {fwd, time - fwd};
  }
  const double op = m.Seconds(t.kind, t.op, t.bytes, shares, post);
  if (t.times == 1) {
    // A gradient synchronization runs once, in backward.
    if (t.role == TermRole::kGradientSync) return {0, op};
    return {op, 0};
  }
  // The dual runs the transpose: an all-to-all's result split becomes its source.
  const double dual = m.Seconds(t.kind, Dual(t.op), t.bytes, post, shares);
  return {op, (t.times - 1) * dual};
}

double TermTime(const Term& t, const std::vector<double>& shares, const std::vector<double>& post,
                const ClusterModel& m) {
  const TermParts p = TermSplit(t, shares, post, m);
  return p.forward + p.backward;
}

double TermTime(const Term& t, const std::vector<double>& shares, const ClusterModel& m) {
  return TermTime(t, shares, shares, m);
}

double TermTime(const Term& t, const std::vector<double>& shares, const Cluster& c) {
  return TermTime(t, shares, shares, ClusterModel(c));
}

ProgramCost DescribeCost(const ir::Graph& g, const instr::Program& p, const Cluster& c, const CostOptions& o) {
  return DescribeCost(g, p, ClusterModel(c), o);
}

ProgramCost DescribeCost(const ir::Graph& g, const instr::Program& p, const ClusterModel& m, const CostOptions& o) {
  ProgramCost pc;
  pc.overlap = p.overlap;
  auto group_of = [&](const instr::Property& q) {
    return q.kind == instr::PropKind::kGather ? p.GroupOf(q, instr::Level::kDevices) : -1;
  };
  // A form's split over the nodes: its outer Gather's group (a world Gather's own group).
  auto node_group_of = [&](const instr::Property& q, int* group, bool* world) {
    *group = -1;
    *world = false;
    if (!q.mixed || q.outer_kind != instr::PropKind::kGather) return;
    *group = p.GroupOf(q, instr::Level::kNodes);
    *world = *group >= 0 && p.groups[static_cast<size_t>(*group)].level == instr::Level::kWorld;
  };
  auto memory = [&](double bytes, const instr::Property& q) {
    MemoryTerm mt{bytes, group_of(q)};
    node_group_of(q, &mt.node_group, &mt.node_group_world);
    return mt;
  };
  // A bucket is charged to the placement of the parameter that completes it: the one placed
  // first, whose gradient is ready last.
  std::map<int, int> bucket_at;  // placement instruction → bucket
  bool world_buckets = false, nodes_buckets = false;
  for (const instr::Bucket& b : p.buckets) (b.kind == instr::Level::kNodes ? nodes_buckets : world_buckets) = true;
  if (p.num_devices > 1) {
    std::map<ir::ValueId, int> placement;
    for (size_t i = 0; i < p.instructions.size(); ++i) {
      if (p.instructions[i].kind == instr::InstrKind::kPlaceParameter) placement[p.instructions[i].tensor] = static_cast<int>(i);
    }
    for (size_t b = 0; b < p.buckets.size(); ++b) bucket_at[placement.at(p.buckets[b].params.back())] = static_cast<int>(b);
  }
  for (size_t i = 0; i < p.instructions.size(); ++i) {
    const instr::Instruction& in = p.instructions[i];
    Term t;
    if (in.kind == instr::InstrKind::kCompute) {
      const absl::StatusOr<instr::ComputeRule> rule = instr::InstructionRule(g, in);
      HS_CHECK(rule.ok(), "a checked program names an unknown rule");
      t = ComputeTerm(g, in.node, *rule, m);
      if (rule->mesh) {
        // Work = inner share (within the node) × outer share (the node's), each when proportional.
        t.kind = TermKind::kComputeMesh;
        for (const instr::SplitUse& u : rule->split) {
          if (u.cut == instr::Level::kDevices && rule->work == instr::Work::kProportional && t.group < 0) {
            t.group = p.GroupOf(u.prop, instr::Level::kDevices);
          }
          if (u.cut == instr::Level::kNodes && rule->outer_work == instr::Work::kProportional && t.node_group < 0) {
            node_group_of(u.prop, &t.node_group, &t.node_group_world);
          }
        }
      } else if (!rule->split.empty()) {
        t.group = p.GroupOf(rule->split.front().prop);
      }
      // The op's output, and what its kernels save for backward (attention's probabilities),
      // stay on the device until backward; the saved state splits as the output does.
      pc.memory.push_back(memory(ValueBytes(g, g.node(in.node).output) + 4.0 * g.NodeSavedElements(in.node), in.post[0]));
    } else if (in.kind == instr::InstrKind::kPlaceParameter) {
      const instr::Property& q = in.post[0];
      pc.memory.push_back(memory(o.parameter_state_factor * ValueBytes(g, in.tensor), q));
      Term update = OptimizerTerm(g, in.tensor, q.kind == instr::PropKind::kGather, o);
      update.group = group_of(q);
      if (q.mixed) {
        update.kind = TermKind::kComputeMesh;
        node_group_of(q, &update.node_group, &update.node_group_world);
      }
      update.instruction = static_cast<int>(i);
      pc.terms.push_back(update);
      const auto bucket = bucket_at.find(static_cast<int>(i));
      if (q == instr::Property::Identity(in.tensor) && p.num_devices > 1) {
        if (!world_buckets) {
          t = GradientAllReduceTerm(g, in.tensor);
        } else if (bucket != bucket_at.end()) {
          t = BucketTerm(g, p.buckets[static_cast<size_t>(bucket->second)]);
        }
      } else if (q.mixed && q.outer_kind == instr::PropKind::kIdentity) {
        // (I, G e) / (I, R): each device's piece all-reduced across nodes (spec §4.5), alone or
        // in a nodes bucket charged where its last gradient is ready.
        if (!nodes_buckets) {
          t = GradientAllReduceTerm(g, in.tensor);
          t.kind = TermKind::kNodesGradientSync;
        } else if (bucket != bucket_at.end()) {
          t = BucketTerm(g, p.buckets[static_cast<size_t>(bucket->second)]);
          t.kind = TermKind::kNodesGradientSync;
        }
      } else if (q.mixed && q.kind == instr::PropKind::kIdentity) {
        // (G d, I): the node piece's gradient all-reduced inside every node.
        t = GradientAllReduceTerm(g, in.tensor);
        t.kind = TermKind::kDevicesAllReduce;
        node_group_of(q, &t.node_group, &t.node_group_world);
      }
    } else if (in.kind == instr::InstrKind::kPlaceInput) {
      pc.memory.push_back(memory(ValueBytes(g, in.tensor), in.post[0]));
    } else {
      t = CollectiveTerm(g, in);
      // The split whose shares decide the volume: the Gather side of the collective (the
      // all-to-all's source; its result's split is group2).
      const bool pre_gather = in.pre[0].kind == instr::PropKind::kGather || in.pre[0].Outer().kind == instr::PropKind::kGather;
      const instr::Property& split = in.level == instr::Level::kDevices
                                         ? (in.pre[0].kind == instr::PropKind::kGather ? in.pre[0] : in.post[0])
                                         : (pre_gather ? in.pre[0] : in.post[0]);
      if (in.level == instr::Level::kWorld) {
        t.group = group_of(split);
        if (in.kind == instr::InstrKind::kAllToAll) t.group2 = group_of(in.post[0]);
      } else if (in.level == instr::Level::kDevices) {
        if (split.kind == instr::PropKind::kGather && !split.mixed) {
          // A world Gather: its node pieces and, within them, the devices' shares s_i / S_j.
          t.group = p.GroupOf(split);
          t.within_from_world = true;
          t.node_group = t.group;
          t.node_group_world = true;
        } else {
          t.group = group_of(split);
          node_group_of(split, &t.node_group, &t.node_group_world);
        }
      } else {
        node_group_of(split, &t.node_group, &t.node_group_world);
        if (in.kind == instr::InstrKind::kAllToAll) node_group_of(in.post[0], &t.node_group2, &t.node_group2_world);
      }
      // The new copy of an activation stays until backward; a gathered parameter (ZeRO) is
      // transient, freed after use and gathered again for backward.
      const bool param = g.value(in.tensor).kind == ir::ValueKind::kParameter;
      if (in.kind != instr::InstrKind::kSlice && !param) pc.memory.push_back(memory(ValueBytes(g, in.tensor), in.post[0]));
    }
    t.instruction = static_cast<int>(i);
    pc.terms.push_back(t);
  }
  return pc;
}

Estimate Evaluate(const ProgramCost& pc, const Shares& shares, const Cluster& c, size_t num_instructions) {
  return Evaluate(pc, shares, ClusterModel(c), num_instructions);
}

Estimate Evaluate(const ProgramCost& pc, const Shares& shares, const ClusterModel& m, size_t num_instructions) {
  Estimate e;
  const int n = m.size();
  e.instruction_compute_s.assign(num_instructions, 0);
  e.instruction_communication_s.assign(num_instructions, 0);
  const std::vector<double> even(static_cast<size_t>(n), 1.0 / n);
  std::vector<TermParts> parts;
  parts.reserve(pc.terms.size());
  double optimizer = 0;
  const Mesh& mesh = m.mesh();
  auto node_shares = [&](int group, bool world) { return NodeShares(mesh, shares, group, world); };
  for (const Term& t : pc.terms) {
    const std::vector<double>& s = t.group >= 0 ? shares[static_cast<size_t>(t.group)] : even;
    const std::vector<double>& s2 = t.group2 >= 0 ? shares[static_cast<size_t>(t.group2)] : s;
    if (IsMeshKind(t.kind)) {
      const std::vector<double> ns = node_shares(t.node_group, t.node_group_world);
      std::vector<double> within;
      if (t.group >= 0) {
        within = s;
        if (t.within_from_world) {
          for (size_t i = 0; i < within.size(); ++i) {
            const double sj = ns[static_cast<size_t>(mesh.node_of[i])];
            within[i] = sj > 0 ? s[i] / sj : 0.0;
          }
        }
      }
      const std::vector<double> ns2 = node_shares(t.node_group2, t.node_group2_world);
      parts.push_back(MeshTermSplit(t, s, ns, within, ns2, m));
    } else {
      parts.push_back(TermSplit(t, s, s2, m));
    }
    const double time = parts.back().forward + parts.back().backward;
    const bool compute = !IsCollective(t.kind);
    (compute ? e.compute_s : e.communication_s) += time;
    if (t.role == TermRole::kOptimizer) optimizer += time;
    if (t.instruction >= 0 && static_cast<size_t>(t.instruction) < num_instructions) {
      auto& per = compute ? e.instruction_compute_s : e.instruction_communication_s;
      per[static_cast<size_t>(t.instruction)] += time;
    }
  }
  if (!pc.overlap) {
    e.step_s = e.compute_s + e.communication_s;
  } else {
    // Two streams. Forward: compute and blocking collectives in order; a ZeRO parameter's
    // gather runs on the communication stream right after the previous one, and its consumer
    // (the next instruction) waits for it. Backward in reverse: compute and the duals of
    // activation collectives block; a gradient synchronization (bucket, or ZeRO gradient
    // reduce-scatter) starts when its gradients are ready and the stream is free. The
    // optimizer waits for both streams.
    double compute = 0, comm = 0;
    for (size_t k = 0; k < pc.terms.size(); ++k) {
      const Term& t = pc.terms[k];
      if (t.role == TermRole::kOptimizer || t.role == TermRole::kGradientSync) continue;
      if (t.role == TermRole::kParameterGather) {
        comm += parts[k].forward;
        compute = std::max(compute, comm);
      } else {
        compute += parts[k].forward;
      }
    }
    for (size_t k = pc.terms.size(); k-- > 0;) {
      const Term& t = pc.terms[k];
      if (t.role == TermRole::kOptimizer) continue;
      if (t.role == TermRole::kParameterGather || t.role == TermRole::kGradientSync) {
        comm = std::max(comm, compute) + parts[k].backward;
      } else {
        compute += parts[k].backward;
      }
    }
    e.step_s = std::max(compute, comm) + optimizer;
  }
  e.exposed_communication_s = std::max(0.0, e.step_s - e.compute_s);
  e.memory_bytes.assign(static_cast<size_t>(n), 0);
  for (const MemoryTerm& mt : pc.memory) {
    const std::vector<double> ns = mt.node_group >= 0 ? node_shares(mt.node_group, mt.node_group_world)
                                                      : std::vector<double>{};
    for (int i = 0; i < n; ++i) {
      double share = mt.group >= 0 ? shares[static_cast<size_t>(mt.group)][static_cast<size_t>(i)] : 1.0;
      if (!ns.empty()) share *= ns[static_cast<size_t>(mesh.node_of[static_cast<size_t>(i)])];
      e.memory_bytes[static_cast<size_t>(i)] += mt.bytes * share;
    }
  }
  return e;
}

std::vector<double> DeviceComputeSeconds(const ProgramCost& pc, const Shares& shares, const ClusterModel& m) {
  std::vector<double> out(static_cast<size_t>(m.size()), 0.0);
  const std::vector<double> even(static_cast<size_t>(m.size()), 1.0 / m.size());
  for (const Term& t : pc.terms) {
    if (t.kind != TermKind::kComputeFull && t.kind != TermKind::kComputeSplit && t.kind != TermKind::kComputeMesh) continue;
    const std::vector<double>& s = t.group >= 0 ? shares[static_cast<size_t>(t.group)] : even;
    // Node shares only where DeviceTime reads them (mesh terms), as Evaluate.
    std::vector<double> ns;
    if (t.kind == TermKind::kComputeMesh) ns = NodeShares(m.mesh(), shares, t.node_group, t.node_group_world);
    for (int i = 0; i < m.size(); ++i) out[static_cast<size_t>(i)] += DeviceTime(t, s, m, ns.empty() ? nullptr : &ns, i);
  }
  return out;
}

}  // namespace hetsynth::costmodel
