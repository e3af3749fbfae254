// For in-process communicators only — thread ranks (RunThreadRanks, threads.cc) and virtual GPUs
// (RunVirtualGpus, the CUDA backend's device_comm.cc): ONE protocol for ranks that are threads
// of one process, templated over how bytes move.
//
// Every collective is a sequence of phases separated by a shared generation-counted barrier
// (Rendezvous::Arrive):
//   1. each rank publishes what it was called with (its Call: op, counts, buffer pointers, its
//      staging buffer) — device movers first record a "ready" event on the rank's stream — and
//      waits for the others;
//   2. every rank checks that all Calls agree (the same verdict everywhere: every rank reads the
//      same Calls) and whether the buffers are host or device memory;
//   3. each rank reads the other ranks' buffers and writes only its own — host memcpy and
//      rank-order sums, or copies and sum kernels on its stream after waiting for the peers'
//      "ready" events;
//   4. a closing barrier keeps every published buffer alive until nobody reads it any more
//      (device movers record "done", and each stream waits for every peer's "done", so work a
//      rank enqueues later cannot overwrite a buffer a peer's copy still reads).
// AllReduce has a middle round (rank r sums chunk r of every rank's data into its staging
// buffer, then every rank copies every chunk); Split has one too (the first rank of each new
// group publishes the group it made).
//
// Waiting is on a condition variable with a deadline, and ends early when a rank has failed or
// returned: its collectives can then never complete. Groups made by Split are children of the
// group they were split from: an abort (a failed rank, a deadline) passes down to every
// descendant, and a rank returning counts as returned in every group it belongs to, so peers
// waiting in a sub-communicator never hang on a rank that is gone.
//
// The mover (what Mover must provide; see HostMover in threads.cc, DeviceMover in
// device_comm.cc):
//   static constexpr const char* kName;       // name() and messages: "threads", "device"
//   bool devices() const;                      // whether this group may move device memory
//   Mem Classify(std::initializer_list<Buffer>) const;     // host, device or mixed buffers
//   absl::StatusOr<float*> Scratch(int slot, bool device, int64_t n);
//       // n floats, valid until the next Scratch(slot); slot 0 is published to the peers
//   absl::Status Copy(bool device, float* dst, const float* src, int64_t n);
//   absl::Status Sum(bool device, const float* const* in, int k, float* out, int64_t n);
//       // out[i] = ((in[0][i] + in[1][i]) + …) in float: the bits of SumInRankOrder
//   absl::Status Record(Event e);  absl::Status WaitPeers(Event e);   // device ordering
//   absl::StatusOr<std::shared_ptr<void>> MakeGroup(int n) const;     // Split: shared state
//   Mover Join(std::shared_ptr<void> group, int rank) const;          // … and a rank's mover
//   absl::Status ConcurrentUse() const;         // CheckConcurrentUse
//
//   auto root = std::make_shared<Rendezvous>(Rendezvous::Identity(n), timeout_s);
//   return RunOnThreads(*root, [&](int r) {
//     InProcessComm<HostMover> comm(root, HostMover(), r);
//     return fn(comm);
//   });
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/comm_common.h"

namespace hetsynth::runtime::comm_internal {

// What one rank passed to the current collective. Written by its owner before the opening
// barrier (Split's `made`: before the middle one), read by every rank until the closing one.
struct Call {
  Op op = Op::kBarrier;
  CommImpl impl = CommImpl::kGrouped;
  std::vector<int64_t> counts;       // AllGatherV / ReduceScatterV counts; AllToAllV send counts
  std::vector<int64_t> recv_counts;  // AllToAllV
  int64_t count = 0;                 // AllReduce / Broadcast elements
  int root = 0;                      // Broadcast
  int color = 0, key = 0;            // Split
  Mem mem = Mem::kNone;              // the buffers' memory
  std::string error;                 // non-empty: this rank cannot take part (arguments, CUDA)
  absl::StatusCode code = absl::StatusCode::kInvalidArgument;  // of `error`
  const float* send = nullptr;       // the rank's input (AllReduce / Broadcast: its data)
  const float* scratch = nullptr;    // the rank's staging buffer (padded shards, reduced chunks)
  std::shared_ptr<void> made;        // Split: the group this rank made (first rank of a group)
};

// Where a rank is, for messages: "threads AllReduce (collective #3, rank 1): ".
struct Where {
  const char* comm;
  Op op;
  int64_t seq;
  int rank;
};
inline std::string WhereText(const Where& w) {
  return StrCat(w.comm, " ", OpName(w.op), " (collective #", w.seq, ", rank ", w.rank, "): ");
}

// The state the ranks of one group share: the barrier, the published Calls, and how the run is
// going. Thread-safe; Calls are exchanged by the barrier's ordering.
class Rendezvous {
 public:
  // A group of members.size() ranks: rank r is members[r] of the root group (the run's
  // threads). timeout_s > 0: how long a rank waits in one barrier.
  Rendezvous(std::vector<int> members, double timeout_s);

  // {0, 1, …, n-1}: the members of a root group.
  static std::vector<int> Identity(int n);

  int n() const { return n_; }
  Call& call(int rank) { return calls_[static_cast<size_t>(rank)]; }
  const std::vector<Call>& calls() const { return calls_; }

  // Waits until every rank has arrived. Fails (and aborts the group) when a rank failed or
  // returned, or after the timeout; before failing it waits for the ranks still reading the
  // buffers published in this collective. `opens_reads`: the barrier starts a phase in which
  // ranks read each other's buffers (it lasts until each rank's next Arrive).
  absl::Status Arrive(int rank, bool opens_reads, const Where& where);

  // Root rank `root_rank`'s function returned `status`: a failure aborts this group and every
  // descendant; a return (OK) makes collectives that still need that rank fail, here and in
  // every descendant it belongs to.
  void Depart(int root_rank, const absl::Status& status);

  // A child group of these ranks (indices here, in their new order): aborted with this one,
  // told of departures. Made by one rank during Split, before the others look at it.
  std::shared_ptr<Rendezvous> Child(const std::vector<int>& ranks);

  // The first failure in time (the cause); OK when there was none.
  absl::Status first_error();

  // Point-to-point messages (Communicator::SendAsync / Recv) of host data: Post queues `data`
  // for rank `to` from rank `from` under `tag` (never waits); Take waits for the oldest such
  // message to rank `to`, with the barrier's timeout, and fails like a barrier when the group
  // is aborted or the sender returned without sending it.
  void Post(int to, int from, int tag, std::vector<float> data);
  absl::StatusOr<std::vector<float>> Take(int to, int from, int tag, const Where& where);

 private:
  void StopReadingLocked(int rank);
  void AbortLocked(const absl::Status& reason);
  void Abort(const absl::Status& reason);

  const int n_;
  const std::chrono::duration<double> timeout_;
  const std::vector<int> members_;  // root rank of each rank here
  std::vector<Call> calls_;         // calls_[r] is written only by rank r

  std::mutex mu_;  // locks of a child are only taken under its parent's, never the reverse
  std::condition_variable cv_;
  int64_t generation_ = 0;            // completed barriers
  int arrived_ = 0;                   // ranks waiting in the current barrier
  std::vector<int64_t> arrived_in_;   // per rank: the generation it last arrived in
  std::vector<bool> reading_;         // per rank: may be reading other ranks' buffers
  int readers_ = 0;                   // ranks with reading_ set
  std::vector<int> departed_;         // ranks whose function returned OK
  bool aborted_ = false;
  absl::Status abort_reason_;
  absl::Status first_error_;
  std::vector<std::weak_ptr<Rendezvous>> children_;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<float>>> messages_;  // (to, from, tag)
};

// Runs body(rank) on root.n() threads and joins them; each rank's return is passed to
// root.Depart (an exception becomes Internal). Returns root.first_error().
absl::Status RunOnThreads(Rendezvous& root, const char* who, const std::function<absl::Status(int rank)>& body);

// The device ordering points of a collective (device movers record and wait on them).
enum class Event { kReady, kMid, kDone };

const char* MemName(Mem m);

// A communicator over one Rendezvous group, moving bytes with Mover.
template <class Mover>
class InProcessComm final : public Communicator {
 public:
  InProcessComm(std::shared_ptr<Rendezvous> rv, Mover mover, int rank)
      : rv_(std::move(rv)), mover_(std::move(mover)), rank_(rank), n_(rv_->n()), in_(static_cast<size_t>(n_)) {}

  int rank() const override { return rank_; }
  int size() const override { return n_; }
  std::string name() const override { return Mover::kName; }

  absl::Status AllGatherV(const float* send, float* recv, const std::vector<int64_t>& counts,
                          CommImpl impl) override {
    Call c = Begin(Op::kAllGatherV);
    c.impl = impl;
    c.counts = counts;
    c.send = send;
    VSizes sz;
    c.error = CheckAllGatherV(send, recv, counts, n_, rank_, &sz);
    const int64_t m = sz.max, total = sz.total, mine = sz.mine;
    c.mem = mover_.Classify({{send, mine}, {recv, total}});
    if (c.error.empty() && impl == CommImpl::kPadded) {
      const bool dev = c.mem == Mem::kDevice;
      Stage(c, m, [&](float* p) { Note(mover_.Copy(dev, p, send, mine)); });
    }
    HS_RETURN_IF_ERROR(Enter(std::move(c)));
    const std::vector<Call>& calls = rv_->calls();
    if (impl == CommImpl::kGrouped) {
      float* out = recv;
      for (int k = 0; k < n_; ++k) {
        if (counts[k] > 0 && calls[k].send != out) Copy(out, calls[k].send, counts[k]);
        out += counts[k];
      }
    } else if (m > 0) {  // one equal-size all-gather of the padded shards, then unpadding
      float* gathered = PrivateScratch(n_ * m);
      if (gathered != nullptr) {
        for (int k = 0; k < n_; ++k) Copy(gathered + k * m, calls[k].scratch, m);
        float* out = recv;
        for (int k = 0; k < n_; ++k) {
          Copy(out, gathered + k * m, counts[k]);
          out += counts[k];
        }
      }
    }
    return Leave();
  }

  absl::Status ReduceScatterV(const float* send, float* recv, const std::vector<int64_t>& counts,
                              CommImpl impl) override {
    Call c = Begin(Op::kReduceScatterV);
    c.impl = impl;
    c.counts = counts;
    c.send = send;
    VSizes sz;
    c.error = CheckReduceScatterV(send, recv, counts, n_, rank_, &sz);
    const int64_t m = sz.max, total = sz.total, mine = sz.mine;
    c.mem = mover_.Classify({{send, total}, {recv, mine}});
    if (c.error.empty() && impl == CommImpl::kPadded) {
      const bool dev = c.mem == Mem::kDevice;
      Stage(c, n_ * m, [&](float* p) {
        const float* in = send;
        for (int k = 0; k < n_; ++k) {
          Note(mover_.Copy(dev, p + k * m, in, counts[k]));
          in += counts[k];
        }
      });
    }
    HS_RETURN_IF_ERROR(Enter(std::move(c)));
    const std::vector<Call>& calls = rv_->calls();
    if (mine > 0) {
      // The segment of every rank's input this rank reduces, in rank order.
      const int64_t at = impl == CommImpl::kGrouped ? Offset(counts, rank_) : rank_ * m;
      for (int k = 0; k < n_; ++k) in_[k] = (impl == CommImpl::kGrouped ? calls[k].send : calls[k].scratch) + at;
      Sum(recv, mine);
    }
    return Leave();
  }

  absl::Status AllReduce(float* data, int64_t count) override {
    Call c = Begin(Op::kAllReduce);
    c.count = count;
    c.send = data;
    c.error = CheckAllReduce(data, count);
    c.mem = mover_.Classify({{data, count}});
    // Rank r reduces elements [chunk(r), chunk(r+1)) into its staging buffer; then all copy
    // every chunk.
    auto chunk = [&](int r) { return count * r / n_; };
    const int64_t lo = c.error.empty() ? chunk(rank_) : 0;
    const int64_t len = c.error.empty() ? chunk(rank_ + 1) - lo : 0;
    if (c.error.empty()) Stage(c, len, [](float*) {});
    HS_RETURN_IF_ERROR(Enter(std::move(c)));
    const std::vector<Call>& calls = rv_->calls();
    if (len > 0) {
      for (int k = 0; k < n_; ++k) in_[k] = calls[k].send + lo;
      Sum(staged_, len);
    }
    // Every chunk is reduced: nobody reads `data` any more; now all read the reduced chunks.
    HS_RETURN_IF_ERROR(Meet(Event::kMid));
    for (int k = 0; k < n_; ++k) {
      const int64_t klo = chunk(k), klen = chunk(k + 1) - klo;
      if (klen > 0) Copy(data + klo, calls[k].scratch, klen);
    }
    return Leave();
  }

  absl::Status AllToAllV(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                         const std::vector<int64_t>& recv_counts) override {
    Call c = Begin(Op::kAllToAllV);
    c.counts = send_counts;
    c.recv_counts = recv_counts;
    c.send = send;
    int64_t nsend = 0, nrecv = 0;
    c.error = CheckAllToAllV(send, send_counts, recv, recv_counts, n_, &nsend, &nrecv);
    c.mem = mover_.Classify({{send, nsend}, {recv, nrecv}});
    HS_RETURN_IF_ERROR(Enter(std::move(c)));
    const std::vector<Call>& calls = rv_->calls();
    float* out = recv;
    for (int k = 0; k < n_; ++k) {
      if (recv_counts[k] > 0) Copy(out, calls[k].send + Offset(calls[k].counts, rank_), recv_counts[k]);
      out += recv_counts[k];
    }
    return Leave();
  }

  absl::Status Broadcast(float* data, int64_t count, int root) override {
    Call c = Begin(Op::kBroadcast);
    c.count = count;
    c.root = root;
    c.send = data;
    c.error = CheckBroadcast(data, count, root, n_);
    c.mem = mover_.Classify({{data, count}});
    HS_RETURN_IF_ERROR(Enter(std::move(c)));
    if (rank_ != root && count > 0) Copy(data, rv_->calls()[root].send, count);
    return Leave();
  }

  // With a device mover, also orders the streams: work any rank enqueues after the barrier runs
  // after the work every rank enqueued before it.
  absl::Status Barrier() override {
    HS_RETURN_IF_ERROR(Enter(Begin(Op::kBarrier)));
    return Leave();
  }

  // Point-to-point messages of host data (a device mover's ranks have none: their data lives
  // in device memory).
  absl::Status SendAsync(std::vector<float> data, int dest, int tag) override {
    HS_RETURN_IF_ERROR(CheckPointToPoint(dest, tag, "SendAsync"));
    rv_->Post(dest, rank_, tag, std::move(data));
    return absl::OkStatus();
  }
  absl::Status Recv(float* data, int64_t count, int source, int tag) override {
    HS_RETURN_IF_ERROR(CheckPointToPoint(source, tag, "Recv"));
    HS_ASSIGN_OR_RETURN(std::vector<float> got, rv_->Take(rank_, source, tag, {Mover::kName, Op::kRecv, seq_, rank_}));
    if (static_cast<int64_t>(got.size()) != count) {
      return absl::InvalidArgumentError(StrCat(Mover::kName, " Recv (rank ", rank_, "): the message from rank ", source,
                                               " with tag ", tag, " has ", got.size(), " elements; expected ", count));
    }
    if (count > 0) std::memcpy(data, got.data(), static_cast<size_t>(count) * sizeof(float));
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    Call c = Begin(Op::kSplit);
    c.color = color;
    c.key = key;
    c.error = CheckSplit(color);
    HS_RETURN_IF_ERROR(Enter(std::move(c)));
    const std::vector<Call>& calls = rv_->calls();
    std::vector<int> group;  // the ranks (here) of this rank's new group, in their new order
    if (color != kNoColor) {
      for (int r = 0; r < n_; ++r) {
        if (calls[r].color == color) group.push_back(r);
      }
      std::stable_sort(group.begin(), group.end(), [&](int a, int b) { return calls[a].key < calls[b].key; });
    }
    // The group's first rank makes it and publishes it; the others pick it up after the
    // middle barrier.
    if (!group.empty() && group.front() == rank_) {
      auto made = std::make_shared<Made>();
      absl::StatusOr<std::shared_ptr<void>> shared = mover_.MakeGroup(static_cast<int>(group.size()));
      if (shared.ok()) {
        made->rv = rv_->Child(group);
        made->group = *std::move(shared);
      } else {
        made->status = shared.status();
      }
      rv_->call(rank_).made = std::move(made);
    }
    HS_RETURN_IF_ERROR(Arrive(/*opens_reads=*/true));
    std::unique_ptr<Communicator> sub;
    absl::Status status;
    if (!group.empty()) {
      const auto made = std::static_pointer_cast<Made>(calls[group.front()].made);
      const int me = static_cast<int>(std::find(group.begin(), group.end(), rank_) - group.begin());
      if (made->status.ok()) {
        sub = std::make_unique<InProcessComm<Mover>>(made->rv, mover_.Join(made->group, me), me);
      } else {
        status = absl::Status(made->status.code(),
                              StrCat(Here(), "rank ", group.front(), " could not make the group: ", made->status.message()));
      }
    }
    HS_RETURN_IF_ERROR(Arrive(/*opens_reads=*/false));
    rv_->call(rank_).made.reset();  // nobody reads it any more; the group lives in its members
    HS_RETURN_IF_ERROR(status);
    return sub;
  }

  absl::Status CheckConcurrentUse() const override { return mover_.ConcurrentUse(); }

  // How this rank moves bytes (e.g. to point a split's device mover at another stream before
  // its first collective).
  Mover& mover() { return mover_; }

 private:
  // What the first rank of a new group publishes.
  struct Made {
    std::shared_ptr<Rendezvous> rv;
    std::shared_ptr<void> group;  // the mover's shared state
    absl::Status status;          // why the group could not be made
  };

  Call Begin(Op op) {
    Call c;
    c.op = op;
    return c;
  }

  bool OnDevice() const { return path_ == Mem::kDevice; }
  std::string Here() const { return WhereText(Where{Mover::kName, op_, seq_, rank_}); }

  absl::Status CheckPointToPoint(int peer, int tag, const char* op) const {
    if (mover_.devices()) {
      return absl::UnimplementedError(StrCat(Mover::kName, ": point-to-point messages carry host data; this communicator moves device memory"));
    }
    if (peer < 0 || peer >= n_ || peer == rank_) {
      return absl::InvalidArgumentError(StrCat(Mover::kName, " ", op, ": rank ", peer, "; expected another rank in [0, ", n_, ")"));
    }
    if (tag < 0 || tag >= kMaxTag) {
      return absl::InvalidArgumentError(StrCat(Mover::kName, " ", op, ": tag ", tag, "; expected 0 to ", kMaxTag - 1));
    }
    return absl::OkStatus();
  }

  void Note(absl::Status s) {
    if (st_.ok() && !s.ok()) st_ = std::move(s);
  }

  // Fills this rank's published staging buffer (n floats, in the call's memory) with `fill`;
  // failures become the call's error.
  template <class Fill>
  void Stage(Call& c, int64_t n, const Fill& fill) {
    if (c.mem == Mem::kMixed || (c.mem == Mem::kDevice && !mover_.devices())) return;  // Verdict says why
    st_ = absl::OkStatus();
    absl::StatusOr<float*> p = mover_.Scratch(0, c.mem == Mem::kDevice, n);
    if (p.ok()) {
      if (n > 0) fill(*p);
      c.scratch = staged_ = *p;
    } else {
      st_ = p.status();
    }
    if (!st_.ok()) {
      c.error = st_.ToString();
      c.code = absl::StatusCode::kInternal;
    }
  }

  // A private staging buffer of n floats on the collective's path; nullptr after a failure.
  float* PrivateScratch(int64_t n) {
    if (!st_.ok()) return nullptr;
    absl::StatusOr<float*> p = mover_.Scratch(1, OnDevice(), n);
    if (!p.ok()) {
      Note(p.status());
      return nullptr;
    }
    return *p;
  }

  void Copy(float* dst, const float* src, int64_t n) {
    if (n > 0 && st_.ok()) Note(mover_.Copy(OnDevice(), dst, src, n));
  }
  // out = rank-order sum of in_[0..n) over len elements.
  void Sum(float* out, int64_t len) {
    if (len > 0 && st_.ok()) Note(mover_.Sum(OnDevice(), in_.data(), n_, out, len));
  }

  absl::Status Arrive(bool opens_reads) { return rv_->Arrive(rank_, opens_reads, Where{Mover::kName, op_, seq_, rank_}); }

  // A middle barrier: device ranks record `e`, meet, and wait for the peers' records of it.
  absl::Status Meet(Event e) {
    if (OnDevice() && st_.ok()) Note(mover_.Record(e));
    HS_RETURN_IF_ERROR(Arrive(/*opens_reads=*/true));
    if (OnDevice()) Note(mover_.WaitPeers(e));
    return absl::OkStatus();
  }

  // Publishes this rank's call (after recording "ready"), meets the others and checks that the
  // calls agree; on disagreement every rank fails alike.
  absl::Status Enter(Call c) {
    ++seq_;
    op_ = c.op;
    st_ = absl::OkStatus();
    path_ = Mem::kHost;
    if (mover_.devices() && c.error.empty()) {
      absl::Status rec = mover_.Record(Event::kReady);
      if (!rec.ok()) {
        c.error = rec.ToString();
        c.code = absl::StatusCode::kInternal;
      }
    }
    rv_->call(rank_) = std::move(c);
    HS_RETURN_IF_ERROR(Arrive(/*opens_reads=*/true));
    absl::Status verdict = Verdict();
    if (!verdict.ok()) {
      HS_RETURN_IF_ERROR(Arrive(/*opens_reads=*/false));  // the others still read our call
      return verdict;
    }
    if (OnDevice()) Note(mover_.WaitPeers(Event::kReady));
    return absl::OkStatus();
  }

  // The closing barrier: after it, no rank reads this collective's buffers (device: no stream
  // of a peer either, once ours waited for their "done").
  absl::Status Leave() {
    if (OnDevice() && st_.ok()) Note(mover_.Record(Event::kDone));
    HS_RETURN_IF_ERROR(Arrive(/*opens_reads=*/false));
    if (OnDevice()) Note(mover_.WaitPeers(Event::kDone));
    if (st_.ok()) return st_;
    return absl::Status(st_.code(), StrCat(Here(), st_.message()));
  }

  // Whether the ranks' calls fit together (the same verdict on every rank); sets path_.
  absl::Status Verdict() {
    const std::vector<Call>& calls = rv_->calls();
    auto fail = [&](absl::StatusCode code, const std::string& why) {
      return absl::Status(code, StrCat(Here(), why));
    };
    for (int r = 0; r < n_; ++r) {
      if (!calls[r].error.empty()) return fail(calls[r].code, StrCat("rank ", r, ": ", calls[r].error));
    }
    const std::string why = CallsDisagree(calls);
    if (!why.empty()) return fail(absl::StatusCode::kInvalidArgument, why);
    // Host or device: one kind of memory per collective, the same on every rank.
    int host_rank = -1, device_rank = -1;
    for (int r = 0; r < n_; ++r) {
      if (calls[r].mem == Mem::kMixed) {
        return fail(absl::StatusCode::kInvalidArgument,
                    StrCat("rank ", r, " passed both host and device buffers; pass one kind per call"));
      }
      if (calls[r].mem == Mem::kHost && host_rank < 0) host_rank = r;
      if (calls[r].mem == Mem::kDevice && device_rank < 0) device_rank = r;
    }
    if (host_rank >= 0 && device_rank >= 0) {
      return fail(absl::StatusCode::kInvalidArgument,
                  StrCat("rank ", host_rank, " passed ", MemName(Mem::kHost), " but rank ", device_rank, " passed ",
                         MemName(Mem::kDevice), "; every rank must pass the same kind of memory"));
    }
    if (device_rank >= 0 && !mover_.devices()) {
      return fail(absl::StatusCode::kInvalidArgument,
                  StrCat("rank ", device_rank, " passed device buffers to a communicator without devices"));
    }
    // A barrier orders the streams whenever there are any.
    path_ = device_rank >= 0 || (calls[0].op == Op::kBarrier && mover_.devices()) ? Mem::kDevice : Mem::kHost;
    return absl::OkStatus();
  }

  std::shared_ptr<Rendezvous> rv_;
  Mover mover_;
  const int rank_, n_;
  std::vector<const float*> in_;  // the inputs of a rank-order sum
  float* staged_ = nullptr;       // this rank's published staging buffer (Stage)
  int64_t seq_ = 0;               // collectives called so far, for messages
  Op op_ = Op::kBarrier;          // the one in progress
  Mem path_ = Mem::kHost;         // how it moves data
  absl::Status st_;               // its first failure to move data (CUDA)
};

}  // namespace hetsynth::runtime::comm_internal
