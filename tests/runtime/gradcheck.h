// Gradient check for one CPU kernel: analytic backward against central finite differences of
// L = Σ out ⊙ R for a fixed random R.
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
};

inline double WeightedSum(const Tensor& out, const Tensor& r) {
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) s += double(out.data[i]) * double(r.data[i]);
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
  ir::Node node;
  node.name = std::string(ir::OpName(c.kind));
  node.kind = c.kind;
  node.attrs = c.attrs;
  std::vector<ir::Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape);
  absl::StatusOr<ir::Shape> out_shape = ir::InferShape(c.kind, shapes, c.attrs);
  ASSERT_TRUE(out_shape.ok()) << out_shape.status();

  auto forward = [&](SavedState& saved) {
    std::vector<const Tensor*> ptrs;
    for (const Tensor& t : inputs) ptrs.push_back(&t);
    Tensor out(*out_shape);
    Forward(node, KernelContext{}, ptrs, out, saved);
    return out;
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
      const double lp = WeightedSum(forward(s1), r);
      inputs[i].data[e] = orig - static_cast<float>(c.step);
      SavedState s2;
      const double lm = WeightedSum(forward(s2), r);
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
