// The calling thread's CPU time: the clock emulated timing is built on (it does not advance
// while the thread waits for a core, a lock or another rank).
#pragma once

#include <time.h>

namespace hetsynth::runtime {

inline double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace hetsynth::runtime
