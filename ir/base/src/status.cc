#include "hetsynth/base/status.h"

#include <cstdio>
#include <cstdlib>

namespace hetsynth {
absl::Status FileError(const char* kind, const std::string& source, const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(where.empty() ? StrCat(kind, " '", source, "': ", what)
                                                  : StrCat(kind, " '", source, "': ", where, ": ", what));
}
}  // namespace hetsynth

namespace hetsynth::internal {
void CheckFailed(const char* file, int line, const char* cond, const std::string& msg) {
  std::fprintf(stderr, "internal error at %s:%d: check '%s' failed: %s\n", file, line, cond,
               msg.c_str());
  std::abort();
}
}  // namespace hetsynth::internal
