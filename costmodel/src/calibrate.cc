#include "hetsynth/costmodel/calibrate.h"

#include <algorithm>
#include <cmath>

#include "hetsynth/instr/rules.h"
#include "hetsynth/base/median.h"
#include "hetsynth/base/status.h"

namespace hetsynth::costmodel {
KernelRates RatesOnCluster(const ir::Graph& g, const KernelTimes& t, const Cluster& c, const CostOptions& o) {
  const size_t num_nodes = g.nodes().size();
  HS_CHECK(t.seconds.size() == num_nodes && t.backward.size() == num_nodes, "kernel times need one entry per node");
  KernelRates h;
  h.rounds = 1;
  h.memory_bound.assign(num_nodes, false);
  double all_flops = 0, all_bytes = 0, all_s = 0;
  for (size_t n = 0; n < num_nodes; ++n) {
    const ir::NodeId id = static_cast<ir::NodeId>(n);
    // The replicated rule: one device runs the whole node, as it was timed.
    const Term term = ComputeTerm(g, id, instr::ShardingRules(g, id)[0], c);
    h.memory_bound[n] = term.memory_bound;
    if (!t.backward[n]) {
      ++h.skipped;
      continue;
    }
    const ir::Flops f = g.NodeFlops(id);
    all_flops += f.forward + f.backward, all_bytes += NodeComputeBytes(g, id), all_s += t.seconds[n];
    if (term.memory_bound) {
      h.bytes += term.coefficient, h.memory_s += t.seconds[n], ++h.memory_nodes;
    } else {
      // With an operand rate, the operands' streaming is priced apart (ComputeSeconds); what
      // is left is the FLOPs' time (at least a quarter of the node's: a rate off for one node
      // must not make its FLOPs free).
      double operand_s = 0;
      if (t.operand_bytes_per_s > 0) {
        operand_s = std::min(0.75 * t.seconds[n], (term.operand_bytes_whole + term.operand_bytes_split) / t.operand_bytes_per_s);
      }
      h.flops += term.coefficient, h.compute_s += t.seconds[n] - operand_s, ++h.compute_nodes;
      h.operand_s += operand_s;
    }
  }
  // The optimizer update is memory-bound work: OptimizerTerm charges optimizer_bytes_factor ×
  // the bytes of every parameter.
  double param_bytes = 0;
  for (ir::ValueId p : g.parameters()) param_bytes += ValueBytes(g, p);
  if (t.optimizer_s > 0) h.bytes += o.optimizer_bytes_factor * param_bytes, h.memory_s += t.optimizer_s;
  h.operand_bytes_per_s = t.operand_bytes_per_s;
  h.flops_per_s = h.compute_s > 0 && h.flops > 0 ? h.flops / h.compute_s : 0;
  h.bytes_per_s = h.memory_s > 0 && h.bytes > 0 ? h.bytes / h.memory_s : 0;
  if (h.flops_per_s <= 0 && all_s > 0) h.flops_per_s = all_flops / all_s, h.flops_fallback = true;
  if (h.bytes_per_s <= 0 && all_s > 0) h.bytes_per_s = all_bytes / all_s, h.bandwidth_fallback = true;
  return h;
}

absl::StatusOr<OperandFit> FitOperandBandwidth(const ir::Graph& g, const std::vector<double>& large_s,
                                               const std::vector<double>& small_s, double rows_ratio) {
  const size_t num_nodes = g.nodes().size();
  if (large_s.size() != num_nodes || small_s.size() != num_nodes) {
    return absl::InvalidArgumentError(StrCat("operand fit: ", large_s.size(), " and ", small_s.size(), " times for graph '",
                                             g.name(), "' of ", num_nodes, " nodes; expected one per node"));
  }
  if (!(rows_ratio > 0 && rows_ratio < 1)) {
    return absl::InvalidArgumentError(StrCat("operand fit: rows ratio ", rows_ratio, "; expected a number in (0, 1)"));
  }
  OperandFit fit;
  for (size_t n = 0; n < num_nodes; ++n) {
    if (!(large_s[n] > 0 && small_s[n] > 0)) continue;
    const ir::Node& node = g.nodes()[n];
    double bytes = 0;
    for (ir::ValueId v : node.inputs) {
      if (g.value(v).kind == ir::ValueKind::kParameter) bytes += OperandBytes(g, v);
    }
    if (bytes <= 0) continue;
    const double x = (large_s[n] - small_s[n]) / (1 - rows_ratio);
    fit.fixed_s += large_s[n] - x;
    fit.node_s += large_s[n];
    fit.bytes += bytes;
    ++fit.nodes;
  }
  if (fit.nodes > 0 && fit.node_s >= kMinOperandNodeSeconds && fit.fixed_s > kMinOperandShare * fit.node_s &&
      fit.fixed_s <= kMaxOperandShare * fit.node_s) {
    fit.bytes_per_s = fit.bytes / fit.fixed_s;
  }
  return fit;
}

Cluster EmulatedCluster(const EmulationTarget& t, double flops, double memory_bandwidth, const Link& link,
                        double operand_bandwidth) {
  Cluster c;
  if (!t.like) {
    c.name = t.base;
    c.nodes.push_back({"n0", link});
    for (int i = 0; i < t.ranks; ++i) {
      c.devices.push_back({StrCat(t.base, i), t.base, 0, flops, t.memory_per_device, memory_bandwidth});
      c.devices.back().gemm_operand_bandwidth = operand_bandwidth;
    }
  } else {
    c = *t.like;
    c.name = t.like->name + "-emulated";
    c.collectives.clear();
    double max_flops = 0;
    for (const Device& d : t.like->devices) max_flops = std::max(max_flops, d.flops);
    for (Device& d : c.devices) {
      const double r = d.flops / max_flops;
      d.flops = flops * r;
      d.memory_bandwidth = memory_bandwidth * r;
      d.gemm_operand_bandwidth = operand_bandwidth * r;
    }
    for (Node& n : c.nodes) n.intra = link;
  }
  c.inter_node = link;
  return c;
}

absl::StatusOr<ForwardRates> ForwardRatesOnCluster(const ir::Graph& g, const std::vector<double>& forward_seconds,
                                                   const Cluster& c) {
  const size_t num_nodes = g.nodes().size();
  if (forward_seconds.size() != num_nodes) {
    return absl::InvalidArgumentError(StrCat("forward times of graph '", g.name(), "': ", forward_seconds.size(),
                                             " for ", num_nodes, " nodes; expected one per node"));
  }
  const ir::NodeId loss = g.loss() == ir::kNoValue ? -1 : g.value(g.loss()).producer;
  double flops = 0, flops_s = 0, bytes = 0, bytes_s = 0;
  ForwardRates r;
  for (size_t n = 0; n < num_nodes; ++n) {
    const ir::NodeId id = static_cast<ir::NodeId>(n);
    const double s = forward_seconds[n];
    if (id == loss || !(s > 0) || !std::isfinite(s)) continue;
    if (ForwardMemoryBound(g, id, c)) {
      bytes += ForwardBytes(g, id), bytes_s += s, ++r.memory_nodes;
    } else {
      flops += g.NodeFlops(id).forward, flops_s += s, ++r.compute_nodes;
    }
  }
  r.flops_per_s = flops > 0 && flops_s > 0 ? flops / flops_s : 0;
  r.bytes_per_s = bytes > 0 && bytes_s > 0 ? bytes / bytes_s : 0;
  return r;
}

void SetForwardRates(Cluster& c, const ForwardRates& r, double host_flops, double host_bytes_per_s) {
  for (Device& d : c.devices) {
    d.forward_flops = r.flops_per_s > 0 && host_flops > 0 ? r.flops_per_s * d.flops / host_flops : 0;
    d.forward_memory_bandwidth =
        r.bytes_per_s > 0 && host_bytes_per_s > 0 ? r.bytes_per_s * d.memory_bandwidth / host_bytes_per_s : 0;
  }
}

absl::StatusOr<KernelRates> CalibrateRates(const ir::Graph& g, const KernelTimes& t, const EmulationTarget& target,
                                           const CostOptions& o) {
  const size_t num_nodes = g.nodes().size();
  if (t.seconds.size() != num_nodes || t.backward.size() != num_nodes) {
    return absl::InvalidArgumentError(StrCat("kernel times of graph '", g.name(), "': ", t.seconds.size(), " times and ",
                                             t.backward.size(), " backward flags for ", num_nodes,
                                             " nodes; expected one of each per node"));
  }
  double total_s = 0;
  for (double s : t.seconds) total_s += s;
  if (!(total_s > 0) || !std::isfinite(total_s)) {
    return absl::InvalidArgumentError(StrCat("kernel times of graph '", g.name(), "': they add up to ", total_s,
                                             " s; expected a positive, finite time"));
  }
  if (!target.like && target.ranks < 1) {
    return absl::InvalidArgumentError(StrCat("emulation target: ranks ", target.ranks,
                                             " without a cluster to emulate; expected at least 1"));
  }
  KernelRates rates;
  {
    double flops = 0, bytes = 0;
    for (size_t n = 0; n < num_nodes; ++n) {
      const ir::Flops f = g.NodeFlops(static_cast<ir::NodeId>(n));
      flops += f.forward + f.backward, bytes += NodeComputeBytes(g, static_cast<ir::NodeId>(n));
    }
    rates.flops_per_s = flops > 0 ? flops / total_s : 1.0;
    rates.bytes_per_s = bytes > 0 ? bytes / total_s : 1.0;
  }
  const Link provisional{1e9, 0};  // classification reads only the devices
  std::vector<bool> previous;
  int rounds = 0;
  bool stable = false;
  while (rounds < kMaxCalibrationRounds && !stable) {
    ++rounds;
    const Cluster c = EmulatedCluster(target, rates.flops_per_s, rates.bytes_per_s, provisional);
    rates = RatesOnCluster(g, t, c, o);
    stable = rates.memory_bound == previous;
    previous = rates.memory_bound;
  }
  rates.rounds = rounds;
  rates.stable = stable;
  return rates;
}

LinkSample MakeLinkSample(TermKind kind, const std::vector<int64_t>& lengths, double seconds) {
  const int n = static_cast<int>(lengths.size());
  int64_t total = 0;
  for (int64_t len : lengths) total += len;
  HS_CHECK(n >= 2 && total > 0, StrCat("a collective sample needs at least 2 devices and 1 element; got ", n,
                                       " devices and ", total, " elements"));
  std::vector<double> shares;
  for (int64_t len : lengths) shares.push_back(static_cast<double>(len) / static_cast<double>(total));
  const CollectiveCoefficients k = CollectiveCost(kind, n);
  HS_CHECK(k.rounds > 0, "MakeLinkSample needs a collective kind");
  LinkSample s;
  s.bytes = kElementBytes * static_cast<double>(total);
  s.seconds = std::max(seconds, 1e-9);
  s.latencies = k.rounds * k.latencies;
  s.volume = k.rounds * k.volume * MeasureShares(k.measure, n, shares) * s.bytes;
  return s;
}

LinkFit FitLink(const std::vector<LinkSample>& samples) {
  LinkFit f;
  std::vector<double> latency;
  for (const LinkSample& c : samples) {
    if (c.bytes <= kAlphaMaxBytes && c.latencies > 0) latency.push_back(c.seconds / c.latencies);
  }
  f.alpha = latency.empty() ? 0 : Median(latency);
  double bb = 0, bt = 0;
  for (int pass = 0; pass < 2 && bb == 0; ++pass) {
    for (const LinkSample& c : samples) {
      if (pass == 0 && c.bytes < kBetaMinBytes) continue;
      const double rest = std::max(0.0, c.seconds - c.latencies * f.alpha);
      bb += c.volume * c.volume, bt += c.volume * rest;
    }
  }
  f.beta = bb > 0 && bt > 0 ? bt / bb : 1e-12;
  double e = 0;
  for (const LinkSample& c : samples) {
    e += std::pow((c.latencies * f.alpha + c.volume * f.beta - c.seconds) / c.seconds, 2);
  }
  f.rms_relative = samples.empty() ? 0 : std::sqrt(e / static_cast<double>(samples.size()));
  return f;
}

}  // namespace hetsynth::costmodel
