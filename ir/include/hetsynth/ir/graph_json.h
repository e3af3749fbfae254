// Graph files: the model IR as JSON (docs/graph-format.md).
//
//   std::string text = GraphToJson(graph);
//   absl::StatusOr<Graph> back = GraphFromJson(text, "model.json");
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::ir {

// Deterministic: the same graph gives the same bytes.
std::string GraphToJson(const Graph& graph);
// `source` names the file in error messages.
absl::StatusOr<Graph> GraphFromJson(const std::string& text, const std::string& source);
absl::StatusOr<Graph> ReadGraphFile(const std::string& path);
// A graph file's `weights` field as a path: relative to the graph file's directory unless absolute.
std::string GraphWeightsPath(const std::string& graph_path, const std::string& weights);

}  // namespace hetsynth::ir
