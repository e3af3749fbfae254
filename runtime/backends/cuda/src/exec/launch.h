// Launching a functor over [0, n) on a CUDA stream (declaration; C++17, no CUDA headers).
// The definition is in launch.cuh; each <family>.cu instantiates it for its functors with
// HS_GPU_FOR(Functor), so host C++20 code can launch functors that only nvcc compiles.
#pragma once

#include <cstdint>

namespace hetsynth::runtime::gpu {

// Calls f(i) for every i in [0, n) on `stream` (a cudaStream_t), asynchronously. n <= 0 launches
// nothing. Launch errors surface through cudaGetLastError.
template <class F>
void LaunchFor(void* stream, int64_t n, const F& f);

}  // namespace hetsynth::runtime::gpu
