// Checked CUDA, driver and cuBLAS calls: a failure becomes an absl::Status naming the call as
// written, where it was made, and the library's error string.
//
//   HS_CUDA_RETURN(cudaMalloc(&p, bytes));      // returns the Status from the enclosing function
//   absl::Status s = HS_CUDA_STATUS(cudaStreamSynchronize(stream));
#pragma once

#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_runtime.h>

#include <string>

#include "absl/status/status.h"

namespace hetsynth::runtime::gpu {

absl::Status CallStatus(cudaError_t err, const char* call, const char* file, int line);
absl::Status CallStatus(CUresult err, const char* call, const char* file, int line);
absl::Status CallStatus(cublasStatus_t err, const char* call, const char* file, int line);

}  // namespace hetsynth::runtime::gpu

#define HS_CUDA_STATUS(call) ::hetsynth::runtime::gpu::CallStatus((call), #call, __FILE__, __LINE__)
#define HS_CUDA_RETURN(call)                                      \
  do {                                                            \
    ::absl::Status hs_cuda_status_ = HS_CUDA_STATUS(call);        \
    if (!hs_cuda_status_.ok()) return hs_cuda_status_;            \
  } while (0)
