// Layout CPU kernels: embedding, flatten, reshape, transpose, concat and slice.
//
// None of these compute anything; they move rows. Each views its tensors as a few flat blocks
// ([outer, axis, inner] for concat and slice, [P, A, M, B, Q] for a transpose of dims A and B)
// so the inner copies run over contiguous memory, and each backward is the same move in the
// other direction, adding instead of assigning as the din contract asks.
#include <algorithm>
#include <cmath>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "ops.h"

namespace hetsynth::runtime::cpu {

namespace {

void AddInto(const float* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace

// out[n, :] = table[ids[n], :]; with a table piece, rows the piece lacks stay zero.
void EmbeddingForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                      SavedState& saved) {
  const Tensor& ids = *in[0];
  const Tensor& table = *in[1];
  const TableRows rows = GetTableRows(node, ctx, table.shape);
  const int64_t c = table.dim(1);
  for (int64_t n = 0; n < ids.numel(); ++n) {
    const float id = ids.data[n];
    HS_CHECK(id >= 0.0f && id < static_cast<float>(rows.vocab) && id == std::floor(id),
             StrCat("embedding '", node.name, "': id ", id, " at position ", n,
                    " is not a row index in [0, ", rows.vocab, ")"));
    const int64_t r = static_cast<int64_t>(id) - rows.first;
    float* dst = out.ptr() + n * c;
    if (r < 0 || r >= rows.count) {
      std::fill(dst, dst + c, 0.0f);
      continue;
    }
    const float* row = table.ptr() + r * c;
    std::copy(row, row + c, dst);
  }
}

// Scatter-add: a token that occurs twice gets both rows' gradients; with a table piece, only
// the ids among its rows get one.
void EmbeddingBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                       const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[1]) return;
  const Tensor& ids = *in[0];
  const TableRows rows = GetTableRows(node, ctx, in[1]->shape);
  const int64_t c = in[1]->dim(1);
  for (int64_t n = 0; n < ids.numel(); ++n) {
    const int64_t r = static_cast<int64_t>(ids.data[n]) - rows.first;
    if (r < 0 || r >= rows.count) continue;
    AddInto(dout.ptr() + n * c, din[1]->ptr() + r * c, c);
  }
}

void FlattenForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                    SavedState& saved) {
  std::copy(in[0]->data.begin(), in[0]->data.end(), out.data.begin());
}

void FlattenBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                     const Tensor& dout, const SavedState& saved, DIn din) {
  if (din[0]) AddInto(dout.ptr(), din[0]->ptr(), dout.numel());
}

void ReshapeForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                    SavedState& saved) {
  std::copy(in[0]->data.begin(), in[0]->data.end(), out.data.begin());
}

void ReshapeBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                     const Tensor& dout, const SavedState& saved, DIn din) {
  if (din[0]) AddInto(dout.ptr(), din[0]->ptr(), dout.numel());
}

namespace {

// A transpose of dims a < b viewed as src[P, A, M, B, Q] → dst[P, B, M, A, Q]: P, M and Q are
// the products of the dims before a, between a and b, and after b.
struct SwapDims {
  int64_t p, a, m, b, q;
};

SwapDims GetSwapDims(const ir::Node& node, const Tensor& x) {
  int64_t d0 = NormAxis(node, node.attrs.axis, x.rank());
  int64_t d1 = NormAxis(node, node.attrs.axis2, x.rank());
  if (d0 > d1) std::swap(d0, d1);
  const int64_t r = x.rank();
  if (d0 == d1) return {1, 1, 1, 1, x.numel()};  // no-op transpose: one contiguous copy
  return {Product(x.shape, 0, d0), x.dim(d0), Product(x.shape, d0 + 1, d1), x.dim(d1),
          Product(x.shape, d1 + 1, r)};
}

// dst[p, b, m, a, q] (+)= src[p, a, m, b, q]. The inverse move is the same function on
// {p, b, m, a, q}, which is how backward runs.
template <bool kAccumulate>
void SwapAxes(const float* src, float* dst, const SwapDims& d) {
  auto put = [](float& y, float v) { y = kAccumulate ? y + v : v; };
  const int64_t src_a = d.m * d.b * d.q, src_b = d.q;  // strides in src
  const int64_t dst_b = d.m * d.a * d.q, dst_a = d.q;  // strides in dst
  for (int64_t p = 0; p < d.p; ++p) {
    for (int64_t m = 0; m < d.m; ++m) {
      const float* s = src + p * d.a * src_a + m * d.b * d.q;
      float* t = dst + p * d.b * dst_b + m * d.a * d.q;
      if (d.q == 1) {
        // A plain 2-D transpose per (p, m), e.g. [B, X, Y] → [B, Y, X]: tiles keep both the
        // strided reads and the strided writes within a few cache lines.
        constexpr int64_t kTile = 32;
        for (int64_t a0 = 0; a0 < d.a; a0 += kTile) {
          const int64_t a1 = std::min(d.a, a0 + kTile);
          for (int64_t b0 = 0; b0 < d.b; b0 += kTile) {
            const int64_t b1 = std::min(d.b, b0 + kTile);
            for (int64_t a = a0; a < a1; ++a) {
              for (int64_t b = b0; b < b1; ++b) put(t[b * dst_b + a], s[a * src_a + b]);
            }
          }
        }
      } else {
        for (int64_t a = 0; a < d.a; ++a) {
          for (int64_t b = 0; b < d.b; ++b) {
            const float* sr = s + a * src_a + b * src_b;
            float* tr = t + b * dst_b + a * dst_a;
            for (int64_t q = 0; q < d.q; ++q) put(tr[q], sr[q]);
          }
        }
      }
    }
  }
}

}  // namespace

void TransposeForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                      SavedState& saved) {
  SwapAxes<false>(in[0]->ptr(), out.ptr(), GetSwapDims(node, *in[0]));
}

void TransposeBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                       const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  SwapDims d = GetSwapDims(node, *in[0]);
  std::swap(d.a, d.b);
  SwapAxes<true>(dout.ptr(), din[0]->ptr(), d);
}

// Inputs are [outer, n_i, inner] blocks laid side by side in out[outer, Σ n_i, inner].
void ConcatForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                   SavedState& saved) {
  const int64_t axis = NormAxis(node, node.attrs.axis, out.rank());
  const int64_t outer = Product(out.shape, 0, axis);
  const int64_t row = out.numel() / outer;  // out's elements per outer index
  int64_t offset = 0;
  for (const Tensor* t : in) {
    const int64_t chunk = t->numel() / outer;
    for (int64_t o = 0; o < outer; ++o) {
      const float* s = t->ptr() + o * chunk;
      std::copy(s, s + chunk, out.ptr() + o * row + offset);
    }
    offset += chunk;
  }
  CheckConcatFill(node, offset, row, out.shape);
}

void ConcatBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                    const Tensor& dout, const SavedState& saved, DIn din) {
  const int64_t axis = NormAxis(node, node.attrs.axis, dout.rank());
  const int64_t outer = Product(dout.shape, 0, axis);
  const int64_t row = dout.numel() / outer;
  int64_t offset = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const int64_t chunk = in[i]->numel() / outer;
    if (din[i]) {
      for (int64_t o = 0; o < outer; ++o) {
        AddInto(dout.ptr() + o * row + offset, din[i]->ptr() + o * chunk, chunk);
      }
    }
    offset += chunk;
  }
}

void SliceForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                  SavedState& saved) {
  const SliceDims d = GetSliceDims(node, in[0]->shape, out.shape);
  for (int64_t o = 0; o < d.outer; ++o) {
    const float* s = in[0]->ptr() + o * d.x_row + d.begin;
    std::copy(s, s + d.len, out.ptr() + o * d.len);
  }
}

void SliceBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                   const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const SliceDims d = GetSliceDims(node, in[0]->shape, dout.shape);
  for (int64_t o = 0; o < d.outer; ++o) {
    AddInto(dout.ptr() + o * d.len, din[0]->ptr() + o * d.x_row + d.begin, d.len);
  }
}

}  // namespace hetsynth::runtime::cpu
