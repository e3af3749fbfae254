// Private: what the communicators share — collective names for messages and argument checks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetsynth/ir/status.h"

namespace hetsynth::runtime::comm_internal {

// The collectives; values are part of the MPI communicator's call fingerprint.
enum class Op : int64_t { kAllGatherV = 1, kReduceScatterV, kAllReduce, kAllToAllV, kBroadcast, kBarrier };

inline const char* OpName(Op op) {
  switch (op) {
    case Op::kAllGatherV: return "AllGatherV";
    case Op::kReduceScatterV: return "ReduceScatterV";
    case Op::kAllReduce: return "AllReduce";
    case Op::kAllToAllV: return "AllToAllV";
    case Op::kBroadcast: return "Broadcast";
    case Op::kBarrier: return "Barrier";
  }
  return "?";
}

// "[1, 0, 3]"
inline std::string Join(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += StrCat(i ? ", " : "", v[i]);
  return s + "]";
}

// "" when counts has one non-negative entry per rank, else what is wrong.
inline std::string CheckCounts(const std::vector<int64_t>& counts, int n, const char* what) {
  if (static_cast<int>(counts.size()) != n) {
    return StrCat(what, " has ", counts.size(), " entries; expected one per rank (", n, ")");
  }
  for (int r = 0; r < n; ++r) {
    if (counts[r] < 0) return StrCat(what, "[", r, "] = ", counts[r], "; expected >= 0");
  }
  return "";
}

}  // namespace hetsynth::runtime::comm_internal
