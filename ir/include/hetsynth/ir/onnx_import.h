// ONNX import: a model exported by torch.onnx.export (opsets 13-17) as an ir::Graph whose
// parameters start from the file's initializers (Init::Data), with a loss appended. Parsed with
// ONNX's own C++ library (Debian's libonnx-dev: protobuf schema and model checker); a build
// without it refuses every file with one line. docs/onnx.md lists the operators and patterns.
//
//   OnnxImportOptions o;
//   o.batch = 8;                                   // binds a symbolic batch dimension
//   absl::StatusOr<OnnxImport> m = ImportOnnx("model.onnx", o);
//   m->graph;                                      // loss = cross_entropy(output, "labels")
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"

namespace onnx {
class TensorProto;
}  // namespace onnx

namespace hetsynth::ir {

struct OnnxImportOptions {
  int64_t batch = 0;                     // binds symbolic batch dims (dim 0 of every input); 0: none
  // "cross_entropy" (input "labels": class ids, the output's shape without its last dim),
  // "mse" (input "labels": targets of the output's shape) or "none"
  std::string loss = "cross_entropy";
  // The hash recorded for the file (by a plan, or by this command's first read of it): bytes
  // that hash otherwise are refused before they are parsed, with ChangedModelFile's line.
  std::optional<uint64_t> expected_hash;
  bool expected_hash_from_plan = true;
};

struct OnnxImport {
  Graph graph;             // with loss "none": no loss set (only for evaluating the forward)
  std::string output;      // the IR value of the ONNX graph's (first) output
  uint64_t file_hash = 0;  // FNV-1a of the file's bytes, 48 bits (exact in a double)
  // With loss "none" only: set when the output folds to a constant (every input an
  // initializer); then `graph` is empty. Row-major values and their shape.
  bool constant = false;
  Shape constant_shape;
  std::vector<double> constant_values;
};

// Whether this build can read ONNX files (libonnx-dev was found).
bool OnnxAvailable();
// The ONNX operator types the importer maps, sorted, comma-separated.
std::string OnnxSupportedOps();
// Errors are one line naming the file and, where one is at fault, the node and its field.
absl::StatusOr<OnnxImport> ImportOnnx(const std::string& path, const OnnxImportOptions& options);
// A tensor's values as the importer reads initializers (every element type it takes, as
// doubles: exact for fp32 and the narrower types) and its dims; only in builds with ONNX.
absl::StatusOr<std::vector<double>> OnnxTensorValues(const onnx::TensorProto& t, Shape* dims);

// The file's 48-bit FNV-1a hash, as ImportOnnx records it; NotFound when unreadable.
absl::StatusOr<uint64_t> ModelFileHash(const std::string& path);

// "model file 'PATH' has changed: it hashes to H but the plan was made for R; synthesize a new
// plan" (a graph file's line says "(with its weights file)"); when the hash was recorded by this
// command's own first read (from_plan false), "... has changed since this command first read it
// (it hashed to R, now H); run the command again".
std::string ChangedModelFile(const std::string& path, uint64_t hash, uint64_t recorded, bool from_plan = true);

// What identifies a file's contents cheaply within one process: device, inode, size, and the
// modification and status-change times (a rewrite that puts the old mtime back still moves
// ctime, which no user can set). Nothing for a path that is not a regular file, or one
// modified or changed in the last 2 s or in the future (the kernel stamps with a coarse clock,
// so its next change could carry the same times). The graph MakeModelSpec imports from an ONNX file is
// handed to the BuildModel after it while the stamp holds (models.cc).
struct FileStamp {
  uint64_t dev = 0, ino = 0;
  int64_t size = 0;
  int64_t mtime_s = 0, mtime_ns = 0, ctime_s = 0, ctime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};
std::optional<FileStamp> StampOf(const std::string& path);
// How many ONNX files this process has parsed (ImportOnnx calls that got as far as parsing):
// for tests that a command reads its model once.
uint64_t OnnxFilesParsed();

}  // namespace hetsynth::ir
