// The CUDA backend: training on one GPU (CudaTrainer: runtime::Trainer's single-device training —
// same initialization, data, optimizer and checkpoints — with every tensor on the GPU, cuBLAS
// GEMMs and hetsynth's own kernels, runtime/backends/cuda), and plans on GPUs (RunCudaRanks: one
// GPU per MPI rank over NCCL, or a mixed cluster emulated on one GPU with green contexts). In a
// build without CUDA, or without a visible GPU, both fail with FailedPrecondition and the reason.
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
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/executor.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

struct CudaTrainOptions {
  int device = 0;
  // GEMM arithmetic: "fp32", "tf32" (tensor cores, TF32 inputs) or "bf16" (tensor cores, bf16
  // inputs, fp32 accumulation and fp32 master weights). Tensors stay fp32 in memory.
  std::string precision = "fp32";
};

class CudaTrainer {
 public:
  static absl::StatusOr<std::unique_ptr<CudaTrainer>> Create(ir::Graph graph, OptimizerConfig cfg, uint64_t seed,
                                                             CudaTrainOptions options);
  ~CudaTrainer();
  // One step; returns the loss (reading it back waits for the GPU to finish the step).
  absl::StatusOr<float> Step(const Batch& batch);
  int64_t step() const;
  std::map<std::string, Tensor> Parameters();
  absl::Status Save(const std::string& path, const std::string& model);
  absl::Status Load(const std::string& path);
  std::string device_name() const;
  size_t peak_memory_bytes() const;
  // Per-operator timing for profiling (waits for the GPU around every operator).
  using KernelTimer = std::function<void(ir::NodeId node, bool backward, double seconds)>;
  void SetKernelTimer(KernelTimer timer);

  struct Impl;

 private:
  explicit CudaTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct CudaPlanOptions {
  std::string precision = "fp32";  // as CudaTrainOptions::precision
  // false: one GPU per process under mpirun/srun (device = local rank mod visible GPUs), NCCL.
  // true: every plan device a virtual GPU on GPU `device` (one process, one thread per rank),
  // holding a share of the SMs proportional to speeds[r] (green contexts; plain streams sharing
  // every SM when `green` is false), connected by an in-process device communicator.
  bool emulate_gpus = false;
  bool green = true;
  int device = 0;
  std::vector<double> speeds;
  // Filled (when set) with what each rank runs on, e.g. "H100: 132 SMs; virtual GPUs with 48,
  // 48, 24, 8 SMs (green contexts)".
  std::string* description = nullptr;
};

// Makes this rank's plan executor on its GPU (ExecutorOptions::emulate is ignored: GPU times are
// wall-clock, waiting for the device after every instruction).
using MakeExecutorFn = std::function<absl::StatusOr<std::unique_ptr<Executor>>(ExecutorOptions)>;

// Runs fn(comm, make) on every rank of `plan` and returns the first failure.
absl::Status RunCudaRanks(const ir::Graph& graph, const instr::Plan& plan, const CudaPlanOptions& options,
                          const std::function<absl::Status(Communicator&, const MakeExecutorFn&)>& fn);


// ---- Profiling one GPU (`hetsynth profile --backend cuda`; runtime/backends/cuda/src/profile.cc) ---
//
// Raw measurements on GPU `device`; the CLI (cli/profile_command.cc) turns them into a cluster
// file exactly as it does the CPU's. Times are wall clock after waiting for the GPU, the clock
// the GPU plan executor charges with.
struct CudaProfileOptions {
  int device = 0;
  std::string precision = "fp32";  // as CudaTrainOptions::precision
  int repeats = 5;                 // timed repetitions of everything, after one warm-up
  OptimizerConfig optimizer;       // the update that is timed (default Adam, as the cost model's)
  // Collectives among virtual GPUs of `device` (RunVirtualGpus): speeds[r] = SM share of virtual
  // GPU r (at least 2 entries, or empty: no collectives timed). Each entry of `collectives` is one
  // tensor: its per-rank shard lengths (speeds.size() entries, summing to the tensor's elements).
  std::vector<double> speeds;
  std::vector<std::vector<int64_t>> collectives;
  bool green = true;  // green contexts; when the driver cannot split the GPU that way, plain streams
  int64_t copy_bytes = int64_t{256} << 20;  // the device-to-device copy (capped at 1/4 of free memory)
};

struct CudaCollectiveTime {
  std::string op;                // "all_gather", "reduce_scatter" (grouped), "all_reduce", "all_gather_padded"
  std::vector<int64_t> lengths;  // per-rank shard elements (one entry of CudaProfileOptions::collectives)
  double seconds = 0;            // median over the repeats of the slowest rank's time
};

struct CudaProfile {
  std::string device_name;          // e.g. "NVIDIA H100 80GB HBM3"
  double memory_bytes = 0;          // the device's total memory
  std::vector<double> node_seconds;  // per graph node: median of forward + backward seconds
  std::vector<bool> node_backward;   // per graph node: whether its backward ran
  double optimizer_s = 0;           // median update of every parameter (optimizer config)
  double copy_bytes_per_s = 0;      // device-to-device copy: 2 × bytes (read + written) / median time
  std::vector<CudaCollectiveTime> collectives;  // 4 per entry of options.collectives, in that order
  std::string comm_description;     // what the virtual GPUs got, e.g. "4 virtual GPUs with 32, 32, ... SMs"
};

// Trains `graph` on `batch` (1 warm-up + repeats steps, every operator timed by waiting for the
// GPU around it: CudaTrainer::SetKernelTimer), times the optimizer update and a large
// device-to-device copy (CUDA events), and, when options.speeds has 2 or more entries, times the
// collectives listed in options.collectives among that many virtual GPUs (each rank: stream
// synchronized, host barrier, then the collective until its stream is done). FailedPrecondition
// (and the reason) in a build without CUDA or without a visible GPU; InvalidArgument for bad
// options or collectives that need more than half the device's free memory.
absl::StatusOr<CudaProfile> ProfileCuda(const ir::Graph& graph, const Batch& batch, const CudaProfileOptions& options);

}  // namespace hetsynth::runtime
