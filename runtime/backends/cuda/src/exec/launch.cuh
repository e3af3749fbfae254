// Definition of LaunchFor (launch.h): a grid-stride loop, 256 threads per block.
#pragma once

#include <cuda_runtime.h>

#include "exec/launch.h"

namespace hetsynth::runtime::gpu {

template <class F>
__global__ void ForKernel(int64_t n, F f) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) f(i);
}

template <class F>
void LaunchFor(void* stream, int64_t n, const F& f) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;
  const int64_t blocks = (n + kThreads - 1) / kThreads < kMaxBlocks ? (n + kThreads - 1) / kThreads : kMaxBlocks;
  ForKernel<F><<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(n, f);
}

// Explicit instantiation of LaunchFor for one functor type (in a .cu file).
#define HS_GPU_FOR(F) template void LaunchFor<F>(void*, int64_t, const F&);

}  // namespace hetsynth::runtime::gpu
