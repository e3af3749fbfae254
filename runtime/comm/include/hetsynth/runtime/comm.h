// Communicators: the collectives a synthesized plan names (all-gather and reduce-scatter, each
// padded or grouped; all-reduce; all-to-all), plus broadcast and barrier, over ranks that hold
// uneven — possibly zero-length — shards. Two implementations share one interface: in-process
// threads (tests, the embedded default; buffers are exchanged by pointer through shared memory)
// and MPI (one process per rank, launched with mpirun or Slurm).
//
// Split makes sub-communicators (the ranks of one node; the same-position devices of every node;
// a second communicator for a communication thread) with the same checks and failure behaviour;
// mesh_collectives.h builds hierarchical collectives on them, async_collectives.h runs
// collectives on a communication thread.
//
// Every rank calls the same collectives in the same order with the same counts. Arguments are
// checked on every call and across ranks: a bad or mismatched argument on any rank makes the
// call fail on every rank with the same kind of error, instead of corrupting memory or hanging.
//
// Sums are deterministic: each element is reduced in rank order, accumulating in float
// (((x₀ + x₁) + x₂) + …), so AllReduce and ReduceScatterV give identical bits on every rank,
// for both implementations, and for threads and MPI alike.
//
//   absl::Status s = RunThreadRanks(4, [&](Communicator& comm) -> absl::Status {
//     std::vector<int64_t> counts = {3, 0, 5, 2};                 // rank r holds counts[r]
//     std::vector<float> shard(counts[comm.rank()]), full(10);
//     HS_RETURN_IF_ERROR(comm.AllGatherV(shard.data(), full.data(), counts, CommImpl::kGrouped));
//     return comm.AllReduce(full.data(), full.size());
//   });
//
//   // Ranks 0, 1 and ranks 2, 3 as two communicators of two ranks each.
//   HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> half, comm.Split(comm.rank() / 2, comm.rank()));
//
//   // Under mpirun: one communicator over MPI_COMM_WORLD per process.
//   HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm, MpiWorld());
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace hetsynth::runtime {

// How uneven all-gather / reduce-scatter move data (docs/instructions.md):
//   kPadded  — every shard padded to max(counts), one regular equal-size collective, then unpadded;
//   kGrouped — true sizes (MPI_Allgatherv / MPI_Alltoallv; threads copy straight from the
//              other ranks' buffers).
// Both give the same bits; they differ only in cost.
enum class CommImpl : uint8_t { kPadded, kGrouped };

// "padded" or "grouped".
const char* CommImplName(CommImpl impl);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;               // 0 <= rank() < size()
  virtual int size() const = 0;               // number of ranks
  virtual std::string name() const = 0;       // "threads" or "mpi"

  // counts[r] = elements held by rank r (zeros allowed; size() entries, the same on every rank).
  // send: counts[rank()] elements. recv: Σ counts elements = the ranks' send buffers
  // concatenated in rank order.
  virtual absl::Status AllGatherV(const float* send, float* recv,
                                  const std::vector<int64_t>& counts, CommImpl impl) = 0;

  // send: Σ counts elements on every rank, segment r (counts[r] elements, in rank order) meant
  // for rank r. recv: counts[rank()] elements = the rank-order sum over ranks of this rank's
  // segment. send and recv must not overlap.
  virtual absl::Status ReduceScatterV(const float* send, float* recv,
                                      const std::vector<int64_t>& counts, CommImpl impl) = 0;

  // Elementwise rank-order sum of `count` elements, in place; the same count on every rank.
  virtual absl::Status AllReduce(float* data, int64_t count) = 0;

  // send_counts[r]: elements this rank sends to rank r (consecutive in send, in rank order);
  // recv_counts[r]: elements received from rank r (consecutive in recv, in rank order).
  // Rank j's send_counts[k] must equal rank k's recv_counts[j]. send and recv must not overlap.
  virtual absl::Status AllToAllV(const float* send, const std::vector<int64_t>& send_counts,
                                 float* recv, const std::vector<int64_t>& recv_counts) = 0;

  // Copies root's `count` elements into every other rank's `data`.
  virtual absl::Status Broadcast(float* data, int64_t count, int root) = 0;

  virtual absl::Status Barrier() = 0;

  // Point-to-point, for an inference placement's activations (not collective: only the two ranks
  // take part). SendAsync takes the data and returns at once; the transfer completes in the
  // background, and FlushSends waits for every one still under way. Recv blocks until the message
  // with `tag` (0 <= tag < kMaxTag) from `source` has arrived; it must hold `count` elements.
  // Messages from one source with one tag arrive in the order they were sent. The base class
  // answers Unimplemented: in-process ranks exchange activations by pointer instead
  // (runtime/infer.h).
  static constexpr int kMaxTag = 20000;
  virtual absl::Status SendAsync(std::vector<float> data, int dest, int tag);
  virtual absl::Status Recv(float* data, int64_t count, int source, int tag);
  virtual absl::Status FlushSends();

  // Split's color for a rank that joins no sub-communicator.
  static constexpr int kNoColor = -1;

  // Splits the ranks into disjoint sub-communicators, like MPI_Comm_split: the ranks passing the
  // same color (>= 0) form one, ranked by (key, rank here); a rank passing kNoColor gets nullptr.
  // Collective: every rank calls it, in order with its other collectives. A sub-communicator is
  // independent of its parent (its own sequence of collectives; it may run them on another
  // thread when CheckConcurrentUse() is OK) and fails like it: bad or mismatched arguments fail
  // on every rank of it; for in-process ranks a rank that fails or returns aborts the collectives
  // its peers wait in — in every communicator it belongs to — and waits have the parent's
  // deadline. It may outlive its parent. Unimplemented for communicators that cannot split.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key);

  // OK when a communicator made by Split may run collectives on another thread while this one
  // (or another split) runs its own — what AsyncCollectives needs to overlap; otherwise
  // FailedPrecondition saying why (e.g. MPI without MPI_THREAD_MULTIPLE).
  virtual absl::Status CheckConcurrentUse() const;
};

// Runs fn(comm) on n threads, one in-process communicator each, and joins them all. Returns OK
// when every rank returned OK, else the first failure in time (the cause; later failures of the
// other ranks are its consequences). When a rank fails or returns while the others still wait
// in a collective, their collectives fail at once (Aborted) instead of hanging; a collective that
// waits longer than `timeout_s` seconds for the other ranks fails with DeadlineExceeded and
// aborts the rest. n must be >= 1 and timeout_s > 0.
absl::Status RunThreadRanks(int n, const std::function<absl::Status(Communicator&)>& fn,
                            double timeout_s = 120);

// The deadline of every MPI collective, in seconds (train --deadline): a collective that makes
// no progress for this long ends the job with one line naming it and, when known, the ranks
// that never reached it (a stopped, dead or stuck process). Set before MpiWorld.
inline constexpr double kDefaultCollectiveDeadline = 300;
// The payload of a failure that was already printed (main prints nothing more).
inline constexpr char kReportedPayload[] = "hetsynth/reported";
void SetCollectiveDeadline(double seconds);

// Whether this build includes the MPI communicator (MPI found at configure time).
bool MpiAvailable();

// The communicator over MPI_COMM_WORLD (a duplicate of it, so user traffic on the world
// communicator cannot interleave with ours). Calls MPI_Init_thread asking for
// MPI_THREAD_MULTIPLE when MPI is not yet initialized, and then MPI_Finalize at program exit.
// MPI errors are returned, not fatal: statuses name the MPI call and carry MPI_Error_string.
// FailedPrecondition in a build without MPI. Collective: every process calls it. Use each
// communicator from one thread at a time; split communicators may run on different threads
// when the library granted MPI_THREAD_MULTIPLE (CheckConcurrentUse says whether it did).
// Run one process per rank (`mpirun -np 4 prog`); alone, it is a world of one.
absl::StatusOr<std::unique_ptr<Communicator>> MpiWorld();

}  // namespace hetsynth::runtime
