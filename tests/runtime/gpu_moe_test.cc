// GPU mixture-of-experts operators (top_k_gate, moe_dispatch, moe_combine) against the CPU
// kernels (gpu_op_check.h): gate-made routes with overflowing experts, hand-made routes with
// dropped choices and empty slots, routes renumbered by the executor's "experts" rule (other
// ranks' experts become expert 0 with slot −1), chained gate → dispatch → combine, and the
// abort on bad routes.
#include <array>

#include "gpu_op_check.h"
#include "ops/moe.h"

namespace hetsynth::runtime::testing {
namespace {

using ir::OpKind;
using ir::Shape;

ir::Attrs GateAttrs(int64_t k, int64_t capacity) {
  ir::Attrs a;
  a.k = k;
  a.capacity = capacity;
  return a;
}

ir::Attrs MoEAttrs(int64_t experts, int64_t capacity) {
  ir::Attrs a;
  a.experts = experts;
  a.capacity = capacity;
  return a;
}

// route[s][j] = entries[s][j] = (expert, slot, weight).
Tensor MakeRoute(const std::vector<std::vector<std::array<float, 3>>>& entries) {
  const auto tokens = static_cast<int64_t>(entries.size()), k = static_cast<int64_t>(entries[0].size());
  Tensor route({tokens, k, 3});
  for (int64_t s = 0; s < tokens; ++s) {
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t c = 0; c < 3; ++c) route.data[static_cast<size_t>((s * k + j) * 3 + c)] = entries[s][j][c];
    }
  }
  return route;
}

// The CPU gate's route for these logits.
Tensor CpuGateRoute(const Tensor& logits, int64_t k, int64_t capacity) {
  ir::Node node;
  node.name = "gate";
  node.kind = OpKind::kTopKGate;
  node.attrs = GateAttrs(k, capacity);
  Tensor route({logits.dim(0), k, 3});
  SavedState saved;
  const Tensor* in[] = {&logits};
  Forward(node, KernelContext{}, in, route, saved);
  return route;
}

int CountDropped(const Tensor& route) {
  int n = 0;
  for (int64_t i = 1; i < route.numel(); i += 3) n += route.data[static_cast<size_t>(i)] < 0.0f;
  return n;
}

// The executor's "experts" rule for the rank holding global experts [offset, offset + local):
// keep those, renumbered from 0; every other entry becomes (0, −1, weight).
Tensor RenumberForRank(Tensor r, int64_t offset, int64_t local) {
  for (int64_t e = 0; e + 2 < r.numel(); e += 3) {
    const float expert = r.data[static_cast<size_t>(e)] - static_cast<float>(offset);
    if (expert >= 0 && expert < static_cast<float>(local)) {
      r.data[static_cast<size_t>(e)] = expert;
    } else {
      r.data[static_cast<size_t>(e)] = 0;
      r.data[static_cast<size_t>(e) + 1] = -1;
    }
  }
  return r;
}

// Rows of logits with exact ties (equal logits give bit-equal probabilities on both sides).
Tensor TiedLogits() {
  Tensor t({5, 4});
  const float rows[5][4] = {{0, 0, 0, 0}, {1, 1, 0, 0}, {0.5f, 2, 2, 0.5f}, {-1, 3, -1, 3}, {0.25f, 0.25f, 0.25f, 1}};
  for (int64_t s = 0; s < 5; ++s) {
    for (int64_t e = 0; e < 4; ++e) t.data[static_cast<size_t>(s * 4 + e)] = rows[s][e];
  }
  return t;
}

template <class X>
using GpuMoETest = GpuOpTest<X>;
TYPED_TEST_SUITE(GpuMoETest, GpuExecutors);

TYPED_TEST(GpuMoETest, TopKGate) {
  using X = TypeParam;
  struct Case {
    Shape logits;
    int64_t k, capacity;
  };
  // Tokens 10 over 4 experts: capacity 2 or 3 overflows (k = 1 and 2), 20 never does.
  for (const Case& g : {Case{{10, 4}, 1, 2}, Case{{10, 4}, 2, 3}, Case{{10, 4}, 2, 20}, Case{{10, 4}, 4, 2},
                        Case{{10, 4}, 3, 1}, Case{{7, 5}, 2, 2}, Case{{1, 1}, 1, 1}, Case{{1, 4}, 2, 1},
                        Case{{13, 1}, 1, 4}, Case{{33, 9}, 3, 5}}) {
    SCOPED_TRACE(::testing::Message() << ir::ShapeString(g.logits) << " k=" << g.k << " capacity=" << g.capacity);
    OpCase c = RandomCase(OpKind::kTopKGate, {g.logits}, GateAttrs(g.k, g.capacity), 3);
    c.inputs[0] = RandomTensor(g.logits, 11, -3.0f, 3.0f);
    if (g.logits == Shape{10, 4} && g.capacity < 10) {
      ASSERT_GT(CountDropped(CpuGateRoute(c.inputs[0], g.k, g.capacity)), 0);
    }
    ExpectMatchesCpu(this->x(), c, &gpu::TopKGateForward<X>, &gpu::TopKGateBackward<X>);
  }
}

TYPED_TEST(GpuMoETest, TopKGateTiesPreferLowerExperts) {
  using X = TypeParam;
  for (int64_t k : {1, 2, 3}) {
    for (int64_t capacity : {1, 2, 5}) {
      SCOPED_TRACE(::testing::Message() << "k=" << k << " capacity=" << capacity);
      OpCase c = RandomCase(OpKind::kTopKGate, {{5, 4}}, GateAttrs(k, capacity));
      c.inputs[0] = TiedLogits();
      ExpectMatchesCpu(this->x(), c, &gpu::TopKGateForward<X>, &gpu::TopKGateBackward<X>);
    }
  }
}

TYPED_TEST(GpuMoETest, DispatchAndCombineOnGateRoutes) {
  using X = TypeParam;
  const int64_t tokens = 10, experts = 4;
  for (int64_t k : {1, 2}) {
    for (int64_t capacity : {2, 3, 10}) {
      for (int64_t channels : {1, 5, 16}) {
        SCOPED_TRACE(::testing::Message() << "k=" << k << " capacity=" << capacity << " C=" << channels);
        const Tensor route = CpuGateRoute(RandomTensor({tokens, experts}, 21, -2.0f, 2.0f), k, capacity);
        if (capacity * experts < tokens * k) {
          ASSERT_GT(CountDropped(route), 0);
        }
        OpCase d = RandomCase(OpKind::kMoEDispatch, {{tokens, channels}, route.shape}, MoEAttrs(experts, capacity));
        d.inputs[1] = route;
        ExpectMatchesCpu(this->x(), d, &gpu::MoEDispatchForward<X>, &gpu::MoEDispatchBackward<X>);
        OpCase m = RandomCase(OpKind::kMoECombine, {{experts, capacity, channels}, route.shape}, {}, 5);
        m.inputs[1] = route;
        ExpectMatchesCpu(this->x(), m, &gpu::MoECombineForward<X>, &gpu::MoECombineBackward<X>);
      }
    }
  }
}

TYPED_TEST(GpuMoETest, RoutesRenumberedByTheExpertsRule) {
  using X = TypeParam;
  // 4 global experts over 2 ranks (2 each) or 4 ranks (1 each); each rank's route names its own
  // experts from 0 and marks the others' as (0, −1).
  const int64_t tokens = 10, experts = 4, capacity = 3, channels = 6;
  for (int64_t k : {1, 2}) {
    const Tensor global = CpuGateRoute(RandomTensor({tokens, experts}, 31, -2.0f, 2.0f), k, capacity);
    for (int64_t local : {2, 1}) {
      for (int64_t offset = 0; offset < experts; offset += local) {
        SCOPED_TRACE(::testing::Message() << "k=" << k << " experts [" << offset << ", " << offset + local << ")");
        const Tensor route = RenumberForRank(global, offset, local);
        ASSERT_GT(CountDropped(route), CountDropped(global));
        OpCase d = RandomCase(OpKind::kMoEDispatch, {{tokens, channels}, route.shape}, MoEAttrs(local, capacity));
        d.inputs[1] = route;
        ExpectMatchesCpu(this->x(), d, &gpu::MoEDispatchForward<X>, &gpu::MoEDispatchBackward<X>);
        OpCase m = RandomCase(OpKind::kMoECombine, {{local, capacity, channels}, route.shape}, {}, 9);
        m.inputs[1] = route;
        ExpectMatchesCpu(this->x(), m, &gpu::MoECombineForward<X>, &gpu::MoECombineBackward<X>);
      }
    }
  }
}

TYPED_TEST(GpuMoETest, HandMadeRoutes) {
  using X = TypeParam;
  // 5 tokens, k = 2, 3 experts of 2 slots: dropped choices, a token with both choices dropped,
  // empty slots, a slot −1 entry naming a nonzero expert.
  const Tensor route = MakeRoute({{{0, 0, 0.6f}, {1, 0, 0.4f}},
                                  {{1, 1, 0.7f}, {2, -1, 0.3f}},
                                  {{0, -1, 0.5f}, {2, -1, 0.5f}},
                                  {{2, 1, 0.9f}, {0, 1, 0.1f}},
                                  {{1, -1, 0.2f}, {0, -1, 0.8f}}});
  for (int64_t channels : {1, 4, 7}) {
    for (int64_t capacity : {2, 3}) {
      SCOPED_TRACE(::testing::Message() << "C=" << channels << " capacity=" << capacity);
      OpCase d = RandomCase(OpKind::kMoEDispatch, {{5, channels}, route.shape}, MoEAttrs(3, capacity));
      d.inputs[1] = route;
      ExpectMatchesCpu(this->x(), d, &gpu::MoEDispatchForward<X>, &gpu::MoEDispatchBackward<X>);
      OpCase m = RandomCase(OpKind::kMoECombine, {{3, capacity, channels}, route.shape}, {}, 13);
      m.inputs[1] = route;
      ExpectMatchesCpu(this->x(), m, &gpu::MoECombineForward<X>, &gpu::MoECombineBackward<X>);
    }
  }
  // One token, one expert, one slot.
  const Tensor one = MakeRoute({{{0, 0, 1.0f}}});
  OpCase d = RandomCase(OpKind::kMoEDispatch, {{1, 3}, one.shape}, MoEAttrs(1, 1));
  d.inputs[1] = one;
  ExpectMatchesCpu(this->x(), d, &gpu::MoEDispatchForward<X>, &gpu::MoEDispatchBackward<X>);
  OpCase m = RandomCase(OpKind::kMoECombine, {{1, 1, 3}, one.shape}, {});
  m.inputs[1] = one;
  ExpectMatchesCpu(this->x(), m, &gpu::MoECombineForward<X>, &gpu::MoECombineBackward<X>);
}

// gate → dispatch → combine on the executor (each op consuming the executor's own route) against
// the same chain of CPU kernels, forward.
TYPED_TEST(GpuMoETest, ChainedGateDispatchCombine) {
  using X = TypeParam;
  X& x = this->x();
  const int64_t tokens = 10, experts = 4, channels = 5;
  for (int64_t k : {1, 2}) {
    for (int64_t capacity : {2, 10}) {
      SCOPED_TRACE(::testing::Message() << "k=" << k << " capacity=" << capacity);
      const Tensor logits = RandomTensor({tokens, experts}, 41), xs = RandomTensor({tokens, channels}, 42);
      auto node = [](OpKind kind, const ir::Attrs& a) {
        ir::Node n;
        n.name = std::string(ir::OpName(kind));
        n.kind = kind;
        n.attrs = a;
        return n;
      };
      const ir::Node gate = node(OpKind::kTopKGate, GateAttrs(k, capacity));
      const ir::Node dispatch = node(OpKind::kMoEDispatch, MoEAttrs(experts, capacity));
      const ir::Node combine = node(OpKind::kMoECombine, {});
      const KernelContext ctx;

      Tensor route({tokens, k, 3}), slots({experts, capacity, channels}), back({tokens, channels});
      SavedState s0, s1, s2;
      const Tensor* g_in[] = {&logits};
      Forward(gate, ctx, g_in, route, s0);
      const Tensor* d_in[] = {&xs, &route};
      Forward(dispatch, ctx, d_in, slots, s1);
      const Tensor* c_in[] = {&slots, &route};
      Forward(combine, ctx, c_in, back, s2);

      using T = typename X::Tensor;
      T glogits = x.Upload(logits), gxs = x.Upload(xs);
      T groute = x.Make({tokens, k, 3}), gslots = x.Make({experts, capacity, channels}), gback = x.Make({tokens, channels});
      gpu::Saved<X> t0, t1, t2;
      const T* gg_in[] = {&glogits};
      gpu::TopKGateForward<X>(x, gate, ctx, gg_in, groute, t0);
      const T* gd_in[] = {&gxs, &groute};
      gpu::MoEDispatchForward<X>(x, dispatch, ctx, gd_in, gslots, t1);
      const T* gc_in[] = {&gslots, &groute};
      gpu::MoECombineForward<X>(x, combine, ctx, gc_in, gback, t2);

      EXPECT_LE(RelativeError(x.Download(groute), route), 1e-5);
      EXPECT_LE(RelativeError(x.Download(gslots), slots), 1e-5);
      EXPECT_LE(RelativeError(x.Download(gback), back), 1e-5);
    }
  }
}

// Backward accumulates into din (adds, does not overwrite), as the CPU kernels do.
TYPED_TEST(GpuMoETest, BackwardAccumulates) {
  using X = TypeParam;
  X& x = this->x();
  const Tensor route = CpuGateRoute(RandomTensor({10, 4}, 51), 2, 3);
  const Tensor y = RandomTensor({4, 3, 6}, 52), dout = RandomTensor({10, 6}, 53);
  ir::Node combine;
  combine.name = "combine";
  combine.kind = OpKind::kMoECombine;
  using T = typename X::Tensor;
  T gy = x.Upload(y), groute = x.Upload(route), gdout = x.Upload(dout), gout = x.Make({10, 6});
  gpu::Saved<X> saved;
  const T* in[] = {&gy, &groute};
  T dy1 = x.Make(y.shape), dr1 = x.Make(route.shape), dy2 = x.Make(y.shape), dr2 = x.Make(route.shape);
  T* din1[] = {&dy1, &dr1};
  gpu::MoECombineBackward<X>(x, combine, KernelContext{}, in, gout, gdout, saved, din1);
  T* din2[] = {&dy2, &dr2};
  gpu::MoECombineBackward<X>(x, combine, KernelContext{}, in, gout, gdout, saved, din2);
  gpu::MoECombineBackward<X>(x, combine, KernelContext{}, in, gout, gdout, saved, din2);
  Tensor twice_y = x.Download(dy1), twice_r = x.Download(dr1);
  for (float& v : twice_y.data) v *= 2;
  for (float& v : twice_r.data) v *= 2;
  EXPECT_LE(RelativeError(x.Download(dy2), twice_y), 1e-6);
  EXPECT_LE(RelativeError(x.Download(dr2), twice_r), 1e-6);
}

// Bad routes abort with the CPU kernels' messages.
template <class X>
void RunDispatch(const Tensor& route, int64_t experts, int64_t capacity) {
  std::unique_ptr<X> made;
  if constexpr (X::kOnGpu) {
#if defined(HETSYNTH_HAVE_CUDA)
    made = std::move(*X::Create({}));
#endif
  } else {
    made = std::make_unique<X>();
  }
  X& x = *made;
  ir::Node node;
  node.name = "d";
  node.kind = OpKind::kMoEDispatch;
  node.attrs = MoEAttrs(experts, capacity);
  const Tensor xs = RandomTensor({route.dim(0), 2}, 1);
  typename X::Tensor gx = x.Upload(xs), gr = x.Upload(route), out = x.Make({experts, capacity, 2});
  const typename X::Tensor* in[] = {&gx, &gr};
  gpu::Saved<X> saved;
  gpu::MoEDispatchForward<X>(x, node, KernelContext{}, in, out, saved);
}

template <class X>
void RunCombine(const Tensor& route, int64_t experts, int64_t capacity) {
  std::unique_ptr<X> made;
  if constexpr (X::kOnGpu) {
#if defined(HETSYNTH_HAVE_CUDA)
    made = std::move(*X::Create({}));
#endif
  } else {
    made = std::make_unique<X>();
  }
  X& x = *made;
  ir::Node node;
  node.name = "c";
  node.kind = OpKind::kMoECombine;
  const Tensor y = RandomTensor({experts, capacity, 2}, 1);
  typename X::Tensor gy = x.Upload(y), gr = x.Upload(route), out = x.Make({route.dim(0), 2});
  const typename X::Tensor* in[] = {&gy, &gr};
  gpu::Saved<X> saved;
  gpu::MoECombineForward<X>(x, node, KernelContext{}, in, out, saved);
}

void RunCpu(OpKind kind, const Tensor& route, int64_t experts, int64_t capacity) {
  ir::Node node;
  node.name = kind == OpKind::kMoEDispatch ? "d" : "c";
  node.kind = kind;
  node.attrs = MoEAttrs(experts, capacity);
  const Tensor a = kind == OpKind::kMoEDispatch ? RandomTensor({route.dim(0), 2}, 1)
                                                : RandomTensor({experts, capacity, 2}, 1);
  Tensor out(kind == OpKind::kMoEDispatch ? Shape{experts, capacity, 2} : Shape{route.dim(0), 2});
  const Tensor* in[] = {&a, &route};
  SavedState saved;
  Forward(node, KernelContext{}, in, out, saved);
}

TYPED_TEST(GpuMoETest, BadRoutesAbortLikeTheCpu) {
  using X = TypeParam;
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // re-executes the binary: no CUDA state across fork
  // Each case: a route over 3 experts of 2 slots and the message both backends give.
  struct Case {
    Tensor route;
    std::string dispatch_msg, combine_msg;
  };
  const std::string range = "expected an integer expert in \\[0, 3\\) and an integer slot in \\[-1, 2\\)";
  const std::vector<Case> cases = {
      {MakeRoute({{{0, 0, 1}}, {{3, 0, 1}}}), "moe_dispatch 'd': route\\[1\\]\\[0\\] = \\(expert 3, slot 0\\); " + range,
       "moe_combine 'c': route\\[1\\]\\[0\\] = \\(expert 3, slot 0\\); " + range},
      {MakeRoute({{{0, 2, 1}, {1, 0, 1}}}), "route\\[0\\]\\[0\\] = \\(expert 0, slot 2\\)",
       "route\\[0\\]\\[0\\] = \\(expert 0, slot 2\\)"},
      {MakeRoute({{{0, 0, 1}, {1, -2, 1}}}), "route\\[0\\]\\[1\\] = \\(expert 1, slot -2\\)",
       "route\\[0\\]\\[1\\] = \\(expert 1, slot -2\\)"},
      {MakeRoute({{{0.5f, 0, 1}}}), "route\\[0\\]\\[0\\] = \\(expert 0.5, slot 0\\)",
       "route\\[0\\]\\[0\\] = \\(expert 0.5, slot 0\\)"},
      {MakeRoute({{{0, NAN, 1}}}), "route\\[0\\]\\[0\\] = \\(expert 0, slot nan\\)",
       "route\\[0\\]\\[0\\] = \\(expert 0, slot nan\\)"},
      // A reused slot is an error for dispatch only; the first bad entry in token order wins.
      {MakeRoute({{{1, 1, 1}, {2, 0, 1}}, {{0, 0, 1}, {1, 1, 1}}, {{9, 0, 1}, {0, 0, 1}}}),
       "moe_dispatch 'd': route\\[1\\]\\[1\\] reuses slot 1 of expert 1", "route\\[2\\]\\[0\\] = \\(expert 9, slot 0\\)"},
  };
  for (const Case& c : cases) {
    EXPECT_DEATH(RunCpu(OpKind::kMoEDispatch, c.route, 3, 2), c.dispatch_msg);
    EXPECT_DEATH(RunDispatch<X>(c.route, 3, 2), c.dispatch_msg);
    EXPECT_DEATH(RunCpu(OpKind::kMoECombine, c.route, 3, 2), c.combine_msg);
    EXPECT_DEATH(RunCombine<X>(c.route, 3, 2), c.combine_msg);
  }
}

}  // namespace
}  // namespace hetsynth::runtime::testing
