// Plan files (docs/plan-format.md): the program in terms of node and tensor names, each
// instruction with its triple spelled out for people; reading re-derives every triple and
// refuses a file whose stated triples or split groups do not match.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "hetsynth/instr/program.h"
#include "hetsynth/ir/input_limits.h"
#include "run_header_json.h"
#include "hetsynth/base/status.h"

namespace hetsynth::instr {
namespace {

using nlohmann::json;
// Version 2 (issue 12): collective implementations ring and hierarchical, gradient buckets,
// overlap, the mesh's nodes, predicted exposed communication. Version 3: properties over mesh
// levels (mixed forms, mesh rules `outer_rule`, collectives with a `level` and an `outer`
// placement, split groups with a `level`). Versions 1 and 2 still load: a version-1 plan's
// all-reduces are ring, an all-gather or reduce-scatter without impl is grouped.
constexpr int kVersion = 3;

double BucketBytes(const ir::Graph& g, const Bucket& b) {
  double bytes = 0;
  for (ir::ValueId v : b.params) bytes += 4.0 * static_cast<double>(ir::NumElements(g.value(v).shape));
  return bytes;
}

json Props(const ir::Graph& g, const std::vector<Property>& ps) {
  json out = json::array();
  for (const Property& p : ps) out.push_back(PropertyString(g, p));
  return out;
}

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  absl::Status Err(const std::string& where, const std::string& what) const {
    return FileError("plan", source_, where, what);
  }

  absl::StatusOr<json> Parse(const std::string& text) const {
    if (const int depth = ir::JsonNestingDepth(text); depth > ir::kMaxJsonDepth) {
      return Err("document", StrCat("nests arrays/objects ", depth, " deep; expected at most ", ir::kMaxJsonDepth));
    }
    json root = json::parse(text, nullptr, false);
    if (root.is_discarded() || !root.is_object()) return Err("document", "not a JSON object");
    if (root.value("format", "") != "hetsynth-plan") return Err("field 'format'", "expected \"hetsynth-plan\"");
    if (!root.contains("version") || (root["version"] != 1 && root["version"] != 2 && root["version"] != 3)) {
      return Err("field 'version'", StrCat(root.contains("version") ? root["version"].dump() : "missing",
                                           "; expected 1, 2 or 3 (a newer plan needs a newer hetsynth)"));
    }
    return root;
  }

  absl::StatusOr<Plan> Header(const json& root) const {
    Plan plan;
    json_internal::RunHeader h;
    HS_RETURN_IF_ERROR(json_internal::ReadRunHeader(
        root, [this](const std::string& where, const std::string& what) { return Err(where, what); }, &h));
    json_internal::MoveRunHeader(std::move(h), &plan);
    if (!root.value("strategy", json("")).is_string()) return Err("field 'strategy'", "expected a string");
    plan.strategy = root.value("strategy", "");
    if (root.contains("predicted_step_time_s")) {
      if (!root["predicted_step_time_s"].is_number()) {
        return Err("field 'predicted_step_time_s'", StrCat(ir::Shorten(root["predicted_step_time_s"].dump()), "; expected seconds"));
      }
      if (!(root["predicted_step_time_s"].get<double>() >= 0)) {
        return Err("field 'predicted_step_time_s'", StrCat(root["predicted_step_time_s"].get<double>(), "; expected seconds >= 0"));
      }
      plan.predicted_step_time_s = root["predicted_step_time_s"].get<double>();
    }
    if (root.contains("predicted")) {
      const json& p = root["predicted"];
      if (!p.is_object()) return Err("field 'predicted'", "expected an object");
      auto number = [&](const char* field, double* out) -> absl::Status {
        if (!p.contains(field)) return absl::OkStatus();
        if (!p[field].is_number()) return Err(StrCat("predicted.", field), StrCat(p[field].dump(), "; expected a number"));
        *out = p[field].get<double>();
        return absl::OkStatus();
      };
      auto numbers = [&](const char* field, std::vector<double>* out) -> absl::Status {
        if (!p.contains(field)) return absl::OkStatus();
        if (!p[field].is_array()) return Err(StrCat("predicted.", field), "expected an array of numbers");
        for (const json& x : p[field]) {
          if (!x.is_number()) return Err(StrCat("predicted.", field), StrCat(x.dump(), "; expected a number"));
          out->push_back(x.get<double>());
        }
        return absl::OkStatus();
      };
      HS_RETURN_IF_ERROR(number("compute_s", &plan.predicted_compute_s));
      HS_RETURN_IF_ERROR(number("communication_s", &plan.predicted_communication_s));
      HS_RETURN_IF_ERROR(number("exposed_communication_s", &plan.predicted_exposed_communication_s));
      HS_RETURN_IF_ERROR(numbers("instruction_compute_s", &plan.instruction_compute_s));
      HS_RETURN_IF_ERROR(numbers("instruction_communication_s", &plan.instruction_communication_s));
      HS_RETURN_IF_ERROR(numbers("memory_bytes", &plan.predicted_memory_bytes));
      HS_RETURN_IF_ERROR(numbers("memory_capacity_bytes", &plan.memory_capacity_bytes));
    }
    return plan;
  }

  absl::StatusOr<Plan> Full(const ir::Graph& g, const json& root) const {
    HS_ASSIGN_OR_RETURN(Plan plan, Header(root));
    const int version = root["version"].get<int>();
    Program& prog = plan.program;
    prog.num_devices = static_cast<int>(plan.devices.size());
    if (root.contains("mesh")) {
      const json& m = root["mesh"];
      if (!m.is_object() || !m.contains("nodes") || !m["nodes"].is_array()) {
        return Err("field 'mesh'", "expected an object with 'nodes': an array of arrays of ranks");
      }
      for (const json& node : m["nodes"]) {
        if (!node.is_array()) return Err("mesh.nodes", StrCat(node.dump(), "; expected an array of ranks"));
        std::vector<int> ranks;
        for (const json& r : node) {
          if (!r.is_number_integer()) return Err("mesh.nodes", StrCat(r.dump(), "; expected a rank"));
          ranks.push_back(r.get<int>());
        }
        prog.nodes.push_back(std::move(ranks));
      }
    }
    if (root.contains("overlap")) {
      if (!root["overlap"].is_boolean()) return Err("field 'overlap'", StrCat(root["overlap"].dump(), "; expected true or false"));
      prog.overlap = root["overlap"].get<bool>();
    }
    if (!root.contains("ratios") || !root["ratios"].is_array()) return Err("field 'ratios'", "missing array");
    for (const json& seg : root["ratios"]) {
      if (!seg.is_array()) return Err("ratios", "expected one array of numbers per segment");
      std::vector<double> row;
      for (const json& r : seg) {
        if (!r.is_number()) return Err("ratios", StrCat(r.dump(), "; expected a number"));
        row.push_back(r.get<double>());
      }
      prog.ratios.push_back(std::move(row));
    }
    if (!root.contains("program") || !root["program"].is_array()) return Err("field 'program'", "missing array");
    for (size_t i = 0; i < root["program"].size(); ++i) {
      const json& j = root["program"][i];
      const std::string where = StrCat("program[", i, "]");
      if (!j.is_object()) return Err(where, "expected an object");
      Instruction in;
      std::string rule;         // compute: as the file names it
      bool rule_known = true;   // compute: `rule` is the name of some RuleId
      const std::string op = j.value("op", "");
      bool known = false;
      for (InstrKind k : {InstrKind::kPlaceInput, InstrKind::kPlaceParameter, InstrKind::kCompute,
                          InstrKind::kAllGather, InstrKind::kReduceScatter, InstrKind::kAllReduce,
                          InstrKind::kAllToAll, InstrKind::kSlice}) {
        if (InstrKindName(k) == op) in.kind = k, known = true;
      }
      if (!known) return Err(where, StrCat("'op' is \"", op, "\"; expected an instruction kind (docs/plan-format.md)"));
      if (in.kind == InstrKind::kCompute) {
        in.node = -1;
        const std::string node = j.value("node", "");
        const ir::ValueId v = g.Find(node);
        if (v == ir::kNoValue || g.value(v).producer < 0) return Err(where, StrCat("'node' is \"", node, "\"; expected a node of the model"));
        in.node = g.value(v).producer;
        rule = j.value("rule", "");
        rule_known = ParseRuleName(rule, &in.rule);
        if (j.contains("outer_rule")) {
          const std::string outer = j["outer_rule"].is_string() ? j["outer_rule"].get<std::string>() : j["outer_rule"].dump();
          RuleId id;
          if (version < 3) return Err(where, "'outer_rule' needs plan version 3");
          if (!ParseRuleName(outer, &id)) {
            absl::Status st = NoRule(g, in.node, outer, ShardingRules(g, in.node));
            return Err(where, StrCat("'outer_rule': ", st.message()));
          }
          in.outer_rule = id;
        }
      } else {
        const std::string t = j.value("tensor", "");
        in.tensor = g.Find(t);
        if (in.tensor == ir::kNoValue) return Err(where, StrCat("'tensor' is \"", t, "\"; expected a tensor of the model"));
      }
      for (const char* field : {"dim", "dim2", "segment"}) {
        // Range-checked before narrowing to int: 2^32 must not become 0.
        if (j.contains(field) && (!j[field].is_number_integer() || j[field].get<int64_t>() < -1 ||
                                  j[field].get<int64_t>() > 1'000'000)) {
          return Err(where, StrCat("'", field, "' is ", ir::Shorten(j[field].dump()), "; expected a small integer"));
        }
      }
      in.dim = j.value("dim", -1);
      in.dim2 = j.value("dim2", -1);
      const std::string impl = j.value("impl", "none");
      if (!ParseCollImpl(impl, &in.impl)) {
        return Err(where, StrCat("'impl' is \"", impl, "\"; expected padded, grouped, ring, hierarchical or none"));
      }
      if (version == 1 && in.kind == InstrKind::kAllReduce && in.impl == CollImpl::kNone) in.impl = CollImpl::kRing;
      if (version == 1 && (in.kind == InstrKind::kAllGather || in.kind == InstrKind::kReduceScatter) &&
          in.impl == CollImpl::kNone) {
        in.impl = CollImpl::kGrouped;  // what the version-1 runtime ran
      }
      const std::string level = j.value("level", "world");
      if (!ParseLevel(level, &in.level)) {
        return Err(where, StrCat("'level' is \"", level, "\"; expected world, devices or nodes"));
      }
      if (version < 3 && in.level != Level::kWorld) return Err(where, "'level' other than world needs plan version 3");
      if (j.contains("outer")) {
        const std::string outer = j["outer"].is_string() ? j["outer"].get<std::string>() : j["outer"].dump();
        Placement o;
        if (version < 3) return Err(where, "'outer' needs plan version 3");
        if (!ParsePlacement(outer, &o)) {
          return Err(where, StrCat("'outer' is ", j["outer"].dump(), "; expected Identity, Gather(<dim>) or Reduce"));
        }
        in.outer = o;
      }
      in.segment = j.value("segment", 0);
      // A name that is no rule's is reported like a rule the node lacks: with its rules.
      absl::Status st = rule_known ? DeriveTriple(g, in) : NoRule(g, in.node, rule, ShardingRules(g, in.node));
      if (!st.ok()) return Err(where, std::string(st.message()));
      if (j.value("pre", json::array()) != Props(g, in.pre) || j.value("post", json::array()) != Props(g, in.post)) {
        return Err(where, StrCat("stated triple {", j.value("pre", json::array()).dump(), "} ",
                                 op, " {", j.value("post", json::array()).dump(), "} does not match its definition {",
                                 Props(g, in.pre).dump(), "} ", op, " {", Props(g, in.post).dump(), "}"));
      }
      prog.instructions.push_back(std::move(in));
    }
    if (prog.ratios.empty()) return Err("field 'ratios'", "expected at least one segment");
    // Split groups: members and atoms must be what the instructions imply; counts come from
    // the file (the synthesizer may have chosen them) and are checked by CheckProgram.
    HS_RETURN_IF_ERROR(BuildSplitGroups(g, prog));
    if (!root.contains("splits") || !root["splits"].is_array() || root["splits"].size() != prog.groups.size()) {
      return Err("field 'splits'", StrCat("expected an array of ", prog.groups.size(), " split groups"));
    }
    for (size_t k = 0; k < prog.groups.size(); ++k) {
      const json& s = root["splits"][k];
      const std::string where = StrCat("splits[", k, "]");
      const std::string level(LevelName(prog.groups[k].level));
      if (!s.is_object() || s.value("members", json::array()) != Props(g, prog.groups[k].members) ||
          s.value("atoms", int64_t{-1}) != prog.groups[k].atoms || s.value("level", "world") != level) {
        return Err(where, StrCat("expected members ", Props(g, prog.groups[k].members).dump(), " with ",
                                 prog.groups[k].atoms, " atoms at level ", level));
      }
      if (!s.contains("counts") || !s["counts"].is_array()) return Err(where, "missing array 'counts'");
      prog.groups[k].counts.clear();
      for (const json& c : s["counts"]) {
        if (!c.is_number_integer() || c.get<int64_t>() < 0 || c.get<int64_t>() > prog.groups[k].atoms) {
          return Err(where, StrCat("count ", ir::Shorten(c.dump()), "; expected an integer in [0, ",
                                   prog.groups[k].atoms, "] (the group's atoms)"));
        }
        prog.groups[k].counts.push_back(c.get<int64_t>());
      }
    }
    if (root.contains("buckets")) {
      if (!root["buckets"].is_array()) return Err("field 'buckets'", "expected an array of buckets");
      for (size_t k = 0; k < root["buckets"].size(); ++k) {
        const json& b = root["buckets"][k];
        const std::string where = StrCat("buckets[", k, "]");
        if (!b.is_object() || !b.contains("params") || !b["params"].is_array()) {
          return Err(where, "expected an object with 'params': an array of parameter names");
        }
        const std::string kind = b.value("kind", "world");
        Bucket bucket;
        if (!ParseLevel(kind, &bucket.kind) || bucket.kind == Level::kDevices || (version < 3 && kind != "world")) {
          return Err(where, StrCat("'kind' is \"", kind, "\"; expected world", version < 3 ? "" : " or nodes"));
        }
        const std::string impl = b.value("impl", "ring");
        if (!ParseCollImpl(impl, &bucket.impl) ||
            (bucket.impl != CollImpl::kRing && bucket.impl != CollImpl::kHierarchical)) {
          return Err(where, StrCat("'impl' is \"", impl, "\"; expected ring or hierarchical"));
        }
        for (const json& name : b["params"]) {
          const ir::ValueId v = name.is_string() ? g.Find(name.get<std::string>()) : ir::kNoValue;
          if (v == ir::kNoValue || g.value(v).kind != ir::ValueKind::kParameter) {
            return Err(where, StrCat(name.dump(), "; expected a parameter of the model"));
          }
          if (std::find(bucket.params.begin(), bucket.params.end(), v) != bucket.params.end()) {
            return Err(where, StrCat(ir::Shorten(name.dump()), " appears twice; expected each parameter once"));
          }
          bucket.params.push_back(v);
        }
        if (b.contains("bytes") && (!b["bytes"].is_number() || b["bytes"].get<double>() != BucketBytes(g, bucket))) {
          return Err(where, StrCat("'bytes' is ", b["bytes"].dump(), "; its parameters hold ", BucketBytes(g, bucket)));
        }
        prog.buckets.push_back(std::move(bucket));
      }
    }
    absl::Status st = CheckProgram(g, prog);
    if (!st.ok()) return Err("program", std::string(st.message()));
    return plan;
  }

 private:
  std::string source_;
};

}  // namespace

std::string PlanToJson(const ir::Graph& g, const Plan& plan) {
  json root;
  root["format"] = "hetsynth-plan";
  root["version"] = kVersion;
  root["strategy"] = plan.strategy;
  root["model"] = {{"name", plan.model}, {"batch", plan.batch}, {"args", plan.model_args}};
  root["cluster"] = {{"name", plan.cluster}, {"fingerprint", plan.cluster_fingerprint}, {"devices", plan.devices}};
  if (!plan.device_flops.empty()) root["cluster"]["device_flops"] = plan.device_flops;
  root["predicted_step_time_s"] = plan.predicted_step_time_s;
  root["predicted"] = {{"compute_s", plan.predicted_compute_s},
                       {"communication_s", plan.predicted_communication_s},
                       {"exposed_communication_s", plan.predicted_exposed_communication_s},
                       {"instruction_compute_s", plan.instruction_compute_s},
                       {"instruction_communication_s", plan.instruction_communication_s},
                       {"memory_bytes", plan.predicted_memory_bytes},
                       {"memory_capacity_bytes", plan.memory_capacity_bytes}};
  if (!plan.program.nodes.empty()) root["mesh"] = {{"nodes", plan.program.nodes}};
  root["overlap"] = plan.program.overlap;
  root["ratios"] = plan.program.ratios;
  json prog = json::array();
  for (const Instruction& in : plan.program.instructions) {
    json j = {{"op", std::string(InstrKindName(in.kind))}};
    if (in.kind == InstrKind::kCompute) {
      j["node"] = g.node(in.node).name;
      j["rule"] = RuleName(in.rule);
      if (in.outer_rule) j["outer_rule"] = RuleName(*in.outer_rule);
    } else {
      j["tensor"] = g.value(in.tensor).name;
    }
    if (in.dim >= 0) j["dim"] = in.dim;
    if (in.dim2 >= 0) j["dim2"] = in.dim2;
    if (in.impl != CollImpl::kNone) j["impl"] = std::string(CollImplName(in.impl));
    if (in.segment != 0) j["segment"] = in.segment;
    if (in.level != Level::kWorld) j["level"] = std::string(LevelName(in.level));
    if (in.outer) j["outer"] = PlacementString(*in.outer);
    j["pre"] = Props(g, in.pre);
    j["post"] = Props(g, in.post);
    prog.push_back(std::move(j));
  }
  root["program"] = std::move(prog);
  json splits = json::array();
  for (const SplitGroup& s : plan.program.groups) {
    json split = {{"members", Props(g, s.members)}, {"atoms", s.atoms}, {"segment", s.segment}, {"counts", s.counts}};
    if (s.level != Level::kWorld) split["level"] = std::string(LevelName(s.level));
    splits.push_back(std::move(split));
  }
  root["splits"] = std::move(splits);
  json buckets = json::array();
  for (const Bucket& b : plan.program.buckets) {
    json names = json::array();
    for (ir::ValueId v : b.params) names.push_back(g.value(v).name);
    buckets.push_back({{"kind", std::string(LevelName(b.kind))}, {"impl", std::string(CollImplName(b.impl))}, {"params", std::move(names)},
                       {"bytes", BucketBytes(g, b)}});
  }
  root["buckets"] = std::move(buckets);
  return root.dump(1) + "\n";
}

absl::StatusOr<Plan> PlanHeaderFromJson(const std::string& text, const std::string& source) {
  const Reader r(source);
  return json_internal::ReadDocument(r, text, [&](const json& root) { return r.Header(root); });
}

absl::StatusOr<Plan> PlanFromJson(const ir::Graph& g, const std::string& text, const std::string& source) {
  const Reader r(source);
  return json_internal::ReadDocument(r, text, [&](const json& root) { return r.Full(g, root); });
}

}  // namespace hetsynth::instr
