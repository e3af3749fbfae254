// Training on one device, whatever the backend: the interface of every single-device trainer —
// the CPU's runtime::Trainer (trainer.h), the CUDA backend's CudaTrainer (cuda_backend.h) and
// gpu::DeviceTrainer — all of them one algorithm, TrainerImpl (trainer_impl.h), over a backend.
// Get one from a backend object (backend.h) so that the caller does not name the backend:
//
//   HS_ASSIGN_OR_RETURN(Backend* backend, FindBackend("cpu"));
//   HS_ASSIGN_OR_RETURN(std::unique_ptr<SingleDeviceTrainer> t,
//                       backend->MakeTrainer(graph, OptimizerConfig{}, /*seed=*/0, TrainerOptions{}));
//   for (int64_t i = 0; i < steps; ++i) {
//     HS_ASSIGN_OR_RETURN(Batch batch, data.Get(t->step()));
//     HS_ASSIGN_OR_RETURN(float loss, t->Step(batch));
//   }
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// How a backend trains on one device (Backend::MakeTrainer).
struct TrainerOptions {
  int device = 0;  // which device of the backend (GPU index); the CPU has one
  // GEMM arithmetic, one of the backend's BackendCapabilities::precisions: "fp32"; on CUDA also
  // "tf32" (tensor cores, TF32 inputs) or "bf16" (tensor cores, bf16 inputs, fp32 accumulation and
  // fp32 master weights). Tensors stay fp32 in memory.
  std::string precision = "fp32";
};

class SingleDeviceTrainer {
 public:
  virtual ~SingleDeviceTrainer() = default;

  // Forward, backward and optimizer update on one batch; returns the loss before the update.
  virtual absl::StatusOr<float> Step(const Batch& batch) = 0;
  // Forward and backward only: the loss and (host copies of) the gradient of every parameter.
  virtual absl::StatusOr<float> Gradients(const Batch& batch, std::map<std::string, Tensor>* grads) = 0;
  // Forward only.
  virtual absl::StatusOr<float> Loss(const Batch& batch) = 0;

  // Host copies of the parameters.
  virtual std::map<std::string, Tensor> Parameters() = 0;
  // Parameters go to `path` (tensor names = parameter names, loadable by PyTorch); optimizer
  // state, when there is any, to OptimizerStatePath(path). `model` is recorded in metadata.
  virtual absl::Status Save(const std::string& path, const std::string& model) = 0;
  // Replaces the parameters (every one must be present with its shape) and, when the state
  // file exists and was written by the same optimizer, the optimizer state and step count.
  // `model` (as given to Save), when not empty, must be the checkpoint's architecture
  // (ReadCheckpoint). State that is not used is said in one "hetsynth: note:" line on stderr.
  virtual absl::Status Load(const std::string& path, const std::string& model = "") = 0;

  // Optimizer steps taken so far, including those restored from a checkpoint; the next batch is
  // data step `step()`.
  virtual int64_t step() const = 0;
  virtual const ir::Graph& graph() const = 0;
  // What it trains on, for messages: "1 CPU device", "GPU 0 (NVIDIA H100 80GB HBM3, tf32)".
  virtual std::string device() const = 0;

  // For profiling: called after every kernel with its node, whether it was the backward, and the
  // seconds it took — on the CPU the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID); on a
  // device the wall clock, waiting for the device before and after the kernel (which slows the
  // step down). Empty: no timing.
  using KernelTimer = std::function<void(ir::NodeId node, bool backward, double seconds)>;
  virtual void SetKernelTimer(KernelTimer timer) = 0;
};

}  // namespace hetsynth::runtime
