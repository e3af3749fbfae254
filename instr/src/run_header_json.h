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
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "hetsynth/base/status.h"
#include "hetsynth/ir/input_limits.h"

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
  if (!root.contains("model") || !root["model"].is_object()) return err("field 'model'", "missing object");
  const json& m = root["model"];
  if (!m.contains("name") || !m["name"].is_string()) return err("model.name", "missing string");
  h->model = m["name"].get<std::string>();
  if (!m.contains("batch") || !m["batch"].is_number_integer() || m["batch"].get<int64_t>() <= 0) {
    return err("model.batch", StrCat(m.contains("batch") ? ir::Shorten(m["batch"].dump()) : "missing",
                                     "; expected a positive integer"));
  }
  h->batch = m["batch"].get<int64_t>();
  if (m.contains("args")) {
    if (!m["args"].is_object()) return err("model.args", "expected an object of numbers");
    for (auto it = m["args"].begin(); it != m["args"].end(); ++it) {
      if (!it.value().is_number()) {
        return err(StrCat("model.args.", ir::Shorten(it.key())), StrCat(ir::Shorten(it.value().dump()), "; expected a number"));
      }
      h->model_args[it.key()] = it.value().get<double>();
    }
  }
  if (!root.contains("cluster") || !root["cluster"].is_object()) return err("field 'cluster'", "missing object");
  const json& c = root["cluster"];
  if (!c.value("name", json()).is_string() || !c.value("fingerprint", json()).is_string()) {
    return err("cluster", "expected string fields 'name' and 'fingerprint'");
  }
  h->cluster = c["name"].get<std::string>();
  h->cluster_fingerprint = c["fingerprint"].get<std::string>();
  if (!c.contains("devices") || !c["devices"].is_array() || c["devices"].empty()) {
    return err("cluster.devices", "expected a non-empty array of device names");
  }
  for (const json& d : c["devices"]) {
    if (!d.is_string()) return err("cluster.devices", StrCat(ir::Shorten(d.dump()), "; expected a device name"));
    if (std::find(h->devices.begin(), h->devices.end(), d.get<std::string>()) != h->devices.end()) {
      return err("cluster.devices",
                 StrCat("'", ir::Shorten(d.get<std::string>()), "' appears twice; expected unique device names"));
    }
    h->devices.push_back(d.get<std::string>());
  }
  if (c.contains("device_flops")) {
    const json& f = c["device_flops"];
    if (!f.is_array() || f.size() != h->devices.size()) {
      return err("cluster.device_flops", StrCat("expected an array of ", h->devices.size(), " FLOP/s, one per device"));
    }
    for (const json& x : f) {
      if (!x.is_number() || !(x.get<double>() > 0) || !std::isfinite(x.get<double>())) {
        return err("cluster.device_flops", StrCat(ir::Shorten(x.dump()), "; expected a positive FLOP/s"));
      }
      h->device_flops.push_back(x.get<double>());
    }
  }
  return absl::OkStatus();
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
