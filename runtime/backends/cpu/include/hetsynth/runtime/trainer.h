// Single-device training on the CPU backend: deterministic initialization, a tape-based
// backward pass over the graph, an optimizer step, and safetensors checkpoints. This is the
// reference every distributed run is compared with. Initialization and checkpoints are
// training.h's, shared with the plan executor and the CUDA backend.
//
//   HS_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(graph, OptimizerConfig{}, /*seed=*/0));
//   for (int64_t i = 0; i < steps; ++i) {
//     HS_ASSIGN_OR_RETURN(Batch batch, data.Get(trainer->step()));
//     HS_ASSIGN_OR_RETURN(float loss, trainer->Step(batch));
//   }
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/tensor.h"
#include "hetsynth/runtime/training.h"

namespace hetsynth::runtime {

class Trainer {
 public:
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(ir::Graph graph, OptimizerConfig cfg,
                                                         uint64_t seed);

  // Forward, backward and optimizer update on one batch; returns the loss before the update.
  absl::StatusOr<float> Step(const Batch& batch);
  // Forward and backward only: the loss and the gradient of every parameter.
  absl::StatusOr<float> Gradients(const Batch& batch, std::map<std::string, Tensor>* grads);
  // Forward only.
  absl::StatusOr<float> Loss(const Batch& batch);

  // For profiling: called after every kernel call with its node, whether it was the backward,
  // and the calling thread's CPU time it took (CLOCK_THREAD_CPUTIME_ID). Empty: no timing.
  using KernelTimer = std::function<void(ir::NodeId node, bool backward, double cpu_seconds)>;
  void SetKernelTimer(KernelTimer timer) { timer_ = std::move(timer); }

  const ir::Graph& graph() const { return graph_; }
  std::map<std::string, Tensor>& parameters() { return params_; }
  const Optimizer& optimizer() const { return optimizer_; }
  // Optimizer steps taken so far, including those restored from a checkpoint; the next batch
  // is data step `step()`.
  int64_t step() const { return optimizer_.steps(); }

  // Parameters go to `path` (tensor names = parameter names, loadable by PyTorch); optimizer
  // state, when there is any, to OptimizerStatePath(path). `model` is recorded in metadata.
  absl::Status Save(const std::string& path, const std::string& model) const;
  // Replaces the parameters (every one must be present with its shape) and, when the state
  // file exists and was written by the same optimizer, the optimizer state and step count.
  absl::Status Load(const std::string& path);

 private:
  Trainer(ir::Graph graph, OptimizerConfig cfg) : graph_(std::move(graph)), optimizer_(cfg) {}
  absl::StatusOr<float> Forward(const Batch& batch);
  void Backward(std::map<std::string, Tensor>* grads);

  ir::Graph graph_;
  Optimizer optimizer_;
  std::map<std::string, Tensor> params_;
  std::vector<bool> needs_grad_;       // per value: depends on a parameter
  std::vector<Tensor> values_;         // per value, during a step
  std::vector<SavedState> saved_;      // per node, during a step
  KernelContext ctx_;
  KernelTimer timer_;
};

}  // namespace hetsynth::runtime
