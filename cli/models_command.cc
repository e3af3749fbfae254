// `hetsynth models [NAME]`: the built-in models, their hyperparameters, inputs and parameters.
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "commands.h"
#include "hetsynth/ir/graph_json.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/runtime/safetensors.h"
#include "hetsynth/base/status.h"

namespace hetsynth::cli {

void ModelOptions::AddFlags(CLI::App& cmd) {
  cmd.add_option("--model-arg", args,
                 "hyperparameter override KEY=VALUE (repeatable); see 'hetsynth models NAME'")
      ->type_name("KEY=VALUE");
  cmd.add_option("--batch", batch, "global batch size (default: the model's; see 'hetsynth models')")
      ->check(PositiveInt());
  cmd.add_flag("--small", small, "start from the model's small preset (for tests and demos)");
  AddLossFlag(cmd);
}

void ModelOptions::AddLossFlag(CLI::App& cmd) {
  cmd.add_option("--loss", loss,
                 "loss appended to an ONNX model's output: cross_entropy (labels [B] or [B, T]: class ids; the default) "
                 "or mse (labels: targets of the output's shape)")
      ->check(CLI::IsMember({"cross_entropy", "mse"}));
}

absl::StatusOr<ir::ModelSpec> ModelOptions::Resolve() const {
  std::vector<std::string> all = args;
  if (!loss.empty() && !ir::IsModelFile(name)) {
    return absl::InvalidArgumentError(StrCat("--loss ", loss, ": applies to ONNX model files; built-in model '", name,
                                             "' has its own loss"));
  }
  if (!loss.empty()) all.push_back("loss=" + loss);
  return ir::MakeModelSpec(name, all, batch, small ? ir::Preset::kSmall : ir::Preset::kDefault);
}

namespace {

std::string Number(double v) { return fmt::format("{:g}", v); }

std::string Human(double v) {
  const char* units[] = {"", "K", "M", "G", "T", "P"};
  int u = 0;
  while (v >= 1000 && u < 5) v /= 1000, ++u;
  return fmt::format("{:.3g}{}", v, units[u]);
}

void ListModels() {
  fmt::print("built-in models (hetsynth models NAME for inputs and parameters):\n\n");
  for (const ir::ModelInfo& m : ir::Models()) {
    fmt::print("{}  —  {}\n", m.name, m.summary);
    fmt::print("  {:<16} {:>10} {:>10}  {}\n", "hyperparameter", "default", "--small", "meaning");
    for (const ir::HyperParam& p : m.params) {
      fmt::print("  {:<16} {:>10} {:>10}  {}\n", p.name, Number(p.default_value),
                 Number(p.small_value), p.help);
    }
    fmt::print("  {:<16} {:>10} {:>10}  {}\n\n", "(batch)", m.default_batch, m.small_batch,
               "global batch size (--batch)");
  }
}

absl::Status ShowModel(const ModelOptions& opts, const std::string& graph_out) {
  HS_RETURN_IF_ERROR(CheckOutputPath("--graph-out", graph_out));
  HS_RETURN_IF_ERROR(RefuseSameFiles({{"--graph-out", graph_out}}, ModelFileInput(opts.name)));
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, opts.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph g, ir::BuildModel(spec));
  fmt::print("{}\n\ninputs:\n", spec.ToString());
  for (ir::ValueId v : g.inputs()) {
    fmt::print("  {:<28} {}\n", g.value(v).name, ir::ShapeString(g.value(v).shape));
  }
  fmt::print("\nparameters:\n");
  for (ir::ValueId v : g.parameters()) {
    fmt::print("  {:<28} {}{}\n", g.value(v).name, ir::ShapeString(g.value(v).shape),
               g.value(v).frozen ? "  (frozen: a constant, never updated)" : "");
  }
  if (!g.running_stats().empty()) {
    fmt::print("\nrunning statistics (batch norm; moved each training step, saved with the parameters):\n");
    for (const ir::RunningStat& r : g.running_stats()) {
      fmt::print("  {:<28} {}  {} of {}, momentum {:g}\n", r.name, ir::ShapeString(r.shape), r.variance ? "variance" : "mean",
                 g.value(r.moments).name, r.momentum);
    }
  }
  const ir::Flops f = g.TotalFlops();
  fmt::print("\n{} parameter tensors, {} parameters ({}B fp32); {} ops; {}FLOP forward, {}FLOP "
             "backward per step\n",
             g.parameters().size(), Human(static_cast<double>(g.NumParameterElements())),
             Human(4.0 * static_cast<double>(g.NumParameterElements())), g.nodes().size(),
             Human(f.forward), Human(f.backward));
  if (!graph_out.empty()) {
    HS_RETURN_IF_ERROR(WriteFileAtomically(graph_out, ir::GraphToJson(g)));
    fmt::print("graph written to {}\n", graph_out);
  }
  return absl::OkStatus();
}

}  // namespace

Runner RegisterModels(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "models", "List the built-in models, or show one model's inputs, parameters and FLOPs");
  auto opts = std::make_shared<ModelOptions>();
  auto graph_out = std::make_shared<std::string>();
  cmd->add_option("name,--model", opts->name,
                  "model to show (" + ir::ModelNames() + "), as NAME or --model NAME (one of them)");
  opts->AddFlags(*cmd);
  cmd->add_option("--graph-out", *graph_out, "also write the model's graph JSON to FILE")
      ->type_name("FILE");
  return [opts, graph_out]() -> absl::Status {
    if (opts->name.empty()) {
      if (!opts->args.empty() || !graph_out->empty() || opts->small || opts->batch > 0 || !opts->loss.empty()) {
        return absl::InvalidArgumentError("--model-arg, --small, --batch, --loss and --graph-out need a model NAME; "
                                          "known models: " + ir::ModelNames());
      }
      ListModels();
      return absl::OkStatus();
    }
    return ShowModel(*opts, *graph_out);
  };
}

namespace {

// `hetsynth import`: the graph as a graph file whose imported parameters take their values from
// a safetensors file written beside it (names kept), for users who want to read or edit it.
absl::Status Import(const ModelOptions& opts, std::string out, std::string weights) {
  if (!ir::IsOnnxFile(opts.name)) {
    return absl::InvalidArgumentError(StrCat("import: '", opts.name, "' is not an .onnx file"));
  }
  if (weights.empty()) {
    weights = out.size() > 5 && out.compare(out.size() - 5, 5, ".json") == 0 ? out.substr(0, out.size() - 5) : out;
    weights += ".safetensors";
  }
  HS_RETURN_IF_ERROR(CheckOutputPath("-o", out));
  HS_RETURN_IF_ERROR(CheckOutputPath("--weights", weights));
  HS_RETURN_IF_ERROR(RefuseSameFiles({{"-o", out}, {"--weights", weights}}, {{"--model", opts.name}}));
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, opts.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph g, ir::BuildModel(spec));
  // The weights file, relative to the graph file when both are in one directory.
  const std::filesystem::path wp(weights), op(out);
  std::map<std::string, runtime::Tensor> tensors;
  for (auto& [name, values] : g.StoreWeightsIn(wp.parent_path() == op.parent_path() ? wp.filename().string()
                                                                                  : std::filesystem::absolute(wp).string())) {
    // A parameter, or a running statistic ([C], not a value of the graph).
    const ir::ValueId v = g.Find(name);
    runtime::Tensor t(v != ir::kNoValue ? g.value(v).shape : ir::Shape{static_cast<int64_t>(values->size())});
    std::copy(values->begin(), values->end(), t.data.begin());
    tensors.emplace(name, std::move(t));
  }
  HS_RETURN_IF_ERROR(runtime::WriteSafetensors(weights, tensors));
  HS_RETURN_IF_ERROR(WriteFileAtomically(out, ir::GraphToJson(g)));
  fmt::print("wrote {} ({} ops, {} parameters) and {} ({} tensors); train it with --model {}\n", out, g.nodes().size(),
             g.parameters().size(), weights, tensors.size(), out);
  return absl::OkStatus();
}

}  // namespace

Runner RegisterImport(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "import", "Write an ONNX model as a graph file (JSON, docs/graph-format.md) and its weights (safetensors)");
  auto opts = std::make_shared<ModelOptions>();
  auto out = std::make_shared<std::string>();
  auto weights = std::make_shared<std::string>();
  cmd->add_option("model,--model", opts->name, "the .onnx file")->required();
  cmd->add_option("--batch", opts->batch, "binds a symbolic batch dimension (required when the file's batch is symbolic, as torch.onnx.export with dynamic_axes writes it)")->check(PositiveInt());
  opts->AddLossFlag(*cmd);
  cmd->add_option("-o,--output", *out, "graph file to write")->required()->type_name("FILE");
  cmd->add_option("--weights", *weights, "safetensors file for the weights (default: the graph file's name with .safetensors)")
      ->type_name("FILE");
  return [opts, out, weights]() { return Import(*opts, *out, *weights); };
}

}  // namespace hetsynth::cli
