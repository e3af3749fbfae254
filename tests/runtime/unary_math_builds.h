// The shared unary math built without FMA contraction (unary_math_nofma.cc), for
// unary_math_test. NaN for an op kind without shared math.
#pragma once

#include <math.h>

#include "hetsynth/runtime/ops/unary_math.h"

namespace hetsynth::runtime::testing {

float UncontractedForward(ir::OpKind kind, float x);
float UncontractedBackward(ir::OpKind kind, float x, float y, float g, float acc);

}  // namespace hetsynth::runtime::testing
