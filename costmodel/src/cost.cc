#include "hetsynth/costmodel/cost.h"

#include <algorithm>
#include <map>

#include "hetsynth/ir/op_table.h"
#include "hetsynth/ir/status.h"

namespace hetsynth::costmodel {

Shares ProgramShares(const instr::Program& p) {
  Shares s;
  for (const instr::SplitGroup& g : p.groups) {
    std::vector<double> row;
    for (int64_t c : g.counts) {
      row.push_back(g.atoms > 0 ? static_cast<double>(c) / static_cast<double>(g.atoms) : 0.0);
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

TermKind CollectiveKind(instr::InstrKind kind, instr::CollImpl impl) {
  using instr::CollImpl;
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
  t.kind = CollectiveKind(in.kind, in.impl);
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

double ComputeTime(const Term& t, const std::vector<double>& shares, const ClusterModel& m) {
  const Cluster& c = m.cluster();
  const int n = c.size();
  double worst = 0;
  for (int i = 0; i < n; ++i) {
    const Device& d = c.devices[static_cast<size_t>(i)];
    const double work = t.kind == TermKind::kComputeFull ? t.coefficient : t.coefficient * shares[static_cast<size_t>(i)];
    worst = std::max(worst, work / (t.memory_bound ? d.memory_bandwidth : d.flops));
  }
  return worst;
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
    return q.kind == instr::PropKind::kGather ? p.GroupOf(q) : -1;
  };
  // A bucket is charged to the placement of the parameter that completes it: the one placed
  // first, whose gradient is ready last.
  std::map<int, int> bucket_at;  // placement instruction → bucket
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
      const std::vector<instr::ComputeRule> rules = instr::ShardingRules(g, in.node);
      const auto it = std::find_if(rules.begin(), rules.end(),
                                   [&](const instr::ComputeRule& r) { return r.id == in.rule; });
      HS_CHECK(it != rules.end(), "a checked program names an unknown rule");
      t = ComputeTerm(g, in.node, *it, m);
      if (!it->split.empty()) t.group = p.GroupOf(it->split.front().prop);
      // The op's output stays on the device until backward.
      pc.memory.push_back({ValueBytes(g, g.node(in.node).output), group_of(in.post[0])});
    } else if (in.kind == instr::InstrKind::kPlaceParameter) {
      pc.memory.push_back({o.parameter_state_factor * ValueBytes(g, in.tensor), group_of(in.post[0])});
      Term update = OptimizerTerm(g, in.tensor, in.post[0].kind == instr::PropKind::kGather, o);
      update.group = group_of(in.post[0]);
      update.instruction = static_cast<int>(i);
      pc.terms.push_back(update);
      if (in.post[0].kind == instr::PropKind::kIdentity && p.num_devices > 1) {
        if (p.buckets.empty()) {
          t = GradientAllReduceTerm(g, in.tensor);
        } else if (const auto b = bucket_at.find(static_cast<int>(i)); b != bucket_at.end()) {
          t = BucketTerm(g, p.buckets[static_cast<size_t>(b->second)]);
        }
      }
    } else if (in.kind == instr::InstrKind::kPlaceInput) {
      pc.memory.push_back({ValueBytes(g, in.tensor), group_of(in.post[0])});
    } else {
      t = CollectiveTerm(g, in);
      // The split whose shares decide the volume: the Gather side of the collective (the
      // all-to-all's source; its result's split is group2).
      const instr::Property& split = in.pre[0].kind == instr::PropKind::kGather ? in.pre[0] : in.post[0];
      t.group = group_of(split);
      if (in.kind == instr::InstrKind::kAllToAll) t.group2 = group_of(in.post[0]);
      // The new copy of an activation stays until backward; a gathered parameter (ZeRO) is
      // transient, freed after use and gathered again for backward.
      const bool param = g.value(in.tensor).kind == ir::ValueKind::kParameter;
      if (in.kind != instr::InstrKind::kSlice && !param) {
        pc.memory.push_back({ValueBytes(g, in.tensor), group_of(in.post[0])});
      }
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
  for (const Term& t : pc.terms) {
    const std::vector<double>& s = t.group >= 0 ? shares[static_cast<size_t>(t.group)] : even;
    const std::vector<double>& s2 = t.group2 >= 0 ? shares[static_cast<size_t>(t.group2)] : s;
    parts.push_back(TermSplit(t, s, s2, m));
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
    for (int i = 0; i < n; ++i) {
      const double share = mt.group >= 0 ? shares[static_cast<size_t>(mt.group)][static_cast<size_t>(i)] : 1.0;
      e.memory_bytes[static_cast<size_t>(i)] += mt.bytes * share;
    }
  }
  return e;
}

}  // namespace hetsynth::costmodel
