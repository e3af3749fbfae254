#include "hetsynth/costmodel/cost.h"

#include <algorithm>

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

Term ComputeTerm(const ir::Graph& g, ir::NodeId node, const instr::ComputeRule& rule, const Cluster& c) {
  const ir::Node& n = g.node(node);
  const ir::Flops f = g.NodeFlops(node);
  const double bytes = NodeComputeBytes(g, node);
  Term t;
  t.kind = rule.work == instr::Work::kFull ? TermKind::kComputeFull : TermKind::kComputeSplit;
  const double flops = f.forward + f.backward;
  t.memory_bound = !ir::IsGemmLike(n.kind) && MemoryBound(flops, bytes, c);
  t.coefficient = t.memory_bound ? bytes : flops;
  return t;
}

Term CollectiveTerm(const ir::Graph& g, const instr::Instruction& in) {
  Term t;
  t.bytes = ValueBytes(g, in.tensor);
  t.times = 2;  // the forward collective and its backward dual move the same bytes
  switch (in.kind) {
    case instr::InstrKind::kAllGather:
    case instr::InstrKind::kReduceScatter:
      t.kind = in.impl == instr::CollImpl::kGrouped ? TermKind::kGatherGrouped : TermKind::kGatherPadded;
      break;
    case instr::InstrKind::kAllToAll: t.kind = TermKind::kAllToAll; break;
    case instr::InstrKind::kAllReduce: t.kind = TermKind::kAllReduce; break;
    default: t.kind = TermKind::kFree; break;
  }
  return t;
}

Term GradientAllReduceTerm(const ir::Graph& g, ir::ValueId param) {
  Term t;
  t.kind = TermKind::kAllReduce;
  t.bytes = ValueBytes(g, param);
  t.times = 1;
  return t;
}

Term OptimizerTerm(const ir::Graph& g, ir::ValueId param, bool sharded, const CostOptions& o) {
  Term t;
  t.kind = sharded ? TermKind::kComputeSplit : TermKind::kComputeFull;
  t.memory_bound = true;
  t.coefficient = o.optimizer_bytes_factor * ValueBytes(g, param);
  return t;
}

double TermTime(const Term& t, const std::vector<double>& shares, const Cluster& c) {
  const int n = c.size();
  auto speed = [&](int i) {
    const Device& d = c.devices[static_cast<size_t>(i)];
    return t.memory_bound ? d.memory_bandwidth : d.flops;
  };
  switch (t.kind) {
    case TermKind::kFree: return 0;
    case TermKind::kComputeFull: {
      double worst = 0;
      for (int i = 0; i < n; ++i) worst = std::max(worst, t.coefficient / speed(i));
      return worst;
    }
    case TermKind::kComputeSplit: {
      double worst = 0;
      for (int i = 0; i < n; ++i) {
        worst = std::max(worst, t.coefficient * shares[static_cast<size_t>(i)] / speed(i));
      }
      return worst;
    }
    default: break;
  }
  if (n <= 1) return 0;
  const Link link = c.WorldLink();
  const CollectiveCoefficients k = CollectiveCost(t.kind, n);
  const double once = CollectiveSeconds(k, MeasureShares(k.measure, n, shares), link.latency, 1.0 / link.bandwidth, t.bytes);
  return t.times * once;
}

ProgramCost DescribeCost(const ir::Graph& g, const instr::Program& p, const Cluster& c, const CostOptions& o) {
  ProgramCost pc;
  auto group_of = [&](const instr::Property& q) {
    return q.kind == instr::PropKind::kGather ? p.GroupOf(q) : -1;
  };
  for (size_t i = 0; i < p.instructions.size(); ++i) {
    const instr::Instruction& in = p.instructions[i];
    Term t;
    if (in.kind == instr::InstrKind::kCompute) {
      const std::vector<instr::ComputeRule> rules = instr::ShardingRules(g, in.node);
      const auto it = std::find_if(rules.begin(), rules.end(),
                                   [&](const instr::ComputeRule& r) { return r.id == in.rule; });
      HS_CHECK(it != rules.end(), "a checked program names an unknown rule");
      t = ComputeTerm(g, in.node, *it, c);
      if (!it->split.empty()) t.group = p.GroupOf(it->split.front().prop);
      // The op's output stays on the device until backward.
      pc.memory.push_back({ValueBytes(g, g.node(in.node).output), group_of(in.post[0])});
    } else if (in.kind == instr::InstrKind::kPlaceParameter) {
      pc.memory.push_back({o.parameter_state_factor * ValueBytes(g, in.tensor), group_of(in.post[0])});
      if (in.post[0].kind == instr::PropKind::kIdentity && p.num_devices > 1) {
        t = GradientAllReduceTerm(g, in.tensor);
      }
      Term update = OptimizerTerm(g, in.tensor, in.post[0].kind == instr::PropKind::kGather, o);
      update.group = group_of(in.post[0]);
      update.instruction = static_cast<int>(i);
      pc.terms.push_back(update);
    } else if (in.kind == instr::InstrKind::kPlaceInput) {
      pc.memory.push_back({ValueBytes(g, in.tensor), group_of(in.post[0])});
    } else {
      t = CollectiveTerm(g, in);
      // The split whose shares decide the volume: the Gather side of the collective.
      const instr::Property& split = in.pre[0].kind == instr::PropKind::kGather ? in.pre[0] : in.post[0];
      t.group = group_of(split);
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
  Estimate e;
  const int n = c.size();
  e.instruction_compute_s.assign(num_instructions, 0);
  e.instruction_communication_s.assign(num_instructions, 0);
  const std::vector<double> even(static_cast<size_t>(n), 1.0 / n);
  for (const Term& t : pc.terms) {
    const std::vector<double>& s = t.group >= 0 ? shares[static_cast<size_t>(t.group)] : even;
    const double time = TermTime(t, s, c);
    const bool compute = t.kind == TermKind::kComputeFull || t.kind == TermKind::kComputeSplit;
    (compute ? e.compute_s : e.communication_s) += time;
    if (t.instruction >= 0 && static_cast<size_t>(t.instruction) < num_instructions) {
      auto& per = compute ? e.instruction_compute_s : e.instruction_communication_s;
      per[static_cast<size_t>(t.instruction)] += time;
    }
  }
  e.step_s = e.compute_s + e.communication_s;
  e.memory_bytes.assign(static_cast<size_t>(n), 0);
  for (const MemoryTerm& m : pc.memory) {
    for (int i = 0; i < n; ++i) {
      const double share = m.group >= 0 ? shares[static_cast<size_t>(m.group)][static_cast<size_t>(i)] : 1.0;
      e.memory_bytes[static_cast<size_t>(i)] += m.bytes * share;
    }
  }
  return e;
}

}  // namespace hetsynth::costmodel
