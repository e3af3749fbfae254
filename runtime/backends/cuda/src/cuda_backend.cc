// The CUDA backend's public entry points (hetsynth/runtime/cuda_backend.h): DeviceTrainer on a
// GpuExec, and plan executors on NCCL ranks or virtual GPUs.
#include <cuda_runtime.h>

#include <cstdlib>

#include "comm/gpu_comm.h"
#include "device_trainer.h"
#include "exec/exec_gpu.h"
#include "executor/backend.h"
#include "hetsynth/runtime/cuda_backend.h"

#include "hetsynth/runtime/cuda.h"

namespace hetsynth::runtime {

struct CudaTrainer::Impl {
  std::unique_ptr<gpu::GpuExec> x;
  std::unique_ptr<gpu::DeviceTrainer<gpu::GpuExec>> t;
  std::string name;
};

absl::StatusOr<std::unique_ptr<CudaTrainer>> CudaTrainer::Create(ir::Graph graph, OptimizerConfig cfg, uint64_t seed,
                                                                 CudaTrainOptions options) {
  const CudaInfo info = ProbeCuda();
  if (info.devices == 0) return absl::FailedPreconditionError(StrCat("no GPU: ", info.reason));
  HS_ASSIGN_OR_RETURN(gpu::Precision precision, gpu::ParsePrecision(options.precision));
  auto impl = std::make_unique<Impl>();
  HS_ASSIGN_OR_RETURN(impl->x, gpu::GpuExec::Create({options.device, precision, nullptr}));
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, options.device) == cudaSuccess) impl->name = prop.name;
  HS_ASSIGN_OR_RETURN(impl->t, gpu::DeviceTrainer<gpu::GpuExec>::Create(
                                   *impl->x, std::move(graph), cfg, seed,
                                   StrCat("GPU ", options.device, " (", impl->name, ", ", options.precision, ")")));
  return std::unique_ptr<CudaTrainer>(new CudaTrainer(std::move(impl)));
}

CudaTrainer::CudaTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaTrainer::~CudaTrainer() {
  if (impl_) impl_->t.reset();  // tensors go back to the allocator before the executor goes
}
absl::StatusOr<float> CudaTrainer::Step(const Batch& batch) { return impl_->t->Step(batch); }
absl::StatusOr<float> CudaTrainer::Gradients(const Batch& batch, std::map<std::string, Tensor>* grads) {
  return impl_->t->Gradients(batch, grads);
}
absl::StatusOr<float> CudaTrainer::Loss(const Batch& batch) { return impl_->t->Loss(batch); }
int64_t CudaTrainer::step() const { return impl_->t->step(); }
const ir::Graph& CudaTrainer::graph() const { return impl_->t->graph(); }
std::map<std::string, Tensor> CudaTrainer::Parameters() { return impl_->t->Parameters(); }
absl::Status CudaTrainer::Save(const std::string& path, const std::string& model) { return impl_->t->Save(path, model); }
absl::Status CudaTrainer::Load(const std::string& path, const std::string& model) { return impl_->t->Load(path, model); }
std::string CudaTrainer::device() const { return impl_->t->device(); }
std::string CudaTrainer::device_name() const { return impl_->name; }
size_t CudaTrainer::peak_memory_bytes() const { return impl_->x->allocator().peak_bytes_in_use(); }
void CudaTrainer::SetKernelTimer(KernelTimer timer) { impl_->t->SetKernelTimer(std::move(timer)); }

namespace {
// The launcher's local rank (Open MPI, Slurm, MPICH/Hydra), 0 when none says.
int LocalRank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 0;
}
}  // namespace

absl::Status RunCudaRanks(const ir::Graph& graph, const instr::Plan& plan, const CudaPlanOptions& options,
                          const RankFn& fn) {
  const CudaInfo info = ProbeCuda();
  if (info.devices == 0) return absl::FailedPreconditionError(StrCat("no GPU: ", info.reason));
  HS_ASSIGN_OR_RETURN(gpu::Precision precision, gpu::ParsePrecision(options.precision));
  auto make_for = [&](gpu::GpuExec& x, Communicator& comm) -> MakeExecutorFn {
    return [&graph, &plan, &x, &comm](ExecutorOptions eo) -> absl::StatusOr<std::unique_ptr<Executor>> {
      eo.emulate = false;
      eo.dilation = 0;  // GPU ranks are wall-clock timed: no time dilation (runtime/pacer.h)
      return gpu::CreateDeviceExecutor(x, graph, plan, comm, eo);
    };
  };
  if (options.emulate_gpus) {
    if (options.speeds.size() != plan.devices.size()) {
      return absl::InvalidArgumentError(StrCat(options.speeds.size(), " speeds for a plan of ", plan.devices.size(),
                                               " devices"));
    }
    gpu::VirtualGpuLayout layout;
    gpu::VirtualGpuOptions vo;
    vo.device = options.device;
    vo.green = options.green;
    vo.precision = precision;
    vo.layout = &layout;
    vo.timeout_s = options.timeout_s;  // --deadline
    vo.plain_if_green_fails = true;  // said in the description: the devices then differ in work, not speed
    bool described = false;
    return gpu::RunVirtualGpus(options.speeds, [&](Communicator& comm, gpu::GpuExec& x) -> absl::Status {
      if (comm.rank() == 0 && options.description && !described) {
        std::string sms;
        for (int n : layout.sm_counts) sms += (sms.empty() ? "" : ", ") + std::to_string(n);
        *options.description = StrCat(info.first_name, ": ", layout.device_sms, " SMs; virtual GPUs with ", sms, " SMs (",
                                      layout.green ? "green contexts" : "plain streams sharing every SM", ")",
                                      layout.green_failed.empty() ? "" : "; green contexts failed: ", layout.green_failed);
        described = true;
      }
      return fn(comm, make_for(x, comm));
    }, vo);
  }
  const int device = LocalRank() % info.devices;
  HS_ASSIGN_OR_RETURN(auto x, gpu::GpuExec::Create({device, precision, nullptr}));
  HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm, gpu::NcclWorld(*x));
  if (options.description) *options.description = StrCat("one GPU per rank (NCCL); this rank: GPU ", device);
  return fn(*comm, make_for(*x, *comm));
}

namespace {
// The GPU an inference rank runs on: `device` (or, when negative, the launcher's local rank) mod
// the visible GPUs — ranks beyond the GPUs share them, each with its own stream.
absl::StatusOr<std::unique_ptr<gpu::GpuExec>> InferenceExec(int device) {
  const CudaInfo info = ProbeCuda();
  if (info.devices == 0) return absl::FailedPreconditionError(StrCat("no GPU: ", info.reason));
  return gpu::GpuExec::Create({(device < 0 ? LocalRank() : device) % info.devices, gpu::Precision::kFp32, nullptr});
}
}  // namespace

absl::StatusOr<InferRun> RunCudaPlacementRank(Communicator& comm, const ir::Graph& graph,
                                              const instr::InferencePlacement& p,
                                              const std::map<std::string, Tensor>& params,
                                              const std::vector<Batch>& requests, const InferOptions& options,
                                              int device) {
  if (options.dilation > 0) {
    return absl::InvalidArgumentError("infer: GPU ranks are timed by the wall clock; --emulate paces CPU ranks only");
  }
  HS_ASSIGN_OR_RETURN(std::unique_ptr<gpu::GpuExec> x, InferenceExec(device));
  return infer_detail::RunOnRanks(gpu::GpuBackend<gpu::GpuExec>{x.get()}, comm, graph, p, params, requests, options);
}

absl::StatusOr<std::vector<Outputs>> CudaForwardOneDevice(const ir::Graph& graph, const std::map<std::string, Tensor>& params,
                                                          const std::vector<Batch>& batches, int device, double* seconds) {
  HS_ASSIGN_OR_RETURN(std::unique_ptr<gpu::GpuExec> x, InferenceExec(device));
  return infer_detail::ForwardOneDevice(gpu::GpuBackend<gpu::GpuExec>{x.get()}, graph, params, batches, /*warm_up=*/true,
                                        seconds);
}

}  // namespace hetsynth::runtime
