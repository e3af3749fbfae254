// What every backend's Profile (backend.h) shares for its collectives: the four it times per
// tensor of ProfileOptions::collectives, and the reduction of every rank's times to one
// CollectiveTime per tensor and collective.
//
//   CollectiveTimings t(o.collectives.size(), o.repeats, ranks);
//   // on every rank, for tensor c, op (kProfileCommOpNames[op]) and repeat rep (0 warms up):
//   t.at(c, op, rep, comm.rank()) = seconds;
//   t.AppendTo(o.collectives, profile.collectives);  // per tensor and op: slowest rank, median
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "hetsynth/runtime/backend.h"

namespace hetsynth::runtime {

// The collectives timed per tensor, by CollectiveTime::op, in the order DeviceProfile::collectives
// lists them: grouped all-gather, grouped reduce-scatter, all-reduce of the whole tensor, padded
// all-gather.
inline constexpr int kProfileCommOps = 4;
inline constexpr const char* kProfileCommOpNames[kProfileCommOps] = {"all_gather", "reduce_scatter", "all_reduce",
                                                                      "all_gather_padded"};

// The seconds each rank measured, per tensor, collective, repeat (0 warms up) and rank. Ranks
// running concurrently each write only their own slots.
class CollectiveTimings {
 public:
  CollectiveTimings(size_t tensors, int repeats, int ranks);

  double& at(size_t tensor, int op, int rep, int rank) { return seconds_[Index(tensor, op, rep, rank)]; }
  double at(size_t tensor, int op, int rep, int rank) const { return seconds_[Index(tensor, op, rep, rank)]; }

  // Appends one CollectiveTime per tensor (collectives[tensor] its shard lengths) and
  // collective, in that order: the median over repeats 1..repeats of the slowest rank's seconds.
  void AppendTo(const std::vector<std::vector<int64_t>>& collectives, std::vector<CollectiveTime>& out) const;

 private:
  size_t Index(size_t tensor, int op, int rep, int rank) const {
    return ((tensor * kProfileCommOps + static_cast<size_t>(op)) * per_ + static_cast<size_t>(rep)) * ranks_ +
           static_cast<size_t>(rank);
  }

  size_t tensors_, per_, ranks_;
  std::vector<double> seconds_;
};

}  // namespace hetsynth::runtime
