// Fused multi-head attention and the standalone causal mask.
//
// Attention runs one (batch, head) pair at a time: the head's [T,D] slices of q, k, v are
// copied into contiguous buffers so that every product is a plain row-major Gemm, and the
// softmax probabilities P [B,H,T,T] are kept for backward (recomputing them would cost a
// third T·T·D product per head). The head count comes from the node's attrs and the channel
// count from the tensors, so a shard holding a subset of heads runs with heads set to its
// local head count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "ops.h"

namespace hetsynth::runtime::cpu {
namespace {

// Copies the [T, D] slice at channel offset `off` of one [T, C] batch row block into `dst`.
void GatherHead(const float* src, int64_t t, int64_t c, int64_t off, int64_t d, float* dst) {
  for (int64_t i = 0; i < t; ++i) std::copy_n(src + i * c + off, d, dst + i * d);
}

// Adds a contiguous [T, D] head buffer into the channel slice at `off` of a [T, C] block.
void ScatterAddHead(const float* src, int64_t t, int64_t c, int64_t off, int64_t d, float* dst) {
  for (int64_t i = 0; i < t; ++i) {
    float* row = dst + i * c + off;
    const float* s = src + i * d;
    for (int64_t j = 0; j < d; ++j) row[j] += s[j];
  }
}

// Row softmax of a [T, T] score block in place. With `causal`, row i only sees j <= i and the
// masked entries become exactly 0 (exp(-inf)), which backward relies on to zero their dS.
void SoftmaxRows(float* s, int64_t t, bool causal) {
  for (int64_t i = 0; i < t; ++i) {
    float* row = s + i * t;
    const int64_t n = causal ? i + 1 : t;
    // Eigen's exp is vectorized; std::exp in a loop is not, and at GPT sizes the B·H·T·T
    // exponentials would cost as much as the two products.
    // Eigen peels unaligned heads with scalar code, so on a Map of `row` the bits would depend on
    // the row's address (and so on the allocator): work on a copy at a 64-byte-aligned address.
    thread_local std::vector<float, Eigen::aligned_allocator<float>> scratch;
    if (scratch.size() < static_cast<size_t>(n) + 16) scratch.resize(static_cast<size_t>(n) + 16);
    float* a = scratch.data();
    a += (16 - (reinterpret_cast<uintptr_t>(a) / sizeof(float)) % 16) % 16;
    std::copy(row, row + n, a);
    Eigen::Map<Eigen::ArrayXf, Eigen::Aligned64> r(a, n);
    r = (r - r.maxCoeff()).exp();
    r *= 1.0f / r.sum();
    std::copy(a, a + n, row);
    std::fill(row + n, row + t, 0.0f);
  }
}

}  // namespace

void AttentionForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                      SavedState& saved) {
  const Tensor &q = *in[0], &k = *in[1], &v = *in[2];
  const auto [nb, t, c, nh, d] = ReadAttentionDims(node, q.shape, k.shape, v.shape);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const ir::Shape p_shape = {nb, nh, t, t};
  // Reuse last step's buffer: every entry is overwritten, and at GPT sizes it is tens of MB.
  if (saved.tensors.size() != 1 || saved.tensors[0].shape != p_shape) {
    saved.tensors.assign(1, Tensor(p_shape));
  }
  Tensor& probs = saved.tensors[0];

  std::vector<float> qh(t * d), kh(t * d), vh(t * d), oh(t * d);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t base = b * t * c;
    for (int64_t h = 0; h < nh; ++h) {
      GatherHead(q.ptr() + base, t, c, h * d, d, qh.data());
      GatherHead(k.ptr() + base, t, c, h * d, d, kh.data());
      GatherHead(v.ptr() + base, t, c, h * d, d, vh.data());
      float* p = probs.ptr() + (b * nh + h) * t * t;
      Gemm(false, true, t, t, d, scale, qh.data(), kh.data(), 0.0f, p);
      SoftmaxRows(p, t, node.attrs.causal);
      Gemm(false, false, t, d, t, 1.0f, p, vh.data(), 0.0f, oh.data());
      ScatterAddHead(oh.data(), t, c, h * d, d, out.ptr() + base);
    }
  }
}

void AttentionBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                       const Tensor& dout, const SavedState& saved, DIn din) {
  const Tensor &q = *in[0], &k = *in[1], &v = *in[2];
  const auto [nb, t, c, nh, d] = ReadAttentionDims(node, q.shape, k.shape, v.shape);
  CheckAttentionSaved(node, {nb, t, c, nh, d}, saved.tensors);
  const Tensor& probs = saved.tensors[0];
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  Tensor *dq = din[0], *dk = din[1], *dv = din[2];

  std::vector<float> qh(t * d), kh(t * d), vh(t * d), doh(t * d), gh(t * d), ds(t * t);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t base = b * t * c;
    for (int64_t h = 0; h < nh; ++h) {
      const float* p = probs.ptr() + (b * nh + h) * t * t;
      GatherHead(dout.ptr() + base, t, c, h * d, d, doh.data());
      if (dv) {
        Gemm(true, false, t, d, t, 1.0f, p, doh.data(), 0.0f, gh.data());
        ScatterAddHead(gh.data(), t, c, h * d, d, dv->ptr() + base);
      }
      if (!dq && !dk) continue;
      GatherHead(v.ptr() + base, t, c, h * d, d, vh.data());
      Gemm(false, true, t, t, d, 1.0f, doh.data(), vh.data(), 0.0f, ds.data());
      // Softmax backward: dS = P ⊙ (dP − rowsum(dP ⊙ P)).
      for (int64_t i = 0; i < t; ++i) {
        float* row = ds.data() + i * t;
        const float* prow = p + i * t;
        double dot = 0;
        for (int64_t j = 0; j < t; ++j) dot += double(row[j]) * prow[j];
        const float fdot = static_cast<float>(dot);
        for (int64_t j = 0; j < t; ++j) row[j] = prow[j] * (row[j] - fdot);
      }
      if (dq) {
        GatherHead(k.ptr() + base, t, c, h * d, d, kh.data());
        Gemm(false, false, t, d, t, scale, ds.data(), kh.data(), 0.0f, gh.data());
        ScatterAddHead(gh.data(), t, c, h * d, d, dq->ptr() + base);
      }
      if (dk) {
        GatherHead(q.ptr() + base, t, c, h * d, d, qh.data());
        Gemm(true, false, t, d, t, scale, ds.data(), qh.data(), 0.0f, gh.data());
        ScatterAddHead(gh.data(), t, c, h * d, d, dk->ptr() + base);
      }
    }
  }
}

void CausalMaskForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                       SavedState& saved) {
  const Tensor& s = *in[0];
  CheckCausalMaskInput(node, s.shape);
  const int64_t t = s.dim(-1);
  const int64_t blocks = s.numel() / (t * t);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t n = 0; n < blocks; ++n) {
    for (int64_t i = 0; i < t; ++i) {
      const float* src = s.ptr() + (n * t + i) * t;
      float* dst = out.ptr() + (n * t + i) * t;
      std::copy_n(src, i + 1, dst);
      std::fill(dst + i + 1, dst + t, kNegInf);
    }
  }
}

void CausalMaskBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                        const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const int64_t t = dout.dim(-1);
  const int64_t blocks = dout.numel() / (t * t);
  for (int64_t n = 0; n < blocks; ++n) {
    for (int64_t i = 0; i < t; ++i) {
      const float* src = dout.ptr() + (n * t + i) * t;
      float* dst = din[0]->ptr() + (n * t + i) * t;
      for (int64_t j = 0; j <= i; ++j) dst[j] += src[j];
    }
  }
}

}  // namespace hetsynth::runtime::cpu
