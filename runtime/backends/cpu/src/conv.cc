// 2-D convolution and pooling on NCHW tensors, with PyTorch's semantics.
//
// Conv2d lowers images to a column matrix (im2col: one row per (input channel, kernel row,
// kernel column), one column per output pixel) so that forward, dW and dx are each one Gemm
// per chunk of images. The columns are rebuilt in backward rather than kept, because for a
// VGG layer they are kernel² times the size of the input. A 1×1, stride-1, unpadded
// convolution of a large image uses the image itself as its column matrix. Max pooling saves
// its argmax so that backward routes each gradient to exactly the element forward picked.
#include <algorithm>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "hetsynth/runtime/ops/pool_window.h"
#include "ops.h"

namespace hetsynth::runtime::cpu {

namespace {

// ConvShape with the column-matrix sizes.
struct ConvDims : ConvShape {
  int64_t rows() const { return ci * k * k; }  // column-matrix rows
  int64_t pixels() const { return ho * wo; }   // column-matrix columns
  bool identity_columns() const { return k == 1 && stride == 1 && pad == 0; }
};

ConvDims ReadConvDims(const ir::Node& node, In in, const Tensor& y) {
  return {ReadConvShape(node, in[0]->shape, in[1]->shape, y.shape,
                        in.size() > 2 ? &in[2]->shape : nullptr)};
}

// The output columns [lo, hi) whose input column ow·stride − pad + kw lies inside [0, w).
void ValidColumns(const ConvDims& g, int64_t kw, int64_t* lo, int64_t* hi) {
  const int64_t first = g.pad - kw;  // smallest ow·stride that lands on column 0
  *lo = first <= 0 ? 0 : (first + g.stride - 1) / g.stride;
  const int64_t last = g.w - 1 + g.pad - kw;  // largest ow·stride that stays inside
  *hi = last < 0 ? 0 : std::min(g.wo, last / g.stride + 1);
  *lo = std::min(*lo, *hi);
}

// Writes one image x[ci, h, w] as `pixels` columns of col (rows of length `ld`); padding
// reads as zero.
void Im2Col(const ConvDims& g, const float* x, float* col, int64_t ld) {
  for (int64_t c = 0; c < g.ci; ++c) {
    for (int64_t kh = 0; kh < g.k; ++kh) {
      for (int64_t kw = 0; kw < g.k; ++kw) {
        float* row = col + ((c * g.k + kh) * g.k + kw) * ld;
        int64_t lo, hi;
        ValidColumns(g, kw, &lo, &hi);
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          float* r = row + oh * g.wo;
          const int64_t ih = oh * g.stride - g.pad + kh;
          if (ih < 0 || ih >= g.h) {
            std::fill(r, r + g.wo, 0.0f);
            continue;
          }
          // May be negative; only base + ow·stride for ow in [lo, hi) is dereferenced.
          const int64_t base = (c * g.h + ih) * g.w - g.pad + kw;
          std::fill(r, r + lo, 0.0f);
          for (int64_t ow = lo; ow < hi; ++ow) r[ow] = x[base + ow * g.stride];
          std::fill(r + hi, r + g.wo, 0.0f);
        }
      }
    }
  }
}

// The adjoint of Im2Col: adds every column entry back onto the input pixel it was read from.
void Col2ImAdd(const ConvDims& g, const float* col, int64_t ld, float* dx) {
  for (int64_t c = 0; c < g.ci; ++c) {
    for (int64_t kh = 0; kh < g.k; ++kh) {
      for (int64_t kw = 0; kw < g.k; ++kw) {
        const float* row = col + ((c * g.k + kh) * g.k + kw) * ld;
        int64_t lo, hi;
        ValidColumns(g, kw, &lo, &hi);
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          const int64_t ih = oh * g.stride - g.pad + kh;
          if (ih < 0 || ih >= g.h) continue;
          const float* r = row + oh * g.wo;
          const int64_t base = (c * g.h + ih) * g.w - g.pad + kw;
          for (int64_t ow = lo; ow < hi; ++ow) dx[base + ow * g.stride] += r[ow];
        }
      }
    }
  }
}

// Images lowered together into one column matrix. Deep VGG layers on 32×32 inputs have 4×4
// and 2×2 outputs, and a Gemm only 4 or 16 columns wide runs at a fraction of its speed, so
// small images are batched until the matrix is about kMinColumns wide; large ones go alone
// to keep the column buffer near the size of one image's.
//
// Eigen's bits for a column depend on the matrix's width and the column's place in it, so an
// image lowered beside other neighbours than on one device comes out a rounding different — and
// batch norm's kinks downstream can turn roundings into different gradients. With
// KernelContext::one_device_bits, chunks are cut in the whole batch, not in the piece a rank
// holds: a piece holding images [first, first + batch) of `total` runs the whole batch's chunks
// that meet it, each as wide as on one device, its own images in their one-device columns and
// zero columns for the images it lacks (up to two partial chunks per piece; on a 1×1 map a chunk
// is the whole batch). Otherwise a piece chunks its own images.
constexpr int64_t kMinColumns = 256;
struct Chunks {
  int64_t per = 1;    // images per chunk (the last chunk of the whole batch may hold fewer)
  int64_t first = 0;  // the piece's first image in the whole batch
  int64_t total = 0;  // images in the whole batch
};
Chunks ChunksOf(const ConvDims& g, int64_t first, int64_t total) {
  return {std::clamp<int64_t>((kMinColumns + g.pixels() - 1) / g.pixels(), 1, total), first, total};
}
// One chunk of the whole batch as a piece sees it: `width` images in the matrix, of which the
// piece holds `count`, its images [local, local + count) at slots [slot, slot + count).
struct Chunk {
  int64_t width, slot, local, count;
  bool partial() const { return count < width; }
};
template <class F>
void ForEachChunk(const Chunks& c, int64_t batch, F&& f) {
  for (int64_t c0 = c.first - c.first % c.per; c0 < c.first + batch; c0 += c.per) {
    const int64_t width = std::min(c.per, c.total - c0);
    const int64_t lo = std::max(c0, c.first), hi = std::min(c0 + width, c.first + batch);
    f(Chunk{width, lo - c0, lo - c.first, hi - lo});
  }
}

// Gathers the [co, pixels] outputs of `count` consecutive NCHW images into slots [slot, slot +
// count) of a [co, width·pixels] matrix, slot i in columns [i·pixels, (i+1)·pixels).
void ImagesToMatrix(const ConvDims& g, const Chunk& k, const float* nchw, float* mat) {
  const int64_t np = g.pixels(), ld = k.width * np;
  for (int64_t i = 0; i < k.count; ++i) {
    for (int64_t o = 0; o < g.co; ++o) {
      std::copy_n(nchw + (i * g.co + o) * np, np, mat + o * ld + (k.slot + i) * np);
    }
  }
}

// The inverse of ImagesToMatrix.
void MatrixToImages(const ConvDims& g, const Chunk& k, const float* mat, float* nchw) {
  const int64_t np = g.pixels(), ld = k.width * np;
  for (int64_t i = 0; i < k.count; ++i) {
    for (int64_t o = 0; o < g.co; ++o) {
      std::copy_n(mat + o * ld + (k.slot + i) * np, np, nchw + (i * g.co + o) * np);
    }
  }
}

// The column matrix of chunk k: its images' columns lowered into their slots, zeros for the
// slots the piece lacks.
void LowerChunk(const ConvDims& g, const Chunk& k, const float* x, float* col) {
  const int64_t np = g.pixels(), x_size = g.ci * g.h * g.w, ld = k.width * np;
  if (k.partial()) std::fill(col, col + g.rows() * ld, 0.0f);
  for (int64_t i = 0; i < k.count; ++i) Im2Col(g, x + i * x_size, col + (k.slot + i) * np, ld);
}

// One ungrouped convolution over raw NCHW arrays (g.groups is ignored), its images chunked as
// `c` says: y = conv(x, wt), and in backward dw += and dx += (either may be null).
void DenseForward(const ConvDims& g, const Chunks& c, const float* x, const float* wt, float* out) {
  const int64_t np = g.pixels(), x_size = g.ci * g.h * g.w, y_size = g.co * np;
  const bool direct = g.identity_columns() && c.per == 1;
  std::vector<float> col(direct ? 0 : g.rows() * c.per * np);
  std::vector<float> y(c.per > 1 ? g.co * c.per * np : 0);
  ForEachChunk(c, g.batch, [&](const Chunk& k) {
    const int64_t ld = k.width * np;
    const float* cols = x + k.local * x_size;
    if (!direct) {
      LowerChunk(g, k, cols, col.data());
      cols = col.data();
    }
    float* yb = out + k.local * y_size;
    if (k.width == 1) {
      Gemm(false, false, g.co, np, g.rows(), 1.0f, wt, cols, 0.0f, yb);
    } else {
      Gemm(false, false, g.co, ld, g.rows(), 1.0f, wt, cols, 0.0f, y.data());
      MatrixToImages(g, k, y.data(), yb);
    }
  });
}

void DenseBackward(const ConvDims& g, const Chunks& c, const float* x, const float* wt, const float* dout, float* dx,
                   float* dw) {
  if (!dw && !dx) return;
  const int64_t np = g.pixels(), x_size = g.ci * g.h * g.w, y_size = g.co * np;
  const bool direct = g.identity_columns() && c.per == 1;
  std::vector<float> col((dw && !direct) ? g.rows() * c.per * np : 0);
  std::vector<float> dcol((dx && !direct) ? g.rows() * c.per * np : 0);
  std::vector<float> gmat(c.per > 1 ? g.co * c.per * np : 0);
  ForEachChunk(c, g.batch, [&](const Chunk& k) {
    const int64_t ld = k.width * np;
    // dout of these images as one [co, width·pixels] matrix (zeros in the slots not held).
    const float* gb = dout + k.local * y_size;
    if (k.width > 1) {
      if (k.partial()) std::fill(gmat.begin(), gmat.begin() + g.co * ld, 0.0f);
      ImagesToMatrix(g, k, gb, gmat.data());
      gb = gmat.data();
    }
    if (dw) {
      const float* cols = x + k.local * x_size;
      if (!direct) {
        LowerChunk(g, k, cols, col.data());
        cols = col.data();
      }
      Gemm(false, true, g.co, g.rows(), ld, 1.0f, gb, cols, 1.0f, dw);
    }
    if (dx) {
      float* dxb = dx + k.local * x_size;
      if (direct) {
        Gemm(true, false, g.rows(), np, g.co, 1.0f, wt, gb, 1.0f, dxb);
      } else {
        Gemm(true, false, g.rows(), ld, g.co, 1.0f, wt, gb, 0.0f, dcol.data());
        for (int64_t i = 0; i < k.count; ++i) Col2ImAdd(g, dcol.data() + (k.slot + i) * np, ld, dxb + i * x_size);
      }
    }
  });
}

// Where x's images sit in the whole batch, with ctx.one_device_bits: ctx.shard's cut on dim 0
// (at either mesh level); else (or unsplit) the piece is taken as the whole batch.
Chunks ChunksFor(const ir::Node& node, const KernelContext& ctx, const Tensor& x, const ConvDims& g) {
  if (ctx.shard && ctx.one_device_bits) {
    CheckShard(StrCat("conv2d '", node.name, "' x"), *ctx.shard, x.shape);
    if (ctx.shard->dim == 0) return ChunksOf(g, ctx.shard->start, ctx.shard->full[0]);
    if (ctx.shard->dim2 == 0) return ChunksOf(g, ctx.shard->start2, ctx.shard->full[0]);
  }
  return ChunksOf(g, 0, g.batch);
}

// Channels [first, first + n) of every image of src [batch, channels, plane] into dst
// [batch, n, plane], or (Add) dst's back onto them.
void TakeChannels(const float* src, int64_t batch, int64_t channels, int64_t plane, int64_t first, int64_t n,
                  float* dst) {
  for (int64_t b = 0; b < batch; ++b) {
    std::copy_n(src + (b * channels + first) * plane, n * plane, dst + b * n * plane);
  }
}
void PutChannels(const float* src, int64_t batch, int64_t channels, int64_t plane, int64_t first, int64_t n,
                 float* dst, bool add) {
  for (int64_t b = 0; b < batch; ++b) {
    const float* s = src + b * n * plane;
    float* d = dst + (b * channels + first) * plane;
    if (add) {
      for (int64_t i = 0; i < n * plane; ++i) d[i] += s[i];
    } else {
      std::copy_n(s, n * plane, d);
    }
  }
}

// The convolution of one channel group: its own input channels and filters.
ConvDims GroupDims(const ConvDims& g) {
  ConvDims d = g;
  d.ci = g.ci / g.groups;
  d.co = g.co / g.groups;
  d.groups = 1;
  return d;
}

}  // namespace

// A grouped convolution runs each group as an ungrouped one on its channels, copied out.
void Conv2dForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                   SavedState& saved) {
  const ConvDims g = ReadConvDims(node, in, out);
  const Tensor &x = *in[0], &wt = *in[1];
  const int64_t np = g.pixels(), y_size = g.co * np;
  const Chunks chunks = ChunksFor(node, ctx, x, g);
  if (g.groups == 1) {
    DenseForward(g, chunks, x.ptr(), wt.ptr(), out.ptr());
  } else {
    const ConvDims s = GroupDims(g);
    const int64_t plane = g.h * g.w;
    std::vector<float> xs(g.batch * s.ci * plane), ys(g.batch * s.co * np);
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      TakeChannels(x.ptr(), g.batch, g.ci, plane, gi * s.ci, s.ci, xs.data());
      DenseForward(s, chunks, xs.data(), wt.ptr() + gi * s.co * s.rows(), ys.data());
      PutChannels(ys.data(), g.batch, g.co, np, gi * s.co, s.co, out.ptr(), false);
    }
  }
  if (in.size() > 2) {
    for (int64_t b = 0; b < g.batch; ++b) {
      for (int64_t o = 0; o < g.co; ++o) {
        const float bias = in[2]->data[o];
        float* yo = out.ptr() + b * y_size + o * np;
        for (int64_t p = 0; p < np; ++p) yo[p] += bias;
      }
    }
  }
}

void Conv2dBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                    const Tensor& dout, const SavedState& saved, DIn din) {
  const ConvDims g = ReadConvDims(node, in, dout);
  const Tensor &x = *in[0], &wt = *in[1];
  Tensor* dx = din[0];
  Tensor* dw = din[1];
  Tensor* db = din.size() > 2 ? din[2] : nullptr;
  const int64_t np = g.pixels(), y_size = g.co * np;
  if (db) {
    for (int64_t o = 0; o < g.co; ++o) {
      double sum = 0;
      for (int64_t b = 0; b < g.batch; ++b) {
        const float* go = dout.ptr() + b * y_size + o * np;
        for (int64_t p = 0; p < np; ++p) sum += go[p];
      }
      db->data[o] += static_cast<float>(sum);
    }
  }
  if (!dw && !dx) return;
  const Chunks chunks = ChunksFor(node, ctx, x, g);
  if (g.groups == 1) {
    DenseBackward(g, chunks, x.ptr(), wt.ptr(), dout.ptr(), dx ? dx->ptr() : nullptr, dw ? dw->ptr() : nullptr);
    return;
  }
  const ConvDims s = GroupDims(g);
  const int64_t plane = g.h * g.w;
  std::vector<float> xs(g.batch * s.ci * plane), gs(g.batch * s.co * np), dxs(dx ? xs.size() : 0);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    TakeChannels(x.ptr(), g.batch, g.ci, plane, gi * s.ci, s.ci, xs.data());
    TakeChannels(dout.ptr(), g.batch, g.co, np, gi * s.co, s.co, gs.data());
    if (dx) std::fill(dxs.begin(), dxs.end(), 0.0f);
    DenseBackward(s, chunks, xs.data(), wt.ptr() + gi * s.co * s.rows(), gs.data(), dx ? dxs.data() : nullptr,
                  dw ? dw->ptr() + gi * s.co * s.rows() : nullptr);
    if (dx) PutChannels(dxs.data(), g.batch, g.ci, plane, gi * s.ci, s.ci, dx->ptr(), true);
  }
}

// Saved: the argmax of each window as an index into its (batch, channel) plane of x, stored
// as float (exact: a plane has far fewer than 2^24 pixels).
void MaxPool2dForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                      SavedState& saved) {
  const Tensor& x = *in[0];
  const int64_t k = node.attrs.kernel, s = node.attrs.stride, p = node.attrs.padding;
  CheckPool2d(node, x.shape, out.shape);
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t ho = out.dim(2), wo = out.dim(3);
  saved.tensors.assign(1, Tensor(out.shape));
  float* arg = saved.tensors[0].ptr();
  for (int64_t n = 0; n < planes; ++n) {
    const float* xp = x.ptr() + n * h * w;
    for (int64_t oh = 0; oh < ho; ++oh) {
      // The window clipped to the input: padding is −inf and never the maximum (padding <=
      // kernel/2 leaves every window an input element).
      const int64_t i0 = std::max<int64_t>(oh * s - p, 0), i1 = std::min(oh * s - p + k, h);
      for (int64_t ow = 0; ow < wo; ++ow) {
        const int64_t j0 = std::max<int64_t>(ow * s - p, 0), j1 = std::min(ow * s - p + k, w);
        int64_t best = i0 * w + j0;
        for (int64_t i = i0; i < i1; ++i) {
          for (int64_t j = j0; j < j1; ++j) {
            // Strict > keeps the first maximum in row-major window order.
            if (xp[i * w + j] > xp[best]) best = i * w + j;
          }
        }
        const int64_t o = (n * ho + oh) * wo + ow;
        out.data[o] = xp[best];
        arg[o] = static_cast<float>(best);
      }
    }
  }
}

void MaxPool2dBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                       const Tensor& dout, const SavedState& saved, DIn din) {
  if (!din[0]) return;
  CheckMaxPool2dSaved(node, saved.tensors, dout.shape);
  const Tensor& x = *in[0];
  const int64_t plane = x.dim(2) * x.dim(3);
  const int64_t per_plane = dout.dim(2) * dout.dim(3);
  const float* arg = saved.tensors[0].ptr();
  float* dx = din[0]->ptr();
  for (int64_t o = 0; o < dout.numel(); ++o) {
    dx[(o / per_plane) * plane + static_cast<int64_t>(arg[o])] += dout.data[o];
  }
}

namespace {
// PyTorch's adaptive pooling bin i of n over a dim of size len: [⌊i·len/n⌋, ⌈(i+1)·len/n⌉).
int64_t BinStart(int64_t i, int64_t len, int64_t n) { return i * len / n; }
int64_t BinEnd(int64_t i, int64_t len, int64_t n) { return ((i + 1) * len + n - 1) / n; }
}  // namespace

void AdaptiveAvgPool2dForward(const ir::Node& node, const KernelContext& ctx, In in,
                              Tensor& out, SavedState& saved) {
  const Tensor& x = *in[0];
  CheckAdaptiveAvgPool2d(node, x.shape, out.shape);
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t ho = out.dim(2), wo = out.dim(3);
  for (int64_t n = 0; n < planes; ++n) {
    const float* xp = x.ptr() + n * h * w;
    for (int64_t oh = 0; oh < ho; ++oh) {
      const int64_t h0 = BinStart(oh, h, ho), h1 = BinEnd(oh, h, ho);
      for (int64_t ow = 0; ow < wo; ++ow) {
        const int64_t w0 = BinStart(ow, w, wo), w1 = BinEnd(ow, w, wo);
        double sum = 0;
        for (int64_t i = h0; i < h1; ++i) {
          for (int64_t j = w0; j < w1; ++j) sum += xp[i * w + j];
        }
        out.data[(n * ho + oh) * wo + ow] = static_cast<float>(sum / double((h1 - h0) * (w1 - w0)));
      }
    }
  }
}

void AdaptiveAvgPool2dBackward(const ir::Node& node, const KernelContext& ctx, In in,
                               const Tensor& out, const Tensor& dout, const SavedState& saved,
                               DIn din) {
  if (!din[0]) return;
  const Tensor& x = *in[0];
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t ho = dout.dim(2), wo = dout.dim(3);
  for (int64_t n = 0; n < planes; ++n) {
    float* dxp = din[0]->ptr() + n * h * w;
    for (int64_t oh = 0; oh < ho; ++oh) {
      const int64_t h0 = BinStart(oh, h, ho), h1 = BinEnd(oh, h, ho);
      for (int64_t ow = 0; ow < wo; ++ow) {
        const int64_t w0 = BinStart(ow, w, wo), w1 = BinEnd(ow, w, wo);
        const float g = dout.data[(n * ho + oh) * wo + ow] / float((h1 - h0) * (w1 - w0));
        for (int64_t i = h0; i < h1; ++i) {
          for (int64_t j = w0; j < w1; ++j) dxp[i * w + j] += g;
        }
      }
    }
  }
}

namespace {
ops::PoolWindow AvgPoolWindow(const ir::Attrs& a, int64_t h, int64_t w, int64_t oh, int64_t ow) {
  return ops::AvgPoolWindow(a.kernel, a.stride, a.padding, a.count_include_pad, h, w, oh, ow);
}
}  // namespace

// Average pooling over windows of the (zero-padded) input, divided per ops::AvgPoolWindow.
void AvgPool2dForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out, SavedState& saved) {
  const Tensor& x = *in[0];
  CheckPool2d(node, x.shape, out.shape);
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3), ho = out.dim(2), wo = out.dim(3);
  for (int64_t n = 0; n < planes; ++n) {
    const float* xp = x.ptr() + n * h * w;
    for (int64_t oh = 0; oh < ho; ++oh) {
      for (int64_t ow = 0; ow < wo; ++ow) {
        const ops::PoolWindow win = AvgPoolWindow(node.attrs, h, w, oh, ow);
        double sum = 0;
        for (int64_t i = win.h0; i < win.h1; ++i) {
          for (int64_t j = win.w0; j < win.w1; ++j) sum += xp[i * w + j];
        }
        out.data[(n * ho + oh) * wo + ow] = static_cast<float>(sum / win.divisor);
      }
    }
  }
}

void AvgPool2dBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out, const Tensor& dout,
                       const SavedState& saved, DIn din) {
  if (!din[0]) return;
  const Tensor& x = *in[0];
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3), ho = dout.dim(2), wo = dout.dim(3);
  for (int64_t n = 0; n < planes; ++n) {
    float* dxp = din[0]->ptr() + n * h * w;
    for (int64_t oh = 0; oh < ho; ++oh) {
      for (int64_t ow = 0; ow < wo; ++ow) {
        const ops::PoolWindow win = AvgPoolWindow(node.attrs, h, w, oh, ow);
        const float g = static_cast<float>(dout.data[(n * ho + oh) * wo + ow] / win.divisor);
        for (int64_t i = win.h0; i < win.h1; ++i) {
          for (int64_t j = win.w0; j < win.w1; ++j) dxp[i * w + j] += g;
        }
      }
    }
  }
}

}  // namespace hetsynth::runtime::cpu
