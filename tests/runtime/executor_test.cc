// The multi-rank executor against single-device training: for every built-in model (small
// preset) and every plan kind on the 4-device mixed cluster, 5 training steps on 4 thread ranks
// give the single-device losses and final parameters within 1e-5 relative.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <string_view>

#include <gtest/gtest.h>

#include "executor_reference.h"

namespace hetsynth::runtime {
namespace {

using testing::PlanCase;

void ExpectClose(const testing::RunResult& ref, const testing::RunResult& got, double tol) {
  EXPECT_EQ(testing::Compare(ref, got, tol), "");
}
void ExpectParamsClose(const std::map<std::string, Tensor>& ref, const std::map<std::string, Tensor>& got,
                       double tol) {
  EXPECT_EQ(testing::CompareParams(ref, got, tol), "");
}

// 5 SGD steps of the plan on one thread rank per device against single-device training: losses
// and final parameters within 1e-5 relative.
void ExpectTrainsLikeOneDevice(const testing::Setup& setup) {
  auto reference = testing::TrainSingle(setup, 5);
  ASSERT_TRUE(reference.ok()) << reference.status();
  testing::RunResult run;
  const absl::Status st = RunThreadRanks(setup.plan.program.num_devices, [&](Communicator& comm) -> absl::Status {
    HS_ASSIGN_OR_RETURN(testing::RunResult r, testing::TrainPlan(setup, comm, 5));
    if (comm.rank() == 0) run = std::move(r);
    return absl::OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st;
  ExpectClose(*reference, run, 1e-5);
}

class ExecutorMatches : public ::testing::TestWithParam<PlanCase> {};

TEST_P(ExecutorMatches, SingleDeviceTraining) {
  const PlanCase& c = GetParam();
  auto setup = testing::MakeSetup(c);
  ASSERT_TRUE(setup.ok()) << setup.status();
  ASSERT_EQ(setup->plan.program.num_devices, 4);
  ExpectTrainsLikeOneDevice(*setup);
}

std::vector<PlanCase> Cases() {
  std::vector<PlanCase> out;
  for (const char* model : {"mlp", "gpt", "vit", "vgg19", "moe"}) {
    for (const char* strategy : {"synthesized", "dp-ev", "dp-cp", "tp-even", "zero-even"}) {
      out.push_back({model, strategy, {}});
    }
  }
  // Dropout on split tensors: masks must follow the element's global index.
  out.push_back({"gpt", "tp-even", {"dropout=0.2"}});
  out.push_back({"gpt", "dp-cp", {"dropout=0.2"}});
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllModels, ExecutorMatches, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<PlanCase>& info) { return info.param.Name(); });

// Every plan kind of the two-level mesh (hierarchical collectives, gradient buckets, overlap
// and their combination; ZeRO with overlap) on 4 ranks (2 nodes × 2) and 8 (2 × 4).
class PlanKindsMatch : public ::testing::TestWithParam<PlanCase> {};

TEST_P(PlanKindsMatch, SingleDeviceTraining) {
  const PlanCase& c = GetParam();
  auto setup = testing::MakeSetup(c);
  ASSERT_TRUE(setup.ok()) << setup.status();
  const instr::Program& p = setup->plan.program;
  ASSERT_EQ(p.num_devices, 2 * c.per_node);
  if (c.variant.empty() && c.strategy != "dp-ev") {
    // Unmodified plans of the real synthesizer: they overlap, and use the mesh.
    bool hier = false;
    for (const instr::Instruction& in : p.instructions) hier |= in.impl == instr::CollImpl::kHierarchical;
    for (const instr::Bucket& b : p.buckets) hier |= b.impl == instr::CollImpl::kHierarchical;
    EXPECT_TRUE(p.overlap);
    EXPECT_TRUE(hier);
  }
  if (c.strategy == "zero-even" || c.strategy == "fsdp-even") {
    bool zero = false;  // a parameter all-gathered for use
    for (const instr::Instruction& in : p.instructions) {
      zero |= in.kind == instr::InstrKind::kAllGather && setup->graph.value(in.tensor).kind == ir::ValueKind::kParameter;
    }
    ASSERT_TRUE(zero) << "the ZeRO plan gathers no parameter";
  }
  ExpectTrainsLikeOneDevice(*setup);
}

std::vector<PlanCase> MeshCases() {
  std::vector<PlanCase> out;
  for (int k : {2, 4}) {
    for (const char* v : {"", "hier", "buckets", "overlap", "all"}) out.push_back({"mlp", "dp-ev", {}, k, v});
    for (const char* v : {"overlap", "all"}) out.push_back({"gpt", "zero-even", {}, k, v});
    for (const char* v : {"hier", "all"}) out.push_back({"gpt", "tp-even", {}, k, v});
    for (const char* v : {"", "all"}) out.push_back({"gpt", "synthesized", {}, k, v});
    out.push_back({"gpt", "fsdp-even", {}, k, ""});  // ZeRO-3 with prefetch, as synthesized
    out.push_back({"mlp", "ddp-cp", {}, k, ""});     // DDP: buckets, overlap, as synthesized
    out.push_back({"vit", "dp-cp", {}, k, "all"});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(TwoNodes, PlanKindsMatch, ::testing::ValuesIn(MeshCases()),
                         [](const ::testing::TestParamInfo<PlanCase>& info) { return info.param.Name(); });

// Plans over mesh levels (mixed forms, mesh rules, devices-level collectives, across-nodes
// gradient buckets): megatron (tensor parallel inside each node, data parallel across the two
// nodes) as synthesized — hierarchical world bucket, nodes bucket, overlap — and blocking.
class MeshLevelsMatch : public ::testing::TestWithParam<PlanCase> {};

TEST_P(MeshLevelsMatch, SingleDeviceTraining) {
  const PlanCase& c = GetParam();
  auto setup = testing::MakeSetup(c);
  ASSERT_TRUE(setup.ok()) << setup.status();
  const instr::Program& p = setup->plan.program;
  ASSERT_TRUE(p.UsesMesh()) << "the plan has no property over mesh levels";
  bool devices = false;
  for (const instr::Instruction& in : p.instructions) devices |= in.level == instr::Level::kDevices;
  EXPECT_TRUE(devices) << "no devices-level collective";
  EXPECT_FALSE(instr::NodeSyncParametersInReadyOrder(p).empty()) << "no parameter synchronized across nodes";
  if (c.variant.empty()) {
    EXPECT_TRUE(p.overlap);
    EXPECT_TRUE(std::any_of(p.buckets.begin(), p.buckets.end(), [](const instr::Bucket& b) { return b.kind == instr::Level::kNodes; }));
  }
  EXPECT_TRUE(instr::RuntimeSupports(p).ok()) << instr::RuntimeSupports(p);
  ExpectTrainsLikeOneDevice(*setup);
}

std::vector<PlanCase> MeshLevelCases() {
  std::vector<PlanCase> out;
  for (int k : {2, 4}) {
    for (const char* model : {"mlp", "gpt", "vit"}) {
      for (const char* v : {"", "blocking"}) out.push_back({model, "megatron", {}, k, v});
    }
  }
  out.push_back({"vgg19", "megatron", {}, 2, ""});
  // Dropout on pieces cut at both levels (batch over the nodes, hidden within them): masks
  // follow the element's global index.
  out.push_back({"gpt", "megatron", {"dropout=0.2"}, 4, ""});
  return out;
}

INSTANTIATE_TEST_SUITE_P(TwoNodes, MeshLevelsMatch, ::testing::ValuesIn(MeshLevelCases()),
                         [](const ::testing::TestParamInfo<PlanCase>& info) { return info.param.Name(); });

// Mesh-level instructions the synthesizer does not write today, in hand-made programs
// (testing::HandMadeMeshProgram): nodes-level collectives, parameters split over the nodes, a
// row rule over the nodes, the loss as node partial sums.
class NodesLevelMatch : public ::testing::TestWithParam<std::string> {};

TEST_P(NodesLevelMatch, SingleDeviceTraining) {
  auto setup = testing::MakeSetup({"mlp", "hand-" + GetParam(), {}, 2, ""});
  ASSERT_TRUE(setup.ok()) << setup.status();
  const instr::Program& program = setup->plan.program;
  ASSERT_TRUE(instr::RuntimeSupports(program).ok()) << instr::RuntimeSupports(program);
  ExpectTrainsLikeOneDevice(*setup);
}

INSTANTIATE_TEST_SUITE_P(HandMade, NodesLevelMatch, ::testing::Values("gather", "scatter", "reduce"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(Executor, SynthesizerChoosesMeshFeaturesOnTwoNodes) {
  // The real synthesizer, unmodified, on 2 nodes × 4 behind a slow NIC: its plans use the
  // features the parity tests above run (so they are not only hand-made).
  bool hier = false, buckets = false, overlap = false;
  for (const char* strategy : {"synthesized", "ddp-cp", "fsdp-even"}) {
    auto setup = testing::MakeSetup({"gpt", strategy, {}, 4, ""});
    ASSERT_TRUE(setup.ok()) << setup.status();
    const instr::Program& p = setup->plan.program;
    EXPECT_TRUE(instr::TwoLevelNodes(p.nodes, p.num_devices)) << strategy;
    for (const instr::Instruction& in : p.instructions) hier |= in.impl == instr::CollImpl::kHierarchical;
    for (const instr::Bucket& b : p.buckets) {
      hier |= b.impl == instr::CollImpl::kHierarchical;
      buckets |= b.params.size() > 1;
    }
    overlap |= p.overlap;
  }
  EXPECT_TRUE(hier);
  EXPECT_TRUE(buckets);
  EXPECT_TRUE(overlap);
}

TEST(Executor, OverlapHasItsOwnStreamInTime) {
  // With overlap the communication stream's operations are one serial track per rank, the first
  // runs beside backward compute, and the optimizer (the end of the step) waits for the last.
  auto setup = testing::MakeSetup({"mlp", "dp-ev", {}, 2, "all"});
  ASSERT_TRUE(setup.ok()) << setup.status();
  std::vector<std::vector<TraceEvent>> traces(4);
  StepMetrics last;
  ASSERT_TRUE(RunThreadRanks(4, [&](Communicator& comm) -> absl::Status {
                ExecutorOptions o;
                o.slowdown = setup->slowdown[static_cast<size_t>(comm.rank())];
                o.trace = true;
                HS_ASSIGN_OR_RETURN(auto ex, Executor::Create(setup->graph, setup->plan, comm, o));
                HS_ASSIGN_OR_RETURN(Batch batch, setup->data.Get(0));
                HS_ASSIGN_OR_RETURN(StepMetrics m, ex->Step(batch));
                traces[static_cast<size_t>(comm.rank())] = ex->TraceEvents();
                if (comm.rank() == 0) last = m;
                return absl::OkStatus();
              }).ok());
  // The first bucket is all-reduced while backward still computes: it starts before the last
  // rank's backward ends (its gradients are ready before the first layer's backward runs).
  double backward_end = 0;
  for (const std::vector<TraceEvent>& t : traces) {
    for (const TraceEvent& e : t) {
      if (e.category == "compute" && e.track == 0) backward_end = std::max(backward_end, e.start_s + e.duration_s);
    }
  }
  for (const std::vector<TraceEvent>& t : traces) {
    std::vector<const TraceEvent*> stream;
    for (const TraceEvent& e : t) {
      if (e.track == 1) stream.push_back(&e);
    }
    ASSERT_FALSE(stream.empty());
    EXPECT_LT(stream[0]->start_s, backward_end);
    ASSERT_EQ(stream.size(), 2u);  // the two buckets
    EXPECT_EQ(stream[0]->category, "communication");
    EXPECT_NE(stream[1]->name.find("all_reduce(bucket 1"), std::string::npos) << stream[1]->name;
    EXPECT_GE(stream[1]->start_s, stream[0]->start_s + stream[0]->duration_s - 1e-6);
    EXPECT_GE(last.step_time_s, stream[1]->start_s + stream[1]->duration_s - 1e-6);
  }
}

TEST(Executor, RefusesWrongRankCount) {
  auto setup = testing::MakeSetup({"mlp", "dp-ev", {}});
  ASSERT_TRUE(setup.ok()) << setup.status();
  const absl::Status st = RunThreadRanks(2, [&](Communicator& comm) -> absl::Status {
    return Executor::Create(setup->graph, setup->plan, comm, {}).status();
  });
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message()).find("the plan is for 4 devices (fast0, fast1, half0, quarter0) but this run has 2 ranks"),
            std::string::npos)
      << st;
}

TEST(Executor, CheckpointMovesBetweenRankCounts) {
  // 4 ranks for 3 steps, save; 1 device continues 2 steps — equals 5 steps on 1 device; and the
  // other way round (momentum state included). Also megatron on 2 nodes × 4: its pieces are
  // boxes of mixed forms (instr::PieceCuts), assembled for the save and sliced for the load.
  for (const PlanCase& c : {PlanCase{"gpt", "synthesized", {}}, PlanCase{"gpt", "megatron", {}, 4, ""}}) {
    SCOPED_TRACE(c.Name());
    auto setup = testing::MakeSetup(c);
    ASSERT_TRUE(setup.ok()) << setup.status();
    const int ranks = setup->plan.program.num_devices;
    auto reference = testing::TrainSingle(*setup, 5);
    ASSERT_TRUE(reference.ok()) << reference.status();
    const std::string dir = ::testing::TempDir();
    const std::string a = dir + "/exec_ckpt_a.safetensors", b = dir + "/exec_ckpt_b.safetensors";

    ASSERT_TRUE(RunThreadRanks(ranks, [&](Communicator& comm) -> absl::Status {
                  return testing::TrainPlan(*setup, comm, 3, "", a).status();
                }).ok());
    auto rest = testing::TrainSingle(*setup, 2, a);
    ASSERT_TRUE(rest.ok()) << rest.status();
    for (int i = 0; i < 2; ++i) EXPECT_NEAR(rest->losses[i], reference->losses[3 + i], 1e-5 * std::abs(reference->losses[3 + i]));
    ExpectParamsClose(reference->params, rest->params, 1e-5);

    auto first = testing::TrainSingle(*setup, 3, "", b);
    ASSERT_TRUE(first.ok()) << first.status();
    testing::RunResult run;
    ASSERT_TRUE(RunThreadRanks(ranks, [&](Communicator& comm) -> absl::Status {
                  HS_ASSIGN_OR_RETURN(testing::RunResult r, testing::TrainPlan(*setup, comm, 2, b));
                  if (comm.rank() == 0) run = std::move(r);
                  return absl::OkStatus();
                }).ok());
    for (int i = 0; i < 2; ++i) EXPECT_NEAR(run.losses[i], reference->losses[3 + i], 1e-5 * std::abs(reference->losses[3 + i]));
    ExpectParamsClose(reference->params, run.params, 1e-5);
  }
}

// Elastic training's snapshots (snapshot.h): after 3 steps on 4 ranks, any 3 survivors' snapshots
// assemble into exactly the full parameters and optimizer state; without two neighbours the
// sharded tensors of a ZeRO plan cannot be rebuilt, and the assembly says so. A checkpoint
// restored into a fresh executor continues as the original would.
TEST(Executor, SnapshotSurvivesAnyOneLostRank) {
  for (const char* strategy : {"synthesized", "zero-even"}) {
    SCOPED_TRACE(strategy);
    auto setup = testing::MakeSetup({"gpt", strategy, {}});
    ASSERT_TRUE(setup.ok()) << setup.status();
    std::vector<RankSnapshot> snaps(4);
    std::map<std::string, Tensor> full;
    std::vector<float> next_losses;
    ASSERT_TRUE(RunThreadRanks(4, [&](Communicator& comm) -> absl::Status {
                  ExecutorOptions o;
                  o.optimizer = setup->optimizer;
                  o.seed = 3;
                  HS_ASSIGN_OR_RETURN(auto ex, Executor::Create(setup->graph, setup->plan, comm, o));
                  for (int i = 0; i < 3; ++i) {
                    HS_ASSIGN_OR_RETURN(Batch batch, setup->data.Get(ex->step()));
                    HS_RETURN_IF_ERROR(ex->Step(batch).status());
                  }
                  HS_ASSIGN_OR_RETURN(snaps[static_cast<size_t>(comm.rank())], ex->Snapshot());
                  HS_ASSIGN_OR_RETURN(auto params, ex->FullParameters());
                  HS_ASSIGN_OR_RETURN(Batch batch, setup->data.Get(ex->step()));
                  HS_ASSIGN_OR_RETURN(StepMetrics m, ex->Step(batch));
                  if (comm.rank() == 0) full = std::move(params), next_losses.push_back(m.loss);
                  return absl::OkStatus();
                }).ok());
    std::map<std::string, ir::Shape> shapes;
    for (ir::ValueId v : setup->graph.parameters()) shapes[setup->graph.value(v).name] = setup->graph.value(v).shape;
    for (int lost = 0; lost < 4; ++lost) {
      std::vector<RankSnapshot> survivors;
      for (int r = 0; r < 4; ++r) {
        if (r != lost) survivors.push_back(snaps[static_cast<size_t>(r)]);
      }
      auto ck = AssembleSnapshot(survivors, shapes);
      ASSERT_TRUE(ck.ok()) << "rank " << lost << " lost: " << ck.status();
      EXPECT_EQ(ck->step, 3);
      EXPECT_EQ(ck->params.size(), full.size());
      for (const auto& [name, t] : full) {
        ASSERT_TRUE(ck->params.count(name)) << name;
        EXPECT_EQ(ck->params.at(name).shape, t.shape) << name;
        EXPECT_TRUE(std::equal(t.data.begin(), t.data.end(), ck->params.at(name).data.begin())) << name << " differs";
      }
      EXPECT_EQ(ck->state.size(), full.size()) << "one momentum buffer per parameter";
      if (lost != 1) continue;
      // The restored state continues exactly: step 4 on 4 fresh ranks from the checkpoint.
      float loss = 0;
      ASSERT_TRUE(RunThreadRanks(4, [&](Communicator& comm) -> absl::Status {
                    ExecutorOptions o;
                    o.optimizer = setup->optimizer;
                    o.seed = 99;  // another initialization: everything must come from the checkpoint
                    HS_ASSIGN_OR_RETURN(auto ex, Executor::Create(setup->graph, setup->plan, comm, o));
                    HS_RETURN_IF_ERROR(ex->Restore(*ck));
                    HS_ASSIGN_OR_RETURN(Batch batch, setup->data.Get(ex->step()));
                    HS_ASSIGN_OR_RETURN(StepMetrics m, ex->Step(batch));
                    if (comm.rank() == 0) loss = m.loss;
                    return absl::OkStatus();
                  }).ok());
      EXPECT_EQ(loss, next_losses.at(0));
    }
    // Ranks 1 and 2 both lost: rank 1's pieces were kept by 1 and 2 only.
    auto two = AssembleSnapshot({snaps[0], snaps[3]}, shapes);
    if (std::string(strategy) == "zero-even") {
      EXPECT_FALSE(two.ok());
      EXPECT_NE(two.status().message().find("no survivor holds all of"), std::string::npos) << two.status();
    }
    // Through files, as MPI workers keep them.
    const std::string path = ::testing::TempDir() + "/rank_snapshot.safetensors";
    ASSERT_TRUE(WriteRankSnapshot(path, snaps[2]).ok());
    auto back = ReadRankSnapshot(path);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->step, snaps[2].step);
    EXPECT_EQ(back->rank, 2);
    EXPECT_EQ(back->keys, snaps[2].keys);
    ASSERT_EQ(back->pieces.size(), snaps[2].pieces.size());
    for (size_t i = 0; i < back->pieces.size(); ++i) {
      EXPECT_EQ(back->pieces[i].key, snaps[2].pieces[i].key);
      EXPECT_EQ(back->pieces[i].dim, snaps[2].pieces[i].dim);
      EXPECT_EQ(back->pieces[i].offset, snaps[2].pieces[i].offset);
      EXPECT_EQ(back->pieces[i].data.shape, snaps[2].pieces[i].data.shape);
    }
  }
}

TEST(Executor, EmulatedTimesFollowSlowdown) {
  // dp-ev on mixed-4: the quarter-speed rank computes as much as the others but 4x slower, so
  // the fast ranks idle while it works.
  auto setup = testing::MakeSetup({"mlp", "dp-ev", {"hidden=256"}});
  ASSERT_TRUE(setup.ok()) << setup.status();
  std::vector<StepMetrics> metrics;
  ASSERT_TRUE(RunThreadRanks(4, [&](Communicator& comm) -> absl::Status {
                ExecutorOptions o;
                o.slowdown = setup->slowdown[static_cast<size_t>(comm.rank())];
                HS_ASSIGN_OR_RETURN(auto ex, Executor::Create(setup->graph, setup->plan, comm, o));
                for (int i = 0; i < 3; ++i) {
                  HS_ASSIGN_OR_RETURN(Batch batch, setup->data.Get(i));
                  HS_ASSIGN_OR_RETURN(StepMetrics m, ex->Step(batch));
                  if (comm.rank() == 0) metrics.push_back(m);
                }
                return absl::OkStatus();
              }).ok());
  const StepMetrics& m = metrics.back();
  ASSERT_EQ(m.ranks.size(), 4u);
  EXPECT_GT(m.ranks[3].compute_s, 2.0 * m.ranks[0].compute_s);
  EXPECT_GT(m.ranks[0].idle_s, m.ranks[3].idle_s);
  EXPECT_GE(m.step_time_s, m.ranks[3].compute_s);
}

}  // namespace
}  // namespace hetsynth::runtime

namespace hetsynth::runtime {
namespace {

TEST(Executor, AdamLossesMatch) {
  // Adam parameters can differ where gradients are zero up to rounding (docs/runtime.md); the
  // losses must still agree.
  for (const char* strategy : {"synthesized", "tp-even"}) {
    auto setup = testing::MakeSetup({"gpt", strategy, {}});
    ASSERT_TRUE(setup.ok()) << setup.status();
    setup->optimizer = OptimizerConfig{};  // Adam, lr 1e-3
    auto reference = testing::TrainSingle(*setup, 5);
    ASSERT_TRUE(reference.ok()) << reference.status();
    testing::RunResult run;
    ASSERT_TRUE(RunThreadRanks(4, [&](Communicator& comm) -> absl::Status {
                  HS_ASSIGN_OR_RETURN(testing::RunResult r, testing::TrainPlan(*setup, comm, 5));
                  if (comm.rank() == 0) run = std::move(r);
                  return absl::OkStatus();
                }).ok());
    for (int i = 0; i < 5; ++i) {
      EXPECT_NEAR(run.losses[i], reference->losses[i], 1e-5 * std::abs(reference->losses[i])) << strategy << " step " << i;
    }
  }
}

}  // namespace
}  // namespace hetsynth::runtime
