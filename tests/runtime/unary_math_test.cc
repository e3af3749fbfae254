// The shared unary math (runtime/ops/unary_math.h) gives the same bits whether or not the
// compiler fuses products into adds: built here with contraction (GCC's default for C++, on
// the FMA machines the project targets) and in unary_math_nofma.cc without, over a sweep of
// float bit patterns and gradients. This is what lets nvcc, which fuses by its own rules, and
// g++ agree bit for bit; a new op written as `a * b + c` instead of fmaf(a, b, c) fails here.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hetsynth/ir/op.h"
#include "runtime/unary_math_builds.h"

namespace hetsynth::runtime::testing {
namespace {

[[gnu::flatten]] float ContractedForward(ir::OpKind kind, float x) {
  switch (kind) {
#define HS_UNARY_CASE(Op) \
  case ir::OpKind::k##Op: \
    return ops::UnaryMath<ir::OpKind::k##Op>::Forward(x);
    HETSYNTH_UNARY_MATH_OPS(HS_UNARY_CASE)
#undef HS_UNARY_CASE
    default:
      return NAN;
  }
}

[[gnu::flatten]] float ContractedBackward(ir::OpKind kind, float x, float y, float g, float acc) {
  switch (kind) {
#define HS_UNARY_CASE(Op) \
  case ir::OpKind::k##Op: \
    return ops::UnaryMath<ir::OpKind::k##Op>::Backward(x, y, g, acc);
    HETSYNTH_UNARY_MATH_OPS(HS_UNARY_CASE)
#undef HS_UNARY_CASE
    default:
      return NAN;
  }
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

std::vector<ir::OpKind> SharedMathOps() {
  return {
#define HS_UNARY_KIND(Op) ir::OpKind::k##Op,
      HETSYNTH_UNARY_MATH_OPS(HS_UNARY_KIND)
#undef HS_UNARY_KIND
  };
}

TEST(UnaryMath, FusedAndUnfusedBuildsGiveTheSameBits) {
  for (ir::OpKind kind : SharedMathOps()) {
    SCOPED_TRACE(std::string(ir::OpName(kind)));
    int mismatches = 0;
    // Every 4099th bit pattern: all signs, exponents and many mantissas, NaNs and infinities.
    for (uint64_t u = 0; u < (uint64_t{1} << 32) && mismatches < 5; u += 4099) {
      const float x = FromBits(static_cast<uint32_t>(u));
      const float y = ContractedForward(kind, x);
      if (Bits(y) != Bits(UncontractedForward(kind, x))) {
        ADD_FAILURE() << "forward(" << x << "): " << y << " fused vs " << UncontractedForward(kind, x) << " unfused";
        ++mismatches;
      }
      // Gradients and accumulators of ordinary sizes and signs, varying with x.
      const float g = FromBits(0x3E000000u ^ static_cast<uint32_t>(u * 2654435761u & 0x80FFFFFFu));
      const float acc = FromBits(0x3D800000u ^ static_cast<uint32_t>(u * 40503u & 0x807FFFFFu));
      const float dx = ContractedBackward(kind, x, y, g, acc);
      if (Bits(dx) != Bits(UncontractedBackward(kind, x, y, g, acc))) {
        ADD_FAILURE() << "backward(x=" << x << ", y=" << y << ", g=" << g << ", acc=" << acc << "): " << dx
                      << " fused vs " << UncontractedBackward(kind, x, y, g, acc) << " unfused";
        ++mismatches;
      }
    }
  }
}

}  // namespace
}  // namespace hetsynth::runtime::testing
