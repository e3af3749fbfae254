#include "hetsynth/ir/graph_json.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "hetsynth/ir/input_limits.h"
#include "hetsynth/ir/json_document.h"
#include "hetsynth/ir/regular_file.h"
#include "hetsynth/base/status.h"
#include "hetsynth/base/suggest.h"

namespace hetsynth::ir {
namespace {

using nlohmann::json;
constexpr int kVersion = 1;

const char* KindName(ValueKind k) {
  return k == ValueKind::kInput ? "input" : k == ValueKind::kParameter ? "parameter" : "activation";
}
const char* InitName(Init::Kind k) {
  switch (k) {
    case Init::Kind::kZeros: return "zeros";
    case Init::Kind::kOnes: return "ones";
    case Init::Kind::kNormal: return "normal";
    case Init::Kind::kUniform: return "uniform";
    case Init::Kind::kData: return "data";
  }
  return "zeros";
}

json AttrToJson(const Attrs& a, std::string_view name) {
  if (name == "axis") return a.axis;
  if (name == "axis2") return a.axis2;
  if (name == "start") return a.start;
  if (name == "length") return a.length;
  if (name == "shape") return a.shape;
  if (name == "heads") return a.heads;
  if (name == "causal") return a.causal;
  if (name == "eps") return a.eps;
  if (name == "p") return a.p;
  if (name == "seed") return a.seed;
  if (name == "kernel") return a.kernel;
  if (name == "stride") return a.stride;
  if (name == "padding") return a.padding;
  if (name == "groups") return a.groups;
  if (name == "ceil_mode") return a.ceil_mode;
  if (name == "count_include_pad") return a.count_include_pad;
  if (name == "min") return a.min;
  if (name == "max") return a.max;
  if (name == "out_h") return a.out_h;
  if (name == "out_w") return a.out_w;
  if (name == "k") return a.k;
  if (name == "experts") return a.experts;
  if (name == "capacity") return a.capacity;
  return nullptr;
}

// Sets attribute `name` from j; false when j has the wrong JSON type.
bool AttrFromJson(const json& j, std::string_view name, Attrs* a) {
  auto int_field = [&](int64_t* f) {
    if (!j.is_number_integer()) return false;
    *f = j.get<int64_t>();
    return true;
  };
  if (name == "axis") return int_field(&a->axis);
  if (name == "axis2") return int_field(&a->axis2);
  if (name == "start") return int_field(&a->start);
  if (name == "length") return int_field(&a->length);
  if (name == "heads") return int_field(&a->heads);
  if (name == "kernel") return int_field(&a->kernel);
  if (name == "stride") return int_field(&a->stride);
  if (name == "padding") return int_field(&a->padding);
  if (name == "groups") return int_field(&a->groups);
  if (name == "out_h") return int_field(&a->out_h);
  if (name == "out_w") return int_field(&a->out_w);
  if (name == "k") return int_field(&a->k);
  if (name == "experts") return int_field(&a->experts);
  if (name == "capacity") return int_field(&a->capacity);
  if (name == "seed") {
    if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<int64_t>() >= 0)) return false;
    a->seed = j.get<uint64_t>();
    return true;
  }
  if (name == "causal" || name == "ceil_mode" || name == "count_include_pad") {
    if (!j.is_boolean()) return false;
    (name == "causal" ? a->causal : name == "ceil_mode" ? a->ceil_mode : a->count_include_pad) = j.get<bool>();
    return true;
  }
  if (name == "eps" || name == "p" || name == "min" || name == "max") {
    if (!j.is_number()) return false;
    (name == "eps" ? a->eps : name == "p" ? a->p : name == "min" ? a->min : a->max) = j.get<double>();
    return true;
  }
  if (name == "shape") {
    if (!j.is_array()) return false;
    a->shape.clear();
    for (const json& d : j) {
      if (!d.is_number_integer()) return false;
      a->shape.push_back(d.get<int64_t>());
    }
    return true;
  }
  return false;
}

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  absl::Status Err(const std::string& where, const std::string& what) const {
    return FileError("graph", source_, where, what);
  }

  // Unknown fields are errors: a misspelt "frozn" would otherwise be dropped without a word.
  absl::Status Known(const json& obj, const std::string& where, const std::vector<std::string>& allowed) const {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
        return Err(where, StrCat("unknown field '", Shorten(it.key()), "'", Suggest(it.key(), allowed),
                                 " (expected one of: ", KnownList(allowed), ")"));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Shape> ReadShape(const json& j, const std::string& where) const {
    if (!j.is_array()) return Err(where, "'shape' must be an array of positive integers");
    Shape s;
    for (const json& d : j) {
      if (!d.is_number_integer() || d.get<int64_t>() <= 0) {
        return Err(where, StrCat("'shape' has ", Shorten(d.dump()), "; expected positive integers"));
      }
      s.push_back(d.get<int64_t>());
    }
    return s;
  }

  absl::StatusOr<std::string> ReadName(const json& obj, const std::string& where) const {
    if (!obj.contains("name") || !obj["name"].is_string()) return Err(where, "missing string field 'name'");
    return obj["name"].get<std::string>();
  }

  absl::StatusOr<Graph> Read(const std::string& text) const {
    if (const int depth = JsonNestingDepth(text); depth > kMaxJsonDepth) {
      return Err("document", StrCat("nests arrays/objects ", depth, " deep; expected at most ", kMaxJsonDepth));
    }
    if (IsBlank(text)) return Err("document", "is empty; expected a hetsynth-graph JSON object");
    JsonDocument doc = ParseJsonDocument(text);
    if (!doc.error.empty() && !doc.syntax) return Err("document", doc.error);  // a number out of range
    if (!doc.error.empty()) return Err("document", StrCat("not valid JSON (", Shorten(JsonErrorText(doc.error), 160), ")"));
    json root = std::move(doc.root);
    if (!root.is_object()) return Err("document", "expected a JSON object");
    if (root.value("format", "") != "hetsynth-graph") {
      return Err("field 'format'", "expected \"hetsynth-graph\"");
    }
    if (!root.contains("version") || root["version"] != kVersion) {
      return Err("field 'version'", StrCat(root.contains("version") ? Shorten(root["version"].dump()) : "missing",
                                           "; expected ", kVersion));
    }
    HS_RETURN_IF_ERROR(Known(root, "", {"format", "version", "name", "weights", "values", "nodes", "loss", "running_stats"}));
    if (root.contains("name") && !root["name"].is_string()) {
      return Err("name", StrCat(Shorten(root["name"].dump()), "; expected a string"));
    }
    Graph g(root.value("name", "graph"));
    if (root.contains("weights")) {
      if (!root["weights"].is_string() || root["weights"].get<std::string>().empty()) {
        return Err("field 'weights'", "expected the path of a safetensors file (relative to the graph file)");
      }
      g.set_weights_file(GraphWeightsPath(source_, root["weights"].get<std::string>()));
    }
    if (!root.contains("values") || !root["values"].is_array()) return Err("field 'values'", "missing array");
    for (size_t i = 0; i < root["values"].size(); ++i) {
      const json& v = root["values"][i];
      const std::string where = StrCat("values[", i, "]");
      if (!v.is_object()) return Err(where, "expected an object");
      HS_RETURN_IF_ERROR(Known(v, where, {"name", "kind", "shape", "init", "frozen"}));
      HS_ASSIGN_OR_RETURN(std::string name, ReadName(v, where));
      if (!v.contains("shape")) return Err(where, "missing field 'shape'");
      HS_ASSIGN_OR_RETURN(Shape shape, ReadShape(v["shape"], where));
      const std::string kind = v.value("kind", "");
      absl::StatusOr<ValueId> id = absl::InternalError("unset");
      if (kind == "input") {
        id = g.AddInput(name, shape);
      } else if (kind == "parameter") {
        Init init;
        if (v.contains("init")) {
          const json& in = v["init"];
          if (in.is_object()) HS_RETURN_IF_ERROR(Known(in, StrCat(where, ".init"), {"kind", "scale"}));
          const std::string ik = in.is_object() ? in.value("kind", "") : "";
          if (ik == "zeros") init = Init::Zeros();
          else if (ik == "ones") init = Init::Ones();
          else if ((ik == "normal" || ik == "uniform") && in.contains("scale") && in["scale"].is_number() &&
                   in["scale"].get<double>() >= 0) {
            const double sc = in["scale"].get<double>();
            init = ik == "normal" ? Init::Normal(sc) : Init::Uniform(sc);
          } else if (ik == "data") {
            if (!root.contains("weights") || !root["weights"].is_string()) {
              return Err(where, "'init' is {\"kind\": \"data\"} but the graph names no 'weights' file to take the "
                                "values from (hetsynth import writes both; docs/graph-format.md)");
            }
            init = Init::Stored();
          } else {
            return Err(where, StrCat("'init' is ", Shorten(in.dump()),
                                     "; expected {\"kind\": zeros|ones} or {\"kind\": normal|uniform, "
                                     "\"scale\": non-negative number}"));
          }
        }
        id = g.AddParameter(name, shape, init);
        if (v.contains("frozen")) {
          if (!v["frozen"].is_boolean()) return Err(where, StrCat("'frozen' is ", Shorten(v["frozen"].dump()), "; expected true or false"));
          if (id.ok()) g.SetFrozen(*id, v["frozen"].get<bool>());
        }
      } else {
        return Err(where, StrCat("'kind' is '", kind, "'; expected \"input\" or \"parameter\""));
      }
      if (!id.ok()) return Err(where, std::string(id.status().message()));
    }
    if (!root.contains("nodes") || !root["nodes"].is_array()) return Err("field 'nodes'", "missing array");
    for (size_t i = 0; i < root["nodes"].size(); ++i) {
      const json& n = root["nodes"][i];
      const std::string where = StrCat("nodes[", i, "]");
      if (!n.is_object()) return Err(where, "expected an object");
      HS_RETURN_IF_ERROR(Known(n, where, {"name", "op", "inputs", "attrs"}));
      HS_ASSIGN_OR_RETURN(std::string name, ReadName(n, where));
      OpKind kind;
      if (!n.contains("op") || !n["op"].is_string() || !ParseOpName(n["op"].get<std::string>(), &kind)) {
        return Err(where, StrCat("'op' is ", n.contains("op") ? Shorten(n["op"].dump()) : "missing",
                                 "; expected a known op name (see docs/graph-format.md)"));
      }
      std::vector<ValueId> inputs;
      if (!n.contains("inputs") || !n["inputs"].is_array()) return Err(where, "missing array 'inputs'");
      for (const json& in : n["inputs"]) {
        const ValueId v = in.is_string() ? g.Find(in.get<std::string>()) : kNoValue;
        if (v == kNoValue) {
          return Err(where, StrCat("input ", Shorten(in.dump()), " is not a value defined before this node"));
        }
        inputs.push_back(v);
      }
      Attrs attrs;
      if (n.contains("attrs")) {
        const json& aj = n["attrs"];
        if (!aj.is_object()) return Err(where, "'attrs' must be an object");
        const std::vector<std::string_view> allowed = AttrNames(kind);
        for (auto it = aj.begin(); it != aj.end(); ++it) {
          const bool known = std::find(allowed.begin(), allowed.end(), it.key()) != allowed.end();
          if (!known || !AttrFromJson(it.value(), it.key(), &attrs)) {
            return Err(where, StrCat("attribute '", Shorten(it.key()), "'=", Shorten(it.value().dump()),
                                     known ? " has the wrong type" : " is not an attribute of this op"));
          }
        }
      }
      absl::StatusOr<ValueId> id = g.AddOp(name, kind, inputs, attrs);
      if (!id.ok()) return Err(where, std::string(id.status().message()));
    }
    if (!root.contains("loss") || !root["loss"].is_string()) return Err("field 'loss'", "missing value name");
    const ValueId loss = g.Find(root["loss"].get<std::string>());
    if (loss == kNoValue) return Err("field 'loss'", StrCat("'", root["loss"].get<std::string>(), "' is not a value"));
    absl::Status st = g.SetLoss(loss);
    if (!st.ok()) return Err("field 'loss'", std::string(st.message()));
    if (root.contains("running_stats")) {
      const json& rs = root["running_stats"];
      if (!rs.is_array()) return Err("field 'running_stats'", "expected an array");
      for (size_t i = 0; i < rs.size(); ++i) {
        const json& r = rs[i];
        const std::string where = StrCat("running_stats[", i, "]");
        if (!r.is_object()) return Err(where, "expected an object");
        HS_RETURN_IF_ERROR(Known(r, where, {"name", "shape", "moments", "statistic", "momentum"}));
        RunningStat stat;
        HS_ASSIGN_OR_RETURN(stat.name, ReadName(r, where));
        if (!r.contains("shape")) return Err(where, "missing field 'shape'");
        HS_ASSIGN_OR_RETURN(stat.shape, ReadShape(r["shape"], where));
        const std::string moments = r.value("moments", "");
        stat.moments = g.Find(moments);
        if (stat.moments == kNoValue) return Err(where, StrCat("'moments' is '", Shorten(moments), "'; expected a batch_moments value"));
        const std::string which = r.value("statistic", "");
        if (which != "mean" && which != "variance") return Err(where, StrCat("'statistic' is '", Shorten(which), "'; expected \"mean\" or \"variance\""));
        stat.variance = which == "variance";
        if (!r.contains("momentum") || !r["momentum"].is_number()) return Err(where, "missing number 'momentum'");
        stat.momentum = r["momentum"].get<double>();
        // Values: the weights file's, else PyTorch's starting ones (mean 0, variance 1).
        stat.init = root.contains("weights") ? Init::Stored() : stat.variance ? Init::Ones() : Init::Zeros();
        absl::Status added = g.AddRunningStat(std::move(stat));
        if (!added.ok()) return Err(where, std::string(added.message()));
      }
    }
    return g;
  }

 private:
  std::string source_;
};

}  // namespace

std::string GraphToJson(const Graph& graph) {
  json root;
  root["format"] = "hetsynth-graph";
  root["version"] = kVersion;
  root["name"] = graph.name();
  json values = json::array();
  for (const Value& v : graph.values()) {
    if (v.kind == ValueKind::kActivation) continue;
    json jv = {{"name", v.name}, {"kind", KindName(v.kind)}, {"shape", v.shape}};
    if (v.kind == ValueKind::kParameter) {
      jv["init"] = {{"kind", InitName(v.init.kind)}};
      if (v.init.kind == Init::Kind::kNormal || v.init.kind == Init::Kind::kUniform) {
        jv["init"]["scale"] = v.init.scale;
      }
      if (v.frozen) jv["frozen"] = true;
    }
    values.push_back(std::move(jv));
  }
  root["values"] = std::move(values);
  json nodes = json::array();
  for (const Node& n : graph.nodes()) {
    json jn = {{"name", n.name}, {"op", std::string(OpName(n.kind))}};
    json ins = json::array();
    for (ValueId v : n.inputs) ins.push_back(graph.value(v).name);
    jn["inputs"] = std::move(ins);
    const auto names = AttrNames(n.kind);
    if (!names.empty()) {
      json attrs = json::object();
      for (std::string_view a : names) attrs[std::string(a)] = AttrToJson(n.attrs, a);
      jn["attrs"] = std::move(attrs);
    }
    nodes.push_back(std::move(jn));
  }
  root["nodes"] = std::move(nodes);
  root["loss"] = graph.loss() == kNoValue ? json(nullptr) : json(graph.value(graph.loss()).name);
  if (!graph.running_stats().empty()) {
    json rs = json::array();
    for (const RunningStat& r : graph.running_stats()) {
      rs.push_back({{"name", r.name},
                    {"shape", r.shape},
                    {"moments", graph.value(r.moments).name},
                    {"statistic", r.variance ? "variance" : "mean"},
                    {"momentum", r.momentum}});
    }
    root["running_stats"] = std::move(rs);
  }
  if (!graph.weights_file().empty()) root["weights"] = graph.weights_file();
  return root.dump(1) + "\n";
}

absl::StatusOr<Graph> GraphFromJson(const std::string& text, const std::string& source) {
  Reader r(source);
  try {
    return r.Read(text);
  } catch (const json::exception& e) {  // a field of the wrong JSON type: bad input, not a crash
    return r.Err("document", StrCat("a field has the wrong type (", e.what(), ")"));
  }
}

std::string GraphWeightsPath(const std::string& graph_path, const std::string& weights) {
  const size_t slash = graph_path.find_last_of('/');
  if (weights.empty() || weights[0] == '/' || slash == std::string::npos) return weights;
  return graph_path.substr(0, slash + 1) + weights;
}

absl::StatusOr<Graph> ReadGraphFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(StrCat("graph '", path, "': is a directory; expected a graph file"));
  }
  // Not a regular file (/dev/zero, a FIFO): refused before reading, which would never end.
  HS_ASSIGN_OR_RETURN(std::string text, ReadRegularFile(path, StrCat("graph '", path, "'")));
  HS_ASSIGN_OR_RETURN(Graph g, GraphFromJson(text, path));
  // The weights file is read only when training starts; a graph naming one that is not there
  // is refused now, naming the graph and its field, not later as a bare safetensors error.
  if (const std::string& w = g.weights_file(); !w.empty()) {
    const int fd = ::open(w.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block the check
    const int err = errno;
    struct stat st;
    const bool regular = fd >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (fd >= 0) ::close(fd);
    if (fd < 0 || !regular) {
      return absl::InvalidArgumentError(StrCat("graph '", path, "': weights: '", Shorten(w, 200), "' cannot be opened (",
                                               fd < 0 ? std::strerror(err) : "not a regular file",
                                               "); expected the safetensors file `hetsynth import` wrote next to the graph"));
    }
  }
  return g;
}

}  // namespace hetsynth::ir
