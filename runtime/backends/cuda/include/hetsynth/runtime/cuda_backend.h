// The CUDA backend's entry points: training on one GPU (CudaTrainer: core's single-device
// trainer algorithm — same initialization, data, optimizer and checkpoints as the CPU's — with
// every tensor on the GPU, cuBLAS GEMMs and hetsynth's own kernels, runtime/backends/cuda), plans
// on GPUs (RunCudaRanks: one GPU per MPI rank over NCCL, or a mixed cluster emulated on one GPU
// with green contexts) and profiling one GPU (ProfileCuda). Callers that pick a backend by name
// reach these through the "cuda" backend object (backend.h, FindBackend). In a build without
// CUDA, or without a visible GPU, they fail with FailedPrecondition and the reason.
//
//   HS_ASSIGN_OR_RETURN(auto t, CudaTrainer::Create(graph, OptimizerConfig{}, /*seed=*/0, {.precision = "tf32"}));
//   HS_ASSIGN_OR_RETURN(float loss, t->Step(batch));
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/executor.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/single_device_trainer.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// device: the GPU; precision: "fp32", "tf32" or "bf16" (TrainerOptions).
using CudaTrainOptions = TrainerOptions;

class CudaTrainer final : public SingleDeviceTrainer {
 public:
  static absl::StatusOr<std::unique_ptr<CudaTrainer>> Create(ir::Graph graph, OptimizerConfig cfg, uint64_t seed,
                                                             CudaTrainOptions options);
  ~CudaTrainer() override;
  // Step returns the loss (reading it back waits for the GPU to finish the step); the kernel
  // timer waits for the GPU around every operator.
  absl::StatusOr<float> Step(const Batch& batch) override;
  absl::StatusOr<float> Gradients(const Batch& batch, std::map<std::string, Tensor>* grads) override;
  absl::StatusOr<float> Loss(const Batch& batch) override;
  std::map<std::string, Tensor> Parameters() override;
  absl::Status Save(const std::string& path, const std::string& model) override;
  absl::Status Load(const std::string& path, const std::string& model = "") override;
  int64_t step() const override;
  const ir::Graph& graph() const override;
  std::string device() const override;  // "GPU 0 (NVIDIA H100 80GB HBM3, tf32)"
  void SetKernelTimer(KernelTimer timer) override;
  std::string device_name() const;  // "NVIDIA H100 80GB HBM3"
  size_t peak_memory_bytes() const;

  struct Impl;

 private:
  explicit CudaTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Of RankOptions, RunCudaRanks reads precision, emulate_gpus, green, device, speeds and
// description, not `launched` or `ranks`: without emulate_gpus every process is one GPU (device =
// local rank mod visible GPUs) of an NCCL world over MPI — a world of one without a launcher.
using CudaPlanOptions = RankOptions;

// Runs fn(comm, make) on every rank of `plan` and returns the first failure.
// (ExecutorOptions::emulate is ignored: GPU times are wall-clock, waiting for the device after
// every instruction.)
absl::Status RunCudaRanks(const ir::Graph& graph, const instr::Plan& plan, const CudaPlanOptions& options,
                          const RankFn& fn);

// ---- Inference placements on GPUs (`hetsynth infer --backend cuda`; docs/inference.md) ----------
//
// This process's rank of placement `p` (infer_impl.h's RunOnRanks over the GPU backend) on GPU
// `device` (negative: the launcher's local rank) mod the visible GPUs, in fp32: parameters
// uploaded before the first barrier, each request's inputs when first read, activations that
// cross ranks downloaded, sent through `comm` (host memory: MPI) and uploaded. dilation must be 0.
absl::StatusOr<InferRun> RunCudaPlacementRank(Communicator& comm, const ir::Graph& graph,
                                              const instr::InferencePlacement& p,
                                              const std::map<std::string, Tensor>& params,
                                              const std::vector<Batch>& requests, const InferOptions& options,
                                              int device);
// Every forward node on GPU `device` (as above), in fp32, for each batch after an untimed pass on
// the first (Backend::ForwardOneDevice); the outputs downloaded.
absl::StatusOr<std::vector<Outputs>> CudaForwardOneDevice(const ir::Graph& graph, const std::map<std::string, Tensor>& params,
                                                          const std::vector<Batch>& batches, int device, double* seconds);

// ---- Profiling one GPU (`hetsynth profile --backend cuda`; runtime/backends/cuda/src/profile.cc) ---
//
// Raw measurements on GPU `device`; the CLI (cli/profile_command.cc) turns them into a cluster
// file exactly as it does the CPU's. Times are wall clock after waiting for the GPU, the clock
// the GPU plan executor charges with. The options and results are the backend interface's
// (backend.h): speeds are the virtual GPUs' SM shares; ProfileCuda fills device_name,
// memory_bytes, node_seconds, node_forward_seconds, node_backward, optimizer_s, copy_bytes_per_s,
// collectives and comm_description (the "cuda" backend object adds label, cluster_type and clock).
using CudaProfileOptions = ProfileOptions;
using CudaCollectiveTime = CollectiveTime;
using CudaProfile = DeviceProfile;

// Trains `graph` on `batch` (1 warm-up + repeats steps, every operator timed by waiting for the
// GPU around it: CudaTrainer::SetKernelTimer), times the optimizer update and a large
// device-to-device copy (CUDA events), and, when options.speeds has 2 or more entries, times the
// collectives listed in options.collectives among that many virtual GPUs (each rank: stream
// synchronized, host barrier, then the collective until its stream is done). FailedPrecondition
// (and the reason) in a build without CUDA or without a visible GPU; InvalidArgument for bad
// options or collectives that need more than half the device's free memory.
absl::StatusOr<CudaProfile> ProfileCuda(const ir::Graph& graph, const Batch& batch, const CudaProfileOptions& options);

}  // namespace hetsynth::runtime
