#include "hetsynth/costmodel/cluster.h"

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>

#include <nlohmann/json.hpp>

#include "hetsynth/ir/input_limits.h"
#include "hetsynth/ir/json_document.h"
#include "hetsynth/base/status.h"
#include "hetsynth/base/suggest.h"

namespace hetsynth::costmodel {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "hetsynth-cluster";
constexpr int kVersion = 1;
// A count beyond this is a typo, not a cluster; refusing it avoids allocating millions of devices.
constexpr int64_t kMaxCount = 1 << 20;

const std::vector<std::string> kTopFields = {"format", "version", "name", "device_types", "nodes",
                                             "devices", "links", "collectives"};
const std::vector<std::string> kTypeFields = {"flops", "memory_bytes", "memory_bandwidth", "forward_flops",
                                              "forward_memory_bandwidth", "gemm_operand_bandwidth"};
const std::vector<std::string> kNodeFields = {"name", "intra_node"};
const std::vector<std::string> kDeviceFields = {"name", "name_prefix", "count", "type", "node",
                                                "flops", "memory_bytes", "memory_bandwidth",
                                                "forward_flops", "forward_memory_bandwidth",
                                                "gemm_operand_bandwidth"};
const std::vector<std::string> kLinksFields = {"intra_node", "inter_node"};
const std::vector<std::string> kLinkFields = {"bandwidth", "latency"};
const std::vector<std::string> kCollectiveFields = {"op", "link", "samples"};
const std::vector<std::string> kCollectiveOps = {"all_reduce", "all_gather", "reduce_scatter",
                                                 "all_to_all", "broadcast"};
const std::vector<std::string> kLinkClasses = {"intra_node", "inter_node"};

// Shortest text that reads back to the same double ("3.86e+12", "34359738368", "1e-05"): valid
// JSON for finite values, and what error messages show.
std::string Num(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, r.ptr);
}

std::string Quote(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

// A JSON value as a message shows it: numbers in Num's form, anything else as JSON.
std::string Shown(const json& j) { return j.is_number() ? Num(j.get<double>()) : ir::Shorten(j.dump()); }

// Sane ranges: every positive quantity of a cluster file is FLOP/s, bytes or bytes/s, all in
// [1, 1e30] (far beyond any device, yet room for the "never the bottleneck" 1e30 of tests);
// latencies are at most an hour. Values outside make predictions overflow to inf or underflow
// to 0, so they are refused here.
constexpr double kMinPositive = 1, kMaxPositive = 1e30, kMinSeconds = 1e-12, kMaxSeconds = 3600;
constexpr size_t kMaxNameBytes = 256;

struct DeviceType {
  double flops = 0;
  double memory_bytes = 0;
  double memory_bandwidth = 0;
  double forward_flops = 0;             // 0: absent
  double forward_memory_bandwidth = 0;  // 0: absent
  double gemm_operand_bandwidth = 0;    // 0: absent
};

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  absl::StatusOr<Cluster> Read(const std::string& text) {
    if (const int depth = ir::JsonNestingDepth(text); depth > ir::kMaxJsonDepth) {
      return Err("", StrCat("document nests arrays/objects ", depth, " deep; expected at most ", ir::kMaxJsonDepth));
    }
    ir::JsonDocument doc = ir::ParseJsonDocument(text);
    if (!doc.error.empty() && !doc.syntax) return Err("", doc.error);  // a number out of range
    if (!doc.error.empty()) return Err("", StrCat("not valid JSON: ", ir::WithoutJsonTag(doc.error)));
    json root = std::move(doc.root);
    if (!root.is_object()) return Err("", StrCat("document is ", TypeName(root), "; expected a JSON object"));
    // nlohmann keeps the last of duplicate keys; a key given twice in one object is an error.
    if (doc.duplicate_key) {
      return Err("", StrCat("field '", ir::Shorten(*doc.duplicate_key), "' appears twice in one object; expected each once"));
    }
    if (!root.contains("format") || !root["format"].is_string() ||
        root["format"].get<std::string>() != kFormat) {
      return Err("", StrCat("format=", root.contains("format") ? Shown(root["format"]) : "missing",
                            "; expected \"", kFormat, "\""));
    }
    if (!root.contains("version") || !root["version"].is_number() || root["version"] != kVersion) {
      return Err("", StrCat("version=", root.contains("version") ? Shown(root["version"]) : "missing",
                            "; expected ", kVersion));
    }
    HS_RETURN_IF_ERROR(CheckFields(root, "", kTopFields));

    Cluster c;
    c.name = std::filesystem::path(source_).stem().string();
    if (root.contains("name")) {
      HS_ASSIGN_OR_RETURN(c.name, NonEmptyString(root["name"], "", "name"));
    }
    HS_RETURN_IF_ERROR(ReadDeviceTypes(root));
    HS_ASSIGN_OR_RETURN(const json* links, Required(root, "", "links"));
    HS_RETURN_IF_ERROR(ExpectObject(*links, "", "links"));
    HS_RETURN_IF_ERROR(CheckFields(*links, "links", kLinksFields));
    HS_ASSIGN_OR_RETURN(const json* intra, Required(*links, "links", "intra_node"));
    HS_ASSIGN_OR_RETURN(const json* inter, Required(*links, "links", "inter_node"));
    HS_ASSIGN_OR_RETURN(const Link default_intra, ReadLink(*intra, "links.intra_node"));
    HS_ASSIGN_OR_RETURN(c.inter_node, ReadLink(*inter, "links.inter_node"));
    HS_RETURN_IF_ERROR(ReadNodes(root, default_intra, &c));
    HS_RETURN_IF_ERROR(ReadDevices(root, &c));
    HS_RETURN_IF_ERROR(ReadCollectives(root, &c));
    return c;
  }

 private:
  absl::Status Err(const std::string& where, const std::string& what) const {
    return FileError("cluster", source_, where, what);
  }

  static const char* TypeName(const json& j) {
    if (j.is_object()) return "an object";
    if (j.is_array()) return "an array";
    if (j.is_string()) return "a string";
    if (j.is_boolean()) return "a boolean";
    if (j.is_null()) return "null";
    return "a number";
  }

  absl::Status ExpectObject(const json& j, const std::string& where, const std::string& field) const {
    if (j.is_object()) return absl::OkStatus();
    return Err(where, StrCat(field, " is ", TypeName(j), "; expected an object"));
  }
  absl::Status ExpectArray(const json& j, const std::string& where, const std::string& field) const {
    if (j.is_array()) return absl::OkStatus();
    return Err(where, StrCat(field, " is ", TypeName(j), "; expected an array"));
  }

  // Unknown fields are errors: a misspelt "memory_byte" would otherwise silently fall back to
  // the type's value and skew every plan.
  absl::Status CheckFields(const json& obj, const std::string& where,
                           const std::vector<std::string>& allowed) const {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
        return Err(where, StrCat("unknown field '", ir::Shorten(it.key()), "'", Suggest(it.key(), allowed),
                                 " (expected one of: ", KnownList(allowed), ")"));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<const json*> Required(const json& obj, const std::string& where,
                                       const std::string& field) const {
    if (!obj.contains(field)) return Err(where, StrCat("missing required field '", field, "'"));
    return &obj[field];
  }

  absl::StatusOr<std::string> NonEmptyString(const json& j, const std::string& where,
                                             const std::string& field) const {
    if (!j.is_string() || j.get<std::string>().empty()) {
      return Err(where, StrCat(field, "=", Shown(j), "; expected a non-empty string"));
    }
    if (j.get<std::string>().size() > kMaxNameBytes) {
      return Err(where, StrCat(field, "=", Shown(j), " is ", j.get<std::string>().size(),
                               " bytes; expected at most ", kMaxNameBytes));
    }
    // Names appear in one-line messages, tables and plan files: no control characters.
    for (const char ch : j.get<std::string>()) {
      if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
        return Err(where, StrCat(field, "=", Shown(j), " contains a control character (code ",
                                 static_cast<int>(static_cast<unsigned char>(ch)), "); expected printable text"));
      }
    }
    return j.get<std::string>();
  }

  absl::StatusOr<double> Positive(const json& j, const std::string& where, const std::string& field,
                                  const char* unit) const {
    if (!j.is_number() || !std::isfinite(j.get<double>()) || j.get<double>() <= 0) {
      return Err(where, StrCat(field, "=", Shown(j), "; expected a positive number (", unit, ")"));
    }
    // Seconds (profiled collective times) may be tiny; every other positive quantity is >= 1.
    const bool seconds = std::string_view(unit) == "seconds";
    const double lo = seconds ? kMinSeconds : kMinPositive, hi = seconds ? kMaxSeconds : kMaxPositive;
    if (j.get<double>() < lo || j.get<double>() > hi) {
      return Err(where, StrCat(field, "=", Shown(j), "; expected ", unit, " between ", Num(lo), " and ", Num(hi)));
    }
    return j.get<double>();
  }

  absl::StatusOr<double> NonNegative(const json& j, const std::string& where, const std::string& field,
                                     const char* unit) const {
    if (!j.is_number() || !std::isfinite(j.get<double>()) || j.get<double>() < 0 ||
        j.get<double>() > kMaxSeconds) {
      return Err(where, StrCat(field, "=", Shown(j), "; expected a non-negative number (", unit, ") of at most ",
                               Num(kMaxSeconds)));
    }
    return j.get<double>();
  }

  absl::StatusOr<Link> ReadLink(const json& j, const std::string& where) const {
    if (!j.is_object()) {
      return Err(where, StrCat("link is ", TypeName(j),
                               "; expected {\"bandwidth\": bytes/s, \"latency\": seconds}"));
    }
    HS_RETURN_IF_ERROR(CheckFields(j, where, kLinkFields));
    HS_ASSIGN_OR_RETURN(const json* bw, Required(j, where, "bandwidth"));
    HS_ASSIGN_OR_RETURN(const json* lat, Required(j, where, "latency"));
    Link l;
    HS_ASSIGN_OR_RETURN(l.bandwidth, Positive(*bw, where, "bandwidth", "bytes/s"));
    HS_ASSIGN_OR_RETURN(l.latency, NonNegative(*lat, where, "latency", "seconds"));
    return l;
  }

  absl::Status ReadDeviceTypes(const json& root) {
    if (!root.contains("device_types")) return absl::OkStatus();
    const json& types = root["device_types"];
    HS_RETURN_IF_ERROR(ExpectObject(types, "", "device_types"));
    for (auto it = types.begin(); it != types.end(); ++it) {
      const std::string where = StrCat("device_types.", it.key());
      HS_RETURN_IF_ERROR(ExpectObject(it.value(), "", where));
      HS_RETURN_IF_ERROR(CheckFields(it.value(), where, kTypeFields));
      DeviceType t;
      HS_ASSIGN_OR_RETURN(const json* flops, Required(it.value(), where, "flops"));
      HS_ASSIGN_OR_RETURN(const json* mem, Required(it.value(), where, "memory_bytes"));
      HS_ASSIGN_OR_RETURN(const json* membw, Required(it.value(), where, "memory_bandwidth"));
      HS_ASSIGN_OR_RETURN(t.flops, Positive(*flops, where, "flops", "FLOP/s"));
      HS_ASSIGN_OR_RETURN(t.memory_bytes, Positive(*mem, where, "memory_bytes", "bytes"));
      HS_ASSIGN_OR_RETURN(t.memory_bandwidth, Positive(*membw, where, "memory_bandwidth", "bytes/s"));
      if (it.value().contains("forward_flops")) {
        HS_ASSIGN_OR_RETURN(t.forward_flops, Positive(it.value()["forward_flops"], where, "forward_flops", "FLOP/s"));
      }
      if (it.value().contains("forward_memory_bandwidth")) {
        HS_ASSIGN_OR_RETURN(t.forward_memory_bandwidth, Positive(it.value()["forward_memory_bandwidth"], where,
                                                                 "forward_memory_bandwidth", "bytes/s"));
      }
      if (it.value().contains("gemm_operand_bandwidth")) {
        HS_ASSIGN_OR_RETURN(t.gemm_operand_bandwidth, Positive(it.value()["gemm_operand_bandwidth"], where,
                                                               "gemm_operand_bandwidth", "bytes/s"));
      }
      types_[it.key()] = t;
      type_names_.push_back(it.key());
    }
    return absl::OkStatus();
  }

  absl::Status ReadNodes(const json& root, const Link& default_intra, Cluster* c) {
    HS_ASSIGN_OR_RETURN(const json* nodes, Required(root, "", "nodes"));
    HS_RETURN_IF_ERROR(ExpectArray(*nodes, "", "nodes"));
    if (nodes->empty()) return Err("nodes", "empty array; expected at least one node");
    for (size_t i = 0; i < nodes->size(); ++i) {
      const json& n = (*nodes)[i];
      std::string where = StrCat("nodes[", i, "]");
      if (!n.is_object()) return Err(where, StrCat("node is ", TypeName(n), "; expected an object"));
      HS_ASSIGN_OR_RETURN(const json* name_json, Required(n, where, "name"));
      Node node;
      HS_ASSIGN_OR_RETURN(node.name, NonEmptyString(*name_json, where, "name"));
      where = StrCat(where, " ('", node.name, "')");
      HS_RETURN_IF_ERROR(CheckFields(n, where, kNodeFields));
      if (const auto [it, fresh] = node_index_.emplace(node.name, static_cast<NodeId>(i)); !fresh) {
        return Err(where, StrCat("duplicate node name '", node.name, "' (first at nodes[", it->second, "])"));
      }
      node.intra = default_intra;
      if (n.contains("intra_node")) {
        HS_ASSIGN_OR_RETURN(node.intra, ReadLink(n["intra_node"], where + ".intra_node"));
      }
      node_names_.push_back(node.name);
      c->nodes.push_back(std::move(node));
    }
    return absl::OkStatus();
  }

  absl::Status ReadDevices(const json& root, Cluster* c) {
    HS_ASSIGN_OR_RETURN(const json* devices, Required(root, "", "devices"));
    HS_RETURN_IF_ERROR(ExpectArray(*devices, "", "devices"));
    if (devices->empty()) return Err("devices", "empty array; expected at least one device");
    std::map<std::string, std::string> first_use;  // device name → the entry that defined it
    std::vector<int> per_node(c->nodes.size(), 0);
    for (size_t i = 0; i < devices->size(); ++i) {
      const json& d = (*devices)[i];
      std::string where = StrCat("devices[", i, "]");
      if (!d.is_object()) return Err(where, StrCat("device is ", TypeName(d), "; expected an object"));

      // Name first, so every later message can say which device it is about.
      const bool named = d.contains("name");
      const bool prefixed = d.contains("name_prefix");
      if (named && prefixed) return Err(where, "has both 'name' and 'name_prefix'; expected one");
      if (!named && !prefixed) {
        return Err(where, "missing required field 'name' (or 'name_prefix' with 'count')");
      }
      std::string name;
      HS_ASSIGN_OR_RETURN(name, NonEmptyString(named ? d["name"] : d["name_prefix"], where,
                                               named ? "name" : "name_prefix"));
      where = named ? StrCat(where, " ('", name, "')") : StrCat(where, " (name_prefix '", name, "')");
      HS_RETURN_IF_ERROR(CheckFields(d, where, kDeviceFields));

      int64_t count = 1;
      if (named && d.contains("count")) return Err(where, "'count' needs 'name_prefix' instead of 'name'");
      if (prefixed) {
        HS_ASSIGN_OR_RETURN(const json* cj, Required(d, where, "count"));
        if (!cj->is_number_integer() || cj->get<int64_t>() < 1 || cj->get<int64_t>() > kMaxCount) {
          return Err(where, StrCat("count=", Shown(*cj), "; expected an integer from 1 to ", kMaxCount));
        }
        count = cj->get<int64_t>();
      }

      Device proto;
      HS_ASSIGN_OR_RETURN(const json* node_json, Required(d, where, "node"));
      HS_ASSIGN_OR_RETURN(const std::string node_name, NonEmptyString(*node_json, where, "node"));
      const auto node_it = node_index_.find(node_name);
      if (node_it == node_index_.end()) {
        return Err(where, StrCat("node='", node_name, "' is not a node", Suggest(node_name, node_names_),
                                 " (known nodes: ", KnownList(node_names_), ")"));
      }
      proto.node = node_it->second;

      HS_ASSIGN_OR_RETURN(const json* type_json, Required(d, where, "type"));
      HS_ASSIGN_OR_RETURN(proto.type, NonEmptyString(*type_json, where, "type"));
      const auto type_it = types_.find(proto.type);
      const bool all_inline =
          d.contains("flops") && d.contains("memory_bytes") && d.contains("memory_bandwidth");
      if (type_it == types_.end() && !all_inline) {
        return Err(where, StrCat("type='", proto.type, "' is not in device_types",
                                 Suggest(proto.type, type_names_), " (known types: ", KnownList(type_names_),
                                 "); add it to device_types or give flops, memory_bytes and "
                                 "memory_bandwidth inline"));
      }
      if (type_it != types_.end()) {
        proto.flops = type_it->second.flops;
        proto.memory_bytes = type_it->second.memory_bytes;
        proto.memory_bandwidth = type_it->second.memory_bandwidth;
        proto.forward_flops = type_it->second.forward_flops;
        proto.forward_memory_bandwidth = type_it->second.forward_memory_bandwidth;
        proto.gemm_operand_bandwidth = type_it->second.gemm_operand_bandwidth;
      }
      // Inline fields override the type's: one odd card need not get a type of its own.
      if (d.contains("flops")) {
        HS_ASSIGN_OR_RETURN(proto.flops, Positive(d["flops"], where, "flops", "FLOP/s"));
      }
      if (d.contains("memory_bytes")) {
        HS_ASSIGN_OR_RETURN(proto.memory_bytes, Positive(d["memory_bytes"], where, "memory_bytes", "bytes"));
      }
      if (d.contains("memory_bandwidth")) {
        HS_ASSIGN_OR_RETURN(proto.memory_bandwidth,
                            Positive(d["memory_bandwidth"], where, "memory_bandwidth", "bytes/s"));
      }
      if (d.contains("forward_flops")) {
        HS_ASSIGN_OR_RETURN(proto.forward_flops, Positive(d["forward_flops"], where, "forward_flops", "FLOP/s"));
      }
      if (d.contains("forward_memory_bandwidth")) {
        HS_ASSIGN_OR_RETURN(proto.forward_memory_bandwidth,
                            Positive(d["forward_memory_bandwidth"], where, "forward_memory_bandwidth", "bytes/s"));
      }
      if (d.contains("gemm_operand_bandwidth")) {
        HS_ASSIGN_OR_RETURN(proto.gemm_operand_bandwidth,
                            Positive(d["gemm_operand_bandwidth"], where, "gemm_operand_bandwidth", "bytes/s"));
      }

      for (int64_t k = 0; k < count; ++k) {
        Device dev = proto;
        dev.name = named ? name : StrCat(name, k);
        if (const auto [it, fresh] = first_use.emplace(dev.name, where); !fresh) {
          return Err(where, StrCat("duplicate device name '", dev.name, "' (first defined by ",
                                   it->second, ")"));
        }
        c->devices.push_back(std::move(dev));
      }
      per_node[proto.node] += static_cast<int>(count);
    }
    // An empty node is almost always a typo in some device's "node"; it would also leave a link
    // class in the file that no device uses.
    for (size_t n = 0; n < c->nodes.size(); ++n) {
      if (per_node[n] == 0) {
        return Err(StrCat("nodes[", n, "] ('", c->nodes[n].name, "')"),
                   StrCat("no device is on this node; remove the node or add devices with \"node\": \"",
                          c->nodes[n].name, "\""));
      }
    }
    return absl::OkStatus();
  }

  absl::Status ReadCollectives(const json& root, Cluster* c) const {
    if (!root.contains("collectives")) return absl::OkStatus();
    const json& tables = root["collectives"];
    HS_RETURN_IF_ERROR(ExpectArray(tables, "", "collectives"));
    for (size_t i = 0; i < tables.size(); ++i) {
      const json& t = tables[i];
      std::string where = StrCat("collectives[", i, "]");
      if (!t.is_object()) return Err(where, StrCat("table is ", TypeName(t), "; expected an object"));
      HS_RETURN_IF_ERROR(CheckFields(t, where, kCollectiveFields));
      CollectiveTable table;
      HS_ASSIGN_OR_RETURN(const json* op, Required(t, where, "op"));
      HS_ASSIGN_OR_RETURN(const json* link, Required(t, where, "link"));
      HS_ASSIGN_OR_RETURN(const json* samples, Required(t, where, "samples"));
      HS_ASSIGN_OR_RETURN(table.op, NonEmptyString(*op, where, "op"));
      if (std::find(kCollectiveOps.begin(), kCollectiveOps.end(), table.op) == kCollectiveOps.end()) {
        return Err(where, StrCat("op='", table.op, "'", Suggest(table.op, kCollectiveOps),
                                 " (expected one of: ", KnownList(kCollectiveOps), ")"));
      }
      HS_ASSIGN_OR_RETURN(table.link, NonEmptyString(*link, where, "link"));
      if (std::find(kLinkClasses.begin(), kLinkClasses.end(), table.link) == kLinkClasses.end()) {
        return Err(where, StrCat("link='", table.link, "'", Suggest(table.link, kLinkClasses),
                                 " (expected one of: ", KnownList(kLinkClasses), ")"));
      }
      where = StrCat(where, " (", table.op, ", ", table.link, ")");
      for (size_t j = 0; j < i; ++j) {
        if (c->collectives[j].op == table.op && c->collectives[j].link == table.link) {
          return Err(where, StrCat("duplicate table (first at collectives[", j, "])"));
        }
      }
      HS_RETURN_IF_ERROR(ExpectArray(*samples, where, "samples"));
      if (samples->empty()) {
        return Err(where, "samples is empty; expected at least one [bytes, seconds] pair");
      }
      for (size_t k = 0; k < samples->size(); ++k) {
        const json& s = (*samples)[k];
        const std::string at = StrCat(where, ": samples[", k, "]");
        if (!s.is_array() || s.size() != 2) {
          return Err(where, StrCat("samples[", k, "]=", Shown(s), "; expected [bytes, seconds]"));
        }
        CollectiveSample sample;
        HS_ASSIGN_OR_RETURN(sample.bytes, Positive(s[0], at, "bytes", "bytes"));
        HS_ASSIGN_OR_RETURN(sample.seconds, Positive(s[1], at, "seconds", "seconds"));
        if (!table.samples.empty() && sample.bytes <= table.samples.back().bytes) {
          return Err(at, StrCat("bytes=", Num(sample.bytes), " is not greater than samples[", k - 1,
                                "] bytes=", Num(table.samples.back().bytes),
                                "; expected samples sorted by strictly increasing bytes"));
        }
        table.samples.push_back(sample);
      }
      c->collectives.push_back(std::move(table));
    }
    return absl::OkStatus();
  }

  std::string source_;
  std::map<std::string, DeviceType> types_;
  std::vector<std::string> type_names_;        // sorted (JSON objects are), for messages
  std::map<std::string, NodeId> node_index_;
  std::vector<std::string> node_names_;        // file order, for messages
};

std::string LinkJson(const Link& l) {
  return StrCat("{\"bandwidth\": ", Num(l.bandwidth), ", \"latency\": ", Num(l.latency), "}");
}

// `open`, then one item per line, then `close`: keeps the canonical file diffable.
std::string Block(const char* open, const std::vector<std::string>& items, const char* close) {
  std::string out = open;
  for (size_t i = 0; i < items.size(); ++i) out += StrCat(i ? ",\n  " : "\n  ", items[i]);
  return StrCat(out, items.empty() ? "" : "\n ", close);
}

}  // namespace

Link Cluster::GroupLink(const std::vector<DeviceId>& group) const {
  HS_CHECK(!group.empty(), "GroupLink of an empty device group");
  std::vector<int> per_node(nodes.size(), 0);
  int spanned = 0;
  for (DeviceId d : group) {
    HS_CHECK(d >= 0 && d < size(), StrCat("device id ", d, " is outside [0, ", size(), ")"));
    const NodeId n = devices[d].node;
    HS_CHECK(n >= 0 && n < static_cast<NodeId>(nodes.size()),
             StrCat("device '", devices[d].name, "' has node ", n, " outside [0, ", nodes.size(), ")"));
    if (per_node[n]++ == 0) ++spanned;
  }
  if (spanned == 1) return nodes[devices[group.front()].node].intra;
  Link slowest = inter_node;
  for (size_t n = 0; n < nodes.size(); ++n) {
    if (per_node[n] < 2) continue;  // one device on a node sends straight onto the network
    slowest.bandwidth = std::min(slowest.bandwidth, nodes[n].intra.bandwidth);
    slowest.latency = std::max(slowest.latency, nodes[n].intra.latency);
  }
  return slowest;
}

Link Cluster::WorldLink() const {
  std::vector<DeviceId> all(devices.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<DeviceId>(i);
  return GroupLink(all);
}

std::vector<DeviceClass> Cluster::Classes() const {
  std::vector<DeviceClass> classes;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < devices.size(); ++i) {
    const Device& d = devices[i];
    const bool on_node = d.node >= 0 && d.node < static_cast<NodeId>(nodes.size());
    const Link intra = on_node ? nodes[d.node].intra : Link{};
    std::string key = StrCat(d.type, " flops=", Num(d.flops), " memory_bytes=", Num(d.memory_bytes),
                             " memory_bandwidth=", Num(d.memory_bandwidth), " intra=", Num(intra.bandwidth),
                             "B/s+", Num(intra.latency), "s");
    if (d.forward_flops > 0 || d.forward_memory_bandwidth > 0) {
      key += StrCat(" forward_flops=", Num(d.forward_flops), " forward_memory_bandwidth=", Num(d.forward_memory_bandwidth));
    }
    if (d.gemm_operand_bandwidth > 0) key += StrCat(" gemm_operand_bandwidth=", Num(d.gemm_operand_bandwidth));
    const auto [it, fresh] = index.emplace(key, classes.size());
    if (fresh) classes.push_back({std::move(key), {}});
    classes[it->second].devices.push_back(static_cast<DeviceId>(i));
  }
  return classes;
}

double Cluster::TotalFlops() const {
  double total = 0;
  for (const Device& d : devices) total += d.flops;
  return total;
}

std::string Cluster::Fingerprint() const {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64-bit offset basis
  for (unsigned char ch : ClusterToJson(*this)) {
    h ^= ch;
    h *= 1099511628211ull;  // FNV-1a 64-bit prime
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, h);
  return buf;
}

absl::StatusOr<Cluster> SubCluster(const Cluster& c, const std::vector<std::string>& members, const std::string& name) {
  if (members.empty()) return absl::InvalidArgumentError(StrCat("cluster '", c.name, "': no device left"));
  std::vector<bool> keep(c.devices.size(), false);
  for (const std::string& m : members) {
    size_t i = 0;
    while (i < c.devices.size() && c.devices[i].name != m) ++i;
    if (i == c.devices.size()) {
      return absl::InvalidArgumentError(StrCat("device '", m, "' is not in cluster '", c.name, "'"));
    }
    if (keep[i]) return absl::InvalidArgumentError(StrCat("device '", m, "' is named twice"));
    keep[i] = true;
  }
  Cluster out;
  out.name = name;
  out.inter_node = c.inter_node;
  out.collectives = c.collectives;
  std::vector<NodeId> node_of(c.nodes.size(), -1);
  for (size_t i = 0; i < c.devices.size(); ++i) {
    if (!keep[i]) continue;
    Device d = c.devices[i];
    const size_t old = static_cast<size_t>(d.node);
    if (node_of[old] < 0) {
      node_of[old] = static_cast<NodeId>(out.nodes.size());
      out.nodes.push_back(c.nodes[old]);
    }
    d.node = node_of[old];
    out.devices.push_back(std::move(d));
  }
  return out;
}

namespace {

// The optional rates of a device type or device (forward rates, GEMM operand bandwidth),
// written only where given (> 0), so that a cluster without them writes — and fingerprints — as
// before they existed.
std::string OptionalJson(double forward_flops, double forward_memory_bandwidth, double gemm_operand_bandwidth) {
  std::string s;
  if (forward_flops > 0) s += StrCat(", \"forward_flops\": ", Num(forward_flops));
  if (forward_memory_bandwidth > 0) s += StrCat(", \"forward_memory_bandwidth\": ", Num(forward_memory_bandwidth));
  if (gemm_operand_bandwidth > 0) s += StrCat(", \"gemm_operand_bandwidth\": ", Num(gemm_operand_bandwidth));
  return s;
}

}  // namespace

std::string ClusterToJson(const Cluster& c) {
  // Each type's values come from its first device; devices that differ carry inline overrides.
  std::map<std::string, const Device*> type_proto;
  for (const Device& d : c.devices) type_proto.emplace(d.type, &d);
  std::vector<std::string> types;
  for (const auto& [name, d] : type_proto) {
    types.push_back(StrCat(Quote(name), ": {\"flops\": ", Num(d->flops), ", \"memory_bytes\": ",
                           Num(d->memory_bytes), ", \"memory_bandwidth\": ", Num(d->memory_bandwidth),
                           OptionalJson(d->forward_flops, d->forward_memory_bandwidth, d->gemm_operand_bandwidth),
                           "}"));
  }
  // The first node's intra link is the default; other nodes carry an override only when they differ.
  const Link default_intra = c.nodes.empty() ? Link{} : c.nodes.front().intra;
  std::vector<std::string> nodes;
  for (const Node& n : c.nodes) {
    const std::string intra = n.intra == default_intra ? "" : StrCat(", \"intra_node\": ", LinkJson(n.intra));
    nodes.push_back(StrCat("{\"name\": ", Quote(n.name), intra, "}"));
  }
  std::vector<std::string> devices;
  for (const Device& d : c.devices) {
    const Device& t = *type_proto.at(d.type);
    const std::string node = d.node >= 0 && d.node < static_cast<NodeId>(c.nodes.size())
                                 ? c.nodes[d.node].name : StrCat("#", d.node);
    std::string item =
        StrCat("{\"name\": ", Quote(d.name), ", \"type\": ", Quote(d.type), ", \"node\": ", Quote(node));
    if (d.flops != t.flops) item += StrCat(", \"flops\": ", Num(d.flops));
    if (d.memory_bytes != t.memory_bytes) item += StrCat(", \"memory_bytes\": ", Num(d.memory_bytes));
    if (d.memory_bandwidth != t.memory_bandwidth) {
      item += StrCat(", \"memory_bandwidth\": ", Num(d.memory_bandwidth));
    }
    item += OptionalJson(d.forward_flops != t.forward_flops ? d.forward_flops : 0,
                         d.forward_memory_bandwidth != t.forward_memory_bandwidth ? d.forward_memory_bandwidth : 0,
                         d.gemm_operand_bandwidth != t.gemm_operand_bandwidth ? d.gemm_operand_bandwidth : 0);
    devices.push_back(item + "}");
  }
  std::vector<std::string> tables;
  for (const CollectiveTable& t : c.collectives) {
    std::string samples;
    for (size_t i = 0; i < t.samples.size(); ++i) {
      samples += StrCat(i ? ", [" : "[", Num(t.samples[i].bytes), ", ", Num(t.samples[i].seconds), "]");
    }
    tables.push_back(
        StrCat("{\"op\": ", Quote(t.op), ", \"link\": ", Quote(t.link), ", \"samples\": [", samples, "]}"));
  }
  const std::vector<std::string> links = {StrCat("\"intra_node\": ", LinkJson(default_intra)),
                                         StrCat("\"inter_node\": ", LinkJson(c.inter_node))};
  std::string out = StrCat("{\n \"format\": \"", kFormat, "\",\n \"version\": ", kVersion,
                           ",\n \"name\": ", Quote(c.name),
                           ",\n \"device_types\": ", Block("{", types, "}"),
                           ",\n \"nodes\": ", Block("[", nodes, "]"),
                           ",\n \"devices\": ", Block("[", devices, "]"),
                           ",\n \"links\": ", Block("{", links, "}"));
  if (!c.collectives.empty()) out += StrCat(",\n \"collectives\": ", Block("[", tables, "]"));
  return out + "\n}\n";
}

absl::StatusOr<Cluster> ParseCluster(const std::string& text, const std::string& source) {
  return Reader(source).Read(text);
}

absl::StatusOr<Cluster> ReadClusterFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(StrCat("cluster '", path, "': is a directory; expected a hetsynth-cluster JSON file"));
  }
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(StrCat("cluster '", path, "': no such file (expected a hetsynth-cluster JSON "
                                      "file; see docs/cluster-format.md and examples/clusters/)"));
  }
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(StrCat("cluster '", path, "': not a regular file; expected a hetsynth-cluster JSON file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(StrCat("cluster '", path, "': cannot open file"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ParseCluster(ss.str(), path);
}

}  // namespace hetsynth::costmodel
