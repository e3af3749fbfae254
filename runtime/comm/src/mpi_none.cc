// The MPI communicator of a build without MPI (no MPI found at configure time).
#include "hetsynth/runtime/comm.h"

namespace hetsynth::runtime {

bool MpiAvailable() { return false; }

void SetCollectiveDeadline(double) {}

absl::StatusOr<std::unique_ptr<Communicator>> MpiWorld() {
  return absl::FailedPreconditionError(
      "this build has no MPI (apt-get install libopenmpi-dev openmpi-bin, then reconfigure)");
}

}  // namespace hetsynth::runtime
