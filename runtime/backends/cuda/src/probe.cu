// CUDA probe: device discovery and a kernel round trip (see hetsynth/runtime/cuda.h).
#include <cuda_runtime.h>

#include <vector>

#include "hetsynth/runtime/cuda.h"

namespace hetsynth::runtime {
namespace {

__global__ void AxpyKernel(int n, float a, const float* x, float* y) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += a * x[i];
}

absl::Status Check(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                             ": " + cudaGetErrorString(err));
}
#define HS_CUDA_CHECK(call)                                                       \
  do {                                                                            \
    absl::Status hs_cuda_status_ = Check((call), #call, __FILE__, __LINE__);       \
    if (!hs_cuda_status_.ok()) return hs_cuda_status_;                            \
  } while (0)

}  // namespace

CudaInfo ProbeCuda() {
  CudaInfo info;
  info.compiled = true;
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    info.reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    return info;
  }
  info.devices = n;
  if (n == 0) {
    info.reason = "no CUDA device visible";
    return info;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) info.first_name = prop.name;
  return info;
}

absl::Status CudaSelfTest() {
  const CudaInfo info = ProbeCuda();
  if (info.devices == 0) return absl::FailedPreconditionError(info.reason);
  const int n = 1000;
  std::vector<float> x(n), y(n), expect(n);
  for (int i = 0; i < n; ++i) {
    x[i] = static_cast<float>(i);
    y[i] = 1.0f;
    expect[i] = 1.0f + 2.0f * static_cast<float>(i);
  }
  float *dx = nullptr, *dy = nullptr;
  HS_CUDA_CHECK(cudaMalloc(&dx, n * sizeof(float)));
  HS_CUDA_CHECK(cudaMalloc(&dy, n * sizeof(float)));
  HS_CUDA_CHECK(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  HS_CUDA_CHECK(cudaMemcpy(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  AxpyKernel<<<(n + 255) / 256, 256>>>(n, 2.0f, dx, dy);
  HS_CUDA_CHECK(cudaGetLastError());
  HS_CUDA_CHECK(cudaMemcpy(y.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost));
  HS_CUDA_CHECK(cudaFree(dx));
  HS_CUDA_CHECK(cudaFree(dy));
  for (int i = 0; i < n; ++i) {
    if (y[i] != expect[i]) {
      return absl::InternalError("axpy kernel: element " + std::to_string(i) + " is " +
                                 std::to_string(y[i]) + ", expected " + std::to_string(expect[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace hetsynth::runtime
