// For implementations of Communicator only (threads and MPI here; NCCL and the device
// communicator in the CUDA backend): what they share — collective names for messages and
// argument checks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <numeric>
#include <string>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"

namespace hetsynth::runtime::comm_internal {

// The collectives; values are part of the MPI communicator's call fingerprint.
enum class Op : int64_t { kAllGatherV = 1, kReduceScatterV, kAllReduce, kAllToAllV, kBroadcast, kBarrier, kSplit, kSend, kRecv };

inline const char* OpName(Op op) {
  switch (op) {
    case Op::kAllGatherV: return "AllGatherV";
    case Op::kReduceScatterV: return "ReduceScatterV";
    case Op::kAllReduce: return "AllReduce";
    case Op::kAllToAllV: return "AllToAllV";
    case Op::kBroadcast: return "Broadcast";
    case Op::kBarrier: return "Barrier";
    case Op::kSplit: return "Split";
    case Op::kSend: return "Send";
    case Op::kRecv: return "Recv";
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

inline int64_t Sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

// v[0] + … + v[upto - 1].
inline int64_t Offset(const std::vector<int64_t>& v, int upto) {
  return std::accumulate(v.begin(), v.begin() + upto, int64_t{0});
}

// Whether [a, a + na) and [b, b + nb) share an element.
inline bool Overlap(const float* a, int64_t na, const float* b, int64_t nb) {
  if (na == 0 || nb == 0) return false;
  std::less<const float*> lt;
  return lt(a, b + nb) && lt(b, a + na);
}

// FNV-1a over the values' bytes: the counts in a call's fingerprint.
inline uint64_t HashCounts(const std::vector<int64_t>& v) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t x : v) {
    for (int b = 0; b < 8; ++b) {
      h ^= static_cast<uint64_t>(x >> (8 * b)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  return h;
}

// out[i] = ((in[0][i] + in[1][i]) + in[2][i]) + … in float, k >= 1 inputs of len elements;
// out may alias in[0] but no other input. Rank by rank over the whole length (the order of
// each element's additions is what fixes the bits; this loop order vectorizes).
inline void SumInRankOrder(const float* const* in, int k, float* out, int64_t len) {
  if (len <= 0) return;
  if (out != in[0]) std::copy(in[0], in[0] + len, out);
  for (int r = 1; r < k; ++r) {
    const float* x = in[r];
    for (int64_t i = 0; i < len; ++i) out[i] += x[i];
  }
}

// Split's argument check: "" or what is wrong with the color.
inline std::string CheckSplit(int color) {
  if (color >= 0 || color == Communicator::kNoColor) return "";
  return StrCat("color = ", color, "; expected >= 0, or kNoColor (-1) for no sub-communicator");
}

// The argument checks one rank can make alone: "" when its arguments are valid, else what is
// wrong (the last failed check when several fail).

// What a variable-count collective (AllGatherV, ReduceScatterV) moves on one rank.
struct VSizes {
  int64_t max = 0;     // max(counts)
  int64_t total = 0;   // sum(counts)
  int64_t mine = 0;    // counts[rank]
  int64_t offset = 0;  // counts[0] + … + counts[rank - 1]
};

// CheckCounts, then (when the counts are valid) the sizes they give this rank.
inline std::string CheckCountsSizes(const std::vector<int64_t>& counts, int n, int rank, VSizes& sizes) {
  std::string error = CheckCounts(counts, n, "counts");
  if (!error.empty()) return error;
  sizes.max = *std::max_element(counts.begin(), counts.end());
  sizes.total = Sum(counts);
  sizes.mine = counts[rank];
  sizes.offset = Offset(counts, rank);
  return error;
}

// AllGatherV: send holds counts[rank] elements, recv sum(counts); send may be exactly in place.
// *sizes (when given) is filled when the counts are valid, left as it was otherwise; the same
// for ReduceScatterV.
inline std::string CheckAllGatherV(const float* send, const float* recv, const std::vector<int64_t>& counts, int n,
                                   int rank, VSizes* sizes = nullptr) {
  VSizes s;
  std::string error = CheckCountsSizes(counts, n, rank, s);
  if (!error.empty()) return error;
  if (sizes != nullptr) *sizes = s;
  const float* in_place = recv ? recv + s.offset : nullptr;
  if (s.mine > 0 && send == nullptr) error = "send is null but counts[rank] > 0";
  if (s.total > 0 && recv == nullptr) error = "recv is null but the counts sum to > 0";
  if (error.empty() && send != in_place && Overlap(send, s.mine, recv, s.total)) {
    error = "send overlaps recv (only exactly in place, at recv + offset of this rank, is allowed)";
  }
  return error;
}

// ReduceScatterV: send holds sum(counts) elements, recv counts[rank].
inline std::string CheckReduceScatterV(const float* send, const float* recv, const std::vector<int64_t>& counts,
                                       int n, int rank, VSizes* sizes = nullptr) {
  VSizes s;
  std::string error = CheckCountsSizes(counts, n, rank, s);
  if (!error.empty()) return error;
  if (sizes != nullptr) *sizes = s;
  if (s.total > 0 && send == nullptr) error = "send is null but the counts sum to > 0";
  if (s.mine > 0 && recv == nullptr) error = "recv is null but counts[rank] > 0";
  if (error.empty() && Overlap(send, s.total, recv, s.mine)) error = "send overlaps recv";
  return error;
}

inline std::string CheckAllReduce(const float* data, int64_t count) {
  std::string error;
  if (count < 0) error = StrCat("count = ", count, "; expected >= 0");
  if (count > 0 && data == nullptr) error = "data is null but count > 0";
  return error;
}

// AllToAllV: send holds sum(send_counts) elements, recv sum(recv_counts). *nsend and *nrecv
// (when given) are set to those sums when the counts are valid, left as they were otherwise.
inline std::string CheckAllToAllV(const float* send, const std::vector<int64_t>& send_counts, const float* recv,
                                  const std::vector<int64_t>& recv_counts, int n, int64_t* nsend = nullptr,
                                  int64_t* nrecv = nullptr) {
  std::string error = CheckCounts(send_counts, n, "send_counts");
  if (error.empty()) error = CheckCounts(recv_counts, n, "recv_counts");
  if (!error.empty()) return error;
  const int64_t ns = Sum(send_counts), nr = Sum(recv_counts);
  if (nsend != nullptr) *nsend = ns;
  if (nrecv != nullptr) *nrecv = nr;
  if (ns > 0 && send == nullptr) error = "send is null but send_counts sum to > 0";
  if (nr > 0 && recv == nullptr) error = "recv is null but recv_counts sum to > 0";
  if (error.empty() && Overlap(send, ns, recv, nr)) error = "send overlaps recv";
  return error;
}

inline std::string CheckBroadcast(const float* data, int64_t count, int root, int n) {
  std::string error = CheckAllReduce(data, count);
  if (root < 0 || root >= n) error = StrCat("root = ", root, "; expected a rank in [0, ", n, ")");
  return error;
}

// Why the ranks' calls do not fit together; "" when they do. For the in-process communicators,
// where every rank sees every rank's call (one per rank, in rank order): each with op, impl,
// counts (AllToAllV: send counts), recv_counts, count and root. Own argument errors are checked
// before, by the caller.
template <class Call>
std::string CallsDisagree(const std::vector<Call>& calls) {
  const int n = static_cast<int>(calls.size());
  const Call& c0 = calls[0];
  const bool v = c0.op == Op::kAllGatherV || c0.op == Op::kReduceScatterV;
  for (int r = 1; r < n; ++r) {
    const Call& c = calls[r];
    if (c.op != c0.op) {
      return StrCat("rank 0 called ", OpName(c0.op), " but rank ", r, " called ", OpName(c.op),
                    "; every rank must call the same collectives in the same order");
    }
    if (v && c.counts != c0.counts) {
      return StrCat("rank ", r, " passed counts ", Join(c.counts), " but rank 0 passed ", Join(c0.counts),
                    "; every rank must pass the same counts");
    }
    if (v && c.impl != c0.impl) {
      return StrCat("rank ", r, " asked for ", CommImplName(c.impl), " but rank 0 for ", CommImplName(c0.impl),
                    "; every rank must use the same implementation");
    }
    if ((c0.op == Op::kAllReduce || c0.op == Op::kBroadcast) && c.count != c0.count) {
      return StrCat("rank ", r, " passed count ", c.count, " but rank 0 passed ", c0.count,
                    "; every rank must pass the same count");
    }
    if (c0.op == Op::kBroadcast && c.root != c0.root) {
      return StrCat("rank ", r, " passed root ", c.root, " but rank 0 passed ", c0.root,
                    "; every rank must pass the same root");
    }
  }
  if (c0.op == Op::kAllToAllV) {
    for (int j = 0; j < n; ++j) {
      for (int k = 0; k < n; ++k) {
        if (calls[j].counts[k] != calls[k].recv_counts[j]) {
          return StrCat("rank ", j, " sends ", calls[j].counts[k], " elements to rank ", k, " (send_counts[", k,
                        "]) but rank ", k, " expects ", calls[k].recv_counts[j], " (recv_counts[", j, "])");
        }
      }
    }
  }
  return "";
}

// The fields of a call's fingerprint, for the communicators that agree on their arguments by
// all-gathering one per rank (MPI, NCCL); those may append more.
enum Field : int { kFieldOp, kFieldImpl, kFieldCountsHash, kFieldCount, kFieldRoot, kFieldInvalid };

// Why the ranks' fingerprints do not fit together; "" when they do. field(r, f): rank r's
// field f. error: this rank's own argument error (non-empty where its kFieldInvalid is set);
// counts: its counts, for the message; impl_tail ends the message on differing implementations.
template <class FieldOf>
std::string FingerprintsDisagree(int n, int rank, const FieldOf& field, const std::string& error,
                                 const std::vector<int64_t>& counts, const char* impl_tail) {
  for (int r = 0; r < n; ++r) {
    if (field(r, kFieldInvalid) == 0) continue;
    return r == rank ? error : StrCat("rank ", r, " passed invalid arguments (its own error says which)");
  }
  for (int r = 1; r < n; ++r) {
    const Op op0 = static_cast<Op>(field(0, kFieldOp)), opr = static_cast<Op>(field(r, kFieldOp));
    if (opr != op0) {
      return StrCat("rank 0 called ", OpName(op0), " but rank ", r, " called ", OpName(opr),
                    "; every rank must call the same collectives in the same order");
    } else if (field(r, kFieldCountsHash) != field(0, kFieldCountsHash)) {
      return StrCat("rank ", r, " passed other counts than rank 0 (this rank: ", Join(counts),
                    "); every rank must pass the same counts");
    } else if (field(r, kFieldImpl) != field(0, kFieldImpl)) {
      return StrCat("rank ", r, " and rank 0 asked for different implementations (padded vs grouped)", impl_tail);
    } else if (field(r, kFieldCount) != field(0, kFieldCount)) {
      return StrCat("rank ", r, " passed count ", field(r, kFieldCount), " but rank 0 passed ", field(0, kFieldCount),
                    "; every rank must pass the same count");
    } else if (field(r, kFieldRoot) != field(0, kFieldRoot)) {
      return StrCat("rank ", r, " passed root ", field(r, kFieldRoot), " but rank 0 passed ", field(0, kFieldRoot),
                    "; every rank must pass the same root");
    }
  }
  return "";
}

// Which memory a call's buffers are in (the GPU communicators; the values are part of the NCCL
// communicator's call fingerprint).
enum class Mem : int64_t { kNone, kHost, kDevice, kMixed };

struct Buffer {
  const void* p;
  int64_t n;  // elements; empty buffers are not looked at
};

// is_device: whether a pointer is device memory (gpu::IsDeviceMemory).
inline Mem ClassifyMemory(std::initializer_list<Buffer> buffers, bool (*is_device)(const void*)) {
  Mem m = Mem::kNone;
  for (const Buffer& b : buffers) {
    if (b.p == nullptr || b.n <= 0) continue;
    const Mem k = is_device(b.p) ? Mem::kDevice : Mem::kHost;
    if (m == Mem::kNone) m = k;
    if (m != k) return Mem::kMixed;
  }
  return m;
}

}  // namespace hetsynth::runtime::comm_internal
