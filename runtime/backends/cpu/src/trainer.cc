// The CPU's single-device trainer: core's TrainerImpl over cpu::CpuBackend.
#include "hetsynth/runtime/trainer.h"

#include "cpu_backend.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/trainer_impl.h"

namespace hetsynth::runtime {
namespace {

class CpuTrainer final : public TrainerImpl<cpu::CpuBackend, Trainer> {
 public:
  CpuTrainer(ir::Graph graph, OptimizerConfig cfg) : TrainerImpl(cpu::CpuBackend{}, std::move(graph), cfg) {}
  using TrainerImpl::Init;

  std::map<std::string, Tensor>& parameters() override { return params_; }
  const Optimizer& optimizer() const override { return optimizer_; }
  std::string device() const override { return "1 CPU device"; }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(ir::Graph graph, OptimizerConfig cfg, uint64_t seed) {
  auto t = std::make_unique<CpuTrainer>(std::move(graph), cfg);
  HS_RETURN_IF_ERROR(t->Init(seed));
  return std::unique_ptr<Trainer>(std::move(t));
}

}  // namespace hetsynth::runtime
