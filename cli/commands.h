// Subcommands of the hetsynth binary. Each Register* adds its subcommand to the app and
// returns the function that runs it after parsing; runners return a status whose failure
// main prints as one line before exiting with status 2.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "hetsynth/ir/models.h"

namespace hetsynth::cli {

// The flags that pick a built-in model, shared by every subcommand that needs one.
struct ModelOptions {
  std::string name;                      // --model (or a positional NAME)
  std::vector<std::string> args;         // --model-arg KEY=VALUE, repeatable
  int64_t batch = 0;                     // --batch; 0 means the model's default
  bool small = false;                    // --small: start from the small preset

  // Adds --model-arg, --batch and --small (the caller adds the model name).
  void AddFlags(CLI::App& cmd);
  absl::StatusOr<ir::ModelSpec> Resolve() const;
};

using Runner = std::function<absl::Status()>;

Runner RegisterModels(CLI::App& app);
Runner RegisterTrain(CLI::App& app);
Runner RegisterSynth(CLI::App& app);
Runner RegisterExplain(CLI::App& app);
Runner RegisterCheck(CLI::App& app);
Runner RegisterProfile(CLI::App& app);

}  // namespace hetsynth::cli
