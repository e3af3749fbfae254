// hetsynth: synthesize and run SPMD training programs for mixed GPU clusters.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <new>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/strings/cord.h"
#include "commands.h"

namespace {

// An error as one line of bounded length: newlines become spaces, and a message longer than
// 1000 bytes (a quoted value that slipped through a parser's own shortening) is cut.
std::string OneLine(const std::string& in) {
  // Line breaks become spaces; other control characters (a NUL would end the line early, an
  // escape sequence would drive the terminal) are shown as \xNN.
  std::string m;
  for (const char c : in) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n' || c == '\r') {
      m += ' ';
    } else if (u < 0x20 && c != '\t') {
      static const char* hex = "0123456789abcdef";
      m += "\\x";
      m += hex[u >> 4];
      m += hex[u & 15];
    } else if (u == 0x7f) {
      m += "\\x7f";
    } else {
      m += c;
    }
  }
  if (m.size() > 1000) m = m.substr(0, 997) + "...";
  return m;
}

// The rank of this process under mpirun/srun, or 0 outside a launcher.
int LauncherRank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 0;
}

int Fail(const std::string& message, bool same_on_every_rank) {
  // Bad input fails the same way on every rank: rank 0 says so, the others exit quietly with the
  // same status, so a job prints one line, not one per rank.
  if (!same_on_every_rank || LauncherRank() == 0) {
    hetsynth::cli::EndProgressLine();  // an error starts a line of its own
    std::fprintf(stderr, "hetsynth: error: %s\n", OneLine(message).c_str());
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "hetsynth — training programs for mixed GPU clusters.\n"
      "List models, train on one CPU device, synthesize a plan for a cluster, explain and check plans,\n"
      "run plans across ranks, profile this host as a cluster file, benchmark plans against baselines."};
  app.name("hetsynth");
  app.require_subcommand(1);
  app.set_version_flag("--version", "hetsynth 0.1.0");
  std::map<CLI::App*, hetsynth::cli::Runner> runners;
  for (auto reg : {&hetsynth::cli::RegisterModels, &hetsynth::cli::RegisterImport, &hetsynth::cli::RegisterTrain, &hetsynth::cli::RegisterSynth,
                   &hetsynth::cli::RegisterExplain, &hetsynth::cli::RegisterCheck, &hetsynth::cli::RegisterProfile,
                   &hetsynth::cli::RegisterBench, &hetsynth::cli::RegisterCluster,
                   &hetsynth::cli::RegisterPlace, &hetsynth::cli::RegisterInfer, &hetsynth::cli::RegisterElastic}) {
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
      return Fail("unknown subcommand '" + std::string(argv[1]).substr(0, 60) + "'; expected one of " + names, true);
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
    return Fail(std::string(e.what()) + "; see '" + cmd + " --help'", true);
  }
  for (CLI::App* sub : app.get_subcommands()) {
    absl::Status st;
    try {
      st = runners.at(sub)();
    } catch (const std::bad_alloc&) {
      return Fail(sub->get_name() + ": out of memory; use a smaller model, batch or --model-arg", false);
    } catch (const std::length_error& e) {
      return Fail(sub->get_name() + ": a size is too large (" + e.what() + "); use a smaller model or batch", false);
    } catch (const std::exception& e) {
      return Fail(sub->get_name() + ": unexpected failure: " + e.what(), false);
    }
    // A failure printed where it happened (a collective's deadline under MPI): one line per job.
    if (!st.ok() && st.GetPayload("hetsynth/reported").has_value()) return 2;
    if (!st.ok()) return Fail(std::string(st.message()), st.code() == absl::StatusCode::kInvalidArgument);
  }
  return 0;
}
