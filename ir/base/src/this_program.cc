#include "hetsynth/base/this_program.h"

#include <unistd.h>

#include <climits>

namespace hetsynth {

absl::StatusOr<std::string> ThisProgramPath() {
  char path[PATH_MAX];
  const ssize_t len = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (len <= 0) return absl::InternalError("cannot find this program (/proc/self/exe)");
  return std::string(path, static_cast<size_t>(len));
}

}  // namespace hetsynth
