#include "hetsynth/ir/graph.h"

#include "absl/strings/str_join.h"
#include "hetsynth/ir/op_table.h"
#include "hetsynth/base/status.h"

namespace hetsynth::ir {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) { return StrCat("[", absl::StrJoin(shape, ","), "]"); }

namespace {

absl::Status Bad(const std::string& msg) { return absl::InvalidArgumentError(msg); }

absl::Status WantInputs(const std::vector<Shape>& in, const OpDef& def) {
  const size_t lo = static_cast<size_t>(def.min_inputs);
  if (def.max_inputs == kVariadic) {
    if (in.size() >= lo) return absl::OkStatus();
    return Bad(StrCat("takes at least ", lo, lo == 1 ? " input" : " inputs", " but got ", in.size()));
  }
  const size_t hi = static_cast<size_t>(def.max_inputs);
  if (in.size() < lo || in.size() > hi) {
    return Bad(lo == hi ? StrCat("takes ", lo, " inputs but got ", in.size())
                        : StrCat("takes ", lo, " to ", hi, " inputs but got ", in.size()));
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
  if (static_cast<int>(kind) >= kNumOpKinds) return Bad("unknown op kind");
  const OpDef& def = DefOf(kind);
  HS_RETURN_IF_ERROR(WantInputs(in, def));
  return def.shape(in, a);
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
  for (const RunningStat& r : running_stats_) {
    if (r.name == name) return Bad(StrCat("value name '", name, "' is a running statistic's"));
  }
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

std::map<std::string, std::shared_ptr<const std::vector<float>>> Graph::StoreWeightsIn(std::string path) {
  std::map<std::string, std::shared_ptr<const std::vector<float>>> out;
  for (Value& v : values_) {
    if (v.kind != ValueKind::kParameter || v.init.kind != Init::Kind::kData || !v.init.data) continue;
    out.emplace(v.name, std::move(v.init.data));
    v.init = Init::Stored();
  }
  for (RunningStat& r : running_stats_) {
    if (r.init.kind != Init::Kind::kData || !r.init.data) continue;
    out.emplace(r.name, std::move(r.init.data));
    r.init = Init::Stored();
  }
  weights_file_ = std::move(path);
  return out;
}

absl::StatusOr<ValueId> Graph::AddParameter(const std::string& name, const Shape& shape, Init init) {
  HS_RETURN_IF_ERROR(CheckNewName(name));
  for (int64_t d : shape) {
    if (d <= 0) return Bad(StrCat("parameter '", name, "' has shape ", ShapeString(shape), "; expected positive dims"));
  }
  if (init.kind == Init::Kind::kData && init.data && static_cast<int64_t>(init.data->size()) != NumElements(shape)) {
    return Bad(StrCat("parameter '", name, "' of shape ", ShapeString(shape), " has ",
                      init.data->size(), " initial values; expected ", NumElements(shape)));
  }
  const auto id = static_cast<ValueId>(values_.size());
  values_.push_back(Value{name, ValueKind::kParameter, shape, -1, init});
  by_name_[name] = id;
  return id;
}

absl::Status Graph::AddRunningStat(RunningStat stat) {
  const std::string what = StrCat("running statistic '", stat.name, "'");
  if (by_name_.count(stat.name)) return Bad(StrCat(what, ": a value has that name"));
  for (const RunningStat& r : running_stats_) {
    if (r.name == stat.name) return Bad(StrCat(what, ": defined twice"));
  }
  if (stat.moments < 0 || static_cast<size_t>(stat.moments) >= values_.size() || values_[stat.moments].producer < 0 ||
      nodes_[static_cast<size_t>(values_[stat.moments].producer)].kind != OpKind::kBatchMoments) {
    return Bad(StrCat(what, ": its moments are not a batch_moments output"));
  }
  const Shape& m = values_[stat.moments].shape;
  if (stat.shape != Shape{m.at(1)}) {
    return Bad(StrCat(what, " has shape ", ShapeString(stat.shape), "; expected [", m.at(1), "] (one per channel)"));
  }
  if (!(stat.momentum >= 0 && stat.momentum <= 1)) return Bad(StrCat(what, ": momentum ", stat.momentum, "; expected [0, 1]"));
  if (stat.init.kind == Init::Kind::kData && stat.init.data && static_cast<int64_t>(stat.init.data->size()) != m.at(1)) {
    return Bad(StrCat(what, " has ", stat.init.data->size(), " initial values; expected ", m.at(1)));
  }
  running_stats_.push_back(std::move(stat));
  return absl::OkStatus();
}

void Graph::SetFrozen(ValueId id, bool frozen) {
  Value& v = values_.at(static_cast<size_t>(id));
  HS_CHECK(v.kind == ValueKind::kParameter, StrCat("SetFrozen on '", v.name, "', which is not a parameter"));
  v.frozen = frozen;
}

absl::StatusOr<ValueId> Graph::AddConstant(const std::string& name, const Shape& shape, std::vector<float> values) {
  HS_ASSIGN_OR_RETURN(ValueId id, AddParameter(name, shape, Init::Data(std::move(values))));
  SetFrozen(id, true);
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
  std::vector<Shape> in;
  in.reserve(n.inputs.size());
  for (ValueId v : n.inputs) in.push_back(value(v).shape);
  return DefOf(n.kind).flops(in, value(n.output).shape, n.attrs);
}

double Graph::NodeSavedElements(NodeId id) const {
  const Node& n = node(id);
  const Shape& out = value(n.output).shape;
  switch (n.kind) {
    case OpKind::kAttention:  // out [B, T, C]
      return out.size() == 3 ? static_cast<double>(out[0]) * static_cast<double>(n.attrs.heads) *
                                   static_cast<double>(out[1]) * static_cast<double>(out[1])
                             : 0.0;
    case OpKind::kMaxPool2d:
      return static_cast<double>(NumElements(out));
    default:
      return 0.0;
  }
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
