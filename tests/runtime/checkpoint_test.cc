// Checkpoint sets (training.h): what WriteCheckpoint refuses to write and what ReadCheckpoint
// refuses or drops, each on files tampered with after a good write (hashes recomputed, so the
// later checks are reached).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>

#include "hetsynth/runtime/safetensors.h"
#include "hetsynth/runtime/snapshot.h"
#include "hetsynth/runtime/training.h"
#include "runtime/text_assertions.h"

namespace hetsynth::runtime {
namespace {

namespace fs = std::filesystem;

using testing_util::Contains;

std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) / "checkpoint_test" / (std::string(info->test_suite_name()) + "." + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

const std::map<std::string, ir::Shape> kShapes = {{"w", {2, 3}}, {"b", {3}}};
const std::string kModel = "gpt(layers=2, hidden=32, heads=4, ffn=64, seq=16, vocab=64, dropout=0; batch 4)";

std::map<std::string, Tensor> Params() { return {{"w", Tensor({2, 3}, 0.5f)}, {"b", Tensor({3}, -0.25f)}}; }
std::map<std::string, Tensor> AdamState() {
  return {{"w.exp_avg", Tensor({2, 3}, 0.1f)}, {"w.exp_avg_sq", Tensor({2, 3}, 0.01f)},
          {"b.exp_avg", Tensor({3}, 0.1f)}, {"b.exp_avg_sq", Tensor({3}, 0.01f)}};
}
std::map<std::string, Tensor> SgdState() {
  return {{"w.momentum_buffer", Tensor({2, 3}, 0.1f)}, {"b.momentum_buffer", Tensor({3}, 0.1f)}};
}
OptimizerConfig Adam() { return {.kind = OptimizerKind::kAdam}; }
OptimizerConfig Sgd(double momentum) { return {.kind = OptimizerKind::kSgd, .lr = 0.01, .momentum = momentum}; }

// Rewrites a checkpoint's state file with `state` (and its manifest's hash to match).
void TamperState(const std::string& path, const std::map<std::string, Tensor>& state) {
  SafetensorsFile manifest = *ReadSafetensors(path);
  const std::string state_path = (fs::path(path).parent_path() / manifest.metadata.at("optimizer_state")).string();
  SafetensorsFile sf = *ReadSafetensors(state_path);
  ASSERT_TRUE(WriteSafetensors(state_path, state, sf.metadata).ok());
  manifest.metadata["optimizer_state_hash"] = CheckpointTensorsHash(state);
  ASSERT_TRUE(WriteSafetensors(path, manifest.tensors, manifest.metadata).ok());
}

// Rewrites a checkpoint's manifest metadata.
void TamperManifest(const std::string& path, const std::map<std::string, std::string>& set,
                    const std::vector<std::string>& erase = {}) {
  SafetensorsFile manifest = *ReadSafetensors(path);
  for (const auto& [k, v] : set) manifest.metadata[k] = v;
  for (const std::string& k : erase) manifest.metadata.erase(k);
  ASSERT_TRUE(WriteSafetensors(path, manifest.tensors, manifest.metadata).ok());
}

TEST(Checkpoint, RoundTripKeepsParametersStateAndStep) {
  const std::string path = TestDir() + "/ck.safetensors";
  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), AdamState(), OptimizerKind::kAdam, 7).ok());
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->step, 7);
  EXPECT_EQ(ck->state.size(), 4u);
  EXPECT_EQ(ck->note, "");
}

TEST(Checkpoint, ReadRefusesNonFiniteOrNegativeState) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    OptimizerKind kind;
    std::string key;
    float value;
    std::string expect;
  };
  for (const Case& c : {Case{OptimizerKind::kAdam, "b.exp_avg", nan, "tensor 'b.exp_avg' element 1 is nan; expected finite values"},
                        Case{OptimizerKind::kAdam, "b.exp_avg_sq", -1.0f,
                             "tensor 'b.exp_avg_sq' element 1 is -1; expected finite, non-negative values"},
                        Case{OptimizerKind::kSgd, "w.momentum_buffer", nan, "tensor 'w.momentum_buffer' element 1 is nan"}}) {
    SCOPED_TRACE(c.key);
    const std::string path = TestDir() + "/ck.safetensors";
    const bool adam = c.kind == OptimizerKind::kAdam;
    std::map<std::string, Tensor> state = adam ? AdamState() : SgdState();
    ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), state, c.kind, 3).ok());
    state.at(c.key).data[1] = c.value;
    TamperState(path, state);
    absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, adam ? Adam() : Sgd(0.9), kModel);
    ASSERT_FALSE(ck.ok());
    EXPECT_EQ(ck.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(std::string(ck.status().message()), "optimizer state '"));
    EXPECT_TRUE(Contains(std::string(ck.status().message()), c.expect));
  }
}

TEST(Checkpoint, ReadRefusesNonFiniteStateInAPreSetStateFile) {
  const std::string dir = TestDir(), path = dir + "/old.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, Params(), {{"format", "hetsynth-checkpoint"}, {"step", "2"}, {"optimizer", "adam"}}).ok());
  std::map<std::string, Tensor> state = AdamState();
  state.at("w.exp_avg").data[4] = std::numeric_limits<float>::infinity();
  ASSERT_TRUE(WriteSafetensors(dir + "/old.optim.safetensors", state, {{"optimizer", "adam"}, {"step", "2"}}).ok());
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Adam());
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.status().message(), "optimizer state '" + dir +
                                       "/old.optim.safetensors': tensor 'w.exp_avg' element 4 is inf; expected finite values");
}

TEST(Checkpoint, WriteRefusesNonFiniteTensorsAndKeepsTheOldSet) {
  const std::string dir = TestDir(), path = dir + "/ck.safetensors";
  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), AdamState(), OptimizerKind::kAdam, 3).ok());
  auto listing = [&] {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
    return names;
  };
  const std::set<std::string> before = listing();
  std::map<std::string, Tensor> params = Params();
  params.at("b").data[2] = -std::numeric_limits<float>::infinity();
  absl::Status st = WriteCheckpoint(path, kModel, params, AdamState(), OptimizerKind::kAdam, 4);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), "checkpoint '" + path + "' not written: tensor 'b' element 2 is -inf; the training diverged (lower --lr)");
  std::map<std::string, Tensor> state = AdamState();
  state.at("w.exp_avg_sq").data[0] = std::numeric_limits<float>::quiet_NaN();
  st = WriteCheckpoint(path, kModel, Params(), state, OptimizerKind::kAdam, 4);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(Contains(std::string(st.message()), "optimizer state 'w.exp_avg_sq' element 0 is nan; the training diverged"));
  EXPECT_EQ(listing(), before);  // nothing written, nothing removed
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->step, 3);
}

TEST(Checkpoint, AFailedManifestWriteRemovesTheNewStateFile) {
  const std::string dir = TestDir(), path = dir + "/ck.safetensors";
  fs::create_directories(path);  // the manifest cannot be renamed over a directory
  ASSERT_FALSE(WriteCheckpoint(path, kModel, Params(), AdamState(), OptimizerKind::kAdam, 3).ok());
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().filename().string(), "ck.safetensors");
}

TEST(Checkpoint, CleanupRemovesOnlyStateFilesOfOtherSets) {
  const std::string dir = TestDir(), path = dir + "/run.safetensors";
  const std::vector<std::string> kept = {"run.optim.data.safetensors", "run.optim.README", "run.optim.0123456789ABCDEF.safetensors",
                                         "run.optim.0123456789abcdef0.safetensors", "run.optim.safetensors.bak",
                                         "run.optim.0123456789abcdef.safetensors.tmp.x.1"};
  const std::vector<std::string> removed = {"run.optim.0123456789abcdef.safetensors", "run.optim.safetensors",
                                            "run.optim.0123456789abcdef.safetensors.tmp.999999999.1",
                                            "run.safetensors.tmp.999999999.3"};
  for (const std::string& name : kept) std::ofstream(dir + "/" + name) << "keep";
  for (const std::string& name : removed) std::ofstream(dir + "/" + name) << "stale";
  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), AdamState(), OptimizerKind::kAdam, 1).ok());
  for (const std::string& name : kept) EXPECT_TRUE(fs::exists(dir + "/" + name)) << name;
  for (const std::string& name : removed) EXPECT_FALSE(fs::exists(dir + "/" + name)) << name;
  EXPECT_TRUE(ReadCheckpoint(path, kShapes, Adam(), kModel).ok());
}

TEST(Checkpoint, StepsPastTwoToThe53AreRefused) {
  const std::string path = TestDir() + "/ck.safetensors";
  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), {}, OptimizerKind::kSgd, int64_t{1} << 53).ok());
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Sgd(0), kModel);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->step, int64_t{1} << 53);
  TamperManifest(path, {{"step", "9223372036854775807"}});
  ck = ReadCheckpoint(path, kShapes, Sgd(0), kModel);
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.status().message(), "checkpoint '" + path +
                                       "': metadata step='9223372036854775807'; expected a non-negative integer at most "
                                       "2^53 = 9007199254740992");
}

TEST(Checkpoint, IncompleteOrUnknownStateIsRefused) {
  const std::string path = TestDir() + "/ck.safetensors";
  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), AdamState(), OptimizerKind::kAdam, 3).ok());
  std::map<std::string, Tensor> state = AdamState();
  state.erase("w.exp_avg_sq");
  TamperState(path, state);
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_FALSE(ck.ok());
  EXPECT_TRUE(Contains(std::string(ck.status().message()),
                       "parameter 'w' has exp_avg but no exp_avg_sq; expected all of its adam state (exp_avg, exp_avg_sq)"));

  state = AdamState();
  state["b.bogus"] = Tensor({3});
  TamperState(path, state);
  ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_FALSE(ck.ok());
  EXPECT_TRUE(Contains(std::string(ck.status().message()), "tensor 'b.bogus' is not optimizer state"));

  state = AdamState();
  state["b.momentum_buffer"] = Tensor({3});
  TamperState(path, state);
  ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_FALSE(ck.ok());
  EXPECT_TRUE(Contains(std::string(ck.status().message()), "tensor 'b.momentum_buffer' is not adam state"));
}

TEST(Checkpoint, StateOfAnotherOptimizerIsDroppedWithANote) {
  const std::string path = TestDir() + "/ck.safetensors";
  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), AdamState(), OptimizerKind::kAdam, 3).ok());
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Sgd(0.9), kModel);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_TRUE(ck->state.empty());
  EXPECT_EQ(ck->note, "checkpoint '" + path + "': its adam state is not used with --optimizer sgd; the optimizer state starts from zero");

  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), SgdState(), OptimizerKind::kSgd, 3).ok());
  ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_TRUE(ck->state.empty());
  EXPECT_TRUE(Contains(ck->note, "its sgd state is not used with --optimizer adam"));

  ck = ReadCheckpoint(path, kShapes, Sgd(0), kModel);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_TRUE(ck->state.empty());
  EXPECT_EQ(ck->note, "checkpoint '" + path + "': its sgd momentum buffers are not used with --momentum 0; they are dropped");

  ck = ReadCheckpoint(path, kShapes, Sgd(0.9), kModel);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->state.size(), 2u);
  EXPECT_EQ(ck->note, "");
}

TEST(Checkpoint, AManifestNamingStateItDoesNotHoldGivesANote) {
  const std::string path = TestDir() + "/ck.safetensors";
  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), AdamState(), OptimizerKind::kAdam, 3).ok());
  TamperManifest(path, {}, {"optimizer_state"});
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_TRUE(ck->state.empty());
  EXPECT_TRUE(Contains(ck->note, "has optimizer_state_hash but no optimizer_state file, so its adam state is not loaded"));
}

TEST(Checkpoint, ManifestFormatOptimizerAndStateOptimizerAreChecked) {
  const std::string path = TestDir() + "/ck.safetensors";
  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), AdamState(), OptimizerKind::kAdam, 3).ok());
  TamperManifest(path, {{"format", "pytorch"}});
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.status().message(), "checkpoint '" + path +
                                       "': metadata format='pytorch'; expected 'hetsynth-checkpoint' (or no metadata, a "
                                       "plain safetensors file)");
  TamperManifest(path, {{"format", "hetsynth-checkpoint"}, {"optimizer", "lion"}});
  ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_FALSE(ck.ok());
  EXPECT_TRUE(Contains(std::string(ck.status().message()), "metadata optimizer='lion'; expected sgd or adam"));
  TamperManifest(path, {{"optimizer", "sgd"}});  // the state file says adam
  ck = ReadCheckpoint(path, kShapes, Adam(), kModel);
  ASSERT_FALSE(ck.ok());
  EXPECT_TRUE(Contains(std::string(ck.status().message()), "metadata optimizer='adam' but its manifest says 'sgd'"));
}

TEST(Checkpoint, ModelArchitectureIsComparedButNotBatchOrDropout) {
  const std::string path = TestDir() + "/ck.safetensors";
  ASSERT_TRUE(WriteCheckpoint(path, kModel, Params(), {}, OptimizerKind::kAdam, 3).ok());
  const std::string other_batch = "gpt(layers=2, hidden=32, heads=4, ffn=64, seq=16, vocab=64, dropout=0.1; batch 16)";
  EXPECT_TRUE(ReadCheckpoint(path, kShapes, Adam(), other_batch).ok());
  EXPECT_TRUE(ReadCheckpoint(path, kShapes, Adam(), "").ok());
  EXPECT_TRUE(ReadCheckpoint(path, kShapes, Adam(), "model.onnx(file hash 12; batch 4)").ok());
  const std::string heads1 = "gpt(layers=2, hidden=32, heads=1, ffn=64, seq=16, vocab=64, dropout=0; batch 4)";
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Adam(), heads1);
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.status().message(), "checkpoint '" + path + "': metadata model='" + kModel + "' has heads=4 but the model is '" +
                                       heads1 + "'; expected the same architecture (batch, dropout and capacity_factor may differ)");
  ck = ReadCheckpoint(path, kShapes, Adam(), "moe(layers=2, hidden=32; batch 4)");
  ASSERT_FALSE(ck.ok());
  EXPECT_TRUE(Contains(std::string(ck.status().message()), "' names model gpt but the model is 'moe("));
  // A plain safetensors file (PyTorch's) has no metadata to compare.
  ASSERT_TRUE(WriteSafetensors(path, Params()).ok());
  EXPECT_TRUE(ReadCheckpoint(path, kShapes, Adam(), heads1).ok());
}

TEST(Checkpoint, AnExtraHugeTensorIsRefusedFromTheHeaderWithoutReadingIt) {
  const std::string path = TestDir() + "/huge.safetensors";
  // The parameters, then a 64 GiB tensor "zzz" that is a hole in a sparse file.
  ASSERT_TRUE(WriteSafetensors(path, Params()).ok());
  SafetensorsFile f = *ReadSafetensors(path);
  const uint64_t huge = uint64_t{16} << 30;  // elements
  std::string header = R"({"b":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                       R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[12,36]},)";
  header += "\"zzz\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(huge) + "],\"data_offsets\":[36," +
            std::to_string(36 + 4 * huge) + "]}}";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header;
    out.write(reinterpret_cast<const char*>(f.tensors.at("b").ptr()), 12);
    out.write(reinterpret_cast<const char*>(f.tensors.at("w").ptr()), 24);
  }
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(8 + header.size() + 36 + 4 * huge)), 0);
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<Checkpoint> ck = ReadCheckpoint(path, kShapes, Adam());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.status().message(),
            "checkpoint '" + path + "': tensor 'zzz' is not a parameter of the model; was it saved from a different model?");
  EXPECT_LT(s, 2.0);
}

TEST(Checkpoint, ARankSnapshotWithANonFinitePieceIsRefusedNamingTheFile) {
  const std::string path = TestDir() + "/snap-1-4.safetensors";
  RankSnapshot s;
  s.step = 4;
  s.rank = 1;
  s.keys = {"b", "w"};
  s.pieces = {{"b", 0, 0, Tensor({3}, 0.5f)}, {"w", 0, 1, Tensor({1, 3}, 0.5f)}};
  ASSERT_TRUE(WriteRankSnapshot(path, s).ok());
  ASSERT_TRUE(ReadRankSnapshot(path).ok());
  s.pieces[1].data.data[2] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(WriteRankSnapshot(path, s).ok());
  absl::StatusOr<RankSnapshot> back = ReadRankSnapshot(path);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().message(), "snapshot '" + path + "': piece 1 ('w') element 2 is nan; expected finite values");
}

}  // namespace
}  // namespace hetsynth::runtime
