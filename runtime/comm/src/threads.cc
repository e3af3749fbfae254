// The in-process communicator: one thread per rank, buffers exchanged by pointer.
//
// Every collective is a sequence of phases separated by a shared generation-counted barrier:
//   1. each rank publishes what it was called with (its Call: op, counts, buffer pointers) and
//      waits for the others;
//   2. every rank checks that all Calls agree (the same verdict everywhere, as every rank reads
//      the same Calls), then reads the other ranks' buffers and writes only its own;
//   3. a closing barrier keeps every published buffer alive until nobody reads it any more.
// Waiting is on a condition variable (no spinning), with a deadline, and ends early when another
// rank has failed or returned: its collectives can then never complete.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "hetsynth/ir/status.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/comm_common.h"

namespace hetsynth::runtime {

const char* CommImplName(CommImpl impl) {
  return impl == CommImpl::kPadded ? "padded" : "grouped";
}

namespace {

using comm_internal::CallsDisagree;
using comm_internal::CheckAllGatherV;
using comm_internal::CheckAllReduce;
using comm_internal::CheckAllToAllV;
using comm_internal::CheckBroadcast;
using comm_internal::CheckReduceScatterV;
using comm_internal::Join;
using comm_internal::Offset;
using comm_internal::Op;
using comm_internal::OpName;
using comm_internal::VSizes;

// What one rank passed to the current collective. Written by its owner before the opening
// barrier, read by every rank between the opening and the closing barrier.
struct Call {
  Op op = Op::kBarrier;
  CommImpl impl = CommImpl::kGrouped;
  std::vector<int64_t> counts;       // AllGatherV / ReduceScatterV counts; AllToAllV send counts
  std::vector<int64_t> recv_counts;  // AllToAllV
  int64_t count = 0;                 // AllReduce / Broadcast elements
  int root = 0;                      // Broadcast
  std::string error;                 // non-empty: this rank's own arguments are invalid
  const float* send = nullptr;       // the rank's input (AllReduce / Broadcast: its data)
  const float* scratch = nullptr;    // the rank's staging buffer (padded shards, partial sums)
};

// The state all ranks share: the barrier, the published Calls, and how the run is going.
class SharedState {
 public:
  SharedState(int n, double timeout_s)
      : n_(n), timeout_(std::chrono::duration<double>(timeout_s)), calls_(n), arrived_in_(n, -1), reading_(n, false) {}

  int n() const { return n_; }
  Call& call(int rank) { return calls_[rank]; }
  const std::vector<Call>& calls() const { return calls_; }

  // Waits until every rank has arrived. Fails (and aborts the run) when another rank failed or
  // returned, or after the timeout; before failing it waits for the ranks still reading the
  // buffers published in this collective. `opens_reads`: the barrier starts a phase in which
  // ranks read each other's buffers (it lasts until each rank's next Arrive).
  absl::Status Arrive(int rank, bool opens_reads, const char* what, int64_t seq) {
    std::unique_lock<std::mutex> lock(mu_);
    StopReadingLocked(rank);
    const int64_t gen = generation_;
    if (!aborted_ && departed_.empty()) {
      arrived_in_[rank] = gen;
      if (++arrived_ == n_) {
        arrived_ = 0;
        ++generation_;
        if (opens_reads) {
          std::fill(reading_.begin(), reading_.end(), true);
          readers_ = n_;
        }
        cv_.notify_all();
        return absl::OkStatus();
      }
      const auto deadline = std::chrono::steady_clock::now() +
                            std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout_);
      while (generation_ == gen && !aborted_ && departed_.empty()) {
        if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && generation_ == gen &&
            !aborted_) {
          std::vector<int64_t> missing;
          for (int r = 0; r < n_; ++r) {
            if (arrived_in_[r] != gen) missing.push_back(r);
          }
          AbortLocked(absl::DeadlineExceededError(StrCat(
              "threads: rank ", rank, " waited more than ", timeout_.count(), " s in ", what,
              " (collective #", seq, ") for ranks ", Join(missing),
              "; a rank is stuck or skipped a collective (raise RunThreadRanks' timeout_s if it "
              "is just slow)")));
        }
      }
      if (generation_ != gen) return absl::OkStatus();
    }
    if (!aborted_) {  // a rank returned while this barrier still needed it
      const int r = departed_.front();
      AbortLocked(absl::AbortedError(StrCat("threads: rank ", r, " returned while rank ", rank,
                                            " waited in ", what, " (collective #", seq,
                                            "); every rank must call the same collectives")));
    }
    cv_.wait(lock, [&] { return readers_ == 0; });
    if (abort_reason_.code() == absl::StatusCode::kDeadlineExceeded ||
        abort_reason_.code() == absl::StatusCode::kAborted) {
      return abort_reason_;
    }
    return absl::AbortedError(StrCat("threads: rank ", rank, " gave up in ", what, " (collective #",
                                     seq, ") because another rank failed: ",
                                     abort_reason_.ToString()));
  }

  // Called once per rank when its function returns.
  void Depart(int rank, const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    StopReadingLocked(rank);
    if (!status.ok()) {
      AbortLocked(status);
    } else {
      departed_.push_back(rank);
      cv_.notify_all();
    }
  }

  absl::Status first_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_error_;
  }

 private:
  void StopReadingLocked(int rank) {
    if (!reading_[rank]) return;
    reading_[rank] = false;
    if (--readers_ == 0) cv_.notify_all();
  }

  void AbortLocked(const absl::Status& reason) {
    if (first_error_.ok()) first_error_ = reason;
    if (!aborted_) {
      aborted_ = true;
      abort_reason_ = reason;
    }
    cv_.notify_all();
  }

  const int n_;
  const std::chrono::duration<double> timeout_;
  std::vector<Call> calls_;  // calls_[r] is written only by rank r

  std::mutex mu_;
  std::condition_variable cv_;
  int64_t generation_ = 0;          // completed barriers
  int arrived_ = 0;                 // ranks waiting in the current barrier
  std::vector<int64_t> arrived_in_;  // per rank: the generation it last arrived in
  std::vector<bool> reading_;       // per rank: may be reading other ranks' buffers
  int readers_ = 0;                 // ranks with reading_ set
  std::vector<int> departed_;       // ranks whose function returned OK
  bool aborted_ = false;
  absl::Status abort_reason_;
  absl::Status first_error_;
};

class ThreadComm final : public Communicator {
 public:
  ThreadComm(SharedState* state, int rank) : state_(state), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return state_->n(); }
  std::string name() const override { return "threads"; }

  absl::Status AllGatherV(const float* send, float* recv, const std::vector<int64_t>& counts,
                          CommImpl impl) override {
    const int n = size();
    Call call;
    call.op = Op::kAllGatherV;
    call.impl = impl;
    call.counts = counts;
    call.send = send;
    VSizes sz;
    call.error = CheckAllGatherV(send, recv, counts, n, rank_, &sz);
    const int64_t m = sz.max, mine = sz.mine;
    if (call.error.empty() && impl == CommImpl::kPadded) {
      scratch_.assign(m, 0.0f);
      if (mine > 0) std::memcpy(scratch_.data(), send, mine * sizeof(float));
      call.scratch = scratch_.data();
    }
    HS_RETURN_IF_ERROR(Enter(std::move(call)));
    const std::vector<Call>& calls = state_->calls();
    if (impl == CommImpl::kGrouped) {
      float* out = recv;
      for (int k = 0; k < n; ++k) {
        if (counts[k] > 0 && calls[k].send != out) {
          std::memcpy(out, calls[k].send, counts[k] * sizeof(float));
        }
        out += counts[k];
      }
    } else {  // one equal-size all-gather of the padded shards, then unpadding
      staging_.resize(static_cast<size_t>(n) * m);
      for (int k = 0; k < n && m > 0; ++k) {
        std::memcpy(staging_.data() + k * m, calls[k].scratch, m * sizeof(float));
      }
    }
    HS_RETURN_IF_ERROR(Leave());
    if (impl == CommImpl::kPadded) {
      float* out = recv;
      for (int k = 0; k < n; ++k) {
        if (counts[k] > 0) std::memcpy(out, staging_.data() + k * m, counts[k] * sizeof(float));
        out += counts[k];
      }
    }
    return absl::OkStatus();
  }

  absl::Status ReduceScatterV(const float* send, float* recv, const std::vector<int64_t>& counts,
                              CommImpl impl) override {
    const int n = size();
    Call call;
    call.op = Op::kReduceScatterV;
    call.impl = impl;
    call.counts = counts;
    call.send = send;
    VSizes sz;
    call.error = CheckReduceScatterV(send, recv, counts, n, rank_, &sz);
    const int64_t m = sz.max, mine = sz.mine;
    if (call.error.empty() && impl == CommImpl::kPadded) {
      scratch_.assign(static_cast<size_t>(n) * m, 0.0f);
      const float* in = send;
      for (int k = 0; k < n; ++k) {
        if (counts[k] > 0) std::memcpy(scratch_.data() + k * m, in, counts[k] * sizeof(float));
        in += counts[k];
      }
      call.scratch = scratch_.data();
    }
    HS_RETURN_IF_ERROR(Enter(std::move(call)));
    const std::vector<Call>& calls = state_->calls();
    if (mine > 0) {
      // Segment of every rank's input this rank reduces, in rank order.
      const int64_t at = impl == CommImpl::kGrouped ? Offset(counts, rank_) : rank_ * m;
      auto segment = [&](int k) {
        return (impl == CommImpl::kGrouped ? calls[k].send : calls[k].scratch) + at;
      };
      std::memcpy(recv, segment(0), mine * sizeof(float));
      for (int k = 1; k < n; ++k) {
        const float* in = segment(k);
        for (int64_t i = 0; i < mine; ++i) recv[i] += in[i];
      }
    }
    return Leave();
  }

  absl::Status AllReduce(float* data, int64_t count) override {
    const int n = size();
    Call call;
    call.op = Op::kAllReduce;
    call.count = count;
    call.send = data;
    call.error = CheckAllReduce(data, count);
    // Rank r reduces elements [Chunk(r), Chunk(r+1)) into its scratch; all then copy every chunk.
    auto chunk = [&](int r) { return count * r / n; };
    if (call.error.empty()) {
      scratch_.resize(chunk(rank_ + 1) - chunk(rank_));
      call.scratch = scratch_.data();
    }
    HS_RETURN_IF_ERROR(Enter(std::move(call)));
    const std::vector<Call>& calls = state_->calls();
    const int64_t lo = chunk(rank_), len = chunk(rank_ + 1) - lo;
    if (len > 0) {
      std::memcpy(scratch_.data(), calls[0].send + lo, len * sizeof(float));
      for (int k = 1; k < n; ++k) {
        const float* in = calls[k].send + lo;
        for (int64_t i = 0; i < len; ++i) scratch_[i] += in[i];
      }
    }
    // Every chunk is reduced: nobody reads `data` any more; now all read the reduced chunks.
    HS_RETURN_IF_ERROR(Arrive(/*opens_reads=*/true));
    for (int k = 0; k < n; ++k) {
      const int64_t klo = chunk(k), klen = chunk(k + 1) - klo;
      if (klen > 0) std::memcpy(data + klo, calls[k].scratch, klen * sizeof(float));
    }
    return Leave();
  }

  absl::Status AllToAllV(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                         const std::vector<int64_t>& recv_counts) override {
    const int n = size();
    Call call;
    call.op = Op::kAllToAllV;
    call.counts = send_counts;
    call.recv_counts = recv_counts;
    call.send = send;
    call.error = CheckAllToAllV(send, send_counts, recv, recv_counts, n);
    HS_RETURN_IF_ERROR(Enter(std::move(call)));
    const std::vector<Call>& calls = state_->calls();
    float* out = recv;
    for (int k = 0; k < n; ++k) {
      if (recv_counts[k] > 0) {
        const float* in = calls[k].send + Offset(calls[k].counts, rank_);
        std::memcpy(out, in, recv_counts[k] * sizeof(float));
      }
      out += recv_counts[k];
    }
    return Leave();
  }

  absl::Status Broadcast(float* data, int64_t count, int root) override {
    Call call;
    call.op = Op::kBroadcast;
    call.count = count;
    call.root = root;
    call.send = data;
    call.error = CheckBroadcast(data, count, root, size());
    HS_RETURN_IF_ERROR(Enter(std::move(call)));
    if (rank_ != root && count > 0) {
      std::memcpy(data, state_->calls()[root].send, count * sizeof(float));
    }
    return Leave();
  }

  absl::Status Barrier() override {
    Call call;
    call.op = Op::kBarrier;
    HS_RETURN_IF_ERROR(Enter(std::move(call)));
    return Leave();
  }

 private:
  // Publishes this rank's call, waits for all ranks and checks that their calls agree.
  absl::Status Enter(Call call) {
    ++seq_;
    op_ = call.op;
    state_->call(rank_) = std::move(call);
    HS_RETURN_IF_ERROR(Arrive(/*opens_reads=*/true));
    std::string mismatch = Disagreement();
    if (mismatch.empty()) return absl::OkStatus();
    HS_RETURN_IF_ERROR(Leave());  // the others still read our Call
    return absl::InvalidArgumentError(
        StrCat("threads ", OpName(op_), " (collective #", seq_, ", rank ", rank_, "): ", mismatch));
  }

  absl::Status Arrive(bool opens_reads) {
    return state_->Arrive(rank_, opens_reads, OpName(op_), seq_);
  }
  // The closing barrier: after it, no rank reads this collective's buffers.
  absl::Status Leave() { return Arrive(/*opens_reads=*/false); }

  // Why the ranks' calls do not fit together; "" when they do. The same on every rank.
  std::string Disagreement() const {
    const std::vector<Call>& calls = state_->calls();
    const int n = size();
    for (int r = 0; r < n; ++r) {
      if (!calls[r].error.empty()) return StrCat("rank ", r, ": ", calls[r].error);
    }
    return CallsDisagree(calls);
  }

  SharedState* state_;
  const int rank_;
  int64_t seq_ = 0;              // collectives called so far, for messages
  Op op_ = Op::kBarrier;         // the collective in progress
  std::vector<float> scratch_;   // published to the other ranks (padded shards, reduced chunks)
  std::vector<float> staging_;   // private (padded all-gather result)
};

}  // namespace

absl::Status RunThreadRanks(int n, const std::function<absl::Status(Communicator&)>& fn,
                            double timeout_s) {
  if (n < 1) return absl::InvalidArgumentError(StrCat("RunThreadRanks: n = ", n, "; expected >= 1"));
  if (!(timeout_s > 0)) {
    return absl::InvalidArgumentError(
        StrCat("RunThreadRanks: timeout_s = ", timeout_s, "; expected a positive number of seconds"));
  }
  SharedState state(n, timeout_s);
  std::vector<std::unique_ptr<ThreadComm>> comms;
  for (int r = 0; r < n; ++r) comms.push_back(std::make_unique<ThreadComm>(&state, r));
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      absl::Status status;
      try {
        status = fn(*comms[r]);
      } catch (const std::exception& e) {
        status = absl::InternalError(StrCat("threads: rank ", r, " threw: ", e.what()));
      } catch (...) {
        status = absl::InternalError(StrCat("threads: rank ", r, " threw a non-std exception"));
      }
      state.Depart(r, status);
    });
  }
  for (std::thread& t : threads) t.join();
  return state.first_error();
}

}  // namespace hetsynth::runtime
