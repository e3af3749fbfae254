// Training data: the synthetic generator of each built-in model and batches from a
// safetensors data file. Both give, for a step, one tensor per graph input.
//
//   absl::StatusOr<DataSource> data = DataSource::Synthetic(spec, graph, seed);
//   absl::StatusOr<Batch> batch = data->Get(step);
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

using Batch = std::map<std::string, Tensor>;  // graph input name -> tensor of its shape

// Integer-valued inputs and their exclusive upper bound (labels < classes, ids < vocab),
// found from how the graph uses them (the op table's integer inputs: cross-entropy labels,
// embedding ids).
std::map<std::string, int64_t> IntegerInputBounds(const ir::Graph& graph);

// Checks that a batch has exactly the graph's inputs with the right shapes and integer inputs
// in range; `source` names where it came from in the message.
absl::Status ValidateBatch(const ir::Graph& graph, const Batch& batch, const std::string& source);

class DataSource {
 public:
  // The built-in model's synthetic task (docs/models.md), a function of (seed, step); for a
  // model file (ir::IsModelFile), random inputs with nothing to learn.
  static absl::StatusOr<DataSource> Synthetic(const ir::ModelSpec& spec, const ir::Graph& graph,
                                              uint64_t seed);
  // Rows of a safetensors file: step i uses rows [i·B, (i+1)·B) modulo the row count.
  static absl::StatusOr<DataSource> FromFile(const std::string& path, const ir::Graph& graph);

  absl::StatusOr<Batch> Get(int64_t step) const;
  const std::string& description() const { return description_; }

 private:
  std::string description_;
  ir::ModelSpec spec_;
  std::map<std::string, ir::Shape> inputs_;  // the graph's inputs
  std::map<std::string, int64_t> bounds_;    // model files: integer inputs and their bounds
  uint64_t seed_ = 0;
  std::shared_ptr<const Batch> file_rows_;  // whole data file (file sources)
  int64_t rows_ = 0;
};

}  // namespace hetsynth::runtime
