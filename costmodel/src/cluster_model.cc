#include "hetsynth/costmodel/cluster_model.h"

#include <algorithm>

#include "hetsynth/base/status.h"

namespace hetsynth::costmodel {
namespace {

int TableIndex(instr::InstrKind op) {
  switch (op) {
    case instr::InstrKind::kAllGather: return 0;
    case instr::InstrKind::kReduceScatter: return 1;
    case instr::InstrKind::kAllReduce: return 2;
    case instr::InstrKind::kAllToAll: return 3;
    default: return -1;
  }
}

const char* TableOp(int index) {
  static const char* const kOps[] = {"all_gather", "reduce_scatter", "all_reduce", "all_to_all"};
  return kOps[index];
}

double PieceSeconds(const PricePiece& p, double bytes, const std::vector<double>& shares,
                    const std::vector<double>& post, const Mesh& mesh) {
  if (p.exchange_node >= 0) {
    double s = 0, s2 = 0;
    for (DeviceId i : mesh.nodes[static_cast<size_t>(p.exchange_node)]) {
      s += shares[static_cast<size_t>(i)];
      s2 += post[static_cast<size_t>(i)];
    }
    return p.latency + bytes * p.exchange * std::max(s * (1 - s2), s2 * (1 - s));
  }
  double per_byte = p.per_byte;
  for (const auto& [i, coefficient] : p.shares) per_byte += coefficient * shares[static_cast<size_t>(i)];
  return p.latency + bytes * per_byte;
}

}  // namespace

bool IsCollective(TermKind k) {
  return k != TermKind::kComputeSplit && k != TermKind::kComputeFull && k != TermKind::kComputeMesh &&
         k != TermKind::kFree;
}

double ClusterModel::MeshSeconds(TermKind kind, double bytes, const std::vector<double>& node_share,
                                 const std::vector<double>& within, const std::vector<double>& node_share2) const {
  if (!mesh_.two_level) return 0;
  const Cluster& c = *c_;
  const int num_nodes = mesh_.num_nodes();
  const double nn = num_nodes, alpha_n = c.inter_node.latency, beta_n = 1.0 / c.inter_node.bandwidth;
  // §4.1: today's formulas over node j's intra link with B_j = bytes · node_share[j], every node at
  // once: the slowest node.
  auto per_node = [&](auto formula) {
    double worst = 0;
    for (int j = 0; j < num_nodes; ++j) {
      const std::vector<DeviceId>& devs = mesh_.nodes[static_cast<size_t>(j)];
      const double k = static_cast<double>(devs.size());
      if (k < 2) continue;
      const Link& l = c.nodes[static_cast<size_t>(j)].intra;
      double max_q = 0, grouped = 0;
      for (DeviceId i : devs) {
        const double q = within.empty() ? 1.0 / k : within[static_cast<size_t>(i)];
        max_q = std::max(max_q, q);
        grouped = std::max(grouped, std::max(1 - q, (k - 1) * q));
      }
      worst = std::max(worst, formula(k, l.latency, 1.0 / l.bandwidth, bytes * node_share[static_cast<size_t>(j)],
                                      max_q, grouped, j));
    }
    return worst;
  };
  switch (kind) {
    case TermKind::kDevicesGatherPadded:
      return per_node([](double k, double a, double b, double bj, double mq, double, int) { return (k - 1) * (a + b * bj * mq); });
    case TermKind::kDevicesGatherGrouped:
      return per_node([](double k, double a, double b, double bj, double, double gm, int) { return k * a + b * bj * gm; });
    case TermKind::kDevicesAllReduce:
      return per_node([](double k, double a, double b, double bj, double, double, int) {
        return 2 * (k - 1) * a + 2 * (k - 1) / k * b * bj;
      });
    case TermKind::kDevicesAllToAll:
      return per_node([](double k, double a, double b, double bj, double mq, double, int) { return (k - 1) * a + b * bj * mq; });
    case TermKind::kNodesGather: {
      // §4.4: every node's piece to every other node (each device of a node carrying 1/k_j of it),
      // then an intra all-gather of what arrived.
      double net = 0;
      for (int j = 0; j < num_nodes; ++j) {
        const double sj = node_share[static_cast<size_t>(j)];
        net = std::max(net, std::max(sj * (nn - 1), 1 - sj));
      }
      const double intra = per_node([&](double k, double a, double b, double, double, double, int j) {
        return (k - 1) * a + (k - 1) / k * b * (1 - node_share[static_cast<size_t>(j)]) * bytes;
      });
      return (nn - 1) * alpha_n + beta_n * bytes * net + intra;
    }
    case TermKind::kNodesAllReduce: {
      // Device m of every node all-reduces the m-th 1/k_j of the node piece across nodes (ring),
      // then each node all-gathers its chunks: 2(N−1)/N·B through every NIC.
      const double intra = per_node([&](double k, double a, double b, double, double, double, int) {
        return (k - 1) * a + (k - 1) / k * b * bytes;
      });
      return 2 * (nn - 1) * alpha_n + 2 * (nn - 1) / nn * beta_n * bytes + intra;
    }
    case TermKind::kNodesGradientSync:
      // Every device's piece with the same-position devices of the other nodes: a node's pieces
      // sum to the tensor, so each NIC carries 2(N−1)/N·B.
      return 2 * (nn - 1) * alpha_n + 2 * (nn - 1) / nn * beta_n * bytes;
    case TermKind::kNodesAllToAll: {
      double net = 0;
      for (int j = 0; j < num_nodes; ++j) {
        const double s = node_share[static_cast<size_t>(j)], s2 = node_share2[static_cast<size_t>(j)];
        net = std::max(net, std::max(s * (1 - s2), s2 * (1 - s)));
      }
      const double intra = per_node([&](double k, double a, double b, double, double, double, int j) {
        return (k - 1) * a + (k - 1) / k * b * node_share2[static_cast<size_t>(j)] * bytes;
      });
      return (nn - 1) * alpha_n + beta_n * bytes * net + intra;
    }
    default:
      return 0;
  }
}

double EvaluatePrice(const CollectivePrice& p, double bytes, const std::vector<double>& shares,
                     const std::vector<double>& post, const Mesh& mesh) {
  double total = 0;
  for (const std::vector<PricePiece>& phase : p.phases) {
    double slowest = 0;
    for (const PricePiece& piece : phase) slowest = std::max(slowest, PieceSeconds(piece, bytes, shares, post, mesh));
    total += slowest;
  }
  return total;
}

double TableSeconds(const CollectiveTable& t, double bytes) {
  const std::vector<CollectiveSample>& s = t.samples;
  HS_CHECK(!s.empty(), "a parsed collective table has at least one sample");
  if (bytes <= s.front().bytes) return s.front().seconds;
  if (s.size() == 1) return s.front().seconds * bytes / s.front().bytes;
  size_t k = 1;
  while (k + 1 < s.size() && s[k].bytes < bytes) ++k;
  // Between s[k−1] and s[k], or beyond the last sample on the last segment's line.
  const CollectiveSample& a = s[k - 1];
  const CollectiveSample& b = s[k];
  return a.seconds + (b.seconds - a.seconds) * (bytes - a.bytes) / (b.bytes - a.bytes);
}

ClusterModel::ClusterModel(const Cluster& c, Pricing pricing) : c_(&c), pricing_(pricing), mesh_(MeshOf(c)) {
  for (const Device& d : c.devices) total_flops_ += d.flops, total_bandwidth_ += d.memory_bandwidth;
  const int n = c.size();
  if (n == 0) return;
  world_ = c.WorldLink();
  const bool flat = pricing == Pricing::kFlatWorldLink;
  for (const CollectiveTable& t : c.collectives) {
    if (flat) break;  // the reference system priced one bandwidth, never a profiled table
    const bool spans = mesh_.num_nodes() > 1;
    if (t.link != (spans ? "inter_node" : "intra_node")) continue;
    for (int k = 0; k < 4; ++k) {
      if (t.op == TableOp(k)) tables_[static_cast<size_t>(k)] = &t;
    }
  }
  if (n < 2) return;  // one device: every collective is free

  const double nd = n, nm1 = n - 1.0;
  const int num_nodes = mesh_.num_nodes();
  const double alpha = world_.latency;
  // The device-link term uses the slowest intra link of a node holding two or more devices; the
  // network term is the NIC's, present when the devices span nodes.
  double beta_dev = 0;
  for (int j = 0; j < num_nodes; ++j) {
    if (mesh_.nodes[static_cast<size_t>(j)].size() >= 2) {
      beta_dev = std::max(beta_dev, 1.0 / c.nodes[static_cast<size_t>(j)].intra.bandwidth);
    }
  }
  double beta_net = num_nodes > 1 ? 1.0 / c.inter_node.bandwidth : 0.0;
  if (flat) beta_dev = 1.0 / world_.bandwidth, beta_net = 0;  // one link, no NIC

  const double beta_max = std::max(beta_dev, beta_net);
  auto price = [&](TermKind k) -> CollectivePrice& { return prices_[static_cast<size_t>(k)]; };

  // Padded ring: n − 1 rounds of the largest shard, over every device link and through every
  // NIC alike ((n−1)·B·max s both ways): (n−1)·(α + max(β_dev, β_net)·B·max_i s_i).
  {
    std::vector<PricePiece> phase;
    for (DeviceId i = 0; i < n; ++i) phase.push_back({nm1 * alpha, 0, {{i, nm1 * beta_max}}, -1, 0});
    price(TermKind::kGatherPadded).phases = {std::move(phase)};
  }
  // Grouped: n·α + max(β_dev·max_i max(1 − s_i, (n−1)·s_i), β_net·max_j max(S_j·(n − k_j), (1 − S_j)·k_j)):
  // a device sends its shard to every other one and receives every other shard; node j's NIC
  // carries its devices' shards to the n − k_j devices outside and every outside shard to each
  // of its k_j devices.
  {
    std::vector<PricePiece> phase;
    for (DeviceId i = 0; i < n; ++i) {
      phase.push_back({nd * alpha, beta_dev, {{i, -beta_dev}}, -1, 0});
      phase.push_back({nd * alpha, 0, {{i, nm1 * beta_dev}}, -1, 0});
    }
    if (beta_net > 0) {
      for (int j = 0; j < num_nodes; ++j) {
        const std::vector<DeviceId>& devs = mesh_.nodes[static_cast<size_t>(j)];
        const double k = static_cast<double>(devs.size());
        PricePiece out{nd * alpha, 0, {}, -1, 0}, in{nd * alpha, k * beta_net, {}, -1, 0};
        for (DeviceId i : devs) {
          out.shares.push_back({i, (nd - k) * beta_net});
          in.shares.push_back({i, -k * beta_net});
        }
        phase.push_back(std::move(out));
        phase.push_back(std::move(in));
      }
    }
    price(TermKind::kGatherGrouped).phases = {std::move(phase)};
  }
  // All-to-all: (n−1)·α + max(β_dev·max_i s_i, β_net·max_j max(S_j(1 − S'_j), S'_j(1 − S_j))):
  // node j sends its rows' outside columns and receives the outside rows of its columns.
  {
    std::vector<PricePiece> phase;
    for (DeviceId i = 0; i < n; ++i) phase.push_back({nm1 * alpha, 0, {{i, beta_dev}}, -1, 0});
    if (beta_net > 0) {
      for (int j = 0; j < num_nodes; ++j) phase.push_back({nm1 * alpha, 0, {}, j, beta_net});
    }
    price(TermKind::kAllToAll).phases = {std::move(phase)};
  }
  // Ring all-reduce: 2(n−1)·α + 2(n−1)/n·max(β_dev, β_net)·B; one ring edge leaves and one enters
  // each node, so a NIC carries what a device link does.
  price(TermKind::kAllReduce).phases = {{PricePiece{2 * nm1 * alpha, 2 * nm1 / nd * beta_max, {}, -1, 0}}};

  if (!mesh_.two_level || flat) return;
  const double nn = num_nodes, alpha_net = c.inter_node.latency;
  // Hierarchical all-reduce: max_j 2[(k_j−1)·α_j + (k_j−1)/k_j·β_j·B] (intra reduce-scatter and
  // all-gather) + 2(N−1)·α_net + 2(N−1)/N·β_net·B (each of node j's k_j devices moves
  // 2(N−1)/N·B/k_j through the NIC).
  {
    std::vector<PricePiece> intra;
    for (int j = 0; j < num_nodes; ++j) {
      const double k = static_cast<double>(mesh_.nodes[static_cast<size_t>(j)].size());
      if (k < 2) continue;
      const Link& l = c.nodes[static_cast<size_t>(j)].intra;
      intra.push_back({2 * (k - 1) * l.latency, 2 * (k - 1) / k / l.bandwidth, {}, -1, 0});
    }
    CollectivePrice& p = price(TermKind::kAllReduceHierarchical);
    if (!intra.empty()) p.phases.push_back(std::move(intra));
    p.phases.push_back({PricePiece{2 * (nn - 1) * alpha_net, 2 * (nn - 1) / nn * beta_net, {}, -1, 0}});
  }
  // Hierarchical all-gather: (1) inside node j a grouped all-gather of the node piece,
  // k_j·α_j + β_j·B·max_{i∈j} max(S_j − s_i, (k_j−1)·s_i); (2) across nodes every node piece to
  // every other node, (N−1)·α_net + β_net·B·max_j max(S_j·(N−1), 1 − S_j); (3) inside node j an
  // all-gather of the k_j sub-chunks that arrived, (k_j−1)·α_j + (k_j−1)/k_j·β_j·(1 − S_j)·B.
  {
    std::vector<PricePiece> first, second, third;
    for (int j = 0; j < num_nodes; ++j) {
      const std::vector<DeviceId>& devs = mesh_.nodes[static_cast<size_t>(j)];
      const double k = static_cast<double>(devs.size());
      const Link& l = c.nodes[static_cast<size_t>(j)].intra;
      const double beta = 1.0 / l.bandwidth;
      PricePiece sends{(nn - 1) * alpha_net, 0, {}, -1, 0}, receives{(nn - 1) * alpha_net, beta_net, {}, -1, 0};
      for (DeviceId i : devs) {
        sends.shares.push_back({i, (nn - 1) * beta_net});
        receives.shares.push_back({i, -beta_net});
      }
      second.push_back(std::move(sends));
      second.push_back(std::move(receives));
      if (k < 2) continue;
      for (DeviceId i : devs) {
        PricePiece others{k * l.latency, 0, {}, -1, 0};
        for (DeviceId o : devs) {
          if (o != i) others.shares.push_back({o, beta});
        }
        first.push_back(std::move(others));
        first.push_back({k * l.latency, 0, {{i, (k - 1) * beta}}, -1, 0});
      }
      PricePiece last{(k - 1) * l.latency, (k - 1) / k * beta, {}, -1, 0};
      for (DeviceId i : devs) last.shares.push_back({i, -(k - 1) / k * beta});
      third.push_back(std::move(last));
    }
    CollectivePrice& p = price(TermKind::kGatherHierarchical);
    if (!first.empty()) p.phases.push_back(std::move(first));
    p.phases.push_back(std::move(second));
    if (!third.empty()) p.phases.push_back(std::move(third));
  }
}

const CollectiveTable* ClusterModel::Table(instr::InstrKind op) const {
  const int k = TableIndex(op);
  return k < 0 ? nullptr : tables_[static_cast<size_t>(k)];
}

double ClusterModel::Seconds(TermKind kind, instr::InstrKind op, double bytes, const std::vector<double>& shares,
                             const std::vector<double>& post) const {
  if (size() < 2 || !IsCollective(kind)) return 0;
  if (const CollectiveTable* t = Table(op)) return TableSeconds(*t, bytes);
  return EvaluatePrice(Price(kind), bytes, shares, post, mesh_);
}

}  // namespace hetsynth::costmodel
