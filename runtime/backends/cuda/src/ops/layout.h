// GPU layout operators: embedding, flatten, reshape, transpose, concat and slice (contracts in
// ops.h; semantics exactly those of cpu/src/layout.cc).
//
// Like the CPU kernels, each views its tensors as a few flat blocks ([outer, axis, inner] for
// concat and slice, [P, A, M, B, Q] for a transpose of dims A and B), and each backward is the
// same move in the other direction, adding instead of assigning as the din contract asks.
//
// Embedding ids: the CPU kernel aborts (HS_CHECK) on an id that is not an integer in
// [0, vocab). The ids live in device memory here, so checking them costs a read-back and with
// it a stream synchronization. HostExec checks them always (free) and GpuExec only in debug
// builds (NDEBUG unset); an unchecked invalid id gives a zero output row and no gradient.
#pragma once

#include <algorithm>
#include <string>
#include <utility>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "ops/layout_kernels.h"
#include "ops/ops.h"

namespace hetsynth::runtime::gpu {
namespace layout_detail {

using cpu::NormAxis;
using cpu::Product;
using cpu::SliceDims;
using cpu::TableRows;

// cpu::GetTableRows, for a table checked to be rank 2 first.
inline TableRows GetTableRows(const ir::Node& node, const KernelContext& ctx, const ir::Shape& table) {
  HS_CHECK(table.size() == 2, StrCat("embedding '", node.name, "': table has shape ", ir::ShapeString(table),
                                     "; expected rank 2"));
  return cpu::GetTableRows(node, ctx, table);
}

// Whether EmbeddingForward reads back the ids check (see the top of this file).
template <class X>
constexpr bool kCheckIds =
#if defined(NDEBUG)
    !X::kOnGpu;
#else
    true;
#endif

// Transpose of dims a < b viewed as src[P, A, M, B, Q] → dst[P, B, M, A, Q].
struct SwapDims {
  int64_t p, a, m, b, q;
};

inline SwapDims GetSwapDims(const ir::Node& node, const ir::Shape& x) {
  const int64_t r = static_cast<int64_t>(x.size());
  int64_t d0 = NormAxis(node, node.attrs.axis, r);
  int64_t d1 = NormAxis(node, node.attrs.axis2, r);
  if (d0 > d1) std::swap(d0, d1);
  if (d0 == d1) return {1, 1, 1, 1, ir::NumElements(x)};  // no-op transpose: one contiguous copy
  return {Product(x, 0, d0), x[static_cast<size_t>(d0)], Product(x, d0 + 1, d1), x[static_cast<size_t>(d1)],
          Product(x, d1 + 1, r)};
}

// The walk over dst[P, B, M, A, Q] (row-major) with the strides of src[P, A, M, B, Q]. The
// inverse move is the same function on {p, b, m, a, q}, which is how backward runs.
inline Walk SwapWalk(const SwapDims& d) {
  Walk w;
  w.nd = 5;
  const int64_t dims[5] = {d.p, d.b, d.m, d.a, d.q};
  const int64_t stride[5] = {d.a * d.m * d.b * d.q, d.q, d.b * d.q, d.m * d.b * d.q, 1};
  for (int k = 0; k < 5; ++k) w.dims[k] = dims[k], w.stride[k] = stride[k];
  return w;
}

// cpu::GetSliceDims, for an output checked to have the input's rank first.
inline SliceDims GetSliceDims(const ir::Node& node, const ir::Shape& x, const ir::Shape& y) {
  NormAxis(node, node.attrs.axis, static_cast<int64_t>(x.size()));
  HS_CHECK(y.size() == x.size(), StrCat("slice '", node.name, "': output ", ir::ShapeString(y), " for input ",
                                        ir::ShapeString(x)));
  return cpu::GetSliceDims(node, x, y);
}

template <class X>
void CheckSameCount(const ir::Node& node, const typename X::Tensor& a, const typename X::Tensor& b) {
  HS_CHECK(a.numel() == b.numel(), StrCat("'", node.name, "': ", ir::ShapeString(a.shape), " and ",
                                          ir::ShapeString(b.shape), " differ in element count"));
}

}  // namespace layout_detail

// out[n, :] = table[ids[n], :]; with a table piece, rows the piece lacks stay zero.
template <class X>
void EmbeddingForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                      Saved<X>& saved) {
  namespace d = layout_detail;
  const auto& ids = *in[0];
  const auto& table = *in[1];
  const d::TableRows rows = d::GetTableRows(node, ctx, table.shape);
  const int64_t c = table.dim(1);
  HS_CHECK(out.numel() == ids.numel() * c, StrCat("embedding '", node.name, "': output ", ir::ShapeString(out.shape),
                                                  " for ids ", ir::ShapeString(ids.shape)));
  if constexpr (d::kCheckIds<X>) {
    typename X::Tensor bad = x.Make({1});
    x.For(ids.numel(), EmbeddingCheckIds{ids.ptr(), bad.ptr(), rows.vocab});
    const float count = x.Read(bad.ptr());
    HS_CHECK(count == 0.0f, StrCat("embedding '", node.name, "': ", count, " of ", ids.numel(),
                                   " ids are not row indices in [0, ", rows.vocab, ")"));
  }
  if (c == 0) return;
  x.For(out.numel(), EmbeddingFwd{ids.ptr(), table.ptr(), out.ptr(), c, rows.first, rows.count, rows.vocab});
}

// Scatter-add: a token that occurs twice gets both rows' gradients; with a table piece, only
// the ids among its rows get one.
template <class X>
void EmbeddingBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                       const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[1]) return;
  const auto& ids = *in[0];
  const layout_detail::TableRows rows = layout_detail::GetTableRows(node, ctx, in[1]->shape);
  const int64_t c = in[1]->dim(1);
  if (c == 0) return;
  x.For(ids.numel() * c,
        EmbeddingBwd{ids.ptr(), dout.ptr(), din[1]->ptr(), c, rows.first, rows.count, rows.vocab});
}

template <class X>
void FlattenForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                    Saved<X>& saved) {
  layout_detail::CheckSameCount<X>(node, *in[0], out);
  x.Copy(out.ptr(), in[0]->ptr(), out.numel());
}

template <class X>
void FlattenBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                     const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  layout_detail::CheckSameCount<X>(node, *din[0], dout);
  x.For(dout.numel(), LayoutAddInto{dout.ptr(), din[0]->ptr()});
}

// The output is already shaped (by the executor's node.attrs.shape or the graph's); only the
// element counts must agree.
template <class X>
void ReshapeForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                    Saved<X>& saved) {
  layout_detail::CheckSameCount<X>(node, *in[0], out);
  x.Copy(out.ptr(), in[0]->ptr(), out.numel());
}

template <class X>
void ReshapeBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                     const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  layout_detail::CheckSameCount<X>(node, *din[0], dout);
  x.For(dout.numel(), LayoutAddInto{dout.ptr(), din[0]->ptr()});
}

template <class X>
void TransposeForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                      Saved<X>& saved) {
  layout_detail::CheckSameCount<X>(node, *in[0], out);
  const layout_detail::SwapDims d = layout_detail::GetSwapDims(node, in[0]->shape);
  x.For(out.numel(), LayoutGatherWalk{in[0]->ptr(), out.ptr(), layout_detail::SwapWalk(d), false});
}

template <class X>
void TransposeBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                       const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  layout_detail::CheckSameCount<X>(node, *din[0], dout);
  layout_detail::SwapDims d = layout_detail::GetSwapDims(node, in[0]->shape);
  std::swap(d.a, d.b);
  x.For(dout.numel(), LayoutGatherWalk{dout.ptr(), din[0]->ptr(), layout_detail::SwapWalk(d), true});
}

// Inputs are [outer, n_i, inner] blocks laid side by side in out[outer, Σ n_i, inner]: one
// launch per input.
template <class X>
void ConcatForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                   Saved<X>& saved) {
  const int64_t axis = layout_detail::NormAxis(node, node.attrs.axis, out.rank());
  const int64_t outer = layout_detail::Product(out.shape, 0, axis);
  if (outer == 0) return;
  const int64_t row = out.numel() / outer;  // out's elements per outer index
  int64_t offset = 0;
  for (const auto* t : in) offset += t->numel() / outer;
  cpu::CheckConcatFill(node, offset, row, out.shape);
  offset = 0;
  for (const auto* t : in) {
    const int64_t chunk = t->numel() / outer;
    if (chunk > 0) x.For(t->numel(), LayoutBlockMove{t->ptr(), out.ptr(), chunk, chunk, 0, row, offset, false});
    offset += chunk;
  }
}

template <class X>
void ConcatBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                    const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  const int64_t axis = layout_detail::NormAxis(node, node.attrs.axis, dout.rank());
  const int64_t outer = layout_detail::Product(dout.shape, 0, axis);
  if (outer == 0) return;
  const int64_t row = dout.numel() / outer;
  int64_t offset = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const int64_t chunk = in[i]->numel() / outer;
    if (din[i] && chunk > 0) {
      x.For(in[i]->numel(), LayoutBlockMove{dout.ptr(), din[i]->ptr(), chunk, row, offset, chunk, 0, true});
    }
    offset += chunk;
  }
}

template <class X>
void SliceForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                  Saved<X>& saved) {
  const layout_detail::SliceDims d = layout_detail::GetSliceDims(node, in[0]->shape, out.shape);
  if (d.len == 0) return;
  x.For(d.outer * d.len, LayoutBlockMove{in[0]->ptr(), out.ptr(), d.len, d.x_row, d.begin, d.len, 0, false});
}

// The gradient goes to the sliced block of din; the rest of din is left as it is.
template <class X>
void SliceBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                   const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  const layout_detail::SliceDims d = layout_detail::GetSliceDims(node, in[0]->shape, dout.shape);
  if (d.len == 0) return;
  x.For(d.outer * d.len, LayoutBlockMove{dout.ptr(), din[0]->ptr(), d.len, d.len, 0, d.x_row, d.begin, true});
}

}  // namespace hetsynth::runtime::gpu
