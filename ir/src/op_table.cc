// The operator table (op_table.h): one entry per OpKind with the op's shape inference and FLOP
// count as functions of its own, so that an operator is described in one place.
#include "hetsynth/ir/op_table.h"

#include <algorithm>

#include "hetsynth/base/status.h"

namespace hetsynth::ir {
namespace {

absl::Status Bad(const std::string& msg) { return absl::InvalidArgumentError(msg); }

double Elements(const Shape& s) { return static_cast<double>(NumElements(s)); }

// Normalizes a possibly negative axis into [0, rank); false when out of range.
bool NormAxis(int64_t axis, size_t rank, int64_t* out) {
  const int64_t r = static_cast<int64_t>(rank);
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r) return false;
  *out = axis;
  return true;
}

absl::Status WantRank(const Shape& s, const char* what, size_t rank) {
  if (s.size() != rank) {
    return Bad(StrCat(what, " has shape ", ShapeString(s), "; expected rank ", rank));
  }
  return absl::OkStatus();
}

// b broadcasts onto a: b's dims align with a's trailing dims and each is equal or 1.
absl::Status WantBroadcastable(const Shape& a, const Shape& b, const char* a_name,
                               const char* b_name) {
  bool ok = b.size() <= a.size();
  for (size_t i = 0; ok && i < b.size(); ++i) {
    const int64_t bd = b[b.size() - 1 - i], ad = a[a.size() - 1 - i];
    ok = bd == ad || bd == 1;
  }
  if (!ok) {
    return Bad(StrCat(b_name, " has shape ", ShapeString(b), " which does not broadcast to ",
                      a_name, " shape ", ShapeString(a), "; expected trailing dims equal to ",
                      a_name, "'s or 1"));
  }
  return absl::OkStatus();
}

absl::Status WantPositive(const Shape& shape) {
  for (int64_t d : shape) {
    if (d <= 0) return Bad(StrCat("shape=", ShapeString(shape), "; expected positive dims"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Shape inference, per op (or per family of ops with one rule). Arity and positive dims are
// checked before (InferShape), so in[i] exists for every i < min_inputs.

absl::StatusOr<Shape> SameShape(const std::vector<Shape>& in, const Attrs&) { return in[0]; }

// Ops over the last dim.
absl::StatusOr<Shape> LastDimShape(const std::vector<Shape>& in, const Attrs&) {
  if (in[0].empty()) return Bad("x is a scalar; expected rank >= 1");
  return in[0];
}

absl::StatusOr<Shape> BroadcastShape(const std::vector<Shape>& in, const Attrs&) {
  HS_RETURN_IF_ERROR(WantBroadcastable(in[0], in[1], "a", "b"));
  return in[0];
}

absl::StatusOr<Shape> LinearShape(const std::vector<Shape>& in, const Attrs&) {
  const Shape &x = in[0], &w = in[1];
  if (x.empty()) return Bad("x is a scalar; expected rank >= 1");
  HS_RETURN_IF_ERROR(WantRank(w, "weight", 2));
  if (w[1] != x.back()) {
    return Bad(StrCat("weight has shape ", ShapeString(w), " but x has shape ", ShapeString(x),
                      "; expected weight [out, ", x.back(), "]"));
  }
  if (in.size() == 3 && in[2] != Shape{w[0]}) {
    return Bad(StrCat("bias has shape ", ShapeString(in[2]), "; expected [", w[0], "]"));
  }
  Shape out = x;
  out.back() = w[0];
  return out;
}

absl::StatusOr<Shape> MatMulShape(const std::vector<Shape>& in, const Attrs&) {
  const Shape &x = in[0], &y = in[1];
  if (x.size() < 2 || y.size() < 2) {
    return Bad(StrCat("operands have shapes ", ShapeString(x), " and ", ShapeString(y),
                      "; expected rank >= 2"));
  }
  const bool batch_ok =
      y.size() == 2 || (y.size() == x.size() && std::equal(x.begin(), x.end() - 2, y.begin()));
  if (!batch_ok || x.back() != y[y.size() - 2]) {
    return Bad(StrCat("cannot multiply ", ShapeString(x), " by ", ShapeString(y),
                      "; expected [..., m, k] x [..., k, n] with equal batch dims or [k, n]"));
  }
  Shape out = x;
  out.back() = y.back();
  return out;
}

absl::StatusOr<Shape> DropoutShape(const std::vector<Shape>& in, const Attrs& a) {
  if (!(a.p >= 0.0 && a.p < 1.0)) return Bad(StrCat("p=", a.p, "; expected 0 <= p < 1"));
  return in[0];
}

absl::StatusOr<Shape> LayerNormShape(const std::vector<Shape>& in, const Attrs& a) {
  if (in[0].empty()) return Bad("x is a scalar; expected rank >= 1");
  const Shape c = {in[0].back()};
  if (in[1] != c || in[2] != c) {
    return Bad(StrCat("gamma/beta have shapes ", ShapeString(in[1]), "/", ShapeString(in[2]),
                      "; expected ", ShapeString(c)));
  }
  if (!(a.eps > 0)) return Bad(StrCat("eps=", a.eps, "; expected a positive number"));
  return in[0];
}

absl::StatusOr<Shape> AttentionShape(const std::vector<Shape>& in, const Attrs& a) {
  HS_RETURN_IF_ERROR(WantRank(in[0], "q", 3));
  if (in[1] != in[0] || in[2] != in[0]) {
    return Bad(StrCat("q, k, v have shapes ", ShapeString(in[0]), ", ", ShapeString(in[1]), ", ",
                      ShapeString(in[2]), "; expected three equal [B,T,C] shapes"));
  }
  if (a.heads <= 0 || in[0][2] % a.heads != 0) {
    return Bad(StrCat("heads=", a.heads, " does not divide hidden ", in[0][2],
                      "; expected a positive divisor"));
  }
  return in[0];
}

absl::StatusOr<Shape> CausalMaskShape(const std::vector<Shape>& in, const Attrs&) {
  if (in[0].size() < 2 || in[0][in[0].size() - 1] != in[0][in[0].size() - 2]) {
    return Bad(StrCat("x has shape ", ShapeString(in[0]), "; expected [..., T, T]"));
  }
  return in[0];
}

absl::StatusOr<Shape> EmbeddingShape(const std::vector<Shape>& in, const Attrs&) {
  HS_RETURN_IF_ERROR(WantRank(in[1], "table", 2));
  Shape out = in[0];
  out.push_back(in[1][1]);
  return out;
}

absl::StatusOr<Shape> Conv2dShape(const std::vector<Shape>& in, const Attrs& a) {
  HS_RETURN_IF_ERROR(WantRank(in[0], "x", 4));
  HS_RETURN_IF_ERROR(WantRank(in[1], "weight", 4));
  const Shape &x = in[0], &w = in[1];
  if (a.groups <= 0 || x[1] % a.groups != 0 || w[0] % a.groups != 0) {
    return Bad(StrCat("groups=", a.groups, " for x ", ShapeString(x), " and weight ", ShapeString(w),
                      "; expected a positive divisor of the input and output channels"));
  }
  if (w[1] != x[1] / a.groups || w[2] != a.kernel || w[3] != a.kernel) {
    return Bad(StrCat("weight has shape ", ShapeString(w), " for x ", ShapeString(x), ", kernel=",
                      a.kernel, " and groups=", a.groups, "; expected [out, ", x[1] / a.groups, ", ",
                      a.kernel, ", ", a.kernel, "]"));
  }
  if (in.size() == 3 && in[2] != Shape{w[0]}) {
    return Bad(StrCat("bias has shape ", ShapeString(in[2]), "; expected [", w[0], "]"));
  }
  if (a.stride <= 0 || a.padding < 0) {
    return Bad(StrCat("stride=", a.stride, " padding=", a.padding,
                      "; expected stride > 0 and padding >= 0"));
  }
  const int64_t h = (x[2] + 2 * a.padding - a.kernel) / a.stride + 1;
  const int64_t wd = (x[3] + 2 * a.padding - a.kernel) / a.stride + 1;
  if (x[2] + 2 * a.padding < a.kernel || x[3] + 2 * a.padding < a.kernel) {
    return Bad(StrCat("kernel=", a.kernel, " is larger than the padded input ", ShapeString(x)));
  }
  return Shape{x[0], w[0], h, wd};
}

// Padding is below the window, so every window holds an input element.
absl::StatusOr<Shape> Pool2dShape(const std::vector<Shape>& in, const Attrs& a) {
  HS_RETURN_IF_ERROR(WantRank(in[0], "x", 4));
  const Shape& x = in[0];
  if (a.kernel <= 0 || a.stride <= 0 || a.padding < 0 || a.padding >= a.kernel ||
      a.kernel > x[2] + 2 * a.padding || a.kernel > x[3] + 2 * a.padding) {
    return Bad(StrCat("kernel=", a.kernel, " stride=", a.stride, " padding=", a.padding, " for x ",
                      ShapeString(x),
                      "; expected 0 < kernel <= H + 2·padding, W + 2·padding, stride > 0 and "
                      "0 <= padding < kernel"));
  }
  return Shape{x[0], x[1], PoolOutputSize(x[2], a.kernel, a.stride, a.padding, a.ceil_mode),
               PoolOutputSize(x[3], a.kernel, a.stride, a.padding, a.ceil_mode)};
}

absl::StatusOr<Shape> AdaptiveAvgPool2dShape(const std::vector<Shape>& in, const Attrs& a) {
  HS_RETURN_IF_ERROR(WantRank(in[0], "x", 4));
  const Shape& x = in[0];
  // An output larger than the input is allowed, as in PyTorch: the bins then overlap and
  // repeat input elements (torchvision's VGG pools a 1×1 map of a 32×32 image to 7×7).
  if (a.out_h <= 0 || a.out_w <= 0) {
    return Bad(StrCat("out_h=", a.out_h, " out_w=", a.out_w, " for x ", ShapeString(x),
                      "; expected out_h > 0 and out_w > 0"));
  }
  return Shape{x[0], x[1], a.out_h, a.out_w};
}

absl::StatusOr<Shape> FlattenShape(const std::vector<Shape>& in, const Attrs& a) {
  int64_t axis;
  if (!NormAxis(a.axis, in[0].size(), &axis)) {
    return Bad(StrCat("axis=", a.axis, " out of range for ", ShapeString(in[0])));
  }
  Shape out(in[0].begin(), in[0].begin() + axis);
  out.push_back(NumElements(Shape(in[0].begin() + axis, in[0].end())));
  return out;
}

absl::StatusOr<Shape> ReshapeShape(const std::vector<Shape>& in, const Attrs& a) {
  HS_RETURN_IF_ERROR(WantPositive(a.shape));
  if (NumElements(a.shape) != NumElements(in[0])) {
    return Bad(StrCat("cannot reshape ", ShapeString(in[0]), " to ", ShapeString(a.shape),
                      "; element counts differ"));
  }
  return a.shape;
}

absl::StatusOr<Shape> TransposeShape(const std::vector<Shape>& in, const Attrs& a) {
  int64_t d0, d1;
  if (!NormAxis(a.axis, in[0].size(), &d0) || !NormAxis(a.axis2, in[0].size(), &d1)) {
    return Bad(StrCat("axes ", a.axis, ", ", a.axis2, " out of range for ", ShapeString(in[0])));
  }
  Shape out = in[0];
  std::swap(out[d0], out[d1]);
  return out;
}

absl::StatusOr<Shape> ConcatShape(const std::vector<Shape>& in, const Attrs& a) {
  int64_t axis;
  if (!NormAxis(a.axis, in[0].size(), &axis)) {
    return Bad(StrCat("axis=", a.axis, " out of range for ", ShapeString(in[0])));
  }
  Shape out = in[0];
  for (size_t i = 1; i < in.size(); ++i) {
    Shape probe = in[i];
    if (probe.size() == out.size()) probe[axis] = out[axis];
    if (probe != out) {
      return Bad(StrCat("input ", i, " has shape ", ShapeString(in[i]), "; expected ",
                        ShapeString(in[0]), " except along axis ", axis));
    }
    out[axis] += in[i][axis];
  }
  return out;
}

absl::StatusOr<Shape> SliceShape(const std::vector<Shape>& in, const Attrs& a) {
  int64_t axis;
  if (!NormAxis(a.axis, in[0].size(), &axis)) {
    return Bad(StrCat("axis=", a.axis, " out of range for ", ShapeString(in[0])));
  }
  if (a.start < 0 || a.length <= 0 || a.start + a.length > in[0][axis]) {
    return Bad(StrCat("start=", a.start, " length=", a.length, " for dim of size ", in[0][axis],
                      "; expected 0 <= start < start+length <= size"));
  }
  Shape out = in[0];
  out[axis] = a.length;
  return out;
}

absl::StatusOr<Shape> ExpandShape(const std::vector<Shape>& in, const Attrs& a) {
  HS_RETURN_IF_ERROR(WantPositive(a.shape));
  HS_RETURN_IF_ERROR(WantBroadcastable(a.shape, in[0], "target", "x"));
  return a.shape;
}

absl::StatusOr<Shape> CrossEntropyShape(const std::vector<Shape>& in, const Attrs&) {
  if (in[0].empty() || Shape(in[0].begin(), in[0].end() - 1) != in[1]) {
    return Bad(StrCat("logits ", ShapeString(in[0]), " and labels ", ShapeString(in[1]),
                      " do not match; expected logits [..., K] and labels [...]"));
  }
  return Shape{};
}

absl::StatusOr<Shape> TopKGateShape(const std::vector<Shape>& in, const Attrs& a) {
  HS_RETURN_IF_ERROR(WantRank(in[0], "logits", 2));
  if (a.k <= 0 || a.k > in[0][1] || a.capacity <= 0) {
    return Bad(StrCat("k=", a.k, " capacity=", a.capacity, " with ", in[0][1],
                      " experts; expected 1 <= k <= experts and capacity > 0"));
  }
  return Shape{in[0][0], a.k, 3};
}

absl::StatusOr<Shape> MoEDispatchShape(const std::vector<Shape>& in, const Attrs& a) {
  HS_RETURN_IF_ERROR(WantRank(in[0], "x", 2));
  HS_RETURN_IF_ERROR(WantRank(in[1], "route", 3));
  if (in[1][0] != in[0][0] || in[1][2] != 3) {
    return Bad(StrCat("route has shape ", ShapeString(in[1]), " for x ", ShapeString(in[0]),
                      "; expected [", in[0][0], ", k, 3]"));
  }
  if (a.experts <= 0 || a.capacity <= 0) {
    return Bad(StrCat("experts=", a.experts, " capacity=", a.capacity,
                      "; expected positive numbers"));
  }
  return Shape{a.experts, a.capacity, in[0][1]};
}

absl::StatusOr<Shape> MoECombineShape(const std::vector<Shape>& in, const Attrs&) {
  HS_RETURN_IF_ERROR(WantRank(in[0], "y", 3));
  HS_RETURN_IF_ERROR(WantRank(in[1], "route", 3));
  if (in[1][2] != 3) {
    return Bad(StrCat("route has shape ", ShapeString(in[1]), "; expected [S, k, 3]"));
  }
  return Shape{in[1][0], in[0][2]};
}

absl::StatusOr<Shape> ClipShape(const std::vector<Shape>& in, const Attrs& a) {
  if (!(a.min <= a.max)) return Bad(StrCat("min=", a.min, " max=", a.max, "; expected min <= max"));
  return in[0];
}

absl::StatusOr<Shape> MseLossShape(const std::vector<Shape>& in, const Attrs&) {
  if (in[1] != in[0]) {
    return Bad(StrCat("target has shape ", ShapeString(in[1]), "; expected the prediction's ", ShapeString(in[0])));
  }
  return Shape{};
}

absl::StatusOr<Shape> BatchMomentsShape(const std::vector<Shape>& in, const Attrs&) {
  if (in[0].size() < 2) return Bad(StrCat("x has shape ", ShapeString(in[0]), "; expected [B, C, ...]"));
  return Shape{2, in[0][1]};
}

absl::StatusOr<Shape> BatchNormShape(const std::vector<Shape>& in, const Attrs& a) {
  if (in[0].size() < 2) return Bad(StrCat("x has shape ", ShapeString(in[0]), "; expected [B, C, ...]"));
  const int64_t c = in[0][1];
  if (in[1] != Shape{2, c}) {
    return Bad(StrCat("moments have shape ", ShapeString(in[1]), "; expected [2, ", c, "]"));
  }
  if (in[2] != Shape{c} || in[3] != Shape{c}) {
    return Bad(StrCat("gamma/beta have shapes ", ShapeString(in[2]), "/", ShapeString(in[3]),
                      "; expected [", c, "]"));
  }
  if (!(a.eps > 0)) return Bad(StrCat("eps=", a.eps, "; expected a positive number"));
  return in[0];
}

// ---------------------------------------------------------------------------------------------
// FLOPs (multiply-add = 2), per op or per family.

// F and B FLOPs per output element, forward and backward.
template <int F, int B>
Flops PerOutput(const std::vector<Shape>&, const Shape& out, const Attrs&) {
  const double o = Elements(out);
  return {F * o, B * o};
}

// F and B FLOPs per element of input 0, forward and backward.
template <int F, int B>
Flops PerInput(const std::vector<Shape>& in, const Shape&, const Attrs&) {
  const double x = Elements(in[0]);
  return {F * x, B * x};
}

Flops NoFlops(const std::vector<Shape>&, const Shape&, const Attrs&) { return {0, 0}; }

Flops LinearFlops(const std::vector<Shape>& in, const Shape& out, const Attrs&) {
  const double o = Elements(out);
  const double rows = o / static_cast<double>(out.back());
  const double mm = 2.0 * rows * static_cast<double>(in[1][0] * in[1][1]);
  const double bias = in.size() == 3 ? o : 0.0;
  return {mm + bias, 2.0 * mm + bias};
}

Flops MatMulFlops(const std::vector<Shape>& in, const Shape& out, const Attrs&) {
  const double mm = 2.0 * Elements(out) * static_cast<double>(in[0].back());
  return {mm, 2.0 * mm};
}

// With p == 0 dropout is the identity and costs nothing.
Flops DropoutFlops(const std::vector<Shape>&, const Shape& out, const Attrs& a) {
  const double o = Elements(out);
  return a.p > 0 ? Flops{o, o} : Flops{0, 0};
}

Flops AttentionFlops(const std::vector<Shape>&, const Shape& out, const Attrs& a) {
  const double b = static_cast<double>(out[0]), t = static_cast<double>(out[1]),
               c = static_cast<double>(out[2]), h = static_cast<double>(a.heads);
  const double mm = 4.0 * b * t * t * c;  // q·kᵀ and p·v
  const double sm = 5.0 * b * h * t * t;
  return {mm + sm, 2.0 * mm + sm};
}

Flops Conv2dFlops(const std::vector<Shape>& in, const Shape& out, const Attrs&) {
  const double o = Elements(out);
  const Shape& w = in[1];
  const double mm = 2.0 * o * static_cast<double>(w[1] * w[2] * w[3]);
  const double bias = in.size() == 3 ? o : 0.0;
  return {mm + bias, 2.0 * mm + bias};
}

Flops MoEDispatchFlops(const std::vector<Shape>& in, const Shape&, const Attrs&) {
  return {0, static_cast<double>(NumElements(in[0]) * in[1][1])};
}

Flops MoECombineFlops(const std::vector<Shape>& in, const Shape&, const Attrs&) {
  const double s = static_cast<double>(in[1][0] * in[1][1] * in[0][2]);
  return {2.0 * s, 4.0 * s};
}

// ---------------------------------------------------------------------------------------------
// Attributes for a device's piece.

// A head split keeps the head width C / heads, so the piece has piece[2] / width heads.
void AttentionLocalAttrs(const Shape& whole, const Shape& piece, Attrs& a) {
  const int64_t width = whole[2] / a.heads;
  a.heads = piece[2] / width;
}

// reshape / expand: the target is the piece.
void ShapeIsPiece(const Shape&, const Shape& piece, Attrs& a) { a.shape = piece; }

// conv2d: a channel-group split keeps the group width, so the piece has piece[1] / width groups.
void GroupsOfPiece(const Shape& whole, const Shape& piece, Attrs& a) {
  if (a.groups > 1) a.groups = piece[1] / (whole[1] / a.groups);
}

// moe_dispatch: the device's buffer holds its own experts (dim 0 of the output).
void ExpertsOfPiece(const Shape&, const Shape& piece, Attrs& a) { a.experts = piece[0]; }

// ---------------------------------------------------------------------------------------------
// The table.

using F = Sharding::Family;
constexpr uint32_t Input(int i) { return 1u << i; }

// Each entry names only what differs from OpDef's defaults (one input, memory-bound, its own
// sharding rules, no local attributes); GCC 12 warns about the fields left out anyway.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
constexpr std::array<OpDef, kNumOpKinds> kEntries = {{
    {.kind = OpKind::kLinear, .min_inputs = 2, .max_inputs = 3, .compute = ComputeClass::kGemm,
     .shape = LinearShape, .flops = LinearFlops},
    {.kind = OpKind::kMatMul, .min_inputs = 2, .max_inputs = 2, .compute = ComputeClass::kGemm,
     .shape = MatMulShape, .flops = MatMulFlops},
    {.kind = OpKind::kAdd, .min_inputs = 2, .max_inputs = 2, .shape = BroadcastShape,
     .flops = PerOutput<1, 1>, .sharding = {.family = F::kBroadcasting, .partial = Partial::kSum}},
    {.kind = OpKind::kMul, .min_inputs = 2, .max_inputs = 2, .shape = BroadcastShape,
     .flops = PerOutput<1, 2>, .sharding = {.family = F::kBroadcasting, .partial = Partial::kFirst}},
    {.kind = OpKind::kRelu, .shape = SameShape, .flops = PerOutput<1, 1>,
     .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kGelu, .shape = SameShape, .flops = PerOutput<8, 12>,
     .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kSigmoid, .shape = SameShape, .flops = PerOutput<4, 3>,
     .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kTanh, .shape = SameShape, .flops = PerOutput<4, 3>,
     .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kDropout, .attrs = {"p", "seed"}, .shape = DropoutShape, .flops = DropoutFlops,
     .sharding = {.family = F::kKeepDims}, .locate = {.operand = kOutputOperand, .two_cuts = true}},
    {.kind = OpKind::kLayerNorm, .attrs = {"eps"}, .min_inputs = 3, .max_inputs = 3,
     .shape = LayerNormShape, .flops = PerOutput<8, 12>,
     .sharding = {.family = F::kKeepDims, .whole_trailing_dims = 1}},
    {.kind = OpKind::kSoftmax, .shape = LastDimShape, .flops = PerOutput<5, 4>,
     .sharding = {.family = F::kKeepDims, .whole_trailing_dims = 1}},
    {.kind = OpKind::kLogSoftmax, .shape = LastDimShape, .flops = PerOutput<5, 4>,
     .sharding = {.family = F::kKeepDims, .whole_trailing_dims = 1}},
    {.kind = OpKind::kAttention, .attrs = {"heads", "causal"}, .min_inputs = 3, .max_inputs = 3,
     .compute = ComputeClass::kGemm, .shape = AttentionShape, .flops = AttentionFlops,
     .local_attrs = AttentionLocalAttrs},
    {.kind = OpKind::kCausalMask, .shape = CausalMaskShape, .flops = PerOutput<1, 1>,
     .sharding = {.family = F::kKeepDims, .whole_trailing_dims = 2}},
    // ids are integers: no gradient; a vocab split needs the first table row.
    {.kind = OpKind::kEmbedding, .min_inputs = 2, .max_inputs = 2, .no_grad_inputs = Input(0),
     .integer_input = {.input = 0, .bound_input = 1, .bound_dim = 0}, .shape = EmbeddingShape, .flops = PerOutput<0, 1>, .locate = {.operand = 1, .dim = 0}},
    {.kind = OpKind::kConv2d, .attrs = {"kernel", "stride", "padding", "groups"}, .min_inputs = 2,
     .max_inputs = 3, .compute = ComputeClass::kGemm, .shape = Conv2dShape, .flops = Conv2dFlops,
     .local_attrs = GroupsOfPiece, .locate = {.operand = 0, .two_cuts = true}},
    {.kind = OpKind::kMaxPool2d, .attrs = {"kernel", "stride", "padding", "ceil_mode"}, .shape = Pool2dShape,
     .flops = PerInput<1, 1>, .sharding = {.family = F::kKeepDims, .whole_trailing_dims = 2}},
    {.kind = OpKind::kAdaptiveAvgPool2d, .attrs = {"out_h", "out_w"}, .shape = AdaptiveAvgPool2dShape,
     .flops = PerInput<1, 1>, .sharding = {.family = F::kKeepDims, .whole_trailing_dims = 2}},
    {.kind = OpKind::kFlatten, .attrs = {"axis"}, .shape = FlattenShape, .flops = NoFlops},
    {.kind = OpKind::kReshape, .attrs = {"shape"}, .shape = ReshapeShape, .flops = NoFlops,
     .local_attrs = ShapeIsPiece},
    {.kind = OpKind::kTranspose, .attrs = {"axis", "axis2"}, .shape = TransposeShape, .flops = NoFlops},
    {.kind = OpKind::kConcat, .attrs = {"axis"}, .min_inputs = 1, .max_inputs = kVariadic,
     .shape = ConcatShape, .flops = NoFlops},
    {.kind = OpKind::kSlice, .attrs = {"axis", "start", "length"}, .shape = SliceShape,
     .flops = NoFlops},
    {.kind = OpKind::kExpand, .attrs = {"shape"}, .shape = ExpandShape, .flops = PerOutput<0, 1>,
     .local_attrs = ShapeIsPiece},
    // labels are integers: no gradient; a row split divides by the global number of positions.
    {.kind = OpKind::kCrossEntropy, .min_inputs = 2, .max_inputs = 2, .no_grad_inputs = Input(1),
     .integer_input = {.input = 1, .bound_input = 0, .bound_dim = -1}, .shape = CrossEntropyShape, .flops = PerInput<4, 3>, .locate = {.operand = 0, .two_cuts = true}},
    // Slot assignment depends on every token in order, so the gate only runs replicated.
    {.kind = OpKind::kTopKGate, .attrs = {"k", "capacity"}, .shape = TopKGateShape,
     .flops = PerInput<6, 6>, .sharding = {.family = F::kReplicatedOnly}},
    // The route only selects slots (no gradient); the gate weights reach the gradient through
    // moe_combine's route.
    {.kind = OpKind::kMoEDispatch, .attrs = {"experts", "capacity"}, .min_inputs = 2,
     .max_inputs = 2, .no_grad_inputs = Input(1), .shape = MoEDispatchShape,
     .flops = MoEDispatchFlops, .local_attrs = ExpertsOfPiece,
     .routes = {.input = 1, .expert_operand = kOutputOperand}},
    {.kind = OpKind::kMoECombine, .min_inputs = 2, .max_inputs = 2, .shape = MoECombineShape,
     .flops = MoECombineFlops, .routes = {.input = 1, .expert_operand = 0}},
    {.kind = OpKind::kClip, .attrs = {"min", "max"}, .shape = ClipShape, .flops = PerOutput<2, 2>,
     .sharding = {.family = F::kKeepDims}},
    // Means over the whole batch: a piece of x divides by the full count (its location), so
    // the pieces' moments sum to the whole's — a batch or spatial split gives Reduce moments.
    {.kind = OpKind::kBatchMoments, .shape = BatchMomentsShape, .flops = PerInput<3, 4>,
     .locate = {.operand = 0, .two_cuts = true}},
    {.kind = OpKind::kBatchNorm, .attrs = {"eps"}, .min_inputs = 4, .max_inputs = 4,
     .shape = BatchNormShape, .flops = PerOutput<4, 8>},
    // A split of both operands divides by the global element count: partial losses (Reduce).
    {.kind = OpKind::kMseLoss, .min_inputs = 2, .max_inputs = 2, .shape = MseLossShape, .flops = PerInput<3, 3>,
     .locate = {.operand = 0, .two_cuts = true}},
    {.kind = OpKind::kAvgPool2d, .attrs = {"kernel", "stride", "padding", "ceil_mode", "count_include_pad"},
     .shape = Pool2dShape, .flops = PerInput<1, 1>, .sharding = {.family = F::kKeepDims, .whole_trailing_dims = 2}},
    {.kind = OpKind::kErf, .shape = SameShape, .flops = PerOutput<16, 8>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kToFloat16, .shape = SameShape, .flops = PerOutput<4, 4>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kToBfloat16, .shape = SameShape, .flops = PerOutput<3, 3>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kExp, .shape = SameShape, .flops = PerOutput<12, 2>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kLog, .shape = SameShape, .flops = PerOutput<16, 2>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kAbs, .shape = SameShape, .flops = PerOutput<1, 1>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kNeg, .shape = SameShape, .flops = PerOutput<1, 1>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kReciprocal, .shape = SameShape, .flops = PerOutput<1, 3>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kSqrt, .shape = SameShape, .flops = PerOutput<1, 2>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kSoftplus, .shape = SameShape, .flops = PerOutput<30, 14>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kSoftsign, .shape = SameShape, .flops = PerOutput<3, 4>, .sharding = {.family = F::kKeepDims}},
    {.kind = OpKind::kHardswish, .shape = SameShape, .flops = PerOutput<5, 4>, .sharding = {.family = F::kKeepDims}},
}};
#pragma GCC diagnostic pop

// Names come from HETSYNTH_IR_OPS, so they are written once, next to the enum.
constexpr std::array<std::string_view, kNumOpKinds> kNames = {
#define HETSYNTH_IR_OP_NAME_(camel, snake) snake,
    HETSYNTH_IR_OPS(HETSYNTH_IR_OP_NAME_)
#undef HETSYNTH_IR_OP_NAME_
};
constexpr std::array<std::string_view, kNumOpKinds> kCamelNames = {
#define HETSYNTH_IR_OP_CAMEL_(camel, snake) #camel,
    HETSYNTH_IR_OPS(HETSYNTH_IR_OP_CAMEL_)
#undef HETSYNTH_IR_OP_CAMEL_
};

constexpr std::array<OpDef, kNumOpKinds> Named(std::array<OpDef, kNumOpKinds> t) {
  for (size_t i = 0; i < t.size(); ++i) {
    t[i].name = kNames[i];
    t[i].camel = kCamelNames[i];
  }
  return t;
}

constexpr std::array<OpDef, kNumOpKinds> kTable = Named(kEntries);

// Entry i describes kind i: a missing or misplaced entry fails to compile instead of shifting
// every later op's description.
constexpr bool InOrder() {
  for (size_t i = 0; i < kTable.size(); ++i) {
    if (static_cast<size_t>(kTable[i].kind) != i) return false;
  }
  return true;
}
static_assert(InOrder(), "ir/src/op_table.cc: entry i must describe OpKind i (HETSYNTH_IR_OPS order)");

// Every entry can infer a shape and count FLOPs, with a sane arity and sharding description.
constexpr bool Complete() {
  for (const OpDef& d : kTable) {
    if (d.shape == nullptr || d.flops == nullptr || d.min_inputs < 1) return false;
    if (d.max_inputs != kVariadic && d.max_inputs < d.min_inputs) return false;
    if (d.sharding.family != F::kKeepDims && d.sharding.whole_trailing_dims != 0) return false;
    // Integers carry no gradient, and both inputs named exist in every node of the op.
    const IntegerInput& ii = d.integer_input;
    if (ii.input != kNoOperand) {
      if (ii.input < 0 || ii.input >= d.min_inputs || (d.no_grad_inputs >> ii.input & 1u) == 0) return false;
      if (ii.bound_input < 0 || ii.bound_input >= d.min_inputs) return false;
    }
  }
  return true;
}
static_assert(Complete(),
              "ir/src/op_table.cc: an entry lacks its shape or FLOPs function, has a bad arity, or an "
              "integer input that is not a no-grad input");

}  // namespace

const OpDef& DefOf(OpKind kind) {
  const auto i = static_cast<size_t>(kind);
  HS_CHECK(i < kTable.size(), StrCat("op kind ", i, " is not in the op table"));
  return kTable[i];
}

std::span<const OpDef> OpTable() { return kTable; }

bool IsDifferentiableInput(OpKind kind, size_t input) {
  return input >= 32 || (DefOf(kind).no_grad_inputs >> input & 1u) == 0;
}

bool IsGemmLike(OpKind kind) { return DefOf(kind).compute == ComputeClass::kGemm; }

}  // namespace hetsynth::ir
