// TempFileGuard (hetsynth/base/temp_files.h): real signals in forked children. Every guard here
// is made in a child, so each child installs the handlers afresh.
#include "hetsynth/base/temp_files.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace hetsynth {
namespace {

namespace fs = std::filesystem;

std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) / "temp_files_test" / info->name();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// body() in a child process that exits 7 if body returns; its wait status.
int RunChild(const std::function<void()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    body();
    ::_exit(7);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

TEST(TempFileGuardTest, AnInterruptRemovesTheTemporaryAndStillKills) {
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    const std::string tmp = TestDir() + "/plan.json.AbC123.tmp";
    std::ofstream(tmp) << "partial";
    const int status = RunChild([&] {
      TempFileGuard guard(tmp);
      ::raise(sig);
    });
    ASSERT_TRUE(WIFSIGNALED(status)) << sig << ": " << status;
    EXPECT_EQ(WTERMSIG(status), sig);
    EXPECT_FALSE(fs::exists(tmp)) << sig;
  }
}

// A signal that did not end the process before (ignored, or handled by a command that stops
// cleanly or finishes its write first, as an elastic worker does with SIGTERM) still does not,
// and the temporary stays for the writer to finish and rename.
TEST(TempFileGuardTest, AnIgnoredOrHandledSignalLeavesTheWriteAlone) {
  const std::string tmp = TestDir() + "/ckpt.safetensors.tmp.1.0";
  std::ofstream(tmp) << "partial";
  static volatile sig_atomic_t seen = 0;
  const int status = RunChild([&] {
    ::signal(SIGTERM, [](int) { seen = 1; });
    ::signal(SIGHUP, SIG_IGN);
    TempFileGuard guard(tmp);
    if (!guard.registered()) ::_exit(3);
    ::raise(SIGHUP);  // ignored before: still ignored
    ::raise(SIGTERM);
    if (!seen) ::_exit(4);
    if (::access(tmp.c_str(), F_OK) != 0) ::_exit(5);  // the writer can still rename it
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 7);
  EXPECT_TRUE(fs::exists(tmp));
}

TEST(TempFileGuardTest, AFinishedWriteLeavesItsFileAlone) {
  const std::string file = TestDir() + "/renamed.json";
  std::ofstream(file) << "whole";
  const int status = RunChild([&] {
    { TempFileGuard guard(file); }  // the write renamed it: unregistered
    ::raise(SIGINT);
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGINT);
  EXPECT_TRUE(fs::exists(file));
}

// A handler that ends the process itself (an elastic worker's SIGTERM) removes them first.
TEST(TempFileGuardTest, RemoveTempFilesNowRemovesTheRegisteredOnes) {
  const std::string tmp = TestDir() + "/metrics.jsonl.Zz9.tmp", other = TestDir() + "/not-registered";
  std::ofstream(tmp) << "partial";
  std::ofstream(other) << "keep";
  const int status = RunChild([&] {
    TempFileGuard guard(tmp);
    RemoveTempFilesNow();
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_TRUE(fs::exists(other));
}

TEST(TempFileGuardTest, TooLongAPathIsNotRegistered) {
  TempFileGuard guard(std::string(TempFileGuard::kMaxPathBytes, 'x'));
  EXPECT_FALSE(guard.registered());
}

}  // namespace
}  // namespace hetsynth
