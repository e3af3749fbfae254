// Single-device training on the CPU backend: deterministic initialization, a tape-based
// backward pass over the graph, an optimizer step, and safetensors checkpoints. This is the
// reference every distributed run is compared with. The algorithm is core's TrainerImpl
// (trainer_impl.h) over the CPU's host tensors and kernels — the one the CUDA backend's trainer
// runs on GPU tensors; initialization and checkpoints are training.h's. Callers that do not care
// which backend trains use SingleDeviceTrainer (Backend::MakeTrainer); this class adds the
// CPU's parameters in place and its optimizer, for tests and profiling.
//
//   HS_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(graph, OptimizerConfig{}, /*seed=*/0));
//   for (int64_t i = 0; i < steps; ++i) {
//     HS_ASSIGN_OR_RETURN(Batch batch, data.Get(trainer->step()));
//     HS_ASSIGN_OR_RETURN(float loss, trainer->Step(batch));
//   }
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/single_device_trainer.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

class Trainer : public SingleDeviceTrainer {
 public:
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(ir::Graph graph, OptimizerConfig cfg, uint64_t seed);

  // The parameters themselves (host tensors), to read or change in place.
  virtual std::map<std::string, Tensor>& parameters() = 0;
  virtual const Optimizer& optimizer() const = 0;

 protected:
  Trainer() = default;
};

}  // namespace hetsynth::runtime
