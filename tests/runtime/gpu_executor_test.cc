// The plan executor's GPU backend against single-device CPU training: every built-in model
// (small preset) and every plan kind on the 4-device mixed cluster, 5 steps. Here the backend
// runs on HostExec over 4 thread ranks — the executor code, device-side slicing, packing and
// routes of the GPU path, with host memory — so it is checked on machines without a GPU.
// On a GPU (skipped without one) the same plans run on 4 virtual GPUs — green contexts with SM
// shares 4:4:2:1 and the device communicator — against single-GPU training.
#include <gtest/gtest.h>

#include <type_traits>

#include "deferred_exec.h"
#include "exec/exec_host.h"
#include "executor/backend.h"
#include "executor_reference.h"
#include "hetsynth/runtime/cuda.h"
#include "hetsynth/runtime/cuda_backend.h"

namespace hetsynth::runtime {
namespace {

using testing::PlanCase;

template <class X = gpu::HostExec>
absl::StatusOr<testing::RunResult> TrainPlanOnHostExec(const testing::Setup& s, Communicator& world, int steps) {
  X x;
  // On a deferred executor the rank's own collectives go in its order too, as on a GPU stream.
  std::unique_ptr<Communicator> ordered;
  if constexpr (!std::is_same_v<X, gpu::HostExec>) ordered = std::make_unique<gpu::testing::StreamOrderedComm<X>>(&world, &x);
  Communicator& comm = ordered ? *ordered : world;
  ExecutorOptions o;
  o.optimizer = s.optimizer;
  o.seed = 3;
  o.emulate = false;
  HS_ASSIGN_OR_RETURN(auto ex, gpu::CreateDeviceExecutor(x, s.graph, s.plan, comm, o));
  testing::RunResult out;
  HS_RETURN_IF_ERROR(testing::RunSteps(s, *ex, steps, out));
  HS_ASSIGN_OR_RETURN(out.params, ex->FullParameters());
  return out;
}

class GpuBackendExecutor : public ::testing::TestWithParam<PlanCase> {};

TEST_P(GpuBackendExecutor, MatchesSingleDeviceTraining) {
  auto setup = testing::MakeSetup(GetParam());
  ASSERT_TRUE(setup.ok()) << setup.status();
  // vgg19: 2 steps. Its convolutions sum weight gradients over image chunks of another size than
  // the CPU kernel's (ops/conv.h) and the plan's uneven batch pieces change the chunks again; by
  // step 5 rounding has tipped ReLU/max-pool decisions (see executor_reference.h) and the
  // parameters differ by ~1e-5 absolute everywhere.
  const int steps = GetParam().model == "vgg19" ? 2 : 5;
  auto reference = testing::TrainSingle(*setup, steps);
  ASSERT_TRUE(reference.ok()) << reference.status();
  testing::RunResult run;
  const absl::Status st = RunThreadRanks(4, [&](Communicator& comm) -> absl::Status {
    HS_ASSIGN_OR_RETURN(testing::RunResult r, TrainPlanOnHostExec(*setup, comm, steps));
    if (comm.rank() == 0) run = std::move(r);
    return absl::OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(testing::Compare(*reference, run, 1e-5), "");
}

std::vector<PlanCase> Cases() {
  std::vector<PlanCase> out;
  for (const char* model : {"mlp", "gpt", "vit", "vgg19", "moe"}) {
    for (const char* strategy : {"synthesized", "dp-ev", "tp-even", "zero-even"}) out.push_back({model, strategy, {}});
  }
  out.push_back({"gpt", "tp-even", {"dropout=0.2"}});
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllModels, GpuBackendExecutor, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<PlanCase>& info) { return info.param.Name(); });

// The two-node plan kinds on the GPU backend (HostExec): hierarchical collectives run flat there
// and overlapped collectives block in the same order (docs/runtime.md) — the same training; and
// plans over mesh levels (megatron, the hand-made nodes-level programs).
class GpuBackendTwoNodes : public ::testing::TestWithParam<PlanCase> {};

TEST_P(GpuBackendTwoNodes, MatchesSingleDeviceTraining) {
  auto setup = testing::MakeSetup(GetParam());
  ASSERT_TRUE(setup.ok()) << setup.status();
  auto reference = testing::TrainSingle(*setup, 5);
  ASSERT_TRUE(reference.ok()) << reference.status();
  testing::RunResult run;
  const absl::Status st = RunThreadRanks(setup->plan.program.num_devices, [&](Communicator& comm) -> absl::Status {
    HS_ASSIGN_OR_RETURN(testing::RunResult r, TrainPlanOnHostExec(*setup, comm, 5));
    if (comm.rank() == 0) run = std::move(r);
    return absl::OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(testing::Compare(*reference, run, 1e-5), "");
}

std::vector<PlanCase> TwoNodeCases() {
  std::vector<PlanCase> out;
  for (int k : {2, 4}) {
    out.push_back({"mlp", "dp-ev", {}, k, "all"});
    out.push_back({"gpt", "zero-even", {}, k, "all"});
    out.push_back({"gpt", "tp-even", {}, k, "hier"});
    // Mesh levels: node communicators on the device communicator, nodes-level collectives and
    // across-nodes gradients staged through host memory.
    out.push_back({"gpt", "megatron", {}, k, ""});
    out.push_back({"vit", "megatron", {}, k, "blocking"});
  }
  for (const char* kind : {"hand-gather", "hand-scatter", "hand-reduce"}) out.push_back({"mlp", kind, {}, 2, ""});
  out.push_back({"gpt", "megatron", {"dropout=0.2"}, 4, ""});  // masks of pieces cut on two dims
  return out;
}

INSTANTIATE_TEST_SUITE_P(TwoNodes, GpuBackendTwoNodes, ::testing::ValuesIn(TwoNodeCases()),
                         [](const ::testing::TestParamInfo<PlanCase>& info) { return info.param.Name(); });

// Overlapped plans with a communication stream that runs late and memory poisoned when freed
// (deferred_exec.h): a buffer the stream reads after the compute stream freed, reused or
// overwrote it gives NaN or other numbers here, as it would on a GPU when the stream lags.
// With both streams late (LateComputeExec) the compute side's work between its waits (the
// executor waits for the device after each instruction on GPUs; not for what it issues outside
// them, e.g. gradient accumulation) runs only when something waits for it.
template <class X>
void ExpectLateStreamsMatchOneDevice(const PlanCase& c) {
  auto setup = testing::MakeSetup(c);
  ASSERT_TRUE(setup.ok()) << setup.status();

  auto reference = testing::TrainSingle(*setup, 3);
  ASSERT_TRUE(reference.ok()) << reference.status();
  testing::RunResult run;
  const absl::Status st = RunThreadRanks(setup->plan.program.num_devices, [&](Communicator& comm) -> absl::Status {
    HS_ASSIGN_OR_RETURN(testing::RunResult r, TrainPlanOnHostExec<X>(*setup, comm, 3));
    if (comm.rank() == 0) run = std::move(r);
    return absl::OkStatus();
  });
  gpu::testing::Graveyard::Release();
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(testing::Compare(*reference, run, 1e-5), "");
}

class GpuBackendLateStream : public ::testing::TestWithParam<PlanCase> {};
TEST_P(GpuBackendLateStream, MatchesSingleDeviceTraining) {
  ExpectLateStreamsMatchOneDevice<gpu::testing::DeferredExec>(GetParam());
}
TEST_P(GpuBackendLateStream, MatchesSingleDeviceTrainingWithComputeLateToo) {
  ExpectLateStreamsMatchOneDevice<gpu::testing::LateComputeExec>(GetParam());
}

std::vector<PlanCase> LateStreamCases() {
  // The last: mesh levels, so the node communicator is split onto the stream too.
  return {{"mlp", "dp-ev", {}, 2, "all"},      {"gpt", "dp-ev", {}, 2, "overlap"}, {"gpt", "zero-even", {}, 2, "all"},
          {"vit", "zero-even", {}, 2, "overlap"}, {"gpt", "tp-even", {}, 4, "all"},  {"moe", "dp-ev", {}, 2, "overlap"},
          {"gpt", "megatron", {}, 2, "overlap"}};
}

INSTANTIATE_TEST_SUITE_P(Overlap, GpuBackendLateStream, ::testing::ValuesIn(LateStreamCases()),
                         [](const ::testing::TestParamInfo<PlanCase>& info) { return info.param.Name(); });

// `steps` steps of the setup's model on one GPU (the CUDA trainer).
absl::StatusOr<testing::RunResult> TrainOneGpu(const testing::Setup& s, int steps) {
  HS_ASSIGN_OR_RETURN(auto t, CudaTrainer::Create(s.graph, s.optimizer, 3, {}));
  testing::RunResult one;
  for (int i = 0; i < steps; ++i) {
    HS_ASSIGN_OR_RETURN(Batch batch, s.data.Get(t->step()));
    HS_ASSIGN_OR_RETURN(float loss, t->Step(batch));
    one.losses.push_back(loss);
  }
  one.params = t->Parameters();
  return one;
}

// `steps` steps of the setup's plan on virtual GPUs of the given speeds (RunCudaRanks); rank 0's
// losses and the full parameters.
absl::StatusOr<testing::RunResult> TrainVirtualGpus(const testing::Setup& s, std::vector<double> speeds, int steps) {
  testing::RunResult out;
  CudaPlanOptions co;
  co.emulate_gpus = true;
  co.speeds = std::move(speeds);
  HS_RETURN_IF_ERROR(RunCudaRanks(s.graph, s.plan, co, [&](Communicator& comm, const MakeExecutorFn& make) -> absl::Status {
    ExecutorOptions o;
    o.optimizer = s.optimizer;
    o.seed = 3;
    HS_ASSIGN_OR_RETURN(auto ex, make(o));
    testing::RunResult r;
    HS_RETURN_IF_ERROR(testing::RunSteps(s, *ex, steps, r));
    HS_ASSIGN_OR_RETURN(r.params, ex->FullParameters());
    if (comm.rank() == 0) out = std::move(r);
    return absl::OkStatus();
  }));
  return out;
}

// A plan on 4 emulated GPUs against one GPU (both through the public CUDA backend API).
TEST(GpuVirtualExecutor, FourVirtualGpusMatchOneGpu) {
  const CudaInfo info = ProbeCuda();
  if (info.devices == 0) GTEST_SKIP() << "no GPU: " << info.reason;
  for (const char* model : {"mlp", "gpt", "moe"}) {
    for (const char* strategy : {"synthesized", "tp-even"}) {
      auto setup = testing::MakeSetup({model, strategy, {}});
      ASSERT_TRUE(setup.ok()) << setup.status();
      absl::StatusOr<testing::RunResult> one = TrainOneGpu(*setup, 5);
      ASSERT_TRUE(one.ok()) << one.status();
      absl::StatusOr<testing::RunResult> four = TrainVirtualGpus(*setup, {4, 4, 2, 1}, 5);
      ASSERT_TRUE(four.ok()) << four.status();
      EXPECT_EQ(testing::Compare(*one, *four, 1e-5), "") << model << " " << strategy;
    }
  }
}

// Overlapped two-node plans on virtual GPUs against one GPU: the communication stream (a second
// CUDA stream; the device communicator split onto it, world and node) on a real device.
TEST(GpuVirtualExecutor, OverlappedTwoNodePlansMatchOneGpu) {
  const CudaInfo info = ProbeCuda();
  if (info.devices == 0) GTEST_SKIP() << "no GPU: " << info.reason;
  for (const PlanCase& c : LateStreamCases()) {
    auto setup = testing::MakeSetup(c);
    ASSERT_TRUE(setup.ok()) << setup.status();
    absl::StatusOr<testing::RunResult> one = TrainOneGpu(*setup, 3);
    ASSERT_TRUE(one.ok()) << one.status();
    absl::StatusOr<testing::RunResult> many =
        TrainVirtualGpus(*setup, std::vector<double>(static_cast<size_t>(setup->plan.program.num_devices), 1.0), 3);
    ASSERT_TRUE(many.ok()) << c.Name() << ": " << many.status();
    EXPECT_EQ(testing::Compare(*one, *many, 1e-5), "") << c.Name();
  }
}

}  // namespace
}  // namespace hetsynth::runtime
