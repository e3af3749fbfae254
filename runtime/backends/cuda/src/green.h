// CUDA green contexts: one GPU's SMs split into disjoint partitions, one stream each, for the
// virtual devices of RunVirtualGpus (gpu_comm.h).
//
// The driver splits a device's SMs only into groups of a fixed size (cuDevSmResourceSplitByCount:
// e.g. 8 co-scheduled SMs on compute capability 9.0, 4 on 8.x — the device reports its minimum,
// and the split may leave SMs over); a green context may hold several groups of one split
// (cuDevResourceGenerateDesc over several results). Virtual device r gets ApportionSmGroups'
// number of consecutive groups. The driver API is reached through
// cudaGetDriverEntryPointByVersion — libcuda is never linked, so binaries load without a driver.
//
// Kernels, copies and cuBLAS calls issued on a green context's stream run on its SMs: stream
// APIs take their context from the stream, so the green context need not be current (the
// thread keeps the device's primary context, made current by cudaSetDevice, for allocations and
// events, which are device-wide).
//
//   HS_ASSIGN_OR_RETURN(std::unique_ptr<GreenContexts> g,
//                       GreenContexts::Create(/*device=*/0, {4, 4, 2, 1}, /*fine_grained=*/false));
//   // g->stream(r): a cudaStream_t on g->sm_count(r) SMs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/base/status.h"

namespace hetsynth::runtime::gpu {

// "" when speeds are 1 to max_n positive finite numbers, else what is wrong.
inline std::string CheckSpeeds(const std::vector<double>& speeds, int max_n) {
  if (speeds.empty()) return "speeds is empty; expected one positive speed per virtual device";
  if (static_cast<int>(speeds.size()) > max_n) {
    return StrCat("speeds has ", speeds.size(), " entries; at most ", max_n, " virtual devices are supported");
  }
  for (size_t i = 0; i < speeds.size(); ++i) {
    if (!(speeds[i] > 0) || !std::isfinite(speeds[i])) {
      return StrCat("speeds[", i, "] = ", speeds[i], "; expected a positive finite number");
    }
  }
  return "";
}

// How many of `groups` equal SM groups each virtual device gets: proportional to speeds
// (largest remainders; ties go to the lower rank), at least one each, all groups used.
// InvalidArgument for bad speeds; FailedPrecondition when there are fewer groups than devices.
//   ApportionSmGroups({4, 4, 2, 1}, 16) == {6, 6, 3, 1}     (H100: 16 groups of 8 SMs)
inline absl::StatusOr<std::vector<int>> ApportionSmGroups(const std::vector<double>& speeds, int groups) {
  const std::string bad = CheckSpeeds(speeds, 1 << 20);
  if (!bad.empty()) return absl::InvalidArgumentError(bad);
  const int n = static_cast<int>(speeds.size());
  if (groups < n) {
    return absl::FailedPreconditionError(
        StrCat("the device splits into ", groups, " SM groups, fewer than the ", n,
               " virtual devices; use fewer virtual devices, a finer split, or plain streams"));
  }
  double total = 0;
  for (double s : speeds) total += s;
  std::vector<double> quota(n);
  std::vector<int> share(n);
  int64_t used = 0;
  for (int r = 0; r < n; ++r) {
    quota[r] = groups * (speeds[r] / total);
    share[r] = std::max(1, static_cast<int>(std::floor(quota[r])));
    used += share[r];
  }
  while (used > groups) {  // the minimum of one group pushed the sum over: take from the most over
    int pick = -1;
    for (int r = 0; r < n; ++r) {
      if (share[r] > 1 && (pick < 0 || share[r] - quota[r] > share[pick] - quota[pick])) pick = r;
    }
    --share[pick];
    --used;
  }
  while (used < groups) {  // largest remainder first
    int pick = 0;
    for (int r = 1; r < n; ++r) {
      if (quota[r] - share[r] > quota[pick] - share[pick]) pick = r;
    }
    ++share[pick];
    ++used;
  }
  return share;
}

// Green contexts on one device, one per virtual device, each with one non-blocking stream.
// Destroying it destroys the streams and contexts (synchronize the streams first).
class GreenContexts {
 public:
  // FailedPrecondition when the driver has no green contexts (they need a CUDA 12.4 driver;
  // their streams 12.5) or the device has fewer SM groups than speeds has entries.
  static absl::StatusOr<std::unique_ptr<GreenContexts>> Create(int device, const std::vector<double>& speeds,
                                                               bool fine_grained);
  ~GreenContexts();
  GreenContexts(const GreenContexts&) = delete;
  GreenContexts& operator=(const GreenContexts&) = delete;

  int size() const { return static_cast<int>(streams_.size()); }
  void* stream(int r) const { return streams_[r]; }  // a cudaStream_t (CUstream)
  int sm_count(int r) const { return sm_counts_[r]; }
  const std::vector<int>& sm_counts() const { return sm_counts_; }
  int device_sms() const { return device_sms_; }
  int group_sms() const { return group_sms_; }  // SMs in one group of the split
  int groups() const { return groups_; }        // groups the split produced

 private:
  GreenContexts() = default;
  std::vector<void*> contexts_;  // CUgreenCtx
  std::vector<void*> streams_;   // CUstream
  std::vector<int> sm_counts_;
  int device_sms_ = 0, group_sms_ = 0, groups_ = 0;
};

}  // namespace hetsynth::runtime::gpu
