// `hetsynth profile` end to end: the cluster file it writes loads, keeps the --like cluster's
// devices and relative speeds, and bad input exits 2 with one line naming the flag or file.
// --backend cuda: without a GPU (or CUDA) one clear error line; with one (skipped otherwise)
// the file loads and `hetsynth synth` plans on it. And the reduction both backends' profiles
// share for their collectives (runtime/profile_collectives.h), and the byte counts their
// messages print (base/memory.h).
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hetsynth/base/memory.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/runtime/cuda.h"
#include "hetsynth/runtime/profile_collectives.h"

#include "cli/run_hetsynth.h"

namespace {

using hetsynth::cli_testing::ExpectError;
using hetsynth::cli_testing::Hetsynth;
using hetsynth::cli_testing::Result;

std::string Tmp(const std::string& name) { return ::testing::TempDir() + "/" + name; }

const std::string kMixed4 = std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json";
// Small and quick: 2 timed steps, collectives up to 64 KiB.
const std::string kQuick = " --repeats 2 --max-bytes 65536";

bool PositiveFinite(double v) { return std::isfinite(v) && v > 0; }

TEST(CliProfile, LikeMixed4KeepsDevicesAndRelativeSpeeds) {
  const std::string out = Tmp("mixed-4-emulated.json");
  const Result r = Hetsynth("profile --model mlp --small --like " + kMixed4 + kQuick + " -o " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("GFLOP/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("wrote " + out), std::string::npos) << r.output;

  const absl::StatusOr<hetsynth::costmodel::Cluster> like = hetsynth::costmodel::ReadClusterFile(kMixed4);
  ASSERT_TRUE(like.ok()) << like.status();
  const absl::StatusOr<hetsynth::costmodel::Cluster> c = hetsynth::costmodel::ReadClusterFile(out);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "mixed-4-emulated");
  ASSERT_EQ(c->size(), 4);
  ASSERT_EQ(c->nodes.size(), like->nodes.size());
  const double ratios[] = {1, 1, 0.5, 0.25};
  for (int i = 0; i < 4; ++i) {
    const auto& d = c->devices[static_cast<size_t>(i)];
    const auto& l = like->devices[static_cast<size_t>(i)];
    EXPECT_EQ(d.name, l.name);
    EXPECT_EQ(d.type, l.type);
    EXPECT_EQ(d.node, l.node);
    EXPECT_EQ(d.memory_bytes, l.memory_bytes) << d.name;
    EXPECT_TRUE(PositiveFinite(d.flops)) << d.flops;
    EXPECT_TRUE(PositiveFinite(d.memory_bandwidth)) << d.memory_bandwidth;
    EXPECT_NEAR(d.flops / c->devices[0].flops, ratios[i], 1e-9) << d.name;
    EXPECT_NEAR(d.memory_bandwidth / c->devices[0].memory_bandwidth, ratios[i], 1e-9) << d.name;
    // Forward-only rates for inference placement, measured on forward passes, in the same ratios.
    // The bandwidth is written only when a node classifies as memory-bound on this host's rates
    // (a sanitized build, for one, shifts them so that none does): absent, or in ratio.
    EXPECT_TRUE(PositiveFinite(d.forward_flops)) << d.forward_flops;
    EXPECT_NEAR(d.forward_flops / c->devices[0].forward_flops, ratios[i], 1e-9) << d.name;
    EXPECT_EQ(d.forward_memory_bandwidth > 0, c->devices[0].forward_memory_bandwidth > 0) << d.name;
    if (c->devices[0].forward_memory_bandwidth > 0) {
      EXPECT_TRUE(PositiveFinite(d.forward_memory_bandwidth)) << d.forward_memory_bandwidth;
      EXPECT_NEAR(d.forward_memory_bandwidth / c->devices[0].forward_memory_bandwidth, ratios[i], 1e-9) << d.name;
    }
  }
  EXPECT_NE(r.output.find("host forward:"), std::string::npos) << r.output;
  // The GEMM operand bandwidth: fitted and in the same ratios, or absent with the reason said.
  EXPECT_NE(r.output.find("host operands:"), std::string::npos) << r.output;
  EXPECT_EQ(c->devices[0].gemm_operand_bandwidth > 0, r.output.find("not priced apart") == std::string::npos) << r.output;
  for (int i = 0; i < 4 && c->devices[0].gemm_operand_bandwidth > 0; ++i) {
    EXPECT_NEAR(c->devices[static_cast<size_t>(i)].gemm_operand_bandwidth / c->devices[0].gemm_operand_bandwidth, ratios[i], 1e-9);
  }
  EXPECT_EQ(c->Classes().size(), like->Classes().size());
  const hetsynth::costmodel::Link w = c->WorldLink();
  EXPECT_TRUE(PositiveFinite(w.bandwidth)) << w.bandwidth;
  EXPECT_TRUE(std::isfinite(w.latency) && w.latency >= 0) << w.latency;
  EXPECT_EQ(c->inter_node, c->nodes[0].intra);
  EXPECT_TRUE(c->collectives.empty());
}

TEST(CliProfile, WithoutLikeDescribesThisHost) {
  const std::string out = Tmp("host.json");
  const Result r = Hetsynth("profile --model mlp --small --ranks 2 --repeats 1 --max-bytes 4096 -o " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  const absl::StatusOr<hetsynth::costmodel::Cluster> c = hetsynth::costmodel::ReadClusterFile(out);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "host");
  ASSERT_EQ(c->size(), 2);
  EXPECT_EQ(c->devices[0].name, "host0");
  EXPECT_EQ(c->devices[1].name, "host1");
  EXPECT_EQ(c->Classes().size(), 1u);
  for (const auto& d : c->devices) {
    EXPECT_EQ(d.type, "host");
    EXPECT_TRUE(PositiveFinite(d.flops));
    EXPECT_TRUE(PositiveFinite(d.memory_bandwidth));
    EXPECT_TRUE(PositiveFinite(d.memory_bytes));
  }
  EXPECT_TRUE(PositiveFinite(c->WorldLink().bandwidth));
}

TEST(CliProfile, BadInputExitsTwoNamingIt) {
  ExpectError("profile --model mlp --small --like /nonexistent/cluster.json -o " + Tmp("x.json"),
              "/nonexistent/cluster.json");
  ExpectError("profile --model mlp --small --ranks 1 -o " + Tmp("x.json"), "--ranks 1");
  ExpectError("profile --model mlp --small --repeats 0 -o " + Tmp("x.json"), "--repeats 0");
  ExpectError("profile --model mlp --small --max-bytes 2 -o " + Tmp("x.json"), "--max-bytes 2");
  ExpectError("profile --model nosuch -o " + Tmp("x.json"), "unknown model 'nosuch'");
  ExpectError("profile --model mlp --small" + kQuick + " -o /nonexistent/dir/x.json", "/nonexistent/dir/x.json");
  ExpectError("profile --model mlp --small", "-o");
}

TEST(CliProfile, BadBackendOrPrecisionExitsTwoNamingIt) {
  ExpectError("profile --backend tpu --model mlp --small -o " + Tmp("x.json"), "--backend tpu; expected cpu or cuda");
  ExpectError("profile --precision tf32 --model mlp --small -o " + Tmp("x.json"), "--precision tf32 needs --backend cuda");
  ExpectError("profile --backend cpu --precision fp32 --model mlp --small -o " + Tmp("x.json"),
              "--precision fp32 needs --backend cuda");
  // Checked before looking for a GPU: the same error with or without one.
  ExpectError("profile --backend cuda --precision fp16 --model mlp --small -o " + Tmp("x.json"),
              "--precision fp16; expected fp32, tf32 or bf16");
}

TEST(CliProfile, CudaWithoutGpuExitsTwoWithTheReason) {
  const hetsynth::runtime::CudaInfo info = hetsynth::runtime::ProbeCuda();
  if (info.devices > 0) GTEST_SKIP() << "a GPU is visible (" << info.first_name << "); this checks the error without one";
  ExpectError("profile --backend cuda --model mlp --small" + kQuick + " -o " + Tmp("x.json"),
              "--backend cuda: no GPU: " + info.reason);
  ExpectError("profile --backend cuda --precision bf16 --model mlp --small --like " + kMixed4 + kQuick + " -o " +
                  Tmp("x.json"),
              "--backend cuda: no GPU: ");
}

TEST(CliProfile, CudaProfileLoadsAndSynthPlansOnIt) {
  const hetsynth::runtime::CudaInfo info = hetsynth::runtime::ProbeCuda();
  if (info.devices == 0) GTEST_SKIP() << "no GPU: " << info.reason;

  // Without --like: N identical devices "gpu0"... of type "gpu".
  const std::string plain = Tmp("gpu.json");
  Result r = Hetsynth("profile --backend cuda --model mlp --small --ranks 2" + kQuick + " -o " + plain);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("GPU compute:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("virtual GPUs"), std::string::npos) << r.output;
  absl::StatusOr<hetsynth::costmodel::Cluster> c = hetsynth::costmodel::ReadClusterFile(plain);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "gpu");
  ASSERT_EQ(c->size(), 2);
  EXPECT_EQ(c->devices[0].name, "gpu0");
  EXPECT_EQ(c->Classes().size(), 1u);
  for (const auto& d : c->devices) {
    EXPECT_EQ(d.type, "gpu");
    EXPECT_TRUE(PositiveFinite(d.flops)) << d.flops;
    EXPECT_TRUE(PositiveFinite(d.memory_bandwidth)) << d.memory_bandwidth;
    EXPECT_TRUE(PositiveFinite(d.memory_bytes)) << d.memory_bytes;
  }
  EXPECT_TRUE(PositiveFinite(c->WorldLink().bandwidth));

  // With --like (and another precision): like's devices, speeds relative to the GPU.
  const std::string emulated = Tmp("gpu-mixed-4.json");
  r = Hetsynth("profile --backend cuda --precision tf32 --model mlp --small --like " + kMixed4 + kQuick + " -o " + emulated);
  ASSERT_EQ(r.code, 0) << r.output;
  c = hetsynth::costmodel::ReadClusterFile(emulated);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "mixed-4-emulated");
  ASSERT_EQ(c->size(), 4);
  const double ratios[] = {1, 1, 0.5, 0.25};
  for (int i = 0; i < 4; ++i) {
    const auto& d = c->devices[static_cast<size_t>(i)];
    EXPECT_TRUE(PositiveFinite(d.flops)) << d.flops;
    EXPECT_NEAR(d.flops / c->devices[0].flops, ratios[i], 1e-9) << d.name;
    EXPECT_NEAR(d.memory_bandwidth / c->devices[0].memory_bandwidth, ratios[i], 1e-9) << d.name;
  }

  // `hetsynth synth` plans on both.
  for (const std::string& cluster : {plain, emulated}) {
    const Result s = Hetsynth("synth --model mlp --small --cluster " + cluster + " -o " + Tmp("gpu-plan.json"));
    EXPECT_EQ(s.code, 0) << cluster << "\n" << s.output;
  }
}

// Every backend's collective times: per tensor and collective, the slowest rank of each repeat,
// then the median over the repeats; repeat 0 (the warm-up) never counts.
TEST(ProfileCollectives, SlowestRankPerRepeatThenMedianWithoutWarmUp) {
  using hetsynth::runtime::CollectiveTimings;
  using hetsynth::runtime::kProfileCommOpNames;
  using hetsynth::runtime::kProfileCommOps;
  const std::vector<std::vector<int64_t>> collectives = {{3, 1}, {8, 8}};
  CollectiveTimings s(collectives.size(), /*repeats=*/4, /*ranks=*/2);
  for (size_t c = 0; c < collectives.size(); ++c) {
    for (int op = 0; op < kProfileCommOps; ++op) {
      // Rank 0: 1, 5, 2, 9; rank 1: 3, 4, 7, 0 → slowest 3, 5, 7, 9 → median 6; scaled per entry.
      const double scale = static_cast<double>(10 * c + static_cast<size_t>(op) + 1);
      const double r0[] = {1000, 1, 5, 2, 9}, r1[] = {1000, 3, 4, 7, 0};
      for (int rep = 0; rep <= 4; ++rep) {
        s.at(c, op, rep, 0) = scale * r0[rep];
        s.at(c, op, rep, 1) = scale * r1[rep];
      }
    }
  }
  std::vector<hetsynth::runtime::CollectiveTime> out;
  s.AppendTo(collectives, out);
  ASSERT_EQ(out.size(), collectives.size() * kProfileCommOps);
  for (size_t c = 0; c < collectives.size(); ++c) {
    for (int op = 0; op < kProfileCommOps; ++op) {
      const hetsynth::runtime::CollectiveTime& t = out[c * kProfileCommOps + static_cast<size_t>(op)];
      EXPECT_EQ(t.op, kProfileCommOpNames[op]);
      EXPECT_EQ(t.lengths, collectives[c]);
      EXPECT_DOUBLE_EQ(t.seconds, 6.0 * static_cast<double>(10 * c + static_cast<size_t>(op) + 1));
    }
  }
}

// The sizes in profile's messages: a binary unit, 4 significant digits.
TEST(ProfileMessages, BytesWithABinaryUnit) {
  EXPECT_EQ(hetsynth::FormatBytes(0), "0 B");
  EXPECT_EQ(hetsynth::FormatBytes(512), "512 B");
  EXPECT_EQ(hetsynth::FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(hetsynth::FormatBytes(16.0 * (1 << 20)), "16 MiB");
  EXPECT_EQ(hetsynth::FormatBytes(1.25 * (1 << 30)), "1.25 GiB");
  EXPECT_EQ(hetsynth::FormatBytes(123456789), "117.7 MiB");
  EXPECT_EQ(hetsynth::FormatBytes(2048.0 * 1099511627776.0), "2048 TiB");
  EXPECT_GT(hetsynth::PhysicalRamBytes(), 0);
}

}  // namespace
