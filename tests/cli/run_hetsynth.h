// Running the hetsynth binary from CLI tests: exit status and combined output, and the check
// that bad input exits 2 with one "hetsynth: error:" line, the last one.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include <gtest/gtest.h>

namespace hetsynth::cli_testing {

struct Result {
  int code;
  std::string output;  // stdout and stderr together
};

inline Result Hetsynth(const std::string& args) {
  const std::string cmd = std::string(HETSYNTH_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Exit 2, `needle` in the output, exactly one error line and it is the last line (progress
// lines may precede it), no crash trace.
inline void ExpectError(const std::string& args, const std::string& needle) {
  const Result r = Hetsynth(args);
  EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  size_t errors = 0;
  for (size_t at = r.output.find("error:"); at != std::string::npos; at = r.output.find("error:", at + 1)) ++errors;
  EXPECT_EQ(errors, 1u) << args << "\n" << r.output;
  const size_t last = r.output.rfind('\n', r.output.size() - 2);
  EXPECT_EQ(r.output.compare(last == std::string::npos ? 0 : last + 1, 16, "hetsynth: error:"), 0) << r.output;
}

}  // namespace hetsynth::cli_testing
