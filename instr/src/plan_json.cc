// Plan files (docs/plan-format.md): the program in terms of node and tensor names, each
// instruction with its triple spelled out for people; reading re-derives every triple and
// refuses a file whose stated triples or split groups do not match.
#include <algorithm>
#include <limits>

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

// Seconds and bytes beyond these are no prediction of a real run (a step of 30 years, 10^30
// bytes) and would overflow what reads them (train's memory guard, explain's shares).
constexpr double kMaxSeconds = 1e9, kMaxBytes = 1e30;

// Every field each object of a plan may have (docs/plan-format.md); any other is an error.
const std::vector<std::string> kTopFields = {"format", "version", "strategy", "model", "cluster",
                                             "predicted_step_time_s", "predicted", "mesh", "overlap",
                                             "ratios", "program", "splits", "buckets"};
const std::vector<std::string> kPredictedFields = {"compute_s", "communication_s", "exposed_communication_s",
                                                   "instruction_compute_s", "instruction_communication_s",
                                                   "memory_bytes", "memory_capacity_bytes"};
const std::vector<std::string> kComputeFields = {"op", "node", "rule", "outer_rule", "dim", "dim2", "impl",
                                                 "segment", "level", "outer", "pre", "post"};
const std::vector<std::string> kTensorFields = {"op", "tensor", "dim", "dim2", "impl", "segment",
                                                "level", "outer", "pre", "post"};
const std::vector<std::string> kSplitFields = {"members", "atoms", "segment", "counts", "level"};
const std::vector<std::string> kBucketFields = {"kind", "impl", "params", "bytes"};

std::string CountsString(const std::vector<int64_t>& counts) {
  std::string out = "[";
  for (size_t i = 0; i < counts.size(); ++i) out += StrCat(i ? ", " : "", counts[i]);
  return out + "]";
}

class Reader {
 public:
  explicit Reader(std::string source)
      : source_(std::move(source)), f_([this](const std::string& where, const std::string& what) { return Err(where, what); }) {}

  absl::Status Err(const std::string& where, const std::string& what) const {
    return FileError("plan", source_, where, what);
  }

  absl::StatusOr<json> Parse(const std::string& text) const {
    HS_ASSIGN_OR_RETURN(json root, json_internal::ParseObject(
                                       text, [this](const std::string& where, const std::string& what) { return Err(where, what); }));
    if (!root.contains("format")) return f_.Missing("format", "\"hetsynth-plan\"");
    if (root["format"] != "hetsynth-plan") return f_.Expected("format", root["format"], "\"hetsynth-plan\"");
    if (!root.contains("version") || (root["version"] != 1 && root["version"] != 2 && root["version"] != 3)) {
      return Err("field 'version'", StrCat(root.contains("version") ? ir::Shorten(root["version"].dump()) : "missing",
                                           "; expected 1, 2 or 3 (a newer plan needs a newer hetsynth)"));
    }
    HS_RETURN_IF_ERROR(f_.Known(root, "", kTopFields));
    return root;
  }

  // A per-device (or per-instruction) array of finite numbers in [lo, hi]: empty (not predicted)
  // or `count` long.
  absl::Status Numbers(const json& p, const char* field, size_t count, const char* unit, double lo, double hi,
                       std::vector<double>* out) const {
    const std::string where = json_internal::At("predicted", field);
    HS_ASSIGN_OR_RETURN(const json* a, f_.Array(p, "predicted", field, false, StrCat("an array of ", unit)));
    if (a == nullptr) return absl::OkStatus();
    if (!a->empty() && count != std::numeric_limits<size_t>::max() && a->size() != count) {
      return Err(where, StrCat(a->size(), " numbers; expected ", count, " (one per ",
                               std::string(field).rfind("instruction", 0) == 0 ? "instruction" : "device", ") or none"));
    }
    out->clear();
    for (size_t i = 0; i < a->size(); ++i) {
      double x = 0;
      HS_RETURN_IF_ERROR(f_.Number((*a)[i], json_internal::At(where, i), lo, hi, unit, &x));
      out->push_back(x);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Plan> Header(const json& root) const {
    Plan plan;
    json_internal::RunHeader h;
    HS_RETURN_IF_ERROR(json_internal::ReadRunHeader(
        root, [this](const std::string& where, const std::string& what) { return Err(where, what); }, &h));
    json_internal::MoveRunHeader(std::move(h), &plan);
    HS_RETURN_IF_ERROR(f_.String(root, "", "strategy", false, &plan.strategy));
    HS_RETURN_IF_ERROR(f_.Number(root, "", "predicted_step_time_s", false, 0, kMaxSeconds, "seconds",
                                 &plan.predicted_step_time_s));
    HS_ASSIGN_OR_RETURN(const json* p, f_.Object(root, "", "predicted", false));
    if (p != nullptr) {
      HS_RETURN_IF_ERROR(f_.Known(*p, "predicted", kPredictedFields));
      HS_RETURN_IF_ERROR(f_.Number(*p, "predicted", "compute_s", false, 0, kMaxSeconds, "seconds", &plan.predicted_compute_s));
      HS_RETURN_IF_ERROR(f_.Number(*p, "predicted", "communication_s", false, 0, kMaxSeconds, "seconds",
                                   &plan.predicted_communication_s));
      HS_RETURN_IF_ERROR(f_.Number(*p, "predicted", "exposed_communication_s", false, 0, kMaxSeconds, "seconds",
                                   &plan.predicted_exposed_communication_s));
      const size_t n = plan.devices.size();
      HS_RETURN_IF_ERROR(Numbers(*p, "memory_bytes", n, "bytes", 0, kMaxBytes, &plan.predicted_memory_bytes));
      HS_RETURN_IF_ERROR(Numbers(*p, "memory_capacity_bytes", n, "bytes", 1, kMaxBytes, &plan.memory_capacity_bytes));
      // Per instruction: the program's length is checked by Full (the header does not read it).
      const size_t any = std::numeric_limits<size_t>::max();
      HS_RETURN_IF_ERROR(Numbers(*p, "instruction_compute_s", any, "seconds", 0, kMaxSeconds, &plan.instruction_compute_s));
      HS_RETURN_IF_ERROR(Numbers(*p, "instruction_communication_s", any, "seconds", 0, kMaxSeconds,
                                 &plan.instruction_communication_s));
    }
    return plan;
  }

  absl::Status Mesh(const json& root, Program& prog) const {
    HS_ASSIGN_OR_RETURN(const json* m, f_.Object(root, "", "mesh", false, "an object {\"nodes\": [[ranks], ...]}"));
    if (m == nullptr) return absl::OkStatus();
    HS_RETURN_IF_ERROR(f_.Known(*m, "mesh", {"nodes"}));
    HS_ASSIGN_OR_RETURN(const json* nodes, f_.Array(*m, "mesh", "nodes", true, "an array of arrays of ranks"));
    for (size_t j = 0; j < nodes->size(); ++j) {
      const json& node = (*nodes)[j];
      const std::string where = json_internal::At("mesh.nodes", j);
      if (!node.is_array()) return f_.Expected(where, node, "an array of ranks");
      std::vector<int> ranks;
      for (size_t k = 0; k < node.size(); ++k) {
        int64_t r = 0;
        HS_RETURN_IF_ERROR(f_.Int(node[k], json_internal::At(where, k), 0, prog.num_devices - 1, &r, " (a rank)"));
        ranks.push_back(static_cast<int>(r));
      }
      prog.nodes.push_back(std::move(ranks));
    }
    return absl::OkStatus();
  }

  absl::Status Ratios(const json& root, Program& prog) const {
    HS_ASSIGN_OR_RETURN(const json* ratios, f_.Array(root, "", "ratios", true, "an array of rows of ratios, one per segment"));
    if (ratios->empty()) return f_.Expected("ratios", *ratios, "at least one row of ratios (segment 0)");
    for (size_t s = 0; s < ratios->size(); ++s) {
      const json& seg = (*ratios)[s];
      const std::string where = json_internal::At("ratios", s);
      if (!seg.is_array()) return f_.Expected(where, seg, "an array of ratios, one per device");
      std::vector<double> row;
      for (size_t i = 0; i < seg.size(); ++i) {
        double r = 0;
        HS_RETURN_IF_ERROR(f_.Number(seg[i], json_internal::At(where, i), 0, 1, "ratio", &r));
        row.push_back(r);
      }
      prog.ratios.push_back(std::move(row));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Instruction> ReadInstruction(const ir::Graph& g, const json& j, const std::string& where, int version,
                                              const Program& prog) const {
    if (!j.is_object()) return f_.Expected(where, j, "an instruction object");
    Instruction in;
    std::string op;
    HS_RETURN_IF_ERROR(f_.String(j, where, "op", true, &op));
    bool known = false;
    for (InstrKind k : {InstrKind::kPlaceInput, InstrKind::kPlaceParameter, InstrKind::kCompute,
                        InstrKind::kAllGather, InstrKind::kReduceScatter, InstrKind::kAllReduce,
                        InstrKind::kAllToAll, InstrKind::kSlice}) {
      if (InstrKindName(k) == op) in.kind = k, known = true;
    }
    if (!known) {
      return Err(json_internal::At(where, "op"), StrCat("\"", ir::Shorten(op), "\"; expected an instruction kind (docs/plan-format.md)"));
    }
    HS_RETURN_IF_ERROR(f_.Known(j, where, in.kind == InstrKind::kCompute ? kComputeFields : kTensorFields));
    std::string rule;        // compute: as the file names it
    bool rule_known = true;  // compute: `rule` is the name of some RuleId
    if (in.kind == InstrKind::kCompute) {
      std::string node;
      HS_RETURN_IF_ERROR(f_.String(j, where, "node", true, &node));
      const ir::ValueId v = g.Find(node);
      if (v == ir::kNoValue || g.value(v).producer < 0) {
        return Err(json_internal::At(where, "node"), StrCat("\"", ir::Shorten(node), "\"; expected a node of the model"));
      }
      in.node = g.value(v).producer;
      HS_RETURN_IF_ERROR(f_.String(j, where, "rule", true, &rule));
      rule_known = ParseRuleName(rule, &in.rule);
      if (j.contains("outer_rule")) {
        std::string outer;
        HS_RETURN_IF_ERROR(f_.String(j, where, "outer_rule", true, &outer));
        RuleId id;
        if (version < 3) return Err(where, "'outer_rule' needs plan version 3");
        if (!ParseRuleName(outer, &id)) {
          absl::Status st = NoRule(g, in.node, outer, ShardingRules(g, in.node));
          return Err(json_internal::At(where, "outer_rule"), std::string(st.message()));
        }
        in.outer_rule = id;
      }
    } else {
      std::string t;
      HS_RETURN_IF_ERROR(f_.String(j, where, "tensor", true, &t));
      in.tensor = g.Find(t);
      if (in.tensor == ir::kNoValue) {
        return Err(json_internal::At(where, "tensor"), StrCat("\"", ir::Shorten(t), "\"; expected a tensor of the model"));
      }
    }
    int64_t dim = -1, dim2 = -1, segment = 0;
    HS_RETURN_IF_ERROR(f_.Int(j, where, "dim", false, -1, 1'000'000, &dim));
    HS_RETURN_IF_ERROR(f_.Int(j, where, "dim2", false, -1, 1'000'000, &dim2));
    HS_RETURN_IF_ERROR(f_.Int(j, where, "segment", false, 0, static_cast<int64_t>(prog.ratios.size()) - 1, &segment,
                              StrCat(" (a row of ratios; the plan has ", prog.ratios.size(), ")")));
    in.dim = static_cast<int>(dim);
    in.dim2 = static_cast<int>(dim2);
    in.segment = static_cast<int>(segment);
    std::string impl = "none";
    HS_RETURN_IF_ERROR(f_.String(j, where, "impl", false, &impl));
    if (!ParseCollImpl(impl, &in.impl)) {
      return Err(json_internal::At(where, "impl"),
                 StrCat("\"", ir::Shorten(impl), "\"; expected padded, grouped, ring, hierarchical or none"));
    }
    if (version == 1 && in.kind == InstrKind::kAllReduce && in.impl == CollImpl::kNone) in.impl = CollImpl::kRing;
    if (version == 1 && (in.kind == InstrKind::kAllGather || in.kind == InstrKind::kReduceScatter) &&
        in.impl == CollImpl::kNone) {
      in.impl = CollImpl::kGrouped;  // what the version-1 runtime ran
    }
    std::string level = "world";
    HS_RETURN_IF_ERROR(f_.String(j, where, "level", false, &level));
    if (!ParseLevel(level, &in.level)) {
      return Err(json_internal::At(where, "level"), StrCat("\"", ir::Shorten(level), "\"; expected world, devices or nodes"));
    }
    if (version < 3 && in.level != Level::kWorld) return Err(where, "'level' other than world needs plan version 3");
    if (j.contains("outer")) {
      std::string outer;
      HS_RETURN_IF_ERROR(f_.String(j, where, "outer", true, &outer));
      Placement o;
      if (version < 3) return Err(where, "'outer' needs plan version 3");
      if (!ParsePlacement(outer, &o)) {
        return Err(json_internal::At(where, "outer"),
                   StrCat("\"", ir::Shorten(outer), "\"; expected Identity, Gather(<dim>) or Reduce"));
      }
      in.outer = o;
    }
    HS_ASSIGN_OR_RETURN(const json* pre, f_.Array(j, where, "pre", false, "an array of properties"));
    HS_ASSIGN_OR_RETURN(const json* post, f_.Array(j, where, "post", false, "an array of properties"));
    // A name that is no rule's is reported like a rule the node lacks: with its rules.
    absl::Status st = rule_known ? DeriveTriple(g, in) : NoRule(g, in.node, rule, ShardingRules(g, in.node));
    if (!st.ok()) return Err(where, std::string(st.message()));
    const json stated_pre = pre ? *pre : json::array(), stated_post = post ? *post : json::array();
    if (stated_pre != Props(g, in.pre) || stated_post != Props(g, in.post)) {
      return Err(where, StrCat("stated triple {", ir::Shorten(stated_pre.dump(), 400), "} ", op, " {",
                               ir::Shorten(stated_post.dump(), 400), "} does not match its definition {",
                               Props(g, in.pre).dump(), "} ", op, " {", Props(g, in.post).dump(), "}"));
    }
    return in;
  }

  // Split groups: members, atoms, level and segment must be what the instructions imply, and
  // the counts what the segment's ratios give (largest-remainder rounding, BuildSplitGroups).
  absl::Status Splits(const ir::Graph& g, const json& root, Program& prog) const {
    HS_ASSIGN_OR_RETURN(const json* splits, f_.Array(root, "", "splits", true, StrCat("an array of ", prog.groups.size(), " split groups")));
    if (splits->size() != prog.groups.size()) {
      return Err("splits", StrCat(splits->size(), " split groups; the instructions imply ", prog.groups.size()));
    }
    for (size_t k = 0; k < prog.groups.size(); ++k) {
      const json& s = (*splits)[k];
      SplitGroup& group = prog.groups[k];
      const std::string where = json_internal::At("splits", k);
      if (!s.is_object()) return f_.Expected(where, s, "a split group object");
      HS_RETURN_IF_ERROR(f_.Known(s, where, kSplitFields));
      const std::string level(LevelName(group.level));
      int64_t segment = group.segment;
      HS_RETURN_IF_ERROR(f_.Int(s, where, "segment", false, 0, static_cast<int64_t>(prog.ratios.size()) - 1, &segment,
                                StrCat(" (a row of ratios; the plan has ", prog.ratios.size(), ")")));
      if (s.value("members", json::array()) != Props(g, group.members) || s.value("atoms", json(-1)) != group.atoms ||
          s.value("level", json("world")) != level || segment != group.segment) {
        return Err(where, StrCat("expected members ", Props(g, group.members).dump(), " with ", group.atoms,
                                 " atoms at level ", level, " in segment ", group.segment));
      }
      HS_ASSIGN_OR_RETURN(const json* counts, f_.Array(s, where, "counts", true, "an array of atom counts"));
      const std::vector<int64_t> derived = std::move(group.counts);
      group.counts.clear();
      for (size_t i = 0; i < counts->size(); ++i) {
        int64_t c = 0;
        HS_RETURN_IF_ERROR(f_.Int((*counts)[i], json_internal::At(json_internal::At(where, "counts"), i), 0, group.atoms, &c,
                                  " (the group's atoms)"));
        group.counts.push_back(c);
      }
      if (group.counts.size() == derived.size() && group.counts != derived) {
        return Err(json_internal::At(where, "counts"),
                   StrCat(CountsString(group.counts), "; expected ", CountsString(derived), ", what ratios[", group.segment,
                          "] gives ", group.atoms, " atoms (largest-remainder rounding", level == "world" ? "" : StrCat(" at level ", level),
                          ")"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Buckets(const ir::Graph& g, const json& root, int version, Program& prog) const {
    HS_ASSIGN_OR_RETURN(const json* buckets, f_.Array(root, "", "buckets", false, "an array of buckets"));
    if (buckets == nullptr) return absl::OkStatus();
    for (size_t k = 0; k < buckets->size(); ++k) {
      const json& b = (*buckets)[k];
      const std::string where = json_internal::At("buckets", k);
      if (!b.is_object()) return f_.Expected(where, b, "an object with 'params': an array of parameter names");
      HS_RETURN_IF_ERROR(f_.Known(b, where, kBucketFields));
      std::string kind = "world", impl = "ring";
      HS_RETURN_IF_ERROR(f_.String(b, where, "kind", false, &kind));
      HS_RETURN_IF_ERROR(f_.String(b, where, "impl", false, &impl));
      Bucket bucket;
      if (!ParseLevel(kind, &bucket.kind) || bucket.kind == Level::kDevices || (version < 3 && kind != "world")) {
        return Err(json_internal::At(where, "kind"),
                   StrCat("\"", ir::Shorten(kind), "\"; expected world", version < 3 ? "" : " or nodes"));
      }
      if (!ParseCollImpl(impl, &bucket.impl) ||
          (bucket.impl != CollImpl::kRing && bucket.impl != CollImpl::kHierarchical)) {
        return Err(json_internal::At(where, "impl"), StrCat("\"", ir::Shorten(impl), "\"; expected ring or hierarchical"));
      }
      HS_ASSIGN_OR_RETURN(const json* params, f_.Array(b, where, "params", true, "an array of parameter names"));
      for (size_t i = 0; i < params->size(); ++i) {
        const json& name = (*params)[i];
        const std::string at = json_internal::At(json_internal::At(where, "params"), i);
        const ir::ValueId v = name.is_string() ? g.Find(name.get<std::string>()) : ir::kNoValue;
        if (v == ir::kNoValue || g.value(v).kind != ir::ValueKind::kParameter) {
          return f_.Expected(at, name, "a parameter of the model");
        }
        if (std::find(bucket.params.begin(), bucket.params.end(), v) != bucket.params.end()) {
          return Err(at, StrCat(ir::Shorten(name.dump()), " appears twice; expected each parameter once"));
        }
        bucket.params.push_back(v);
      }
      if (b.contains("bytes") && (!b["bytes"].is_number() || b["bytes"].get<double>() != BucketBytes(g, bucket))) {
        return f_.Expected(json_internal::At(where, "bytes"), b["bytes"],
                           StrCat(BucketBytes(g, bucket), " (what its parameters hold)"));
      }
      prog.buckets.push_back(std::move(bucket));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Plan> Full(const ir::Graph& g, const json& root) const {
    HS_ASSIGN_OR_RETURN(Plan plan, Header(root));
    const int version = root["version"].get<int>();
    Program& prog = plan.program;
    prog.num_devices = static_cast<int>(plan.devices.size());
    HS_RETURN_IF_ERROR(Mesh(root, prog));
    HS_RETURN_IF_ERROR(f_.Bool(root, "", "overlap", false, &prog.overlap));
    HS_RETURN_IF_ERROR(Ratios(root, prog));
    HS_ASSIGN_OR_RETURN(const json* program, f_.Array(root, "", "program", true, "an array of instructions"));
    std::vector<bool> used(prog.ratios.size(), false);
    for (size_t i = 0; i < program->size(); ++i) {
      HS_ASSIGN_OR_RETURN(Instruction in, ReadInstruction(g, (*program)[i], json_internal::At("program", i), version, prog));
      used[static_cast<size_t>(in.segment)] = true;
      prog.instructions.push_back(std::move(in));
    }
    // A row no instruction uses shapes nothing: a hand edit (or a stale row) that explain would
    // show as if it did.
    for (size_t s = 0; s < used.size() && !prog.instructions.empty(); ++s) {
      if (!used[s]) {
        return Err(json_internal::At("ratios", s), StrCat("no instruction uses segment ", s,
                                                          "; expected one row per segment the program uses"));
      }
    }
    for (const char* field : {"instruction_compute_s", "instruction_communication_s"}) {
      const std::vector<double>& v = std::string(field) == "instruction_compute_s" ? plan.instruction_compute_s
                                                                                  : plan.instruction_communication_s;
      if (!v.empty() && v.size() != prog.instructions.size()) {
        return Err(json_internal::At("predicted", field), StrCat(v.size(), " numbers; expected ", prog.instructions.size(),
                                                                 " (one per instruction) or none"));
      }
    }
    if (absl::Status st = BuildSplitGroups(g, prog); !st.ok()) return Err("program", std::string(st.message()));
    HS_RETURN_IF_ERROR(Splits(g, root, prog));
    HS_RETURN_IF_ERROR(Buckets(g, root, version, prog));
    absl::Status st = CheckProgram(g, prog);
    if (!st.ok()) return Err("program", std::string(st.message()));
    return plan;
  }

 private:
  std::string source_;
  json_internal::Fields f_;
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
