// hetsynth: synthesize and run SPMD training programs for mixed GPU clusters.
#include <cstdio>
#include <map>
#include <string>

#include <CLI/CLI.hpp>

#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "hetsynth — training programs for mixed GPU clusters.\n"
      "List models, train on one CPU device, synthesize a plan for a cluster, explain and check plans,\n"
      "run plans across ranks, profile this host as a cluster file, benchmark plans against baselines."};
  app.name("hetsynth");
  app.require_subcommand(1);
  app.set_version_flag("--version", "hetsynth 0.1.0");
  std::map<CLI::App*, hetsynth::cli::Runner> runners;
  for (auto reg : {&hetsynth::cli::RegisterModels, &hetsynth::cli::RegisterTrain, &hetsynth::cli::RegisterSynth,
                   &hetsynth::cli::RegisterExplain, &hetsynth::cli::RegisterCheck, &hetsynth::cli::RegisterProfile,
                   &hetsynth::cli::RegisterBench, &hetsynth::cli::RegisterCluster}) {
    const size_t before = app.get_subcommands({}).size();
    hetsynth::cli::Runner run = reg(app);
    runners[app.get_subcommands({})[before]] = std::move(run);
  }
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (CLI::App* sub : app.get_subcommands({})) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
      known = known || sub->check_name(argv[1]);
    }
    if (!known) {
      std::fprintf(stderr, "hetsynth: error: unknown subcommand '%s'; expected one of %s\n", argv[1], names.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string cmd = "hetsynth";
    for (CLI::App* sub : app.get_subcommands()) cmd += " " + sub->get_name();
    std::fprintf(stderr, "hetsynth: error: %s; see '%s --help'\n", e.what(), cmd.c_str());
    return 2;
  }
  for (CLI::App* sub : app.get_subcommands()) {
    const absl::Status st = runners.at(sub)();
    if (!st.ok()) {
      std::fprintf(stderr, "hetsynth: error: %s\n", std::string(st.message()).c_str());
      return 2;
    }
  }
  return 0;
}
