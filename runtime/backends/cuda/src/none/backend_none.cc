// The CUDA backend in a build without CUDA: every entry point reports why.
#include "hetsynth/runtime/cuda_backend.h"

#include "hetsynth/runtime/cuda.h"

namespace hetsynth::runtime {

struct CudaTrainer::Impl {};

absl::StatusOr<std::unique_ptr<CudaTrainer>> CudaTrainer::Create(ir::Graph, OptimizerConfig, uint64_t,
                                                                 CudaTrainOptions) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}
CudaTrainer::CudaTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaTrainer::~CudaTrainer() = default;
absl::StatusOr<float> CudaTrainer::Step(const Batch&) { return absl::FailedPreconditionError(ProbeCuda().reason); }
int64_t CudaTrainer::step() const { return 0; }
std::map<std::string, Tensor> CudaTrainer::Parameters() { return {}; }
absl::Status CudaTrainer::Save(const std::string&, const std::string&) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}
absl::Status CudaTrainer::Load(const std::string&) { return absl::FailedPreconditionError(ProbeCuda().reason); }
std::string CudaTrainer::device_name() const { return ""; }
size_t CudaTrainer::peak_memory_bytes() const { return 0; }
void CudaTrainer::SetKernelTimer(KernelTimer) {}

absl::Status RunCudaRanks(const ir::Graph&, const instr::Plan&, const CudaPlanOptions&,
                          const std::function<absl::Status(Communicator&, const MakeExecutorFn&)>&) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}

// Profiling (the end of cuda_backend.h).
absl::StatusOr<CudaProfile> ProfileCuda(const ir::Graph&, const Batch&, const CudaProfileOptions&) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}

}  // namespace hetsynth::runtime
