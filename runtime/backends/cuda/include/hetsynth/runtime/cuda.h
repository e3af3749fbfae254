// What the CUDA side of this build can do. The CUDA backend proper (cuBLAS kernels, NCCL) is
// built on top of this probe; without nvcc at configure time the probe reports "not compiled".
//
//   CudaInfo info = ProbeCuda();
//   if (!info.compiled || info.devices == 0) fmt::print("no GPU: {}\n", info.reason);
#pragma once

#include <string>

#include "absl/status/status.h"

namespace hetsynth::runtime {

struct CudaInfo {
  bool compiled = false;    // the build included CUDA (HETSYNTH_CUDA)
  int devices = 0;          // visible CUDA devices
  std::string first_name;   // name of device 0, when there is one
  std::string reason;       // why devices == 0 (not compiled, no driver, no device)
};

CudaInfo ProbeCuda();

// Runs a small kernel on device 0 and checks its result against the CPU: the end-to-end
// check that the toolkit, driver and device agree. Fails when there is no device.
absl::Status CudaSelfTest();

}  // namespace hetsynth::runtime
