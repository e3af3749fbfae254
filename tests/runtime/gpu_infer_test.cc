// Inference placements on the GPU backend (infer_impl.h's RunOnRanks over GpuBackend) against
// the CPU's one-device forward: every built-in model (small preset), its forward ops cut into
// contiguous groups dealt round-robin over 3 ranks. Here the backend runs on HostExec over
// thread ranks — the GPU path's uploads, functors and downloads with host memory — so it is
// checked on machines without a GPU; on a GPU (skipped without one) the same placements run on
// GPU 0 through the cuda backend (one rank, every group on it) and `hetsynth infer --backend cuda`
// does the rest.
#include <gtest/gtest.h>

#include "exec/exec_host.h"
#include "executor/backend.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/cuda.h"
#include "hetsynth/runtime/infer.h"
#include "hetsynth/runtime/infer_impl.h"
#include "hetsynth/runtime/training.h"

namespace hetsynth::runtime {
namespace {

struct Model {
  ir::Graph graph;
  std::map<std::string, Tensor> params;
  std::vector<Batch> requests;
};

absl::StatusOr<Model> MakeModel(const std::string& model) {
  Model s;
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, ir::MakeModelSpec(model, {}, 0, ir::Preset::kSmall));
  HS_ASSIGN_OR_RETURN(s.graph, ir::BuildModel(spec));
  for (ir::ValueId v : s.graph.parameters()) s.params[s.graph.value(v).name] = InitParameter(s.graph.value(v), 5);
  HS_ASSIGN_OR_RETURN(DataSource data, DataSource::Synthetic(spec, s.graph, 5));
  for (int q = 0; q < 2; ++q) {
    HS_ASSIGN_OR_RETURN(Batch b, data.Get(q));
    s.requests.push_back(std::move(b));
  }
  return s;
}

// The forward ops (all but the loss) in `groups` contiguous groups, group k on device k % ranks.
instr::InferencePlacement RoundRobin(const ir::Graph& g, int groups, int ranks) {
  std::vector<ir::NodeId> ops;
  const ir::NodeId loss = infer_detail::LossNode(g);
  for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(g.nodes().size()); ++n) {
    if (n != loss) ops.push_back(n);
  }
  instr::InferencePlacement p;
  for (int r = 0; r < ranks; ++r) p.devices.push_back(std::string("d").append(std::to_string(r)));
  const size_t per = (ops.size() + groups - 1) / groups;
  for (size_t at = 0, k = 0; at < ops.size(); at += per, ++k) {
    instr::InferencePlacementGroup gr;
    gr.ops.assign(ops.begin() + static_cast<std::ptrdiff_t>(at), ops.begin() + static_cast<std::ptrdiff_t>(std::min(ops.size(), at + per)));
    gr.name = g.node(gr.ops.front()).name;
    gr.device = static_cast<int>(k % static_cast<size_t>(ranks));
    p.groups.push_back(std::move(gr));
  }
  return p;
}

// Largest |a − b| over every output, relative to max(1, max |b|); infinite for a missing or
// misshaped output or a NaN against a number.
double MaxRelativeDiff(const Outputs& a, const Outputs& b) {
  double diff = 0, scale = 1;
  for (const auto& [name, ref] : b) {
    const auto it = a.find(name);
    if (it == a.end() || it->second.shape != ref.shape) return INFINITY;
    for (int64_t i = 0; i < ref.numel(); ++i) {
      scale = std::max(scale, static_cast<double>(std::abs(ref.data[i])));
      const double d = std::abs(static_cast<double>(it->second.data[i]) - ref.data[i]);
      diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    }
  }
  return diff / scale;
}

class GpuInference : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuInference, HostExecRanksMatchTheCpuForward) {
  absl::StatusOr<Model> s = MakeModel(GetParam());
  ASSERT_TRUE(s.ok()) << s.status();
  const instr::InferencePlacement p = RoundRobin(s->graph, 7, 3);
  std::vector<Outputs> reference;
  for (const Batch& b : s->requests) {
    absl::StatusOr<Outputs> out = ForwardOneDevice(s->graph, s->params, b);
    ASSERT_TRUE(out.ok()) << out.status();
    reference.push_back(*std::move(out));
  }
  // The GPU path's one-device forward (parameters uploaded once, a warm-up pass).
  gpu::HostExec one;
  double seconds = -1;
  absl::StatusOr<std::vector<Outputs>> single = infer_detail::ForwardOneDevice(
      gpu::GpuBackend<gpu::HostExec>{&one}, s->graph, s->params, s->requests, /*warm_up=*/true, &seconds);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_GE(seconds, 0);
  ASSERT_EQ(single->size(), reference.size());
  for (size_t q = 0; q < reference.size(); ++q) EXPECT_LE(MaxRelativeDiff((*single)[q], reference[q]), 1e-5) << "request " << q;

  for (const bool sequential : {false, true}) {
    InferRun run;
    const absl::Status st = RunThreadRanks(3, [&](Communicator& comm) -> absl::Status {
      gpu::HostExec x;
      InferOptions o;
      o.sequential = sequential;
      HS_ASSIGN_OR_RETURN(InferRun r, infer_detail::RunOnRanks(gpu::GpuBackend<gpu::HostExec>{&x}, comm, s->graph, p,
                                                               s->params, s->requests, o));
      if (comm.rank() == 0) run = std::move(r);
      return absl::OkStatus();
    });
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_EQ(run.ranks, 3);
    EXPECT_GT(run.messages, 0);
    ASSERT_EQ(run.outputs.size(), reference.size());
    for (size_t q = 0; q < reference.size(); ++q) {
      EXPECT_LE(MaxRelativeDiff(run.outputs[q], reference[q]), 1e-5) << "request " << q << (sequential ? " (sequential)" : "");
    }
  }
}

TEST_P(GpuInference, CudaBackendRunsOnAGpuOrSaysWhyNot) {
  absl::StatusOr<Model> s = MakeModel(GetParam());
  ASSERT_TRUE(s.ok()) << s.status();
  absl::StatusOr<Backend*> cuda = FindBackend("cuda");
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  instr::InferencePlacement p = RoundRobin(s->graph, 5, 1);  // every group on the one rank
  const absl::Status available = (*cuda)->Available();
  if (!available.ok()) {
    // Without a GPU both entry points fail with the reason instead of running anything.
    double seconds = 0;
    EXPECT_FALSE((*cuda)->ForwardOneDevice(s->graph, s->params, s->requests, 0, &seconds).ok());
    const absl::Status st = RunThreadRanks(1, [&](Communicator& comm) {
      return (*cuda)->RunPlacementRank(comm, s->graph, p, s->params, s->requests, {}, 0).status();
    });
    EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
    GTEST_SKIP() << "no GPU: " << available.message();
  }
  double seconds = 0;
  absl::StatusOr<std::vector<Outputs>> single = (*cuda)->ForwardOneDevice(s->graph, s->params, s->requests, 0, &seconds);
  ASSERT_TRUE(single.ok()) << single.status();
  InferRun run;
  const absl::Status st = RunThreadRanks(1, [&](Communicator& comm) -> absl::Status {
    HS_ASSIGN_OR_RETURN(run, (*cuda)->RunPlacementRank(comm, s->graph, p, s->params, s->requests, {}, 0));
    return absl::OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st;
  for (size_t q = 0; q < s->requests.size(); ++q) {
    // The same kernels on the same GPU: equal to one GPU's forward; near the CPU's.
    EXPECT_LE(MaxRelativeDiff(run.outputs[q], (*single)[q]), 1e-5) << "request " << q;
    absl::StatusOr<Outputs> cpu = ForwardOneDevice(s->graph, s->params, s->requests[q]);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    EXPECT_LE(MaxRelativeDiff(run.outputs[q], *cpu), 1e-4) << "request " << q;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GpuInference, ::testing::Values("mlp", "gpt", "vit", "vgg19", "moe"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace hetsynth::runtime
