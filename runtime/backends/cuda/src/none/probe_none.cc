// The CUDA probe of a build without CUDA (HETSYNTH_CUDA=OFF or no nvcc at configure time).
#include "hetsynth/runtime/cuda.h"

namespace hetsynth::runtime {

CudaInfo ProbeCuda() {
  CudaInfo info;
  info.reason = "this build has no CUDA (configure with nvcc on PATH or -DHETSYNTH_CUDA=ON)";
  return info;
}

absl::Status CudaSelfTest() { return absl::FailedPreconditionError(ProbeCuda().reason); }

}  // namespace hetsynth::runtime
