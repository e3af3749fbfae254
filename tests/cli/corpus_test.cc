// The malformed-input corpus (tests/inputs/cases.json, written by tests/inputs/generate.py):
// every case is refused with exit status 2 and exactly one stderr line, "hetsynth: error: ...",
// that contains the case's expected text — no crash signal, no hang, nothing on stdout, no
// second line. Graph files (which no subcommand reads) go through ir::ReadGraphFile instead.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hetsynth/ir/graph_json.h"

namespace {

namespace fs = std::filesystem;

struct Case {
  std::string name;
  std::vector<std::string> args;  // hetsynth arguments; empty for a graph case
  std::string graph;              // a graph file for ir::ReadGraphFile
  std::string error;              // a substring of the expected error line
};

// Test names and failure messages show the case's name, not its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

const std::string kInputs = std::string(HETSYNTH_SOURCE_DIR) + "/tests/inputs";

std::string Expand(std::string s, const std::string& tmp) {
  for (const auto& [key, value] : {std::pair<std::string, std::string>{"{in}", kInputs}, {"{tmp}", tmp}}) {
    for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + value.size())) {
      s.replace(at, key.size(), value);
    }
  }
  return s;
}

std::vector<Case> LoadCases() {
  std::ifstream in(kInputs + "/cases.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<Case> out;
  for (const auto& c : j) {
    Case k;
    k.name = c.at("name").get<std::string>();
    if (c.contains("args")) k.args = c.at("args").get<std::vector<std::string>>();
    if (c.contains("graph")) k.graph = c.at("graph").get<std::string>();
    k.error = c.at("error").get<std::string>();
    out.push_back(std::move(k));
  }
  return out;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct RunResult {
  bool timed_out = false;
  int signal = 0;  // the signal that ended it, 0 if it exited
  int code = -1;
  std::string out, err;
};

// Runs hetsynth with `args`, stdout and stderr to files, killed after `limit`.
RunResult RunHetsynth(const std::vector<std::string>& args, const fs::path& dir, std::chrono::seconds limit) {
  const fs::path out = dir / "stdout", err = dir / "stderr";
  std::vector<std::string> argv_s = {HETSYNTH_BIN};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(127);
    execv(argv[0], argv.data());
    _exit(127);
  }
  RunResult r;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  for (;;) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
  r.out = ReadAll(out);
  r.err = ReadAll(err);
  return r;
}

class Corpus : public testing::TestWithParam<Case> {};

TEST_P(Corpus, RefusedWithOneLine) {
  const Case& c = GetParam();
  const fs::path tmp = fs::temp_directory_path() / ("hetsynth-corpus-" + std::to_string(getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  if (!c.graph.empty()) {
    const absl::StatusOr<hetsynth::ir::Graph> g = hetsynth::ir::ReadGraphFile(Expand(c.graph, tmp.string()));
    ASSERT_FALSE(g.ok()) << c.name << ": accepted";
    const std::string m(g.status().message());
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_LT(m.size(), 1000u) << m.substr(0, 300);
    EXPECT_NE(m.find(c.error), std::string::npos) << "expected '" << c.error << "' in: " << m;
  } else {
    std::vector<std::string> args;
    for (const std::string& a : c.args) args.push_back(Expand(a, tmp.string()));
    const RunResult r = RunHetsynth(args, tmp, std::chrono::seconds(60));
    ASSERT_FALSE(r.timed_out) << c.name << ": still running after 60 s";
    ASSERT_EQ(r.signal, 0) << c.name << ": killed by signal " << r.signal << " (" << strsignal(r.signal) << ")\n"
                           << r.err.substr(0, 2000);
    EXPECT_EQ(r.code, 2) << r.err.substr(0, 2000) << r.out.substr(0, 2000);
    EXPECT_EQ(r.out, "") << "stdout: " << r.out.substr(0, 2000);
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.back(), '\n');
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line on stderr:\n" << r.err.substr(0, 2000);
    EXPECT_EQ(r.err.rfind("hetsynth: error: ", 0), 0u) << r.err.substr(0, 2000);
    EXPECT_LT(r.err.size(), 1100u) << "an unbounded value in the message: " << r.err.substr(0, 300);
    EXPECT_NE(r.err.find(c.error), std::string::npos) << "expected '" << c.error << "' in: " << r.err.substr(0, 2000);
  }
  fs::remove_all(tmp);
}

std::string CaseName(const testing::TestParamInfo<Case>& info) {
  std::string n = info.param.name;
  for (char& ch : n) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return n;
}

INSTANTIATE_TEST_SUITE_P(Inputs, Corpus, testing::ValuesIn(LoadCases()), CaseName);

// The corpus is as large as the issue asks, and every kind is represented.
TEST(CorpusSize, AtLeast120CasesOfEveryKind) {
  const std::vector<Case> cases = LoadCases();
  EXPECT_GE(cases.size(), 120u);
  for (const char* kind : {"cluster/", "plan/", "safetensors/", "graph/", "flags/"}) {
    size_t n = 0;
    for (const Case& c : cases) n += c.name.rfind(kind, 0) == 0;
    EXPECT_GE(n, 10u) << kind;
  }
}

}  // namespace
