#include <gtest/gtest.h>

#include "hetsynth/runtime/cuda.h"

namespace hetsynth::runtime {
namespace {

TEST(Cuda, KernelRoundTripMatchesTheCpu) {
  const CudaInfo info = ProbeCuda();
  if (!info.compiled || info.devices == 0) GTEST_SKIP() << "no GPU: " << info.reason;
  EXPECT_FALSE(info.first_name.empty());
  const absl::Status st = CudaSelfTest();
  EXPECT_TRUE(st.ok()) << st;
}

TEST(Cuda, SelfTestFailsCleanlyWithoutAGpu) {
  const CudaInfo info = ProbeCuda();
  if (info.compiled && info.devices > 0) GTEST_SKIP() << "a GPU is visible: " << info.first_name;
  EXPECT_FALSE(info.reason.empty());
  EXPECT_EQ(CudaSelfTest().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace hetsynth::runtime
