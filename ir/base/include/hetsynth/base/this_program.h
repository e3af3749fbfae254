// The path of the running program (/proc/self/exe): for starting it again in other processes
// (mpirun ranks of the emulated cluster) and for finding what is installed next to it (the CUDA
// backend module).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace hetsynth {

// Internal error "cannot find this program (/proc/self/exe)" when the link cannot be read.
absl::StatusOr<std::string> ThisProgramPath();

}  // namespace hetsynth
