// The built-in model zoo: mlp, gpt, vit, vgg19, moe, each a function of named
// hyperparameters with defaults at the reference sizes and a "small" preset for tests and
// demos. docs/models.md gives each model's exact definition.
//
//   absl::StatusOr<ModelSpec> spec = MakeModelSpec("gpt", {"layers=2", "hidden=64"}, 8);
//   absl::StatusOr<Graph> graph = BuildModel(*spec);
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::ir {

struct HyperParam {
  std::string name;        // e.g. "hidden"
  double default_value;    // reference size
  double small_value;      // the "small" preset
  bool integer;            // false only for fractional knobs (width, capacity_factor)
  std::string help;
};

struct ModelInfo {
  std::string name;
  std::string summary;
  std::vector<HyperParam> params;
  int64_t default_batch;
  int64_t small_batch;
};

// Every built-in model, in a fixed order.
const std::vector<ModelInfo>& Models();
// nullptr when unknown.
const ModelInfo* FindModel(const std::string& name);
// "mlp, gpt, vit, vgg19, moe"
std::string ModelNames();
// Whether `name` names a model file rather than a built-in model: a path ending in .onnx (ONNX,
// onnx_import.h) or .json (a graph file, graph_json.h). Everywhere a model is named, a file
// works too: its spec's args hold only "file_hash" (the file's 48-bit FNV-1a, which a plan
// records so that rebuilding from a changed file is refused), and batch 0 means the file's own.
bool IsModelFile(const std::string& name);
// Whether `name` is an ONNX model file (.onnx).
bool IsOnnxFile(const std::string& name);

enum class Preset : uint8_t { kDefault, kSmall };

// A model with every hyperparameter resolved.
struct ModelSpec {
  std::string name;
  std::map<std::string, double> args;  // every hyperparameter of the model
  int64_t batch = 0;
  // A model file's: whether args' "file_hash" was given (by a plan) rather than recorded from
  // this spec's own read of the file; only the wording of a changed file's refusal depends on it.
  bool file_hash_given = false;

  int64_t Int(const std::string& key) const { return static_cast<int64_t>(args.at(key)); }
  double Real(const std::string& key) const { return args.at(key); }
  // "gpt(layers=2, hidden=32, ...; batch 4)"
  std::string ToString() const;
};

// Resolves the hyperparameters of `name` from the preset, overridden by "KEY=VALUE" strings.
// batch <= 0 means the preset's batch. Errors name the model, the key and the value.
absl::StatusOr<ModelSpec> MakeModelSpec(const std::string& name,
                                        const std::vector<std::string>& overrides,
                                        int64_t batch, Preset preset = Preset::kDefault);

absl::StatusOr<Graph> BuildModel(const ModelSpec& spec);

}  // namespace hetsynth::ir
