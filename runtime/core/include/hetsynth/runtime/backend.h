// Backends as objects (after ggml's backend interface and registry): one Backend per backend —
// "cpu" (hetsynth_backend_cpu, always) and "cuda" (hetsynth_backend_cuda, in every build; without
// CUDA or a GPU it says why in Available()) — each with its name, whether it can run here, what it
// supports (BackendCapabilities) and factories for what callers need: a single-device trainer,
// a plan run over ranks, this rank's plan executor, profiling. Callers look a backend up by name
// and never compare names themselves.
//
//   HS_ASSIGN_OR_RETURN(Backend* backend, FindBackend(flag));     // "cpu", "cuda"
//   HS_RETURN_IF_ERROR(backend->Available());                      // e.g. "no GPU: ..."
//   if (!backend->supports_precision("tf32")) { ... }
//   HS_ASSIGN_OR_RETURN(auto trainer, backend->MakeTrainer(graph, cfg, seed, {.precision = "fp32"}));
//   HS_RETURN_IF_ERROR(backend->RunRanks(graph, plan, RankOptions{}, [&](Communicator& comm,
//                                        const MakeExecutorFn& make) -> absl::Status {
//     HS_ASSIGN_OR_RETURN(auto ex, make(ExecutorOptions{}));
//     return ex->Step(batch).status();
//   }));
//
// A backend registers itself from its own target (RegisterBackend at static initialization, in
// an object file the target makes every program keep: docs/architecture.md, "Adding a backend").
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/executor.h"
#include "hetsynth/runtime/infer_impl.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/single_device_trainer.h"

namespace hetsynth::runtime {

// What a backend supports and how messages name its parts; callers validate flags against it.
struct BackendCapabilities {
  std::string device = "CPU";  // what one rank or trainer runs on, in messages ("CPU", "GPU")
  // GEMM arithmetic it offers (TrainerOptions::precision, RankOptions::precision); the first is
  // the default. One entry: no choice.
  std::vector<std::string> precisions = {"fp32"};
  // RankOptions::emulate_gpus: a plan's devices as virtual GPUs sharing one device, and how they
  // share it, in messages (e.g. "green contexts with SM shares by speed").
  bool emulate_gpus = false;
  std::string virtual_devices;
  // Several ranks in one process without emulate_gpus (threads); otherwise a plan of several
  // devices needs one process per rank under a launcher (mpirun/srun).
  bool thread_ranks = true;
  // Plan runs can emulate device speeds (ExecutorOptions::emulate: thread CPU time × slowdown,
  // clocks meeting at collectives); otherwise they are always timed by the wall clock, waiting
  // for the device.
  bool emulated_timing = true;
  // Tensors live in this host's memory, so profiling's collective buffers come out of its RAM.
  bool host_memory = true;
  // What Profile's collectives run on, in messages ("thread ranks", "virtual GPUs"), and at most
  // how many of them.
  std::string profile_ranks = "thread ranks";
  int max_profile_ranks = 1024;
};

// Makes this rank's plan executor (on its device, exchanging through its communicator).
using MakeExecutorFn = std::function<absl::StatusOr<std::unique_ptr<Executor>>(ExecutorOptions)>;
// What every rank of a plan run does (Backend::RunRanks).
using RankFn = std::function<absl::Status(Communicator& comm, const MakeExecutorFn& make)>;

// How a plan's ranks run (Backend::RunRanks).
struct RankOptions {
  // In-process ranks (threads) to start; a launched process is one rank and ignores it, and
  // virtual GPUs are one per entry of `speeds`.
  int ranks = 1;
  // Started by mpirun/srun: this process is one rank of the launcher's world (MPI on the CPU,
  // NCCL between GPUs).
  bool launched = false;
  std::string precision = "fp32";  // one of BackendCapabilities::precisions
  // Every rank a virtual GPU of device `device` holding a share of its SMs proportional to
  // speeds[r] (green contexts; plain streams sharing every SM when `green` is false), connected
  // by an in-process device communicator (BackendCapabilities::emulate_gpus).
  bool emulate_gpus = false;
  bool green = true;
  int device = 0;
  std::vector<double> speeds;  // relative device speeds, one per rank
  // Filled (when set) with what the ranks run on, e.g. "H100: 132 SMs; virtual GPUs with 48, 48,
  // 24, 8 SMs (green contexts)". Left alone by backends with nothing more to say than RankKind.
  std::string* description = nullptr;
  double timeout_s = 600;  // in-process ranks: a collective waiting longer than this fails
};

// ---- Profiling (`hetsynth profile`): raw measurements of one device ------------------------

struct ProfileOptions {
  int device = 0;
  std::string precision = "fp32";  // as TrainerOptions::precision
  int repeats = 5;                 // timed repetitions of everything, after one warm-up
  OptimizerConfig optimizer;       // the update that is timed (default Adam, as the cost model's)
  // Collectives among speeds.size() ranks (at least 2, or empty: no collectives timed) — thread
  // ranks on the CPU, virtual GPUs of `device` with SM shares speeds[r] on a GPU. Each entry of
  // `collectives` is one tensor: its per-rank shard lengths (speeds.size() entries, summing to the
  // tensor's elements).
  std::vector<double> speeds;
  std::vector<std::vector<int64_t>> collectives;
  bool green = true;  // virtual GPUs: green contexts; when the driver cannot split the GPU that way, plain streams
  int64_t copy_bytes = int64_t{256} << 20;  // GPUs: the device-to-device copy (capped at 1/4 of free memory)
  std::string model;  // the model's name for progress lines, e.g. "mlp(small)"
  // Called with one line ("profile: timing ...") before each phase of the measurements; may be empty.
  std::function<void(const std::string& line)> progress;
};

struct CollectiveTime {
  std::string op;                // "all_gather", "reduce_scatter" (grouped), "all_reduce", "all_gather_padded"
  std::vector<int64_t> lengths;  // per-rank shard elements (one entry of ProfileOptions::collectives)
  double seconds = 0;            // median over the repeats of the slowest rank's time
};

struct DeviceProfile {
  std::string device_name;   // e.g. "NVIDIA H100 80GB HBM3"; "" for the host
  std::string label;         // the device in summaries: "host", "GPU"
  std::string cluster_type;  // its device type in a cluster file: "host", "gpu"
  std::string clock;         // what the kernel times measure, in messages: "CPU time", "time on the GPU"
  double memory_bytes = 0;   // the device's total memory (the host's RAM; 0 when unknown)
  std::vector<double> node_seconds;  // per graph node: median of forward + backward seconds
  std::vector<double> node_forward_seconds;  // per graph node: median of its forward alone, seconds
  std::vector<bool> node_backward;   // per graph node: whether its backward ran
  double optimizer_s = 0;            // median update of every parameter (ProfileOptions::optimizer)
  // The plan executor's compute time for a whole step over the sum of the kernels' medians and
  // the update (measured where the executor runs the kernels among other work, else 1): rates
  // fitted to the kernel times are divided by it.
  double compute_scale = 1;
  double copy_bytes_per_s = 0;       // device-to-device copy: 2 × bytes / median time; 0: not measured
  // GEMM-class nodes with parameters timed alone, forward + backward, at all their rows and at
  // operand_rows_ratio of them (what does not shrink is the parameters' streaming: the cost
  // model's GEMM operand bandwidth, costmodel::FitOperandBandwidth); per node, 0 where not
  // timed; empty where the backend does not measure it.
  std::vector<double> node_rows_large_s, node_rows_small_s;
  double operand_rows_ratio = 0;
  std::vector<CollectiveTime> collectives;  // 4 per entry of ProfileOptions::collectives, in that order
  std::string comm_description;      // what the collectives ran on, when there is more to say than the ranks
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view name() const = 0;         // what --backend takes: "cpu", "cuda"
  virtual std::string_view description() const = 0;  // one line, e.g. "GPUs through CUDA, cuBLAS and NCCL"
  // OK when this process can use the backend; otherwise FailedPrecondition with the reason, e.g.
  // "no GPU: this build has no CUDA (configure with nvcc on PATH or -DHETSYNTH_CUDA=ON)".
  virtual absl::Status Available() const = 0;
  virtual const BackendCapabilities& capabilities() const = 0;

  bool supports_precision(std::string_view precision) const;
  bool supports_emulate_gpus() const { return capabilities().emulate_gpus; }

  // A trainer on one device, initialized as every trainer is (training.h).
  virtual absl::StatusOr<std::unique_ptr<SingleDeviceTrainer>> MakeTrainer(ir::Graph graph, OptimizerConfig cfg,
                                                                          uint64_t seed,
                                                                          const TrainerOptions& options) const = 0;

  // Runs fn(comm, make) on every rank of `plan` — threads or MPI processes on the CPU; GPUs over
  // NCCL, or virtual GPUs of one — and returns the first failure. `make` makes the rank's
  // executor; on devices ExecutorOptions::emulate is ignored (wall-clock times).
  virtual absl::Status RunRanks(const ir::Graph& graph, const instr::Plan& plan, const RankOptions& options,
                                const RankFn& fn) const = 0;
  // What RunRanks runs each rank as, in messages: "thread", "MPI", "virtual GPU", "GPU (NCCL)".
  virtual std::string RankKind(const RankOptions& options) const = 0;

  // This rank's plan executor on `comm`, for backends whose tensors every communicator can move
  // (host memory); the others make theirs inside RunRanks and fail here with FailedPrecondition.
  // Checks that the plan fits the graph and the communicator. Collective: every rank calls it.
  virtual absl::StatusOr<std::unique_ptr<Executor>> MakeExecutor(const ir::Graph& graph, const instr::Plan& plan,
                                                                 Communicator& comm,
                                                                 ExecutorOptions options) const = 0;

  // Inference (infer_impl.h, docs/inference.md): this process's rank of placement `p` on `comm`
  // (host memory: MPI processes, or thread ranks of backends with thread_ranks), running its
  // groups on this backend's device — for the cuda backend GPU `device` (negative: the launcher's
  // local rank) mod the visible GPUs. Collective: every rank calls it.
  virtual absl::StatusOr<InferRun> RunPlacementRank(Communicator& comm, const ir::Graph& graph,
                                                    const instr::InferencePlacement& p,
                                                    const std::map<std::string, Tensor>& params,
                                                    const std::vector<Batch>& requests, const InferOptions& options,
                                                    int device) const = 0;
  // Every forward node of `graph` on one device of this backend (`device` as above) for each of
  // `batches`, after one untimed pass on the first: the outputs (infer_impl.h) back on the host —
  // what a placement's outputs are compared with — and in *seconds the wall time per batch.
  virtual absl::StatusOr<std::vector<Outputs>> ForwardOneDevice(const ir::Graph& graph,
                                                                const std::map<std::string, Tensor>& params,
                                                                const std::vector<Batch>& batches, int device,
                                                                double* seconds) const = 0;

  // Raw measurements of device options.device for `hetsynth profile`: every node's forward +
  // backward time over 1 warm-up + repeats training steps on data.Get(step), the optimizer update,
  // and the collectives of options.collectives among options.speeds.size() ranks.
  virtual absl::StatusOr<DeviceProfile> Profile(const ir::Graph& graph, const DataSource& data,
                                                const ProfileOptions& options) const = 0;
};

// Adds `backend` (which lives as long as the program) to the registry; returns true so that a
// backend's target can register from a static initializer. Programming error: a second backend
// of the same name.
bool RegisterBackend(Backend* backend);

// The backend called `name`; InvalidArgument "backend NAME; expected cpu or cuda" (the
// registered names) otherwise.
absl::StatusOr<Backend*> FindBackend(std::string_view name);

// Every registered backend, by name.
std::vector<Backend*> Backends();

// "a", "a or b", "a, b or c": the choices in messages.
std::string OneOf(const std::vector<std::string>& choices);

}  // namespace hetsynth::runtime
