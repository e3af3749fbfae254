// Single-device training on an executor X (GpuExec: one GPU; HostExec: the same operators on the
// host, for tests): core's trainer algorithm (trainer_impl.h) over the plan executor's GPU
// backend (executor/backend.h) — the same initialization (parameters made on the host by
// InitParameter, then uploaded), the same tape, the same optimizer as the CPU's Trainer, with
// every tensor in X's memory and every operator from dispatch.h. Batches arrive on the host and
// are uploaded.
//
//   HS_ASSIGN_OR_RETURN(auto t, gpu::DeviceTrainer<gpu::GpuExec>::Create(x, graph, cfg, /*seed=*/0));
//   HS_ASSIGN_OR_RETURN(float loss, t->Step(batch));
#pragma once

#include <memory>
#include <string>

#include "executor/backend.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/trainer_impl.h"

namespace hetsynth::runtime::gpu {

template <class X>
class DeviceTrainer final : public TrainerImpl<GpuBackend<X>> {
 public:
  // x must outlive the trainer. `device` is what device() reports.
  static absl::StatusOr<std::unique_ptr<DeviceTrainer>> Create(X& x, ir::Graph graph, OptimizerConfig cfg,
                                                               uint64_t seed, std::string device = "one device") {
    std::unique_ptr<DeviceTrainer> t(new DeviceTrainer(x, std::move(graph), cfg, std::move(device)));
    HS_RETURN_IF_ERROR(t->Init(seed));
    return t;
  }

  std::string device() const override { return device_; }
  X& executor() { return *this->backend().x; }

 private:
  DeviceTrainer(X& x, ir::Graph graph, OptimizerConfig cfg, std::string device)
      : TrainerImpl<GpuBackend<X>>(GpuBackend<X>{&x}, std::move(graph), cfg), device_(std::move(device)) {}

  std::string device_;
};

}  // namespace hetsynth::runtime::gpu
