// Parameter initialization and checkpoints of full tensors (training.h).
#include "hetsynth/runtime/training.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "hetsynth/ir/input_limits.h"
#include "hetsynth/base/status.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/runtime/random.h"
#include "hetsynth/runtime/safetensors.h"

namespace hetsynth::runtime {

Tensor InitParameter(const ir::Value& param, uint64_t seed) {
  HS_CHECK(param.kind == ir::ValueKind::kParameter, "InitParameter on a non-parameter");
  Tensor t(param.shape);
  Rng rng(seed, Fnv1a(param.name));
  const float scale = static_cast<float>(param.init.scale);
  switch (param.init.kind) {
    case ir::Init::Kind::kZeros: break;
    case ir::Init::Kind::kOnes: t.Fill(1.0f); break;
    case ir::Init::Kind::kNormal:
      for (float& v : t.data) v = scale * rng.Normal();
      break;
    case ir::Init::Kind::kUniform:
      for (float& v : t.data) v = scale * (2.0f * rng.Uniform() - 1.0f);
      break;
    case ir::Init::Kind::kData:
      if (!param.init.data) break;  // Init::Stored: in the graph's weights file, loaded over these zeros
      HS_CHECK(param.init.data->size() == t.data.size(), "Init::Data of the wrong size");
      std::copy(param.init.data->begin(), param.init.data->end(), t.data.begin());
      break;
  }
  return t;
}


std::map<std::string, Tensor> InitRunningStats(const ir::Graph& graph) {
  std::map<std::string, Tensor> out;
  for (const ir::RunningStat& r : graph.running_stats()) {
    Tensor t(r.shape);
    if (r.init.kind == ir::Init::Kind::kOnes) t.Fill(1.0f);
    if (r.init.kind == ir::Init::Kind::kData && r.init.data) std::copy(r.init.data->begin(), r.init.data->end(), t.data.begin());
    out.emplace(r.name, std::move(t));
  }
  return out;
}

std::set<ir::ValueId> RunningStatMoments(const ir::Graph& graph) {
  std::set<ir::ValueId> moments;
  for (const ir::RunningStat& r : graph.running_stats()) moments.insert(r.moments);
  return moments;
}

void UpdateRunningStats(const ir::Graph& graph, ir::ValueId moments_value, const Tensor& moments,
                        std::map<std::string, Tensor>& stats) {
  const ir::Value& mv = graph.value(moments_value);
  const int64_t c = mv.shape.at(1);
  HS_CHECK(moments.numel() == 2 * c, "running statistics: moments of the wrong size");
  // Elements per channel: those of the batch_moments input, divided by the channels.
  const int64_t n = ir::NumElements(graph.value(graph.node(mv.producer).inputs.at(0)).shape) / c;
  for (const ir::RunningStat& r : graph.running_stats()) {
    if (r.moments != moments_value) continue;
    float* s = stats.at(r.name).ptr();
    for (int64_t i = 0; i < c; ++i) {
      const double mean = moments.data[static_cast<size_t>(i)], sq = moments.data[static_cast<size_t>(c + i)];
      const double batch = r.variance ? std::max(sq - mean * mean, 0.0) * (n > 1 ? static_cast<double>(n) / (n - 1) : 1.0) : mean;
      s[i] = static_cast<float>((1.0 - r.momentum) * s[i] + r.momentum * batch);
    }
  }
}

std::map<std::string, ir::Shape> CheckpointShapes(const ir::Graph& graph) {
  std::map<std::string, ir::Shape> shapes;
  for (ir::ValueId p : graph.parameters()) shapes[graph.value(p).name] = graph.value(p).shape;
  for (const ir::RunningStat& r : graph.running_stats()) shapes[r.name] = r.shape;
  return shapes;
}

std::string OptimizerStatePath(const std::string& checkpoint) {
  const std::string ext = ".safetensors";
  if (checkpoint.size() > ext.size() &&
      checkpoint.compare(checkpoint.size() - ext.size(), ext.size(), ext) == 0) {
    return checkpoint.substr(0, checkpoint.size() - ext.size()) + ".optim" + ext;
  }
  return checkpoint + ".optim.safetensors";
}

// FNV-1a 64 over names, shapes and fp32 bytes (in name order): the content hash of a file's
// tensors, as written (F32) and as read back.
std::string CheckpointTensorsHash(const std::map<std::string, Tensor>& tensors) {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  for (const auto& [name, t] : tensors) {
    mix(name.data(), name.size() + 1);
    for (int64_t d : t.shape) mix(&d, sizeof d);
    mix(t.data.data(), t.data.size() * sizeof(float));
  }
  return absl::StrFormat("%016x", h);
}

namespace {


std::string Stem(const std::string& path) {
  const std::string ext = ".safetensors";
  if (path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0) {
    return path.substr(0, path.size() - ext.size());
  }
  return path;
}

// A fresh id for a checkpoint set: no two writers (processes, calls) share one.
std::string NewSetId() {
  static std::atomic<uint64_t> counter{0};
  const uint64_t t = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return absl::StrFormat("%08x%04x%04x", static_cast<uint32_t>(t ^ (t >> 32)), static_cast<uint32_t>(::getpid()) & 0xffff,
                         static_cast<uint32_t>(counter.fetch_add(1)) & 0xffff);
}

// fsync of the directory holding `path`, so that the renames into it survive a power loss.
void SyncDirectory(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Whether `name` is the name of a state file WriteCheckpoint makes beside `stem`:
// "<stem>.optim.<16 lowercase hex (NewSetId)>.safetensors".
bool IsSetStateName(const std::string& name, const std::string& stem) {
  const std::string prefix = stem + ".optim.", ext = ".safetensors";
  if (name.size() != prefix.size() + 16 + ext.size() || !name.starts_with(prefix) || !name.ends_with(ext)) return false;
  for (size_t i = prefix.size(); i < prefix.size() + 16; ++i) {
    if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f'))) return false;
  }
  return true;
}

// After a commit: state files of other sets, the pre-set state file, and temporaries
// ("NAME.tmp.PID.N") of those and of the checkpoint left by writers that are no longer running.
// Nothing else is touched, whatever its name starts with.
void RemoveStale(const std::string& path, const std::string& keep_state) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  const std::string base = p.filename().string();
  const std::string stem = fs::path(Stem(path)).filename().string();
  const std::string legacy = fs::path(OptimizerStatePath(path)).filename().string();
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name == keep_state) continue;
    // "NAME.tmp.PID.N": the temporary WriteSafetensors writes NAME through.
    std::string core = name;
    long pid = 0;
    if (const size_t t = name.rfind(".tmp."); t != std::string::npos) {
      const std::string rest = name.substr(t + 5);
      const size_t dot = rest.find('.');
      const bool digits = dot != std::string::npos && dot > 0 && dot + 1 < rest.size() &&
                          rest.find_first_not_of("0123456789") == dot &&
                          rest.find_first_not_of("0123456789", dot + 1) == std::string::npos;
      if (digits) {
        core = name.substr(0, t);
        pid = std::strtol(rest.c_str(), nullptr, 10);
      }
    }
    const bool ours = core == legacy || IsSetStateName(core, stem) || (core == base && core != name);
    if (!ours) continue;
    if (core != name && pid > 0 && pid != ::getpid() && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)) {
      continue;  // another live writer's file
    }
    fs::remove(e.path(), ec);
  }
}

// Steps past 2^53 are refused at load: counters and --metrics keep them exact as doubles, and
// adding a run's steps cannot overflow int64.
constexpr int64_t kMaxStep = int64_t{1} << 53;

// The state tensors of each optimizer, by suffix ("<param>.<suffix>"), as Optimizer::StateTensors
// names them.
const std::vector<std::string>& StateSuffixes(OptimizerKind kind) {
  static const std::vector<std::string> adam = {"exp_avg", "exp_avg_sq"}, sgd = {"momentum_buffer"};
  return kind == OptimizerKind::kAdam ? adam : sgd;
}

// The first non-finite element of `t` (or a negative one, when `non_negative`), if any.
std::optional<std::pair<size_t, float>> FirstBad(const Tensor& t, bool non_negative) {
  for (size_t i = 0; i < t.data.size(); ++i) {
    const float v = t.data[i];
    if (!std::isfinite(v) || (non_negative && v < 0)) return std::pair(i, v);
  }
  return std::nullopt;
}

// "gpt(layers=2, hidden=32, heads=4; batch 4)" -> name "gpt" and {layers: "2", ...}: the form
// ir::ModelSpec::ToString gives and WriteCheckpoint records as `model`.
struct ModelString {
  std::string name;
  std::map<std::string, std::string> args;
};
ModelString ParseModelString(const std::string& s) {
  ModelString m;
  const size_t open = s.find('(');
  m.name = s.substr(0, open);
  if (open == std::string::npos) return m;
  const size_t close = s.rfind(')');
  std::string inner = s.substr(open + 1, close == std::string::npos || close < open ? std::string::npos : close - open - 1);
  inner = inner.substr(0, inner.find(';'));  // the batch follows the ';'
  for (size_t at = 0; at < inner.size();) {
    size_t comma = inner.find(',', at);
    if (comma == std::string::npos) comma = inner.size();
    std::string kv = inner.substr(at, comma - at);
    kv.erase(0, kv.find_first_not_of(' '));
    if (const size_t eq = kv.find('='); eq != std::string::npos) m.args[kv.substr(0, eq)] = kv.substr(eq + 1);
    at = comma + 1;
  }
  return m;
}

// Hyperparameters that leave every parameter's meaning as it is: a checkpoint moves freely
// between their values (and between batch sizes).
bool ArchitectureNeutral(const std::string& key) { return key == "dropout" || key == "capacity_factor"; }

// The checkpoint's `model` against the model being built (both as ModelSpec::ToString gives
// them): the same built-in model with the same hyperparameters, except batch, dropout and
// capacity_factor. Model files (.onnx, graph .json) are checked by their tensors alone.
absl::Status CheckModel(const std::string& where, const std::string& written, const std::string& expected) {
  if (expected.empty()) return absl::OkStatus();
  const ModelString e = ParseModelString(expected), w = ParseModelString(written);
  if (ir::IsModelFile(e.name)) return absl::OkStatus();
  auto refuse = [&](const std::string& what) {
    return absl::InvalidArgumentError(StrCat(where, ": metadata model='", ir::Shorten(written, 200), "' ", what,
                                             " but the model is '", ir::Shorten(expected, 200),
                                             "'; expected the same architecture (batch, dropout and capacity_factor may differ)"));
  };
  if (w.name != e.name) return refuse(StrCat("names model ", ir::Shorten(w.name)));
  for (const auto& [key, value] : w.args) {
    if (ArchitectureNeutral(key)) continue;
    const auto it = e.args.find(key);
    if (it == e.args.end() || it->second == value) continue;
    char *end1 = nullptr, *end2 = nullptr;
    const double a = std::strtod(value.c_str(), &end1), b = std::strtod(it->second.c_str(), &end2);
    if (!value.empty() && *end1 == '\0' && !it->second.empty() && *end2 == '\0' && a == b) continue;
    return refuse(StrCat("has ", key, "=", ir::Shorten(value)));
  }
  return absl::OkStatus();
}

// What a checkpoint's metadata may say, checked from its header before any tensor is read.
absl::Status CheckManifest(const std::string& where, const std::map<std::string, std::string>& meta,
                           const std::string& model, int64_t* step) {
  if (auto it = meta.find("format"); it != meta.end() && it->second != "hetsynth-checkpoint") {
    return absl::InvalidArgumentError(StrCat(where, ": metadata format='", ir::Shorten(it->second),
                                             "'; expected 'hetsynth-checkpoint' (or no metadata, a plain safetensors file)"));
  }
  if (auto it = meta.find("optimizer"); it != meta.end() && !ParseOptimizerKind(it->second).ok()) {
    return absl::InvalidArgumentError(StrCat(where, ": metadata optimizer='", ir::Shorten(it->second),
                                             "'; expected sgd or adam"));
  }
  if (auto it = meta.find("model"); it != meta.end()) HS_RETURN_IF_ERROR(CheckModel(where, it->second, model));
  if (auto it = meta.find("step"); it != meta.end()) {
    char* end = nullptr;
    errno = 0;
    *step = std::strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end != '\0' || *step < 0 || errno == ERANGE || *step > kMaxStep) {
      return absl::InvalidArgumentError(StrCat(where, ": metadata step='", ir::Shorten(it->second),
                                               "'; expected a non-negative integer at most 2^53 = ", kMaxStep));
    }
  }
  return absl::OkStatus();
}

// Every state tensor "<param>.<suffix>" belongs to a parameter of the model, with its shape, and
// its suffix is one an optimizer writes; checked from the header.
absl::Status CheckStateNames(const std::string& state_path, const SafetensorsHeader& h,
                             const std::map<std::string, ir::Shape>& shapes) {
  const std::string where = StrCat("optimizer state '", state_path, "'");
  if (auto it = h.metadata.find("optimizer"); it != h.metadata.end() && !ParseOptimizerKind(it->second).ok()) {
    return absl::InvalidArgumentError(StrCat(where, ": metadata optimizer='", ir::Shorten(it->second),
                                             "'; expected sgd or adam"));
  }
  for (const auto& [key, shape] : h.shapes) {
    const size_t dot = key.rfind('.');
    const std::string suffix = dot == std::string::npos ? "" : key.substr(dot + 1);
    if (suffix != "exp_avg" && suffix != "exp_avg_sq" && suffix != "momentum_buffer") {
      return absl::InvalidArgumentError(StrCat(where, ": tensor '", ir::Shorten(key), "' is not optimizer state; expected "
                                               "'<parameter>.exp_avg', '.exp_avg_sq' (adam) or '.momentum_buffer' (sgd)"));
    }
    const auto p = shapes.find(key.substr(0, dot));
    if (p == shapes.end() || p->second != shape) {
      return absl::InvalidArgumentError(StrCat(where, ": tensor '", ir::Shorten(key),
                                               "' does not match a parameter of the model"));
    }
  }
  return absl::OkStatus();
}

// The optimizer a state file is for: its `optimizer` metadata, else the manifest's, else what
// its tensors' suffixes say. Then every tensor must be of that optimizer, each parameter with one
// state tensor must have all of them, and the values must be finite (exp_avg_sq >= 0).
absl::StatusOr<OptimizerKind> CheckState(const std::string& state_path, const SafetensorsFile& sf,
                                         const std::string& manifest_optimizer) {
  const std::string where = StrCat("optimizer state '", state_path, "'");
  std::string name = sf.metadata.count("optimizer") ? sf.metadata.at("optimizer") : manifest_optimizer;
  if (!manifest_optimizer.empty() && name != manifest_optimizer) {
    return absl::InvalidArgumentError(StrCat(where, ": metadata optimizer='", ir::Shorten(name), "' but its manifest says '",
                                             ir::Shorten(manifest_optimizer), "'; the checkpoint set is inconsistent"));
  }
  if (name.empty() && !sf.tensors.empty()) name = sf.tensors.begin()->first.ends_with(".momentum_buffer") ? "sgd" : "adam";
  if (name.empty()) name = "adam";
  HS_ASSIGN_OR_RETURN(const OptimizerKind kind, ParseOptimizerKind(name));
  const std::vector<std::string>& suffixes = StateSuffixes(kind);
  std::map<std::string, std::set<std::string>> have;  // parameter -> its state suffixes
  for (const auto& [key, t] : sf.tensors) {
    const size_t dot = key.rfind('.');
    const std::string suffix = key.substr(dot + 1);
    if (std::find(suffixes.begin(), suffixes.end(), suffix) == suffixes.end()) {
      return absl::InvalidArgumentError(StrCat(where, ": tensor '", ir::Shorten(key), "' is not ", name, " state; expected ",
                                               absl::StrJoin(suffixes, " and "), " tensors"));
    }
    have[key.substr(0, dot)].insert(suffix);
    const bool non_negative = suffix == "exp_avg_sq";
    if (auto bad = FirstBad(t, non_negative)) {
      return absl::InvalidArgumentError(StrCat(where, ": tensor '", ir::Shorten(key), "' element ", bad->first, " is ",
                                               bad->second, non_negative ? "; expected finite, non-negative values"
                                                                         : "; expected finite values"));
    }
  }
  for (const auto& [param, got] : have) {
    for (const std::string& suffix : suffixes) {
      if (!got.count(suffix)) {
        return absl::InvalidArgumentError(StrCat(where, ": parameter '", ir::Shorten(param), "' has ", *got.begin(),
                                                 " but no ", suffix, "; expected all of its ", name, " state (",
                                                 absl::StrJoin(suffixes, ", "), ")"));
      }
    }
  }
  return kind;
}

}  // namespace

void PrintCheckpointNote(const Checkpoint& ck) {
  if (!ck.note.empty()) std::fprintf(stderr, "hetsynth: note: %s\n", ck.note.c_str());
}

absl::Status CheckCheckpointFinite(const std::string& path, const std::map<std::string, Tensor>& params,
                                  const std::map<std::string, Tensor>& state) {
  for (const auto* tensors : {&params, &state}) {
    for (const auto& [name, t] : *tensors) {
      if (auto bad = FirstBad(t, tensors == &state && name.ends_with(".exp_avg_sq"))) {
        return absl::InvalidArgumentError(StrCat("checkpoint '", path, "' not written: ",
                                                 tensors == &state ? "optimizer state" : "tensor", " '", name,
                                                 "' element ", bad->first, " is ", bad->second,
                                                 "; the training diverged (lower --lr)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status WriteCheckpoint(const std::string& path, const std::string& model,
                             const std::map<std::string, Tensor>& params,
                             const std::map<std::string, Tensor>& state, OptimizerKind optimizer,
                             int64_t step) {
  // Nothing is written when a value is not finite: the old set stays, and a checkpoint never
  // holds what --load would refuse.
  HS_RETURN_IF_ERROR(CheckCheckpointFinite(path, params, state));
  const std::string set = NewSetId();
  std::map<std::string, std::string> meta = {
      {"format", "hetsynth-checkpoint"},
      {"model", model},
      {"step", std::to_string(step)},
      {"optimizer", OptimizerName(optimizer)},
      {"set", set},
  };
  std::string state_name, state_path;
  if (!state.empty()) {
    state_path = StrCat(Stem(path), ".optim.", set, ".safetensors");
    state_name = std::filesystem::path(state_path).filename().string();
    HS_RETURN_IF_ERROR(WriteSafetensors(state_path, state, meta));
    meta["optimizer_state"] = state_name;
    meta["optimizer_state_hash"] = CheckpointTensorsHash(state);
  }
  meta["params_hash"] = CheckpointTensorsHash(params);
  // The commit: `path` (the manifest) replaces the old set's in one rename.
  if (absl::Status st = WriteSafetensors(path, params, meta); !st.ok()) {
    if (!state_path.empty()) ::unlink(state_path.c_str());  // the new set's state, which nothing names
    return st;
  }
  SyncDirectory(path);
  RemoveStale(path, state_name);
  return absl::OkStatus();
}

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path,
                                          const std::map<std::string, ir::Shape>& shapes,
                                          const OptimizerConfig& optimizer, const std::string& model) {
  const std::string where = StrCat("checkpoint '", path, "'");
  Checkpoint ck;
  // Names, shapes and metadata from the header, before any tensor is read: an extra tensor of
  // any size is refused without reading it.
  auto check = [&](const SafetensorsHeader& h) -> absl::Status {
    HS_RETURN_IF_ERROR(CheckManifest(where, h.metadata, model, &ck.step));
    std::vector<std::string> missing;
    for (const auto& [name, shape] : shapes) {
      if (!h.shapes.count(name)) missing.push_back(name);
    }
    if (!missing.empty()) {
      if (missing.size() > 5) missing.resize(5), missing.push_back("...");
      return absl::InvalidArgumentError(StrCat(where, ": missing parameters ", absl::StrJoin(missing, ", "),
                                               "; was it saved from a different model?"));
    }
    for (const auto& [name, shape] : shapes) {
      const ir::Shape& got = h.shapes.at(name);
      if (got != shape) {
        return absl::InvalidArgumentError(StrCat(where, ": tensor '", name, "' has shape ", ir::ShapeString(got),
                                                 "; the model expects ", ir::ShapeString(shape)));
      }
    }
    for (const auto& [name, shape] : h.shapes) {
      if (!shapes.count(name)) {
        return absl::InvalidArgumentError(StrCat(where, ": tensor '", ir::Shorten(name),
                                                 "' is not a parameter of the model; was it saved from a different model?"));
      }
    }
    return absl::OkStatus();
  };
  HS_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path, check));
  for (const auto& [name, t] : file.tensors) {
    if (auto bad = FirstBad(t, false)) {
      return absl::InvalidArgumentError(StrCat(where, ": tensor '", name, "' element ", bad->first, " is ",
                                               bad->second, "; expected finite parameters"));
    }
  }
  ck.params = std::move(file.tensors);
  auto meta = [&](const char* key) {
    auto it = file.metadata.find(key);
    return it == file.metadata.end() ? std::string() : it->second;
  };
  const std::string wanted = OptimizerName(optimizer.kind);
  // Uses the state read from `state_path` when it is of the optimizer asked for; else says why not.
  auto use_state = [&](const std::string& state_path, SafetensorsFile sf) -> absl::Status {
    HS_ASSIGN_OR_RETURN(const OptimizerKind kind, CheckState(state_path, sf, meta("optimizer")));
    if (sf.tensors.empty()) return absl::OkStatus();
    if (kind != optimizer.kind) {
      ck.note = StrCat(where, ": its ", OptimizerName(kind), " state is not used with --optimizer ", wanted,
                       "; the optimizer state starts from zero");
    } else if (kind == OptimizerKind::kSgd && optimizer.momentum == 0) {
      ck.note = StrCat(where, ": its sgd momentum buffers are not used with --momentum 0; they are dropped");
    } else {
      ck.state = std::move(sf.tensors);
    }
    return absl::OkStatus();
  };
  auto state_check = [&](const std::string& state_path) {
    return [&shapes, state_path](const SafetensorsHeader& h) { return CheckStateNames(state_path, h, shapes); };
  };
  const auto set = file.metadata.find("set");
  std::string state_path = OptimizerStatePath(path);  // a checkpoint from before sets
  if (set != file.metadata.end()) {
    if (meta("params_hash") != CheckpointTensorsHash(ck.params)) {
      return absl::InvalidArgumentError(StrCat(where, ": parameters do not match params_hash in its manifest (",
                                               ir::Shorten(meta("params_hash"), 20), "); the file is corrupt"));
    }
    const std::string name = meta("optimizer_state");
    if (name.empty()) {
      if (!meta("optimizer_state_hash").empty()) {
        ck.note = StrCat(where, ": its manifest has optimizer_state_hash but no optimizer_state file, so its ",
                         ir::Shorten(meta("optimizer").empty() ? "optimizer" : meta("optimizer")),
                         " state is not loaded; the optimizer state starts from zero");
      }
      return ck;
    }
    if (name.find('/') != std::string::npos || name.starts_with(".")) {
      return absl::InvalidArgumentError(StrCat(where, ": optimizer_state='", ir::Shorten(name),
                                               "'; expected a file name beside the checkpoint"));
    }
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    state_path = (dir / name).string();
    if (!std::filesystem::exists(state_path)) {
      return absl::InvalidArgumentError(StrCat(where, ": its optimizer state '", state_path,
                                               "' is missing; the checkpoint set is incomplete"));
    }
    HS_ASSIGN_OR_RETURN(SafetensorsFile sf, ReadSafetensors(state_path, state_check(state_path)));
    const auto sset = sf.metadata.find("set"), sstep = sf.metadata.find("step");
    if (sset == sf.metadata.end() || sset->second != set->second || sstep == sf.metadata.end() ||
        sstep->second != meta("step") || CheckpointTensorsHash(sf.tensors) != meta("optimizer_state_hash")) {
      return absl::InvalidArgumentError(StrCat(where, ": optimizer state '", state_path,
                                               "' is not the one its manifest names (set, step or hash differ); "
                                               "the checkpoint set is inconsistent"));
    }
    HS_RETURN_IF_ERROR(use_state(state_path, std::move(sf)));
    return ck;
  }
  if (std::filesystem::exists(state_path)) {
    HS_ASSIGN_OR_RETURN(SafetensorsFile sf, ReadSafetensors(state_path, state_check(state_path)));
    HS_RETURN_IF_ERROR(use_state(state_path, std::move(sf)));
  }
  return ck;
}

}  // namespace hetsynth::runtime
