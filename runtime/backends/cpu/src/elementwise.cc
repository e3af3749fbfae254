// Elementwise CPU kernels: add, mul, gelu, dropout, expand, and the unary ops whose math is
// shared with the GPU (runtime/ops/unary_math.h: relu, ...), generated from their functors.
//
// Add, mul and expand share one broadcast walker: the small operand's dims align with the
// trailing dims of the large one, each equal or 1. The walker drops size-1 dims and merges
// neighbouring dims that are broadcast alike, so the common cases (bias [C] onto [B, T, C],
// a [T, 1] column) become a short loop over contiguous rows. Reductions over broadcast dims
// accumulate in double because a bias gradient sums B·T values per element.
//
// Gelu evaluates Φ through erfc rather than 1 + erf: in float the sum cancels for negative x
// (4% off at x = −5, exactly 0 from x ≈ −5.8 on), and the branch-free exp below lets the loop
// vectorize, which std::erf/std::exp do not without -ffast-math (gelu runs on [B, T, 4C]).
//
// Dropout draws no state: whether element j survives is a pure function of (seed, step, j),
// so backward regenerates the mask instead of storing it, and any run can reproduce it. A
// kernel given a piece of a split tensor (ctx.shard) indexes the stream by each element's
// index in the full tensor, so the pieces together drop what the single-device run drops.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "hetsynth/runtime/ops/fast_math.h"
#include "hetsynth/runtime/random.h"
#include "ops.h"

namespace hetsynth::runtime::cpu {

namespace {

// b broadcast onto a, with a's dims merged into runs along which b either follows a
// (contiguously) or is constant (stride 0).
struct BroadcastPlan {
  std::vector<int64_t> dims;     // merged dims of a, outermost first; empty for one element
  std::vector<int64_t> bstride;  // b's element stride along each merged dim (0: broadcast)
};

BroadcastPlan PlanBroadcast(const ir::Shape& a, const ir::Shape& b, const std::string& node) {
  MergedBroadcast merged = MergeBroadcast(a, b, node);
  const std::vector<bool>& bcast = merged.bcast;
  BroadcastPlan plan;
  plan.dims = std::move(merged.dims);
  plan.bstride.resize(plan.dims.size());
  int64_t s = 1;
  for (size_t i = plan.dims.size(); i-- > 0;) {
    plan.bstride[i] = bcast[i] ? 0 : s;
    if (!bcast[i]) s *= plan.dims[i];
  }
  return plan;
}

// Calls fn(a_off, b_off, len, b_step) for each innermost run of the plan: a's elements
// a_off .. a_off+len-1 pair with b's b_off + j·b_step.
template <typename Fn>
void ForEachRun(const BroadcastPlan& plan, Fn&& fn) {
  const size_t r = plan.dims.size();
  if (r == 0) {
    fn(int64_t{0}, int64_t{0}, int64_t{1}, int64_t{0});
    return;
  }
  const int64_t len = plan.dims[r - 1], step = plan.bstride[r - 1];
  int64_t outer = 1;
  for (size_t i = 0; i + 1 < r; ++i) outer *= plan.dims[i];
  std::vector<int64_t> idx(r, 0);
  int64_t b_off = 0;
  for (int64_t o = 0; o < outer; ++o) {
    fn(o * len, b_off, len, step);
    // Odometer over the outer dims, keeping b's offset in step.
    for (size_t i = r - 1; i-- > 0;) {
      b_off += plan.bstride[i];
      if (++idx[i] < plan.dims[i]) break;
      b_off -= plan.bstride[i] * plan.dims[i];
      idx[i] = 0;
    }
  }
}

enum class Shape2 { kSame, kSuffix, kGeneral };

// kSame: b's dims are all of a's (a's extra leading dims, if any, are 1); kSuffix: b's dims are
// exactly a's trailing dims; kGeneral: anything else, checked by PlanBroadcast.
Shape2 Classify(const Tensor& a, const Tensor& b) {
  const bool suffix = b.rank() <= a.rank() &&
                      std::equal(b.shape.begin(), b.shape.end(), a.shape.end() - b.rank());
  if (!suffix) return Shape2::kGeneral;
  return a.numel() == b.numel() ? Shape2::kSame : Shape2::kSuffix;
}

// db += Σ over broadcast dims of g(i) where g(i) is the gradient for a's element i.
template <typename G>
void ReduceIntoB(const Tensor& a, const Tensor& b, Shape2 kind, const std::string& node,
                 Tensor& db, G&& g) {
  const int64_t n = a.numel(), nb = b.numel();
  float* out = db.ptr();
  if (kind == Shape2::kSame) {
    for (int64_t i = 0; i < n; ++i) out[i] += static_cast<float>(g(i));
    return;
  }
  std::vector<double> acc(static_cast<size_t>(nb), 0.0);
  if (kind == Shape2::kSuffix) {
    for (int64_t base = 0; base < n; base += nb) {
      for (int64_t j = 0; j < nb; ++j) acc[j] += g(base + j);
    }
  } else {
    ForEachRun(PlanBroadcast(a.shape, b.shape, node),
               [&](int64_t ao, int64_t bo, int64_t len, int64_t step) {
                 if (step == 0) {
                   double s = 0;
                   for (int64_t j = 0; j < len; ++j) s += g(ao + j);
                   acc[bo] += s;
                 } else {
                   for (int64_t j = 0; j < len; ++j) acc[bo + j] += g(ao + j);
                 }
               });
  }
  for (int64_t j = 0; j < nb; ++j) out[j] += static_cast<float>(acc[j]);
}

// out[i] = op(a[i], b[broadcast(i)]).
template <typename Op>
void BroadcastBinary(const Tensor& a, const Tensor& b, const std::string& node, Tensor& out,
                     Op op) {
  const float* pa = a.ptr();
  const float* pb = b.ptr();
  float* po = out.ptr();
  const int64_t n = a.numel(), nb = b.numel();
  switch (Classify(a, b)) {
    case Shape2::kSame:
      for (int64_t i = 0; i < n; ++i) po[i] = op(pa[i], pb[i]);
      return;
    case Shape2::kSuffix:
      for (int64_t base = 0; base < n; base += nb) {
        for (int64_t j = 0; j < nb; ++j) po[base + j] = op(pa[base + j], pb[j]);
      }
      return;
    case Shape2::kGeneral:
      ForEachRun(PlanBroadcast(a.shape, b.shape, node),
                 [&](int64_t ao, int64_t bo, int64_t len, int64_t step) {
                   if (step == 0) {
                     const float bv = pb[bo];
                     for (int64_t j = 0; j < len; ++j) po[ao + j] = op(pa[ao + j], bv);
                   } else {
                     for (int64_t j = 0; j < len; ++j) po[ao + j] = op(pa[ao + j], pb[bo + j]);
                   }
                 });
      return;
  }
}

}  // namespace

void AddForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                SavedState& saved) {
  BroadcastBinary(*in[0], *in[1], node.name, out, [](float x, float y) { return x + y; });
}

void AddBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                 const Tensor& dout, const SavedState& saved, DIn din) {
  const float* g = dout.ptr();
  if (din[0]) {
    float* da = din[0]->ptr();
    for (int64_t i = 0; i < dout.numel(); ++i) da[i] += g[i];
  }
  if (din[1]) {
    ReduceIntoB(*in[0], *in[1], Classify(*in[0], *in[1]), node.name, *din[1],
                [g](int64_t i) { return g[i]; });
  }
}

void MulForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                SavedState& saved) {
  BroadcastBinary(*in[0], *in[1], node.name, out, [](float x, float y) { return x * y; });
}

void MulBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                 const Tensor& dout, const SavedState& saved, DIn din) {
  const Tensor& a = *in[0];
  const Tensor& b = *in[1];
  const Shape2 kind = Classify(a, b);
  const float* g = dout.ptr();
  const float* pa = a.ptr();
  const float* pb = b.ptr();
  const int64_t nb = b.numel();
  if (din[0]) {
    float* da = din[0]->ptr();
    switch (kind) {
      case Shape2::kSame:
        for (int64_t i = 0; i < a.numel(); ++i) da[i] += g[i] * pb[i];
        break;
      case Shape2::kSuffix:
        for (int64_t base = 0; base < a.numel(); base += nb) {
          for (int64_t j = 0; j < nb; ++j) da[base + j] += g[base + j] * pb[j];
        }
        break;
      case Shape2::kGeneral:
        ForEachRun(PlanBroadcast(a.shape, b.shape, node.name),
                   [&](int64_t ao, int64_t bo, int64_t len, int64_t step) {
                     for (int64_t j = 0; j < len; ++j) {
                       da[ao + j] += g[ao + j] * pb[bo + j * step];
                     }
                   });
        break;
    }
  }
  if (din[1]) {
    ReduceIntoB(a, b, kind, node.name, *din[1],
                [g, pa](int64_t i) { return double(g[i]) * double(pa[i]); });
  }
}

namespace {

// The unary ops with shared math: the very functors the GPU operators launch, in a loop.
template <ir::OpKind K>
void UnaryForward(In in, Tensor& out) {
  const ops::UnaryFwd<K> f{in[0]->ptr(), out.ptr()};
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) f(i);
}

template <ir::OpKind K>
void UnaryBackward(In in, const Tensor& out, const Tensor& dout, DIn din) {
  if (!din[0]) return;
  const ops::UnaryBwd<K> f{in[0]->ptr(), out.ptr(), dout.ptr(), din[0]->ptr()};
  const int64_t n = dout.numel();
  for (int64_t i = 0; i < n; ++i) f(i);
}

}  // namespace

#define HS_DEFINE_UNARY_KERNEL_PAIR(Op)                                                        \
  void Op##Forward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,          \
                   SavedState& saved) {                                                          \
    UnaryForward<ir::OpKind::k##Op>(in, out);                                                    \
  }                                                                                              \
  void Op##Backward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,    \
                    const Tensor& dout, const SavedState& saved, DIn din) {                      \
    UnaryBackward<ir::OpKind::k##Op>(in, out, dout, din);                                        \
  }
HETSYNTH_UNARY_MATH_OPS(HS_DEFINE_UNARY_KERNEL_PAIR)
#undef HS_DEFINE_UNARY_KERNEL_PAIR

namespace {


// Φ(x) = erfc(−x/√2)/2, with erfc from Numerical Recipes' erfcc (fractional error < 1.2e-7
// for z >= 0) and Φ(x) = 1 − Φ(−x) for x >= 0. The relative error of x·Φ(x) stays below 2e-5
// over the whole float range.
float Phi(float x) {
  const float z = std::fabs(x) * static_cast<float>(1.0 / std::numbers::sqrt2);
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float half_erfc = 0.5f * t * ExpF(p - z * z);
  return Select(Mask(x >= 0.0f), 1.0f - half_erfc, half_erfc);
}

}  // namespace

// gelu(x) = x·Φ(x).
void GeluForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                 SavedState& saved) {
  const float* x = in[0]->ptr();
  float* y = out.ptr();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * Phi(x[i]);
}

// gelu'(x) = Φ(x) + x·φ(x).
void GeluBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                  const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const float* x = in[0]->ptr();
  const float* g = dout.ptr();
  float* dx = din[0]->ptr();
  const float inv_sqrt_2pi = static_cast<float>(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
  const int64_t n = dout.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    dx[i] += g[i] * (Phi(v) + v * inv_sqrt_2pi * ExpF(-0.5f * v * v));
  }
}

namespace {

// The dropout stream, fixed so that masks are reproducible across runs and backends
// (splitmix64 as in random.h: the finalizer applied to x + 0x9E3779B97F4A7C15):
//   u(seed, step, j) = (splitmix64(seed ^ splitmix64(step ^ splitmix64(j))) >> 40) · 2^-24
// a uniform on the 2^24-point grid in [0, 1); element j (row-major index into the tensor the
// kernel is given, or into the full tensor when ctx.shard says it is given a piece) is kept
// iff u >= p, and kept elements are scaled by 1/(1 − p).
// u >= p  ⇔  (hash >> 40) >= ⌈p · 2^24⌉, so the test runs on integers.
uint64_t DropThreshold(double p) { return static_cast<uint64_t>(std::ceil(p * 16777216.0)); }

bool Kept(uint64_t seed, uint64_t step, uint64_t j, uint64_t threshold) {
  return (SplitMix64(seed ^ SplitMix64(step ^ SplitMix64(j))) >> 40) >= threshold;
}

// y (+)= mask ⊙ x / (1 − p), for a tensor of shape `shape`. With ctx.shard the tensor is a
// piece of a larger one and the mask index of each element is its index in the full tensor:
// local (o, k, q) in [outer, len, inner] is global (o · full[dim] + start + k) · inner + q; a
// piece cut on two dims is [outer, len, mid, len2, inner] and local (o, k, m, k2, q) global
// (((o · full_len + start + k) · mid + m) · full_len2 + start2 + k2) · inner + q.
void ApplyDropout(const ir::Node& node, const KernelContext& ctx, const ir::Shape& shape,
                  const float* x, float* y, bool accumulate) {
  const double p = node.attrs.p;
  const int64_t n = ir::NumElements(shape);
  // The piece as [outer, len, inner] rows of `inner` contiguous elements; a whole tensor is
  // one row of n at global offset 0.
  const DropoutPiece piece = GetDropoutPiece(node, ctx, shape);
  const int64_t outer = piece.outer * piece.len * piece.mid, len = piece.len2, inner = piece.inner;
  if (p == 0.0) {
    for (int64_t i = 0; i < n; ++i) y[i] = accumulate ? y[i] + x[i] : x[i];
    return;
  }
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  const uint64_t threshold = DropThreshold(p);
  const uint64_t seed = node.attrs.seed, step = static_cast<uint64_t>(ctx.step);
  // Rows of `inner` contiguous elements: local row (o, k) with o over [outer, len, mid] of the
  // piece and k over len2.
  for (int64_t o = 0; o < outer; ++o) {
    const int64_t m = o % piece.mid, k1 = o / piece.mid % piece.len, o1 = o / piece.mid / piece.len;
    const int64_t row = (o1 * piece.full_len + piece.start + k1) * piece.mid + m;
    for (int64_t k = 0; k < len; ++k) {
      const int64_t local = (o * len + k) * inner;
      const int64_t global = (row * piece.full_len2 + piece.start2 + k) * inner;
      for (int64_t q = 0; q < inner; ++q) {
        if (!Kept(seed, step, static_cast<uint64_t>(global + q), threshold)) continue;
        const float v = x[local + q] * scale;
        y[local + q] = accumulate ? y[local + q] + v : v;
      }
    }
  }
}

}  // namespace

void DropoutForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                    SavedState& saved) {
  ApplyDropout(node, ctx, out.shape, in[0]->ptr(), out.ptr(), /*accumulate=*/false);
}

void DropoutBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                     const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  ApplyDropout(node, ctx, dout.shape, dout.ptr(), din[0]->ptr(), /*accumulate=*/true);
}

void ExpandForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                   SavedState& saved) {
  const float* x = in[0]->ptr();
  float* y = out.ptr();
  ForEachRun(PlanBroadcast(out.shape, in[0]->shape, node.name),
             [&](int64_t yo, int64_t xo, int64_t len, int64_t step) {
               for (int64_t j = 0; j < len; ++j) y[yo + j] = x[xo + j * step];
             });
}

void ExpandBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                    const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const float* g = dout.ptr();
  ReduceIntoB(dout, *in[0], Classify(dout, *in[0]), node.name, *din[0],
              [g](int64_t i) { return g[i]; });
}

}  // namespace hetsynth::runtime::cpu

namespace hetsynth::runtime::cpu {

// clip(x) = min(max(x, min), max); NaN stays NaN. The gradient passes strictly inside
// (min, max), as PyTorch's hardtanh (ReLU6) has it.
void ClipForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out, SavedState& saved) {
  const float lo = static_cast<float>(node.attrs.min), hi = static_cast<float>(node.attrs.max);
  const float* x = in[0]->ptr();
  float* y = out.ptr();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
}

void ClipBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out, const Tensor& dout,
                  const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const float lo = static_cast<float>(node.attrs.min), hi = static_cast<float>(node.attrs.max);
  const float* x = in[0]->ptr();
  const float* g = dout.ptr();
  float* dx = din[0]->ptr();
  const int64_t n = dout.numel();
  for (int64_t i = 0; i < n; ++i) dx[i] += (x[i] > lo && x[i] < hi) ? g[i] : 0.0f;
}

}  // namespace hetsynth::runtime::cpu
