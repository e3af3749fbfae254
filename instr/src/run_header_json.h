// The part plan files and placement files share (internal to instr/src): the model a file was
// made for ("model": name, batch, args) and the cluster it was made on ("cluster": name,
// fingerprint, devices, device_flops), checked field by field; err(where, what) makes the error,
// so that each format names its own file.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <limits>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/base/status.h"
#include "hetsynth/base/suggest.h"
#include "hetsynth/ir/input_limits.h"
#include "hetsynth/ir/json_document.h"

namespace hetsynth::instr::json_internal {

struct RunHeader {
  std::string model;
  int64_t batch = 0;
  std::map<std::string, double> model_args;
  std::string cluster, cluster_fingerprint;
  std::vector<std::string> devices;
  std::vector<double> device_flops;  // empty when the file has none
};

using ErrFn = std::function<absl::Status(const std::string& where, const std::string& what)>;

// The JSON type as a message names it: "a string", "an array", ...
inline const char* TypeName(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "an object";
    case nlohmann::json::value_t::array: return "an array";
    case nlohmann::json::value_t::string: return "a string";
    case nlohmann::json::value_t::boolean: return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "an integer";
    case nlohmann::json::value_t::number_float: return "a number";
    default: return "not a JSON value";
  }
}

// A field's position: "program[26].op" (a field of "program[26]"), "format" (of the document).
inline std::string At(const std::string& where, std::string_view field) {
  return where.empty() ? std::string(field) : StrCat(where, ".", field);
}
inline std::string At(const std::string& where, size_t index) { return StrCat(where, "[", index, "]"); }

// Reads fields so that every mismatch is one line naming the position and the value:
// "program[26].op: 5; expected a string". Absent optional fields leave *out as it is.
class Fields {
 public:
  explicit Fields(ErrFn err) : err_(std::move(err)) {}

  absl::Status Err(const std::string& pos, const std::string& what) const { return err_(pos, what); }
  absl::Status Expected(const std::string& pos, const nlohmann::json& v, const std::string& expected) const {
    return err_(pos, StrCat(ir::Shorten(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)), "; expected ",
                            expected));
  }
  absl::Status Missing(const std::string& pos, const std::string& expected) const {
    return err_(pos, StrCat("missing; expected ", expected));
  }

  // Unknown fields are errors: a misspelt "segmnet" would otherwise be lost without a word.
  absl::Status Known(const nlohmann::json& obj, const std::string& where, const std::vector<std::string>& allowed) const {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
        return err_(where, StrCat("unknown field '", ir::Shorten(it.key()), "'", Suggest(it.key(), allowed),
                                  " (expected one of: ", KnownList(allowed), ")"));
      }
    }
    return absl::OkStatus();
  }

  // obj[field], which must exist when `required`; nullptr when it is absent.
  absl::StatusOr<const nlohmann::json*> Get(const nlohmann::json& obj, const std::string& where, const char* field,
                                            bool required, const std::string& expected) const {
    const auto it = obj.find(field);
    if (it == obj.end()) {
      if (required) return Missing(At(where, field), expected);
      return nullptr;
    }
    return &*it;
  }

  absl::Status String(const nlohmann::json& obj, const std::string& where, const char* field, bool required,
                      std::string* out) const {
    HS_ASSIGN_OR_RETURN(const nlohmann::json* j, Get(obj, where, field, required, "a string"));
    if (j == nullptr) return absl::OkStatus();
    if (!j->is_string()) return Expected(At(where, field), *j, "a string");
    *out = j->get<std::string>();
    return absl::OkStatus();
  }

  absl::Status Bool(const nlohmann::json& obj, const std::string& where, const char* field, bool required,
                    bool* out) const {
    HS_ASSIGN_OR_RETURN(const nlohmann::json* j, Get(obj, where, field, required, "true or false"));
    if (j == nullptr) return absl::OkStatus();
    if (!j->is_boolean()) return Expected(At(where, field), *j, "true or false");
    *out = j->get<bool>();
    return absl::OkStatus();
  }

  // An integer in [lo, hi]; range-checked before narrowing, so 2^32 never becomes 0.
  absl::Status Int(const nlohmann::json& j, const std::string& pos, int64_t lo, int64_t hi, int64_t* out,
                   const std::string& what = "") const {
    const std::string expected = StrCat("an integer in [", lo, ", ", hi, "]", what);
    if (!j.is_number_integer() || (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(hi)) ||
        j.get<int64_t>() < lo || j.get<int64_t>() > hi) {
      return Expected(pos, j, expected);
    }
    *out = j.get<int64_t>();
    return absl::OkStatus();
  }
  absl::Status Int(const nlohmann::json& obj, const std::string& where, const char* field, bool required, int64_t lo,
                   int64_t hi, int64_t* out, const std::string& what = "") const {
    HS_ASSIGN_OR_RETURN(const nlohmann::json* j,
                        Get(obj, where, field, required, StrCat("an integer in [", lo, ", ", hi, "]", what)));
    if (j == nullptr) return absl::OkStatus();
    return Int(*j, At(where, field), lo, hi, out, what);
  }

  // A finite number in [lo, hi] (`what` names its unit: "seconds", "bytes").
  absl::Status Number(const nlohmann::json& j, const std::string& pos, double lo, double hi, const char* what,
                      double* out) const {
    if (!j.is_number() || !std::isfinite(j.get<double>()) || !(j.get<double>() >= lo) || !(j.get<double>() <= hi)) {
      return Expected(pos, j, StrCat("finite ", what, " in [", lo, ", ", hi, "]"));
    }
    *out = j.get<double>();
    return absl::OkStatus();
  }
  absl::Status Number(const nlohmann::json& obj, const std::string& where, const char* field, bool required, double lo,
                      double hi, const char* what, double* out) const {
    HS_ASSIGN_OR_RETURN(const nlohmann::json* j,
                        Get(obj, where, field, required, StrCat("finite ", what, " in [", lo, ", ", hi, "]")));
    if (j == nullptr) return absl::OkStatus();
    return Number(*j, At(where, field), lo, hi, what, out);
  }

  // obj[field] as an object or array (`expected` says of what); nullptr when absent and optional.
  absl::StatusOr<const nlohmann::json*> Object(const nlohmann::json& obj, const std::string& where, const char* field,
                                               bool required, const std::string& expected = "an object") const {
    HS_ASSIGN_OR_RETURN(const nlohmann::json* j, Get(obj, where, field, required, expected));
    if (j != nullptr && !j->is_object()) return Expected(At(where, field), *j, expected);
    return j;
  }
  absl::StatusOr<const nlohmann::json*> Array(const nlohmann::json& obj, const std::string& where, const char* field,
                                              bool required, const std::string& expected) const {
    HS_ASSIGN_OR_RETURN(const nlohmann::json* j, Get(obj, where, field, required, expected));
    if (j != nullptr && !j->is_array()) return Expected(At(where, field), *j, expected);
    return j;
  }

 private:
  ErrFn err_;
};

// A cluster fingerprint as costmodel::Cluster::Fingerprint writes it: 16 lower-case hex digits.
inline bool IsFingerprint(const std::string& s) {
  return s.size() == 16 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Moves the header's fields into a file's struct with the same field names (Plan,
// InferencePlacement).
template <class File>
void MoveRunHeader(RunHeader&& h, File* f) {
  f->model = std::move(h.model);
  f->batch = h.batch;
  f->model_args = std::move(h.model_args);
  f->cluster = std::move(h.cluster);
  f->cluster_fingerprint = std::move(h.cluster_fingerprint);
  f->devices = std::move(h.devices);
  f->device_flops = std::move(h.device_flops);
}

inline absl::Status ReadRunHeader(const nlohmann::json& root, const ErrFn& err, RunHeader* h) {
  using nlohmann::json;
  const Fields f(err);
  HS_ASSIGN_OR_RETURN(const json* m, f.Object(root, "", "model", true, "an object {name, batch, args}"));
  HS_RETURN_IF_ERROR(f.Known(*m, "model", {"name", "batch", "args"}));
  HS_RETURN_IF_ERROR(f.String(*m, "model", "name", true, &h->model));
  HS_ASSIGN_OR_RETURN(const json* batch, f.Get(*m, "model", "batch", true, "a positive integer"));
  if (!batch->is_number_integer() || batch->get<int64_t>() == 0 || (!batch->is_number_unsigned() && batch->get<int64_t>() < 0) ||
      (batch->is_number_unsigned() && batch->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
    return f.Expected("model.batch", *batch, "a positive integer");
  }
  h->batch = batch->get<int64_t>();
  HS_ASSIGN_OR_RETURN(const json* args, f.Object(*m, "model", "args", false, "an object of numbers"));
  if (args != nullptr) {
    for (auto it = args->begin(); it != args->end(); ++it) {
      if (!it.value().is_number()) return f.Expected(At("model.args", ir::Shorten(it.key())), it.value(), "a number");
      h->model_args[it.key()] = it.value().get<double>();
    }
  }
  HS_ASSIGN_OR_RETURN(const json* c, f.Object(root, "", "cluster", true, "an object {name, fingerprint, devices}"));
  HS_RETURN_IF_ERROR(f.Known(*c, "cluster", {"name", "fingerprint", "devices", "device_flops"}));
  HS_RETURN_IF_ERROR(f.String(*c, "cluster", "name", true, &h->cluster));
  HS_RETURN_IF_ERROR(f.String(*c, "cluster", "fingerprint", true, &h->cluster_fingerprint));
  if (!IsFingerprint(h->cluster_fingerprint)) {
    return f.Expected("cluster.fingerprint", c->at("fingerprint"), "16 hex digits (the cluster's Fingerprint)");
  }
  HS_ASSIGN_OR_RETURN(const json* devices, f.Array(*c, "cluster", "devices", true, "a non-empty array of device names"));
  if (devices->empty()) return f.Expected("cluster.devices", *devices, "a non-empty array of device names");
  for (size_t i = 0; i < devices->size(); ++i) {
    const json& d = (*devices)[i];
    if (!d.is_string() || d.get<std::string>().empty()) return f.Expected(At("cluster.devices", i), d, "a device name");
    if (std::find(h->devices.begin(), h->devices.end(), d.get<std::string>()) != h->devices.end()) {
      return err(At("cluster.devices", i),
                 StrCat("'", ir::Shorten(d.get<std::string>()), "' appears twice; expected unique device names"));
    }
    h->devices.push_back(d.get<std::string>());
  }
  HS_ASSIGN_OR_RETURN(const json* flops, f.Array(*c, "cluster", "device_flops", false,
                                                 StrCat("an array of ", h->devices.size(), " FLOP/s, one per device")));
  if (flops != nullptr) {
    if (flops->size() != h->devices.size()) {
      return err("cluster.device_flops", StrCat(flops->size(), " numbers; expected ", h->devices.size(), " FLOP/s, one per device"));
    }
    for (size_t i = 0; i < flops->size(); ++i) {
      const json& x = (*flops)[i];
      if (!x.is_number() || !(x.get<double>() > 0) || !std::isfinite(x.get<double>())) {
        return f.Expected(At("cluster.device_flops", i), x, "a positive FLOP/s");
      }
      h->device_flops.push_back(x.get<double>());
    }
  }
  return absl::OkStatus();
}

// The document of a plan or placement file: an empty file, invalid JSON (with nlohmann's line
// and column) and a document that is not an object each get their own line.
inline absl::StatusOr<nlohmann::json> ParseObject(const std::string& text, const ErrFn& err) {
  if (const int depth = ir::JsonNestingDepth(text); depth > ir::kMaxJsonDepth) {
    return err("document", StrCat("nests arrays/objects ", depth, " deep; expected at most ", ir::kMaxJsonDepth));
  }
  if (ir::IsBlank(text)) return err("", "is empty; expected a JSON object");
  ir::JsonDocument doc = ir::ParseJsonDocument(text);
  if (!doc.error.empty() && !doc.syntax) {  // a value nlohmann cannot hold (a number overflow)
    return err("", doc.error);
  }
  if (!doc.error.empty()) return err("", StrCat("is not valid JSON (", ir::Shorten(ir::JsonErrorText(doc.error), 160), ")"));
  nlohmann::json& root = doc.root;
  if (!root.is_object()) return err("", StrCat("is ", TypeName(root), "; expected a JSON object"));
  // nlohmann keeps the last of duplicate keys; a key given twice in one object is an error.
  if (doc.duplicate_key) {
    return err("", StrCat("field '", ir::Shorten(*doc.duplicate_key), "' appears twice in one object; expected each once"));
  }
  return std::move(root);
}

// Parses `text` with reader.Parse and passes the document to read(root); a field of the wrong
// JSON type makes nlohmann::json throw, which is bad input, not a crash: the reader's error.
template <class Reader, class Read>
auto ReadDocument(const Reader& reader, const std::string& text, const Read& read) -> decltype(read(nlohmann::json())) {
  try {
    HS_ASSIGN_OR_RETURN(nlohmann::json root, reader.Parse(text));
    return read(root);
  } catch (const nlohmann::json::exception& e) {
    return reader.Err("document", StrCat("a field has the wrong type (", e.what(), ")"));
  }
}

}  // namespace hetsynth::instr::json_internal
