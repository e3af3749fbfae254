// Inference placement (synth/placement.h): the MILP against brute-force enumeration on tiny
// hand-made DAGs, memory caps, infeasibility, coarsening, and the MILP never worse than a
// baseline on the zoo's models (small sizes) on mixed-4 and reference-64.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>

#include <gtest/gtest.h>

#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/synth/placement.h"

namespace hetsynth::synth {
namespace {

// A random DAG of n nodes on nd devices over `cnodes` cluster nodes; edges i→j (i<j) with
// probability `density`; capacities sometimes tight.
PlacementProblem RandomProblem(std::mt19937& rng, int n, int nd, int cnodes, double density) {
  std::uniform_real_distribution<double> u(0, 1);
  PlacementProblem p;
  for (int d = 0; d < nd; ++d) {
    p.device_names.push_back(std::string("d").append(std::to_string(d)));
    p.device_flops.push_back(1 + std::floor(u(rng) * 4));
    p.device_node.push_back(d % cnodes);
    p.capacity_bytes.push_back(u(rng) < 0.5 ? 1e9 : 1.5 + std::floor(u(rng) * 3));
  }
  for (int k = 0; k < cnodes; ++k) p.node_link.push_back({1.0 + u(rng) * 3, 0.05 * u(rng)});
  p.inter_node = {0.5 + u(rng), 0.1 * u(rng)};
  for (int i = 0; i < n; ++i) {
    CoarseNode c;
    c.name = std::string("n").append(std::to_string(i));
    const double work = 0.2 + u(rng);
    for (int d = 0; d < nd; ++d) c.seconds.push_back(work / p.device_flops[d] * (0.8 + 0.4 * u(rng)));
    c.weight_bytes = 1;
    p.nodes.push_back(c);
  }
  for (int j = 1; j < n; ++j) {
    bool any = false;
    for (int i = 0; i < j; ++i) {
      if (u(rng) < density) {
        p.edges.push_back({i, j, std::floor(u(rng) * 3)});
        any = true;
      }
    }
    if (!any && u(rng) < 0.5) p.edges.push_back({static_cast<int>(u(rng) * j), j, 1});
  }
  return p;
}

// Minimum latency over every placement and every topological order (as-soon-as-possible
// schedules of a fixed order contain an optimal schedule); +inf when nothing fits.
double BruteForce(const PlacementProblem& p) {
  const int n = static_cast<int>(p.nodes.size()), nd = p.num_devices();
  std::vector<std::vector<CoarseId>> orders;
  std::vector<CoarseId> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  do {
    std::vector<int> pos(n);
    for (int k = 0; k < n; ++k) pos[perm[k]] = k;
    bool topo = true;
    for (const CoarseEdge& e : p.edges) topo = topo && pos[e.from] < pos[e.to];
    if (topo) orders.push_back(perm);
  } while (std::next_permutation(perm.begin(), perm.end()));
  double best = std::numeric_limits<double>::infinity();
  std::vector<int> dev(n, 0);
  for (;;) {
    if (CheckMemory(p, dev).ok()) {
      for (const auto& o : orders) best = std::min(best, Evaluate(p, dev, o).latency);
    }
    int k = 0;
    while (k < n && ++dev[k] == nd) dev[k++] = 0;
    if (k == n) break;
  }
  return best;
}

// Fork-join: 0 → {1 … k} → k+1, the sibling sets the bound reasons about (q/k/v in a block).
PlacementProblem ForkJoin(std::mt19937& rng, int k, int nd, int cnodes) {
  PlacementProblem p = RandomProblem(rng, k + 2, nd, cnodes, 0.0);
  std::uniform_real_distribution<double> u(0, 1);
  p.edges.clear();
  for (int i = 1; i <= k; ++i) {
    p.edges.push_back({0, i, std::floor(u(rng) * 3)});
    p.edges.push_back({i, k + 1, std::floor(u(rng) * 3)});
  }
  std::sort(p.edges.begin(), p.edges.end(), [](const CoarseEdge& a, const CoarseEdge& b) { return a.to < b.to; });
  return p;
}

TEST(Placement, MilpMatchesBruteForceOnTinyDags) {
  std::mt19937 rng(12345);
  int solved = 0, with_z3 = 0, infeasible = 0;
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 3 + trial % 3, nd = 2 + trial % 2, cnodes = 1 + (trial / 3) % 2;
    const PlacementProblem p =
        trial % 4 == 3 ? ForkJoin(rng, 2 + trial % 2, nd, cnodes) : RandomProblem(rng, n, nd, cnodes, trial % 2 ? 0.3 : 0.6);
    const double brute = BruteForce(p);
    MilpOptions o;
    o.gap_tolerance = 1e-6;
    absl::StatusOr<MilpResult> m = SolvePlacementMilp(p, nullptr, o);
    if (!std::isfinite(brute)) {
      EXPECT_TRUE(absl::IsResourceExhausted(m.status())) << "trial " << trial << ": " << m.status();
      ++infeasible;
      continue;
    }
    ASSERT_TRUE(m.ok()) << "trial " << trial << ": " << m.status();
    EXPECT_TRUE(m->optimal) << "trial " << trial;
    EXPECT_NEAR(m->schedule.latency, brute, 1e-5 * brute) << "trial " << trial;
    EXPECT_TRUE(CheckMemory(p, m->schedule.device).ok());
    EXPECT_LE(m->lower_bound, brute * (1 + 1e-6));
    // Seeded with a worse placement (everything on device 0 when it fits), the same optimum.
    const Schedule seed = Evaluate(p, std::vector<int>(p.nodes.size(), 0));
    absl::StatusOr<MilpResult> ms = SolvePlacementMilp(p, &seed, o);
    ASSERT_TRUE(ms.ok());
    EXPECT_NEAR(ms->schedule.latency, brute, 1e-5 * brute) << "trial " << trial;
    ++solved;
    with_z3 += m->solver_calls > 0;
  }
  EXPECT_GE(solved, 30);
  EXPECT_GE(with_z3, 20);  // the bound alone did not settle most of them: Z3 did
  EXPECT_EQ(solved + infeasible, 40);
}

TEST(Placement, InterchangeableNodesBeyondTheNodeCountAreDropped) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 6; ++trial) {
    // 3 coarse nodes; 8 cluster nodes of one device each, two kinds (4 fast + 4 slow), one link:
    // 3 nodes of each kind are modelled.
    PlacementProblem p = RandomProblem(rng, 3, 8, 8, trial % 2 ? 0.4 : 0.8);
    for (int d = 0; d < 8; ++d) {
      p.device_flops[d] = d % 2 ? 1 : 2;
      p.capacity_bytes[d] = d % 2 ? 10 : 1.5;
      for (CoarseNode& c : p.nodes) c.seconds[d] = c.seconds[0] * (d % 2 ? 1.7 : 1);
    }
    for (auto& l : p.node_link) l = p.node_link[0];
    const double brute = BruteForce(p);
    MilpOptions o;
    o.gap_tolerance = 1e-6;
    absl::StatusOr<MilpResult> m = SolvePlacementMilp(p, nullptr, o);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_NEAR(m->schedule.latency, brute, 1e-5 * brute) << "trial " << trial;
    EXPECT_EQ(m->devices_modelled, 6);
  }
}

// Two devices: a fast one that holds only two of the three nodes, a slow one that holds all.
PlacementProblem CappedChain() {
  PlacementProblem p;
  p.device_names = {"fast", "slow"};
  p.device_flops = {4, 1};
  p.device_node = {0, 0};
  p.capacity_bytes = {2.5, 10};
  p.node_link = {{1.0, 0.0}};
  p.inter_node = {1.0, 0.0};
  for (int i = 0; i < 3; ++i) {
    CoarseNode c;
    c.name = std::string("n").append(std::to_string(i));
    c.seconds = {1, 4};
    c.weight_bytes = 1;
    p.nodes.push_back(c);
  }
  p.edges = {{0, 1, 0.5}, {1, 2, 0.5}};
  return p;
}

TEST(Placement, MemoryCapsAreRespected) {
  const PlacementProblem p = CappedChain();
  absl::StatusOr<MilpResult> m = SolvePlacementMilp(p, nullptr, {});
  ASSERT_TRUE(m.ok()) << m.status();
  const std::vector<double> mem = DeviceMemory(p, m->schedule.device);
  EXPECT_LE(mem[0], 2.5);
  EXPECT_LE(mem[1], 10);
  // Two nodes on fast (1 s each), one on slow (4 s), one transfer of 0.5 s: 6.5 s.
  EXPECT_NEAR(m->schedule.latency, 6.5, 1e-6);
  EXPECT_TRUE(m->optimal);
  // The single-device baseline can only use the slow device.
  const std::vector<PlacementMethodResult> b = PlacementBaselines(p);
  ASSERT_EQ(b[0].method, "single");
  ASSERT_TRUE(b[0].status.ok());
  EXPECT_EQ(b[0].schedule.device, std::vector<int>(3, 1));
  EXPECT_NEAR(b[0].schedule.latency, 12, 1e-9);
}

TEST(Placement, InfeasibleProblemsSaySo) {
  PlacementProblem p = CappedChain();
  p.capacity_bytes = {0.5, 0.5};  // no node fits anywhere
  absl::StatusOr<MilpResult> m = SolvePlacementMilp(p, nullptr, {});
  ASSERT_TRUE(absl::IsResourceExhausted(m.status())) << m.status();
  EXPECT_NE(m.status().message().find("coarse node 'n0'"), std::string::npos) << m.status();
  p.capacity_bytes = {1.5, 1.5};  // each fits, all three do not
  m = SolvePlacementMilp(p, nullptr, {});
  ASSERT_TRUE(absl::IsResourceExhausted(m.status())) << m.status();
  for (CoarseNode& c : p.nodes) c.weight_bytes = 1.2;
  p.capacity_bytes = {2.0, 2.0};  // 3.6 <= 4.0 in total, but each device holds only one node
  m = SolvePlacementMilp(p, nullptr, {});
  ASSERT_TRUE(absl::IsResourceExhausted(m.status())) << m.status();
  for (const PlacementMethodResult& r : PlacementBaselines(p)) EXPECT_FALSE(r.status.ok()) << r.method;
}

TEST(Placement, CoarseningCoversTheForwardGraphOnce) {
  const costmodel::Cluster c = *costmodel::ReadClusterFile(std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json");
  for (const char* model : {"gpt", "vit", "vgg19", "moe", "mlp"}) {
    const ir::Graph g = *ir::BuildModel(*ir::MakeModelSpec(model, {}, 0, ir::Preset::kSmall));
    const PlacementProblem p = *BuildPlacementProblem(g, c);
    std::vector<int> seen(g.nodes().size(), 0);
    for (const CoarseNode& cn : p.nodes) {
      for (ir::NodeId n : cn.ops) ++seen[n];
    }
    const std::vector<ir::NodeId> fwd = ForwardNodes(g);
    EXPECT_EQ(fwd.size() + 1, g.nodes().size()) << model;  // all but the loss
    for (ir::NodeId n : fwd) EXPECT_EQ(seen[n], 1) << model << " " << g.node(n).name;
    for (const CoarseEdge& e : p.edges) EXPECT_LT(e.from, e.to) << model;
    EXPECT_LT(p.nodes.size(), fwd.size()) << model;  // something was fused
    // A limit merges pure chains.
    const int limit = std::min<int>(8, static_cast<int>(p.nodes.size()) - 1);
    PlacementOptions po;
    po.max_coarse_nodes = limit;
    const PlacementProblem q = *BuildPlacementProblem(g, c, po);
    EXPECT_LT(q.nodes.size(), p.nodes.size()) << model;
  }
  // The rule: fc1 and its gelu fuse; fc2 and the residual add fuse; q, k, v stay apart.
  const ir::Graph g = *ir::BuildModel(*ir::MakeModelSpec("gpt", {}, 0, ir::Preset::kSmall));
  const PlacementProblem p = *BuildPlacementProblem(g, c);
  auto group_of = [&](const std::string& name) {
    for (size_t k = 0; k < p.nodes.size(); ++k) {
      for (ir::NodeId n : p.nodes[k].ops) {
        if (g.node(n).name == name) return static_cast<int>(k);
      }
    }
    return -1;
  };
  EXPECT_EQ(group_of("layers.0.mlp.fc1"), group_of("layers.0.mlp.gelu"));
  EXPECT_EQ(group_of("layers.0.mlp.fc2"), group_of("layers.0.mlp.residual"));
  EXPECT_NE(group_of("layers.0.attn.q"), group_of("layers.0.attn.k"));
}

void MilpNeverWorseThanABaseline(const char* cluster) {
  {
    const costmodel::Cluster c =
        *costmodel::ReadClusterFile(std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/" + cluster + ".json");
    for (const char* model : {"gpt", "vit", "vgg19", "moe"}) {
      const ir::Graph g = *ir::BuildModel(*ir::MakeModelSpec(model, {}, 0, ir::Preset::kSmall));
      const PlacementProblem p = *BuildPlacementProblem(g, c);
      const std::vector<PlacementMethodResult> base = PlacementBaselines(p);
      const Schedule* seed = nullptr;
      int feasible = 0;
      for (const auto& r : base) {
        if (!r.status.ok()) continue;
        ++feasible;
        EXPECT_TRUE(CheckMemory(p, r.schedule.device).ok()) << r.method;
        if (seed == nullptr || r.schedule.latency < seed->latency) seed = &r.schedule;
      }
      ASSERT_GE(feasible, 2) << model << " on " << cluster;
      MilpOptions o;
      o.time_limit_s = 5;
      absl::StatusOr<MilpResult> m = SolvePlacementMilp(p, seed, o);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_TRUE(CheckMemory(p, m->schedule.device).ok());
      for (const auto& r : base) {
        if (r.status.ok()) {
          EXPECT_LE(m->schedule.latency, r.schedule.latency) << model << " on " << cluster << " vs " << r.method;
        }
      }
      EXPECT_LE(m->lower_bound, m->schedule.latency);
      // The schedule's latency is what Evaluate says of its placement and order.
      EXPECT_DOUBLE_EQ(Evaluate(p, m->schedule.device, m->schedule.order).latency, m->schedule.latency);
    }
  }
}

TEST(Placement, MilpNeverWorseThanABaselineOnMixed4) { MilpNeverWorseThanABaseline("mixed-4"); }
TEST(Placement, MilpNeverWorseThanABaselineOnReference64) { MilpNeverWorseThanABaseline("reference-64"); }

}  // namespace
}  // namespace hetsynth::synth
