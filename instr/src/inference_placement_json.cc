// InferencePlacement files (docs/inference.md): written by `hetsynth place`, checked field by field on
// reading; every error names the file, the field and the value.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "hetsynth/base/status.h"
#include "hetsynth/instr/inference_placement.h"
#include "hetsynth/ir/input_limits.h"
#include "run_header_json.h"

namespace hetsynth::instr {
namespace {

using nlohmann::json;
constexpr int kVersion = 1;

// Every field each object of a placement may have (docs/inference.md); any other is an error.
const std::vector<std::string> kTopFields = {"format", "version", "model", "model_elements", "cluster", "method",
                                             "predicted_latency_s", "solver", "methods", "groups", "edges"};
const std::vector<std::string> kGroupFields = {"name", "device", "start_s", "finish_s", "ops"};
const std::vector<std::string> kSolverFields = {"lower_bound_s", "gap", "optimal", "solve_s", "solver_calls"};
const std::vector<std::string> kMethodFields = {"method", "feasible", "latency_s", "solve_s", "note"};

// The fp32 elements of every value of the graph (parameters, inputs, activations): what a batch
// or an argument edited after `place` changes, where no edge's bytes would show it (one group).
int64_t GraphElements(const ir::Graph& g) {
  int64_t n = 0;
  for (const ir::Value& v : g.values()) n += ir::NumElements(v.shape);
  return n;
}

// Predicted seconds beyond this are no prediction of a real run.
constexpr double kMaxSeconds = 1e9;

class Reader {
 public:
  explicit Reader(std::string source)
      : source_(std::move(source)), f_([this](const std::string& where, const std::string& what) { return Err(where, what); }) {}

  absl::Status Err(const std::string& where, const std::string& what) const {
    return FileError("placement", source_, where, what);
  }

  absl::StatusOr<json> Parse(const std::string& text) const {
    HS_ASSIGN_OR_RETURN(json root, json_internal::ParseObject(
                                       text, [this](const std::string& where, const std::string& what) { return Err(where, what); }));
    if (root.value("format", json("")) != "hetsynth-placement") {
      return Err("field 'format'", StrCat(root.contains("format") ? ir::Shorten(root["format"].dump()) : "missing",
                                          "; expected \"hetsynth-placement\""));
    }
    if (!root.contains("version") || root["version"] != kVersion) {
      return Err("field 'version'", StrCat(root.contains("version") ? ir::Shorten(root["version"].dump()) : "missing",
                                           "; expected ", kVersion));
    }
    HS_RETURN_IF_ERROR(f_.Known(root, "", kTopFields));
    return root;
  }

  absl::Status Seconds(const json& obj, const std::string& where, const char* field, double* out) const {
    return f_.Number(obj, where, field, false, 0, kMaxSeconds, "seconds", out);
  }

  absl::StatusOr<InferencePlacement> Header(const json& root) const {
    InferencePlacement p;
    json_internal::RunHeader h;
    HS_RETURN_IF_ERROR(json_internal::ReadRunHeader(
        root, [this](const std::string& where, const std::string& what) { return Err(where, what); }, &h));
    json_internal::MoveRunHeader(std::move(h), &p);
    HS_RETURN_IF_ERROR(Method(root, "", &p.method));
    // Required: infer reports its measurement against it.
    HS_RETURN_IF_ERROR(f_.Number(root, "", "predicted_latency_s", true, 0, kMaxSeconds, "seconds", &p.predicted_latency_s));
    return p;
  }

  // `method`: one of the methods `hetsynth place` writes.
  absl::Status Method(const json& obj, const std::string& where, std::string* out) const {
    HS_RETURN_IF_ERROR(f_.String(obj, where, "method", true, out));
    const std::vector<std::string>& names = PlacementMethodNames();
    if (std::find(names.begin(), names.end(), *out) == names.end()) {
      return Err(json_internal::At(where, "method"), StrCat("\"", ir::Shorten(*out), "\"", Suggest(*out, names),
                                                            "; expected one of ", KnownList(names)));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<InferencePlacement> Full(const ir::Graph& g, const json& root) const {
    HS_ASSIGN_OR_RETURN(InferencePlacement p, Header(root));
    HS_ASSIGN_OR_RETURN(const json* groups, f_.Array(root, "", "groups", true, "a non-empty array of groups"));
    if (groups->empty()) return f_.Expected("groups", *groups, "a non-empty array of groups");
    const ir::NodeId loss = g.loss() == ir::kNoValue ? -1 : g.value(g.loss()).producer;
    std::vector<int> seen(g.nodes().size(), -1);
    for (size_t k = 0; k < groups->size(); ++k) {
      const json& gr = (*groups)[k];
      const std::string where = StrCat("groups[", k, "]");
      if (!gr.is_object()) return f_.Expected(where, gr, "a group object");
      HS_RETURN_IF_ERROR(f_.Known(gr, where, kGroupFields));
      InferencePlacementGroup out;
      std::string name, device;
      HS_RETURN_IF_ERROR(f_.String(gr, where, "name", false, &name));
      HS_RETURN_IF_ERROR(f_.String(gr, where, "device", true, &device));
      const auto it = std::find(p.devices.begin(), p.devices.end(), device);
      if (it == p.devices.end()) {
        return Err(StrCat(where, ".device"), StrCat("'", ir::Shorten(device), "' is not in cluster.devices"));
      }
      out.device = static_cast<int>(it - p.devices.begin());
      HS_ASSIGN_OR_RETURN(const json* ops, f_.Array(gr, where, "ops", true, "a non-empty array of op names"));
      if (ops->empty()) return f_.Expected(StrCat(where, ".ops"), *ops, "a non-empty array of op names");
      for (size_t i = 0; i < ops->size(); ++i) {
        const json& op = (*ops)[i];
        const std::string at = StrCat(where, ".ops[", i, "]");
        if (!op.is_string()) return f_.Expected(at, op, "an op name");
        const std::string op_name = op.get<std::string>();
        const ir::ValueId v = g.Find(op_name);
        const ir::NodeId n = v == ir::kNoValue ? -1 : g.value(v).producer;
        if (n < 0) return Err(at, StrCat("'", ir::Shorten(op_name), "' is not an op of model '", p.model, "'"));
        if (n == loss) return Err(at, StrCat("'", ir::Shorten(op_name), "' is the loss, not a forward op"));
        if (seen[n] >= 0) {
          return Err(at, StrCat("'", ir::Shorten(op_name), "' is placed twice (also in groups[", seen[n], "])"));
        }
        seen[n] = static_cast<int>(k);
        out.ops.push_back(n);
      }
      std::sort(out.ops.begin(), out.ops.end());
      out.name = g.node(out.ops.front()).name;
      HS_RETURN_IF_ERROR(Seconds(gr, where, "start_s", &out.start_s));
      HS_RETURN_IF_ERROR(Seconds(gr, where, "finish_s", &out.finish_s));
      if (out.finish_s < out.start_s) {
        return Err(StrCat(where, ".finish_s"), StrCat(out.finish_s, "; expected no earlier than its start_s ", out.start_s));
      }
      p.groups.push_back(std::move(out));
    }
    for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(g.nodes().size()); ++n) {
      if (n != loss && seen[n] < 0) {
        return Err("field 'groups'", StrCat("op '", ir::Shorten(g.node(n).name), "' is in no group; expected every forward op once"));
      }
    }
    // Groups must be a topological order of the ops' dependencies; the values each group reads
    // from another are the edges the file must list (what `place` writes: their bytes at this
    // model and batch).
    std::map<std::pair<int, int>, std::set<ir::ValueId>> sent;
    for (size_t k = 0; k < p.groups.size(); ++k) {
      for (ir::NodeId n : p.groups[k].ops) {
        for (ir::ValueId v : g.node(n).inputs) {
          const ir::NodeId q = g.value(v).producer;
          if (q < 0 || q == loss || seen[q] == static_cast<int>(k)) continue;
          if (seen[q] > static_cast<int>(k)) {
            return Err(StrCat("groups[", k, "]"), StrCat("op '", ir::Shorten(g.node(n).name), "' reads '", ir::Shorten(g.node(q).name),
                                                         "' of the later groups[", seen[q], "]; expected groups in dependency order"));
          }
          sent[{seen[q], static_cast<int>(k)}].insert(v);
        }
      }
    }
    std::map<std::pair<int, int>, double> want;
    for (const auto& [pair, values] : sent) {
      double bytes = 0;
      for (ir::ValueId v : values) bytes += 4.0 * static_cast<double>(ir::NumElements(g.value(v).shape));  // fp32
      want[pair] = bytes;
    }
    HS_ASSIGN_OR_RETURN(const json* edges, f_.Array(root, "", "edges", !want.empty(), "an array of [from, to, bytes, transfer_s]"));
    std::set<std::pair<int, int>> listed;
    for (size_t k = 0; edges != nullptr && k < edges->size(); ++k) {
      const json& e = (*edges)[k];
      const std::string where = StrCat("edges[", k, "]");
      const int ng = static_cast<int>(p.groups.size());
      if (!e.is_array() || e.size() != 4 || !e[0].is_number_integer() || !e[1].is_number_integer() ||
          !e[2].is_number() || e[0].get<int64_t>() < 0 || e[0].get<int64_t>() >= e[1].get<int64_t>() ||
          e[1].get<int64_t>() >= ng || !(e[2].get<double>() >= 0) || !e[3].is_number() ||
          !(e[3].get<double>() >= 0) || !(e[3].get<double>() <= kMaxSeconds)) {
        return Err(where, StrCat(ir::Shorten(e.dump()), "; expected [from, to, bytes, transfer_s] with 0 <= from < to < ", ng,
                                 ", bytes >= 0 and seconds in [0, ", kMaxSeconds, "]"));
      }
      const std::pair<int, int> pair{static_cast<int>(e[0].get<int64_t>()), static_cast<int>(e[1].get<int64_t>())};
      const auto w = want.find(pair);
      if (w == want.end()) {
        return Err(where, StrCat(ir::Shorten(e.dump()), ": groups[", pair.second, "] reads nothing of groups[", pair.first,
                                 "]; expected an edge only where a group reads another's output"));
      }
      if (e[2].get<double>() != w->second) {
        return Err(StrCat(where, "[2]"), StrCat(ir::Shorten(e[2].dump()), " bytes; expected ", json(w->second).dump(), " (the fp32 values groups[",
                                                pair.second, "] reads of groups[", pair.first, "] at batch ", p.batch, ")"));
      }
      if (!listed.insert(pair).second) return Err(where, StrCat(ir::Shorten(e.dump()), " lists the pair a second time"));
      p.edges.push_back({pair.first, pair.second, e[2].get<double>(), e[3].get<double>()});
    }
    for (const auto& [pair, bytes] : want) {
      if (!listed.count(pair)) {
        return Err("field 'edges'", StrCat("no edge [", pair.first, ", ", pair.second, ", ...]; groups[", pair.second, "] reads ",
                                           json(bytes).dump(), " bytes of groups[", pair.first, "]"));
      }
    }
    // Checked after the edges, whose bytes name the pair of groups an edit shows in.
    int64_t elements = -1;  // optional: files written before it was recorded have none
    HS_RETURN_IF_ERROR(f_.Int(root, "", "model_elements", false, 0, std::numeric_limits<int64_t>::max(), &elements));
    if (elements < 0 && p.edges.empty()) {
      // A file from before the field with one group: nothing would show an edited model.
      return Err("model_elements", "missing, and no edges whose bytes tie the groups to the model; write the placement "
                                   "again with 'hetsynth place'");
    }
    if (elements >= 0 && elements != GraphElements(g)) {
      return Err("model_elements", StrCat(elements, "; the model rebuilt from field 'model' (", p.model, ", batch ", p.batch,
                                          ", its args) has ", GraphElements(g),
                                          ": the file was placed for another model, batch or args"));
    }
    HS_ASSIGN_OR_RETURN(const json* s, f_.Object(root, "", "solver", false));
    if (s != nullptr) {
      HS_RETURN_IF_ERROR(f_.Known(*s, "solver", kSolverFields));
      HS_RETURN_IF_ERROR(Seconds(*s, "solver", "lower_bound_s", &p.lower_bound_s));
      HS_RETURN_IF_ERROR(Seconds(*s, "solver", "solve_s", &p.solve_s));
      HS_RETURN_IF_ERROR(f_.Number(*s, "solver", "gap", false, 0, 1, "fraction", &p.gap));
      int64_t calls = 0;
      HS_RETURN_IF_ERROR(f_.Int(*s, "solver", "solver_calls", false, 0, std::numeric_limits<int>::max(), &calls));
      p.solver_calls = static_cast<int>(calls);
      HS_RETURN_IF_ERROR(f_.Bool(*s, "solver", "optimal", false, &p.optimal));
    }
    HS_ASSIGN_OR_RETURN(const json* methods, f_.Array(root, "", "methods", false, "an array of methods"));
    for (size_t k = 0; methods != nullptr && k < methods->size(); ++k) {
      const json& m = (*methods)[k];
      const std::string where = StrCat("methods[", k, "]");
      if (!m.is_object()) return f_.Expected(where, m, "an object with string 'method' and boolean 'feasible'");
      HS_RETURN_IF_ERROR(f_.Known(m, where, kMethodFields));
      InferencePlacementMethod pm;
      HS_RETURN_IF_ERROR(Method(m, where, &pm.method));
      HS_RETURN_IF_ERROR(f_.Bool(m, where, "feasible", true, &pm.feasible));
      HS_RETURN_IF_ERROR(f_.String(m, where, "note", false, &pm.note));
      HS_RETURN_IF_ERROR(Seconds(m, where, "latency_s", &pm.latency_s));
      HS_RETURN_IF_ERROR(Seconds(m, where, "solve_s", &pm.solve_s));
      p.methods.push_back(std::move(pm));
    }
    return p;
  }

 private:
  std::string source_;
  json_internal::Fields f_;
};

}  // namespace

const std::vector<std::string>& PlacementMethodNames() {
  static const std::vector<std::string> names = {"single", "even", "speed", "heft", "milp"};
  return names;
}

std::string InferencePlacementToJson(const ir::Graph& g, const InferencePlacement& p) {
  json root = json::object();
  root["format"] = "hetsynth-placement";
  root["version"] = kVersion;
  json args = json::object();
  for (const auto& [k, v] : p.model_args) args[k] = v;
  root["model"] = {{"name", p.model}, {"batch", p.batch}, {"args", args}};
  root["model_elements"] = GraphElements(g);
  root["cluster"] = {{"name", p.cluster}, {"fingerprint", p.cluster_fingerprint}, {"devices", p.devices}};
  if (!p.device_flops.empty()) root["cluster"]["device_flops"] = p.device_flops;
  root["method"] = p.method;
  root["predicted_latency_s"] = p.predicted_latency_s;
  root["solver"] = {{"lower_bound_s", p.lower_bound_s}, {"gap", p.gap}, {"optimal", p.optimal}, {"solve_s", p.solve_s},
                    {"solver_calls", p.solver_calls}};
  json methods = json::array();
  for (const InferencePlacementMethod& m : p.methods) {
    json j = {{"method", m.method}, {"feasible", m.feasible}, {"solve_s", m.solve_s}};
    if (m.feasible) j["latency_s"] = m.latency_s;
    if (!m.note.empty()) j["note"] = m.note;
    methods.push_back(j);
  }
  root["methods"] = methods;
  json groups = json::array();
  for (const InferencePlacementGroup& gr : p.groups) {
    json ops = json::array();
    for (ir::NodeId n : gr.ops) ops.push_back(g.node(n).name);
    groups.push_back({{"name", gr.name}, {"device", p.devices.at(gr.device)}, {"start_s", gr.start_s},
                      {"finish_s", gr.finish_s}, {"ops", ops}});
  }
  root["groups"] = groups;
  json edges = json::array();
  for (const InferencePlacement::Edge& e : p.edges) edges.push_back(json::array({e.from, e.to, e.bytes, e.transfer_s}));
  root["edges"] = edges;
  return root.dump(1) + "\n";
}

absl::StatusOr<InferencePlacement> InferencePlacementHeaderFromJson(const std::string& text, const std::string& source) {
  const Reader r(source);
  return json_internal::ReadDocument(r, text, [&](const json& root) { return r.Header(root); });
}

absl::StatusOr<InferencePlacement> InferencePlacementFromJson(const ir::Graph& g, const std::string& text, const std::string& source) {
  const Reader r(source);
  return json_internal::ReadDocument(r, text, [&](const json& root) { return r.Full(g, root); });
}

}  // namespace hetsynth::instr
