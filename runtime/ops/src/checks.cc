// The shape and attribute checks and host-side planning shared by the CPU kernels and the CUDA
// backend's operators (checks.h), one definition for both.
#include "hetsynth/runtime/ops/checks.h"

#include <string>
#include <vector>

#include "hetsynth/ir/op.h"
#include "hetsynth/ir/op_table.h"
#include "hetsynth/base/status.h"

namespace hetsynth::runtime::cpu {

// ---- shards ---------------------------------------------------------------------------------

void CheckShard(const std::string& what, const ShardInfo& shard, const ir::Shape& piece) {
  const int64_t rank = static_cast<int64_t>(piece.size());
  auto where = [&] {
    return StrCat(what, ": piece ", ir::ShapeString(piece), " at start ", shard.start,
                  " of dim ", shard.dim, " of full tensor ", ir::ShapeString(shard.full));
  };
  HS_CHECK(static_cast<int64_t>(shard.full.size()) == rank,
           StrCat(where(), ": shard rank ", shard.full.size(), " differs from piece rank ", rank));
  HS_CHECK(shard.dim >= 0 && shard.dim < rank,
           StrCat(where(), ": shard dim ", shard.dim, " out of range for rank ", rank));
  const size_t d = static_cast<size_t>(shard.dim);
  HS_CHECK(shard.start >= 0 && shard.start + piece[d] <= shard.full[d],
           StrCat(where(), ": rows [", shard.start, ", ", shard.start + piece[d],
                  ") do not fit in the full dim of size ", shard.full[d]));
  const bool two = shard.dim2 >= 0;
  const size_t d2 = two ? static_cast<size_t>(shard.dim2) : d;
  if (two) {
    HS_CHECK(shard.dim2 < rank && d2 != d, StrCat(where(), ": second cut dim ", shard.dim2, " is out of range or the first"));
    HS_CHECK(shard.start2 >= 0 && shard.start2 + piece[d2] <= shard.full[d2],
             StrCat(where(), ": rows [", shard.start2, ", ", shard.start2 + piece[d2], ") of dim ", d2,
                    " do not fit in the full dim of size ", shard.full[d2]));
  }
  for (size_t i = 0; i < piece.size(); ++i) {
    HS_CHECK(i == d || i == d2 || piece[i] == shard.full[i],
             StrCat(where(), ": dim ", i, " is ", piece[i], " in the piece but ", shard.full[i],
                    " in the full tensor"));
  }
}

// ---- elementwise ----------------------------------------------------------------------------

MergedBroadcast MergeBroadcast(const ir::Shape& a, const ir::Shape& b, const std::string& node) {
  auto bad = [&] {
    return StrCat("'", node, "': shape ", ir::ShapeString(b), " does not broadcast to ",
                  ir::ShapeString(a));
  };
  HS_CHECK(b.size() <= a.size(), bad());
  const size_t lead = a.size() - b.size();
  MergedBroadcast m;
  for (size_t i = 0; i < a.size(); ++i) {
    const int64_t ad = a[i], bd = i >= lead ? b[i - lead] : 1;
    HS_CHECK(bd == ad || bd == 1, bad());
    if (ad == 1) continue;
    const bool bc = bd == 1;
    if (!m.dims.empty() && m.bcast.back() == bc) {
      m.dims.back() *= ad;
    } else {
      m.dims.push_back(ad);
      m.bcast.push_back(bc);
    }
  }
  return m;
}

DropoutPiece GetDropoutPiece(const ir::Node& node, const KernelContext& ctx, const ir::Shape& shape) {
  const double p = node.attrs.p;
  HS_CHECK(p >= 0.0 && p < 1.0, StrCat("dropout '", node.name, "': p=", p,
                                       "; expected 0 <= p < 1"));
  DropoutPiece piece;
  piece.inner = ir::NumElements(shape);
  if (ctx.shard) {
    CheckShard(StrCat("dropout '", node.name, "'"), *ctx.shard, shape);
    const bool two = ctx.shard->dim2 >= 0;
    const bool swap = two && ctx.shard->dim2 < ctx.shard->dim;  // first cut = the lower dim
    const size_t d = static_cast<size_t>(swap ? ctx.shard->dim2 : ctx.shard->dim);
    const size_t d2 = two ? static_cast<size_t>(swap ? ctx.shard->dim : ctx.shard->dim2) : shape.size();
    piece.inner = 1;
    for (size_t i = 0; i < d; ++i) piece.outer *= shape[i];
    for (size_t i = d + 1; i < d2; ++i) (two ? piece.mid : piece.inner) *= shape[i];
    for (size_t i = d2 + 1; i < shape.size(); ++i) piece.inner *= shape[i];
    piece.len = shape[d];
    piece.full_len = ctx.shard->full[d];
    piece.start = swap ? ctx.shard->start2 : ctx.shard->start;
    if (two) {
      piece.len2 = shape[d2];
      piece.full_len2 = ctx.shard->full[d2];
      piece.start2 = swap ? ctx.shard->start : ctx.shard->start2;
    }
  }
  return piece;
}

// ---- norm -----------------------------------------------------------------------------------

NormRows NormRowsOf(const ir::Shape& x) {
  const int64_t len = x.empty() ? 1 : x.back();
  return {len == 0 ? 0 : ir::NumElements(x) / len, len};
}

void CheckLayerNormParams(const ir::Node& node, int64_t gamma_numel, int64_t beta_numel,
                          int64_t len) {
  HS_CHECK(gamma_numel == len && beta_numel == len,
           StrCat("layer_norm '", node.name, "': gamma/beta have ", gamma_numel, "/", beta_numel,
                  " elements; expected ", len));
}

void CheckCrossEntropyLabels(const ir::Node& node, int64_t labels, int64_t rows) {
  HS_CHECK(labels == rows, StrCat("cross_entropy '", node.name, "': ", labels, " labels for ",
                                  rows, " rows of logits"));
}

double CrossEntropyDivisor(const ir::Node& node, const KernelContext& ctx, const ir::Shape& logits,
                           int64_t rows) {
  if (!ctx.shard) return static_cast<double>(rows);
  const std::string what = StrCat("cross_entropy '", node.name, "' logits");
  CheckShard(what, *ctx.shard, logits);
  HS_CHECK(ctx.shard->dim != static_cast<int64_t>(logits.size()) - 1 &&
               ctx.shard->dim2 != static_cast<int64_t>(logits.size()) - 1,
           StrCat(what, ": shard dim ", ctx.shard->dim,
                  " is the class dim; a logits piece must be split on a leading dim"));
  double n = 1;
  for (size_t i = 0; i + 1 < ctx.shard->full.size(); ++i) {
    n *= static_cast<double>(ctx.shard->full[i]);
  }
  return n;
}

// ---- dense ----------------------------------------------------------------------------------

void CheckLinear(const ir::Node& node, const ir::Shape& x, int64_t k) {
  HS_CHECK(!x.empty() && x.back() == k,
           StrCat("linear '", node.name, "': x last dim ", x.empty() ? 0 : x.back(),
                  " != weight in ", k));
}

MatMulDims GetMatMulDims(const ir::Node& node, const ir::Shape& a, const ir::Shape& b) {
  const size_t ra = a.size(), rb = b.size();
  HS_CHECK(ra >= 2 && rb >= 2 && a[ra - 1] == b[rb - 2] && (rb == 2 || rb == ra),
           StrCat("matmul '", node.name, "': cannot multiply ", ir::ShapeString(a), " by ",
                  ir::ShapeString(b)));
  MatMulDims d;
  d.m = a[ra - 2];
  d.k = a[ra - 1];
  d.n = b[rb - 1];
  d.batch = d.m * d.k == 0 ? 0 : ir::NumElements(a) / (d.m * d.k);
  d.shared = rb == 2;
  HS_CHECK(d.shared || ir::NumElements(b) == d.batch * d.k * d.n,
           StrCat("matmul '", node.name, "': batch dims of ", ir::ShapeString(a), " and ",
                  ir::ShapeString(b), " differ"));
  return d;
}

// ---- attention ------------------------------------------------------------------------------

AttentionDims ReadAttentionDims(const ir::Node& node, const ir::Shape& q, const ir::Shape& k,
                                const ir::Shape& v) {
  HS_CHECK(q.size() == 3 && k == q && v == q,
           StrCat("attention '", node.name, "': q, k, v have shapes ", ir::ShapeString(q),
                  ", ", ir::ShapeString(k), ", ", ir::ShapeString(v),
                  "; expected three equal [B,T,C] shapes"));
  const int64_t heads = node.attrs.heads;
  HS_CHECK(heads > 0 && q[2] % heads == 0,
           StrCat("attention '", node.name, "': heads=", heads, " does not divide C=", q[2]));
  return {q[0], q[1], q[2], heads, q[2] / heads};
}

void CheckCausalMaskInput(const ir::Node& node, const ir::Shape& s) {
  const size_t r = s.size();
  HS_CHECK(r >= 2 && s[r - 1] == s[r - 2],
           StrCat("causal_mask '", node.name, "': input has shape ", ir::ShapeString(s),
                  "; expected [..., T, T]"));
}

// ---- conv -----------------------------------------------------------------------------------

ConvShape ReadConvShape(const ir::Node& node, const ir::Shape& x, const ir::Shape& wt,
                        const ir::Shape& y, const ir::Shape* bias) {
  const int64_t groups = node.attrs.groups;
  HS_CHECK(x.size() == 4 && wt.size() == 4 && groups > 0 && x[1] % groups == 0 && wt[0] % groups == 0 &&
               wt[1] * groups == x[1] && wt[2] == wt[3],
           StrCat("conv2d '", node.name, "': x ", ir::ShapeString(x), " and weight ",
                  ir::ShapeString(wt), " with groups=", groups,
                  "; expected [B,Ci,H,W] and [Co,Ci/groups,k,k]"));
  ConvShape g{x[0], x[1], x[2], x[3], wt[0], wt[2], node.attrs.stride, node.attrs.padding, 0, 0, groups};
  g.ho = (g.h + 2 * g.pad - g.k) / g.stride + 1;
  g.wo = (g.w + 2 * g.pad - g.k) / g.stride + 1;
  HS_CHECK(y == (ir::Shape{g.batch, g.co, g.ho, g.wo}),
           StrCat("conv2d '", node.name, "': output has shape ", ir::ShapeString(y),
                  "; expected [", g.batch, ",", g.co, ",", g.ho, ",", g.wo, "]"));
  if (bias) {
    HS_CHECK(*bias == ir::Shape{g.co},
             StrCat("conv2d '", node.name, "': bias has shape ", ir::ShapeString(*bias),
                    "; expected [", g.co, "]"));
  }
  return g;
}

void CheckPool2d(const ir::Node& node, const ir::Shape& x, const ir::Shape& out) {
  const int64_t k = node.attrs.kernel, s = node.attrs.stride, p = node.attrs.padding;
  const bool c = node.attrs.ceil_mode;
  HS_CHECK(x.size() == 4 && out.size() == 4 && p >= 0 && p < k && out[0] == x[0] && out[1] == x[1] &&
               out[2] == ir::PoolOutputSize(x[2], k, s, p, c) && out[3] == ir::PoolOutputSize(x[3], k, s, p, c),
           StrCat(ir::OpName(node.kind), " '", node.name, "': x ", ir::ShapeString(x), " and output ",
                  ir::ShapeString(out), " do not match kernel=", k, " stride=", s, " padding=", p,
                  c ? " ceil_mode" : ""));
}

double MseLossDivisor(const ir::Node& node, const KernelContext& ctx, const ir::Shape& pred) {
  if (!ctx.shard) return static_cast<double>(ir::NumElements(pred));
  CheckShard(StrCat("mse_loss '", node.name, "' prediction"), *ctx.shard, pred);
  return static_cast<double>(ir::NumElements(ctx.shard->full));
}

ChannelBlocks ChannelBlocksOf(const ir::Node& node, const ir::Shape& x) {
  HS_CHECK(x.size() >= 2, StrCat(ir::OpName(node.kind), " '", node.name, "': x ", ir::ShapeString(x),
                                 "; expected [B, C, ...]"));
  return {x[0], x[1], Product(x, 2, static_cast<int64_t>(x.size()))};
}

double BatchMomentsCount(const ir::Node& node, const KernelContext& ctx, const ir::Shape& x) {
  const ChannelBlocks c = ChannelBlocksOf(node, x);
  if (!ctx.shard) return static_cast<double>(c.batch * c.inner);
  CheckShard(StrCat("batch_moments '", node.name, "' x"), *ctx.shard, x);
  const ir::Shape& f = ctx.shard->full;
  return static_cast<double>(f[0] * Product(f, 2, static_cast<int64_t>(f.size())));
}

void CheckBatchNorm(const ir::Node& node, const ir::Shape& x, const ir::Shape& m, const ir::Shape& gamma,
                    const ir::Shape& beta) {
  const ChannelBlocks c = ChannelBlocksOf(node, x);
  HS_CHECK(m == (ir::Shape{2, c.channels}) && gamma == ir::Shape{c.channels} && beta == ir::Shape{c.channels},
           StrCat("batch_norm '", node.name, "': moments ", ir::ShapeString(m), ", gamma ", ir::ShapeString(gamma),
                  ", beta ", ir::ShapeString(beta), " for x ", ir::ShapeString(x), "; expected [2, ", c.channels,
                  "] and [", c.channels, "]"));
}

void CheckAdaptiveAvgPool2d(const ir::Node& node, const ir::Shape& x, const ir::Shape& out) {
  HS_CHECK(x.size() == 4 && out.size() == 4 && out[0] == x[0] && out[1] == x[1],
           StrCat("adaptive_avg_pool2d '", node.name, "': x ", ir::ShapeString(x),
                  " and output ", ir::ShapeString(out), " do not match"));
}

// ---- layout ---------------------------------------------------------------------------------

int64_t NormAxis(const ir::Node& node, int64_t axis, int64_t rank) {
  const int64_t a = axis < 0 ? axis + rank : axis;
  HS_CHECK(a >= 0 && a < rank, StrCat("'", node.name, "': axis ", axis,
                                      " out of range for rank ", rank));
  return a;
}

int64_t Product(const ir::Shape& s, int64_t begin, int64_t end) {
  int64_t p = 1;
  for (int64_t i = begin; i < end; ++i) p *= s[static_cast<size_t>(i)];
  return p;
}

TableRows GetTableRows(const ir::Node& node, const KernelContext& ctx, const ir::Shape& table) {
  if (!ctx.shard) return {0, table[0], table[0]};
  const std::string what = StrCat("embedding '", node.name, "' table");
  CheckShard(what, *ctx.shard, table);
  HS_CHECK(ctx.shard->dim == 0 && ctx.shard->dim2 < 0, StrCat(what, ": shard dim ", ctx.shard->dim,
                                       "; a table piece must be split on dim 0 (rows)"));
  return {ctx.shard->start, table[0], ctx.shard->full[0]};
}

void CheckConcatFill(const ir::Node& node, int64_t offset, int64_t row, const ir::Shape& out) {
  HS_CHECK(offset == row, StrCat("concat '", node.name, "': inputs fill ", offset, " of ", row,
                                 " elements per row of ", ir::ShapeString(out)));
}

SliceDims GetSliceDims(const ir::Node& node, const ir::Shape& x, const ir::Shape& y) {
  const int64_t rank = static_cast<int64_t>(x.size());
  const int64_t axis = NormAxis(node, node.attrs.axis, rank);
  const int64_t size = x[static_cast<size_t>(axis)];
  const int64_t start = node.attrs.start, length = y[static_cast<size_t>(axis)];
  HS_CHECK(start >= 0 && start + length <= size,
           StrCat("slice '", node.name, "': [", start, ", ", start + length,
                  ") out of range for dim of size ", size));
  const int64_t outer = Product(x, 0, axis);
  const int64_t inner = Product(x, axis + 1, rank);
  return {outer, size * inner, start * inner, length * inner};
}

// ---- moe ------------------------------------------------------------------------------------

void CheckRouteShape(const ir::Node& node, const ir::Shape& route, int64_t tokens) {
  HS_CHECK(route.size() == 3 && route[0] == tokens && route[2] == 3,
           StrCat(ir::OpName(node.kind), " '", node.name, "': route has shape ",
                  ir::ShapeString(route), "; expected [", tokens, ", k, 3]"));
}

void CheckTopKGate(const ir::Node& node, const ir::Shape& logits, const ir::Shape& route) {
  HS_CHECK(logits.size() == 2 && route.size() == 3 && route[0] == logits[0] &&
               route[1] <= logits[1] && route[2] == 3,
           StrCat("top_k_gate '", node.name, "': logits ", ir::ShapeString(logits),
                  " and route ", ir::ShapeString(route), "; expected [S,E] and [S,k<=E,3]"));
  const int64_t capacity = node.attrs.capacity;
  HS_CHECK(capacity > 0, StrCat("top_k_gate '", node.name, "': capacity=", capacity,
                                "; expected a positive number"));
}

void CheckMoEDispatch(const ir::Node& node, const ir::Shape& x, const ir::Shape& route,
                      const ir::Shape& out) {
  HS_CHECK(x.size() == 2 && out.size() == 3 && out[2] == x[1],
           StrCat("moe_dispatch '", node.name, "': x ", ir::ShapeString(x), " and output ",
                  ir::ShapeString(out), "; expected [S,C] and [E,P,C]"));
  CheckRouteShape(node, route, x[0]);
}

void CheckMoECombine(const ir::Node& node, const ir::Shape& y, const ir::Shape& route,
                     const ir::Shape& out) {
  HS_CHECK(y.size() == 3 && out.size() == 2 && out[1] == y[2],
           StrCat("moe_combine '", node.name, "': y ", ir::ShapeString(y), " and output ",
                  ir::ShapeString(out), "; expected [E,P,C] and [S,C]"));
  CheckRouteShape(node, route, out[0]);
}

}  // namespace hetsynth::runtime::cpu
