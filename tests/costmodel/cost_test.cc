// The cost model priced by hand: every collective term (padded and grouped all-gather /
// reduce-scatter with uneven shares, all-to-all, ring all-reduce), the gradient all-reduce, the
// optimizer term, compute split and full (GEMM-class and memory-bound), MemoryBound, the memory
// of a program (parameters × state factor, activations, ZeRO's transient gather), a single
// device; the topology (mesh, NIC terms on unequal two-node meshes, hierarchical collectives,
// profiled tables, the reference system's flat pricing); the step as the critical path of two
// streams (buckets, prefetched ZeRO gathers); and the calibration of calibrate.h (α–β fit, node
// classification, emulated cluster).
// Each expected value is worked out in the comment beside it.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "hetsynth/costmodel/calibrate.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/costmodel/cluster_model.h"
#include "hetsynth/costmodel/mesh.h"
#include "hetsynth/costmodel/cost.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/base/status.h"

namespace hetsynth::costmodel {
namespace {

// |actual − expected| ≤ 1e-12 · |expected|: a few roundings of a sum of hand-computed terms.
#define EXPECT_CLOSE(actual, expected) EXPECT_NEAR((actual), (expected), 1e-12 * std::abs(expected))

struct DeviceSpec {
  double flops;      // FLOP/s
  double bandwidth;  // memory bytes/s
};

// One node whose devices d0, d1, … are linked by `link` (which is then also the world link).
Cluster OneNode(const std::vector<DeviceSpec>& devices, Link link) {
  Cluster c;
  c.name = "test";
  c.nodes.push_back({"n0", link});
  c.inter_node = link;
  for (size_t i = 0; i < devices.size(); ++i) {
    c.devices.push_back({StrCat("d", i), "t", 0, devices[i].flops, 1e12, devices[i].bandwidth});
  }
  return c;
}

Term Collective(TermKind kind, double bytes, double times = 1) {
  Term t;
  t.kind = kind;
  t.bytes = bytes;
  t.times = times;
  return t;
}

// x[8,16] → fc (Linear, W[4,16], b[4]) → relu → cross-entropy with labels[8].
//   fc:   32 outputs, 8 rows: matmul 2·8·(4·16) = 1024, bias 32 → forward 1056, backward
//         2·1024 + 32 = 2080: 3136 FLOPs. Bytes 3·4·(32 + 128 + 64 + 4) = 2736.
//   relu: forward 32 + backward 32 = 64 FLOPs. Bytes 3·4·(32 + 32) = 768.
//   loss: 4·32 + 3·32 = 224 FLOPs. Bytes 3·4·(1 + 32 + 8) = 492.
ir::Graph Tiny() {
  ir::Builder b("tiny");
  const ir::ValueId x = b.Input("x", {8, 16});
  const ir::ValueId w = b.Parameter("fc.weight", {4, 16}, ir::Init::Normal(0.1));
  const ir::ValueId bias = b.Parameter("fc.bias", {4}, ir::Init::Zeros());
  const ir::ValueId h = b.Relu("relu", b.Linear("fc", x, w, bias));
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy, {h, b.Input("labels", {8})}));
  absl::StatusOr<ir::Graph> g = std::move(b).Finish();
  EXPECT_TRUE(g.ok()) << g.status();
  return *std::move(g);
}

ir::NodeId NodeOf(const ir::Graph& g, const std::string& value) { return g.value(g.Find(value)).producer; }

instr::Instruction Place(const ir::Graph& g, const std::string& t, int dim = -1) {
  instr::Instruction in;
  in.kind = g.value(g.Find(t)).kind == ir::ValueKind::kInput ? instr::InstrKind::kPlaceInput
                                                             : instr::InstrKind::kPlaceParameter;
  in.tensor = g.Find(t);
  in.dim = dim;
  EXPECT_TRUE(instr::DeriveTriple(g, in).ok()) << t;
  return in;
}

instr::Instruction Compute(const ir::Graph& g, const std::string& node, const std::string& rule) {
  instr::Instruction in;
  in.kind = instr::InstrKind::kCompute;
  in.node = NodeOf(g, node);
  EXPECT_TRUE(instr::ParseRuleName(rule, &in.rule)) << rule;
  const absl::Status st = instr::DeriveTriple(g, in);
  EXPECT_TRUE(st.ok()) << st;
  return in;
}

instr::Instruction Move(const ir::Graph& g, instr::InstrKind kind, const std::string& t, int dim,
                        instr::CollImpl impl, int dim2 = -1) {
  instr::Instruction in;
  in.kind = kind;
  in.tensor = g.Find(t);
  in.dim = dim;
  in.dim2 = dim2;
  in.impl = impl;
  const absl::Status st = instr::DeriveTriple(g, in);
  EXPECT_TRUE(st.ok()) << st;
  return in;
}

instr::Program Checked(const ir::Graph& g, instr::Program p) {
  EXPECT_TRUE(instr::BuildSplitGroups(g, p).ok());
  const absl::Status st = instr::CheckProgram(g, p);
  EXPECT_TRUE(st.ok()) << st;
  return p;
}

// ---- the collective table and the terms priced with it --------------------------------------

// Four devices on a link of 1 GB/s (β = 1e-9 s/B) and 10 µs latency; a tensor of B = 4e6 bytes
// cut 0.4 / 0.3 / 0.2 / 0.1.
const Link kLink{1e9, 1e-5};
const std::vector<double> kUneven = {0.4, 0.3, 0.2, 0.1};

TEST(CollectiveCost, TableGivesRoundsLatenciesVolumeAndShareMeasurePerKind) {
  const CollectiveCoefficients padded = CollectiveCost(TermKind::kGatherPadded, 4);
  EXPECT_EQ(padded.rounds, 3);  // n − 1 shifts of the largest shard
  EXPECT_EQ(padded.latencies, 1);
  EXPECT_EQ(padded.volume, 1);
  EXPECT_EQ(padded.measure, ShareMeasure::kMaxShare);
  const CollectiveCoefficients grouped = CollectiveCost(TermKind::kGatherGrouped, 4);
  EXPECT_EQ(grouped.rounds, 1);
  EXPECT_EQ(grouped.latencies, 4);  // n
  EXPECT_EQ(grouped.volume, 1);
  EXPECT_EQ(grouped.measure, ShareMeasure::kGroupedMax);
  const CollectiveCoefficients a2a = CollectiveCost(TermKind::kAllToAll, 4);
  EXPECT_EQ(a2a.rounds, 1);
  EXPECT_EQ(a2a.latencies, 3);  // n − 1
  EXPECT_EQ(a2a.volume, 1);
  EXPECT_EQ(a2a.measure, ShareMeasure::kMaxShare);
  const CollectiveCoefficients ring = CollectiveCost(TermKind::kAllReduce, 4);
  EXPECT_EQ(ring.rounds, 1);
  EXPECT_EQ(ring.latencies, 6);    // 2(n − 1)
  EXPECT_EQ(ring.volume, 1.5);     // 2(n − 1)/n
  EXPECT_EQ(ring.measure, ShareMeasure::kNone);
  for (TermKind k : {TermKind::kComputeSplit, TermKind::kComputeFull, TermKind::kFree}) {
    const CollectiveCoefficients none = CollectiveCost(k, 4);
    EXPECT_EQ(none.rounds, 0);
    EXPECT_EQ(none.latencies, 0);
    EXPECT_EQ(none.volume, 0);
  }
}

TEST(CollectiveCost, ShareMeasuresOfUnevenShares) {
  EXPECT_EQ(MeasureShares(ShareMeasure::kNone, 4, kUneven), 1.0);
  EXPECT_EQ(MeasureShares(ShareMeasure::kMaxShare, 4, kUneven), 0.4);
  // max over i of max(1 − s_i, 3·s_i): 0.4 → max(0.6, 1.2); 0.3 → 0.9; 0.2 → 0.8; 0.1 → 0.9.
  EXPECT_DOUBLE_EQ(MeasureShares(ShareMeasure::kGroupedMax, 4, kUneven), 1.2);
  // Even shares: every device receives as much as it sends, 3/4 of the tensor.
  EXPECT_DOUBLE_EQ(MeasureShares(ShareMeasure::kGroupedMax, 4, {0.25, 0.25, 0.25, 0.25}), 0.75);
}

TEST(TermTime, PaddedGatherWaitsForTheLargestShardInEachOfNMinus1Rounds) {
  const Cluster c = OneNode({{1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}}, kLink);
  // (n−1)·(α + β·B·max s) = 3·(1e-5 + 1e-9·4e6·0.4) = 3·(1e-5 + 1.6e-3) = 4.83e-3 s.
  EXPECT_DOUBLE_EQ(TermTime(Collective(TermKind::kGatherPadded, 4e6), kUneven, c), 4.83e-3);
  // times = 2: the forward collective and its backward dual.
  EXPECT_DOUBLE_EQ(TermTime(Collective(TermKind::kGatherPadded, 4e6, 2), kUneven, c), 9.66e-3);
}

TEST(TermTime, GroupedGatherPaysNLatenciesAndTheBusiestDevicesTraffic) {
  const Cluster c = OneNode({{1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}}, kLink);
  // n·α + β·B·1.2 = 4e-5 + 4e-3·1.2 = 4.84e-3 s: cheaper in bytes than padded (4.8e-3 vs
  // 3·1.6e-3), dearer in latency.
  EXPECT_DOUBLE_EQ(TermTime(Collective(TermKind::kGatherGrouped, 4e6), kUneven, c), 4.84e-3);
  // Even shares: 4e-5 + 4e-3·0.75 = 3.04e-3 s.
  EXPECT_DOUBLE_EQ(TermTime(Collective(TermKind::kGatherGrouped, 4e6), {0.25, 0.25, 0.25, 0.25}, c), 3.04e-3);
}

TEST(TermTime, AllToAllPaysNMinus1LatenciesAndTheLargestShard) {
  const Cluster c = OneNode({{1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}}, kLink);
  // (n−1)·α + β·B·max s = 3e-5 + 1.6e-3 = 1.63e-3 s.
  EXPECT_DOUBLE_EQ(TermTime(Collective(TermKind::kAllToAll, 4e6), kUneven, c), 1.63e-3);
}

TEST(TermTime, RingAllReduceIgnoresTheShares) {
  const Cluster c = OneNode({{1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}}, kLink);
  // 2(n−1)·α + 2(n−1)/n·β·B = 6e-5 + 1.5·4e-3 = 6.06e-3 s, whatever the shares.
  EXPECT_DOUBLE_EQ(TermTime(Collective(TermKind::kAllReduce, 4e6), kUneven, c), 6.06e-3);
  EXPECT_DOUBLE_EQ(TermTime(Collective(TermKind::kAllReduce, 4e6), {0.25, 0.25, 0.25, 0.25}, c), 6.06e-3);
}

TEST(TermTime, CollectivesOnOneDeviceAreFree) {
  const Cluster one = OneNode({{1e12, 1e11}}, kLink);
  for (TermKind k : {TermKind::kGatherPadded, TermKind::kGatherGrouped, TermKind::kAllToAll, TermKind::kAllReduce}) {
    EXPECT_EQ(TermTime(Collective(k, 4e6, 2), {1.0}, one), 0.0) << static_cast<int>(k);
  }
  EXPECT_EQ(TermTime(Term{}, {1.0}, one), 0.0);  // kFree
}

TEST(TermTime, CollectiveUsesTheSlowestLinkItCrosses) {
  // Two nodes: NVLink-like inside (10 GB/s, 1 µs), a 1 GB/s, 10 µs network between. A ring
  // all-reduce over both nodes crosses the network: 2·3·1e-5 + 1.5·1e-9·4e6 = 6.06e-3 s.
  Cluster c = OneNode({{1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}}, Link{1e10, 1e-6});
  c.nodes.push_back({"n1", Link{1e10, 1e-6}});
  c.devices[2].node = c.devices[3].node = 1;
  c.inter_node = kLink;
  EXPECT_DOUBLE_EQ(TermTime(Collective(TermKind::kAllReduce, 4e6), kUneven, c), 6.06e-3);
}

TEST(TermTime, ComputeSplitIsTheSlowestDevicesShareAndFullTheSlowestDevice) {
  // FLOP/s 4e12, 2e12, 1e12, 1e12; bandwidth a tenth of that.
  const Cluster c = OneNode({{4e12, 4e11}, {2e12, 2e11}, {1e12, 1e11}, {1e12, 1e11}}, kLink);
  Term t;
  t.kind = TermKind::kComputeSplit;
  t.coefficient = 1e12;  // FLOPs
  // max(1e12·0.4/4e12, 1e12·0.3/2e12, 1e12·0.2/1e12, 1e12·0.1/1e12) = max(0.1, 0.15, 0.2, 0.1).
  EXPECT_DOUBLE_EQ(TermTime(t, kUneven, c), 0.2);
  t.kind = TermKind::kComputeFull;  // every device does it all: 1e12 / 1e12
  EXPECT_DOUBLE_EQ(TermTime(t, kUneven, c), 1.0);
  t.memory_bound = true;  // bytes over bandwidth: 1e12 / 1e11
  EXPECT_DOUBLE_EQ(TermTime(t, kUneven, c), 10.0);
  t.kind = TermKind::kComputeSplit;  // max(0.4/4e11, 0.3/2e11, 0.2/1e11, 0.1/1e11)·1e12
  EXPECT_DOUBLE_EQ(TermTime(t, kUneven, c), 2.0);
}

TEST(TermTime, GemmOperandBandwidthChargesWholeOperandsToEveryDeviceAndSplitOnesByShare) {
  // FLOP/s 4e12, 2e12, 1e12, 1e12; GEMM operand bandwidth a hundredth of that on the first
  // three, none on the last (its operands are not priced apart).
  Cluster c = OneNode({{4e12, 4e11}, {2e12, 2e11}, {1e12, 1e11}, {1e12, 1e11}}, kLink);
  for (int i = 0; i < 3; ++i) c.devices[static_cast<size_t>(i)].gemm_operand_bandwidth = c.devices[static_cast<size_t>(i)].flops / 100;
  Term t;
  t.kind = TermKind::kComputeSplit;
  t.coefficient = 1e12;        // FLOPs
  t.operand_bytes_whole = 1e9;  // every device streams it whole
  t.operand_bytes_split = 2e9;  // by share
  // d0: 0.1 + (1e9 + 0.4·2e9)/4e10 = 0.145;  d1: 0.15 + (1e9 + 0.3·2e9)/2e10 = 0.23;
  // d2: 0.2 + (1e9 + 0.2·2e9)/1e10 = 0.34;   d3: 0.1 (no operand bandwidth).
  EXPECT_DOUBLE_EQ(ComputeSeconds(t, 0.4, c.devices[0]), 0.145);
  EXPECT_DOUBLE_EQ(ComputeSeconds(t, 0.3, c.devices[1]), 0.23);
  EXPECT_DOUBLE_EQ(TermTime(t, kUneven, c), 0.34);
  t.group = 0;  // each device's own (what its rank measures)
  const std::vector<double> per_device =
      DeviceComputeSeconds(ProgramCost{{t}, {}, false}, Shares{kUneven}, ClusterModel(c));
  ASSERT_EQ(per_device.size(), 4u);
  EXPECT_DOUBLE_EQ(per_device[0], 0.145);
  EXPECT_DOUBLE_EQ(per_device[2], 0.34);
  EXPECT_DOUBLE_EQ(per_device[3], 0.1);
  // Full work: share 1 on every device, all of it: d2 1 + 3e9/1e10.
  t.kind = TermKind::kComputeFull;
  EXPECT_DOUBLE_EQ(TermTime(t, kUneven, c), 1.3);
}

// ---- terms of a graph ------------------------------------------------------------------------

TEST(CostTerms, NodeComputeBytesIsThreeTimesInputsAndOutput) {
  const ir::Graph g = Tiny();
  EXPECT_EQ(ValueBytes(g, g.Find("fc.weight")), 256.0);  // 64 floats
  EXPECT_EQ(NodeComputeBytes(g, NodeOf(g, "fc")), 2736.0);
  EXPECT_EQ(NodeComputeBytes(g, NodeOf(g, "relu")), 768.0);
  EXPECT_EQ(NodeComputeBytes(g, NodeOf(g, "loss")), 492.0);
}

TEST(CostTerms, MemoryBoundComparesBytesPerBandwidthWithFlopsPerSpeedOfTheAverageDevice) {
  // Σ FLOP/s = 2e12, Σ bandwidth = 2e11: 100 FLOPs take 5e-11 s, 10 bytes too; strictly more
  // bytes is memory-bound.
  const Cluster c = OneNode({{1e12, 1e11}, {1e12, 1e11}}, kLink);
  EXPECT_FALSE(MemoryBound(100, 10, c));
  EXPECT_TRUE(MemoryBound(100, 11, c));
  EXPECT_FALSE(MemoryBound(100, 9, c));
}

TEST(CostTerms, ComputeTermPricesGemmByFlopsAndOthersByWhatBindsThem) {
  const ir::Graph g = Tiny();
  const Cluster slow_memory = OneNode({{1e12, 1e11}, {1e12, 1e11}}, kLink);
  const auto rules = [&](const std::string& n) { return instr::ShardingRules(g, NodeOf(g, n)); };
  // fc is GEMM-class: FLOPs even though 2736 bytes / 2e11 > 3136 FLOPs / 2e12.
  Term fc = ComputeTerm(g, NodeOf(g, "fc"), rules("fc")[0], slow_memory);
  EXPECT_EQ(fc.kind, TermKind::kComputeFull);  // "replicated"
  EXPECT_FALSE(fc.memory_bound);
  EXPECT_EQ(fc.coefficient, 3136.0);
  fc = ComputeTerm(g, NodeOf(g, "fc"), rules("fc")[1], slow_memory);  // "batch0"
  EXPECT_EQ(fc.kind, TermKind::kComputeSplit);
  // relu: 768 B / 2e11 = 3.84e-9 s > 64 FLOPs / 2e12 = 3.2e-11 s: memory-bound, priced in bytes.
  const Term relu = ComputeTerm(g, NodeOf(g, "relu"), rules("relu")[0], slow_memory);
  EXPECT_TRUE(relu.memory_bound);
  EXPECT_EQ(relu.coefficient, 768.0);
  // With memory 1e4 times faster: 768 / 2e15 = 3.84e-13 s < 3.2e-11 s: priced in FLOPs.
  const Cluster fast_memory = OneNode({{1e12, 1e15}, {1e12, 1e15}}, kLink);
  const Term relu_fast = ComputeTerm(g, NodeOf(g, "relu"), rules("relu")[0], fast_memory);
  EXPECT_FALSE(relu_fast.memory_bound);
  EXPECT_EQ(relu_fast.coefficient, 64.0);
}

TEST(CostTerms, GemmOperandsAreWholeWhereTheRuleLeavesThemWholeAndSplitWhereItSplits) {
  // fc's operands, 3 × bytes: x 3·512, W 3·256, b 3·16, output 3·128.
  const ir::Graph g = Tiny();
  const Cluster c = OneNode({{2e9, 1e9}, {1e9, 0.5e9}}, Link{1e9, 1e-6});
  const auto rules = instr::ShardingRules(g, NodeOf(g, "fc"));
  const Term replicated = ComputeTerm(g, NodeOf(g, "fc"), rules[0], c);
  EXPECT_EQ(replicated.operand_bytes_whole, 3.0 * (512 + 256 + 16 + 128));
  EXPECT_EQ(replicated.operand_bytes_split, 0.0);
  EXPECT_EQ(OperandBytes(g, g.Find("fc.weight")), 768.0);
  const Term batch = ComputeTerm(g, NodeOf(g, "fc"), rules[1], c);  // "batch0": W and b whole
  EXPECT_EQ(batch.operand_bytes_whole, 3.0 * (256 + 16));
  EXPECT_EQ(batch.operand_bytes_split, 3.0 * (512 + 128));
  // A column split (W's rows, b and the output's columns) leaves x whole.
  for (const instr::ComputeRule& r : rules) {
    if (r.post.kind != instr::PropKind::kGather || r.post.dim != 1) continue;
    const Term column = ComputeTerm(g, NodeOf(g, "fc"), r, c);
    EXPECT_EQ(column.operand_bytes_whole, 3.0 * 512);
    EXPECT_EQ(column.operand_bytes_split, 3.0 * (256 + 16 + 128));
  }
  // Not GEMM-class: no operands priced apart.
  const Term relu = ComputeTerm(g, NodeOf(g, "relu"), instr::ShardingRules(g, NodeOf(g, "relu"))[0], c);
  EXPECT_EQ(relu.operand_bytes_whole + relu.operand_bytes_split, 0.0);
  // Priced: fc batch0 at 0.25 on d1 (1e9 FLOP/s) with an operand bandwidth of 1e9 B/s:
  //   3136·0.25/1e9 + (816 + 0.25·1920)/1e9 = 7.84e-7 + 1.296e-6.
  Device d1 = c.devices[1];
  d1.gemm_operand_bandwidth = 1e9;
  EXPECT_CLOSE(ComputeSeconds(batch, 0.25, d1), 7.84e-7 + 1.296e-6);
}

TEST(CostTerms, CollectiveGradientAndOptimizerTerms) {
  const ir::Graph g = Tiny();
  Term t = CollectiveTerm(g, Move(g, instr::InstrKind::kAllGather, "relu", 0, instr::CollImpl::kGrouped));
  EXPECT_EQ(t.kind, TermKind::kGatherGrouped);
  EXPECT_EQ(t.bytes, 128.0);  // relu: 32 floats
  EXPECT_EQ(t.times, 2.0);    // forward all-gather + backward reduce-scatter
  t = CollectiveTerm(g, Move(g, instr::InstrKind::kReduceScatter, "relu", 0, instr::CollImpl::kPadded));
  EXPECT_EQ(t.kind, TermKind::kGatherPadded);
  t = CollectiveTerm(g, Move(g, instr::InstrKind::kAllToAll, "x", 0, instr::CollImpl::kGrouped, 1));
  EXPECT_EQ(t.kind, TermKind::kAllToAll);
  EXPECT_EQ(t.bytes, 512.0);
  t = CollectiveTerm(g, Move(g, instr::InstrKind::kAllReduce, "relu", -1, instr::CollImpl::kNone));
  EXPECT_EQ(t.kind, TermKind::kAllReduce);

  const Term grad = GradientAllReduceTerm(g, g.Find("fc.weight"));
  EXPECT_EQ(grad.kind, TermKind::kAllReduce);
  EXPECT_EQ(grad.bytes, 256.0);
  EXPECT_EQ(grad.times, 1.0);  // once per step, in backward

  const CostOptions o;  // Adam: the update moves 7 bytes per parameter byte
  Term update = OptimizerTerm(g, g.Find("fc.weight"), /*sharded=*/false, o);
  EXPECT_EQ(update.kind, TermKind::kComputeFull);
  EXPECT_TRUE(update.memory_bound);
  EXPECT_EQ(update.coefficient, 7.0 * 256.0);
  update = OptimizerTerm(g, g.Find("fc.weight"), /*sharded=*/true, CostOptions{4.0, 3.0});
  EXPECT_EQ(update.kind, TermKind::kComputeSplit);
  EXPECT_EQ(update.coefficient, 3.0 * 256.0);
}

// ---- a whole program -------------------------------------------------------------------------

// Two devices: d0 2e9 FLOP/s and 1 GB/s, d1 1e9 FLOP/s and 0.5 GB/s; a 1 GB/s link with 1 µs
// latency. Σ FLOP/s 3e9, Σ bandwidth 1.5e9: relu (768 B vs 64 FLOPs) and loss (492 B vs 224
// FLOPs) are memory-bound (768/1.5e9 > 64/3e9, 492/1.5e9 > 224/3e9), fc is GEMM-class.
Cluster TwoDevices() { return OneNode({{2e9, 1e9}, {1e9, 0.5e9}}, Link{1e9, 1e-6}); }

// What kernels save for backward stays on the device like an output: attention's
// probabilities, B·heads·T·T floats, split as the output is.
TEST(DescribeCost, AttentionProbabilitiesCountAsMemory) {
  ir::Builder b("att");
  const ir::ValueId x = b.Input("x", {4, 8, 16});
  ir::Attrs a;
  a.heads = 2;
  const ir::ValueId y = b.Op("att", ir::OpKind::kAttention, {x, x, x}, a);
  b.SetLoss(b.Op("loss", ir::OpKind::kMseLoss, {y, b.Input("target", {4, 8, 16})}));
  absl::StatusOr<ir::Graph> made = std::move(b).Finish();
  ASSERT_TRUE(made.ok()) << made.status();
  const ir::Graph g = *std::move(made);
  EXPECT_EQ(g.NodeSavedElements(NodeOf(g, "att")), 4.0 * 2 * 8 * 8);
  EXPECT_EQ(g.NodeSavedElements(NodeOf(g, "loss")), 0.0);
  instr::Program p;
  p.num_devices = 2;
  p.ratios = {{0.75, 0.25}};
  p.instructions = {Place(g, "x", 0), Place(g, "target", 0), Compute(g, "att", "batch"), Compute(g, "loss", "batch0")};
  p = Checked(g, p);
  const Estimate e = Evaluate(DescribeCost(g, p, TwoDevices(), CostOptions{}), ProgramShares(p), TwoDevices(),
                              p.instructions.size());
  // By share: x 2048 B, target 2048, att's output 2048 and its probabilities 4·2·8·8·4 = 2048;
  // the scalar loss (Reduce) 4 on both.  d0: 0.75·8192 + 4;  d1: 0.25·8192 + 4.
  ASSERT_EQ(e.memory_bytes.size(), 2u);
  EXPECT_DOUBLE_EQ(e.memory_bytes[0], 0.75 * 8192 + 4);
  EXPECT_DOUBLE_EQ(e.memory_bytes[1], 0.25 * 8192 + 4);
}


TEST(DescribeCost, DataParallelStepAndMemoryByHand) {
  const ir::Graph g = Tiny();
  const Cluster c = TwoDevices();
  instr::Program p;
  p.num_devices = 2;
  p.ratios = {{0.75, 0.25}};  // the batch of 8 rows: 6 and 2
  p.instructions = {Place(g, "x", 0),         Place(g, "labels", 0),         Place(g, "fc.weight"),
                    Place(g, "fc.bias"),      Compute(g, "fc", "batch0"),    Compute(g, "relu", "split0"),
                    Compute(g, "loss", "batch0")};
  p = Checked(g, p);
  const ProgramCost pc = DescribeCost(g, p, c, CostOptions{});
  const Estimate e = Evaluate(pc, ProgramShares(p), c, p.instructions.size());
  // Compute, slowest device per term at shares 0.75 / 0.25:
  //   fc    3136 FLOPs:   max(3136·0.75/2e9, 3136·0.25/1e9) = max(1.176e-6, 7.84e-7)  = 1.176e-6
  //   relu  768 B:        max(768·0.75/1e9, 768·0.25/0.5e9) = max(5.76e-7, 3.84e-7)   = 5.76e-7
  //   loss  492 B:        max(492·0.75/1e9, 492·0.25/0.5e9)                           = 3.69e-7
  //   Adam of W, 7·256 B on every device: 1792/0.5e9                                  = 3.584e-6
  //   Adam of b, 7·16 B:  112/0.5e9                                                   = 2.24e-7
  EXPECT_CLOSE(e.compute_s, 1.176e-6 + 5.76e-7 + 3.69e-7 + 3.584e-6 + 2.24e-7);
  // Gradient all-reduce of each replicated parameter, n = 2: 2α + 1·β·B.
  //   W: 2e-6 + 256e-9 = 2.256e-6;  b: 2e-6 + 16e-9 = 2.016e-6.
  EXPECT_CLOSE(e.communication_s, 2.256e-6 + 2.016e-6);
  EXPECT_CLOSE(e.step_s, e.compute_s + e.communication_s);
  EXPECT_CLOSE(e.instruction_compute_s[2], 3.584e-6);  // W's update is charged to its placement
  EXPECT_CLOSE(e.instruction_communication_s[2], 2.256e-6);
  EXPECT_CLOSE(e.instruction_compute_s[4], 1.176e-6);
  EXPECT_EQ(e.instruction_communication_s[0], 0.0);
  // Each device's own compute (what its rank measures; bench --refit compares them):
  //   d0: 3136·0.75/2e9 + 768·0.75/1e9 + 492·0.75/1e9 + 1792/1e9 + 112/1e9
  //   d1: 3136·0.25/1e9 + 768·0.25/0.5e9 + 492·0.25/0.5e9 + 1792/0.5e9 + 112/0.5e9
  const std::vector<double> per_device = DeviceComputeSeconds(pc, ProgramShares(p), ClusterModel(c));
  ASSERT_EQ(per_device.size(), 2u);
  EXPECT_CLOSE(per_device[0], 1.176e-6 + 5.76e-7 + 3.69e-7 + 1.792e-6 + 1.12e-7);
  EXPECT_CLOSE(per_device[1], 7.84e-7 + 3.84e-7 + 2.46e-7 + 3.584e-6 + 2.24e-7);
  // Memory: W and b replicated × 4 (value, gradient, Adam m and v): 4·256 + 4·16 = 1088; the
  // scalar loss on both (Reduce): 4; by share: x 512, labels 32, fc 128, relu 128 = 800.
  //   d0: 1092 + 0.75·800 = 1692;  d1: 1092 + 0.25·800 = 1292.
  ASSERT_EQ(e.memory_bytes.size(), 2u);
  EXPECT_DOUBLE_EQ(e.memory_bytes[0], 1692.0);
  EXPECT_DOUBLE_EQ(e.memory_bytes[1], 1292.0);
  // SGD keeps value + gradient: 2 × parameters.
  const Estimate sgd = Evaluate(DescribeCost(g, p, c, CostOptions{2.0, 3.0}), ProgramShares(p), c, p.instructions.size());
  EXPECT_DOUBLE_EQ(sgd.memory_bytes[0], 2 * 272 + 4 + 0.75 * 800);
}

TEST(DescribeCost, ZeroGatherIsTransientAndAGatheredActivationIsKept) {
  const ir::Graph g = Tiny();
  const Cluster c = TwoDevices();
  instr::Program p;
  p.num_devices = 2;
  p.ratios = {{0.75, 0.25}};  // batch 8 rows: 6 / 2; W's 4 rows: 3 / 1
  p.instructions = {Place(g, "x", 0),
                    Place(g, "labels"),
                    Place(g, "fc.weight", 0),  // ZeRO-3: stored and updated sharded
                    Move(g, instr::InstrKind::kAllGather, "fc.weight", 0, instr::CollImpl::kGrouped),
                    Place(g, "fc.bias"),
                    Compute(g, "fc", "batch0"),
                    Compute(g, "relu", "split0"),
                    Move(g, instr::InstrKind::kAllGather, "relu", 0, instr::CollImpl::kPadded),
                    Compute(g, "loss", "replicated")};
  p = Checked(g, p);
  const Estimate e = Evaluate(DescribeCost(g, p, c, CostOptions{}), ProgramShares(p), c, p.instructions.size());
  // Communication (n = 2, α = 1e-6, β = 1e-9), forward + backward (× 2) for the gathers:
  //   all-gather W, grouped: 2α + β·256·max(max(0.25, 0.75), max(0.75, 0.25)) = 2e-6 + 1.92e-7,
  //                          × 2 = 4.384e-6 (no gradient all-reduce: W is sharded)
  //   all-reduce of b's gradient: 2α + β·16 = 2.016e-6
  //   all-gather relu, padded: 1·(α + β·128·0.75) = 1.096e-6, × 2 = 2.192e-6
  EXPECT_CLOSE(e.instruction_communication_s[3], 4.384e-6);
  EXPECT_CLOSE(e.instruction_communication_s[7], 2.192e-6);
  EXPECT_CLOSE(e.communication_s, 4.384e-6 + 2.016e-6 + 2.192e-6);
  // Compute: Adam of W by share, max(1792·0.75/1e9, 1792·0.25/0.5e9) = 1.344e-6; of b
  // 2.24e-7; fc 1.176e-6; relu 5.76e-7; loss replicated, 492/0.5e9 = 9.84e-7.
  EXPECT_CLOSE(e.instruction_compute_s[2], 1.344e-6);
  EXPECT_CLOSE(e.compute_s, 1.344e-6 + 2.24e-7 + 1.176e-6 + 5.76e-7 + 9.84e-7);
  // Memory. Whole on both: labels 32, b 4·16 = 64, the gathered relu 128 (kept for backward),
  // loss 4 = 228. By batch share: x 512 + fc 128 + relu 128 = 768. W by its share: 4·256 = 1024.
  // The gathered W is transient (freed after use, gathered again for backward): nothing.
  //   d0: 228 + 0.75·768 + 0.75·1024 = 1572;  d1: 228 + 192 + 256 = 676.
  EXPECT_DOUBLE_EQ(e.memory_bytes[0], 1572.0);
  EXPECT_DOUBLE_EQ(e.memory_bytes[1], 676.0);
}

TEST(DescribeCost, OneDeviceHasNoCommunication) {
  const ir::Graph g = Tiny();
  const Cluster c = OneNode({{2e9, 1e9}}, Link{1e9, 1e-6});
  instr::Program p;
  p.num_devices = 1;
  p.ratios = {{1.0}};
  p.instructions = {Place(g, "x", 0),      Place(g, "labels", 0),      Place(g, "fc.weight"),
                    Place(g, "fc.bias"),   Compute(g, "fc", "batch0"), Compute(g, "relu", "split0"),
                    Compute(g, "loss", "batch0")};
  p = Checked(g, p);
  const Estimate e = Evaluate(DescribeCost(g, p, c, CostOptions{}), ProgramShares(p), c, p.instructions.size());
  EXPECT_EQ(e.communication_s, 0.0);
  // On one device with 1 GB/s memory (Σ = the device): fc 3136/2e9 = 1.568e-6; relu 768/1e9;
  // loss 492/1e9; Adam 1792/1e9 + 112/1e9.
  EXPECT_CLOSE(e.compute_s, 1.568e-6 + 7.68e-7 + 4.92e-7 + 1.792e-6 + 1.12e-7);
  EXPECT_DOUBLE_EQ(e.memory_bytes[0], 1092.0 + 800.0);
}

// ---- topology: the mesh, NICs, hierarchical collectives, tables (cluster_model.h) -------------

// Node a: d0, d1 on a 10 GB/s, 1 µs link (β_a = 1e-10 s/B); node b: d2..d5 on 5 GB/s, 2 µs
// (β_b = 2e-10); every node's NIC 1 GB/s (β_net = 1e-9), 10 µs. n = 6 devices, N = 2 nodes,
// k = (2, 4). The world link (slowest of everything crossed) is the NIC's: α = 1e-5.
Cluster TwoNodes() {
  Cluster c;
  c.name = "two";
  c.nodes = {{"a", Link{1e10, 1e-6}}, {"b", Link{5e9, 2e-6}}};
  c.inter_node = Link{1e9, 1e-5};
  for (int i = 0; i < 6; ++i) c.devices.push_back({StrCat("d", i), "t", i < 2 ? 0 : 1, 1e12, 1e12, 1e11});
  return c;
}
// Shares 0.25, 0.25 on node a and 0.125 × 4 on node b: S_a = S_b = 0.5. B = 1e6 bytes.
const std::vector<double> kTwoNodeShares = {0.25, 0.25, 0.125, 0.125, 0.125, 0.125};
constexpr double kB = 1e6;

TEST(MeshOf, NodeMajorRanksOnTwoOrMoreNodesAreTwoLevel) {
  const Mesh m = MeshOf(TwoNodes());
  EXPECT_TRUE(m.two_level);
  EXPECT_EQ(m.nodes, (std::vector<std::vector<DeviceId>>{{0, 1}, {2, 3, 4, 5}}));
  EXPECT_EQ(m.node_of, (std::vector<NodeId>{0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(m.Describe(), "two-level: 2 nodes (2, 4 devices)");
  Cluster mixed = TwoNodes();
  mixed.devices[1].node = 1;  // node a = {d0}, node b = {d1 … d5}: unequal, still node-major
  EXPECT_TRUE(MeshOf(mixed).two_level);
  mixed.devices[5].node = 0;  // node a = {0, 5}: not contiguous
  EXPECT_FALSE(MeshOf(mixed).two_level);
  EXPECT_EQ(MeshOf(mixed).Describe(), "flat: 2 nodes, ranks not node-major");
  const Mesh one = MeshOf(OneNode({{1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}}, kLink));
  EXPECT_FALSE(one.two_level);
  EXPECT_EQ(one.Describe(), "flat: one node of 3 devices");
}

TEST(ClusterModel, FlatPaddedPaysTheSlowerOfDeviceLinkAndNicForTheLargestShard) {
  const Cluster c = TwoNodes();
  const ClusterModel m(c);
  // (n−1)·α + (n−1)·max(β_dev, β_net)·B·max s = 5·1e-5 + 5·1e-9·1e6·0.25 = 5e-5 + 1.25e-3.
  EXPECT_CLOSE(m.Seconds(TermKind::kGatherPadded, instr::InstrKind::kAllGather, kB, kTwoNodeShares, kTwoNodeShares),
               1.3e-3);
}

TEST(ClusterModel, FlatGroupedPaysEveryShardThroughTheNicOfEachReceivingDevice) {
  const Cluster c = TwoNodes();
  const ClusterModel m(c);
  // n·α = 6e-5, plus the larger of
  //   device links: β_dev·B·max_i max(1 − s_i, 5·s_i) = 2e-10·1e6·1.25 = 2.5e-4 (d0: max(0.75, 1.25));
  //   NICs: β_net·B·max_j max(S_j·(n − k_j), (1 − S_j)·k_j): a max(0.5·4, 0.5·2) = 2,
  //         b max(0.5·2, 0.5·4) = 2 → 1e-9·1e6·2 = 2e-3.
  EXPECT_CLOSE(m.Seconds(TermKind::kGatherGrouped, instr::InstrKind::kAllGather, kB, kTwoNodeShares, kTwoNodeShares),
               2.06e-3);
  // The same on one node is today's formula: no NIC.
  const Cluster one = OneNode({{1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}, {1e12, 1e11}}, kLink);
  EXPECT_DOUBLE_EQ(ClusterModel(one).Seconds(TermKind::kGatherGrouped, instr::InstrKind::kAllGather, 4e6, kUneven, kUneven),
                   4.84e-3);
}

TEST(ClusterModel, FlatAllToAllPaysEachNodesOutsideExchange) {
  const Cluster c = TwoNodes();
  const ClusterModel m(c);
  // After: 0.5 on d0, 0.1 elsewhere: S'_a = 0.6, S'_b = 0.4. (n−1)·α = 5e-5, plus the larger of
  //   β_dev·B·max s = 2e-10·1e6·0.25 = 5e-5 and
  //   β_net·B·max_j max(S_j(1 − S'_j), S'_j(1 − S_j)): a max(0.5·0.4, 0.6·0.5) = 0.3,
  //   b max(0.5·0.6, 0.4·0.5) = 0.3 → 3e-4.
  const std::vector<double> post = {0.5, 0.1, 0.1, 0.1, 0.1, 0.1};
  EXPECT_CLOSE(m.Seconds(TermKind::kAllToAll, instr::InstrKind::kAllToAll, kB, kTwoNodeShares, post), 3.5e-4);
  // As a term: forward and its dual (shares swapped, the same exchange).
  Term t = Collective(TermKind::kAllToAll, kB, 2);
  t.op = instr::InstrKind::kAllToAll;
  const TermParts parts = TermSplit(t, kTwoNodeShares, post, m);
  EXPECT_CLOSE(parts.forward, 3.5e-4);
  EXPECT_CLOSE(parts.backward, 3.5e-4);
}

TEST(ClusterModel, RingAllReduceCrossesTheNicOncePerRingEdge) {
  const Cluster c = TwoNodes();
  const ClusterModel m(c);
  // 2(n−1)·α + 2(n−1)/n·max(β_dev, β_net)·B = 1e-4 + (10/6)·1e-3.
  EXPECT_CLOSE(m.Seconds(TermKind::kAllReduce, instr::InstrKind::kAllReduce, kB, kTwoNodeShares, kTwoNodeShares),
               1e-4 + 10.0 / 6.0 * 1e-3);
}

TEST(ClusterModel, HierarchicalAllReduceIsTheSlowestNodeInsidePlusOneRingAcrossNodes) {
  const Cluster c = TwoNodes();
  const ClusterModel m(c);
  ASSERT_TRUE(m.hierarchical());
  // Inside: max_j 2[(k_j−1)·α_j + (k_j−1)/k_j·β_j·B]: a 2·1e-6 + 1·1e-10·1e6 = 1.02e-4,
  //   b 2·3·2e-6 + 1.5·2e-10·1e6 = 1.2e-5 + 3e-4 = 3.12e-4;
  // across: 2(N−1)·α_net + 2(N−1)/N·β_net·B = 2e-5 + 1e-3. Cheaper than the ring's 1.767e-3.
  EXPECT_CLOSE(m.Seconds(TermKind::kAllReduceHierarchical, instr::InstrKind::kAllReduce, kB, kTwoNodeShares,
                         kTwoNodeShares),
               3.12e-4 + 1.02e-3);
}

TEST(ClusterModel, HierarchicalAllGatherGathersInsideExchangesNodePiecesAndGathersAgain) {
  const Cluster c = TwoNodes();
  const ClusterModel m(c);
  // (1) inside, grouped, k_j·α_j + β_j·B·max_i max(S_j − s_i, (k_j−1)·s_i):
  //     a 2e-6 + 1e-10·1e6·0.25 = 2.7e-5; b 8e-6 + 2e-10·1e6·0.375 = 8.3e-5 → 8.3e-5;
  // (2) across, (N−1)·α_net + β_net·B·max_j max(S_j·(N−1), 1 − S_j) = 1e-5 + 1e-9·1e6·0.5 = 5.1e-4;
  // (3) inside, (k_j−1)·α_j + (k_j−1)/k_j·β_j·(1 − S_j)·B: a 1e-6 + 0.5·1e-10·0.5·1e6 = 2.6e-5,
  //     b 6e-6 + 0.75·2e-10·0.5·1e6 = 8.1e-5 → 8.1e-5.
  EXPECT_CLOSE(m.Seconds(TermKind::kGatherHierarchical, instr::InstrKind::kAllGather, kB, kTwoNodeShares, kTwoNodeShares),
               8.3e-5 + 5.1e-4 + 8.1e-5);
  // The reduce-scatter is its transpose: the same time.
  EXPECT_CLOSE(m.Seconds(TermKind::kGatherHierarchical, instr::InstrKind::kReduceScatter, kB, kTwoNodeShares,
                         kTwoNodeShares),
               6.74e-4);
}

TEST(ClusterModel, NoHierarchyOnAFlatMeshOrOneDevice) {
  Cluster c = TwoNodes();
  c.devices[5].node = 0;  // ranks not node-major
  const ClusterModel m(c);
  EXPECT_FALSE(m.hierarchical());
  EXPECT_TRUE(m.Price(TermKind::kAllReduceHierarchical).phases.empty());
  const Cluster one = OneNode({{1e12, 1e11}}, kLink);
  EXPECT_EQ(ClusterModel(one).Seconds(TermKind::kAllReduce, instr::InstrKind::kAllReduce, kB, {1.0}, {1.0}), 0.0);
}

TEST(ClusterModel, FlatWorldLinkPricingIsOneAlphaBetaOverTheSlowestLink) {
  const Cluster c = TwoNodes();
  const ClusterModel m(c, Pricing::kFlatWorldLink);
  EXPECT_FALSE(m.hierarchical());
  // Grouped without NICs: n·α + β_world·B·1.25 = 6e-5 + 1e-9·1e6·1.25.
  EXPECT_CLOSE(m.Seconds(TermKind::kGatherGrouped, instr::InstrKind::kAllGather, kB, kTwoNodeShares, kTwoNodeShares),
               6e-5 + 1.25e-3);
  // All-to-all: (n−1)·α + β_world·B·max s = 5e-5 + 2.5e-4.
  EXPECT_CLOSE(m.Seconds(TermKind::kAllToAll, instr::InstrKind::kAllToAll, kB, kTwoNodeShares, kTwoNodeShares), 3e-4);
}

TEST(TableSeconds, InterpolatesBetweenSamplesFloorsBelowAndExtendsAbove) {
  const CollectiveTable t{"all_reduce", "inter_node", {{1e6, 2e-3}, {4e6, 5e-3}}};
  EXPECT_DOUBLE_EQ(TableSeconds(t, 1e6), 2e-3);
  EXPECT_DOUBLE_EQ(TableSeconds(t, 2e6), 3e-3);   // 2e-3 + 3e-3 · (1e6 / 3e6)
  EXPECT_DOUBLE_EQ(TableSeconds(t, 5e5), 2e-3);   // below the first sample: its time
  EXPECT_DOUBLE_EQ(TableSeconds(t, 1e7), 1.1e-2);  // the last segment extended: 5e-3 + 1e-3 · 6
  const CollectiveTable one{"all_gather", "intra_node", {{1e6, 1e-3}}};
  EXPECT_DOUBLE_EQ(TableSeconds(one, 3e6), 3e-3);  // one sample: proportional above it
  EXPECT_DOUBLE_EQ(TableSeconds(one, 1e3), 1e-3);
}

TEST(ClusterModel, AProfiledTableReplacesTheEstimateOfItsOpOnItsLinkClass) {
  Cluster c = TwoNodes();
  c.collectives = {{"all_reduce", "inter_node", {{1e6, 2e-3}, {4e6, 5e-3}}},
                   {"all_gather", "intra_node", {{1e6, 1.0}}}};
  const ClusterModel m(c);
  // The devices span nodes: the inter_node table prices every all-reduce, ring or hierarchical.
  EXPECT_DOUBLE_EQ(m.Seconds(TermKind::kAllReduce, instr::InstrKind::kAllReduce, 2e6, kTwoNodeShares, kTwoNodeShares),
                   3e-3);
  EXPECT_DOUBLE_EQ(
      m.Seconds(TermKind::kAllReduceHierarchical, instr::InstrKind::kAllReduce, 2e6, kTwoNodeShares, kTwoNodeShares), 3e-3);
  // The intra_node all-gather table does not describe a collective across nodes: the estimate.
  EXPECT_CLOSE(m.Seconds(TermKind::kGatherPadded, instr::InstrKind::kAllGather, kB, kTwoNodeShares, kTwoNodeShares),
               1.3e-3);
  // On one node the intra_node table applies.
  Cluster one = OneNode({{1e12, 1e11}, {1e12, 1e11}}, kLink);
  one.collectives = c.collectives;
  EXPECT_DOUBLE_EQ(ClusterModel(one).Seconds(TermKind::kGatherGrouped, instr::InstrKind::kAllGather, 2e6, {0.5, 0.5},
                                             {0.5, 0.5}),
                   2.0);
  // The reference system's pricing never reads tables.
  EXPECT_CLOSE(ClusterModel(c, Pricing::kFlatWorldLink)
                   .Seconds(TermKind::kAllReduce, instr::InstrKind::kAllReduce, kB, kTwoNodeShares, kTwoNodeShares),
               1e-4 + 10.0 / 6.0 * 1e-3);
}

// ---- the step as the critical path of two streams (Evaluate) --------------------------------

// Two devices of 1e9 FLOP/s and 1e9 B/s on a 1 GB/s link without latency: a ring all-reduce of
// B bytes takes 2·(1/2)·1e-9·B = B·1e-9 s, a padded all-gather at even shares (1)·1e-9·B·0.5.
Cluster FreeLatencyPair() { return OneNode({{1e9, 1e9}, {1e9, 1e9}}, Link{1e9, 0}); }

Term Work(int instruction, double seconds, double forward_fraction) {  // 1e9 FLOP/s: seconds·1e9 FLOPs
  Term t;
  t.kind = TermKind::kComputeFull;
  t.instruction = instruction;
  t.coefficient = seconds * 1e9;
  t.forward_fraction = forward_fraction;
  return t;
}
Term Update(int instruction, double seconds) {
  Term t = Work(instruction, seconds, 0);
  t.role = TermRole::kOptimizer;
  t.memory_bound = true;
  return t;
}
Term Sync(int instruction, double bytes) {
  Term t = Collective(TermKind::kAllReduce, bytes);
  t.role = TermRole::kGradientSync;
  t.op = instr::InstrKind::kAllReduce;
  t.instruction = instruction;
  return t;
}

// Forward fc1 (1 µs) then fc2 (2 µs); backward fc2 (4 µs) then fc1 (2 µs). W2's bucket (placed
// at 2, ready after fc2's backward) and W1's bucket (placed at 0, ready after fc1's).
ProgramCost TwoLayerCost(double w2_bucket_bytes) {
  ProgramCost pc;
  pc.overlap = true;
  pc.terms = {Update(0, 1e-6), Sync(0, 3000), Work(1, 3e-6, 1.0 / 3), Update(2, 1e-6), Sync(2, w2_bucket_bytes),
              Work(3, 6e-6, 1.0 / 3)};
  return pc;
}

TEST(Evaluate, BucketsOverlapTheBackwardThatFollowsThem) {
  const Cluster c = FreeLatencyPair();
  const ClusterModel m(c);
  const Estimate e = Evaluate(TwoLayerCost(1000), {}, m, 4);
  // Forward 1e-6 + 2e-6 = 3e-6. Backward: fc2 → 7e-6; W2's bucket (1e-6) on the communication
  // stream from 7e-6 to 8e-6 while fc1 runs to 9e-6; W1's bucket (3e-6) from max(8e-6, 9e-6)
  // to 1.2e-5; the optimizer (2e-6) after both streams: 1.4e-5.
  EXPECT_CLOSE(e.step_s, 1.4e-5);
  EXPECT_CLOSE(e.compute_s, 1.1e-5);        // 3e-6 + 6e-6 + 2e-6
  EXPECT_CLOSE(e.communication_s, 4e-6);    // 3e-6 + 1e-6
  EXPECT_CLOSE(e.exposed_communication_s, 3e-6);  // 1.4e-5 − 1.1e-5: W1's bucket cannot hide
  EXPECT_CLOSE(e.instruction_communication_s[2], 1e-6);
  EXPECT_CLOSE(e.instruction_compute_s[3], 6e-6);
}

TEST(Evaluate, ABucketWaitsForThePreviousOne) {
  const Cluster c = FreeLatencyPair();
  const ClusterModel m(c);
  // W2's bucket now takes 5e-6: from 7e-6 to 1.2e-5; W1's waits for it: 1.2e-5 to 1.5e-5;
  // step 1.5e-5 + 2e-6.
  EXPECT_CLOSE(Evaluate(TwoLayerCost(5000), {}, m, 4).step_s, 1.7e-5);
}

TEST(Evaluate, WithoutOverlapEveryTermAdds) {
  const Cluster c = FreeLatencyPair();
  const ClusterModel m(c);
  ProgramCost pc = TwoLayerCost(1000);
  pc.overlap = false;
  const Estimate e = Evaluate(pc, {}, m, 4);
  EXPECT_CLOSE(e.step_s, 1.5e-5);  // 1.1e-5 compute + 4e-6 communication
  EXPECT_CLOSE(e.exposed_communication_s, 4e-6);
}

TEST(Evaluate, ZeroGathersArePrefetchedAndTheirReduceScattersOverlap) {
  const Cluster c = FreeLatencyPair();
  const ClusterModel m(c);
  // W2 is ZeRO: its padded all-gather of 4000 bytes at even shares takes 1e-9·4000·0.5 = 2e-6
  // forward, its gradient's reduce-scatter 2e-6 in backward.
  ProgramCost pc = TwoLayerCost(1000);
  Term gather = Collective(TermKind::kGatherPadded, 4000, 2);
  gather.op = instr::InstrKind::kAllGather;
  gather.role = TermRole::kParameterGather;
  gather.instruction = 2;
  pc.terms[4] = gather;  // instead of W2's bucket
  const Estimate e = Evaluate(pc, {}, m, 4);
  // Forward: fc1 to 1e-6; the gather, prefetched from 0, ends at 2e-6; fc2 waits for it and
  // ends at 4e-6. Backward: fc2 → 8e-6; the reduce-scatter from 8e-6 to 1e-5 beside fc1
  // (→ 1e-5); W1's bucket from 1e-5 to 1.3e-5; optimizer: 1.5e-5.
  EXPECT_CLOSE(e.step_s, 1.5e-5);
  EXPECT_CLOSE(e.communication_s, 7e-6);  // 2e-6 + 2e-6 + 3e-6
}

TEST(DescribeCost, ABucketIsChargedToThePlacementOfTheParameterThatCompletesIt) {
  const ir::Graph g = Tiny();
  const Cluster c = TwoDevices();
  instr::Program p;
  p.num_devices = 2;
  p.ratios = {{0.75, 0.25}};
  p.instructions = {Place(g, "x", 0),    Place(g, "labels", 0),      Place(g, "fc.weight"),
                    Place(g, "fc.bias"), Compute(g, "fc", "batch0"), Compute(g, "relu", "split0"),
                    Compute(g, "loss", "batch0")};
  p.overlap = true;
  // Ready order: fc.bias (placed last), then fc.weight.
  p.buckets = {{{g.Find("fc.bias"), g.Find("fc.weight")}, instr::CollImpl::kRing}};
  p = Checked(g, p);
  const ProgramCost pc = DescribeCost(g, p, c, CostOptions{});
  int syncs = 0;
  for (const Term& t : pc.terms) {
    if (t.role != TermRole::kGradientSync) continue;
    ++syncs;
    EXPECT_EQ(t.instruction, 2);      // fc.weight's placement: its gradient is ready last
    EXPECT_EQ(t.bytes, 256.0 + 16.0);  // both gradients in one all-reduce
    EXPECT_EQ(t.kind, TermKind::kAllReduce);
  }
  EXPECT_EQ(syncs, 1);
  const Estimate e = Evaluate(pc, ProgramShares(p), c, p.instructions.size());
  // One all-reduce of 272 bytes on 2 devices: 2α + β·272 = 2e-6 + 2.72e-7 (two separate ones
  // cost 2.256e-6 + 2.016e-6). Nothing follows it in backward, so all of it is exposed.
  EXPECT_CLOSE(e.communication_s, 2.272e-6);
  EXPECT_CLOSE(e.instruction_communication_s[2], 2.272e-6);
  EXPECT_CLOSE(e.exposed_communication_s, 2.272e-6);
  EXPECT_CLOSE(e.step_s, e.compute_s + 2.272e-6);
}

// ---- calibration -----------------------------------------------------------------------------

TEST(MakeLinkSample, CoefficientsAreTheTablesForTheRoundedShares) {
  // Two ranks, 6 + 2 floats: B = 32 bytes, shares 0.75 / 0.25.
  LinkSample s = MakeLinkSample(TermKind::kGatherGrouped, {6, 2}, 1e-5);
  EXPECT_EQ(s.bytes, 32.0);
  EXPECT_EQ(s.seconds, 1e-5);
  EXPECT_EQ(s.latencies, 2.0);           // n
  EXPECT_EQ(s.volume, 0.75 * 32);        // max(1 − 0.25, 1·0.75)·B
  s = MakeLinkSample(TermKind::kAllReduce, {6, 2}, 1e-5);
  EXPECT_EQ(s.latencies, 2.0);           // 2(n − 1)
  EXPECT_EQ(s.volume, 32.0);             // 2(n − 1)/n·B
  // Three ranks, 6 + 1 + 1 floats: shares 0.75, 0.125, 0.125.
  s = MakeLinkSample(TermKind::kGatherPadded, {6, 1, 1}, 1e-5);
  EXPECT_EQ(s.latencies, 2.0);           // n − 1 rounds of one α
  EXPECT_EQ(s.volume, 2 * 0.75 * 32);    // n − 1 rounds of the largest shard
  s = MakeLinkSample(TermKind::kAllToAll, {6, 1, 1}, 0.0);
  EXPECT_EQ(s.latencies, 2.0);           // n − 1
  EXPECT_EQ(s.volume, 0.75 * 32);
  EXPECT_EQ(s.seconds, 1e-9);            // a clock tick, never zero
}

// Samples on the model: seconds = latencies·α + volume·β, except that the small ones (≤ 4 KiB)
// are pure latency, as the fit assumes.
std::vector<LinkSample> OnTheModel(double alpha, double beta) {
  std::vector<LinkSample> out;
  const std::vector<double> shares = {0.5, 0.3, 0.2};
  for (int64_t size = 4; size <= (int64_t{1} << 22); size *= 4) {
    for (TermKind k : {TermKind::kGatherGrouped, TermKind::kAllReduce, TermKind::kGatherPadded}) {
      LinkSample s = MakeLinkSample(k, instr::RoundShares(shares, size), 1.0);
      s.seconds = s.latencies * alpha + (s.bytes <= kAlphaMaxBytes ? 0.0 : s.volume * beta);
      out.push_back(s);
    }
  }
  return out;
}

TEST(FitLink, RecoversAlphaFromSmallAndBetaFromLargeSamples) {
  const LinkFit fit = FitLink(OnTheModel(5e-6, 1e-10));  // 5 µs, 10 GB/s
  EXPECT_DOUBLE_EQ(fit.alpha, 5e-6);
  EXPECT_CLOSE(fit.beta, 1e-10);
  EXPECT_CLOSE(fit.link().bandwidth, 1e10);
  EXPECT_EQ(fit.link().latency, fit.alpha);
  // The small samples lie off the model by their β part, which the fit ignores: the rms error
  // is not zero.
  EXPECT_GT(fit.rms_relative, 0.0);
}

TEST(FitLink, WithoutLargeSamplesBetaComesFromAllOfThem) {
  // Three small all-reduces on 2 ranks (latencies 2, volume B): two pure latency, one with
  // 8e-7 s more. α = median(1e-6, 1e-6, (2e-6 + 8e-7)/2) = 1e-6; β = Σ volume·rest / Σ volume²
  // with rest 0, 0, 8e-7: 64·8e-7 / (16² + 32² + 64²) = 5.12e-5 / 5376.
  std::vector<LinkSample> s = {MakeLinkSample(TermKind::kAllReduce, {2, 2}, 2e-6),
                               MakeLinkSample(TermKind::kAllReduce, {4, 4}, 2e-6),
                               MakeLinkSample(TermKind::kAllReduce, {8, 8}, 2e-6 + 8e-7)};
  const LinkFit fit = FitLink(s);
  EXPECT_DOUBLE_EQ(fit.alpha, 1e-6);
  EXPECT_NEAR(fit.beta, 5.12e-5 / 5376, 1e-9 * 5.12e-5 / 5376);
}

TEST(FitLink, NothingLeftAfterLatencyGivesTheTinyBeta) {
  const std::vector<LinkSample> s = {MakeLinkSample(TermKind::kAllReduce, {2, 2}, 2e-6)};
  const LinkFit fit = FitLink(s);
  EXPECT_DOUBLE_EQ(fit.alpha, 1e-6);
  EXPECT_EQ(fit.beta, 1e-12);
}

// Two identical devices of `flops` FLOP/s and `bandwidth` bytes/s.
Cluster Pair(double flops, double bandwidth) { return OneNode({{flops, bandwidth}, {flops, bandwidth}}, kLink); }

TEST(RatesOnCluster, SumsEachClassLeavesOutNodesWithoutBackwardAndAddsTheUpdate) {
  const ir::Graph g = Tiny();  // nodes fc, relu, loss
  ASSERT_EQ(g.nodes().size(), 3u);
  KernelTimes t;
  t.seconds = {2e-6, 1e-6, 1e-6};
  t.backward = {true, true, false};  // loss left out
  t.optimizer_s = 1e-6;
  // Bandwidth : FLOP/s = 1: relu (768 B > 64 FLOPs) and loss are memory-bound, fc GEMM.
  const KernelRates r = RatesOnCluster(g, t, Pair(1e9, 1e9), CostOptions{});
  EXPECT_EQ(r.memory_bound, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(r.skipped, 1);
  EXPECT_EQ(r.compute_nodes, 1);
  EXPECT_EQ(r.memory_nodes, 1);
  EXPECT_DOUBLE_EQ(r.flops_per_s, 3136 / 2e-6);  // fc
  // relu 768 B + Adam 7·(256 + 16) = 1904 B, over 1e-6 + 1e-6 s.
  EXPECT_DOUBLE_EQ(r.bytes, 768.0 + 1904.0);
  EXPECT_DOUBLE_EQ(r.bytes_per_s, 2672 / 2e-6);
  EXPECT_FALSE(r.flops_fallback);
  EXPECT_FALSE(r.bandwidth_fallback);
}

TEST(RatesOnCluster, WithoutAComputeBoundNodeFlopsFallBackToAllTimedNodes) {
  const ir::Graph g = Tiny();
  KernelTimes t;
  t.seconds = {2e-6, 1e-6, 1e-6};
  t.backward = {false, true, true};  // fc, the only GEMM, left out
  const KernelRates r = RatesOnCluster(g, t, Pair(1e9, 1e9), CostOptions{});
  EXPECT_TRUE(r.flops_fallback);
  EXPECT_DOUBLE_EQ(r.flops_per_s, (64.0 + 224.0) / 2e-6);  // relu + loss FLOPs over their time
  EXPECT_DOUBLE_EQ(r.bytes_per_s, (768.0 + 492.0) / 2e-6);
}

TEST(RatesOnCluster, AnOperandRateTakesTheGemmOperandsOutOfTheFlopsTime) {
  const ir::Graph g = Tiny();
  KernelTimes t;
  t.seconds = {2e-6, 1e-6, 1e-6};
  t.backward = {true, true, true};
  // fc's operands, 2736 B (replicated: all whole), at 2736 B per µs: 1 µs of its 2.
  t.operand_bytes_per_s = 2736 / 1e-6;
  KernelRates r = RatesOnCluster(g, t, Pair(1e9, 1e9), CostOptions{});
  EXPECT_DOUBLE_EQ(r.operand_bytes_per_s, t.operand_bytes_per_s);
  EXPECT_CLOSE(r.operand_s, 1e-6);
  EXPECT_CLOSE(r.flops_per_s, 3136 / 1e-6);
  // So fc's price at all its rows is what was measured.
  Cluster c = Pair(r.flops_per_s, 1e9);
  c.devices[0].gemm_operand_bandwidth = r.operand_bytes_per_s;
  EXPECT_CLOSE(ComputeSeconds(ComputeTerm(g, NodeOf(g, "fc"), instr::ShardingRules(g, NodeOf(g, "fc"))[0], c), 1.0,
                              c.devices[0]),
               2e-6);
  // A rate so low that the operands would take all the time: at most 3/4 of it comes off.
  t.operand_bytes_per_s = 1;
  r = RatesOnCluster(g, t, Pair(1e9, 1e9), CostOptions{});
  EXPECT_CLOSE(r.flops_per_s, 3136 / 0.5e-6);
}

TEST(FitOperandBandwidth, TheTimeThatDoesNotShrinkWithTheRowsIsTheParametersStreaming) {
  const ir::Graph g = Tiny();  // fc: W and b, OperandBytes 3·(256 + 16) = 816
  // fc: 1.6 ms that scale with the rows and 0.4 ms that do not: 2 ms at all rows, 0.6 at 1/8.
  absl::StatusOr<OperandFit> fit = FitOperandBandwidth(g, {2e-3, 0, 0}, {0.6e-3, 0, 0}, 0.125);
  ASSERT_TRUE(fit.ok()) << fit.status();
  EXPECT_EQ(fit->nodes, 1);
  EXPECT_CLOSE(fit->fixed_s, 0.4e-3);
  EXPECT_CLOSE(fit->node_s, 2e-3);
  EXPECT_DOUBLE_EQ(fit->bytes, 816.0);
  EXPECT_CLOSE(fit->bytes_per_s, 816 / 0.4e-3);
  // Under 1% of the time does not shrink: noise, not priced.
  fit = FitOperandBandwidth(g, {2e-3, 0, 0}, {0.2e-3 + 0.01e-3, 0, 0}, 0.125);
  ASSERT_TRUE(fit.ok());
  EXPECT_EQ(fit->bytes_per_s, 0.0);
  EXPECT_EQ(fit->nodes, 1);
  // Over half of it: the cost of a call, not of streaming weights.
  EXPECT_EQ(FitOperandBandwidth(g, {2e-3, 0, 0}, {1.2e-3, 0, 0}, 0.125)->bytes_per_s, 0.0);
  // Microsecond kernels: the same shape of times, too short to tell.
  fit = FitOperandBandwidth(g, {2e-6, 0, 0}, {0.6e-6, 0, 0}, 0.125);
  ASSERT_TRUE(fit.ok());
  EXPECT_EQ(fit->bytes_per_s, 0.0);
  EXPECT_CLOSE(fit->fixed_s, 0.4e-6);
  // Nothing timed: nothing fitted.
  fit = FitOperandBandwidth(g, {0, 0, 0}, {0, 0, 0}, 0.125);
  ASSERT_TRUE(fit.ok());
  EXPECT_EQ(fit->nodes, 0);
  EXPECT_EQ(fit->bytes_per_s, 0.0);
  EXPECT_FALSE(FitOperandBandwidth(g, {2e-6}, {0.6e-6}, 0.125).ok());
  EXPECT_FALSE(FitOperandBandwidth(g, {2e-6, 0, 0}, {0.6e-6, 0, 0}, 1.0).ok());
}

TEST(ForwardRates, EachClassOverItsForwardTimesWithoutTheLoss) {
  const ir::Graph g = Tiny();  // nodes fc, relu, loss
  const Cluster c = Pair(1e9, 1e9);
  const ir::NodeId fc = NodeOf(g, "fc"), relu = NodeOf(g, "relu");
  EXPECT_FALSE(ForwardMemoryBound(g, fc, c));
  EXPECT_TRUE(ForwardMemoryBound(g, relu, c));
  EXPECT_DOUBLE_EQ(ForwardBytes(g, relu), NodeComputeBytes(g, relu) / 3);
  const absl::StatusOr<ForwardRates> r = ForwardRatesOnCluster(g, {2e-6, 1e-6, 5e-6}, c);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->compute_nodes, 1);
  EXPECT_EQ(r->memory_nodes, 1);  // the loss is not part of inference
  EXPECT_DOUBLE_EQ(r->flops_per_s, g.NodeFlops(fc).forward / 2e-6);
  EXPECT_DOUBLE_EQ(r->bytes_per_s, ForwardBytes(g, relu) / 1e-6);
  // A node without a forward time is left out; a class left empty has rate 0.
  const absl::StatusOr<ForwardRates> no_relu = ForwardRatesOnCluster(g, {2e-6, 0, 5e-6}, c);
  ASSERT_TRUE(no_relu.ok());
  EXPECT_EQ(no_relu->bytes_per_s, 0);
  EXPECT_EQ(no_relu->memory_nodes, 0);
  EXPECT_FALSE(ForwardRatesOnCluster(g, {1e-6}, c).ok());
}

TEST(ForwardRates, DevicesGetThemInProportionAndForwardPricingUsesThem) {
  const ir::Graph g = Tiny();
  const ir::NodeId fc = NodeOf(g, "fc"), relu = NodeOf(g, "relu");
  Cluster c = OneNode({{4e9, 2e9}, {1e9, 5e8}}, kLink);
  // Without forward rates a device's training rates price its forward.
  EXPECT_DOUBLE_EQ(ForwardSeconds(g, fc, c, c.devices[1]), g.NodeFlops(fc).forward / 1e9);
  EXPECT_DOUBLE_EQ(ForwardSeconds(g, relu, c, c.devices[1]), ForwardBytes(g, relu) / 5e8);
  ForwardRates r;
  r.flops_per_s = 2e9;  // the measured device (4e9 FLOP/s training) computes its forward at half that
  SetForwardRates(c, r, 4e9, 2e9);
  EXPECT_DOUBLE_EQ(c.devices[0].forward_flops, 2e9);
  EXPECT_DOUBLE_EQ(c.devices[1].forward_flops, 5e8);
  EXPECT_EQ(c.devices[1].forward_memory_bandwidth, 0);  // not measured: absent
  EXPECT_DOUBLE_EQ(c.devices[1].ForwardMemoryBandwidth(), 5e8);
  EXPECT_DOUBLE_EQ(ForwardSeconds(g, fc, c, c.devices[1]), g.NodeFlops(fc).forward / 5e8);
  EXPECT_DOUBLE_EQ(ForwardSeconds(g, relu, c, c.devices[1]), ForwardBytes(g, relu) / 5e8);
}

TEST(CalibrateRates, ClassificationSettlesOnTheClusterItsRatesBuild) {
  const ir::Graph g = Tiny();
  KernelTimes t;
  t.seconds = {1e-5, 4e-7, 4e-7};  // fc slow, relu and loss fast
  t.backward = {true, true, true};
  const EmulationTarget target{nullptr, 2, 1e9, "host"};
  absl::StatusOr<KernelRates> r = CalibrateRates(g, t, target, CostOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  // A node is memory-bound when bytes / FLOPs > bandwidth / FLOP/s: relu 768/64 = 12, loss
  // 492/224 ≈ 2.2 (fc is GEMM-class).
  // Round 1, whole model over its time: 3996 B / 3424 FLOPs ≈ 1.17 → relu and loss memory-bound;
  //   FLOP/s = 3136 / 1e-5, bandwidth = 1260 / 8e-7 → ratio ≈ 5.02.
  // Round 2 at 5.02: loss (2.2) turns compute-bound, relu (12) stays; FLOP/s = 3360 / 1.04e-5,
  //   bandwidth = 768 / 4e-7 → ratio ≈ 5.94.
  // Round 3 at 5.94: the same classes: settled.
  EXPECT_TRUE(r->stable);
  EXPECT_EQ(r->rounds, 3);
  EXPECT_EQ(r->memory_bound, (std::vector<bool>{false, true, false}));
  EXPECT_EQ(r->compute_nodes, 2);
  EXPECT_EQ(r->memory_nodes, 1);
  EXPECT_DOUBLE_EQ(r->flops_per_s, 3360 / 1.04e-5);
  EXPECT_DOUBLE_EQ(r->bytes_per_s, 768 / 4e-7);
}

TEST(CalibrateRates, OscillatingClassificationStopsAfterTheRoundLimit) {
  const ir::Graph g = Tiny();
  KernelTimes t;
  t.seconds = {1e-5, 1e-7, 1e-7};
  t.backward = {true, true, true};
  // Round 1 at 1.17: relu, loss memory-bound; bandwidth 1260/2e-7 over FLOP/s 3136/1e-5 ≈ 20 →
  // round 2: both compute-bound, no memory-bound node, bandwidth falls back to all bytes over
  // all time: ratio 3996/3424 again → round 3 = round 1, and so on.
  absl::StatusOr<KernelRates> r = CalibrateRates(g, t, EmulationTarget{nullptr, 2, 1e9, "host"}, CostOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->stable);
  EXPECT_EQ(r->rounds, kMaxCalibrationRounds);
}

TEST(CalibrateRates, RejectsTimesThatDoNotMatchTheGraph) {
  const ir::Graph g = Tiny();
  KernelTimes t;
  t.seconds = {1e-6, 1e-6};
  t.backward = {true, true};
  absl::StatusOr<KernelRates> r = CalibrateRates(g, t, EmulationTarget{nullptr, 2, 1e9, "host"}, CostOptions{});
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "kernel times of graph 'tiny': 2 times and 2 backward flags for 3 nodes; expected one of each per node");
  t.seconds = {0, 0, 0};
  t.backward = {true, true, true};
  r = CalibrateRates(g, t, EmulationTarget{nullptr, 2, 1e9, "host"}, CostOptions{});
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "kernel times of graph 'tiny': they add up to 0 s; expected a positive, finite time");
}

TEST(EmulatedCluster, WithoutLikeRanksCopiesOfTheMeasuredDevice) {
  const Link link{5e9, 2e-6};
  const Cluster c = EmulatedCluster(EmulationTarget{nullptr, 3, 8e9, "gpu"}, 1e12, 2e11, link);
  EXPECT_EQ(c.name, "gpu");
  ASSERT_EQ(c.size(), 3);
  EXPECT_EQ(c.devices[2].name, "gpu2");
  EXPECT_EQ(c.devices[2].type, "gpu");
  EXPECT_EQ(c.devices[2].flops, 1e12);
  EXPECT_EQ(c.devices[2].memory_bandwidth, 2e11);
  EXPECT_EQ(c.devices[2].memory_bytes, 8e9);
  EXPECT_EQ(c.WorldLink(), link);
  EXPECT_TRUE(costmodel::ParseCluster(ClusterToJson(c), "emulated").ok());
}

TEST(EmulatedCluster, LikeKeepsDevicesAndScalesThemToTheFastest) {
  Cluster like = OneNode({{4e12, 8e11}, {2e12, 1e11}, {1e12, 1e11}}, Link{1e11, 1e-7});
  like.collectives.push_back({"all_reduce", "intra_node", {{1024, 1e-5}}});
  const Link link{5e9, 2e-6};
  const Cluster c = EmulatedCluster(EmulationTarget{&like, 99, 1.0, "host"}, 1e9, 1e8, link);
  EXPECT_EQ(c.name, "test-emulated");
  ASSERT_EQ(c.size(), 3);  // like's devices; ranks and memory_per_device play no part
  // flops and bandwidth = measured × (flops / 4e12): 1, 0.5, 0.25.
  EXPECT_EQ(c.devices[0].flops, 1e9);
  EXPECT_EQ(c.devices[1].flops, 0.5e9);
  EXPECT_EQ(c.devices[2].memory_bandwidth, 0.25e8);
  EXPECT_EQ(c.devices[2].gemm_operand_bandwidth, 0.0);  // not given: not priced apart
  EXPECT_EQ(EmulatedCluster(EmulationTarget{&like, 99, 1.0, "host"}, 1e9, 1e8, link, 4e8).devices[2].gemm_operand_bandwidth, 1e8);
  EXPECT_EQ(c.devices[1].memory_bytes, like.devices[1].memory_bytes);
  EXPECT_EQ(c.devices[1].name, "d1");
  EXPECT_EQ(c.nodes[0].intra, link);
  EXPECT_EQ(c.inter_node, link);
  EXPECT_TRUE(c.collectives.empty());  // like's tables describe the real cluster
}

// Mesh levels (topology spec §4.1, §4.4, §4.5) on TwoNodes: node shares S = (0.5, 0.5), within
// node a 0.5 / 0.5, within node b 0.25 each, B = 1e6 bytes.
TEST(MeshLevels, DevicesLevelRunsOnEveryNodesLinkAtOnceAndNodesLevelThroughTheNics) {
  const Cluster c = TwoNodes();
  const ClusterModel m(c);
  const std::vector<double> nodes = {0.5, 0.5};
  const std::vector<double> within = {0.5, 0.5, 0.25, 0.25, 0.25, 0.25};
  // Ring all-reduce of the node piece (5e5 bytes): a 2·1e-6 + 2·(1/2)·1e-10·5e5 = 5.2e-5,
  // b 2·3·2e-6 + 2·(3/4)·2e-10·5e5 = 1.62e-4; the slower node.
  EXPECT_CLOSE(m.MeshSeconds(TermKind::kDevicesAllReduce, kB, nodes, {}, nodes), 1.62e-4);
  // Padded all-gather: a 1·(1e-6 + 1e-10·5e5·0.5) = 2.6e-5, b 3·(2e-6 + 2e-10·5e5·0.25) = 8.1e-5.
  EXPECT_CLOSE(m.MeshSeconds(TermKind::kDevicesGatherPadded, kB, nodes, within, nodes), 8.1e-5);
  // Grouped: a 2·1e-6 + 1e-10·5e5·0.5 = 2.7e-5, b 4·2e-6 + 2e-10·5e5·max(0.75, 0.75) = 8.3e-5.
  EXPECT_CLOSE(m.MeshSeconds(TermKind::kDevicesGatherGrouped, kB, nodes, within, nodes), 8.3e-5);
  // No NIC traffic inside the nodes: a slower network changes nothing.
  Cluster slow = c;
  slow.inter_node.bandwidth = 1e6;
  EXPECT_CLOSE(ClusterModel(slow).MeshSeconds(TermKind::kDevicesAllReduce, kB, nodes, {}, nodes), 1.62e-4);
  // Across nodes, the (I, G e) gradient: 2·1·1e-5 + 2·(1/2)·1e-9·1e6 = 1.02e-3.
  EXPECT_CLOSE(m.MeshSeconds(TermKind::kNodesGradientSync, kB, nodes, {}, nodes), 1.02e-3);
  // Nodes-level all-gather: 1e-5 + 1e-9·1e6·max(0.5, 0.5) + max(a 1e-6 + (1/2)·1e-10·5e5 = 2.6e-5,
  // b 3·2e-6 + (3/4)·2e-10·5e5 = 8.1e-5) = 5.91e-4.
  EXPECT_CLOSE(m.MeshSeconds(TermKind::kNodesGather, kB, nodes, {}, nodes), 5.91e-4);
  // One node: no mesh levels.
  const Cluster one = OneNode({{2e9, 1e9}, {1e9, 0.5e9}}, Link{1e9, 1e-6});
  EXPECT_EQ(ClusterModel(one).MeshSeconds(TermKind::kDevicesAllReduce, kB, {1.0}, {}, {1.0}), 0.0);
  EXPECT_TRUE(IsMeshKind(TermKind::kComputeMesh));
  EXPECT_FALSE(IsCollective(TermKind::kComputeMesh));
  EXPECT_FALSE(IsMeshKind(TermKind::kAllReduceHierarchical));
}

}  // namespace
}  // namespace hetsynth::costmodel
