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
// Create never succeeds in this build, so no CudaTrainer exists to call the members below.
absl::StatusOr<float> CudaTrainer::Step(const Batch&) { return absl::FailedPreconditionError(ProbeCuda().reason); }
absl::StatusOr<float> CudaTrainer::Gradients(const Batch&, std::map<std::string, Tensor>*) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}
absl::StatusOr<float> CudaTrainer::Loss(const Batch&) { return absl::FailedPreconditionError(ProbeCuda().reason); }
int64_t CudaTrainer::step() const { return 0; }
const ir::Graph& CudaTrainer::graph() const {
  static const ir::Graph* const none = new ir::Graph();
  return *none;
}
std::map<std::string, Tensor> CudaTrainer::Parameters() { return {}; }
absl::Status CudaTrainer::Save(const std::string&, const std::string&) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}
absl::Status CudaTrainer::Load(const std::string&, const std::string&) { return absl::FailedPreconditionError(ProbeCuda().reason); }
std::string CudaTrainer::device() const { return ""; }
std::string CudaTrainer::device_name() const { return ""; }
size_t CudaTrainer::peak_memory_bytes() const { return 0; }
void CudaTrainer::SetKernelTimer(KernelTimer) {}

absl::Status RunCudaRanks(const ir::Graph&, const instr::Plan&, const CudaPlanOptions&, const RankFn&) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}

absl::StatusOr<InferRun> RunCudaPlacementRank(Communicator&, const ir::Graph&, const instr::InferencePlacement&,
                                              const std::map<std::string, Tensor>&, const std::vector<Batch>&,
                                              const InferOptions&, int) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}
absl::StatusOr<std::vector<Outputs>> CudaForwardOneDevice(const ir::Graph&, const std::map<std::string, Tensor>&,
                                                          const std::vector<Batch>&, int, double*) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}

// Profiling (the end of cuda_backend.h).
absl::StatusOr<CudaProfile> ProfileCuda(const ir::Graph&, const Batch&, const CudaProfileOptions&) {
  return absl::FailedPreconditionError(ProbeCuda().reason);
}

}  // namespace hetsynth::runtime
