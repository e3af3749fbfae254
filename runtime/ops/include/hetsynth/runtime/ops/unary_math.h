// The math of the elementwise unary operators, written once for both backends: each op's
// forward and derivative as host/device functions (C++17, see hd.h). An op kind with a
// UnaryMath specialization, listed in HETSYNTH_UNARY_MATH_OPS, needs no kernel of its own: the
// CPU backend's kernel pair (backends/cpu/src/elementwise.cc) and the CUDA backend's operator
// pair and launches (backends/cuda/src/ops/elementwise.{h,cu}) are generated from the list and
// all run UnaryFwd<K> / UnaryBwd<K> below, so the CPU kernel, HostExec and the GPU compute the
// same bits.
//
// Same bits from g++ and nvcc: both round +, −, ×, ÷ and fmaf as IEEE round-to-nearest does
// (nvcc keeps IEEE division unless --use_fast_math, which the project does not use), but each
// may fuse a product into the add that follows it (FMA contraction) where the other does not.
// So a product that feeds an add or subtract is written as an explicit fmaf, and every other
// product is exact (a power-of-two scaling) or feeds only another product, a division or
// memory: nothing is left for either compiler to fuse. No libm calls (expf, tanhf differ
// between glibc and CUDA): e^x is ExpF below.
//
// Adding an op (say softplus), besides its ir entry (op_kind.h, op_table.cc): an X(Softplus)
// line in HETSYNTH_UNARY_MATH_OPS and
//   template <> struct UnaryMath<ir::OpKind::kSoftplus> {
//     static HS_HD float Forward(float x) { ... }
//     // acc + g·f'(x) (y = f(x)): the input gradient with this element's term added.
//     static HS_HD float Backward(float x, float y, float g, float acc) { ... }
//   };
// (gelu keeps its own kernels, which already agree bit for bit: cpu/src/elementwise.cc and
// cuda/src/ops/elementwise_kernels.h.)
#pragma once

#include <math.h>
#include <stdint.h>

#include "hetsynth/ir/float_formats.h"
#include "hetsynth/ir/op_kind.h"
#include "hetsynth/runtime/ops/hd.h"

// The unary ops whose math is below, X(CamelName) as in HETSYNTH_IR_OPS: each gets generated
// CPU kernels and GPU operators and launches.
#define HETSYNTH_UNARY_MATH_OPS(X) \
  X(Relu)                          \
  X(Sigmoid)                       \
  X(Tanh)                          \
  X(Erf)                           \
  X(ToFloat16)                     \
  X(ToBfloat16)

namespace hetsynth::runtime::ops {

// Specialized per op kind below; a kind without math has none (a compile error where used).
template <ir::OpKind K>
struct UnaryMath;

// e^x for x <= 88 within 2 ulp (Cephes' expf polynomial, the arithmetic of cpu::ExpF); below
// -87 it returns 0, so -inf gives exactly 0; NaN stays NaN. The last product, the scaling by
// 2^n, is exact (the result is never subnormal), so an add after it rounds alike fused or not.
HS_HD inline float ExpF(float x) {
  const bool in_range = x >= -87.0f;
  const float xc = in_range ? x : -87.0f;
  const float n = fmaf(xc, 1.44269504088896341f, 12582912.0f) - 12582912.0f;  // round(x·log2 e)
  const float r = fmaf(n, 2.12194440e-4f, fmaf(-n, 0.693359375f, xc));         // xc − n·ln 2
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  const float y = fmaf(p, r * r, r) + 1.0f;
  const float e = y * gpu::BitsToFloat(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);  // · 2^n
  return in_range ? e : (x == x ? 0.0f : x);
}

// relu(x) = max(x, 0); the gradient passes where x > 0 (0 at the kink and for NaN).
template <>
struct UnaryMath<ir::OpKind::kRelu> {
  static HS_HD float Forward(float x) { return x > 0.0f ? x : 0.0f; }
  static HS_HD float Backward(float x, float, float g, float acc) { return acc + (x > 0.0f ? g : 0.0f); }
};

// sigmoid(x) = 1/(1 + e^−x), computed from e = e^−|x| ∈ [0, 1] as 1/(1 + e) for x >= 0 and
// e/(1 + e) below: e never overflows, and the small values of the negative tail keep their
// relative accuracy down to x = −87, below which the result is 0 (ExpF's cut-off; the exact
// value is under 1.7e-38 there). σ' = y·(1 − y).
template <>
struct UnaryMath<ir::OpKind::kSigmoid> {
  static HS_HD float Forward(float x) {
    const float e = ExpF(-fabsf(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
  }
  static HS_HD float Backward(float, float y, float g, float acc) { return fmaf(g, y * (1.0f - y), acc); }
};

// tanh as Cephes' tanhf, on z = |x| with the sign of x put back (tanh is odd; −0 stays −0):
// for z < 0.625 the polynomial z + z·s·P(s), s = z², else 1 − 2/(e^{2z} + 1). z is capped at
// 9.1 there: beyond it tanh rounds to 1 in float, and e^{2z} would overflow (NaN is kept: the
// cap compares with >). tanh' = 1 − y².
template <>
struct UnaryMath<ir::OpKind::kTanh> {
  static HS_HD float Forward(float x) {
    const float z = fabsf(x);
    const float s = z * z;
    float p = -5.70498872745e-3f;
    p = fmaf(p, s, 2.06390887954e-2f);
    p = fmaf(p, s, -5.37397155531e-2f);
    p = fmaf(p, s, 1.33314422036e-1f);
    p = fmaf(p, s, -3.33332819422e-1f);
    const float small = fmaf(p * s, z, z);
    const float e = ExpF(2.0f * (z > 9.1f ? 9.1f : z));
    const float large = 1.0f - 2.0f / (e + 1.0f);
    return copysignf(z < 0.625f ? small : large, x);
  }
  static HS_HD float Backward(float, float y, float g, float acc) { return fmaf(g, fmaf(-y, y, 1.0f), acc); }
};

// erf(x), odd, on z = |x| with the sign put back (−0 stays −0): for z < 0.5 its Taylor series
// x·Σ_k (−1)^k z^{2k}/(k!(2k+1))·2/√π to z^{10} (truncation below 3e-8 relative); above,
// 1 − P(t)·e^{−z²} with t = 1/(1 + p·z), Abramowitz & Stegun 7.1.26 (absolute error below
// 1.5e-7). erf' = 2/√π·e^{−x²}.
template <>
struct UnaryMath<ir::OpKind::kErf> {
  static HS_HD float Forward(float x) {
    const float z = fabsf(x);
    const float s = z * z;
    float q = -8.5483270e-4f;  // 2/√π·(−1/1320)
    q = fmaf(q, s, 5.2239776e-3f);
    q = fmaf(q, s, -2.6866171e-2f);
    q = fmaf(q, s, 1.1283792e-1f);
    q = fmaf(q, s, -3.7612639e-1f);
    q = fmaf(q, s, 1.1283792f);
    const float small = z * q;
    const float t = 1.0f / fmaf(0.3275911f, z, 1.0f);
    float p = 1.061405429f;
    p = fmaf(p, t, -1.453152027f);
    p = fmaf(p, t, 1.421413741f);
    p = fmaf(p, t, -0.284496736f);
    p = fmaf(p, t, 0.254829592f);
    const float large = fmaf(-(p * t), ExpF(-s), 1.0f);
    return copysignf(z < 0.5f ? small : large, x);
  }
  static HS_HD float Backward(float x, float, float g, float acc) {
    return fmaf(g, 1.1283791671f * ExpF(-(x * x)), acc);
  }
};

// Rounding to a narrow format (an imported model's Cast): the rounding is flat almost everywhere,
// so the gradient is PyTorch's for x.half() / x.bfloat16(): the output's gradient, itself held
// in the narrow format, i.e. rounded alike.
template <>
struct UnaryMath<ir::OpKind::kToFloat16> {
  static HS_HD float Forward(float x) { return ir::RoundToFloat16(x); }
  static HS_HD float Backward(float, float, float g, float acc) { return acc + ir::RoundToFloat16(g); }
};
template <>
struct UnaryMath<ir::OpKind::kToBfloat16> {
  static HS_HD float Forward(float x) { return ir::RoundToBfloat16(x); }
  static HS_HD float Backward(float, float, float g, float acc) { return acc + ir::RoundToBfloat16(g); }
};

// y[i] = f(x[i]).
template <ir::OpKind K>
struct UnaryFwd {
  const float* x;
  float* y;
  HS_HD void operator()(int64_t i) const { y[i] = UnaryMath<K>::Forward(x[i]); }
};

// dx[i] += g[i]·f'(x[i]), y = f(x) the forward output.
template <ir::OpKind K>
struct UnaryBwd {
  const float* x;
  const float* y;
  const float* g;
  float* dx;
  HS_HD void operator()(int64_t i) const { dx[i] = UnaryMath<K>::Backward(x[i], y[i], g[i], dx[i]); }
};

}  // namespace hetsynth::runtime::ops
