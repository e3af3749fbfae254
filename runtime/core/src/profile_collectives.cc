#include "hetsynth/runtime/profile_collectives.h"

#include <algorithm>

#include "hetsynth/base/median.h"
#include "hetsynth/base/status.h"

namespace hetsynth::runtime {

CollectiveTimings::CollectiveTimings(size_t tensors, int repeats, int ranks)
    : tensors_(tensors),
      per_(static_cast<size_t>(repeats + 1)),
      ranks_(static_cast<size_t>(ranks)),
      seconds_(tensors * kProfileCommOps * per_ * ranks_, 0.0) {}

void CollectiveTimings::AppendTo(const std::vector<std::vector<int64_t>>& collectives,
                                 std::vector<CollectiveTime>& out) const {
  HS_CHECK(collectives.size() == tensors_, "one entry of shard lengths per timed tensor");
  for (size_t c = 0; c < tensors_; ++c) {
    for (int op = 0; op < kProfileCommOps; ++op) {
      std::vector<double> worst;
      for (size_t rep = 1; rep < per_; ++rep) {  // rep 0 warms up
        double w = 0;
        for (size_t r = 0; r < ranks_; ++r) w = std::max(w, at(c, op, static_cast<int>(rep), static_cast<int>(r)));
        worst.push_back(w);
      }
      out.push_back({kProfileCommOpNames[op], collectives[c], Median(worst)});
    }
  }
}

}  // namespace hetsynth::runtime
