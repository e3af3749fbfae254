// The MPI communicator: one process per rank, over a duplicate of MPI_COMM_WORLD whose errors
// are returned (MPI_ERRORS_RETURN) and turned into statuses here, where they enter our code.
//
// Before moving data, every collective agrees on its arguments: each rank contributes a small
// fingerprint (collective, implementation, hash of the counts, count, root, whether its own
// arguments were valid) to one MPI_Allgather, so mismatched calls fail on every rank alike
// instead of truncating messages or hanging.
//
// Split is MPI_Comm_split (after the same agreement); a split communicator may run on another
// thread when MPI granted MPI_THREAD_MULTIPLE, which MpiWorld asks for.
//
// A process that exits with a failure status aborts the job (MPI_Abort), so peers waiting in a
// collective of any communicator end at once instead of hanging (glibc; see AbortOnFailedExit).
//
// Reductions never use MPI_SUM (its order is unspecified): contributions are moved with
// MPI_Alltoall(v) and added here in rank order, which makes the bits equal to the threads
// communicator's and the same on every rank.
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <thread>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>

#include "absl/strings/cord.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/comm_common.h"
#include "hetsynth/runtime/host_allocator.h"

namespace hetsynth::runtime {
namespace {

std::atomic<double> g_deadline_s{kDefaultCollectiveDeadline};
constexpr int kPingTag = 7001, kPongTag = 7002;
// Point-to-point tags t are sent as kPointToPointTag + t (t < Communicator::kMaxTag), clear of the
// pings' (MPI guarantees tags up to 32767).
constexpr int kPointToPointTag = 10000;
constexpr double kPingSeconds = 2;
constexpr double kGraceSeconds = 5;
double CollectiveDeadline() { return g_deadline_s.load(); }
// Start-up (MPI_Init, which waits for the launcher to start every rank) may take seconds on a
// loaded machine, so it gets the deadline but at least 30 s.
constexpr double kMinStartupSeconds = 30;
double StartupDeadline() { return std::max(CollectiveDeadline(), kMinStartupSeconds); }

// A missed deadline already printed (one line per job): main adds nothing; the exit aborts the
// job.
absl::Status Reported(const char* what) {
  absl::Status s = absl::DeadlineExceededError(StrCat(what, " deadline (reported)"));
  s.SetPayload(kReportedPayload, absl::Cord("1"));
  return s;
}

// Between polls of a pending request: spin first, then sleep 50 µs, then 1 ms.
void PollBackoff(int64_t polls) {
  if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(polls > 100000 ? 1000 : 50));
}

using comm_internal::CheckAllGatherV;
using comm_internal::CheckAllReduce;
using comm_internal::CheckAllToAllV;
using comm_internal::CheckBroadcast;
using comm_internal::CheckReduceScatterV;
using comm_internal::FingerprintsDisagree;
using comm_internal::HashCounts;
using comm_internal::Join;
using comm_internal::Op;
using comm_internal::OpName;
using comm_internal::VSizes;

absl::Status MpiError(const char* call, int code, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  std::string what = MPI_Error_string(code, text, &len) == MPI_SUCCESS
                         ? std::string(text, len)
                         : StrCat("error code ", code);
  return absl::InternalError(StrCat("mpi: ", call, " failed (", file, ":", line, "): ", what));
}

// Calls an MPI function and returns its error as a status naming it.
#define HS_MPI(fn, ...)                                                      \
  do {                                                                       \
    const int hs_mpi_rc_ = fn(__VA_ARGS__);                                  \
    if (hs_mpi_rc_ != MPI_SUCCESS) return MpiError(#fn, hs_mpi_rc_, __FILE__, __LINE__); \
  } while (0)

// "" when every value fits MPI's int counts and displacements.
std::string CheckIntRange(int64_t largest, const char* what) {
  if (largest <= INT_MAX) return "";
  return StrCat(what, " = ", largest, " exceeds MPI's int limit ", INT_MAX,
                "; split the collective into smaller ones");
}

// Exclusive prefix sums as ints (callers have checked the range).
std::vector<int> Displacements(const std::vector<int64_t>& counts) {
  std::vector<int> d(counts.size());
  int64_t at = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    d[i] = static_cast<int>(at);
    at += counts[i];
  }
  return d;
}

std::vector<int> ToInt(const std::vector<int64_t>& v) { return std::vector<int>(v.begin(), v.end()); }

// A non-null address for zero-length buffers: one for receive buffers, another for send buffers.
// They must differ: Open MPI's nonblocking collectives (libnbc) take sendbuf == recvbuf as "in
// place", and in 4.1 an in-place MPI_Ialltoallv on a rank with nothing to move returns without
// taking a collective tag, so the next collective on the communicator hangs on every rank.
float* NonNull(float* p) {
  static float recv_dummy;
  return p ? p : &recv_dummy;
}
const float* NonNull(const float* p) {
  static const float send_dummy = 0;
  return p ? p : &send_dummy;
}

// Initializes MPI on first use and finalizes it at exit when we initialized it.
struct MpiSession {
  bool initialized_here = false;
  int provided = MPI_THREAD_SINGLE;  // the thread level MPI granted
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (initialized_here && !finalized) MPI_Finalize();
  }
};

MpiSession& Session() {
  static MpiSession session;
  return session;
}

// A process leaving with a failure status while its peers wait in a collective (of the world or
// of any split) would hang in MPI_Finalize, which waits for them; MPI_Abort ends the whole job
// instead, as a rank that dies does. Registered after MpiSession, so it runs before the
// session's MPI_Finalize.
//
// Most failures (bad input, a refused checkpoint) happen on every rank at once, and rank 0 is
// the one that prints the error line. When several ranks call MPI_Abort together, Open MPI 4.1's
// launcher prints "ORTE_ERROR_LOG: Data unpack would read past end of buffer" once per extra
// abort and names whichever rank came first; so the other ranks give rank 0 a moment to abort
// first (the job then ends with one banner naming rank 0), and abort themselves after it in case
// rank 0 is not failing.
constexpr double kAbortStaggerSeconds = 1;
void AbortOnFailedExit(int status, void*) {
  if (status == 0) return;
  int initialized = 0, finalized = 0, size = 1, rank = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size <= 1) return;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) std::this_thread::sleep_for(std::chrono::duration<double>(kAbortStaggerSeconds));
  MPI_Abort(MPI_COMM_WORLD, status);
}

// MPI_THREAD_MULTIPLE lets split communicators run on their own threads (AsyncCollectives);
// a library that grants less still serves one thread at a time, as before.
absl::Status EnsureMpi() {
  static std::mutex mu;
  MpiSession& session = Session();
  std::lock_guard<std::mutex> lock(mu);
  int finalized = 0;
  HS_MPI(MPI_Finalized, &finalized);
  if (finalized) return absl::FailedPreconditionError("mpi: MPI was already finalized");
  int initialized = 0;
  HS_MPI(MPI_Initialized, &initialized);
  if (!initialized) {
    // MPI_Init waits for every rank of the job; a rank stopped or dead before it would hang the
    // others there, where no collective deadline reaches. A watchdog ends this process at the
    // start-up deadline instead (rank 0 first and with one line, then rank 1, then the others
    // quietly); its exit ends the job.
    std::mutex wd_mu;
    std::condition_variable wd_cv;
    bool init_done = false;
    std::thread watchdog([&] {
      const char* env_rank = std::getenv("OMPI_COMM_WORLD_RANK");
      if (env_rank == nullptr) env_rank = std::getenv("PMIX_RANK");
      const int rank = env_rank != nullptr ? std::atoi(env_rank) : 0;
      const double wait = StartupDeadline() + std::min(rank, 2) * kGraceSeconds;
      std::unique_lock<std::mutex> lock(wd_mu);
      if (wd_cv.wait_for(lock, std::chrono::duration<double>(wait), [&] { return init_done; })) return;
      if (rank <= 1) {
        std::fprintf(stderr,
                     "hetsynth: error: mpi start-up (MPI_Init on rank %d): no progress in %g s (--deadline); some "
                     "rank is stopped, dead or did not start\n",
                     rank, wait);
        std::fflush(stderr);
      }
      std::_Exit(2);
    });
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &session.provided);
    {
      std::lock_guard<std::mutex> wd_lock(wd_mu);
      init_done = true;
    }
    wd_cv.notify_one();
    watchdog.join();
    if (rc != MPI_SUCCESS) return MpiError("MPI_Init_thread", rc, __FILE__, __LINE__);
    session.initialized_here = true;
#if defined(__GLIBC__)
    on_exit(AbortOnFailedExit, nullptr);  // glibc passes the exit status; elsewhere failures may hang
#endif
  } else {
    HS_MPI(MPI_Query_thread, &session.provided);
  }
  return absl::OkStatus();
}

const char* ThreadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
  }
  return "an unknown thread level";
}

class MpiComm final : public Communicator {
 public:
  MpiComm(MPI_Comm comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  absl::Status AllGatherV(const float* send, float* recv, const std::vector<int64_t>& counts,
                          CommImpl impl) override {
    const int n = size_;
    VSizes sz;
    std::string error = CheckAllGatherV(send, recv, counts, n, rank_, &sz);
    const int64_t m = sz.max, total = sz.total, mine = sz.mine, at = sz.offset;
    if (error.empty()) {
      error = CheckIntRange(impl == CommImpl::kPadded ? m : total,
                            impl == CommImpl::kPadded ? "max(counts)" : "sum(counts)");
    }
    HS_RETURN_IF_ERROR(Agree(Op::kAllGatherV, impl, counts, 0, 0, error));
    if (impl == CommImpl::kGrouped) {
      const std::vector<int> icounts = ToInt(counts), displs = Displacements(counts);
      const void* in = send == recv + at ? MPI_IN_PLACE : NonNull(send);
      HS_RETURN_IF_ERROR(Timed(Op::kAllGatherV, [&](MPI_Request* r) { return MPI_Iallgatherv(in, icounts[rank_], MPI_FLOAT, NonNull(recv), icounts.data(),
             displs.data(), MPI_FLOAT, comm_, r); }));
      return absl::OkStatus();
    }
    if (m == 0) return absl::OkStatus();
    HostVector padded(m, 0.0f), gathered(static_cast<size_t>(n) * m);
    if (mine > 0) std::memcpy(padded.data(), send, mine * sizeof(float));
    HS_RETURN_IF_ERROR(Timed(Op::kAllGatherV, [&](MPI_Request* r) { return MPI_Iallgather(padded.data(), static_cast<int>(m), MPI_FLOAT, gathered.data(),
           static_cast<int>(m), MPI_FLOAT, comm_, r); }));
    float* out = recv;
    for (int k = 0; k < n; ++k) {
      if (counts[k] > 0) std::memcpy(out, gathered.data() + k * m, counts[k] * sizeof(float));
      out += counts[k];
    }
    return absl::OkStatus();
  }

  absl::Status ReduceScatterV(const float* send, float* recv, const std::vector<int64_t>& counts,
                              CommImpl impl) override {
    const int n = size_;
    VSizes sz;
    std::string error = CheckReduceScatterV(send, recv, counts, n, rank_, &sz);
    const int64_t m = sz.max, total = sz.total, mine = sz.mine;
    if (error.empty()) {
      error = impl == CommImpl::kPadded
                  ? CheckIntRange(m, "max(counts)")
                  : CheckIntRange(std::max(total, n * m), "sum(counts) or ranks * max(counts)");
    }
    HS_RETURN_IF_ERROR(Agree(Op::kReduceScatterV, impl, counts, 0, 0, error));
    // contributions[k·stride, k·stride + mine) = rank k's segment for this rank.
    HostVector contributions;
    int64_t stride = 0;
    if (impl == CommImpl::kGrouped) {
      stride = mine;
      contributions.resize(static_cast<size_t>(n) * mine);
      const std::vector<int> scounts = ToInt(counts), sdispls = Displacements(counts);
      const std::vector<int> rcounts(n, static_cast<int>(mine));
      std::vector<int> rdispls(n);
      for (int k = 0; k < n; ++k) rdispls[k] = static_cast<int>(k * mine);
      HS_RETURN_IF_ERROR(Timed(Op::kReduceScatterV, [&](MPI_Request* r) { return MPI_Ialltoallv(NonNull(send), scounts.data(), sdispls.data(), MPI_FLOAT,
             NonNull(contributions.data()), rcounts.data(), rdispls.data(), MPI_FLOAT, comm_, r); }));
    } else {  // one equal-size all-to-all of the padded segments
      if (m == 0) return absl::OkStatus();
      stride = m;
      HostVector padded(static_cast<size_t>(n) * m, 0.0f);
      const float* in = send;
      for (int k = 0; k < n; ++k) {
        if (counts[k] > 0) std::memcpy(padded.data() + k * m, in, counts[k] * sizeof(float));
        in += counts[k];
      }
      contributions.resize(static_cast<size_t>(n) * m);
      HS_RETURN_IF_ERROR(Timed(Op::kReduceScatterV, [&](MPI_Request* r) { return MPI_Ialltoall(padded.data(), static_cast<int>(m), MPI_FLOAT, contributions.data(),
             static_cast<int>(m), MPI_FLOAT, comm_, r); }));
    }
    SumInRankOrder(contributions.data(), stride, mine, recv);
    return absl::OkStatus();
  }

  // Reduce-scatter of equal chunks (all-to-all, then the rank-order sum here) followed by an
  // all-gather of the reduced chunks: the bandwidth of a ring all-reduce, deterministic bits.
  absl::Status AllReduce(float* data, int64_t count) override {
    const int n = size_;
    std::string error = CheckAllReduce(data, count);
    const int64_t chunk = count > 0 ? (count + n - 1) / n : 0;
    if (error.empty()) error = CheckIntRange(chunk, "count / ranks");
    HS_RETURN_IF_ERROR(Agree(Op::kAllReduce, CommImpl::kGrouped, {}, count, 0, error));
    if (count == 0) return absl::OkStatus();
    HostVector padded(static_cast<size_t>(n) * chunk, 0.0f);
    std::memcpy(padded.data(), data, count * sizeof(float));
    HostVector contributions(padded.size()), reduced(chunk);
    HS_RETURN_IF_ERROR(Timed(Op::kAllReduce, [&](MPI_Request* r) { return MPI_Ialltoall(padded.data(), static_cast<int>(chunk), MPI_FLOAT, contributions.data(),
           static_cast<int>(chunk), MPI_FLOAT, comm_, r); }));
    SumInRankOrder(contributions.data(), chunk, chunk, reduced.data());
    HS_RETURN_IF_ERROR(Timed(Op::kAllReduce, [&](MPI_Request* r) { return MPI_Iallgather(reduced.data(), static_cast<int>(chunk), MPI_FLOAT, padded.data(),
           static_cast<int>(chunk), MPI_FLOAT, comm_, r); }));
    std::memcpy(data, padded.data(), count * sizeof(float));
    return absl::OkStatus();
  }

  absl::Status AllToAllV(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                         const std::vector<int64_t>& recv_counts) override {
    const int n = size_;
    int64_t nsend = 0, nrecv = 0;
    std::string error = CheckAllToAllV(send, send_counts, recv, recv_counts, n, &nsend, &nrecv);
    if (error.empty()) error = CheckIntRange(std::max(nsend, nrecv), "sum(send_counts or recv_counts)");
    HS_RETURN_IF_ERROR(Agree(Op::kAllToAllV, CommImpl::kGrouped, {}, 0, 0, error));
    // What every rank means to send here must be what this rank expects to receive.
    std::vector<int64_t> incoming(n);
    HS_RETURN_IF_ERROR(Timed(Op::kAllToAllV, [&](MPI_Request* r) { return MPI_Ialltoall(send_counts.data(), 1, MPI_INT64_T, incoming.data(), 1, MPI_INT64_T, comm_, r); }));
    std::string mismatch;
    for (int k = 0; k < n && mismatch.empty(); ++k) {
      if (incoming[k] != recv_counts[k]) {
        mismatch = StrCat("rank ", k, " sends ", incoming[k], " elements to rank ", rank_,
                          " but rank ", rank_, " expects ", recv_counts[k], " (recv_counts[", k, "])");
      }
    }
    std::vector<int> bad(n);
    const int mine_bad = mismatch.empty() ? 0 : 1;
    HS_RETURN_IF_ERROR(Timed(Op::kAllToAllV, [&](MPI_Request* r) { return MPI_Iallgather(&mine_bad, 1, MPI_INT, bad.data(), 1, MPI_INT, comm_, r); }));
    for (int k = 0; k < n; ++k) {
      if (!bad[k]) continue;
      return absl::InvalidArgumentError(StrCat(
          Where(Op::kAllToAllV), k == rank_ ? mismatch
                                             : StrCat("rank ", k, "'s recv_counts disagree with what "
                                                      "the other ranks send it (see rank ", k, ")")));
    }
    const std::vector<int> scounts = ToInt(send_counts), sdispls = Displacements(send_counts);
    const std::vector<int> rcounts = ToInt(recv_counts), rdispls = Displacements(recv_counts);
    HS_RETURN_IF_ERROR(Timed(Op::kAllToAllV, [&](MPI_Request* r) { return MPI_Ialltoallv(NonNull(send), scounts.data(), sdispls.data(), MPI_FLOAT, NonNull(recv),
           rcounts.data(), rdispls.data(), MPI_FLOAT, comm_, r); }));
    return absl::OkStatus();
  }

  absl::Status Broadcast(float* data, int64_t count, int root) override {
    const std::string error = CheckBroadcast(data, count, root, size_);
    HS_RETURN_IF_ERROR(Agree(Op::kBroadcast, CommImpl::kGrouped, {}, count, root, error));
    for (int64_t at = 0; at < count; at += INT_MAX) {  // MPI counts are ints
      const int len = static_cast<int>(std::min<int64_t>(INT_MAX, count - at));
      HS_RETURN_IF_ERROR(Timed(Op::kBroadcast, [&](MPI_Request* r) { return MPI_Ibcast(data + at, len, MPI_FLOAT, root, comm_, r); }));
    }
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    HS_RETURN_IF_ERROR(Agree(Op::kBarrier, CommImpl::kGrouped, {}, 0, 0, ""));
    return absl::OkStatus();  // the fingerprint all-gather is itself a barrier
  }

  absl::Status SendAsync(std::vector<float> data, int dest, int tag) override {
    HS_RETURN_IF_ERROR(CheckPeer("SendAsync", dest, tag, static_cast<int64_t>(data.size())));
    ReapSends();
    sends_.push_back({MPI_REQUEST_NULL, std::move(data)});
    Pending& p = sends_.back();
    const int rc = MPI_Isend(p.data.data(), static_cast<int>(p.data.size()), MPI_FLOAT, dest, kPointToPointTag + tag,
                             comm_, &p.req);
    if (rc != MPI_SUCCESS) return MpiError("SendAsync", rc, __FILE__, __LINE__);
    return absl::OkStatus();
  }

  absl::Status Recv(float* data, int64_t count, int source, int tag) override {
    HS_RETURN_IF_ERROR(CheckPeer("Recv", source, tag, count));
    return Timed(Op::kRecv, [&](MPI_Request* r) {
      return MPI_Irecv(data, static_cast<int>(count), MPI_FLOAT, source, kPointToPointTag + tag, comm_, r);
    });
  }

  absl::Status FlushSends() override {
    for (Pending& p : sends_) {
      HS_RETURN_IF_ERROR(Timed(Op::kSend, [&](MPI_Request* r) {
        *r = p.req;
        p.req = MPI_REQUEST_NULL;
        return MPI_SUCCESS;
      }));
    }
    sends_.clear();
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    HS_RETURN_IF_ERROR(Agree(Op::kSplit, CommImpl::kGrouped, {}, 0, 0, comm_internal::CheckSplit(color)));
    MPI_Comm sub = MPI_COMM_NULL;
    HS_MPI(MPI_Comm_split, comm_, color == kNoColor ? MPI_UNDEFINED : color, key, &sub);
    if (sub == MPI_COMM_NULL) return std::unique_ptr<Communicator>();
    HS_MPI(MPI_Comm_set_errhandler, sub, MPI_ERRORS_RETURN);
    int rank = 0, size = 0;
    HS_MPI(MPI_Comm_rank, sub, &rank);
    HS_MPI(MPI_Comm_size, sub, &size);
    return std::unique_ptr<Communicator>(new MpiComm(sub, rank, size));
  }

  absl::Status CheckConcurrentUse() const override {
    const int provided = Session().provided;
    if (provided >= MPI_THREAD_MULTIPLE) return absl::OkStatus();
    return absl::FailedPreconditionError(StrCat("mpi: the MPI library granted ", ThreadLevelName(provided),
                                                ", not MPI_THREAD_MULTIPLE; communicators must stay on one thread"));
  }

 private:
  struct Pending {
    MPI_Request req;
    std::vector<float> data;  // the message, kept until it is sent
  };

  absl::Status CheckPeer(const char* op, int peer, int tag, int64_t count) const {
    if (peer < 0 || peer >= size_ || peer == rank_) {
      return absl::InvalidArgumentError(StrCat("mpi ", op, ": rank ", peer, "; expected another rank in [0, ", size_, ")"));
    }
    if (tag < 0 || tag >= kMaxTag) {
      return absl::InvalidArgumentError(StrCat("mpi ", op, ": tag ", tag, "; expected 0 to ", kMaxTag - 1));
    }
    if (count < 0 || count > INT_MAX) {
      return absl::InvalidArgumentError(StrCat("mpi ", op, ": ", count, " elements; expected 0 to ", INT_MAX));
    }
    return absl::OkStatus();
  }

  // Drops the sends that have completed.
  void ReapSends() {
    while (!sends_.empty()) {
      int done = 0;
      if (MPI_Test(&sends_.front().req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done) return;
      sends_.pop_front();
    }
  }

  // out[i] = ((c₀[i] + c₁[i]) + c₂[i]) + …, where c_k = contributions + k·stride.
  void SumInRankOrder(const float* contributions, int64_t stride, int64_t len, float* out) const {
    if (len == 0) return;
    std::memcpy(out, contributions, len * sizeof(float));
    for (int k = 1; k < size_; ++k) {
      const float* in = contributions + k * stride;
      for (int64_t i = 0; i < len; ++i) out[i] += in[i];
    }
  }

  // Answers a peer's "are you alive?" (sent by a rank whose collective timed out): every rank
  // waiting in a collective answers; a stopped or dead one cannot.
  void AnswerPings() {
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kPingTag, comm_, &flag, &st) != MPI_SUCCESS || !flag) return;
    int64_t v = 0;
    MPI_Recv(&v, 1, MPI_INT64_T, st.MPI_SOURCE, kPingTag, comm_, MPI_STATUS_IGNORE);
    MPI_Send(&v, 1, MPI_INT64_T, st.MPI_SOURCE, kPongTag, comm_);
  }

  // The ranks among `ranks` that do not answer a ping within kPingSeconds.
  std::vector<int> Unresponsive(const std::vector<int>& ranks) {
    std::vector<MPI_Request> reqs(2 * ranks.size());
    std::vector<int64_t> out(ranks.size(), seq_), in(ranks.size());
    for (size_t i = 0; i < ranks.size(); ++i) {
      MPI_Isend(&out[i], 1, MPI_INT64_T, ranks[i], kPingTag, comm_, &reqs[2 * i]);
      MPI_Irecv(&in[i], 1, MPI_INT64_T, ranks[i], kPongTag, comm_, &reqs[2 * i + 1]);
    }
    std::vector<int> answered(ranks.size(), 0);
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < kPingSeconds) {
      AnswerPings();
      for (size_t i = 0; i < ranks.size(); ++i) {
        if (!answered[i]) MPI_Test(&reqs[2 * i + 1], &answered[i], MPI_STATUS_IGNORE);
      }
      if (std::all_of(answered.begin(), answered.end(), [](int a) { return a != 0; })) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::vector<int> silent;
    for (size_t i = 0; i < ranks.size(); ++i) {
      if (!answered[i]) silent.push_back(ranks[i]);
    }
    return silent;
  }

  // Starts a nonblocking collective with `start` and waits for it, answering pings, until the
  // deadline. Then rank 0 (or rank 1, when rank 0 does not answer) pings every rank, prints one
  // line naming the collective and the ranks that did not answer, and fails; its exit aborts the
  // job. The other ranks wait a grace period for that and fail quietly.
  absl::Status Timed(Op op, const std::function<int(MPI_Request*)>& start) {
    MPI_Request req = MPI_REQUEST_NULL;
    const int rc = start(&req);
    if (rc != MPI_SUCCESS) return MpiError(OpName(op), rc, __FILE__, __LINE__);
    const double deadline = CollectiveDeadline();
    const auto t0 = std::chrono::steady_clock::now();
    bool checked = false;
    for (int64_t polls = 0;; ++polls) {
      int done = 0;
      const int trc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (trc != MPI_SUCCESS) return MpiError(OpName(op), trc, __FILE__, __LINE__);
      if (done) return absl::OkStatus();
      AnswerPings();
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (waited > deadline && !checked && rank_ <= 1) {
        checked = true;
        bool report = rank_ == 0;
        if (rank_ == 1) report = !Unresponsive({0}).empty();
        if (report) {
          std::vector<int> others;
          for (int k = 0; k < size_; ++k) {
            if (k != rank_) others.push_back(k);
          }
          const std::vector<int> silent = Unresponsive(others);
          std::string list;
          for (int k : silent) list += StrCat(list.empty() ? "" : ", ", k);
          const std::string who = silent.empty()
                                      ? std::string("every rank answers, so one is stuck outside a collective")
                                      : StrCat(silent.size() == 1 ? "rank " : "ranks ", list,
                                               silent.size() == 1 ? " does" : " do", " not respond (stopped or dead)");
          std::fprintf(stderr, "hetsynth: error: mpi %s (collective #%lld): no progress in %g s (--deadline); %s\n",
                       OpName(op), static_cast<long long>(seq_), deadline, who.c_str());
          std::fflush(stderr);
          return Reported("collective");
        }
      }
      if (waited > deadline + kGraceSeconds) return Reported("collective");
      PollBackoff(polls);
    }
  }


  std::string Where(Op op) const {
    return StrCat("mpi ", OpName(op), " (collective #", seq_, ", rank ", rank_, "): ");
  }

  // One MPI_Allgather of every rank's fingerprint; fails on every rank when the calls do not
  // fit together (or some rank's own arguments are invalid: `error` non-empty).
  absl::Status Agree(Op op, CommImpl impl, const std::vector<int64_t>& counts, int64_t count,
                     int root, const std::string& error) {
    ++seq_;
    const uint64_t counts_hash = HashCounts(counts);
    constexpr int kFields = 6;
    const int64_t mine[kFields] = {static_cast<int64_t>(op), static_cast<int64_t>(impl),
                                   static_cast<int64_t>(counts_hash), count, root,
                                   error.empty() ? 0 : 1};
    std::vector<int64_t> all(static_cast<size_t>(size_) * kFields);
    HS_RETURN_IF_ERROR(Timed(op, [&](MPI_Request* r) {
      return MPI_Iallgather(mine, kFields, MPI_INT64_T, all.data(), kFields, MPI_INT64_T, comm_, r);
    }));
    auto field = [&](int r, int f) { return all[r * kFields + f]; };
    const std::string why = FingerprintsDisagree(size_, rank_, field, error, counts, "; every rank must use the same");
    if (why.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(StrCat(Where(op), why));
  }

  std::deque<Pending> sends_;  // SendAsync's messages under way, oldest first
  MPI_Comm comm_;
  const int rank_;
  const int size_;
  int64_t seq_ = 0;  // collectives called so far, for messages
};

}  // namespace

bool MpiAvailable() { return true; }

void SetCollectiveDeadline(double seconds) { g_deadline_s.store(seconds); }

absl::StatusOr<std::unique_ptr<Communicator>> MpiWorld() {
  HS_RETURN_IF_ERROR(EnsureMpi());
  int rank = 0, size = 0;
  HS_MPI(MPI_Comm_rank, MPI_COMM_WORLD, &rank);
  HS_MPI(MPI_Comm_size, MPI_COMM_WORLD, &size);
  // The world's own communicator, duplicated without blocking so that a rank stopped or dead
  // before its first collective ends the job at the deadline rather than hanging it: rank 0
  // prints one line, the others fail quietly after the grace period (no pings yet: the ranks
  // that answer them are the ones waiting here).
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Request req = MPI_REQUEST_NULL;
  HS_MPI(MPI_Comm_idup, MPI_COMM_WORLD, &comm, &req);
  const double deadline = CollectiveDeadline();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t polls = 0;; ++polls) {
    int done = 0;
    HS_MPI(MPI_Test, &req, &done, MPI_STATUS_IGNORE);
    if (done) break;
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (waited > deadline + (rank == 0 ? 0 : kGraceSeconds)) {
      if (rank == 0) {
        std::fprintf(stderr,
                     "hetsynth: error: mpi start-up (duplicating the world communicator of %d ranks): no progress in "
                     "%g s (--deadline); some rank is stopped, dead or did not start\n",
                     size, deadline);
        std::fflush(stderr);
      }
      return Reported("mpi start-up");
    }
    PollBackoff(polls);
  }
  HS_MPI(MPI_Comm_set_errhandler, comm, MPI_ERRORS_RETURN);
  return std::unique_ptr<Communicator>(new MpiComm(comm, rank, size));
}

}  // namespace hetsynth::runtime
