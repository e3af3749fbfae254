// The narrow floating-point formats an imported model may cast to (float16, bfloat16), held in
// fp32: the IR computes in fp32, and a value rounded to one of these formats is exactly
// representable in fp32, so "cast to float16" is "round to float16's precision and range".
// Plain C++17 with host/device functions, so that the CPU kernels, the GPU functors
// (runtime/ops/unary_math.h) and the ONNX importer's constant folding round alike.
#pragma once

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define HS_IR_HD __host__ __device__
#else
#define HS_IR_HD
#endif

namespace hetsynth::ir {

HS_IR_HD inline uint32_t FloatBits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

HS_IR_HD inline float FloatFromBits(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

// x rounded to the nearest float16 (IEEE binary16), ties to even, as PyTorch's x.half() and
// numpy's astype(float16) round: below 2^-14 to a multiple of 2^-24 (float16's subnormals),
// from 65520 on to ±inf; NaN and ±inf stay.
HS_IR_HD inline float RoundToFloat16(float x) {
  const uint32_t u = FloatBits(x);
  const uint32_t sign = u & 0x80000000u, a = u ^ sign;
  if (a >= 0x7f800000u) return x;                               // ±inf, NaN
  if (a >= 0x477ff000u) return FloatFromBits(sign | 0x7f800000u);  // |x| >= 65520: ±inf
  if (a < 0x38800000u) {                                        // |x| < 2^-14: subnormal grid
    // |x|·2^24 < 2^10 is exact; adding 1.5·2^23 rounds it to an integer, ties to even; the
    // products by powers of two are exact, so a fused multiply-add rounds alike.
    const float ax = FloatFromBits(a);
    const float q = (ax * 16777216.0f + 12582912.0f) - 12582912.0f;
    return FloatFromBits(sign | FloatBits(q * 5.9604644775390625e-8f));
  }
  // Normal: keep 10 of the 23 mantissa bits, ties to even (a carry moves into the exponent).
  const uint32_t r = (a + 0x0fffu + ((a >> 13) & 1u)) & ~0x1fffu;
  return FloatFromBits(sign | r);
}

// x rounded to the nearest bfloat16 (fp32's exponent, 7 mantissa bits), ties to even, as
// PyTorch's x.bfloat16() rounds; values past bfloat16's largest round to ±inf; NaN and ±inf
// stay.
HS_IR_HD inline float RoundToBfloat16(float x) {
  const uint32_t u = FloatBits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return x;  // NaN
  return FloatFromBits((u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u);
}

// The value of float16 bits h (exact in fp32).
HS_IR_HD inline float Float16BitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return FloatFromBits(sign | 0x7f800000u | (m << 13));  // ±inf, NaN
  if (e == 0) {                                                         // zero, subnormal
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;        // m·2^-24
    return FloatFromBits(sign | FloatBits(v));
  }
  return FloatFromBits(sign | ((e + 112u) << 23) | (m << 13));
}

// The value of bfloat16 bits b (exact in fp32).
HS_IR_HD inline float Bfloat16BitsToFloat(uint16_t b) { return FloatFromBits(static_cast<uint32_t>(b) << 16); }

}  // namespace hetsynth::ir
