// The shared unary math (runtime/ops/unary_math.h) compiled with -ffp-contract=off (CMake sets
// it for this file), for unary_math_test to compare with the default build, which fuses every
// product that feeds an add into an FMA it can. The wrappers inline everything they call
// (flatten), so each build's code is its own and not one copy the linker picked.
#include "runtime/unary_math_builds.h"

namespace hetsynth::runtime::testing {

[[gnu::flatten]] float UncontractedForward(ir::OpKind kind, float x) {
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

[[gnu::flatten]] float UncontractedBackward(ir::OpKind kind, float x, float y, float g, float acc) {
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

}  // namespace hetsynth::runtime::testing
