// Helpers for CPU kernel tests: run one op's forward on given tensors, and check its backward
// against central finite differences of L = Σ out ⊙ R for a fixed random R.
#pragma once

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/kernels.h"

namespace hetsynth::runtime::testing {

struct GradCase {
  ir::OpKind kind;
  std::vector<ir::Shape> shapes;
  ir::Attrs attrs;
  std::map<size_t, Tensor> fixed;          // inputs with given values (ids, labels, routes)
  std::set<size_t> no_grad;                // inputs whose gradient is not checked
  // Elements of an input that are not checked (e.g. integer channels of a route).
  std::function<bool(size_t input, int64_t elem)> skip;
  double step = 1e-2;                      // finite-difference step
  double tol = 1e-2;                       // |analytic − numeric| <= tol · max(1, |numeric|)
  int max_elems = 96;                      // elements checked per input (evenly spread)
  uint32_t seed = 1;
  // Outputs that are ±inf (causal_mask's −inf above the diagonal) are constants of the op:
  // left out of L, whose finite differences would otherwise be inf − inf.
  bool constant_infinite_outputs = false;
};

inline ir::Node MakeNode(ir::OpKind kind, const ir::Attrs& attrs) {
  ir::Node node;
  node.name = std::string(ir::OpName(kind));
  node.kind = kind;
  node.attrs = attrs;
  return node;
}

// Runs the forward kernel on a zero-filled output of the shape ir::InferShape gives.
inline Tensor RunForward(ir::OpKind kind, const ir::Attrs& attrs, std::vector<const Tensor*> in,
                         int64_t step = 0, SavedState* saved_out = nullptr) {
  std::vector<ir::Shape> shapes;
  for (const Tensor* t : in) shapes.push_back(t->shape);
  absl::StatusOr<ir::Shape> shape = ir::InferShape(kind, shapes, attrs);
  EXPECT_TRUE(shape.ok()) << shape.status();
  Tensor out(shape.value_or(ir::Shape{}));
  SavedState saved;
  Forward(MakeNode(kind, attrs), KernelContext{step}, in, out, saved);
  if (saved_out) *saved_out = std::move(saved);
  return out;
}

// A gradient check of `kind` on random inputs of these shapes; callers adjust the rest.
inline GradCase Case(ir::OpKind kind, std::vector<ir::Shape> shapes, const ir::Attrs& attrs = {}) {
  GradCase c{};
  c.kind = kind;
  c.shapes = std::move(shapes);
  c.attrs = attrs;
  return c;
}

inline double WeightedSum(const Tensor& out, const Tensor& r, bool skip_infinite = false) {
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) {
    if (skip_infinite && std::isinf(out.data[i])) continue;
    s += double(out.data[i]) * double(r.data[i]);
  }
  return s;
}

inline void CheckGradients(const GradCase& c) {
  std::mt19937 rng(c.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    auto it = c.fixed.find(i);
    if (it != c.fixed.end()) {
      inputs.push_back(it->second);
      continue;
    }
    Tensor t(c.shapes[i]);
    for (float& v : t.data) v = normal(rng);
    inputs.push_back(std::move(t));
  }
  const ir::Node node = MakeNode(c.kind, c.attrs);
  std::vector<ir::Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape);
  ASSERT_TRUE(ir::InferShape(c.kind, shapes, c.attrs).ok());
  auto forward = [&](SavedState& saved) {
    std::vector<const Tensor*> ptrs;
    for (const Tensor& t : inputs) ptrs.push_back(&t);
    return RunForward(c.kind, c.attrs, ptrs, 0, &saved);
  };
  SavedState saved;
  Tensor out = forward(saved);
  Tensor r(out.shape);
  for (float& v : r.data) v = normal(rng);

  std::vector<Tensor> grads;
  std::vector<Tensor*> din;
  grads.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) grads.emplace_back(inputs[i].shape);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const bool want = Differentiable(c.kind, i) && !c.no_grad.count(i);
    din.push_back(want ? &grads[i] : nullptr);
  }
  std::vector<const Tensor*> ptrs;
  for (const Tensor& t : inputs) ptrs.push_back(&t);
  Backward(node, KernelContext{}, ptrs, out, r, saved, din);

  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!din[i]) continue;
    const int64_t n = inputs[i].numel();
    const int64_t stride = std::max<int64_t>(1, n / c.max_elems);
    for (int64_t e = 0; e < n; e += stride) {
      if (c.skip && c.skip(i, e)) continue;
      const float orig = inputs[i].data[e];
      inputs[i].data[e] = orig + static_cast<float>(c.step);
      SavedState s1;
      const double lp = WeightedSum(forward(s1), r, c.constant_infinite_outputs);
      inputs[i].data[e] = orig - static_cast<float>(c.step);
      SavedState s2;
      const double lm = WeightedSum(forward(s2), r, c.constant_infinite_outputs);
      inputs[i].data[e] = orig;
      const double numeric = (lp - lm) / (2 * c.step);
      const double analytic = grads[i].data[e];
      EXPECT_LE(std::abs(analytic - numeric), c.tol * std::max(1.0, std::abs(numeric)))
          << ir::OpName(c.kind) << " input " << i << " element " << e
          << ": analytic " << analytic << " vs numeric " << numeric;
    }
  }
}

}  // namespace hetsynth::runtime::testing
