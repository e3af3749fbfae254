// GPU convolution and pooling on NCHW tensors (contracts in ops.h; semantics exactly those of
// cpu/src/conv.cc).
//
// Conv2d lowers a chunk of images to a column matrix (ConvIm2Col) so that forward, dW and the
// column gradient are each one Gemm per chunk; the column gradient goes back onto the input with
// a gather (ConvCol2Im). As on the CPU the columns are rebuilt in backward rather than saved. A
// 1×1, stride-1, unpadded convolution uses the images themselves as columns for forward and dx
// (one strided-batched Gemm).
//
// A grouped convolution (groups > 1) keeps the same column matrix: group j's input channels are
// the contiguous row block j of the columns, its filters the contiguous block j of the weight
// [co, ci/groups·k·k] and its outputs the row block j of the [co, m·pixels] product, so every
// Gemm above becomes one strided-batched Gemm over the groups (ConvIm2Col, ConvCol2Im and the
// image/matrix gathers are unchanged). Grouped 1×1 convolutions go through the columns too.
//
// Max pooling (−inf padding, less than the window) saves its argmax (as float) like the CPU
// kernel; average pooling (zero padding) needs nothing saved. Both take their output size from
// the output's shape (ceil_mode only adds windows, checked by CheckPool2d).
#pragma once

#include <algorithm>

#include "exec/gemm_args.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "ops/conv_kernels.h"
#include "ops/ops.h"

namespace hetsynth::runtime::gpu {
namespace conv_internal {

// Most column-matrix entries built at once (64 MiB of floats): as many images go into one chunk
// as fit, so that the Gemms are wide, while the column buffers stay bounded.
constexpr int64_t kMaxColumnEntries = int64_t{1} << 24;

struct ConvDims {
  int64_t batch = 0;
  int64_t groups = 1;
  ConvGeom g;
  int64_t rows() const { return g.ci * g.k * g.k; }
  // One group's: column rows (its input channels' taps) and output channels.
  int64_t group_rows() const { return rows() / groups; }
  int64_t group_co() const { return g.co / groups; }
  int64_t pixels() const { return g.ho * g.wo; }
  bool identity_columns() const { return g.k == 1 && g.stride == 1 && g.pad == 0 && groups == 1; }
  int64_t images_per_chunk() const {
    const int64_t per_image = std::max<int64_t>(rows() * pixels(), 1);
    return std::clamp<int64_t>(kMaxColumnEntries / per_image, 1, std::max<int64_t>(batch, 1));
  }
};

// cpu::ReadConvShape's checks and sizes, as ConvGeom.
template <class T>
ConvDims ReadConvDims(const ir::Node& node, std::span<const T* const> in, const T& y) {
  const cpu::ConvShape c = cpu::ReadConvShape(node, in[0]->shape, in[1]->shape, y.shape,
                                              in.size() > 2 ? &in[2]->shape : nullptr);
  ConvDims d;
  d.batch = c.batch;
  d.groups = c.groups;
  d.g.ci = c.ci;
  d.g.h = c.h;
  d.g.w = c.w;
  d.g.co = c.co;
  d.g.k = c.k;
  d.g.stride = c.stride;
  d.g.pad = c.pad;
  d.g.ho = c.ho;
  d.g.wo = c.wo;
  return d;
}

}  // namespace conv_internal

template <class X>
void Conv2dForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                   Saved<X>& saved) {
  const conv_internal::ConvDims d = conv_internal::ReadConvDims(node, in, out);
  const ConvGeom& g = d.g;
  const float* wt = in[1]->ptr();
  const float* bias = in.size() > 2 ? in[2]->ptr() : nullptr;
  const int64_t np = d.pixels(), x_size = g.ci * g.h * g.w, y_size = g.co * np;
  if (d.batch == 0 || np == 0) return;
  if (d.identity_columns()) {
    // Image b is its own [ci, pixels] column matrix: y_b = W · x_b for every b in one call.
    GemmArgs ga{.m = g.co, .n = np, .k = g.ci, .batch = d.batch, .stride_a = 0, .stride_b = x_size,
                .stride_c = y_size};
    x.Gemm(ga, wt, in[0]->ptr(), out.ptr());
    if (bias) x.For(out.numel(), ConvAddBias{g.co, np, bias, out.ptr()});
    return;
  }
  const int64_t chunk = d.images_per_chunk();
  typename X::Tensor col = x.Make({d.rows(), chunk * np});
  typename X::Tensor ymat = x.Make({chunk > 1 ? g.co * chunk * np : 0});
  for (int64_t b0 = 0; b0 < d.batch; b0 += chunk) {
    const int64_t m = std::min(chunk, d.batch - b0), ld = m * np;
    x.For(d.rows() * ld, ConvIm2Col{g, m, in[0]->ptr() + b0 * x_size, col.ptr()});
    float* yb = out.ptr() + b0 * y_size;
    // With one image the [co, pixels] product is the output image itself.
    float* mat = m == 1 ? yb : ymat.ptr();
    // Per group j: mat[j] = W[j] · col[j] (one call with groups == 1).
    const int64_t gr = d.group_rows(), gco = d.group_co();
    x.Gemm(GemmArgs{.m = gco, .n = ld, .k = gr, .batch = d.groups, .stride_a = gco * gr, .stride_b = gr * ld,
                    .stride_c = gco * ld},
           wt, col.ptr(), mat);
    if (m > 1) {
      x.For(m * y_size, ConvMatToImages{g, m, mat, bias, yb});
    } else if (bias) {
      x.For(y_size, ConvAddBias{g.co, np, bias, yb});
    }
  }
}

template <class X>
void Conv2dBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                    const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  const conv_internal::ConvDims d = conv_internal::ReadConvDims(node, in, dout);
  const ConvGeom& g = d.g;
  typename X::Tensor* dx = din[0];
  typename X::Tensor* dw = din[1];
  typename X::Tensor* db = din.size() > 2 ? din[2] : nullptr;
  const float* wt = in[1]->ptr();
  const int64_t np = d.pixels(), x_size = g.ci * g.h * g.w, y_size = g.co * np;
  if (db) x.For(g.co, ConvBiasGrad{d.batch, g.co, np, dout.ptr(), db->ptr()});
  if ((!dw && !dx) || d.batch == 0 || np == 0) return;
  const bool direct = d.identity_columns();
  if (dx && direct) {
    // dx_b += Wᵀ · dy_b for every image b in one call.
    GemmArgs ga{.trans_a = true, .m = g.ci, .n = np, .k = g.co, .beta = 1.0f, .batch = d.batch,
                .stride_a = 0, .stride_b = y_size, .stride_c = x_size};
    x.Gemm(ga, wt, dout.ptr(), dx->ptr());
    if (!dw) return;
  }
  const int64_t chunk = d.images_per_chunk();
  const int64_t gr = d.group_rows(), gco = d.group_co();
  const bool need_dcol = dx && !direct;
  typename X::Tensor col = x.Make({dw ? d.rows() * chunk * np : 0});
  typename X::Tensor dcol = x.Make({need_dcol ? d.rows() * chunk * np : 0});
  typename X::Tensor gmat = x.Make({chunk > 1 ? g.co * chunk * np : 0});
  for (int64_t b0 = 0; b0 < d.batch; b0 += chunk) {
    const int64_t m = std::min(chunk, d.batch - b0), ld = m * np;
    // dy of these images as one [co, m·pixels] matrix (with one image: dy itself).
    const float* gb = dout.ptr() + b0 * y_size;
    if (m > 1) {
      x.For(g.co * ld, ConvImagesToMat{g, m, gb, gmat.ptr()});
      gb = gmat.ptr();
    }
    if (dw) {
      x.For(d.rows() * ld, ConvIm2Col{g, m, in[0]->ptr() + b0 * x_size, col.ptr()});
      // dW[j] += dy[j] · col[j]ᵀ per group j
      x.Gemm(GemmArgs{.trans_b = true, .m = gco, .n = gr, .k = ld, .beta = 1.0f, .batch = d.groups,
                      .stride_a = gco * ld, .stride_b = gr * ld, .stride_c = gco * gr},
             gb, col.ptr(), dw->ptr());
    }
    if (need_dcol) {
      // dcol[j] = W[j]ᵀ · dy[j] per group j, then each input element gathers the column entries
      // read from it.
      x.Gemm(GemmArgs{.trans_a = true, .m = gr, .n = ld, .k = gco, .batch = d.groups, .stride_a = gco * gr,
                      .stride_b = gco * ld, .stride_c = gr * ld},
             wt, gb, dcol.ptr());
      x.For(m * x_size, ConvCol2Im{g, m, dcol.ptr(), dx->ptr() + b0 * x_size});
    }
  }
}

// Saved: the argmax of each window as an index into its (batch, channel) plane of x, as float.
template <class X>
void MaxPool2dForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                      Saved<X>& saved) {
  const auto& xin = *in[0];
  const int64_t k = node.attrs.kernel, s = node.attrs.stride, p = node.attrs.padding;
  cpu::CheckPool2d(node, xin.shape, out.shape);
  saved.tensors.clear();
  saved.tensors.push_back(x.Make(out.shape));
  x.For(out.numel(), MaxPoolFwd{xin.dim(2), xin.dim(3), out.dim(2), out.dim(3), k, s, p, xin.ptr(), out.ptr(),
                                saved.tensors[0].ptr()});
}

template <class X>
void MaxPool2dBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                       const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  cpu::CheckMaxPool2dSaved(node, saved.tensors, dout.shape);
  const auto& xin = *in[0];
  x.For(xin.numel(), MaxPoolBwd{xin.dim(2), xin.dim(3), dout.dim(2), dout.dim(3), node.attrs.kernel,
                                node.attrs.stride, node.attrs.padding, dout.ptr(), saved.tensors[0].ptr(),
                                din[0]->ptr()});
}

template <class X>
void AdaptiveAvgPool2dForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                              typename X::Tensor& out, Saved<X>& saved) {
  const auto& xin = *in[0];
  cpu::CheckAdaptiveAvgPool2d(node, xin.shape, out.shape);
  x.For(out.numel(), AdaptiveAvgPoolFwd{xin.dim(2), xin.dim(3), out.dim(2), out.dim(3), xin.ptr(), out.ptr()});
}

template <class X>
void AdaptiveAvgPool2dBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in,
                               const typename X::Tensor& out, const typename X::Tensor& dout, const Saved<X>& saved,
                               TDIn<X> din) {
  if (!din[0]) return;
  const auto& xin = *in[0];
  x.For(xin.numel(),
        AdaptiveAvgPoolBwd{xin.dim(2), xin.dim(3), dout.dim(2), dout.dim(3), dout.ptr(), din[0]->ptr()});
}

namespace conv_internal {
inline AvgPoolGeom ReadAvgPoolGeom(const ir::Node& node, const ir::Shape& x, const ir::Shape& y) {
  return AvgPoolGeom{x[2], x[3], y[2], y[3], node.attrs.kernel, node.attrs.stride, node.attrs.padding,
                     node.attrs.count_include_pad};
}
}  // namespace conv_internal

template <class X>
void AvgPool2dForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                      Saved<X>& saved) {
  const auto& xin = *in[0];
  cpu::CheckPool2d(node, xin.shape, out.shape);
  x.For(out.numel(), AvgPoolFwd{conv_internal::ReadAvgPoolGeom(node, xin.shape, out.shape), xin.ptr(), out.ptr()});
}

template <class X>
void AvgPool2dBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                       const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  const auto& xin = *in[0];
  cpu::CheckPool2d(node, xin.shape, dout.shape);
  x.For(xin.numel(),
        AvgPoolBwd{conv_internal::ReadAvgPoolGeom(node, xin.shape, dout.shape), dout.ptr(), din[0]->ptr()});
}

}  // namespace hetsynth::runtime::gpu
