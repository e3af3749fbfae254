// Device functors of the mixture-of-experts operators (moe.h). C++17; see hd.h.
//
// A route [S, k, 3] holds, for token s and its j-th choice, (expert, slot, weight) as floats;
// slot −1 means the choice was dropped (expert full, or — after the executor's "experts"
// rule — an expert of another rank, stored as expert 0 with slot −1). Entry (s, j) is at
// route + (s·k + j)·3. The functors that index [E, P, C] tensors through a route skip entries
// that are not valid (MoeRouteValid) as well as dropped ones, so a bad route can never make them
// touch memory out of bounds; the operators check routes first and abort like the CPU kernels.
#pragma once

#include "hetsynth/runtime/ops/hd.h"

namespace hetsynth::runtime::gpu {

// The CPU kernels' range check of one route entry (cpu/src/moe.cc ReadRoute), done on the floats so
// that NaN or huge values never reach an integer cast.
HS_HD inline bool MoeRouteValid(const float* r, int64_t experts, int64_t capacity) {
  return r[0] >= 0.0f && r[0] < static_cast<float>(experts) && r[0] == ::floorf(r[0]) && r[1] >= -1.0f &&
         r[1] < static_cast<float>(capacity) && r[1] == ::floorf(r[1]);
}

// Flat slot index e·P + slot of a valid, not dropped entry; −1 otherwise.
HS_HD inline int64_t MoeRouteSlot(const float* r, int64_t experts, int64_t capacity) {
  if (!MoeRouteValid(r, experts, capacity) || r[1] < 0.0f) return -1;
  return static_cast<int64_t>(r[0]) * capacity + static_cast<int64_t>(r[1]);
}

// ---- route checks ------------------------------------------------------------------------------

// One call per route entry i: counts invalid entries into *bad and, when `taken` ([E·P]) is
// given, every valid kept entry into its slot's counter.
struct MoeRouteCheck {
  const float* route;
  int64_t experts, capacity;
  float* taken;  // nullable
  float* bad;
  HS_HD void operator()(int64_t i) const {
    const float* r = route + i * 3;
    if (!MoeRouteValid(r, experts, capacity)) {
      AtomicAdd(bad, 1.0f);
      return;
    }
    if (taken && r[1] >= 0.0f) {
      AtomicAdd(taken + static_cast<int64_t>(r[0]) * capacity + static_cast<int64_t>(r[1]), 1.0f);
    }
  }
};

// One call per slot i: counts slots claimed by more than one route entry into *bad.
struct MoeSlotCheck {
  const float* taken;
  float* bad;
  HS_HD void operator()(int64_t i) const {
    if (taken[i] > 1.5f) AtomicAdd(bad, 1.0f);
  }
};

// Single call (n = 1), only on the error path: finds the first bad entry in the CPU kernels'
// order (tokens, then choices; a range error or, with `taken` ([E·P], zero on entry), a slot
// already claimed by an earlier entry) and writes res[0] = its index, res[1] = 1 (range) or 2
// (reused slot). res[0] stays −1 when nothing is wrong.
struct MoeFirstBadRoute {
  const float* route;
  int64_t entries, experts, capacity;
  float* taken;  // nullable
  float* res;
  HS_HD void operator()(int64_t) const {
    res[0] = -1.0f;
    res[1] = 0.0f;
    for (int64_t i = 0; i < entries; ++i) {
      const float* r = route + i * 3;
      if (!MoeRouteValid(r, experts, capacity)) {
        res[0] = static_cast<float>(i);
        res[1] = 1.0f;
        return;
      }
      if (!taken || r[1] < 0.0f) continue;
      float& t = taken[static_cast<int64_t>(r[0]) * capacity + static_cast<int64_t>(r[1])];
      if (t != 0.0f) {
        res[0] = static_cast<float>(i);
        res[1] = 2.0f;
        return;
      }
      t = 1.0f;
    }
  }
};

// ---- top_k_gate ----------------------------------------------------------------------------------

// One call per token s (a row of E logits): p = softmax(logits[s]) into probs, then the k
// experts of largest p (ties: lower expert first) into route channel 0 and their renormalized
// probabilities into channel 2, exactly as the CPU kernel (float exponentials, double sums).
// Row-serial; a warp per row would be faster for large E.
struct TopKGateRow {
  const float* logits;
  float* probs;
  float* route;
  int64_t ne, nk;
  HS_HD void operator()(int64_t s) const {
    const float* z = logits + s * ne;
    float* p = probs + s * ne;
    float mx = z[0];
    for (int64_t e = 1; e < ne; ++e) mx = z[e] > mx ? z[e] : mx;  // std::max_element: first max
    double sum = 0;
    for (int64_t e = 0; e < ne; ++e) {
      p[e] = ::expf(z[e] - mx);
      sum += p[e];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t e = 0; e < ne; ++e) p[e] *= inv;

    // The experts in the strict order "p descending, then index ascending": choice j is the
    // best expert ranked after choice j−1 (the order is total, so this is the CPU's
    // partial_sort result).
    float* r = route + s * nk * 3;
    int64_t prev = -1;
    double chosen = 0;
    for (int64_t j = 0; j < nk; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < ne; ++e) {
        const bool after_prev = prev < 0 || p[e] < p[prev] || (p[e] == p[prev] && e > prev);
        if (!after_prev) continue;
        if (best < 0 || p[e] > p[best]) best = e;  // ties keep the lower index
      }
      if (best < 0) best = 0;  // only with NaN probabilities
      r[j * 3] = static_cast<float>(best);
      chosen += p[best];
      prev = best;
    }
    for (int64_t j = 0; j < nk; ++j) {
      r[j * 3 + 2] = static_cast<float>(p[static_cast<int64_t>(r[j * 3])] / chosen);
    }
  }
};

// One call per expert e: hands out e's slots in priority order — choice j = 0 of tokens
// 0..S−1, then choice 1, … — slot = count while count < P, −1 (dropped) once full; writes
// route channel 1 of exactly the entries naming e. Sequential per expert by definition (the
// CPU's order); a per-expert prefix scan would parallelize it over tokens.
struct TopKGateSlots {
  float* route;
  int64_t ns, nk, capacity;
  HS_HD void operator()(int64_t e) const {
    const float fe = static_cast<float>(e);
    int64_t count = 0;
    for (int64_t j = 0; j < nk; ++j) {
      for (int64_t s = 0; s < ns; ++s) {
        float* r = route + (s * nk + j) * 3;
        if (r[0] != fe) continue;
        r[1] = count < capacity ? static_cast<float>(count++) : -1.0f;
      }
    }
  }
};

// One call per logit (s, e): dlogits[s][e] += p[s][e]·(dp[s][e] − Σ_e' dp[s][e']·p[s][e'])
// with dp[s][e_j] = (g_j − Σ_j' g_j'·w_j') / Σ_j' p[s][e_j'] (zero for unchosen experts),
// g_j = droute[s][j][2]; each call recomputes the row's O(k) sums in double.
struct TopKGateBwd {
  const float* probs;
  const float* route;  // forward's output
  const float* g;      // droute
  float* dlogits;
  int64_t ne, nk;
  HS_HD void operator()(int64_t i) const {
    const int64_t s = i / ne, e = i - s * ne;
    const float* p = probs + s * ne;
    const float* r = route + s * nk * 3;
    const float* gr = g + s * nk * 3;
    double z = 0, gw = 0;
    for (int64_t j = 0; j < nk; ++j) {
      z += p[static_cast<int64_t>(r[j * 3])];
      gw += double(gr[j * 3 + 2]) * r[j * 3 + 2];
    }
    double dp_e = 0, dot = 0;
    for (int64_t j = 0; j < nk; ++j) {
      const int64_t ej = static_cast<int64_t>(r[j * 3]);
      const double dpj = (gr[j * 3 + 2] - gw) / z;
      dot += dpj * p[ej];
      if (ej == e) dp_e += dpj;
    }
    dlogits[i] += static_cast<float>(p[e] * (dp_e - dot));
  }
};

// ---- moe_dispatch --------------------------------------------------------------------------------

// One call per (entry, channel): out[e][slot][c] = x[s][c] for kept entries (the route was
// checked to use every slot at most once, so the writes never collide).
struct MoeDispatchFwd {
  const float* x;
  const float* route;
  float* out;
  int64_t nk, c, experts, capacity;
  HS_HD void operator()(int64_t i) const {
    const int64_t entry = i / c, ch = i - entry * c;
    const int64_t dst = MoeRouteSlot(route + entry * 3, experts, capacity);
    if (dst < 0) return;
    out[dst * c + ch] = x[(entry / nk) * c + ch];
  }
};

// One call per (token, channel): dx[s][c] += Σ_j dout[e_j][slot_j][c] over kept choices, in
// choice order (the CPU's order of additions).
struct MoeDispatchBwd {
  const float* dout;
  const float* route;
  float* dx;
  int64_t nk, c, experts, capacity;
  HS_HD void operator()(int64_t i) const {
    const int64_t s = i / c, ch = i - s * c;
    float acc = dx[i];
    for (int64_t j = 0; j < nk; ++j) {
      const int64_t src = MoeRouteSlot(route + (s * nk + j) * 3, experts, capacity);
      if (src >= 0) acc += dout[src * c + ch];
    }
    dx[i] = acc;
  }
};

// ---- moe_combine ---------------------------------------------------------------------------------

// One call per (token, channel): out[s][c] += Σ_j w_j·y[e_j][slot_j][c] over kept choices, in
// choice order.
struct MoeCombineFwd {
  const float* y;
  const float* route;
  float* out;
  int64_t nk, c, experts, capacity;
  HS_HD void operator()(int64_t i) const {
    const int64_t s = i / c, ch = i - s * c;
    float acc = out[i];
    for (int64_t j = 0; j < nk; ++j) {
      const float* r = route + (s * nk + j) * 3;
      const int64_t src = MoeRouteSlot(r, experts, capacity);
      if (src >= 0) acc += r[2] * y[src * c + ch];
    }
    out[i] = acc;
  }
};

// One call per (entry, channel): dy[e][slot][c] += w·dout[s][c] for kept entries. Atomic
// because combine, unlike dispatch, does not forbid two entries naming one slot; with a
// gate-made route every slot has at most one entry and the result is deterministic.
struct MoeCombineBwdY {
  const float* dout;
  const float* route;
  float* dy;
  int64_t nk, c, experts, capacity;
  HS_HD void operator()(int64_t i) const {
    const int64_t entry = i / c, ch = i - entry * c;
    const float* r = route + entry * 3;
    const int64_t dst = MoeRouteSlot(r, experts, capacity);
    if (dst < 0) return;
    AtomicAdd(dy + dst * c + ch, r[2] * dout[(entry / nk) * c + ch]);
  }
};

// One call per route entry: droute[s][j][2] += Σ_c dout[s][c]·y[e_j][slot_j][c] (double) for
// kept entries; channels 0 and 1 get nothing. Row-serial over C; a warp per entry would be
// faster for wide C.
struct MoeCombineBwdRoute {
  const float* dout;
  const float* y;
  const float* route;
  float* droute;
  int64_t nk, c, experts, capacity;
  HS_HD void operator()(int64_t entry) const {
    const int64_t src = MoeRouteSlot(route + entry * 3, experts, capacity);
    if (src < 0) return;
    const float* g = dout + (entry / nk) * c;
    const float* yy = y + src * c;
    double dot = 0;
    for (int64_t i = 0; i < c; ++i) dot += double(g[i]) * yy[i];
    droute[entry * 3 + 2] += static_cast<float>(dot);
  }
};

}  // namespace hetsynth::runtime::gpu
