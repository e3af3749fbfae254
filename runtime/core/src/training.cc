// Parameter initialization and checkpoints of full tensors (training.h).
#include "hetsynth/runtime/training.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_join.h"
#include "hetsynth/ir/status.h"
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
      HS_CHECK(param.init.data && param.init.data->size() == t.data.size(), "Init::Data of the wrong size");
      std::copy(param.init.data->begin(), param.init.data->end(), t.data.begin());
      break;
  }
  return t;
}


std::string OptimizerStatePath(const std::string& checkpoint) {
  const std::string ext = ".safetensors";
  if (checkpoint.size() > ext.size() &&
      checkpoint.compare(checkpoint.size() - ext.size(), ext.size(), ext) == 0) {
    return checkpoint.substr(0, checkpoint.size() - ext.size()) + ".optim" + ext;
  }
  return checkpoint + ".optim.safetensors";
}

absl::Status WriteCheckpoint(const std::string& path, const std::string& model,
                             const std::map<std::string, Tensor>& params,
                             const std::map<std::string, Tensor>& state, OptimizerKind optimizer,
                             int64_t step) {
  const std::map<std::string, std::string> meta = {
      {"format", "hetsynth-checkpoint"},
      {"model", model},
      {"step", std::to_string(step)},
      {"optimizer", OptimizerName(optimizer)},
  };
  HS_RETURN_IF_ERROR(WriteSafetensors(path, params, meta));
  const std::string state_path = OptimizerStatePath(path);
  if (state.empty()) {
    std::error_code ec;
    std::filesystem::remove(state_path, ec);  // a stale state file would be picked up by Load
    return absl::OkStatus();
  }
  return WriteSafetensors(state_path, state, meta);
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
  Checkpoint ck;
  ck.params = std::move(file.tensors);
  if (auto it = file.metadata.find("step"); it != file.metadata.end()) {
    char* end = nullptr;
    ck.step = std::strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end != '\0' || ck.step < 0) {
      return absl::InvalidArgumentError(StrCat(where, ": metadata step='", it->second,
                                               "'; expected a non-negative integer"));
    }
  }
  const std::string state_path = OptimizerStatePath(path);
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
