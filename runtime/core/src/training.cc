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
#include <filesystem>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "hetsynth/ir/input_limits.h"
#include "hetsynth/base/status.h"
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

namespace {

// FNV-1a 64 over names, shapes and fp32 bytes (in name order): the content hash of a file's
// tensors, as written (F32) and as read back.
std::string TensorsHash(const std::map<std::string, Tensor>& tensors) {
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

// After a commit: state files of other sets, the pre-set state file, and temporaries
// ("NAME.tmp.PID.N") left by writers that are no longer running.
void RemoveStale(const std::string& path, const std::string& keep_state) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  const std::string base = p.filename().string();
  const std::string state_prefix = fs::path(Stem(path)).filename().string() + ".optim.";
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool ours = name.starts_with(state_prefix) || name.starts_with(base + ".tmp.");
    if (!ours || name == keep_state) continue;
    if (const size_t t = name.find(".tmp."); t != std::string::npos) {
      const long pid = std::strtol(name.c_str() + t + 5, nullptr, 10);
      if (pid > 0 && pid != ::getpid() && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)) {
        continue;  // another live writer's file
      }
    }
    fs::remove(e.path(), ec);
  }
}

}  // namespace

absl::Status WriteCheckpoint(const std::string& path, const std::string& model,
                             const std::map<std::string, Tensor>& params,
                             const std::map<std::string, Tensor>& state, OptimizerKind optimizer,
                             int64_t step) {
  const std::string set = NewSetId();
  std::map<std::string, std::string> meta = {
      {"format", "hetsynth-checkpoint"},
      {"model", model},
      {"step", std::to_string(step)},
      {"optimizer", OptimizerName(optimizer)},
      {"set", set},
  };
  std::string state_name;
  if (!state.empty()) {
    const std::string state_path = StrCat(Stem(path), ".optim.", set, ".safetensors");
    state_name = std::filesystem::path(state_path).filename().string();
    HS_RETURN_IF_ERROR(WriteSafetensors(state_path, state, meta));
    meta["optimizer_state"] = state_name;
    meta["optimizer_state_hash"] = TensorsHash(state);
  }
  meta["params_hash"] = TensorsHash(params);
  // The commit: `path` (the manifest) replaces the old set's in one rename.
  HS_RETURN_IF_ERROR(WriteSafetensors(path, params, meta));
  SyncDirectory(path);
  RemoveStale(path, state_name);
  return absl::OkStatus();
}

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path,
                                          const std::map<std::string, ir::Shape>& shapes,
                                          OptimizerKind optimizer) {
  HS_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  const std::string where = StrCat("checkpoint '", path, "'");
  std::vector<std::string> missing;
  for (const auto& [name, shape] : shapes) {
    if (!file.tensors.count(name)) missing.push_back(name);
  }
  if (!missing.empty()) {
    if (missing.size() > 5) missing.resize(5), missing.push_back("...");
    return absl::InvalidArgumentError(StrCat(where, ": missing parameters ", absl::StrJoin(missing, ", "),
                                             "; was it saved from a different model?"));
  }
  for (const auto& [name, shape] : shapes) {
    auto it = file.tensors.find(name);
    if (it->second.shape != shape) {
      return absl::InvalidArgumentError(StrCat(where, ": tensor '", name, "' has shape ",
                                               ir::ShapeString(it->second.shape), "; the model expects ",
                                               ir::ShapeString(shape)));
    }
  }
  for (const auto& [name, t] : file.tensors) {
    if (!shapes.count(name)) {
      return absl::InvalidArgumentError(
          StrCat(where, ": tensor '", name, "' is not a parameter of the model; was it saved from a different model?"));
    }
  }
  for (const auto& [name, t] : file.tensors) {
    for (size_t i = 0; i < t.data.size(); ++i) {
      if (!std::isfinite(t.data[i])) {
        return absl::InvalidArgumentError(StrCat(where, ": tensor '", name, "' element ", i, " is ", t.data[i],
                                                 "; expected finite parameters"));
      }
    }
  }
  Checkpoint ck;
  ck.params = std::move(file.tensors);
  if (auto it = file.metadata.find("step"); it != file.metadata.end()) {
    char* end = nullptr;
    errno = 0;
    ck.step = std::strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end != '\0' || ck.step < 0 || errno == ERANGE) {
      return absl::InvalidArgumentError(StrCat(where, ": metadata step='", it->second,
                                               "'; expected a non-negative integer"));
    }
  }
  const auto set = file.metadata.find("set");
  std::string state_path = OptimizerStatePath(path);  // a checkpoint from before sets
  if (set != file.metadata.end()) {
    auto meta = [&](const char* key) {
      auto it = file.metadata.find(key);
      return it == file.metadata.end() ? std::string() : it->second;
    };
    if (meta("params_hash") != TensorsHash(ck.params)) {
      return absl::InvalidArgumentError(StrCat(where, ": parameters do not match params_hash in its manifest (",
                                               ir::Shorten(meta("params_hash"), 20), "); the file is corrupt"));
    }
    const std::string name = meta("optimizer_state");
    if (name.empty()) return ck;
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
    HS_ASSIGN_OR_RETURN(SafetensorsFile sf, ReadSafetensors(state_path));
    const auto sset = sf.metadata.find("set"), sstep = sf.metadata.find("step");
    if (sset == sf.metadata.end() || sset->second != set->second || sstep == sf.metadata.end() ||
        sstep->second != meta("step") || TensorsHash(sf.tensors) != meta("optimizer_state_hash")) {
      return absl::InvalidArgumentError(StrCat(where, ": optimizer state '", state_path,
                                               "' is not the one its manifest names (set, step or hash differ); "
                                               "the checkpoint set is inconsistent"));
    }
    if (sf.metadata.count("optimizer") && sf.metadata.at("optimizer") == OptimizerName(optimizer)) {
      for (auto& [key, t] : sf.tensors) {
        const size_t dot = key.rfind('.');
        const auto p = shapes.find(key.substr(0, dot == std::string::npos ? 0 : dot));
        if (p == shapes.end() || p->second != t.shape) {
          return absl::InvalidArgumentError(StrCat("optimizer state '", state_path, "': tensor '", key,
                                                   "' does not match a parameter of the model"));
        }
      }
      ck.state = std::move(sf.tensors);
    }
    return ck;
  }
  if (std::filesystem::exists(state_path)) {
    HS_ASSIGN_OR_RETURN(SafetensorsFile sf, ReadSafetensors(state_path));
    auto opt = sf.metadata.find("optimizer");
    if (opt != sf.metadata.end() && opt->second == OptimizerName(optimizer)) {
      for (auto& [key, t] : sf.tensors) {
        const size_t dot = key.rfind('.');
        const auto p = shapes.find(key.substr(0, dot == std::string::npos ? 0 : dot));
        if (p == shapes.end() || p->second != t.shape) {
          return absl::InvalidArgumentError(StrCat("optimizer state '", state_path, "': tensor '", key,
                                                   "' does not match a parameter of the model"));
        }
      }
      ck.state = std::move(sf.tensors);
    }
  }
  return ck;
}

}  // namespace hetsynth::runtime
