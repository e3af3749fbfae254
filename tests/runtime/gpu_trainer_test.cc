// Training parity: the GPU backend's trainer (every operator, the optimizer, the tape) against
// runtime::Trainer on the CPU, 10 steps of each built-in model at small settings. HostExec runs
// everywhere; GpuExec needs a visible GPU (skipped otherwise) and also runs TF32 and bf16.
#include <cmath>
#include <map>
#include <string>

#include "device_trainer.h"
#include "gpu_op_check.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/trainer.h"

namespace hetsynth::runtime::testing {
namespace {

constexpr const char* kModels[] = {"mlp", "gpt", "vit", "vgg19", "moe"};

struct Run {
  std::vector<float> losses;
  std::map<std::string, Tensor> params;
};

struct ModelSetup {
  ir::Graph graph;
  DataSource data;
};

ModelSetup MakeSetup(const std::string& model) {
  auto spec = ir::MakeModelSpec(model, {}, 0, ir::Preset::kSmall);
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto graph = ir::BuildModel(*spec);
  EXPECT_TRUE(graph.ok()) << graph.status();
  auto data = DataSource::Synthetic(*spec, *graph, 7);
  EXPECT_TRUE(data.ok()) << data.status();
  return {std::move(*graph), std::move(*data)};
}

OptimizerConfig Sgd() {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.lr = 0.01;
  c.momentum = 0.9;
  return c;
}

Run TrainCpu(const ModelSetup& s, OptimizerConfig cfg, int steps) {
  Run r;
  auto t = Trainer::Create(s.graph, cfg, 3);
  EXPECT_TRUE(t.ok()) << t.status();
  for (int i = 0; i < steps; ++i) {
    auto batch = s.data.Get((*t)->step());
    auto loss = (*t)->Step(*batch);
    EXPECT_TRUE(loss.ok()) << loss.status();
    r.losses.push_back(loss.value_or(NAN));
  }
  r.params = (*t)->parameters();
  return r;
}

template <class X>
Run TrainOn(X& x, const ModelSetup& s, OptimizerConfig cfg, int steps) {
  Run r;
  auto t = gpu::DeviceTrainer<X>::Create(x, s.graph, cfg, 3);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return r;
  for (int i = 0; i < steps; ++i) {
    auto batch = s.data.Get((*t)->step());
    auto loss = (*t)->Step(*batch);
    EXPECT_TRUE(loss.ok()) << loss.status();
    r.losses.push_back(loss.value_or(NAN));
  }
  r.params = (*t)->Parameters();
  return r;
}

void ExpectClose(const Run& got, const Run& ref, double tol, bool params, const std::string& what) {
  ASSERT_EQ(got.losses.size(), ref.losses.size()) << what;
  for (size_t i = 0; i < ref.losses.size(); ++i) {
    EXPECT_LE(std::fabs(got.losses[i] - ref.losses[i]), tol * std::max(1e-6f, std::fabs(ref.losses[i])))
        << what << ": loss of step " << i + 1 << " is " << got.losses[i] << ", CPU " << ref.losses[i];
  }
  if (!params) return;
  for (const auto& [name, t] : ref.params) {
    auto it = got.params.find(name);
    ASSERT_NE(it, got.params.end()) << what << ": parameter " << name;
    EXPECT_LE(RelativeError(it->second, t), tol) << what << ": parameter " << name;
  }
}

template <class X>
using GpuTrainerTest = GpuOpTest<X>;
TYPED_TEST_SUITE(GpuTrainerTest, GpuExecutors);

TYPED_TEST(GpuTrainerTest, TenStepsOfEveryModelMatchTheCpu) {
  for (const char* model : kModels) {
    const ModelSetup s = MakeSetup(model);
    const Run ref = TrainCpu(s, Sgd(), 10);
    ExpectClose(TrainOn(this->x(), s, Sgd(), 10), ref, 1e-5, true, StrCat(model, " sgd+momentum"));
  }
}

TYPED_TEST(GpuTrainerTest, AdamLossesMatchTheCpu) {
  for (const char* model : {"mlp", "gpt"}) {
    const ModelSetup s = MakeSetup(model);
    OptimizerConfig adam;
    ExpectClose(TrainOn(this->x(), s, adam, 5), TrainCpu(s, adam, 5), 1e-5, false, StrCat(model, " adam"));
  }
}

#if defined(HETSYNTH_HAVE_CUDA)
// Tensor-core precisions: losses within 1e-3 (TF32) and 1e-2 (bf16) of the fp32 CPU run.
TEST(GpuTrainerPrecision, Tf32AndBf16LossesStayClose) {
  const CudaInfo info = ProbeCuda();
  if (info.devices == 0) GTEST_SKIP() << "no GPU: " << info.reason;
  for (auto [precision, tol] : {std::pair{gpu::Precision::kTf32, 1e-3}, {gpu::Precision::kBf16, 1e-2}}) {
    auto x = gpu::GpuExec::Create({0, precision, nullptr});
    ASSERT_TRUE(x.ok()) << x.status();
    for (const char* model : kModels) {
      const ModelSetup s = MakeSetup(model);
      ExpectClose(TrainOn(**x, s, Sgd(), 10), TrainCpu(s, Sgd(), 10), tol, false,
                  StrCat(model, " ", gpu::PrecisionName(precision)));
    }
  }
}
#endif

}  // namespace
}  // namespace hetsynth::runtime::testing
