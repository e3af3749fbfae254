// The "cpu" backend object (backend.h) and its registration: this host's CPU — the Trainer, plans
// on thread ranks or on MPI processes, profiling of this host.
#include "cpu_backend.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/infer.h"
#include "hetsynth/runtime/trainer.h"

namespace hetsynth::runtime::cpu {
namespace {

class Cpu final : public Backend {
 public:
  Cpu() {
    caps_.device = "CPU";
    caps_.precisions = {"fp32"};
    caps_.emulate_gpus = false;
    caps_.thread_ranks = true;
    caps_.emulated_timing = true;
    caps_.host_memory = true;
    caps_.profile_ranks = "thread ranks";
    caps_.max_profile_ranks = 1024;
  }

  std::string_view name() const override { return "cpu"; }
  std::string_view description() const override {
    return "this host's CPU: Eigen GEMMs, one thread per rank (threads, or MPI processes)";
  }
  absl::Status Available() const override { return absl::OkStatus(); }
  const BackendCapabilities& capabilities() const override { return caps_; }

  absl::StatusOr<std::unique_ptr<SingleDeviceTrainer>> MakeTrainer(ir::Graph graph, OptimizerConfig cfg, uint64_t seed,
                                                                  const TrainerOptions& options) const override {
    HS_RETURN_IF_ERROR(CheckPrecision(options.precision));
    if (options.device != 0) {
      return absl::InvalidArgumentError(StrCat("device ", options.device, " of the CPU backend; expected 0 (the host)"));
    }
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> t, Trainer::Create(std::move(graph), cfg, seed));
    return std::unique_ptr<SingleDeviceTrainer>(std::move(t));
  }

  absl::Status RunRanks(const ir::Graph& graph, const instr::Plan& plan, const RankOptions& options,
                        const RankFn& fn) const override {
    HS_RETURN_IF_ERROR(CheckPrecision(options.precision));
    if (options.emulate_gpus) return absl::InvalidArgumentError("the CPU backend has no virtual GPUs (emulate_gpus)");
    auto make_for = [&graph, &plan](Communicator& comm) -> MakeExecutorFn {
      return [&graph, &plan, &comm](ExecutorOptions eo) { return MakeCpuExecutor(graph, plan, comm, std::move(eo)); };
    };
    if (options.launched) {
      HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm, MpiWorld());
      return fn(*comm, make_for(*comm));
    }
    return RunThreadRanks(options.ranks, [&](Communicator& comm) { return fn(comm, make_for(comm)); },
                          options.timeout_s);
  }

  std::string RankKind(const RankOptions& options) const override { return options.launched ? "MPI" : "thread"; }

  absl::StatusOr<std::unique_ptr<Executor>> MakeExecutor(const ir::Graph& graph, const instr::Plan& plan,
                                                         Communicator& comm, ExecutorOptions options) const override {
    return MakeCpuExecutor(graph, plan, comm, std::move(options));
  }

  absl::StatusOr<InferRun> RunPlacementRank(Communicator& comm, const ir::Graph& graph,
                                            const instr::InferencePlacement& p,
                                            const std::map<std::string, Tensor>& params,
                                            const std::vector<Batch>& requests, const InferOptions& options,
                                            int) const override {
    return RunPlacementOnRanks(comm, graph, p, params, requests, options);
  }
  absl::StatusOr<std::vector<Outputs>> ForwardOneDevice(const ir::Graph& graph, const std::map<std::string, Tensor>& params,
                                                        const std::vector<Batch>& batches, int,
                                                        double* seconds) const override {
    return infer_detail::ForwardOneDevice(CpuBackend{}, graph, params, batches, /*warm_up=*/true, seconds);
  }

  absl::StatusOr<DeviceProfile> Profile(const ir::Graph& graph, const DataSource& data,
                                        const ProfileOptions& options) const override {
    HS_RETURN_IF_ERROR(CheckPrecision(options.precision));
    if (options.device != 0) {
      return absl::InvalidArgumentError(StrCat("device ", options.device, " of the CPU backend; expected 0 (the host)"));
    }
    return ProfileCpu(graph, data, options);
  }

 private:
  absl::Status CheckPrecision(const std::string& precision) const {
    if (supports_precision(precision)) return absl::OkStatus();
    return absl::InvalidArgumentError(StrCat("precision ", precision, "; the CPU computes in fp32"));
  }

  BackendCapabilities caps_;
};

Cpu cpu_backend;

}  // namespace
}  // namespace hetsynth::runtime::cpu

// Static libraries only contribute the object files a program references, and nothing references
// a registration: the target's link option `-u hetsynth_backend_cpu_registered` (CMakeLists.txt)
// keeps this object in every program that links the CPU backend.
extern "C" const bool hetsynth_backend_cpu_registered =
    hetsynth::runtime::RegisterBackend(&hetsynth::runtime::cpu::cpu_backend);
