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
// (gelu keeps its own kernels, cpu/src/elementwise.cc and cuda/src/ops/elementwise_kernels.h,
// which the compilers may contract differently: equal within 1e-5, not always bit for bit.)
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
  X(ToBfloat16)                    \
  X(Exp)                           \
  X(Log)                           \
  X(Abs)                           \
  X(Neg)                           \
  X(Reciprocal)                    \
  X(Sqrt)                          \
  X(Softplus)                      \
  X(Softsign)                      \
  X(Hardswish)

namespace hetsynth::runtime::ops {

// Specialized per op kind below; a kind without math has none (a compile error where used).
template <ir::OpKind K>
struct UnaryMath;

// e^x for x <= 88 within 2 ulp (Cephes' expf polynomial, the arithmetic of cpu::ExpF); below
// -87 it returns 0, so -inf gives exactly 0; NaN gives the quiet NaN (one sign bit, which
// the compilers' handling of a negated NaN argument would otherwise decide). The last product, the scaling by
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
  return in_range ? e : (x == x ? 0.0f : NAN);  // one NaN whatever the input's sign bit
}

// relu(x) = max(x, 0), NaN kept as PyTorch keeps it (an overflow upstream must show in the loss,
// not be zeroed here); the gradient passes where x > 0 (0 at the kink and for NaN).
template <>
struct UnaryMath<ir::OpKind::kRelu> {
  static HS_HD float Forward(float x) { return x > 0.0f || x != x ? x : 0.0f; }
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

// e^x (ExpF), its range extended to overflow: above 88, (e^{x/2})² (x/2 is exact; within 5 ulp),
// +inf past ln(FLT_MAX). exp' = y.
template <>
struct UnaryMath<ir::OpKind::kExp> {
  static HS_HD float Forward(float x) {
    if (x > 88.0f) {
      const float h = ExpF(0.5f * fminf(x, 100.0f));  // e^100 overflows: inf from here on
      return h * h;
    }
    return ExpF(x);
  }
  static HS_HD float Backward(float, float y, float g, float acc) { return fmaf(g, y, acc); }
};

// ln x as Cephes' logf (within 2 ulp): x = m·2^e with m in [√½, √2), ln m by a polynomial in
// m − 1, plus e·ln 2 in two parts. Subnormals are scaled by 2^23 first; ln 0 = −inf, ln of a
// negative number NaN, ln inf = inf. log' = 1/x.
HS_HD inline float LogF(float x) {
  if (!(x > 0.0f)) return x == 0.0f ? -INFINITY : NAN;  // also NaN in, NaN out
  if (x == INFINITY) return x;
  uint32_t u = ir::FloatBits(x);
  float e = 0.0f;
  if (u < 0x00800000u) {  // subnormal
    u = ir::FloatBits(x * 8388608.0f);
    e = -23.0f;
  }
  e += static_cast<float>(static_cast<int32_t>(u >> 23) - 126);
  float m = ir::FloatFromBits((u & 0x007fffffu) | 0x3f000000u);  // [0.5, 1)
  if (m < 0.707106781186547524f) {
    e -= 1.0f;
    m = m + m - 1.0f;
  } else {
    m = m - 1.0f;
  }
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = fmaf(p, m, -1.1514610310e-1f);
  p = fmaf(p, m, 1.1676998740e-1f);
  p = fmaf(p, m, -1.2420140846e-1f);
  p = fmaf(p, m, 1.4249322787e-1f);
  p = fmaf(p, m, -1.6668057665e-1f);
  p = fmaf(p, m, 2.0000714765e-1f);
  p = fmaf(p, m, -2.4999993993e-1f);
  p = fmaf(p, m, 3.3333331174e-1f);
  float y = (p * m) * z;
  y = fmaf(e, -2.12194440e-4f, y);
  y = fmaf(z, -0.5f, y);
  return fmaf(e, 0.693359375f, m + y);
}
template <>
struct UnaryMath<ir::OpKind::kLog> {
  static HS_HD float Forward(float x) { return LogF(x); }
  static HS_HD float Backward(float x, float, float g, float acc) { return acc + g / x; }
};

// |x|; the gradient is sign(x)·g (0 at 0).
template <>
struct UnaryMath<ir::OpKind::kAbs> {
  static HS_HD float Forward(float x) { return fabsf(x); }
  static HS_HD float Backward(float x, float, float g, float acc) { return acc + (x > 0.0f ? g : x < 0.0f ? -g : 0.0f); }
};

template <>
struct UnaryMath<ir::OpKind::kNeg> {
  static HS_HD float Forward(float x) { return -x; }
  static HS_HD float Backward(float, float, float g, float acc) { return acc - g; }
};

// 1/x; reciprocal' = −y².
template <>
struct UnaryMath<ir::OpKind::kReciprocal> {
  static HS_HD float Forward(float x) { return 1.0f / x; }
  static HS_HD float Backward(float, float y, float g, float acc) { return fmaf(-(g * y), y, acc); }
};

// √x, correctly rounded on both sides (IEEE sqrt; nvcc's sqrtf without fast math);
// sqrt' = 1/(2y).
template <>
struct UnaryMath<ir::OpKind::kSqrt> {
  static HS_HD float Forward(float x) { return sqrtf(x); }
  static HS_HD float Backward(float, float y, float g, float acc) { return acc + g / (y + y); }
};

// ln(1 + e^x), as torch's softplus: x itself above 20 (e^-20 is below x's rounding); below,
// log1p(e^x) as ln(w)·u/(w − 1) with u = e^x, w = 1 + u (exact for tiny u, where w = 1:
// then u). softplus' = σ(x).
template <>
struct UnaryMath<ir::OpKind::kSoftplus> {
  static HS_HD float Forward(float x) {
    if (x > 20.0f) return x;
    const float u = ExpF(x);
    const float w = 1.0f + u;
    return w == 1.0f ? u : LogF(w) * (u / (w - 1.0f));
  }
  static HS_HD float Backward(float x, float, float g, float acc) {
    return fmaf(g, UnaryMath<ir::OpKind::kSigmoid>::Forward(x), acc);
  }
};

// x/(1 + |x|); softsign' = 1/(1 + |x|)².
template <>
struct UnaryMath<ir::OpKind::kSoftsign> {
  static HS_HD float Forward(float x) { return x / (1.0f + fabsf(x)); }
  static HS_HD float Backward(float x, float, float g, float acc) {
    const float d = 1.0f + fabsf(x);
    return acc + g / (d * d);
  }
};

// x·min(max(x + 3, 0), 6)/6 in torch's order; hardswish' = 0 below −3, x/3 + 0.5 up to 3, 1
// above (torch's hardswish_backward).
template <>
struct UnaryMath<ir::OpKind::kHardswish> {
  static HS_HD float Forward(float x) {
    const float t = x + 3.0f;
    const float c = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t);
    return x * c / 6.0f;
  }
  static HS_HD float Backward(float x, float, float g, float acc) {
    if (x < -3.0f) return acc;
    if (x > 3.0f) return acc + g;
    return fmaf(g, x / 3.0f + 0.5f, acc);
  }
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
