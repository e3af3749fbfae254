// Mixture-of-experts routing: GShard-style top-k gating with a fixed capacity per expert, and
// the dispatch/combine pair that moves tokens into expert slots and back.
//
// A route [S, k, 3] holds, for token s and its j-th choice, (expert, slot, weight) as floats;
// slot −1 means the token was dropped for that choice because the expert was full. The route
// is the only link between the three ops, so dispatch and combine take E and P from their
// [E, P, C] tensors and check every route entry against them: a route that points outside
// is a programming error, not data.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "ops.h"

namespace hetsynth::runtime::cpu {

namespace {

// One decoded route entry; slot is −1 when the choice was dropped.
struct RouteEntry {
  int64_t expert;
  int64_t slot;
  float weight;
};

// Entry (s, j) of a route, checked against `experts` experts of `capacity` slots each.
RouteEntry ReadRoute(const ir::Node& node, const Tensor& route, int64_t s, int64_t j,
                     int64_t experts, int64_t capacity) {
  const float* r = route.ptr() + (s * route.dim(1) + j) * 3;
  // Range-check as floats first: casting NaN or a huge value to an integer is undefined.
  const bool ok = r[0] >= 0.0f && r[0] < static_cast<float>(experts) && r[0] == std::floor(r[0]) &&
                  r[1] >= -1.0f && r[1] < static_cast<float>(capacity) && r[1] == std::floor(r[1]);
  HS_CHECK(ok,
           StrCat(ir::OpName(node.kind), " '", node.name, "': route[", s, "][", j, "] = (expert ",
                  r[0], ", slot ", r[1], "); expected an integer expert in [0, ", experts,
                  ") and an integer slot in [-1, ", capacity, ")"));
  return {static_cast<int64_t>(r[0]), static_cast<int64_t>(r[1]), r[2]};
}

}  // namespace

// TopKGate: logits[S, E] -> route[S, k, 3] with capacity P (attrs.capacity) slots per expert.
//
//   p[s]      = softmax(logits[s]) over the E experts.
//   e_0..e_k−1: the k experts with the largest p[s][e], in decreasing order of p; equal
//               probabilities are ordered by lower expert index first.
//   w_j       = p[s][e_j] / Σ_{j'<k} p[s][e_j'] (the chosen probabilities renormalized).
//   slot_j    : assigned in priority order — every token's choice j=0 for s = 0..S−1, then
//               every token's choice j=1 for s = 0..S−1, and so on. Each expert counts the
//               slots it has handed out; a choice gets slot = count (then count += 1) while
//               count < P, and slot = −1 (dropped) once the expert is full.
//   route[s][j] = (e_j, slot_j, w_j).
//
// Backward: only the weights carry gradient. With g_j = droute[s][j][2] and
// Z = Σ_j p[s][e_j]: dp[s][e_j] = (g_j − Σ_j' g_j'·w_j') / Z and dp = 0 for unchosen experts;
// then dlogits[s][e] = p[s][e]·(dp[s][e] − Σ_e' dp[s][e']·p[s][e']). The integer channels 0
// and 1 of droute are ignored, and a dropped choice's weight still gets its gradient.
//
// Saved: p [S, E].
void TopKGateForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                     SavedState& saved) {
  const Tensor& logits = *in[0];
  CheckTopKGate(node, logits.shape, out.shape);
  const int64_t ns = logits.dim(0), ne = logits.dim(1), nk = out.dim(1);
  const int64_t capacity = node.attrs.capacity;

  saved.tensors.assign(1, Tensor({ns, ne}));
  float* probs = saved.tensors[0].ptr();
  std::vector<int64_t> choice(ns * nk);
  std::vector<int64_t> order(ne);
  for (int64_t s = 0; s < ns; ++s) {
    const float* z = logits.ptr() + s * ne;
    float* p = probs + s * ne;
    const float mx = *std::max_element(z, z + ne);
    double sum = 0;
    for (int64_t e = 0; e < ne; ++e) {
      p[e] = std::exp(z[e] - mx);
      sum += p[e];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t e = 0; e < ne; ++e) p[e] *= inv;

    std::iota(order.begin(), order.end(), int64_t{0});
    std::partial_sort(order.begin(), order.begin() + nk, order.end(),
                      [p](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    double chosen = 0;
    for (int64_t j = 0; j < nk; ++j) chosen += p[order[j]];
    for (int64_t j = 0; j < nk; ++j) {
      choice[s * nk + j] = order[j];
      float* r = out.ptr() + (s * nk + j) * 3;
      r[0] = static_cast<float>(order[j]);
      r[2] = static_cast<float>(p[order[j]] / chosen);
    }
  }

  std::vector<int64_t> used(ne, 0);
  for (int64_t j = 0; j < nk; ++j) {
    for (int64_t s = 0; s < ns; ++s) {
      int64_t& count = used[choice[s * nk + j]];
      out.data[(s * nk + j) * 3 + 1] = count < capacity ? static_cast<float>(count++) : -1.0f;
    }
  }
}

void TopKGateBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                      const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const int64_t ns = in[0]->dim(0), ne = in[0]->dim(1), nk = out.dim(1);
  CheckTopKGateSaved(node, saved.tensors, in[0]->shape);
  const float* probs = saved.tensors[0].ptr();
  std::vector<double> dp(ne);
  for (int64_t s = 0; s < ns; ++s) {
    const float* p = probs + s * ne;
    double z = 0, gw = 0;
    for (int64_t j = 0; j < nk; ++j) {
      const float* r = out.ptr() + (s * nk + j) * 3;
      z += p[static_cast<int64_t>(r[0])];
      gw += double(dout.data[(s * nk + j) * 3 + 2]) * r[2];
    }
    std::fill(dp.begin(), dp.end(), 0.0);
    for (int64_t j = 0; j < nk; ++j) {
      const auto e = static_cast<int64_t>(out.data[(s * nk + j) * 3]);
      dp[e] += (dout.data[(s * nk + j) * 3 + 2] - gw) / z;
    }
    double dot = 0;
    for (int64_t e = 0; e < ne; ++e) dot += dp[e] * p[e];
    float* dz = din[0]->ptr() + s * ne;
    for (int64_t e = 0; e < ne; ++e) dz[e] += static_cast<float>(p[e] * (dp[e] - dot));
  }
}

void MoEDispatchForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                        SavedState& saved) {
  const Tensor &x = *in[0], &route = *in[1];
  CheckMoEDispatch(node, x.shape, route.shape, out.shape);
  const int64_t ns = x.dim(0), c = x.dim(1), nk = route.dim(1);
  const int64_t ne = out.dim(0), cap = out.dim(1);
  // Two choices landing in one slot would silently overwrite a token.
  std::vector<bool> taken(ne * cap, false);
  for (int64_t s = 0; s < ns; ++s) {
    for (int64_t j = 0; j < nk; ++j) {
      const RouteEntry r = ReadRoute(node, route, s, j, ne, cap);
      if (r.slot < 0) continue;
      const int64_t dst = r.expert * cap + r.slot;
      HS_CHECK(!taken[dst], StrCat("moe_dispatch '", node.name, "': route[", s, "][", j,
                                   "] reuses slot ", r.slot, " of expert ", r.expert));
      taken[dst] = true;
      std::copy_n(x.ptr() + s * c, c, out.ptr() + dst * c);
    }
  }
}

void MoEDispatchBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                         const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const Tensor& route = *in[1];
  const int64_t ns = in[0]->dim(0), c = in[0]->dim(1), nk = route.dim(1);
  const int64_t ne = dout.dim(0), cap = dout.dim(1);
  for (int64_t s = 0; s < ns; ++s) {
    float* dx = din[0]->ptr() + s * c;
    for (int64_t j = 0; j < nk; ++j) {
      const RouteEntry r = ReadRoute(node, route, s, j, ne, cap);
      if (r.slot < 0) continue;
      const float* g = dout.ptr() + (r.expert * cap + r.slot) * c;
      for (int64_t i = 0; i < c; ++i) dx[i] += g[i];
    }
  }
}

void MoECombineForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                       SavedState& saved) {
  const Tensor &y = *in[0], &route = *in[1];
  CheckMoECombine(node, y.shape, route.shape, out.shape);
  const int64_t ns = out.dim(0), c = out.dim(1), nk = route.dim(1);
  const int64_t ne = y.dim(0), cap = y.dim(1);
  for (int64_t s = 0; s < ns; ++s) {
    float* o = out.ptr() + s * c;
    for (int64_t j = 0; j < nk; ++j) {
      const RouteEntry r = ReadRoute(node, route, s, j, ne, cap);
      if (r.slot < 0) continue;
      const float* src = y.ptr() + (r.expert * cap + r.slot) * c;
      for (int64_t i = 0; i < c; ++i) o[i] += r.weight * src[i];
    }
  }
}

void MoECombineBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                        const Tensor& dout, const SavedState& saved, DIn din) {
  const Tensor &y = *in[0], &route = *in[1];
  Tensor *dy = din[0], *droute = din[1];
  const int64_t ns = dout.dim(0), c = dout.dim(1), nk = route.dim(1);
  const int64_t ne = y.dim(0), cap = y.dim(1);
  for (int64_t s = 0; s < ns; ++s) {
    const float* g = dout.ptr() + s * c;
    for (int64_t j = 0; j < nk; ++j) {
      const RouteEntry r = ReadRoute(node, route, s, j, ne, cap);
      if (r.slot < 0) continue;
      const int64_t src = (r.expert * cap + r.slot) * c;
      if (dy) {
        float* d = dy->ptr() + src;
        for (int64_t i = 0; i < c; ++i) d[i] += r.weight * g[i];
      }
      if (droute) {
        double dot = 0;
        for (int64_t i = 0; i < c; ++i) dot += double(g[i]) * y.data[src + i];
        droute->data[(s * nk + j) * 3 + 2] += static_cast<float>(dot);
      }
    }
  }
}

}  // namespace hetsynth::runtime::cpu
