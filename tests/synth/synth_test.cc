#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "absl/strings/str_join.h"

#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/base/status.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/synth/synthesize.h"

namespace hetsynth::synth {
namespace {

using costmodel::Cluster;

// One node; device i has flops[i] FLOP/s and memory[i] bytes.
Cluster MakeCluster(const std::vector<double>& flops, const std::vector<double>& memory,
                    double bandwidth = 1e10, double latency = 1e-6) {
  std::string devices;
  for (size_t i = 0; i < flops.size(); ++i) {
    devices += StrCat(i ? "," : "", "{\"name\": \"d", i, "\", \"type\": \"t", i, "\", \"node\": \"n0\", \"flops\": ", flops[i],
                      ", \"memory_bytes\": ", memory[i], ", \"memory_bandwidth\": ", flops[i] / 10, "}");
  }
  const std::string link = StrCat("{\"bandwidth\": ", bandwidth, ", \"latency\": ", latency, "}");
  const std::string text = StrCat("{\"format\": \"hetsynth-cluster\", \"version\": 1, \"name\": \"test\", \"nodes\": [{\"name\": \"n0\"}], ",
                                  "\"devices\": [", devices, "], \"links\": {\"intra_node\": ", link, ", \"inter_node\": ", link, "}}");
  absl::StatusOr<Cluster> c = costmodel::ParseCluster(text, "test");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

ir::Graph Model(const std::string& name, std::vector<std::string> args = {}, int64_t batch = 0,
                ir::Preset preset = ir::Preset::kSmall) {
  return *ir::BuildModel(*ir::MakeModelSpec(name, args, batch, preset));
}

// A random chain: linear / relu / gelu / add-residual / layer-norm over [B, W] activations.
ir::Graph RandomGraph(std::mt19937& rng) {
  ir::Builder b("random");
  std::uniform_int_distribution<int> len(2, 5), width_pick(0, 2), op(0, 3);
  const int64_t widths[] = {8, 12, 16};
  const int64_t batch = 8;
  int64_t w = widths[width_pick(rng)];
  ir::ValueId h = b.Input("x", {batch, w});
  const int n = len(rng);
  for (int i = 0; i < n; ++i) {
    const std::string p = StrCat("l", i);
    switch (op(rng)) {
      case 0: {
        const int64_t out = widths[width_pick(rng)];
        h = b.Linear(p, h, b.Parameter(p + ".w", {out, w}, ir::Init::Normal(0.1)), b.Parameter(p + ".b", {out}, ir::Init::Zeros()));
        w = out;
        break;
      }
      case 1: h = b.Relu(p, h); break;
      case 2: h = b.Add(p, h, b.Gelu(p + ".g", h)); break;
      default: {
        ir::Attrs a;
        h = b.Op(p, ir::OpKind::kLayerNorm, {h, b.Parameter(p + ".gamma", {w}, ir::Init::Ones()),
                                             b.Parameter(p + ".beta", {w}, ir::Init::Zeros())}, a);
      }
    }
  }
  const ir::ValueId logits = b.Linear("head", h, b.Parameter("head.w", {4, w}, ir::Init::Normal(0.1)));
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy, {logits, b.Input("labels", {batch})}));
  return *std::move(b).Finish();
}

// Every term adds and each gradient is all-reduced alone: the search's g is then exactly the
// step time Evaluate gives (with overlap, g is only a guide; see synthesize.h).
Strategy Additive() {
  Strategy s;
  s.overlap = false;
  s.bucket_bytes = {};
  return s;
}

TEST(Search, AStarEqualsExhaustiveEnumerationOnRandomGraphs) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> speed(1e9, 4e9);
  for (int trial = 0; trial < 24; ++trial) {
    const ir::Graph g = RandomGraph(rng);
    const int n = 2 + trial % 2;
    std::vector<double> flops, mem(static_cast<size_t>(n), 1e12), ratios;
    for (int i = 0; i < n; ++i) flops.push_back(speed(rng));
    const Cluster c = MakeCluster(flops, mem, trial % 3 == 0 ? 1e8 : 1e10);
    double total = 0;
    for (double f : flops) total += f;
    for (double f : flops) ratios.push_back(f / total);
    const Strategy s = Additive();
    const SynthOptions o;
    absl::StatusOr<instr::Program> p = SearchProgram(g, c, ratios, s, o);
    ASSERT_TRUE(p.ok()) << p.status();
    const double exhaustive = ExhaustiveSearchCost(g, c, ratios, s, o);
    // The A* program's cost at the search's (continuous) shares.
    instr::Program prog = *p;
    prog.ratios = {ratios};
    ASSERT_TRUE(instr::BuildSplitGroups(g, prog).ok());
    ASSERT_TRUE(instr::CheckProgram(g, prog).ok());
    const costmodel::ProgramCost pc = costmodel::DescribeCost(g, prog, c, o.cost);
    costmodel::Shares shares(prog.groups.size(), ratios);
    const double astar = costmodel::Evaluate(pc, shares, c, prog.instructions.size()).step_s;
    EXPECT_NEAR(astar, exhaustive, 1e-9 * exhaustive) << "trial " << trial << " with " << g.nodes().size() << " nodes";
  }
}

TEST(Search, TinyGraphOptimumSplitsAllWorkEvenlyAtExactlyHalfTheFlops) {
  // x[4,8] -> linear (W[2,8]) -> cross-entropy on two equal devices with free communication and
  // unlimited memory bandwidth: the optimum does every op's work half on each device, so its
  // cost is exactly (total forward + backward FLOPs) / (2 F).
  ir::Builder b("tiny");
  const ir::ValueId x = b.Input("x", {4, 8});
  const ir::ValueId logits = b.Linear("fc", x, b.Parameter("fc.weight", {2, 8}, ir::Init::Normal(0.1)));
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy, {logits, b.Input("labels", {4})}));
  const ir::Graph g = *std::move(b).Finish();
  const std::string dev = R"({"type": "t", "node": "n0", "flops": 1e9, "memory_bytes": 1e12, "memory_bandwidth": 1e30})";
  const std::string text = StrCat(R"({"format": "hetsynth-cluster", "version": 1, "name": "two", "nodes": [{"name": "n0"}], "devices": [)",
                                  R"({"name": "a", )", dev.substr(1), R"(, {"name": "b", )", dev.substr(1),
                                  R"(], "links": {"intra_node": {"bandwidth": 1e30, "latency": 0}, "inter_node": {"bandwidth": 1e30, "latency": 0}}})");
  absl::StatusOr<Cluster> c = costmodel::ParseCluster(text, "two");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<double> half = {0.5, 0.5};
  absl::StatusOr<instr::Program> p = SearchProgram(g, *c, half, Additive(), SynthOptions{});
  ASSERT_TRUE(p.ok()) << p.status();
  absl::StatusOr<costmodel::Estimate> e = ApplyRatios(g, *c, *p, half, SynthOptions{});
  ASSERT_TRUE(e.ok()) << e.status();
  const ir::Flops f = g.TotalFlops();
  EXPECT_DOUBLE_EQ(e->compute_s, (f.forward + f.backward) / 2e9);
  EXPECT_LT(e->communication_s, 1e-15);
  for (const instr::Instruction& in : p->instructions) {
    if (in.kind == instr::InstrKind::kCompute) {
      EXPECT_NE(in.rule, instr::RuleId(instr::RuleFamily::kReplicated)) << g.node(in.node).name;
    }
  }
  EXPECT_EQ(ExhaustiveSearchCost(g, *c, half, Additive(), SynthOptions{}), e->step_s);
}

TEST(RatioLp, TwoDevicesWithoutCommunicationSplitInProportionToSpeed) {
  // One device, no communication: the closed-form optimum of max(r0/F0, r1/F1) is r ∝ F.
  const ir::Graph g = Model("mlp");
  const Cluster c = MakeCluster({3e12, 1e12}, {1e12, 1e12});
  absl::StatusOr<SynthResult> dp = Synthesize(g, c, *StrategyByName("dp-cp"), SynthOptions{});
  ASSERT_TRUE(dp.ok()) << dp.status();
  absl::StatusOr<std::vector<double>> r = OptimizeRatios(g, c, dp->program, SynthOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR((*r)[0], 0.75, 1e-6);
  EXPECT_NEAR((*r)[1], 0.25, 1e-6);
}

TEST(RatioLp, WholeGemmOperandsMoveWorkToTheDeviceThatStreamsThemFaster) {
  // Data parallel mlp on devices of 3 and 1 TFLOP/s whose GEMMs stream operands at 3 and 1
  // TB/s (memory-bound work free, links fast): each batch-split linear costs a device
  // A·r/F + (S·r + W)/G, with W its weights' streaming, whole on every device. The slow device's
  // W/G is 3× the fast one's, so the optimum gives it less than its FLOP share of 1/4:
  //   (A/F0 + S/G0)·r0 + W/G0 = (A/F1 + S/G1)·(1 − r0) + W/G1.
  const ir::Graph g = Model("mlp");
  std::string devices;
  const double flops[] = {3e12, 1e12};
  for (int i = 0; i < 2; ++i) {
    devices += StrCat(i ? "," : "", "{\"name\": \"d", i, "\", \"type\": \"t", i, "\", \"node\": \"n0\", \"flops\": ", flops[i],
                      ", \"memory_bytes\": 1e12, \"memory_bandwidth\": 1e30, \"gemm_operand_bandwidth\": ", flops[i], "}");
  }
  const std::string link = "{\"bandwidth\": 1e30, \"latency\": 0}";
  absl::StatusOr<Cluster> c = costmodel::ParseCluster(
      StrCat("{\"format\": \"hetsynth-cluster\", \"version\": 1, \"name\": \"ops\", \"nodes\": [{\"name\": \"n0\"}], \"devices\": [",
             devices, "], \"links\": {\"intra_node\": ", link, ", \"inter_node\": ", link, "}}"),
      "ops");
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<SynthResult> dp = Synthesize(g, *c, *StrategyByName("dp-cp"), SynthOptions{});
  ASSERT_TRUE(dp.ok()) << dp.status();
  double a = 0, split = 0, whole = 0;
  for (const costmodel::Term& t : costmodel::DescribeCost(g, dp->program, *c, SynthOptions{}.cost).terms) {
    if (t.kind != costmodel::TermKind::kComputeSplit || t.memory_bound) continue;
    a += t.coefficient, split += t.operand_bytes_split, whole += t.operand_bytes_whole;
  }
  ASSERT_GT(whole, 0);
  const double k0 = a / 3e12 + split / 3e12, k1 = a / 1e12 + split / 1e12;
  const double expected = (k1 + whole / 1e12 - whole / 3e12) / (k0 + k1);
  absl::StatusOr<std::vector<double>> r = OptimizeRatios(g, *c, dp->program, SynthOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT((*r)[0], 0.75);
  EXPECT_NEAR((*r)[0], expected, 1e-3);
  EXPECT_NEAR((*r)[1], 1 - expected, 1e-3);
}

TEST(RatioLp, MemoryCapacityCapsTheShareOfASmallDevice) {
  // Equal speeds would split evenly; device 1's memory allows at most the share where
  // fixed + split·r = 0.99·capacity.
  const ir::Graph g = Model("mlp", {"hidden=256"}, 512);
  const Cluster roomy = MakeCluster({1e12, 1e12}, {1e12, 1e12});
  absl::StatusOr<SynthResult> dp = Synthesize(g, roomy, *StrategyByName("dp-ev"), SynthOptions{});
  ASSERT_TRUE(dp.ok());
  const costmodel::ProgramCost pc = costmodel::DescribeCost(g, dp->program, roomy, SynthOptions{}.cost);
  double fixed = 0, split = 0;
  for (const auto& m : pc.memory) (m.group >= 0 ? split : fixed) += m.bytes;
  const double cap = fixed + 0.3 * split / 0.99;  // room for a 30% share
  const Cluster tight = MakeCluster({1e12, 1e12}, {1e12, cap});
  absl::StatusOr<std::vector<double>> r = OptimizeRatios(g, tight, dp->program, SynthOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  const double expected = (0.99 * cap - fixed) / split;  // the LP keeps 1% headroom for rounding
  EXPECT_LT(expected, 0.5);
  EXPECT_NEAR((*r)[1], expected, 1e-4);
  EXPECT_NEAR((*r)[0], 1 - expected, 1e-4);
}

TEST(Synthesize, NeverWorseThanABaselineAndDeterministic) {
  const ir::Graph g = Model("gpt");
  absl::StatusOr<Cluster> c = costmodel::ReadClusterFile(std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json");
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<SynthResult> a = Synthesize(g, *c, Strategy{}, SynthOptions{});
  absl::StatusOr<SynthResult> b = Synthesize(g, *c, Strategy{}, SynthOptions{});
  ASSERT_TRUE(a.ok() && b.ok());
  instr::Plan pa, pb;
  pa.program = a->program;
  pb.program = b->program;
  EXPECT_EQ(instr::PlanToJson(g, pa), instr::PlanToJson(g, pb));
  for (const std::string& name : BaselineNames()) {
    absl::StatusOr<SynthResult> base = Synthesize(g, *c, *StrategyByName(name), SynthOptions{});
    if (!base.ok()) continue;
    EXPECT_LE(a->estimate.step_s, base->estimate.step_s * (1 + 1e-9)) << name;
  }
}

TEST(Synthesize, SmallMemoryDeviceIsNeverOverCapacity) {
  // Default-size gpt with Adam needs ~2 GB per replica; quarter0 has 1 GiB.
  const ir::Graph g = Model("gpt", {}, 0, ir::Preset::kDefault);
  absl::StatusOr<Cluster> c = costmodel::ReadClusterFile(std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json");
  ASSERT_TRUE(c.ok());
  absl::StatusOr<SynthResult> r = Synthesize(g, *c, Strategy{}, SynthOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  for (size_t i = 0; i < c->devices.size(); ++i) {
    EXPECT_LE(r->estimate.memory_bytes[i], c->devices[i].memory_bytes) << c->devices[i].name;
  }
  // Data parallel cannot fit a replica on quarter0.
  absl::StatusOr<SynthResult> dp = Synthesize(g, *c, *StrategyByName("dp-ev"), SynthOptions{});
  ASSERT_FALSE(dp.ok());
  EXPECT_NE(dp.status().message().find("device 'quarter0' needs"), std::string::npos) << dp.status();
}

TEST(Synthesize, InfeasibleProblemNamesDeviceAndBytes) {
  const ir::Graph g = Model("gpt", {}, 0, ir::Preset::kDefault);
  const Cluster tiny = MakeCluster({1e12, 1e12}, {1e6, 1e6});
  absl::StatusOr<SynthResult> r = Synthesize(g, tiny, Strategy{}, SynthOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("fits nowhere"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("has 1000000"), std::string::npos) << r.status();
}

// ---- buckets and implementations: tiny problems with their exact optima ----------------------

// x[8,16] → fc1 (W1[8,16], b1[8]) → relu → fc2 (W2[4,8], b2[4]) → cross-entropy, data parallel
// on two devices at even ratios. FLOPs (forward / backward): fc1 2112 / 4160, relu 64 / 64,
// fc2 544 / 1056, loss 128 / 96; at 1e9 FLOP/s and share 0.5 each FLOP costs 5e-10 s.
// Gradient bytes in ready order (reverse placement): b2 16, W2 128, b1 32, W1 512.
ir::Graph TwoLayer() {
  ir::Builder b("two_layer");
  const ir::ValueId x = b.Input("x", {8, 16});
  ir::ValueId h = b.Linear("fc1", x, b.Parameter("fc1.weight", {8, 16}, ir::Init::Normal(0.1)),
                           b.Parameter("fc1.bias", {8}, ir::Init::Zeros()));
  h = b.Relu("relu", h);
  h = b.Linear("fc2", h, b.Parameter("fc2.weight", {4, 8}, ir::Init::Normal(0.1)),
               b.Parameter("fc2.bias", {4}, ir::Init::Zeros()));
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy, {h, b.Input("labels", {8})}));
  return *std::move(b).Finish();
}

// Two devices of 1e9 FLOP/s whose memory is never the bottleneck (1e30 B/s), on one link.
Cluster Pair(double bandwidth, double latency) {
  Cluster c;
  c.name = "pair";
  c.nodes = {{"n0", costmodel::Link{bandwidth, latency}}};
  c.inter_node = c.nodes[0].intra;
  for (int i = 0; i < 2; ++i) c.devices.push_back({StrCat("d", i), "t", 0, 1e9, 1e12, 1e30});
  return c;
}

instr::Program DataParallelTwoLayer(const ir::Graph& g) {
  instr::Program p;
  p.num_devices = 2;
  p.ratios = {{0.5, 0.5}};
  p.overlap = true;
  auto place = [&](const char* t, int dim) {
    instr::Instruction in;
    in.kind = g.value(g.Find(t)).kind == ir::ValueKind::kInput ? instr::InstrKind::kPlaceInput
                                                                : instr::InstrKind::kPlaceParameter;
    in.tensor = g.Find(t);
    in.dim = dim;
    EXPECT_TRUE(instr::DeriveTriple(g, in).ok()) << t;
    return in;
  };
  auto compute = [&](const char* node, instr::RuleId rule) {
    instr::Instruction in;
    in.kind = instr::InstrKind::kCompute;
    in.node = g.value(g.Find(node)).producer;
    in.rule = rule;
    EXPECT_TRUE(instr::DeriveTriple(g, in).ok()) << node;
    return in;
  };
  p.instructions = {place("x", 0),           place("labels", 0),        place("fc1.weight", -1),
                    place("fc1.bias", -1),   compute("fc1", "batch0"),  compute("relu", "split0"),
                    place("fc2.weight", -1), place("fc2.bias", -1),     compute("fc2", "batch0"),
                    compute("loss", "batch0")};
  EXPECT_TRUE(instr::BuildSplitGroups(g, p).ok());
  EXPECT_TRUE(instr::CheckProgram(g, p).ok());
  return p;
}

TEST(ChooseBuckets, LatencyBoundGradientsShareOneBucket) {
  const ir::Graph g = TwoLayer();
  const Cluster c = Pair(1e9, 1e-3);
  const costmodel::ClusterModel m(c);
  instr::Program p = DataParallelTwoLayer(g);
  ChooseBuckets(g, m, Strategy{}, SynthOptions{}, p);
  // One bucket of all 688 bytes: 2α + 688·1e-9 = 2.000688e-3 s after backward ends, against at
  // least 4 · 2α one per parameter. 1 MiB is the first size that holds them all.
  ASSERT_EQ(p.buckets.size(), 1u);
  EXPECT_EQ(p.buckets[0].params, (std::vector<ir::ValueId>{g.Find("fc2.bias"), g.Find("fc2.weight"),
                                                           g.Find("fc1.bias"), g.Find("fc1.weight")}));
  EXPECT_EQ(p.buckets[0].impl, instr::CollImpl::kRing);  // one node: no hierarchy
  ASSERT_TRUE(instr::CheckProgram(g, p).ok());
  const costmodel::Estimate e =
      costmodel::Evaluate(costmodel::DescribeCost(g, p, m, SynthOptions{}.cost), costmodel::ProgramShares(p), m, 10);
  // Compute: (6272 + 128 + 1600 + 224) FLOPs · 5e-10 s = 4.112e-6 s, then the bucket.
  EXPECT_NEAR(e.step_s, 4.112e-6 + 2e-3 + 688e-9, 1e-15);
}

TEST(ChooseBuckets, BandwidthBoundGradientsGoOneByOneToOverlapTheRestOfBackward) {
  const ir::Graph g = TwoLayer();
  const Cluster c = Pair(1e6, 0);  // β = 1e-6 s/B, no latency
  const costmodel::ClusterModel m(c);
  instr::Program p = DataParallelTwoLayer(g);
  ChooseBuckets(g, m, Strategy{}, SynthOptions{}, p);
  // One per parameter: b2 is ready after forward (1.424e-6), loss and fc2 backward
  // (4.8e-8 + 5.28e-7), at 2e-6; the four all-reduces follow back to back (16 + 128 + 32 +
  // 512 bytes · 1e-6) and end at 2e-6 + 6.88e-4, while one bucket could only start when fc1's
  // backward ends at 4.112e-6.
  ASSERT_EQ(p.buckets.size(), 4u);
  const costmodel::Estimate e =
      costmodel::Evaluate(costmodel::DescribeCost(g, p, m, SynthOptions{}.cost), costmodel::ProgramShares(p), m, 10);
  EXPECT_NEAR(e.step_s, 2e-6 + 6.88e-4, 1e-15);
  p.buckets = MakeBuckets(g, m, Strategy{}, p, 1 << 20);
  ASSERT_EQ(p.buckets.size(), 1u);
  EXPECT_NEAR(costmodel::Evaluate(costmodel::DescribeCost(g, p, m, SynthOptions{}.cost), costmodel::ProgramShares(p), m, 10)
                  .step_s,
              4.112e-6 + 6.88e-4, 1e-15);
}

TEST(RatioLp, TheOverlappedStepIsTheCriticalPathOverTheBuckets) {
  // Devices of 3e9 and 1e9 FLOP/s, a 1 MB/s link without latency, one bucket per parameter.
  // The step is b2's readiness (forward 2848 FLOPs + loss and fc2 backward 1152 FLOPs at the
  // slower share) plus the four all-reduces back to back (688e-6 s, whatever the ratios): the
  // optimum gives each device work ∝ its speed, 0.75 / 0.25, where a FLOP costs 2.5e-10 s:
  // 4000 · 2.5e-10 + 6.88e-4.
  const ir::Graph g = TwoLayer();
  Cluster c = Pair(1e6, 0);
  c.devices[0].flops = 3e9;
  const costmodel::ClusterModel m(c);
  instr::Program p = DataParallelTwoLayer(g);
  p.buckets = MakeBuckets(g, m, Strategy{}, p, 0);
  ASSERT_EQ(p.buckets.size(), 4u);
  absl::StatusOr<std::vector<double>> r = OptimizeRatios(g, m, p, SynthOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR((*r)[0], 0.75, 1e-9);
  EXPECT_NEAR((*r)[1], 0.25, 1e-9);
  absl::StatusOr<costmodel::Estimate> e = ApplyRatios(g, m, p, *r, SynthOptions{});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_NEAR(e->step_s, 4000 * 2.5e-10 + 6.88e-4, 1e-15);
}

TEST(ChooseBuckets, NoBucketsWithoutOverlapSizesOrReplicatedParameters) {
  const ir::Graph g = TwoLayer();
  const Cluster c = Pair(1e9, 1e-3);
  const costmodel::ClusterModel m(c);
  instr::Program p = DataParallelTwoLayer(g);
  Strategy none;
  none.bucket_bytes = {};
  ChooseBuckets(g, m, none, SynthOptions{}, p);
  EXPECT_TRUE(p.buckets.empty());
}

// Node a: d0, d1; node b: d2..d5; NIC 1 GB/s, 10 µs; inside the nodes `intra`.
Cluster TwoNodes(costmodel::Link intra_a, costmodel::Link intra_b) {
  Cluster c;
  c.name = "two";
  c.nodes = {{"a", intra_a}, {"b", intra_b}};
  c.inter_node = costmodel::Link{1e9, 1e-5};
  for (int i = 0; i < 6; ++i) c.devices.push_back({StrCat("d", i), "t", i < 2 ? 0 : 1, 1e12, 1e12, 1e12});
  return c;
}

TEST(MakeBuckets, HierarchicalWhenTheNodesAreFastInsideRingWhenNot) {
  // One bucket of W[250, 1000] (1e6 bytes). Fast nodes (10 and 5 GB/s): hierarchical
  // 3.12e-4 + 1.02e-3 against ring 1e-4 + (10/6)·1e-3 (cost_test prices both).
  ir::Builder b("one");
  const ir::ValueId x = b.Input("x", {6, 1000});
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy,
                 {b.Linear("fc", x, b.Parameter("fc.weight", {250, 1000}, ir::Init::Normal(0.1))), b.Input("labels", {6})}));
  const ir::Graph g = *std::move(b).Finish();
  instr::Program p;
  p.num_devices = 6;
  p.ratios = {std::vector<double>(6, 1.0 / 6)};
  instr::Instruction place;
  place.kind = instr::InstrKind::kPlaceParameter;
  place.tensor = g.Find("fc.weight");
  ASSERT_TRUE(instr::DeriveTriple(g, place).ok());
  p.instructions = {place};
  const Cluster fast = TwoNodes({1e10, 1e-6}, {5e9, 2e-6});
  std::vector<instr::Bucket> buckets = MakeBuckets(g, costmodel::ClusterModel(fast), Strategy{}, p, 25 << 20);
  ASSERT_EQ(buckets.size(), 1u);
  EXPECT_EQ(buckets[0].impl, instr::CollImpl::kHierarchical);
  // Inside as slow as the network (1 GB/s, 10 µs): hierarchical moves 2(k−1)/k + 2(N−1)/N =
  // 1.5 + 1 tensor sizes through the slowest link against the ring's 2(n−1)/n = 5/3.
  const Cluster slow = TwoNodes({1e9, 1e-5}, {1e9, 1e-5});
  buckets = MakeBuckets(g, costmodel::ClusterModel(slow), Strategy{}, p, 25 << 20);
  EXPECT_EQ(buckets[0].impl, instr::CollImpl::kRing);
  // --flat: never hierarchical.
  Strategy flat;
  flat.allow_hierarchical = false;
  EXPECT_EQ(MakeBuckets(g, costmodel::ClusterModel(fast), flat, p, 25 << 20)[0].impl, instr::CollImpl::kRing);
}

TEST(Search, AZeroGatherIsHierarchicalOnFastNodesAndPaddedOnSlowOnes) {
  // x[6,1000] → fc (W[250, 1000], 1e6 bytes) → cross-entropy, ZeRO only, shares 0.25, 0.25 on
  // node a and 0.125 × 4 on node b. Fast nodes: hierarchical 6.74e-4 < padded 1.3e-3 < grouped
  // 2.06e-3 (cost_test). Nodes as slow as the network: padded 5·1e-5 + 5·1e-9·1e6·0.25 = 1.3e-3
  // < hierarchical 4.15e-4 + 5.1e-4 + 4.05e-4 = 1.33e-3.
  ir::Builder b("one");
  const ir::ValueId x = b.Input("x", {8, 1000});
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy,
                 {b.Linear("fc", x, b.Parameter("fc.weight", {250, 1000}, ir::Init::Normal(0.1))), b.Input("labels", {8})}));
  const ir::Graph g = *std::move(b).Finish();
  Strategy zero = *StrategyByName("zero-even");
  zero.allow_hierarchical = true;
  const std::vector<double> shares = {0.25, 0.25, 0.125, 0.125, 0.125, 0.125};
  auto gather_impl = [&](const Cluster& c) {
    absl::StatusOr<instr::Program> p = SearchProgram(g, c, shares, zero, SynthOptions{});
    EXPECT_TRUE(p.ok()) << p.status();
    for (const instr::Instruction& in : p->instructions) {
      if (in.kind == instr::InstrKind::kAllGather) return in.impl;
    }
    return instr::CollImpl::kNone;
  };
  EXPECT_EQ(gather_impl(TwoNodes({1e10, 1e-6}, {5e9, 2e-6})), instr::CollImpl::kHierarchical);
  EXPECT_EQ(gather_impl(TwoNodes({1e9, 1e-5}, {1e9, 1e-5})), instr::CollImpl::kPadded);
}

TEST(Strategies, BaselinesAreNamed) {
  EXPECT_EQ(BaselineNames(), (std::vector<std::string>{"ddp-ev", "ddp-cp", "fsdp-even", "megatron", "hap", "dp-ev",
                                                       "dp-cp", "tp-even", "zero-even"}));
  const Strategy ddp = *StrategyByName("ddp-ev");
  EXPECT_EQ(ddp.bucket_bytes, (std::vector<double>{25 << 20}));
  EXPECT_TRUE(ddp.overlap);
  const Strategy hap = *StrategyByName("hap");
  EXPECT_FALSE(hap.overlap || hap.allow_grouped || hap.allow_hierarchical || hap.allow_reduce_rules || hap.memory_rows);
  EXPECT_TRUE(hap.flat_world_link_pricing);
  EXPECT_TRUE(hap.bucket_bytes.empty());
  const absl::StatusOr<Strategy> megatron = StrategyByName("megatron");
  ASSERT_TRUE(megatron.ok()) << megatron.status();
  EXPECT_TRUE(megatron->dp_nodes && megatron->inputs_replicated && megatron->even_ratios && megatron->overlap);
  EXPECT_FALSE(StrategyByName("nope").ok());
}

TEST(Megatron, TensorParallelInsideNodesDataParallelAcrossChecksAndTheSynthesizedPlanIsNoSlower) {
  const ir::Graph g = Model("gpt", {}, 8);
  // Two nodes (2 + 4 devices), fast inside, a 1 GB/s NIC.
  const Cluster c = TwoNodes({1e11, 1e-6}, {5e10, 2e-6});
  const auto all = SynthesizeAll(g, c, {Strategy{}, *StrategyByName("megatron")}, SynthOptions{});
  ASSERT_EQ(all.size(), 2u);
  ASSERT_TRUE(all[0].second.ok()) << all[0].second.status();
  ASSERT_TRUE(all[1].second.ok()) << all[1].second.status();
  const instr::Program& p = all[1].second->program;
  EXPECT_TRUE(instr::CheckProgram(g, p).ok()) << instr::CheckProgram(g, p);
  EXPECT_TRUE(p.UsesMesh());
  EXPECT_TRUE(instr::RuntimeSupports(p).ok()) << instr::RuntimeSupports(p);  // executor_test runs it
  // Every op computed from the inputs runs the batch rule over the nodes (an outer rule, or the
  // world rule when the node splits the batch too); no collective crosses the nodes.
  int mesh_rules = 0, column = 0;
  for (const instr::Instruction& in : p.instructions) {
    mesh_rules += in.outer_rule.has_value();
    column += in.rule == instr::RuleId(instr::RuleFamily::kColumn);
    EXPECT_NE(in.level, instr::Level::kNodes);
    if (in.kind == instr::InstrKind::kAllGather || in.kind == instr::InstrKind::kAllReduce ||
        in.kind == instr::InstrKind::kReduceScatter || in.kind == instr::InstrKind::kAllToAll) {
      EXPECT_EQ(in.level, instr::Level::kDevices);
    }
  }
  EXPECT_GT(mesh_rules, 0);
  EXPECT_GT(column, 0);  // tensor parallel inside the node
  // Even node shares (3 of 6 devices' ratios each) and even shares within each node.
  EXPECT_EQ(p.ratios[0], std::vector<double>(6, 1.0 / 6));
  // The synthesized plan ran the dp-nodes mode beside the world mode (spec §3)...
  bool dp_nodes = false;
  for (const std::string& line : all[0].second->log) dp_nodes = dp_nodes || line.rfind("dp-nodes", 0) == 0;
  EXPECT_TRUE(dp_nodes);
  // ... and is seeded with megatron's program: never slower.
  EXPECT_LE(all[0].second->estimate.step_s, all[1].second->estimate.step_s * (1 + 1e-9));
  // One node: no megatron.
  const Cluster one = TwoNodes({1e11, 1e-6}, {5e10, 2e-6});
  Cluster single = one;
  for (costmodel::Device& d : single.devices) d.node = 0;
  single.nodes.pop_back();
  const auto flat = SynthesizeAll(g, single, {*StrategyByName("megatron")}, SynthOptions{});
  EXPECT_NE(flat[0].second.status().message().find("needs a two-level mesh"), std::string::npos)
      << flat[0].second.status();
}

TEST(Synthesize, TheSameInputsGiveTheSameBytesOnAMultiNodeCluster) {
  const ir::Graph g = Model("gpt");
  absl::StatusOr<Cluster> c = costmodel::ReadClusterFile(std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/two-node-mixed.json");
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<std::string> plans;
  for (int run = 0; run < 2; ++run) {
    std::vector<Strategy> all = {Strategy{}};
    for (auto& [name, r] : SynthesizeAll(g, *c, all, SynthOptions{})) {
      ASSERT_TRUE(r.ok()) << name << ": " << r.status();
      instr::Plan plan;
      plan.program = r->program;
      plans.push_back(instr::PlanToJson(g, plan));
    }
  }
  EXPECT_EQ(plans[0], plans[1]);
}

TEST(Search, TheStateBudgetEndsASearchDeterministically) {
  const ir::Graph g = Model("gpt");
  const Cluster c = MakeCluster({2e12, 1e12}, {1e12, 1e12});
  SynthOptions o;
  o.max_states = 10;
  int64_t expanded = 0;
  absl::StatusOr<instr::Program> p = SearchProgram(g, c, {0.5, 0.5}, Strategy{}, o, &expanded);
  ASSERT_EQ(p.status().code(), absl::StatusCode::kOutOfRange) << p.status();
  EXPECT_EQ(p.status().message(),
            "the search expanded its budget of 10 states (SynthOptions::max_states) without reaching the goal");
  EXPECT_EQ(expanded, 10);
  EXPECT_EQ(Synthesize(g, c, Strategy{}, o).status().code(), absl::StatusCode::kOutOfRange);
}

struct BadOption {
  std::function<void(SynthOptions&)> set;
  std::string message;
};

std::vector<BadOption> BadOptions() {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const std::string seconds = "; expected a finite number > 0 (seconds of wall clock for the whole synthesis)";
  return {
      {[](SynthOptions& o) { o.time_limit_s = 0; }, "synth options: time_limit_s is 0" + seconds},
      {[](SynthOptions& o) { o.time_limit_s = -5; }, "synth options: time_limit_s is -5" + seconds},
      {[=](SynthOptions& o) { o.time_limit_s = inf; }, "synth options: time_limit_s is inf" + seconds},
      {[=](SynthOptions& o) { o.time_limit_s = nan; }, "synth options: time_limit_s is nan" + seconds},
      {[](SynthOptions& o) { o.max_rounds = 0; },
       "synth options: max_rounds is 0; expected at least 1 (search ⇄ ratio rounds)"},
      {[](SynthOptions& o) { o.max_states = 0; },
       "synth options: max_states is 0; expected at least 1 (states one search may expand)"},
      {[](SynthOptions& o) { o.cost.parameter_state_factor = -1; },
       "synth options: cost.parameter_state_factor is -1; expected a finite number > 0 (bytes kept per parameter "
       "byte; Adam: 4, SGD: 2)"},
      {[=](SynthOptions& o) { o.cost.optimizer_bytes_factor = inf; },
       "synth options: cost.optimizer_bytes_factor is inf; expected a finite number > 0 (bytes the update moves per "
       "parameter byte; Adam: 7)"},
  };
}

// Per-segment ratios: split groups no instruction ties together get their own row where that
// shortens the step by 0.5%. vgg19 on four nodes (4:2:1 FLOP/s, equal memory bandwidth): the
// batch split of the convolutions keeps ratios ∝ speed while the ZeRO-sharded weights (no
// compute of their own; their memory and their all-gathers) take a flatter row. The same
// inputs give the same bytes.
TEST(Segments, ZeroShardsTakeTheirOwnRowWhereItPays) {
  const ir::Graph g = Model("vgg19");
  absl::StatusOr<Cluster> c = costmodel::ReadClusterFile(std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/four-node-mixed.json");
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<SynthResult> r = Synthesize(g, *c, Strategy{}, SynthOptions{});
  Strategy one_row;
  one_row.segments = false;
  absl::StatusOr<SynthResult> one = Synthesize(g, *c, one_row, SynthOptions{});
  ASSERT_TRUE(r.ok() && one.ok()) << r.status() << one.status();
  const instr::Program& p = r->program;
  ASSERT_GE(p.ratios.size(), 2u);
  ASSERT_EQ(one->program.ratios.size(), 1u);
  EXPECT_LE(r->estimate.step_s, one->estimate.step_s * (1 - 5e-3));
  // The row of the images' batch split, and the row of a ZeRO shard (placed split, all-gathered).
  const int batch = p.groups[static_cast<size_t>(p.GroupOf(instr::Property::Gather(g.Find("images"), 0)))].segment;
  int shard = -1;
  for (size_t i = 0; i + 1 < p.instructions.size(); ++i) {
    const instr::Instruction& in = p.instructions[i];
    const instr::Instruction& next = p.instructions[i + 1];
    if (in.kind == instr::InstrKind::kPlaceParameter && in.dim >= 0 && next.kind == instr::InstrKind::kAllGather &&
        next.tensor == in.tensor) {
      shard = p.groups[static_cast<size_t>(p.GroupOf(in.post[0]))].segment;
      break;
    }
  }
  ASSERT_GE(shard, 0) << "no ZeRO parameter in the plan";
  // Every ZeRO shard in that row; the {compute, storage} segmentation, tried first, is kept.
  for (size_t i = 0; i + 1 < p.instructions.size(); ++i) {
    const instr::Instruction& in = p.instructions[i];
    if (in.kind == instr::InstrKind::kPlaceParameter && in.dim >= 0 && p.instructions[i + 1].kind == instr::InstrKind::kAllGather) {
      EXPECT_EQ(p.groups[static_cast<size_t>(p.GroupOf(in.post[0]))].segment, shard) << g.value(in.tensor).name;
    }
  }
  std::vector<std::string> tries;
  for (const std::string& line : r->log) {
    if (line.rfind("segments ", 0) == 0) tries.push_back(line);
  }
  ASSERT_FALSE(tries.empty());
  EXPECT_EQ(tries.front().rfind("segments {compute, storage}: 2 rows", 0), 0u) << tries.front();
  EXPECT_NE(tries.front().find(": kept"), std::string::npos) << tries.front();
  ASSERT_NE(batch, shard);
  const std::vector<double>& rb = p.ratios[static_cast<size_t>(batch)];
  const std::vector<double>& rs = p.ratios[static_cast<size_t>(shard)];
  // fast0 (4x) and quarter0 (1x): the batch ∝ speed, the shard flatter.
  const size_t fast = 0, quarter = p.ratios[0].size() - 1;
  EXPECT_NEAR(rb[fast] / rb[quarter], 4.0, 1e-6);
  EXPECT_LT(rs[fast], rb[fast]);
  EXPECT_GT(rs[quarter], rb[quarter]);
  absl::StatusOr<SynthResult> again = Synthesize(g, *c, Strategy{}, SynthOptions{});
  ASSERT_TRUE(again.ok());
  instr::Plan pa, pb;
  pa.program = p;
  pb.program = again->program;
  EXPECT_EQ(instr::PlanToJson(g, pa), instr::PlanToJson(g, pb));
}

// Where no segmentation pays, the plan is byte for byte the one-row plan (mlp on mixed-4: two
// rows would save 0.02%).
TEST(Segments, WhereNothingPaysThePlanIsTheOneRowPlan) {
  const ir::Graph g = Model("mlp", {}, 0, ir::Preset::kDefault);
  absl::StatusOr<Cluster> c = costmodel::ReadClusterFile(std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json");
  ASSERT_TRUE(c.ok()) << c.status();
  Strategy one_row;
  one_row.segments = false;
  absl::StatusOr<SynthResult> a = Synthesize(g, *c, Strategy{}, SynthOptions{});
  absl::StatusOr<SynthResult> b = Synthesize(g, *c, one_row, SynthOptions{});
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(a->program.ratios.size(), 1u);
  bool tried = false;  // segmentations were tried and did not pay
  for (const std::string& line : a->log) tried = tried || line.find("not kept (pays under 0.5%)") != std::string::npos;
  EXPECT_TRUE(tried) << absl::StrJoin(a->log, "\n");
  instr::Plan pa, pb;
  pa.program = a->program;
  pb.program = b->program;
  EXPECT_EQ(instr::PlanToJson(g, pa), instr::PlanToJson(g, pb));
}

// The segment LP with every group in segment 0 is the one-row LP; an unused segment keeps the
// row it started from (ties go to the start), and a multi-row program is refused by the one-row
// LP.
TEST(Segments, OneUsedSegmentIsTheOneRowLp) {
  const ir::Graph g = Model("mlp");
  const Cluster c = MakeCluster({3e12, 1e12}, {1e12, 1e12});
  absl::StatusOr<SynthResult> dp = Synthesize(g, c, *StrategyByName("dp-ev"), SynthOptions{});
  ASSERT_TRUE(dp.ok()) << dp.status();
  const costmodel::ClusterModel m(c);
  absl::StatusOr<std::vector<double>> row = OptimizeRatios(g, m, dp->program, SynthOptions{});
  ASSERT_TRUE(row.ok()) << row.status();
  absl::StatusOr<std::vector<std::vector<double>>> rows =
      OptimizeSegmentRatios(g, m, dp->program, SynthOptions{}, std::vector<int>(dp->program.groups.size(), 0), 2);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_NEAR((*rows)[0][i], (*row)[i], 1e-12);
    EXPECT_NEAR((*rows)[1][i], dp->program.ratios[0][i], 1e-12);  // even: where it started
  }
  EXPECT_NE((*row)[0], dp->program.ratios[0][0]);  // the used row moved (3:1 devices)
  instr::Program two = dp->program;
  two.ratios.push_back(two.ratios[0]);
  EXPECT_EQ(OptimizeRatios(g, m, two, SynthOptions{}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(OptimizeSegmentRatios(g, m, dp->program, SynthOptions{}, {}, 2).ok());  // a segment per group
}

TEST(ValidateSynthOptions, DefaultsAreValid) { EXPECT_TRUE(ValidateSynthOptions(SynthOptions{}).ok()); }

TEST(ValidateSynthOptions, NamesTheFieldItsValueAndTheRange) {
  for (const BadOption& bad : BadOptions()) {
    SynthOptions o;
    bad.set(o);
    const absl::Status st = ValidateSynthOptions(o);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad.message;
    EXPECT_EQ(st.message(), bad.message);
  }
}

TEST(ValidateSynthOptions, SynthesizeSearchAndRatiosRejectBadOptionsUpFront) {
  const ir::Graph g = Model("mlp");
  const Cluster c = MakeCluster({2e12, 1e12}, {1e12, 1e12});
  absl::StatusOr<SynthResult> dp = Synthesize(g, c, *StrategyByName("dp-cp"), SynthOptions{});
  ASSERT_TRUE(dp.ok()) << dp.status();
  for (const BadOption& bad : BadOptions()) {
    SynthOptions o;
    bad.set(o);
    EXPECT_EQ(Synthesize(g, c, Strategy{}, o).status().message(), bad.message);
    EXPECT_EQ(SearchProgram(g, c, {0.5, 0.5}, Strategy{}, o).status().message(), bad.message);
    EXPECT_EQ(OptimizeRatios(g, c, dp->program, o).status().message(), bad.message);
  }
}

}  // namespace
}  // namespace hetsynth::synth
