// InferencePlacement files (docs/inference.md): written by `hetsynth place`, checked field by field on
// reading; every error names the file, the field and the value.
#include <algorithm>
#include <cmath>
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

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  absl::Status Err(const std::string& where, const std::string& what) const {
    return FileError("placement", source_, where, what);
  }

  absl::StatusOr<json> Parse(const std::string& text) const {
    if (const int depth = ir::JsonNestingDepth(text); depth > ir::kMaxJsonDepth) {
      return Err("document", StrCat("nests arrays/objects ", depth, " deep; expected at most ", ir::kMaxJsonDepth));
    }
    json root = json::parse(text, nullptr, false);
    if (root.is_discarded() || !root.is_object()) return Err("document", "not a JSON object");
    if (root.value("format", json("")) != "hetsynth-placement") {
      return Err("field 'format'", StrCat(root.contains("format") ? ir::Shorten(root["format"].dump()) : "missing",
                                          "; expected \"hetsynth-placement\""));
    }
    if (!root.contains("version") || root["version"] != kVersion) {
      return Err("field 'version'", StrCat(root.contains("version") ? ir::Shorten(root["version"].dump()) : "missing",
                                           "; expected ", kVersion));
    }
    return root;
  }

  absl::Status Seconds(const json& obj, const std::string& where, const char* field, double* out) const {
    if (!obj.contains(field)) return absl::OkStatus();
    const json& v = obj[field];
    if (!v.is_number() || !(v.get<double>() >= 0) || !std::isfinite(v.get<double>())) {
      return Err(StrCat(where, ".", field), StrCat(ir::Shorten(v.dump()), "; expected finite seconds >= 0"));
    }
    *out = v.get<double>();
    return absl::OkStatus();
  }

  absl::StatusOr<InferencePlacement> Header(const json& root) const {
    InferencePlacement p;
    json_internal::RunHeader h;
    HS_RETURN_IF_ERROR(json_internal::ReadRunHeader(
        root, [this](const std::string& where, const std::string& what) { return Err(where, what); }, &h));
    json_internal::MoveRunHeader(std::move(h), &p);
    if (!root.value("method", json()).is_string()) return Err("field 'method'", "expected a string");
    p.method = root["method"].get<std::string>();
    HS_RETURN_IF_ERROR(Seconds(root, "document", "predicted_latency_s", &p.predicted_latency_s));
    return p;
  }

  absl::StatusOr<InferencePlacement> Full(const ir::Graph& g, const json& root) const {
    HS_ASSIGN_OR_RETURN(InferencePlacement p, Header(root));
    if (!root.contains("groups") || !root["groups"].is_array() || root["groups"].empty()) {
      return Err("field 'groups'", "expected a non-empty array of groups");
    }
    const ir::NodeId loss = g.loss() == ir::kNoValue ? -1 : g.value(g.loss()).producer;
    std::vector<int> seen(g.nodes().size(), -1);
    for (size_t k = 0; k < root["groups"].size(); ++k) {
      const json& gr = root["groups"][k];
      const std::string where = StrCat("groups[", k, "]");
      if (!gr.is_object()) return Err(where, "expected an object");
      InferencePlacementGroup out;
      if (!gr.contains("device") || !gr["device"].is_string()) return Err(StrCat(where, ".device"), "expected a device name");
      const auto it = std::find(p.devices.begin(), p.devices.end(), gr["device"].get<std::string>());
      if (it == p.devices.end()) {
        return Err(StrCat(where, ".device"), StrCat("'", ir::Shorten(gr["device"].get<std::string>()),
                                                    "' is not in cluster.devices"));
      }
      out.device = static_cast<int>(it - p.devices.begin());
      if (!gr.contains("ops") || !gr["ops"].is_array() || gr["ops"].empty()) {
        return Err(StrCat(where, ".ops"), "expected a non-empty array of op names");
      }
      for (const json& op : gr["ops"]) {
        if (!op.is_string()) return Err(StrCat(where, ".ops"), StrCat(ir::Shorten(op.dump()), "; expected an op name"));
        const std::string name = op.get<std::string>();
        const ir::ValueId v = g.Find(name);
        const ir::NodeId n = v == ir::kNoValue ? -1 : g.value(v).producer;
        if (n < 0) return Err(StrCat(where, ".ops"), StrCat("'", ir::Shorten(name), "' is not an op of model '", p.model, "'"));
        if (n == loss) return Err(StrCat(where, ".ops"), StrCat("'", ir::Shorten(name), "' is the loss, not a forward op"));
        if (seen[n] >= 0) {
          return Err(StrCat(where, ".ops"), StrCat("'", ir::Shorten(name), "' is placed twice (also in groups[", seen[n], "])"));
        }
        seen[n] = static_cast<int>(k);
        out.ops.push_back(n);
      }
      std::sort(out.ops.begin(), out.ops.end());
      out.name = g.node(out.ops.front()).name;
      HS_RETURN_IF_ERROR(Seconds(gr, where, "start_s", &out.start_s));
      HS_RETURN_IF_ERROR(Seconds(gr, where, "finish_s", &out.finish_s));
      p.groups.push_back(std::move(out));
    }
    for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(g.nodes().size()); ++n) {
      if (n != loss && seen[n] < 0) {
        return Err("field 'groups'", StrCat("op '", ir::Shorten(g.node(n).name), "' is in no group; expected every forward op once"));
      }
    }
    // Groups must be a topological order of the ops' dependencies.
    for (size_t k = 0; k < p.groups.size(); ++k) {
      for (ir::NodeId n : p.groups[k].ops) {
        for (ir::ValueId v : g.node(n).inputs) {
          const ir::NodeId q = g.value(v).producer;
          if (q >= 0 && seen[q] > static_cast<int>(k)) {
            return Err(StrCat("groups[", k, "]"), StrCat("op '", ir::Shorten(g.node(n).name), "' reads '", ir::Shorten(g.node(q).name),
                                                         "' of the later groups[", seen[q], "]; expected groups in dependency order"));
          }
        }
      }
    }
    if (root.contains("edges")) {
      if (!root["edges"].is_array()) return Err("field 'edges'", "expected an array of [from, to, bytes]");
      for (size_t k = 0; k < root["edges"].size(); ++k) {
        const json& e = root["edges"][k];
        const int ng = static_cast<int>(p.groups.size());
        if (!e.is_array() || (e.size() != 3 && e.size() != 4) || !e[0].is_number_integer() || !e[1].is_number_integer() ||
            !e[2].is_number() || e[0].get<int64_t>() < 0 || e[0].get<int64_t>() >= e[1].get<int64_t>() ||
            e[1].get<int64_t>() >= ng || !(e[2].get<double>() >= 0) ||
            (e.size() == 4 && (!e[3].is_number() || !(e[3].get<double>() >= 0) || !std::isfinite(e[3].get<double>())))) {
          return Err(StrCat("edges[", k, "]"), StrCat(ir::Shorten(e.dump()), "; expected [from, to, bytes, transfer_s] with 0 <= from < to < ", ng,
                                                      ", bytes >= 0 and seconds >= 0"));
        }
        p.edges.push_back({static_cast<int>(e[0].get<int64_t>()), static_cast<int>(e[1].get<int64_t>()), e[2].get<double>(),
                           e.size() == 4 ? e[3].get<double>() : 0.0});
      }
    }
    if (root.contains("solver")) {
      const json& s = root["solver"];
      if (!s.is_object()) return Err("field 'solver'", "expected an object");
      HS_RETURN_IF_ERROR(Seconds(s, "solver", "lower_bound_s", &p.lower_bound_s));
      HS_RETURN_IF_ERROR(Seconds(s, "solver", "solve_s", &p.solve_s));
      if (s.contains("gap")) {
        if (!s["gap"].is_number() || !(s["gap"].get<double>() >= 0 && s["gap"].get<double>() <= 1)) {
          return Err("solver.gap", StrCat(ir::Shorten(s["gap"].dump()), "; expected a number in [0, 1]"));
        }
        p.gap = s["gap"].get<double>();
      }
      if (s.contains("solver_calls")) {
        if (!s["solver_calls"].is_number_integer() || s["solver_calls"].get<int64_t>() < 0) {
          return Err("solver.solver_calls", StrCat(ir::Shorten(s["solver_calls"].dump()), "; expected an integer >= 0"));
        }
        p.solver_calls = static_cast<int>(s["solver_calls"].get<int64_t>());
      }
      if (s.contains("optimal")) {
        if (!s["optimal"].is_boolean()) return Err("solver.optimal", StrCat(ir::Shorten(s["optimal"].dump()), "; expected true or false"));
        p.optimal = s["optimal"].get<bool>();
      }
    }
    if (root.contains("methods")) {
      if (!root["methods"].is_array()) return Err("field 'methods'", "expected an array");
      for (size_t k = 0; k < root["methods"].size(); ++k) {
        const json& m = root["methods"][k];
        const std::string where = StrCat("methods[", k, "]");
        if (!m.is_object() || !m.value("method", json()).is_string() || !m.value("feasible", json()).is_boolean()) {
          return Err(where, "expected an object with string 'method' and boolean 'feasible'");
        }
        InferencePlacementMethod pm;
        pm.method = m["method"].get<std::string>();
        pm.feasible = m["feasible"].get<bool>();
        pm.note = m.value("note", json("")).is_string() ? m.value("note", std::string()) : "";
        HS_RETURN_IF_ERROR(Seconds(m, where, "latency_s", &pm.latency_s));
        HS_RETURN_IF_ERROR(Seconds(m, where, "solve_s", &pm.solve_s));
        p.methods.push_back(std::move(pm));
      }
    }
    return p;
  }

 private:
  std::string source_;
};

}  // namespace

std::string InferencePlacementToJson(const ir::Graph& g, const InferencePlacement& p) {
  json root = json::object();
  root["format"] = "hetsynth-placement";
  root["version"] = kVersion;
  json args = json::object();
  for (const auto& [k, v] : p.model_args) args[k] = v;
  root["model"] = {{"name", p.model}, {"batch", p.batch}, {"args", args}};
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
