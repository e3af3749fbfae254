// Code shared by the GPU kernels and their host execution (C++17, no CUDA headers needed).
//
// The CUDA backend's kernels are written once as small functors whose operator()(i) computes
// element (or row) i. nvcc compiles them into grid-stride kernels (exec/launch.cuh in
// backends/cuda/src); the host compiler runs the very same functors in a plain loop (HostExec,
// exec/exec_host.h), which is how the kernels' arithmetic and indexing are tested against the
// CPU backend on machines without a GPU. Functors must therefore be trivially copyable structs
// of pointers and numbers, touch only the memory they are given, and use the helpers below
// instead of CUDA intrinsics.
//
//   struct Scale { float* y; float a; HS_HD void operator()(int64_t i) const { y[i] *= a; } };
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define HS_HD __host__ __device__
#else
#define HS_HD
#endif

namespace hetsynth::runtime::gpu {

// *p += v, atomically on the GPU (threads of one launch may add to the same element). On the
// host the loop is sequential, so a plain add is exact; on the GPU the order of the adds varies
// between runs (results agree to rounding).
HS_HD inline void AtomicAdd(float* p, float v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  *p += v;
#endif
}

// The float whose bits are u (std::bit_cast, which C++17 lacks).
HS_HD inline float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// Most dims a strided index walk handles (tensors in the IR have at most 5).
constexpr int kMaxDims = 8;

// A row-major index space of up to kMaxDims dims with one extra stride per dim, for walking a
// second tensor (broadcast operand, transposed view, slice) alongside the first.
struct Walk {
  int nd = 0;
  int64_t dims[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};  // element stride of the walked tensor along each dim

  // Offset in the walked tensor of the i-th element (row-major over dims).
  HS_HD int64_t Offset(int64_t i) const {
    int64_t off = 0;
    for (int d = nd - 1; d >= 0; --d) {
      const int64_t q = i / dims[d];
      off += (i - q * dims[d]) * stride[d];
      i = q;
    }
    return off;
  }
};

}  // namespace hetsynth::runtime::gpu
