#include "hetsynth/base/status.h"

#include <cstdio>
#include <cstdlib>

namespace hetsynth::internal {
void CheckFailed(const char* file, int line, const char* cond, const std::string& msg) {
  std::fprintf(stderr, "internal error at %s:%d: check '%s' failed: %s\n", file, line, cond,
               msg.c_str());
  std::abort();
}
}  // namespace hetsynth::internal
