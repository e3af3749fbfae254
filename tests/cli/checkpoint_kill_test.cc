// Checkpoints are atomic as a set: `train --save-every 1` is killed with SIGKILL at random
// moments, 50 times; after each kill the checkpoint must load (`train --steps 0 --load`, exit 0),
// its manifest's step and set id must match the optimizer state file's, and the step never goes
// back. Stale files (older sets, temporaries of the killed writers) are gone after the next save.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hetsynth/runtime/safetensors.h"

namespace {

namespace fs = std::filesystem;

pid_t Start(std::vector<std::string> args) {
  args.insert(args.begin(), HETSYNTH_BIN);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

int Wait(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

const std::vector<std::string> kModel = {"--model", "mlp", "--small", "--model-arg", "hidden=256",
                                         "--model-arg", "layers=4", "--optimizer", "adam", "--quiet"};

std::vector<std::string> With(std::vector<std::string> extra) {
  std::vector<std::string> a = {"train"};
  a.insert(a.end(), kModel.begin(), kModel.end());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST(CheckpointSet, SurvivesSigkillAtRandomMoments) {
  const fs::path dir = fs::temp_directory_path() / ("hetsynth-kill-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string ck = (dir / "ck.safetensors").string();
  ASSERT_EQ(Wait(Start(With({"--steps", "1", "--save", ck}))), 0);

  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_ms(0, 120);
  int64_t last_step = 1;
  int advanced = 0;
  for (int kill_no = 0; kill_no < 50; ++kill_no) {
    const fs::file_time_type before = fs::last_write_time(ck);
    const pid_t pid = Start(With({"--steps", "100000", "--load", ck, "--save", ck, "--save-every", "1"}));
    // The random moment counts from this run's first committed set, not from its start, so that a
    // loaded machine (slow start-up) still kills during saves rather than before the first one.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::error_code ec;
    while (std::chrono::steady_clock::now() < give_up) {
      const fs::file_time_type now = fs::last_write_time(ck, ec);
      if (!ec && now != before) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    kill(pid, SIGKILL);
    Wait(pid);

    // Loadable by hetsynth itself (which cross-checks the manifest).
    ASSERT_EQ(Wait(Start(With({"--steps", "0", "--load", ck}))), 0) << "kill " << kill_no << ": not loadable";
    // And consistent by an independent read: the state file the manifest names has its set and step.
    const absl::StatusOr<hetsynth::runtime::SafetensorsFile> params = hetsynth::runtime::ReadSafetensors(ck);
    ASSERT_TRUE(params.ok()) << params.status();
    const auto& meta = params->metadata;
    ASSERT_TRUE(meta.count("set") && meta.count("optimizer_state") && meta.count("step")) << "kill " << kill_no;
    const absl::StatusOr<hetsynth::runtime::SafetensorsFile> state =
        hetsynth::runtime::ReadSafetensors((dir / meta.at("optimizer_state")).string());
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ(state->metadata.at("set"), meta.at("set"));
    EXPECT_EQ(state->metadata.at("step"), meta.at("step"));
    const int64_t step = std::stoll(meta.at("step"));
    EXPECT_GE(step, last_step) << "kill " << kill_no << ": the checkpoint went back";
    advanced += step > last_step;
    last_step = step;
  }
  EXPECT_GT(advanced, 10) << "the kills should mostly land after some saves";

  // A clean save removes what the killed writers left behind.
  ASSERT_EQ(Wait(Start(With({"--steps", "1", "--load", ck, "--save", ck}))), 0);
  std::vector<std::string> left;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left.size(), 2u) << "expected ck.safetensors and one state file; found " << left.size();
  fs::remove_all(dir);
}

}  // namespace
