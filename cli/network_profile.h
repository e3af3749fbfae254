// `hetsynth profile --network` (network_profile.cc): measure a cluster's link classes on the
// emulated cluster (or under mpirun on a real one) and write α–β fits and collective tables.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace hetsynth::cli {

struct NetworkProfileFlags {
  std::string cluster, out;
  std::string network_name;  // use (or bring up) the emulated cluster of this name; empty: a temporary one
  double dilation = -1;      // -1: DefaultDilation
  std::string mpirun = "mpirun";
  int repeats = 5;
  int64_t max_bytes = int64_t{4} << 20;
};

absl::Status ProfileNetwork(const NetworkProfileFlags& f);

}  // namespace hetsynth::cli
