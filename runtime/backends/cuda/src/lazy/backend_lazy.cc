// The "cuda" backend of the hetsynth program in CUDA builds: a stand-in that answers what needs no
// GPU (name, description, capabilities, rank kinds) itself and loads the real backend — the module
// libhetsynth-cuda.so next to the program, which alone links CUDA, cuBLAS and NCCL — when a run
// first needs it. A CPU run therefore never maps the CUDA libraries (issue 16: they cost ~230 MB
// and half a second at every start, on every rank).
//
// The module resolves the program's own functions (tensors, communicators, the executor) from the
// program, which exports them (CMake ENABLE_EXPORTS), so there is one copy of each and of every
// registry. HETSYNTH_CUDA_MODULE overrides the module's path.
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "../backend_info.h"
#include "hetsynth/base/status.h"
#include "hetsynth/base/this_program.h"
#include "hetsynth/runtime/backend.h"

namespace hetsynth::runtime {
namespace {

// Where the module is: $HETSYNTH_CUDA_MODULE, else libhetsynth-cuda.so in the program's folder.
std::string ModulePath() {
  if (const char* env = std::getenv("HETSYNTH_CUDA_MODULE"); env != nullptr && *env != '\0') return env;
  absl::StatusOr<std::string> exe = ThisProgramPath();
  const std::string dir = exe.ok() ? exe->substr(0, exe->rfind('/')) : std::string(".");
  return dir + "/libhetsynth-cuda.so";
}

class LazyCuda final : public Backend {
 public:
  LazyCuda() : caps_(cuda_backend_info::Capabilities()) {}

  std::string_view name() const override { return cuda_backend_info::kName; }
  std::string_view description() const override { return cuda_backend_info::kDescription; }
  const BackendCapabilities& capabilities() const override { return caps_; }
  std::string RankKind(const RankOptions& options) const override { return cuda_backend_info::RankKind(options); }

  absl::Status Available() const override {
    HS_ASSIGN_OR_RETURN(const Backend* real, Load());
    return real->Available();
  }
  absl::StatusOr<std::unique_ptr<SingleDeviceTrainer>> MakeTrainer(ir::Graph graph, OptimizerConfig cfg, uint64_t seed,
                                                                  const TrainerOptions& options) const override {
    HS_ASSIGN_OR_RETURN(const Backend* real, Load());
    return real->MakeTrainer(std::move(graph), cfg, seed, options);
  }
  absl::Status RunRanks(const ir::Graph& graph, const instr::Plan& plan, const RankOptions& options,
                        const RankFn& fn) const override {
    HS_ASSIGN_OR_RETURN(const Backend* real, Load());
    return real->RunRanks(graph, plan, options, fn);
  }
  absl::StatusOr<std::unique_ptr<Executor>> MakeExecutor(const ir::Graph& graph, const instr::Plan& plan,
                                                         Communicator& comm, ExecutorOptions options) const override {
    HS_ASSIGN_OR_RETURN(const Backend* real, Load());
    return real->MakeExecutor(graph, plan, comm, std::move(options));
  }
  absl::StatusOr<InferRun> RunPlacementRank(Communicator& comm, const ir::Graph& graph,
                                            const instr::InferencePlacement& p,
                                            const std::map<std::string, Tensor>& params,
                                            const std::vector<Batch>& requests, const InferOptions& options,
                                            int device) const override {
    HS_ASSIGN_OR_RETURN(const Backend* real, Load());
    return real->RunPlacementRank(comm, graph, p, params, requests, options, device);
  }
  absl::StatusOr<std::vector<Outputs>> ForwardOneDevice(const ir::Graph& graph, const std::map<std::string, Tensor>& params,
                                                        const std::vector<Batch>& batches, int device,
                                                        double* seconds) const override {
    HS_ASSIGN_OR_RETURN(const Backend* real, Load());
    return real->ForwardOneDevice(graph, params, batches, device, seconds);
  }
  absl::StatusOr<DeviceProfile> Profile(const ir::Graph& graph, const DataSource& data,
                                        const ProfileOptions& options) const override {
    HS_ASSIGN_OR_RETURN(const Backend* real, Load());
    return real->Profile(graph, data, options);
  }

 private:
  // The module's backend object, loaded once; FailedPrecondition "no GPU: ..." when it cannot be.
  absl::StatusOr<const Backend*> Load() const {
    std::call_once(once_, [this] {
      const std::string path = ModulePath();
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        const char* why = dlerror();
        loaded_ = absl::FailedPreconditionError(StrCat("no GPU: cannot load the CUDA backend module ", path, ": ",
                                                      why != nullptr ? why : "unknown error",
                                                      " (set HETSYNTH_CUDA_MODULE to its path)"));
        return;
      }
      using Entry = Backend* (*)(const char*);
      auto entry = reinterpret_cast<Entry>(dlsym(handle, cuda_backend_info::kModuleEntry));
      Backend* real = entry != nullptr ? entry(cuda_backend_info::kModuleAbi) : nullptr;
      if (real == nullptr) {
        loaded_ = absl::FailedPreconditionError(StrCat("no GPU: ", path, " is not this build's CUDA backend module (",
                                                      cuda_backend_info::kModuleAbi, "); rebuild hetsynth"));
        return;
      }
      loaded_ = real;
    });
    return loaded_;
  }

  BackendCapabilities caps_;
  mutable std::once_flag once_;
  mutable absl::StatusOr<const Backend*> loaded_ = absl::UnknownError("not loaded");
};

LazyCuda lazy_cuda_backend;

}  // namespace
}  // namespace hetsynth::runtime

// Kept in the program by the link option `-u hetsynth_backend_cuda_registered`, like the backend
// it stands in for.
extern "C" const bool hetsynth_backend_cuda_registered =
    hetsynth::runtime::RegisterBackend(&hetsynth::runtime::lazy_cuda_backend);
