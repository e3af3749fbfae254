// The calling thread's CPU time: the clock emulated timing is built on (it does not advance
// while the thread waits for a core, a lock or another rank).
#pragma once

#include <time.h>

#include <mutex>

namespace hetsynth::runtime {

inline double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Emulated ranks that are threads of this process take turns computing, holding this mutex (the
// plan executor's kernels, an inference placement's groups): kernels then run alone on a core,
// as on a device of their own, instead of sharing caches and memory bandwidth with the other
// ranks'. Never held while waiting for another rank.
inline std::mutex& ComputeTurn() {
  static std::mutex turn;
  return turn;
}

}  // namespace hetsynth::runtime
