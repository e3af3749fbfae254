// The "cuda" backend object (backend.h) and its registration, in every build: built with CUDA it
// reaches the entry points of cuda_backend.h; without CUDA those fail with the reason (src/none/),
// and Available() says so first. Compiled with HETSYNTH_CUDA_MODULE it is instead the entry of
// the module the hetsynth program loads when a run first needs the backend (lazy/).
#include <numeric>

#include <fmt/format.h>

#include "hetsynth/base/memory.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/cuda.h"
#include "hetsynth/runtime/cuda_backend.h"
#include "backend_info.h"

namespace hetsynth::runtime {
namespace {

class Cuda final : public Backend {
 public:
  Cuda() : caps_(cuda_backend_info::Capabilities()) {}

  std::string_view name() const override { return cuda_backend_info::kName; }
  std::string_view description() const override { return cuda_backend_info::kDescription; }
  absl::Status Available() const override {
    const CudaInfo info = ProbeCuda();
    if (info.devices > 0) return absl::OkStatus();
    return absl::FailedPreconditionError(StrCat("no GPU: ", info.reason));
  }
  const BackendCapabilities& capabilities() const override { return caps_; }

  absl::StatusOr<std::unique_ptr<SingleDeviceTrainer>> MakeTrainer(ir::Graph graph, OptimizerConfig cfg, uint64_t seed,
                                                                  const TrainerOptions& options) const override {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<CudaTrainer> t, CudaTrainer::Create(std::move(graph), cfg, seed, options));
    return std::unique_ptr<SingleDeviceTrainer>(std::move(t));
  }

  absl::Status RunRanks(const ir::Graph& graph, const instr::Plan& plan, const RankOptions& options,
                        const RankFn& fn) const override {
    return RunCudaRanks(graph, plan, options, fn);
  }

  std::string RankKind(const RankOptions& options) const override { return cuda_backend_info::RankKind(options); }

  absl::StatusOr<std::unique_ptr<Executor>> MakeExecutor(const ir::Graph&, const instr::Plan&, Communicator& comm,
                                                         ExecutorOptions) const override {
    return absl::FailedPreconditionError(StrCat("the cuda backend makes each rank's executor on its GPU in RunRanks, "
                                                "with a communicator that moves device memory; not on communicator '",
                                                comm.name(), "'"));
  }

  absl::StatusOr<InferRun> RunPlacementRank(Communicator& comm, const ir::Graph& graph,
                                            const instr::InferencePlacement& p,
                                            const std::map<std::string, Tensor>& params,
                                            const std::vector<Batch>& requests, const InferOptions& options,
                                            int device) const override {
    HS_RETURN_IF_ERROR(Available());
    return RunCudaPlacementRank(comm, graph, p, params, requests, options, device);
  }
  absl::StatusOr<std::vector<Outputs>> ForwardOneDevice(const ir::Graph& graph, const std::map<std::string, Tensor>& params,
                                                        const std::vector<Batch>& batches, int device,
                                                        double* seconds) const override {
    HS_RETURN_IF_ERROR(Available());
    return CudaForwardOneDevice(graph, params, batches, device, seconds);
  }

  absl::StatusOr<DeviceProfile> Profile(const ir::Graph& graph, const DataSource& data,
                                        const ProfileOptions& options) const override {
    HS_RETURN_IF_ERROR(Available());
    HS_ASSIGN_OR_RETURN(Batch batch, data.Get(0));
    if (options.progress) {
      options.progress(fmt::format("profile: timing on GPU {} ({}, {}) the kernels of {}: 1 warm-up + {} training "
                                   "step{}; the optimizer update; a device-to-device copy of up to {}",
                                   options.device, ProbeCuda().first_name, options.precision, options.model,
                                   options.repeats, options.repeats == 1 ? "" : "s",
                                   FormatBytes(static_cast<double>(options.copy_bytes))));
      if (options.speeds.size() >= 2 && !options.collectives.empty()) {
        auto bytes = [](const std::vector<int64_t>& lengths) {
          return FormatBytes(4.0 * static_cast<double>(std::accumulate(lengths.begin(), lengths.end(), int64_t{0})));
        };
        options.progress(fmt::format("profile: then grouped and padded all-gather, grouped reduce-scatter and "
                                     "all-reduce on {} virtual GPUs (SMs and shards by device speed), {} to {}, 1 "
                                     "warm-up + {} repeat{} per size",
                                     options.speeds.size(), bytes(options.collectives.front()),
                                     bytes(options.collectives.back()), options.repeats,
                                     options.repeats == 1 ? "" : "s"));
      }
    }
    HS_ASSIGN_OR_RETURN(DeviceProfile p, ProfileCuda(graph, batch, options));
    p.label = "GPU";
    p.cluster_type = "gpu";
    p.clock = "time on the GPU";
    return p;
  }

 private:
  BackendCapabilities caps_;
};

Cuda cuda_backend;

}  // namespace
}  // namespace hetsynth::runtime

#if defined(HETSYNTH_CUDA_MODULE)
// The module the hetsynth program loads on first use of the backend (lazy/backend_lazy.cc): it
// registers nothing; the program's stand-in asks for the object.
extern "C" __attribute__((visibility("default"))) hetsynth::runtime::Backend* hetsynth_cuda_module_backend(
    const char* abi) {
  if (std::string_view(abi) != hetsynth::runtime::cuda_backend_info::kModuleAbi) return nullptr;
  return &hetsynth::runtime::cuda_backend;
}
#else
// Static libraries only contribute the object files a program references, and nothing references
// a registration: the target's link option `-u hetsynth_backend_cuda_registered` (CMakeLists.txt)
// keeps this object in every program that links the CUDA backend.
extern "C" const bool hetsynth_backend_cuda_registered =
    hetsynth::runtime::RegisterBackend(&hetsynth::runtime::cuda_backend);
#endif
