// Optimizers with PyTorch semantics and defaults (torch.optim.SGD and torch.optim.Adam).
//
//   OptimizerConfig cfg{.kind = OptimizerKind::kAdam, .lr = 1e-3};
//   Optimizer opt(cfg);
//   opt.Step(params, grads);   // per-parameter state created on first use
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

enum class OptimizerKind : uint8_t { kSgd, kAdam };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kAdam;
  double lr = 1e-3;            // learning rate
  double momentum = 0.0;       // SGD only; PyTorch's dampening=0, nesterov=False
  double weight_decay = 0.0;   // L2 term added to the gradient (PyTorch's, not AdamW's)
  double beta1 = 0.9;          // Adam
  double beta2 = 0.999;        // Adam
  double eps = 1e-8;           // Adam
};

// "sgd" / "adam"; error lists the choices.
absl::StatusOr<OptimizerKind> ParseOptimizerKind(const std::string& name);
const char* OptimizerName(OptimizerKind kind);
// Checks ranges (lr > 0, 0 <= momentum < 1, betas in [0, 1), eps > 0, weight_decay >= 0).
absl::Status ValidateOptimizerConfig(const OptimizerConfig& cfg);

class Optimizer {
 public:
  explicit Optimizer(OptimizerConfig cfg) : cfg_(cfg) {}

  const OptimizerConfig& config() const { return cfg_; }
  // Updates every parameter in place from the gradient of the same name.
  void Step(std::map<std::string, Tensor>& params, const std::map<std::string, Tensor>& grads);
  int64_t steps() const { return steps_; }

  // State for checkpoints: "<param>.momentum_buffer" (SGD with momentum) or
  // "<param>.exp_avg" / "<param>.exp_avg_sq" (Adam), plus the step count.
  std::map<std::string, Tensor> StateTensors() const;
  void RestoreState(std::map<std::string, Tensor> tensors, int64_t steps);

 private:
  OptimizerConfig cfg_;
  int64_t steps_ = 0;
  std::map<std::string, Tensor> m_;  // momentum buffer (SGD) or exp_avg (Adam)
  std::map<std::string, Tensor> v_;  // exp_avg_sq (Adam)
};

}  // namespace hetsynth::runtime
