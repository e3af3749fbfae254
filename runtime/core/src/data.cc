#include "hetsynth/runtime/data.h"

#include <cmath>

#include "absl/strings/str_join.h"
#include "hetsynth/ir/op_table.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/random.h"
#include "hetsynth/runtime/safetensors.h"

namespace hetsynth::runtime {
namespace {

absl::Status Bad(const std::string& msg) { return absl::InvalidArgumentError(msg); }

std::map<std::string, ir::Shape> InputShapes(const ir::Graph& graph) {
  std::map<std::string, ir::Shape> out;
  for (ir::ValueId v : graph.inputs()) out[graph.value(v).name] = graph.value(v).shape;
  return out;
}

// Classification task: a sample is its class's template plus unit Gaussian noise. Feature
// vectors ([B, D]) get one random template value per feature; images ([B, C, H, W]) one per
// channel, constant over the pixels, so that convolutions with global pooling can see it.
void ClassificationBatch(uint64_t seed, int64_t step, int64_t classes, Tensor& x, Tensor& labels) {
  const int64_t batch = x.dim(0), d = x.numel() / batch;
  const int64_t features = x.rank() == 4 ? x.dim(1) : d;  // template values per class
  const int64_t repeat = d / features;                     // pixels sharing one value
  std::vector<float> templates(static_cast<size_t>(classes * features));
  Rng trng(seed, Fnv1a("data.templates"));
  for (float& t : templates) t = trng.Normal();
  Rng rng(seed, Mix(static_cast<uint64_t>(step)) ^ Fnv1a("data.batch"));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t label = rng.Below(classes);
    labels.data[b] = static_cast<float>(label);
    for (int64_t i = 0; i < d; ++i) {
      x.data[b * d + i] = templates[label * features + i / repeat] + rng.Normal();
    }
  }
}

// Language task: every row counts up from a random start by a random stride in {1, 2, 3}
// modulo the vocabulary; the target is the next token.
void SequenceBatch(uint64_t seed, int64_t step, int64_t vocab, Tensor& tokens, Tensor& targets) {
  const int64_t batch = tokens.dim(0), t = tokens.dim(1);
  Rng rng(seed, Mix(static_cast<uint64_t>(step)) ^ Fnv1a("data.batch"));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t start = rng.Below(vocab), stride = 1 + rng.Below(3);
    for (int64_t i = 0; i < t; ++i) {
      tokens.data[b * t + i] = static_cast<float>((start + stride * i) % vocab);
      targets.data[b * t + i] = static_cast<float>((start + stride * (i + 1)) % vocab);
    }
  }
}

}  // namespace

std::map<std::string, int64_t> IntegerInputBounds(const ir::Graph& graph) {
  std::map<std::string, int64_t> bounds;
  for (const ir::Node& n : graph.nodes()) {
    // Labels and ids: which input and which dim bounds them come from the op table.
    const ir::IntegerInput& ii = ir::DefOf(n.kind).integer_input;
    if (ii.input == ir::kNoOperand) continue;
    const ir::ValueId v = n.inputs[static_cast<size_t>(ii.input)];
    const ir::Shape& of = graph.value(n.inputs[static_cast<size_t>(ii.bound_input)]).shape;
    const size_t dim = ii.bound_dim < 0 ? of.size() - static_cast<size_t>(-ii.bound_dim) : static_cast<size_t>(ii.bound_dim);
    if (graph.value(v).kind == ir::ValueKind::kInput) bounds[graph.value(v).name] = of.at(dim);
  }
  return bounds;
}

absl::Status ValidateBatch(const ir::Graph& graph, const Batch& batch, const std::string& source) {
  const auto shapes = InputShapes(graph);
  for (const auto& [name, shape] : shapes) {
    auto it = batch.find(name);
    if (it == batch.end()) return Bad(StrCat(source, ": missing input '", name, "'"));
    if (it->second.shape != shape) {
      return Bad(StrCat(source, ": input '", name, "' has shape ", ir::ShapeString(it->second.shape),
                        "; expected ", ir::ShapeString(shape)));
    }
  }
  for (const auto& [name, t] : batch) {
    if (!shapes.count(name)) return Bad(StrCat(source, ": unexpected input '", name, "'"));
  }
  for (const auto& [name, bound] : IntegerInputBounds(graph)) {
    for (float v : batch.at(name).data) {
      if (!(v >= 0 && v < static_cast<float>(bound) && v == std::floor(v))) {
        return Bad(StrCat(source, ": input '", name, "' holds ", v, "; expected integers in [0, ",
                          bound, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DataSource> DataSource::Synthetic(const ir::ModelSpec& spec, const ir::Graph& graph,
                                                 uint64_t seed) {
  DataSource d;
  d.spec_ = spec;
  d.inputs_ = InputShapes(graph);
  d.seed_ = seed;
  d.description_ = StrCat("synthetic ", spec.name, " data (seed ", seed, ")");
  if (ir::IsModelFile(spec.name)) {
    // A model file's inputs have no task: unit normal values, integer inputs uniform in range.
    d.bounds_ = IntegerInputBounds(graph);
    d.description_ = StrCat("synthetic random inputs for ", spec.name, " (seed ", seed,
                            "; normal values, uniform labels and ids: nothing to learn; use --data FILE)");
    return d;
  }
  if (!ir::FindModel(spec.name)) {
    return Bad(StrCat("no synthetic data for model '", spec.name, "'; use --data FILE"));
  }
  return d;
}

absl::StatusOr<DataSource> DataSource::FromFile(const std::string& path, const ir::Graph& graph) {
  HS_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  DataSource d;
  d.inputs_ = InputShapes(graph);
  const std::string where = StrCat("data '", path, "'");
  std::vector<std::string> names;
  for (const auto& [name, shape] : d.inputs_) names.push_back(name);
  int64_t rows = -1;
  const int64_t batch = d.inputs_.begin()->second.at(0);
  for (const auto& [name, shape] : d.inputs_) {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end()) {
      return Bad(StrCat(where, ": no tensor '", name, "'; the model's inputs are ",
                        absl::StrJoin(names, ", ")));
    }
    const ir::Shape& got = it->second.shape;
    const bool same_tail = got.size() == shape.size() && !got.empty() &&
                           std::equal(got.begin() + 1, got.end(), shape.begin() + 1);
    if (!same_tail || got[0] % batch != 0) {
      std::string want = "[N";
      for (size_t i = 1; i < shape.size(); ++i) want += StrCat(",", shape[i]);
      return Bad(StrCat(where, ": tensor '", name, "' has shape ", ir::ShapeString(got),
                        "; expected ", want, "] with N a multiple of the batch ", batch));
    }
    if (rows >= 0 && got[0] != rows) {
      return Bad(StrCat(where, ": tensor '", name, "' has ", got[0], " rows but another input has ",
                        rows, "; expected the same row count for every input"));
    }
    rows = got[0];
  }
  if (rows == 0) {
    return Bad(StrCat(where, ": the inputs have 0 rows; expected at least one batch of ", batch));
  }
  for (const auto& [name, t] : file.tensors) {
    if (!d.inputs_.count(name)) {
      return Bad(StrCat(where, ": unexpected tensor '", name, "'; the model's inputs are ",
                        absl::StrJoin(names, ", ")));
    }
  }
  for (const auto& [name, t] : file.tensors) {
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (!std::isfinite(t.data[i])) {
        return Bad(StrCat(where, ": tensor '", name, "' element ", i, " is ", t.data[i], "; expected finite numbers"));
      }
    }
  }
  for (const auto& [name, bound] : IntegerInputBounds(graph)) {
    const Tensor& t = file.tensors.at(name);
    for (int64_t i = 0; i < t.numel(); ++i) {
      const float v = t.data[i];
      if (!(v >= 0 && v < static_cast<float>(bound) && v == std::floor(v))) {
        return Bad(StrCat(where, ": tensor '", name, "' element ", i, " is ", v,
                          "; expected integers in [0, ", bound, ")"));
      }
    }
  }
  d.rows_ = rows;
  d.file_rows_ = std::make_shared<const Batch>(std::move(file.tensors));
  d.description_ = StrCat(where, " (", rows, " rows, ", rows / batch, " batches)");
  return d;
}

absl::StatusOr<Batch> DataSource::Get(int64_t step) const {
  Batch batch;
  for (const auto& [name, shape] : inputs_) batch.emplace(name, Tensor(shape));
  if (file_rows_) {
    const int64_t bsz = inputs_.begin()->second.at(0);
    const int64_t first = (step % (rows_ / bsz)) * bsz;
    for (auto& [name, t] : batch) {
      const Tensor& all = file_rows_->at(name);
      const int64_t row = t.numel() / bsz;
      std::copy(all.data.begin() + first * row, all.data.begin() + (first + bsz) * row, t.data.begin());
    }
    return batch;
  }
  const std::string& m = spec_.name;
  if (ir::IsModelFile(m)) {
    for (auto& [name, t] : batch) {
      Rng rng(seed_, Mix(static_cast<uint64_t>(step)) ^ Fnv1a(name));
      auto bound = bounds_.find(name);
      for (float& v : t.data) {
        v = bound == bounds_.end() ? rng.Normal() : static_cast<float>(rng.Below(bound->second));
      }
    }
    return batch;
  }
  if (m == "gpt" || m == "moe") {
    SequenceBatch(seed_, step, spec_.Int("vocab"), batch.at("tokens"), batch.at("targets"));
  } else if (m == "mlp") {
    ClassificationBatch(seed_, step, spec_.Int("classes"), batch.at("x"), batch.at("labels"));
  } else {
    ClassificationBatch(seed_, step, spec_.Int("classes"), batch.at("images"), batch.at("labels"));
  }
  return batch;
}

}  // namespace hetsynth::runtime
