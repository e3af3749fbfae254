// Arguments of a (strided-batched) row-major single-precision GEMM, shared by the executors.
#pragma once

#include <cstdint>

namespace hetsynth::runtime::gpu {

// For b in [0, batch): C_b[m,n] = alpha · op(A_b) · op(B_b) + beta · C_b, row-major, where
// op(A) is [m,k] (A stored [k,m] when trans_a) and op(B) is [k,n] (B stored [n,k] when trans_b);
// X_b starts at X + b · stride_x. beta must be 0 or 1 (runtime::Gemm's contract).
struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f, beta = 0.0f;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

}  // namespace hetsynth::runtime::gpu
