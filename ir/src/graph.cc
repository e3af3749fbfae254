#include "hetsynth/ir/graph.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_join.h"
#include "hetsynth/ir/status.h"

namespace hetsynth::internal {
void CheckFailed(const char* file, int line, const char* cond, const std::string& msg) {
  std::fprintf(stderr, "internal error at %s:%d: check '%s' failed: %s\n", file, line, cond,
               msg.c_str());
  std::abort();
}
}  // namespace hetsynth::internal

namespace hetsynth::ir {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) { return StrCat("[", absl::StrJoin(shape, ","), "]"); }

namespace {

absl::Status Bad(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// Normalizes a possibly negative axis into [0, rank); false when out of range.
bool NormAxis(int64_t axis, size_t rank, int64_t* out) {
  const int64_t r = static_cast<int64_t>(rank);
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r) return false;
  *out = axis;
  return true;
}

absl::Status WantInputs(const std::vector<Shape>& in, size_t lo, size_t hi) {
  if (in.size() < lo || in.size() > hi) {
    return Bad(lo == hi ? StrCat("takes ", lo, " inputs but got ", in.size())
                        : StrCat("takes ", lo, " to ", hi, " inputs but got ", in.size()));
  }
  return absl::OkStatus();
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
                            a_name, " shape ", ShapeString(a),
                            "; expected trailing dims equal to ", a_name, "'s or 1"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Shape> InferShape(OpKind kind, const std::vector<Shape>& in, const Attrs& a) {
  for (size_t i = 0; i < in.size(); ++i) {
    for (int64_t d : in[i]) {
      if (d <= 0) return Bad(StrCat("input ", i, " has shape ", ShapeString(in[i]), "; expected positive dims"));
    }
  }
  switch (kind) {
    case OpKind::kLinear: {
      HS_RETURN_IF_ERROR(WantInputs(in, 2, 3));
      const Shape &x = in[0], &w = in[1];
      if (x.empty()) return Bad("x is a scalar; expected rank >= 1");
      HS_RETURN_IF_ERROR(WantRank(w, "weight", 2));
      if (w[1] != x.back()) {
        return Bad(StrCat("weight has shape ", ShapeString(w), " but x has shape ",
                                ShapeString(x), "; expected weight [out, ", x.back(), "]"));
      }
      if (in.size() == 3 && in[2] != Shape{w[0]}) {
        return Bad(StrCat("bias has shape ", ShapeString(in[2]), "; expected [", w[0], "]"));
      }
      Shape out = x;
      out.back() = w[0];
      return out;
    }
    case OpKind::kMatMul: {
      HS_RETURN_IF_ERROR(WantInputs(in, 2, 2));
      const Shape &x = in[0], &y = in[1];
      if (x.size() < 2 || y.size() < 2) {
        return Bad(StrCat("operands have shapes ", ShapeString(x), " and ", ShapeString(y),
                                "; expected rank >= 2"));
      }
      const bool batch_ok =
          y.size() == 2 || (y.size() == x.size() && std::equal(x.begin(), x.end() - 2, y.begin()));
      if (!batch_ok || x.back() != y[y.size() - 2]) {
        return Bad(StrCat("cannot multiply ", ShapeString(x), " by ", ShapeString(y),
                                "; expected [..., m, k] x [..., k, n] with equal batch dims or "
                                "[k, n]"));
      }
      Shape out = x;
      out.back() = y.back();
      return out;
    }
    case OpKind::kAdd:
    case OpKind::kMul: {
      HS_RETURN_IF_ERROR(WantInputs(in, 2, 2));
      HS_RETURN_IF_ERROR(WantBroadcastable(in[0], in[1], "a", "b"));
      return in[0];
    }
    case OpKind::kRelu:
    case OpKind::kGelu:
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax:
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      if (in[0].empty() && (kind == OpKind::kSoftmax || kind == OpKind::kLogSoftmax)) {
        return Bad("x is a scalar; expected rank >= 1");
      }
      return in[0];
    case OpKind::kDropout:
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      if (!(a.p >= 0.0 && a.p < 1.0)) return Bad(StrCat("p=", a.p, "; expected 0 <= p < 1"));
      return in[0];
    case OpKind::kLayerNorm: {
      HS_RETURN_IF_ERROR(WantInputs(in, 3, 3));
      if (in[0].empty()) return Bad("x is a scalar; expected rank >= 1");
      const Shape c = {in[0].back()};
      if (in[1] != c || in[2] != c) {
        return Bad(StrCat("gamma/beta have shapes ", ShapeString(in[1]), "/",
                                ShapeString(in[2]), "; expected ", ShapeString(c)));
      }
      if (!(a.eps > 0)) return Bad(StrCat("eps=", a.eps, "; expected a positive number"));
      return in[0];
    }
    case OpKind::kAttention: {
      HS_RETURN_IF_ERROR(WantInputs(in, 3, 3));
      HS_RETURN_IF_ERROR(WantRank(in[0], "q", 3));
      if (in[1] != in[0] || in[2] != in[0]) {
        return Bad(StrCat("q, k, v have shapes ", ShapeString(in[0]), ", ",
                                ShapeString(in[1]), ", ", ShapeString(in[2]),
                                "; expected three equal [B,T,C] shapes"));
      }
      if (a.heads <= 0 || in[0][2] % a.heads != 0) {
        return Bad(StrCat("heads=", a.heads, " does not divide hidden ", in[0][2],
                                "; expected a positive divisor"));
      }
      return in[0];
    }
    case OpKind::kCausalMask:
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      if (in[0].size() < 2 || in[0][in[0].size() - 1] != in[0][in[0].size() - 2]) {
        return Bad(StrCat("x has shape ", ShapeString(in[0]), "; expected [..., T, T]"));
      }
      return in[0];
    case OpKind::kEmbedding: {
      HS_RETURN_IF_ERROR(WantInputs(in, 2, 2));
      HS_RETURN_IF_ERROR(WantRank(in[1], "table", 2));
      Shape out = in[0];
      out.push_back(in[1][1]);
      return out;
    }
    case OpKind::kConv2d: {
      HS_RETURN_IF_ERROR(WantInputs(in, 2, 3));
      HS_RETURN_IF_ERROR(WantRank(in[0], "x", 4));
      HS_RETURN_IF_ERROR(WantRank(in[1], "weight", 4));
      const Shape &x = in[0], &w = in[1];
      if (w[1] != x[1] || w[2] != a.kernel || w[3] != a.kernel) {
        return Bad(StrCat("weight has shape ", ShapeString(w), " for x ", ShapeString(x),
                                " and kernel=", a.kernel, "; expected [out, ", x[1], ", ",
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
        return Bad(StrCat("kernel=", a.kernel, " is larger than the padded input ",
                                ShapeString(x)));
      }
      return Shape{x[0], w[0], h, wd};
    }
    case OpKind::kMaxPool2d: {
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      HS_RETURN_IF_ERROR(WantRank(in[0], "x", 4));
      const Shape& x = in[0];
      if (a.kernel <= 0 || a.stride <= 0 || a.kernel > x[2] || a.kernel > x[3]) {
        return Bad(StrCat("kernel=", a.kernel, " stride=", a.stride, " for x ",
                                ShapeString(x), "; expected 0 < kernel <= H, W and stride > 0"));
      }
      return Shape{x[0], x[1], (x[2] - a.kernel) / a.stride + 1, (x[3] - a.kernel) / a.stride + 1};
    }
    case OpKind::kAdaptiveAvgPool2d: {
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      HS_RETURN_IF_ERROR(WantRank(in[0], "x", 4));
      const Shape& x = in[0];
      if (a.out_h <= 0 || a.out_w <= 0 || a.out_h > x[2] || a.out_w > x[3]) {
        return Bad(StrCat("out_h=", a.out_h, " out_w=", a.out_w, " for x ",
                                ShapeString(x), "; expected 0 < out_h <= H and 0 < out_w <= W"));
      }
      return Shape{x[0], x[1], a.out_h, a.out_w};
    }
    case OpKind::kFlatten: {
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      int64_t axis;
      if (!NormAxis(a.axis, in[0].size(), &axis)) {
        return Bad(StrCat("axis=", a.axis, " out of range for ", ShapeString(in[0])));
      }
      Shape out(in[0].begin(), in[0].begin() + axis);
      out.push_back(NumElements(Shape(in[0].begin() + axis, in[0].end())));
      return out;
    }
    case OpKind::kReshape:
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      for (int64_t d : a.shape) {
        if (d <= 0) return Bad(StrCat("shape=", ShapeString(a.shape), "; expected positive dims"));
      }
      if (NumElements(a.shape) != NumElements(in[0])) {
        return Bad(StrCat("cannot reshape ", ShapeString(in[0]), " to ",
                                ShapeString(a.shape), "; element counts differ"));
      }
      return a.shape;
    case OpKind::kTranspose: {
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      int64_t d0, d1;
      if (!NormAxis(a.axis, in[0].size(), &d0) || !NormAxis(a.axis2, in[0].size(), &d1)) {
        return Bad(StrCat("axes ", a.axis, ", ", a.axis2, " out of range for ",
                                ShapeString(in[0])));
      }
      Shape out = in[0];
      std::swap(out[d0], out[d1]);
      return out;
    }
    case OpKind::kConcat: {
      if (in.empty()) return Bad("takes at least 1 input but got 0");
      int64_t axis;
      if (!NormAxis(a.axis, in[0].size(), &axis)) {
        return Bad(StrCat("axis=", a.axis, " out of range for ", ShapeString(in[0])));
      }
      Shape out = in[0];
      for (size_t i = 1; i < in.size(); ++i) {
        Shape probe = in[i];
        if (probe.size() == out.size()) probe[axis] = out[axis];
        if (probe != out) {
          return Bad(StrCat("input ", i, " has shape ", ShapeString(in[i]),
                                  "; expected ", ShapeString(in[0]), " except along axis ", axis));
        }
        out[axis] += in[i][axis];
      }
      return out;
    }
    case OpKind::kSlice: {
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      int64_t axis;
      if (!NormAxis(a.axis, in[0].size(), &axis)) {
        return Bad(StrCat("axis=", a.axis, " out of range for ", ShapeString(in[0])));
      }
      if (a.start < 0 || a.length <= 0 || a.start + a.length > in[0][axis]) {
        return Bad(StrCat("start=", a.start, " length=", a.length, " for dim of size ",
                                in[0][axis], "; expected 0 <= start < start+length <= size"));
      }
      Shape out = in[0];
      out[axis] = a.length;
      return out;
    }
    case OpKind::kExpand:
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      for (int64_t d : a.shape) {
        if (d <= 0) return Bad(StrCat("shape=", ShapeString(a.shape), "; expected positive dims"));
      }
      HS_RETURN_IF_ERROR(WantBroadcastable(a.shape, in[0], "target", "x"));
      return a.shape;
    case OpKind::kCrossEntropy: {
      HS_RETURN_IF_ERROR(WantInputs(in, 2, 2));
      if (in[0].empty() || Shape(in[0].begin(), in[0].end() - 1) != in[1]) {
        return Bad(StrCat("logits ", ShapeString(in[0]), " and labels ",
                                ShapeString(in[1]),
                                " do not match; expected logits [..., K] and labels [...]"));
      }
      return Shape{};
    }
    case OpKind::kTopKGate:
      HS_RETURN_IF_ERROR(WantInputs(in, 1, 1));
      HS_RETURN_IF_ERROR(WantRank(in[0], "logits", 2));
      if (a.k <= 0 || a.k > in[0][1] || a.capacity <= 0) {
        return Bad(StrCat("k=", a.k, " capacity=", a.capacity, " with ", in[0][1],
                                " experts; expected 1 <= k <= experts and capacity > 0"));
      }
      return Shape{in[0][0], a.k, 3};
    case OpKind::kMoEDispatch:
      HS_RETURN_IF_ERROR(WantInputs(in, 2, 2));
      HS_RETURN_IF_ERROR(WantRank(in[0], "x", 2));
      HS_RETURN_IF_ERROR(WantRank(in[1], "route", 3));
      if (in[1][0] != in[0][0] || in[1][2] != 3) {
        return Bad(StrCat("route has shape ", ShapeString(in[1]), " for x ",
                                ShapeString(in[0]), "; expected [", in[0][0], ", k, 3]"));
      }
      if (a.experts <= 0 || a.capacity <= 0) {
        return Bad(StrCat("experts=", a.experts, " capacity=", a.capacity,
                                "; expected positive numbers"));
      }
      return Shape{a.experts, a.capacity, in[0][1]};
    case OpKind::kMoECombine:
      HS_RETURN_IF_ERROR(WantInputs(in, 2, 2));
      HS_RETURN_IF_ERROR(WantRank(in[0], "y", 3));
      HS_RETURN_IF_ERROR(WantRank(in[1], "route", 3));
      if (in[1][2] != 3) {
        return Bad(StrCat("route has shape ", ShapeString(in[1]), "; expected [S, k, 3]"));
      }
      return Shape{in[1][0], in[0][2]};
  }
  return Bad("unknown op kind");
}

// ---------------------------------------------------------------------------------------------
// Graph

std::vector<ValueId> Graph::inputs() const {
  std::vector<ValueId> out;
  for (size_t i = 0; i < values_.size(); ++i) {
    if (values_[i].kind == ValueKind::kInput) out.push_back(static_cast<ValueId>(i));
  }
  return out;
}

std::vector<ValueId> Graph::parameters() const {
  std::vector<ValueId> out;
  for (size_t i = 0; i < values_.size(); ++i) {
    if (values_[i].kind == ValueKind::kParameter) out.push_back(static_cast<ValueId>(i));
  }
  return out;
}

ValueId Graph::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? kNoValue : it->second;
}

absl::Status Graph::CheckNewName(const std::string& name) const {
  if (name.empty()) return Bad("empty value name; expected a unique non-empty name");
  if (by_name_.count(name)) return Bad(StrCat("duplicate value name '", name, "'"));
  return absl::OkStatus();
}

absl::StatusOr<ValueId> Graph::AddInput(const std::string& name, const Shape& shape) {
  HS_RETURN_IF_ERROR(CheckNewName(name));
  for (int64_t d : shape) {
    if (d <= 0) return Bad(StrCat("input '", name, "' has shape ", ShapeString(shape), "; expected positive dims"));
  }
  const auto id = static_cast<ValueId>(values_.size());
  values_.push_back(Value{name, ValueKind::kInput, shape, -1, {}});
  by_name_[name] = id;
  return id;
}

absl::StatusOr<ValueId> Graph::AddParameter(const std::string& name, const Shape& shape, Init init) {
  HS_RETURN_IF_ERROR(CheckNewName(name));
  for (int64_t d : shape) {
    if (d <= 0) return Bad(StrCat("parameter '", name, "' has shape ", ShapeString(shape), "; expected positive dims"));
  }
  const auto id = static_cast<ValueId>(values_.size());
  values_.push_back(Value{name, ValueKind::kParameter, shape, -1, init});
  by_name_[name] = id;
  return id;
}

absl::StatusOr<ValueId> Graph::AddOp(const std::string& name, OpKind kind,
                                     const std::vector<ValueId>& inputs, const Attrs& attrs) {
  HS_RETURN_IF_ERROR(CheckNewName(name));
  std::vector<Shape> shapes;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] < 0 || static_cast<size_t>(inputs[i]) >= values_.size()) {
      return Bad(StrCat("node '", name, "' (", OpName(kind), "): input ", i,
                              " refers to value ", inputs[i], " which does not exist"));
    }
    shapes.push_back(values_[inputs[i]].shape);
  }
  absl::StatusOr<Shape> shape = InferShape(kind, shapes, attrs);
  if (!shape.ok()) {
    std::vector<std::string> in_names;
    for (ValueId v : inputs) in_names.push_back(StrCat("'", values_[v].name, "'"));
    return Bad(StrCat("node '", name, "' (", OpName(kind), " of ",
                            absl::StrJoin(in_names, ", "), "): ", shape.status().message()));
  }
  const auto id = static_cast<ValueId>(values_.size());
  const auto node_id = static_cast<NodeId>(nodes_.size());
  values_.push_back(Value{name, ValueKind::kActivation, *shape, node_id, {}});
  by_name_[name] = id;
  nodes_.push_back(Node{name, kind, inputs, id, attrs});
  return id;
}

absl::Status Graph::SetLoss(ValueId loss) {
  if (loss < 0 || static_cast<size_t>(loss) >= values_.size()) {
    return Bad(StrCat("loss refers to value ", loss, " which does not exist"));
  }
  if (!values_[loss].shape.empty() || values_[loss].kind != ValueKind::kActivation) {
    return Bad(StrCat("loss '", values_[loss].name, "' has shape ",
                            ShapeString(values_[loss].shape), "; expected a scalar op output"));
  }
  loss_ = loss;
  return absl::OkStatus();
}

absl::Status Graph::Validate() const {
  if (loss_ == kNoValue) return Bad(StrCat("graph '", name_, "' has no loss"));
  for (size_t n = 0; n < nodes_.size(); ++n) {
    const Node& node = nodes_[n];
    std::vector<Shape> shapes;
    for (ValueId v : node.inputs) {
      if (v < 0 || static_cast<size_t>(v) >= values_.size() ||
          (values_[v].producer >= static_cast<NodeId>(n))) {
        return Bad(StrCat("node '", node.name, "' uses value ", v,
                                " before it is defined"));
      }
      shapes.push_back(values_[v].shape);
    }
    absl::StatusOr<Shape> shape = InferShape(node.kind, shapes, node.attrs);
    if (!shape.ok()) return Bad(StrCat("node '", node.name, "': ", shape.status().message()));
    if (*shape != values_[node.output].shape) {
      return Bad(StrCat("node '", node.name, "' output has shape ",
                              ShapeString(values_[node.output].shape), "; inferred ",
                              ShapeString(*shape)));
    }
  }
  return absl::OkStatus();
}

Flops Graph::NodeFlops(NodeId id) const {
  const Node& n = node(id);
  auto in = [&](size_t i) -> const Shape& { return value(n.inputs[i]).shape; };
  const Shape& out = value(n.output).shape;
  const double o = static_cast<double>(NumElements(out));
  const double x = n.inputs.empty() ? 0.0 : static_cast<double>(NumElements(in(0)));
  switch (n.kind) {
    case OpKind::kLinear: {
      const double rows = o / static_cast<double>(out.back());
      const double mm = 2.0 * rows * static_cast<double>(in(1)[0] * in(1)[1]);
      const double bias = n.inputs.size() == 3 ? o : 0.0;
      return {mm + bias, 2.0 * mm + bias};
    }
    case OpKind::kMatMul: {
      const double mm = 2.0 * o * static_cast<double>(in(0).back());
      return {mm, 2.0 * mm};
    }
    case OpKind::kAdd: return {o, o};
    case OpKind::kMul: return {o, 2.0 * o};
    case OpKind::kRelu: return {o, o};
    case OpKind::kGelu: return {8.0 * o, 12.0 * o};
    case OpKind::kDropout: return n.attrs.p > 0 ? Flops{o, o} : Flops{0, 0};
    case OpKind::kLayerNorm: return {8.0 * o, 12.0 * o};
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax: return {5.0 * o, 4.0 * o};
    case OpKind::kAttention: {
      const double b = static_cast<double>(out[0]), t = static_cast<double>(out[1]),
                   c = static_cast<double>(out[2]), h = static_cast<double>(n.attrs.heads);
      const double mm = 4.0 * b * t * t * c;  // q·kᵀ and p·v
      const double sm = 5.0 * b * h * t * t;
      return {mm + sm, 2.0 * mm + sm};
    }
    case OpKind::kCausalMask: return {o, o};
    case OpKind::kEmbedding: return {0, o};
    case OpKind::kConv2d: {
      const Shape& w = in(1);
      const double mm = 2.0 * o * static_cast<double>(w[1] * w[2] * w[3]);
      const double bias = n.inputs.size() == 3 ? o : 0.0;
      return {mm + bias, 2.0 * mm + bias};
    }
    case OpKind::kMaxPool2d:
    case OpKind::kAdaptiveAvgPool2d: return {x, x};
    case OpKind::kFlatten:
    case OpKind::kReshape:
    case OpKind::kTranspose:
    case OpKind::kConcat:
    case OpKind::kSlice: return {0, 0};
    case OpKind::kExpand: return {0, o};
    case OpKind::kCrossEntropy: return {4.0 * x, 3.0 * x};
    case OpKind::kTopKGate: return {6.0 * x, 6.0 * x};
    case OpKind::kMoEDispatch: return {0, static_cast<double>(NumElements(in(0)) * in(1)[1])};
    case OpKind::kMoECombine: {
      const double s = static_cast<double>(in(1)[0] * in(1)[1] * in(0)[2]);
      return {2.0 * s, 4.0 * s};
    }
  }
  return {};
}

Flops Graph::TotalFlops() const {
  Flops total;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Flops f = NodeFlops(static_cast<NodeId>(i));
    total.forward += f.forward;
    total.backward += f.backward;
  }
  return total;
}

int64_t Graph::NumParameterElements() const {
  int64_t n = 0;
  for (const Value& v : values_) {
    if (v.kind == ValueKind::kParameter) n += NumElements(v.shape);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Builder

ValueId Builder::Keep(absl::StatusOr<ValueId> v) {
  if (!status_.ok()) return kNoValue;
  if (!v.ok()) {
    status_ = v.status();
    return kNoValue;
  }
  return *v;
}

ValueId Builder::Input(const std::string& name, const Shape& shape) {
  if (!status_.ok()) return kNoValue;
  return Keep(graph_.AddInput(name, shape));
}

ValueId Builder::Parameter(const std::string& name, const Shape& shape, Init init) {
  if (!status_.ok()) return kNoValue;
  return Keep(graph_.AddParameter(name, shape, init));
}

ValueId Builder::Op(const std::string& name, OpKind kind, const std::vector<ValueId>& inputs,
                    const Attrs& attrs) {
  if (!status_.ok()) return kNoValue;
  return Keep(graph_.AddOp(name, kind, inputs, attrs));
}

void Builder::SetLoss(ValueId loss) {
  if (!status_.ok()) return;
  status_ = graph_.SetLoss(loss);
}

ValueId Builder::Linear(const std::string& name, ValueId x, ValueId w, ValueId b) {
  if (b == kNoValue) return Op(name, OpKind::kLinear, {x, w});
  return Op(name, OpKind::kLinear, {x, w, b});
}

ValueId Builder::Reshape(const std::string& name, ValueId x, const Shape& shape) {
  Attrs a;
  a.shape = shape;
  return Op(name, OpKind::kReshape, {x}, a);
}

absl::StatusOr<Graph> Builder::Finish() && {
  if (!status_.ok()) return status_;
  if (graph_.loss() == kNoValue) return Bad(StrCat("graph '", graph_.name(), "' has no loss"));
  return std::move(graph_);
}

}  // namespace hetsynth::ir
