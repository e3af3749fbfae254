// The model IR: a dataflow graph of operators over statically shaped fp32 tensors.
//
// A graph has named inputs (data fed each step), named parameters (trained), activations (op
// outputs) and one scalar loss. Nodes are kept in creation order, which is a topological order
// because an op can only consume values that exist already. Shapes are inferred when an op is
// added; a bad op is rejected with a message naming the node, the inputs and what was expected.
//
//   Builder b("tiny");
//   ValueId x = b.Input("x", {4, 8});
//   ValueId w = b.Parameter("fc.weight", {3, 8}, Init::Normal(0.02));
//   ValueId logits = b.Linear("fc", x, w);
//   ValueId y = b.Input("labels", {4});
//   b.SetLoss(b.CrossEntropy("loss", logits, y));
//   absl::StatusOr<Graph> g = std::move(b).Finish();
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/ir/op.h"

namespace hetsynth::ir {

using Shape = std::vector<int64_t>;
using ValueId = int32_t;  // index into Graph::values()
using NodeId = int32_t;   // index into Graph::nodes()
inline constexpr ValueId kNoValue = -1;

int64_t NumElements(const Shape& shape);
std::string ShapeString(const Shape& shape);  // "[2,3,4]"

enum class ValueKind : uint8_t { kInput, kParameter, kActivation };

// How a parameter is initialized (see docs/models.md for the random streams).
// kData: given values (an imported model's weights, row-major, NumElements(shape) of them);
// graph files do not store them (docs/graph-format.md).
struct Init {
  enum class Kind : uint8_t { kZeros, kOnes, kNormal, kUniform, kData } kind = Kind::kZeros;
  double scale = 0.0;  // normal: standard deviation; uniform: bound a of U(-a, a)
  std::shared_ptr<const std::vector<float>> data;  // kData only

  static Init Zeros() { return {Kind::kZeros, 0.0, nullptr}; }
  static Init Ones() { return {Kind::kOnes, 0.0, nullptr}; }
  static Init Normal(double std) { return {Kind::kNormal, std, nullptr}; }
  static Init Uniform(double bound) { return {Kind::kUniform, bound, nullptr}; }
  // Given values kept outside the graph, in its weights file (Graph::weights_file): kData
  // without data; a trainer that is not given the file starts them at zero.
  static Init Stored() { return {Kind::kData, 0.0, nullptr}; }
  static Init Data(std::vector<float> values) {
    return {Kind::kData, 0.0, std::make_shared<const std::vector<float>>(std::move(values))};
  }
  bool operator==(const Init&) const = default;
};

struct Value {
  std::string name;            // unique in the graph
  ValueKind kind = ValueKind::kActivation;
  Shape shape;
  NodeId producer = -1;        // the node that computes it; -1 for inputs and parameters
  Init init;                   // parameters only
  // Parameters only: a constant the optimizer never updates (an imported model's computed
  // constants and eval-mode batch-norm statistics). Its gradient is computed like any other
  // parameter's and dropped before the update; checkpoints hold it like a parameter.
  bool frozen = false;
};

struct Node {
  std::string name;            // unique in the graph (the output value has the same name)
  OpKind kind = OpKind::kAdd;
  std::vector<ValueId> inputs;
  ValueId output = kNoValue;
  Attrs attrs;
};

// Forward and backward floating-point operations of one node (multiply-add = 2).
struct Flops {
  double forward = 0;
  double backward = 0;
};

// A batch-norm running statistic (an imported training-mode BatchNormalization's running mean
// or variance): state beside the computation, not a parameter (no gradient, never read by a
// node). After each training step's forward it moves toward the batch's statistic from the
// moments value, as PyTorch updates it:
//   new = (1 − momentum)·old + momentum·batch,
// the batch variance unbiased (E[x²] − E[x]² times n/(n − 1), n the elements per channel).
// Saved, checkpointed and loaded with the parameters, under its name.
struct RunningStat {
  std::string name;
  Shape shape;                 // [C]
  ValueId moments = kNoValue;  // a batch_moments output [2, C]
  bool variance = false;       // false: the mean
  double momentum = 0.1;       // PyTorch's momentum (ONNX's is 1 − it)
  Init init;                   // kData, Stored (the weights file), or kZeros / kOnes
  bool operator==(const RunningStat&) const = default;
};

class Graph {
 public:
  explicit Graph(std::string name = "graph") : name_(std::move(name)) {}

  const std::string& name() const { return name_; }
  // The safetensors file that holds the values of the parameters with Init::Stored (a graph
  // file written by `hetsynth import`); empty when none. Trainers start from it (cli).
  const std::string& weights_file() const { return weights_file_; }
  void set_weights_file(std::string path) { weights_file_ = std::move(path); }
  // Moves the given values of every Init::Data parameter and running statistic out of the
  // graph (they become Init::Stored, to live in `path`, the new weights file) and returns them
  // by name.
  std::map<std::string, std::shared_ptr<const std::vector<float>>> StoreWeightsIn(std::string path);
  const std::vector<Value>& values() const { return values_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const Value& value(ValueId id) const { return values_.at(static_cast<size_t>(id)); }
  const Node& node(NodeId id) const { return nodes_.at(static_cast<size_t>(id)); }
  ValueId loss() const { return loss_; }

  // Inputs and parameters in creation order.
  std::vector<ValueId> inputs() const;
  std::vector<ValueId> parameters() const;
  // kNoValue when no value has that name.
  ValueId Find(const std::string& name) const;

  absl::StatusOr<ValueId> AddInput(const std::string& name, const Shape& shape);
  absl::StatusOr<ValueId> AddParameter(const std::string& name, const Shape& shape, Init init);
  // Marks a parameter frozen or not (Value::frozen); graph files say so per parameter.
  void SetFrozen(ValueId id, bool frozen);
  // A frozen parameter (Value::frozen): a constant with these values.
  absl::StatusOr<ValueId> AddConstant(const std::string& name, const Shape& shape, std::vector<float> values);
  // A running statistic of batch_moments output `stat.moments`; its name is unique among the
  // values and the other statistics, its shape the moments' channel count.
  absl::Status AddRunningStat(RunningStat stat);
  const std::vector<RunningStat>& running_stats() const { return running_stats_; }
  // Infers the output shape; the error names the node and the offending inputs.
  absl::StatusOr<ValueId> AddOp(const std::string& name, OpKind kind,
                                const std::vector<ValueId>& inputs, const Attrs& attrs = {});
  // The loss must be a scalar (shape []).
  absl::Status SetLoss(ValueId loss);
  // Re-checks every invariant (used after reading a graph file).
  absl::Status Validate() const;

  Flops NodeFlops(NodeId id) const;
  Flops TotalFlops() const;
  // Elements a node's kernels keep from forward to backward besides its inputs and output:
  // attention's probabilities (B·heads·T·T), max pooling's argmax (one per output element).
  // Per-row statistics (norms, losses, batch moments, the MoE gate) are small and not counted.
  double NodeSavedElements(NodeId id) const;
  int64_t NumParameterElements() const;

 private:
  absl::Status CheckNewName(const std::string& name) const;

  std::string name_;
  std::string weights_file_;
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<RunningStat> running_stats_;
  std::map<std::string, ValueId> by_name_;
  ValueId loss_ = kNoValue;
};

// Output shape of an op applied to inputs of the given shapes; the error says which input and
// what was expected (without the node name, which the caller adds).
absl::StatusOr<Shape> InferShape(OpKind kind, const std::vector<Shape>& inputs,
                                 const Attrs& attrs);

// Convenience layer over Graph for writing models: each call adds one node and returns its
// output; the first error is kept and every later call becomes a no-op returning kNoValue.
class Builder {
 public:
  explicit Builder(std::string graph_name) : graph_(std::move(graph_name)) {}

  ValueId Input(const std::string& name, const Shape& shape);
  ValueId Parameter(const std::string& name, const Shape& shape, Init init);
  ValueId Op(const std::string& name, OpKind kind, const std::vector<ValueId>& inputs,
             const Attrs& attrs = {});
  void SetLoss(ValueId loss);

  ValueId Linear(const std::string& name, ValueId x, ValueId w, ValueId b = kNoValue);
  ValueId Add(const std::string& name, ValueId a, ValueId b) { return Op(name, OpKind::kAdd, {a, b}); }
  ValueId Relu(const std::string& name, ValueId x) { return Op(name, OpKind::kRelu, {x}); }
  ValueId Gelu(const std::string& name, ValueId x) { return Op(name, OpKind::kGelu, {x}); }
  ValueId Reshape(const std::string& name, ValueId x, const Shape& shape);

  const Graph& graph() const { return graph_; }
  const Shape& shape(ValueId v) const { return graph_.value(v).shape; }
  bool ok() const { return status_.ok(); }
  absl::StatusOr<Graph> Finish() &&;

 private:
  ValueId Keep(absl::StatusOr<ValueId> v);

  Graph graph_;
  absl::Status status_;
};

}  // namespace hetsynth::ir
