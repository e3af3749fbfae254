// Single-device training on the CPU backend: deterministic initialization, a tape-based
// backward pass over the graph, an optimizer step, and safetensors checkpoints. This is the
// reference every distributed run is compared with.
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

namespace hetsynth::runtime {

// The initial value of a parameter: its Init applied to the stream Rng(seed, Fnv1a(name)),
// elements in row-major order (docs/models.md).
Tensor InitParameter(const ir::Value& param, uint64_t seed);

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

// "ckpt.safetensors" -> "ckpt.optim.safetensors"; other names get ".optim.safetensors".
std::string OptimizerStatePath(const std::string& checkpoint);

// Checkpoints of full tensors, shared by single-device and multi-rank training (so one moves
// freely between them): parameters in `path`, optimizer state (when any) in
// OptimizerStatePath(path), metadata format/model/step/optimizer in both.
struct Checkpoint {
  std::map<std::string, Tensor> params;
  std::map<std::string, Tensor> state;  // empty when absent or written by another optimizer
  int64_t step = 0;
};
absl::Status WriteCheckpoint(const std::string& path, const std::string& model,
                             const std::map<std::string, Tensor>& params,
                             const std::map<std::string, Tensor>& state, OptimizerKind optimizer,
                             int64_t step);
// Every parameter of `shapes` must be present with its shape and nothing else; state tensors
// must belong to a parameter of its shape.
absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path,
                                          const std::map<std::string, ir::Shape>& shapes,
                                          OptimizerKind optimizer);

}  // namespace hetsynth::runtime
