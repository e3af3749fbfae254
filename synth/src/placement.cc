// Inference placement: coarsening, the schedule of a placement, and the baselines
// (docs/inference.md). The MILP is in placement_milp.cc.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>
#include <limits>
#include <map>
#include <numeric>
#include <set>

#include "hetsynth/base/memory.h"
#include "hetsynth/base/status.h"
#include "hetsynth/costmodel/cost.h"
#include "hetsynth/ir/op_table.h"
#include "hetsynth/synth/placement.h"

namespace hetsynth::synth {
namespace {



}  // namespace

double PlacementProblem::Transfer(int a, int b, double bytes) const {
  if (a == b) return 0;
  const costmodel::Link& l = device_node[a] == device_node[b] ? node_link[device_node[a]] : inter_node;
  return l.latency + bytes / l.bandwidth;
}

std::vector<ir::NodeId> ForwardNodes(const ir::Graph& g) {
  const ir::NodeId loss = g.loss() == ir::kNoValue ? -1 : g.value(g.loss()).producer;
  std::vector<ir::NodeId> out;
  for (ir::NodeId i = 0; i < static_cast<ir::NodeId>(g.nodes().size()); ++i) {
    if (i != loss) out.push_back(i);
  }
  return out;
}

absl::StatusOr<PlacementProblem> BuildPlacementProblem(const ir::Graph& g, const costmodel::Cluster& c,
                                                       const PlacementOptions& o) {
  if (o.max_coarse_nodes < 1) {
    return absl::InvalidArgumentError(StrCat("max_coarse_nodes ", o.max_coarse_nodes, "; expected >= 1"));
  }
  const std::vector<ir::NodeId> fwd = ForwardNodes(g);
  if (fwd.empty()) return absl::InvalidArgumentError(StrCat("model '", g.name(), "' has no forward ops to place"));
  std::vector<char> is_fwd(g.nodes().size(), 0);
  for (ir::NodeId n : fwd) is_fwd[n] = 1;
  // Distinct forward consumers of each value.
  std::vector<std::set<ir::NodeId>> consumers(g.values().size());
  for (ir::NodeId n : fwd) {
    for (ir::ValueId v : g.node(n).inputs) consumers[v].insert(n);
  }

  // 1. Fusion rule: a memory-bound op joins the group of the producer of one of its activation
  // inputs when that producer is the group's last op and the op is its only consumer.
  std::vector<std::vector<ir::NodeId>> groups;
  std::vector<int> group_of(g.nodes().size(), -1);
  if (!o.groups.empty()) {
    groups = o.groups;
    for (size_t k = 0; k < groups.size(); ++k) {
      for (ir::NodeId n : groups[k]) {
        if (n < 0 || n >= static_cast<ir::NodeId>(g.nodes().size()) || !is_fwd[n] || group_of[n] >= 0) {
          return absl::InvalidArgumentError(StrCat("placement groups: op ", n, " is not a forward op or is in two groups"));
        }
        group_of[n] = static_cast<int>(k);
      }
    }
    for (ir::NodeId n : fwd) {
      if (group_of[n] < 0) return absl::InvalidArgumentError(StrCat("placement groups: op '", g.node(n).name, "' is in no group"));
    }
  }
  for (ir::NodeId n : o.groups.empty() ? fwd : std::vector<ir::NodeId>{}) {
    int join = -1;
    if (!ir::IsGemmLike(g.node(n).kind)) {
      for (ir::ValueId v : g.node(n).inputs) {
        const ir::NodeId p = g.value(v).producer;
        if (p < 0 || !is_fwd[p] || consumers[v].size() != 1) continue;
        const int gp = group_of[p];
        if (groups[gp].back() == p) {
          join = gp;
          break;
        }
      }
    }
    if (join < 0) {
      join = static_cast<int>(groups.size());
      groups.emplace_back();
    }
    groups[join].push_back(n);
    group_of[n] = join;
  }

  auto edges_of = [&](const std::vector<int>& gof) {
    std::map<std::pair<int, int>, std::set<ir::ValueId>> e;
    for (ir::NodeId n : fwd) {
      for (ir::ValueId v : g.node(n).inputs) {
        const ir::NodeId p = g.value(v).producer;
        if (p < 0 || !is_fwd[p] || gof[p] == gof[n]) continue;
        e[{gof[p], gof[n]}].insert(v);
      }
    }
    return e;
  };

  // 2. Pure-chain merging while there are too many groups: A → B where A's only successor is B
  // and B's only predecessor is A, the pair with the smallest combined forward FLOPs first.
  auto group_flops = [&](const std::vector<ir::NodeId>& ops) {
    double f = 0;
    for (ir::NodeId n : ops) f += g.NodeFlops(n).forward;
    return f;
  };
  while (o.groups.empty() && static_cast<int>(groups.size()) > o.max_coarse_nodes) {
    const auto e = edges_of(group_of);
    std::vector<std::set<int>> succ(groups.size()), pred(groups.size());
    for (const auto& [ab, vs] : e) succ[ab.first].insert(ab.second), pred[ab.second].insert(ab.first);
    int best_a = -1, best_b = -1;
    double best = std::numeric_limits<double>::infinity();
    for (const auto& [ab, vs] : e) {
      const auto [a, b] = ab;
      if (succ[a].size() != 1 || pred[b].size() != 1) continue;
      const double f = group_flops(groups[a]) + group_flops(groups[b]);
      if (f < best) best = f, best_a = a, best_b = b;
    }
    if (best_a < 0) break;  // no pure chain left: keep the rest
    for (ir::NodeId n : groups[best_b]) groups[best_a].push_back(n);
    std::sort(groups[best_a].begin(), groups[best_a].end());
    groups.erase(groups.begin() + best_b);
    for (size_t k = 0; k < groups.size(); ++k) {
      for (ir::NodeId n : groups[k]) group_of[n] = static_cast<int>(k);
    }
  }

  // 3. Topological order of the groups (Kahn, smallest first op first).
  const int ng = static_cast<int>(groups.size());
  const auto e = edges_of(group_of);
  std::vector<int> indeg(ng, 0);
  std::vector<std::vector<int>> succ(ng);
  for (const auto& [ab, vs] : e) succ[ab.first].push_back(ab.second), ++indeg[ab.second];
  std::set<std::pair<ir::NodeId, int>> ready;
  for (int k = 0; k < ng; ++k) {
    if (indeg[k] == 0) ready.insert({groups[k].front(), k});
  }
  std::vector<int> pos(ng, -1);
  std::vector<int> order;
  while (!ready.empty()) {
    const int k = ready.begin()->second;
    ready.erase(ready.begin());
    pos[k] = static_cast<int>(order.size());
    order.push_back(k);
    for (int s : succ[k]) {
      if (--indeg[s] == 0) ready.insert({groups[s].front(), s});
    }
  }
  HS_CHECK(static_cast<int>(order.size()) == ng, "the coarsened graph has a cycle");

  PlacementProblem p;
  for (const costmodel::Device& d : c.devices) {
    p.device_names.push_back(d.name);
    p.device_flops.push_back(d.flops);
    p.capacity_bytes.push_back(d.memory_bytes);
    p.device_node.push_back(d.node);
  }
  for (const costmodel::Node& n : c.nodes) p.node_link.push_back(n.intra);
  p.inter_node = c.inter_node;
  for (int k : order) {
    CoarseNode cn;
    cn.ops = groups[k];
    cn.name = g.node(cn.ops.front()).name;
    cn.seconds.assign(c.devices.size(), 0.0);
    std::set<ir::ValueId> weights, acts;
    for (ir::NodeId n : cn.ops) {
      cn.flops += g.NodeFlops(n).forward;
      for (size_t d = 0; d < c.devices.size(); ++d) cn.seconds[d] += costmodel::ForwardSeconds(g, n, c, c.devices[d]);
      acts.insert(g.node(n).output);
      for (ir::ValueId v : g.node(n).inputs) {
        (g.value(v).kind == ir::ValueKind::kParameter ? weights : acts).insert(v);
      }
    }
    for (ir::ValueId v : weights) cn.weight_bytes += costmodel::ValueBytes(g, v);
    for (ir::ValueId v : acts) cn.activation_bytes += costmodel::ValueBytes(g, v);
    p.nodes.push_back(std::move(cn));
  }
  for (const auto& [ab, vs] : e) {
    CoarseEdge ce;
    ce.from = pos[ab.first];
    ce.to = pos[ab.second];
    for (ir::ValueId v : vs) ce.bytes += costmodel::ValueBytes(g, v);
    p.edges.push_back(ce);
  }
  std::sort(p.edges.begin(), p.edges.end(),
            [](const CoarseEdge& a, const CoarseEdge& b) { return std::tie(a.to, a.from) < std::tie(b.to, b.from); });
  return p;
}

Schedule Evaluate(const PlacementProblem& p, const std::vector<int>& device, std::vector<CoarseId> order) {
  const int n = static_cast<int>(p.nodes.size());
  HS_CHECK(static_cast<int>(device.size()) == n, "Evaluate: one device per coarse node");
  if (order.empty()) {
    order.resize(n);
    std::iota(order.begin(), order.end(), 0);
  }
  std::vector<std::vector<const CoarseEdge*>> in(n);
  for (const CoarseEdge& e : p.edges) in[e.to].push_back(&e);
  Schedule s;
  s.device = device;
  s.order = order;
  s.start.assign(n, 0);
  s.finish.assign(n, -1);
  std::vector<double> avail(p.num_devices(), 0);
  for (CoarseId i : order) {
    const int d = device[i];
    HS_CHECK(d >= 0 && d < p.num_devices(), StrCat("Evaluate: device ", d, " of coarse node ", i));
    double t = avail[d];
    for (const CoarseEdge* e : in[i]) {
      HS_CHECK(s.finish[e->from] >= 0, "Evaluate: order is not topological");
      t = std::max(t, s.finish[e->from] + p.Transfer(device[e->from], d, e->bytes));
    }
    s.start[i] = t;
    s.finish[i] = t + p.nodes[i].seconds[d];
    avail[d] = s.finish[i];
    s.latency = std::max(s.latency, s.finish[i]);
  }
  return s;
}

std::vector<double> DeviceMemory(const PlacementProblem& p, const std::vector<int>& device) {
  std::vector<double> m(p.num_devices(), 0);
  for (size_t i = 0; i < p.nodes.size(); ++i) m[device[i]] += p.nodes[i].memory_bytes();
  return m;
}

absl::Status CheckMemory(const PlacementProblem& p, const std::vector<int>& device) {
  const std::vector<double> m = DeviceMemory(p, device);
  for (int d = 0; d < p.num_devices(); ++d) {
    if (m[d] > p.capacity_bytes[d]) {
      return absl::ResourceExhaustedError(StrCat("device '", p.device_names[d], "' would hold ", FormatBytes(m[d]),
                                                 "; its capacity is ", FormatBytes(p.capacity_bytes[d])));
    }
  }
  return absl::OkStatus();
}

namespace {

// Contiguous stages of the topological order: node t goes to stages[k] while the cumulative
// work before its midpoint is below the k-th cumulative share.
std::vector<int> Pipeline(const PlacementProblem& p, const std::vector<double>& shares) {
  const int n = static_cast<int>(p.nodes.size());
  std::vector<double> work(n);
  for (int i = 0; i < n; ++i) work[i] = *std::min_element(p.nodes[i].seconds.begin(), p.nodes[i].seconds.end());
  const double total_work = std::accumulate(work.begin(), work.end(), 0.0);
  const double total_share = std::accumulate(shares.begin(), shares.end(), 0.0);
  std::vector<int> device(n, 0);
  double before = 0;
  for (int i = 0; i < n; ++i) {
    const double mid = (before + work[i] / 2) / (total_work > 0 ? total_work : 1);
    double cum = 0;
    int d = 0;
    for (; d < static_cast<int>(shares.size()) - 1; ++d) {
      cum += shares[d] / total_share;
      if (mid < cum) break;
    }
    device[i] = d;
    before += work[i];
  }
  return device;
}

PlacementMethodResult Result(const PlacementProblem& p, std::string method, const std::vector<int>& device) {
  PlacementMethodResult r;
  r.method = std::move(method);
  r.schedule = Evaluate(p, device);
  r.status = CheckMemory(p, device);
  return r;
}

PlacementMethodResult Heft(const PlacementProblem& p) {
  const int n = static_cast<int>(p.nodes.size()), nd = p.num_devices();
  PlacementMethodResult r;
  r.method = "heft";
  // Mean transfer over ordered device pairs (a == b included, as 0): mean α + bytes × mean 1/β —
  // counted per node (c (c − 1) pairs inside a node of c devices, the rest across nodes), not
  // per pair: a cluster of 2^16 devices would take a minute.
  double mean_alpha = 0, mean_inv_beta = 0;
  std::map<int, double> devices_of_node;
  for (int a = 0; a < nd; ++a) devices_of_node[p.device_node[a]] += 1;
  double inside = 0;
  for (const auto& [node, c] : devices_of_node) {
    const costmodel::Link& l = p.node_link[node];
    mean_alpha += c * (c - 1) * l.latency;
    mean_inv_beta += c * (c - 1) / l.bandwidth;
    inside += c * c;
  }
  const double across = static_cast<double>(nd) * nd - inside;
  mean_alpha += across * p.inter_node.latency;
  mean_inv_beta += across / p.inter_node.bandwidth;
  mean_alpha /= static_cast<double>(nd) * nd;
  mean_inv_beta /= static_cast<double>(nd) * nd;
  std::vector<std::vector<const CoarseEdge*>> out(n), in(n);
  for (const CoarseEdge& e : p.edges) out[e.from].push_back(&e), in[e.to].push_back(&e);
  std::vector<double> rank(n, 0);
  for (int i = n - 1; i >= 0; --i) {
    double tail = 0;
    for (const CoarseEdge* e : out[i]) tail = std::max(tail, mean_alpha + e->bytes * mean_inv_beta + rank[e->to]);
    rank[i] = std::accumulate(p.nodes[i].seconds.begin(), p.nodes[i].seconds.end(), 0.0) / nd + tail;
  }
  // Ready nodes by decreasing upward rank; each to the device that finishes it first and can hold it.
  std::vector<int> missing(n, 0), device(n, -1);
  for (const CoarseEdge& e : p.edges) ++missing[e.to];
  std::set<std::pair<double, int>> ready;
  for (int i = 0; i < n; ++i) {
    if (missing[i] == 0) ready.insert({-rank[i], i});
  }
  std::vector<double> avail(nd, 0), used(nd, 0), finish(n, 0);
  std::vector<CoarseId> order;
  while (!ready.empty()) {
    const int i = ready.begin()->second;
    ready.erase(ready.begin());
    int best = -1;
    double best_f = std::numeric_limits<double>::infinity();
    for (int d = 0; d < nd; ++d) {
      if (used[d] + p.nodes[i].memory_bytes() > p.capacity_bytes[d]) continue;
      double t = avail[d];
      for (const CoarseEdge* e : in[i]) t = std::max(t, finish[e->from] + p.Transfer(device[e->from], d, e->bytes));
      const double f = t + p.nodes[i].seconds[d];
      if (f < best_f) best_f = f, best = d;
    }
    if (best < 0) {
      r.status = absl::ResourceExhaustedError(StrCat("heft: no device has room left for coarse node '",
                                                     p.nodes[i].name, "' (", FormatBytes(p.nodes[i].memory_bytes()), ")"));
      r.schedule = Schedule{};
      return r;
    }
    device[i] = best;
    finish[i] = best_f;
    avail[best] = best_f;
    used[best] += p.nodes[i].memory_bytes();
    order.push_back(i);
    for (const CoarseEdge* e : out[i]) {
      if (--missing[e->to] == 0) ready.insert({-rank[e->to], e->to});
    }
  }
  r.schedule = Evaluate(p, device, order);
  r.status = CheckMemory(p, device);
  return r;
}

}  // namespace

std::vector<PlacementMethodResult> PlacementBaselines(const PlacementProblem& p) {
  const int n = static_cast<int>(p.nodes.size()), nd = p.num_devices();
  std::vector<PlacementMethodResult> out;
  // Fastest single device that holds the whole model.
  {
    PlacementMethodResult best;
    best.method = "single";
    double need = 0;
    for (const CoarseNode& c : p.nodes) need += c.memory_bytes();
    const double largest = *std::max_element(p.capacity_bytes.begin(), p.capacity_bytes.end());
    best.status = absl::ResourceExhaustedError(StrCat("single: no device holds the whole model (", FormatBytes(need),
                                                      "; the largest device has ", FormatBytes(largest), ")"));
    for (int d = 0; d < nd; ++d) {
      PlacementMethodResult r = Result(p, "single", std::vector<int>(n, d));
      if (r.status.ok() && (!best.status.ok() || r.schedule.latency < best.schedule.latency)) best = std::move(r);
    }
    out.push_back(std::move(best));
  }
  // Pipeline by count over the devices in rank order (at most one stage per coarse node).
  out.push_back(Result(p, "even", Pipeline(p, std::vector<double>(std::min(n, nd), 1.0))));
  // Pipeline in proportion to FLOP/s over the devices in rank order.
  out.push_back(Result(p, "speed", Pipeline(p, p.device_flops)));
  out.push_back(Heft(p));
  for (PlacementMethodResult& r : out) {
    if (r.status.ok()) continue;
    r.status = absl::ResourceExhaustedError(StrCat(r.method == "single" || r.method == "heft" ? "" : r.method + ": ",
                                                         r.status.message()));
  }
  return out;
}

}  // namespace hetsynth::synth
