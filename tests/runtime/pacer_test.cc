// Time dilation (runtime/pacer.h): a paced stretch of local work lasts at least K × its CPU time ×
// slowdown in real time, and the pacer reports wall clock ÷ K.
#include "hetsynth/runtime/pacer.h"

#include <cstdlib>

#include <gtest/gtest.h>

namespace hetsynth::runtime {
namespace {

// Spins on this thread's CPU for about `s` seconds of CPU time.
double Spin(double s) {
  const double c0 = ThreadCpuSeconds();
  volatile double x = 0;
  while (ThreadCpuSeconds() - c0 < s) {
    for (int i = 0; i < 1000; ++i) x = x + 1e-9 * i;
  }
  return x;
}

TEST(Pacer, StretchLastsKTimesItsModelledTime) {
  Pacer p(/*dilation=*/4, /*slowdown=*/2.5);
  p.StartStep();
  const double w0 = Pacer::Now();
  double modelled = p.Work([] { Spin(0.004); });
  modelled += p.Work([] { Spin(0.002); });
  EXPECT_GE(modelled, 2.5 * 0.006 - 1e-9);
  p.Settle();
  const double wall = Pacer::Now() - w0;
  // sleep_for never wakes early: the stretch took at least K × modelled.
  EXPECT_GE(wall, 4 * modelled - 1e-6);
  // Elapsed is the wall clock ÷ K.
  EXPECT_NEAR(p.Elapsed(), (Pacer::Now() - w0) / 4, 1e-3);
  EXPECT_EQ(p.Modelled(8.0), 2.0);
  // A second Settle without work does not sleep again.
  const double w1 = Pacer::Now();
  EXPECT_EQ(p.Settle(), 0.0);
  EXPECT_LT(Pacer::Now() - w1, 0.05);
}

TEST(Pacer, OffRunsTheWorkAndNeverSleeps) {
  Pacer p;
  EXPECT_FALSE(p.on());
  p.StartStep();
  bool ran = false;
  p.Work([&] { ran = true; });
  EXPECT_TRUE(ran);
  EXPECT_EQ(p.Settle(), 0.0);
  EXPECT_EQ(p.Modelled(3.0), 3.0);
}

TEST(Pacer, DilationFromTheEnvironment) {
  unsetenv(kDilationEnv);
  EXPECT_EQ(DilationFromEnv(), 0);
  setenv(kDilationEnv, "12.5", 1);
  EXPECT_EQ(DilationFromEnv(), 12.5);
  for (const char* bad : {"0.5", "x", "3x", "-2", "inf"}) {
    setenv(kDilationEnv, bad, 1);
    EXPECT_EQ(DilationFromEnv(), -1) << bad;
  }
  unsetenv(kDilationEnv);
}

TEST(Pacer, DilationForCoresFitsTheRanksCpuShares) {
  // Six ranks of relative speeds 1, 1, .5, .5, .25, .25 (sum 3.5) on 2 cores, 1.5× headroom:
  // 3.5 × 1.5 / 2 = 2.625 → 3; at K = 3 their CPU shares sum to 3.5 / 3 ≤ 2 / 1.5.
  EXPECT_EQ(DilationForCores(3.5, 2), 3);
  EXPECT_EQ(DilationForCores(1, 16), 1);  // never below 1
  EXPECT_EQ(DilationForCores(8, 2, 1), 4);
}

}  // namespace
}  // namespace hetsynth::runtime
