// Subcommands of the hetsynth binary. Each Register* adds its subcommand to the app and
// returns the function that runs it after parsing; runners return a status whose failure
// main prints as one line before exiting with status 2.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/synth/synthesize.h"

namespace hetsynth::cli {

// The flags that pick a built-in model, shared by every subcommand that needs one.
struct ModelOptions {
  std::string name;                      // --model (or a positional NAME)
  std::vector<std::string> args;         // --model-arg KEY=VALUE, repeatable
  int64_t batch = 0;                     // --batch; 0 means the model's default
  bool small = false;                    // --small: start from the small preset
  std::string loss;                      // --loss (model files): cross_entropy or mse

  // Adds --model-arg, --batch, --small and --loss (the caller adds the model name).
  void AddFlags(CLI::App& cmd);
  void AddLossFlag(CLI::App& cmd);  // --loss alone (part of AddFlags)
  absl::StatusOr<ir::ModelSpec> Resolve() const;
};

using Runner = std::function<absl::Status()>;

// An output file's directory exists and is writable: checked before the work that produces it,
// so a typo in a directory name does not cost a long run. `flag` names the flag in the message.
// A file written by replacing its path (atomically: a new file renamed over it) must not be a
// symbolic link, a device or a FIFO that exists there (as root, `--save /dev/null` would replace
// the system's node); a stream (kStream: --metrics, --trace, written in place) may be one.
enum class OutputWrite { kReplace, kStream };
absl::Status CheckOutputPath(const std::string& flag, const std::string& path, OutputWrite how = OutputWrite::kReplace);
// No output names the file of an input or of another output (a run that would overwrite its
// own --load or --data, or write two outputs into one file): each a (flag, path) pair, empty
// paths skipped.
using FlagPaths = std::vector<std::pair<std::string, std::string>>;
absl::Status RefuseSameFiles(const FlagPaths& outputs, const FlagPaths& inputs);
// (--model, NAME) when NAME is a model file (ONNX or graph), for RefuseSameFiles; else nothing.
FlagPaths ModelFileInput(const std::string& name);

// A progress line on stderr. On a terminal every line overwrites the last ("\r"), and the line
// is ended by the `last` one or by EndProgressLine (main calls it before an error, so the error
// starts a line of its own); elsewhere a line is printed only when `plain` (a log gets a few
// lines, not one per step).
void PrintProgress(const std::string& line, bool last, bool plain);
void EndProgressLine();

// Flag validators with short messages ("expected an integer >= 0"), for integer flags.
CLI::Validator NonNegativeInt();
CLI::Validator PositiveInt();
// A seed: a decimal integer in [0, 2^64) (a larger one is refused, not clamped).
CLI::Validator SeedValue();
// A time dilation factor K: a finite number in [1, 1e6].
CLI::Validator DilationFactor();

// Writes `text` to a temporary PATH.XXXXXX.tmp of its own with `mode` (less the umask), checks the close, then
// renames it over `path`: readers see the old file or the new one, never a part; on failure the
// temporary is removed.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text, mode_t mode = 0644);
// Draws DIR/STEM.{png,svg} with gnuplot: writes DIR/STEM.gp (the two terminals, each followed by
// `plot`, after `setup`) and runs it, its errors in DIR/gnuplot.log. False when gnuplot is not
// installed.
absl::StatusOr<bool> RunGnuplot(const std::string& dir, const std::string& stem, const std::string& setup,
                                const std::string& plot);
// The header a plan (instr::Plan) and a placement (instr::InferencePlacement) share: the model
// they were made for, and the cluster's name, fingerprint, devices and FLOP/s.
template <class File>
void FillRunHeader(const ir::ModelSpec& spec, const costmodel::Cluster& c, File* f) {
  f->model = spec.name;
  f->model_args = spec.args;
  f->batch = spec.batch;
  f->cluster = c.name;
  f->cluster_fingerprint = c.Fingerprint();
  for (const costmodel::Device& d : c.devices) {
    f->devices.push_back(d.name);
    f->device_flops.push_back(d.flops);
  }
}
// The whole of a text file; NotFound names `what` and the path.
absl::StatusOr<std::string> ReadText(const std::string& path, const char* what);
// The model a plan or placement file was made for, rebuilt from its header's model, model_args
// and batch; InvalidArgument "WHAT 'PATH': model: ..." when that fails.
struct FileModel {
  ir::ModelSpec spec;
  ir::Graph graph;
};
absl::StatusOr<FileModel> RebuildFileModel(const char* what, const std::string& path, const std::string& model,
                                           const std::map<std::string, double>& model_args, int64_t batch);
// A plan file and the model it was made for, rebuilt from its header.
struct LoadedPlan {
  instr::Plan plan;
  ir::ModelSpec spec;
  ir::Graph graph;
};
absl::StatusOr<LoadedPlan> LoadPlan(const std::string& path);
// OK when cluster `c`, read from `cluster_label` ("'c.json'", "--cluster 'c.json'"), is the one
// that `plan` was made for (its fingerprint and device count); otherwise InvalidArgument "WHERE
// was made for cluster ..." naming both.
absl::Status CheckPlanCluster(const instr::Plan& plan, const std::string& where, const costmodel::Cluster& c,
                              const std::string& cluster_label);
// The synthesized strategy, restricted by --flat (no hierarchical collectives) and --no-overlap
// (no communication stream, no buckets), searching mesh levels (the dp-nodes mode) only with
// --mesh-levels, since the runtime cannot run such plans yet: what `synth` and `bench` plan with.
synth::Strategy SynthesizedStrategy(bool flat, bool no_overlap, bool mesh_levels, bool segments);
// What a plan file records of a synthesis result.
instr::Plan MakePlan(const ir::ModelSpec& spec, const costmodel::Cluster& c, const synth::SynthResult& r);

Runner RegisterModels(CLI::App& app);
Runner RegisterImport(CLI::App& app);   // models_command.cc: ONNX -> graph file + weights
Runner RegisterBench(CLI::App& app);
Runner RegisterTrain(CLI::App& app);
Runner RegisterSynth(CLI::App& app);
Runner RegisterExplain(CLI::App& app);
Runner RegisterCheck(CLI::App& app);
Runner RegisterProfile(CLI::App& app);
Runner RegisterCluster(CLI::App& app);
Runner RegisterPlace(CLI::App& app);    // place_command.cc: inference placement
Runner RegisterInfer(CLI::App& app);
Runner RegisterElastic(CLI::App& app);  // elastic.cc: join/leave requests to an elastic run    // place_command.cc: run a placement on thread ranks  // cluster_command.cc: emulated multi-node cluster

}  // namespace hetsynth::cli
