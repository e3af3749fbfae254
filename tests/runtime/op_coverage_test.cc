// Every operator kind against its checks, walked from the op table (ggml's test-backend-ops):
// an op fails here unless
//   (a) its CPU backward matches central finite differences of its forward,
//   (b) the GPU operator's functors run on the host (HostExec, through the GPU dispatch
//       generated from the op list) match the CPU kernel, forward output and every input
//       gradient — bit for bit for the ops whose math is shared (runtime/ops/unary_math.h),
//   (c) instr gives it a sharding rule besides all-replicated, or it is listed in
//       kReplicatedOnly below with the reason.
// Each op runs on its sample from tests/ir/op_samples.h (shapes and attributes; attribute-free
// elementwise ops get a generic one), with values chosen here where the op needs them: the op
// table's integer inputs get integers in range, MoE route inputs a top_k_gate's routes, ops with
// kinks values far from them. A new smooth elementwise op needs no line in this file; an op
// without kernels does not compile, one without a sample, a correct backward, matching GPU
// functors or sharding rules fails here by name.
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "exec/exec_host.h"
#include "hetsynth/instr/rules.h"
#include "hetsynth/ir/op_table.h"
#include "hetsynth/runtime/ops/unary_math.h"
#include "ir/op_samples.h"
#include "ops/dispatch.h"
#include "runtime/gpu_op_check.h"
#include "runtime/gradcheck.h"

namespace hetsynth::ir {
// Test parameters print as the op's name ("sigmoid"), not as a byte.
void PrintTo(OpKind kind, std::ostream* os) { *os << OpName(kind); }
}  // namespace hetsynth::ir

namespace hetsynth::runtime::testing {
namespace {

using ir::OpKind;
using ir::Shape;

// Ops that have only the all-Identity rule on purpose, and why.
const std::map<OpKind, std::string> kReplicatedOnly = {
    {OpKind::kTopKGate, "slot assignment depends on every token in order, so the gate runs replicated"},
};

// Ops whose math is shared by the CPU kernel and the GPU functor (runtime/ops/unary_math.h):
// the two must agree bit for bit.
bool SharedMath(OpKind kind) {
  switch (kind) {
#define HS_SHARED_CASE(Op) case OpKind::k##Op:
    HETSYNTH_UNARY_MATH_OPS(HS_SHARED_CASE)
#undef HS_SHARED_CASE
    return true;
    default:
      return false;
  }
}

// Distinct values 0.1 apart in a random order, none within 0.05 of 0: a ±1e-2 finite-difference
// step never crosses a kink (relu at 0), changes a window's maximum (max_pool2d) or a gate's
// ranking (top_k_gate).
Tensor SeparatedValues(const Shape& shape, uint32_t seed) {
  Tensor t(shape);
  std::vector<int> perm(t.data.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
  for (size_t i = 0; i < perm.size(); ++i) {
    t.data[i] = 0.1f * static_cast<float>(perm[i] - static_cast<int>(perm.size() / 2)) + 0.05f;
  }
  return t;
}

Tensor NormalValues(const Shape& shape, uint32_t seed) {
  Tensor t(shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : t.data) v = normal(rng);
  return t;
}

// The routes a top_k_gate (k = route dim 1) makes for random logits over `experts` experts with
// `capacity` slots each: valid routes for moe_dispatch and moe_combine, some choices dropped.
Tensor GateRoutes(const Shape& route_shape, int64_t experts, int64_t capacity) {
  ir::Attrs a;
  a.k = route_shape[1];
  a.capacity = capacity;
  const Tensor logits = SeparatedValues({route_shape[0], experts}, 91);
  return RunForward(OpKind::kTopKGate, a, {&logits});
}

// One op's inputs and how to check it.
struct Sample {
  OpKind kind = OpKind::kAdd;
  ir::Attrs attrs;
  std::vector<Tensor> inputs;
  // Elements of an input that the finite differences leave out: a route's expert and slot
  // channels are indices, only its weight channel is differentiable.
  std::function<bool(size_t input, int64_t elem)> skip;
  bool infinite_outputs = false;  // masked outputs (causal_mask's −inf) are constants
  // Finite differences: a rounding op (to_float16, to_bfloat16) is flat between the points of
  // its grid, so a step spanning many of them measures the straight-through slope its backward
  // gives (PyTorch's), within one grid spacing / (2·step).
  double fd_step = 1e-2;
  double fd_tol = 1e-2;
};

absl::StatusOr<Sample> SampleFor(OpKind kind) {
  HS_ASSIGN_OR_RETURN(ir::testing::OpSample s, ir::testing::SampleOf(kind));
  const ir::OpDef& def = ir::DefOf(kind);
  Sample out;
  out.kind = kind;
  out.attrs = s.attrs;
  out.infinite_outputs = kind == OpKind::kCausalMask;
  if (kind == OpKind::kToFloat16) out.fd_step = 0.5;                        // grid <= 2^-8 below 4
  if (kind == OpKind::kToBfloat16) out.fd_step = 2.0, out.fd_tol = 2e-2;  // grid <= 2^-4 below 8
  const bool kinks = kind == OpKind::kRelu || kind == OpKind::kClip || kind == OpKind::kMaxPool2d ||
                     kind == OpKind::kTopKGate || kind == OpKind::kAbs || kind == OpKind::kHardswish;
  // Defined (log, sqrt) or smooth (reciprocal) only away from 0 and below: |normal| + 0.5.
  const bool positive = kind == OpKind::kLog || kind == OpKind::kSqrt || kind == OpKind::kReciprocal;
  for (size_t i = 0; i < s.inputs.size(); ++i) {
    const uint32_t seed = 17 + 31 * static_cast<uint32_t>(i);
    out.inputs.push_back(kinks ? SeparatedValues(s.inputs[i], seed) : NormalValues(s.inputs[i], seed));
    if (positive) {
      for (float& v : out.inputs.back().data) v = std::abs(v) + 0.5f;
    }
  }
  // Labels and ids: integers below the dim the op table names.
  if (const ir::IntegerInput& ii = def.integer_input; ii.input != ir::kNoOperand) {
    const Shape& of = s.inputs[static_cast<size_t>(ii.bound_input)];
    const int64_t bound = of[ii.bound_dim < 0 ? of.size() + ii.bound_dim : static_cast<size_t>(ii.bound_dim)];
    Tensor& t = out.inputs[static_cast<size_t>(ii.input)];
    for (int64_t e = 0; e < t.numel(); ++e) t.data[static_cast<size_t>(e)] = static_cast<float>((7 * e + 3) % bound);
  }
  // batch_norm's moments: those of its input, so that the variance is well above 0.
  if (kind == OpKind::kBatchNorm) out.inputs[1] = RunForward(OpKind::kBatchMoments, {}, {&out.inputs[0]});
  // Routes: a gate's, for the experts and capacity of the expert operand (dim 0 and 1).
  if (def.routes.input != ir::kNoOperand) {
    const int r = def.routes.input;
    const Shape expert_shape =
        def.routes.expert_operand == ir::kOutputOperand ? *ir::InferShape(kind, s.inputs, s.attrs) : s.inputs[static_cast<size_t>(def.routes.expert_operand)];
    out.inputs[static_cast<size_t>(r)] = GateRoutes(s.inputs[static_cast<size_t>(r)], expert_shape[0], expert_shape[1]);
    out.skip = [r](size_t input, int64_t elem) { return static_cast<int>(input) == r && elem % 3 != 2; };
  }
  return out;
}

std::string NameOf(const ::testing::TestParamInfo<OpKind>& info) { return std::string(ir::OpName(info.param)); }

std::vector<OpKind> AllKinds() {
  std::vector<OpKind> kinds;
  for (const ir::OpDef& def : ir::OpTable()) kinds.push_back(def.kind);
  return kinds;
}

class OpCoverage : public ::testing::TestWithParam<OpKind> {};

// (a)
TEST_P(OpCoverage, BackwardMatchesFiniteDifferences) {
  absl::StatusOr<Sample> s = SampleFor(GetParam());
  ASSERT_TRUE(s.ok()) << s.status();
  GradCase c = Case(s->kind, {}, s->attrs);
  for (size_t i = 0; i < s->inputs.size(); ++i) {
    c.shapes.push_back(s->inputs[i].shape);
    c.fixed[i] = s->inputs[i];
  }
  c.skip = s->skip;
  c.constant_infinite_outputs = s->infinite_outputs;
  c.step = s->fd_step;
  c.tol = s->fd_tol;
  CheckGradients(c);
}

// (b)
TEST_P(OpCoverage, GpuFunctorsOnTheHostMatchTheCpuKernel) {
  absl::StatusOr<Sample> s = SampleFor(GetParam());
  ASSERT_TRUE(s.ok()) << s.status();
  OpCase c;
  c.kind = s->kind;
  c.attrs = s->attrs;
  c.inputs = s->inputs;
  c.step = 3;  // dropout: a mask of a later step
  if (SharedMath(c.kind)) c.tol = 0.0;
  gpu::HostExec x;
  ExpectMatchesCpu(x, c, &gpu::Forward<gpu::HostExec>, &gpu::Backward<gpu::HostExec>);
}

// (c)
TEST_P(OpCoverage, HasAShardingRuleOrIsReplicatedOnPurpose) {
  absl::StatusOr<ir::Graph> g = ir::testing::SampleGraph(GetParam());
  ASSERT_TRUE(g.ok()) << g.status();
  const std::vector<instr::ComputeRule> rules = instr::ShardingRules(*g, 0);
  const auto why = kReplicatedOnly.find(GetParam());
  if (why == kReplicatedOnly.end()) {
    EXPECT_GT(rules.size(), 1u) << "op '" << ir::OpName(GetParam()) << "' has only the rules " << instr::RuleNames(rules)
                                << "; expected a split rule (ir op table sharding family, or instr/src/rules.cc), "
                                   "or an entry in kReplicatedOnly with the reason";
  } else {
    // A stale entry would excuse an op that has since gained rules.
    EXPECT_EQ(rules.size(), 1u) << "op '" << ir::OpName(GetParam()) << "' is listed as replicated-only (" << why->second
                                << ") but has the rules " << instr::RuleNames(rules) << "; remove it from kReplicatedOnly";
  }
}

INSTANTIATE_TEST_SUITE_P(EveryOp, OpCoverage, ::testing::ValuesIn(AllKinds()), NameOf);

}  // namespace
}  // namespace hetsynth::runtime::testing
