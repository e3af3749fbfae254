// The in-process communicator's rendezvous (comm_inprocess.h) and its host instance: thread
// ranks whose buffers are exchanged by pointer — memcpy and rank-order sums on the host
// (HostMover). The CUDA backend's virtual GPUs run the same protocol with a device mover.
#include <cstring>
#include <exception>
#include <thread>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/comm_common.h"
#include "hetsynth/runtime/comm_inprocess.h"

namespace hetsynth::runtime {

const char* CommImplName(CommImpl impl) {
  return impl == CommImpl::kPadded ? "padded" : "grouped";
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Split(int, int) {
  return absl::UnimplementedError(StrCat(name(), ": this communicator cannot split into sub-communicators"));
}

absl::Status Communicator::SendAsync(std::vector<float>, int, int) {
  return absl::UnimplementedError(StrCat(name(), ": this communicator has no point-to-point messages"));
}

absl::Status Communicator::Recv(float*, int64_t, int, int) {
  return absl::UnimplementedError(StrCat(name(), ": this communicator has no point-to-point messages"));
}

absl::Status Communicator::FlushSends() { return absl::OkStatus(); }

absl::Status Communicator::CheckConcurrentUse() const {
  return absl::FailedPreconditionError(
      StrCat(name(), ": this communicator does not say that its splits may run on other threads"));
}

namespace comm_internal {

const char* MemName(Mem m) {
  switch (m) {
    case Mem::kNone: return "no buffers";
    case Mem::kHost: return "host buffers";
    case Mem::kDevice: return "device buffers";
    case Mem::kMixed: return "host and device buffers";
  }
  return "?";
}

Rendezvous::Rendezvous(std::vector<int> members, double timeout_s)
    : n_(static_cast<int>(members.size())),
      timeout_(std::chrono::duration<double>(timeout_s)),
      members_(std::move(members)),
      calls_(static_cast<size_t>(n_)),
      arrived_in_(static_cast<size_t>(n_), -1),
      reading_(static_cast<size_t>(n_), false) {}

std::vector<int> Rendezvous::Identity(int n) {
  std::vector<int> v(static_cast<size_t>(std::max(n, 0)));
  for (int r = 0; r < n; ++r) v[static_cast<size_t>(r)] = r;
  return v;
}

absl::Status Rendezvous::Arrive(int rank, bool opens_reads, const Where& where) {
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
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout_);
    while (generation_ == gen && !aborted_ && departed_.empty()) {
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && generation_ == gen && !aborted_) {
        std::vector<int64_t> missing;
        for (int r = 0; r < n_; ++r) {
          if (arrived_in_[r] != gen) missing.push_back(r);
        }
        AbortLocked(absl::DeadlineExceededError(
            StrCat(WhereText(where), "waited more than ", timeout_.count(), " s for ranks ", Join(missing),
                   "; a rank is stuck or skipped a collective (raise the run's deadline, train --deadline, if it is just slow)")));
      }
    }
    if (generation_ != gen) return absl::OkStatus();
  }
  if (!aborted_) {  // a rank returned while this barrier still needed it
    const int r = departed_.front();
    AbortLocked(absl::AbortedError(StrCat(WhereText(where), "rank ", r, " returned while rank ", rank,
                                          " waited; every rank must call the same collectives")));
  }
  cv_.wait(lock, [&] { return readers_ == 0; });
  if (abort_reason_.code() == absl::StatusCode::kDeadlineExceeded ||
      abort_reason_.code() == absl::StatusCode::kAborted) {
    return abort_reason_;
  }
  return absl::AbortedError(
      StrCat(WhereText(where), "gave up because another rank failed: ", abort_reason_.ToString()));
}

void Rendezvous::Depart(int root_rank, const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = std::find(members_.begin(), members_.end(), root_rank);
  if (it != members_.end()) {
    const int rank = static_cast<int>(it - members_.begin());
    StopReadingLocked(rank);
    if (status.ok()) {
      departed_.push_back(rank);
      cv_.notify_all();
    }
  }
  if (!status.ok()) {
    AbortLocked(status);  // passes it down to the children
    return;
  }
  for (const std::weak_ptr<Rendezvous>& w : children_) {
    if (std::shared_ptr<Rendezvous> child = w.lock()) child->Depart(root_rank, status);
  }
}

std::shared_ptr<Rendezvous> Rendezvous::Child(const std::vector<int>& ranks) {
  std::vector<int> members;
  for (int r : ranks) members.push_back(members_[static_cast<size_t>(r)]);
  auto child = std::make_shared<Rendezvous>(std::move(members), timeout_.count());
  std::lock_guard<std::mutex> lock(mu_);
  children_.erase(std::remove_if(children_.begin(), children_.end(),
                                 [](const std::weak_ptr<Rendezvous>& w) { return w.expired(); }),
                  children_.end());
  children_.push_back(child);
  if (aborted_) child->Abort(abort_reason_);
  return child;
}

absl::Status Rendezvous::first_error() {
  std::lock_guard<std::mutex> lock(mu_);
  return first_error_;
}

void Rendezvous::Post(int to, int from, int tag, std::vector<float> data) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    messages_[{to, from, tag}].push_back(std::move(data));
  }
  cv_.notify_all();
}

absl::StatusOr<std::vector<float>> Rendezvous::Take(int to, int from, int tag, const Where& where) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto key = std::make_tuple(to, from, tag);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout_);
  for (;;) {
    auto it = messages_.find(key);
    if (it != messages_.end() && !it->second.empty()) {
      std::vector<float> data = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) messages_.erase(it);
      return data;
    }
    if (aborted_) {
      return absl::AbortedError(StrCat(WhereText(where), "gave up because another rank failed: ", abort_reason_.ToString()));
    }
    if (std::find(departed_.begin(), departed_.end(), from) != departed_.end()) {
      return absl::AbortedError(StrCat(WhereText(where), "rank ", from, " returned without sending the message with tag ", tag));
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      const absl::Status st = absl::DeadlineExceededError(
          StrCat(WhereText(where), "waited more than ", timeout_.count(), " s for the message from rank ", from, " with tag ", tag,
                 " (raise the run's deadline if it is just slow)"));
      AbortLocked(st);
      return st;
    }
  }
}

void Rendezvous::StopReadingLocked(int rank) {
  if (!reading_[rank]) return;
  reading_[rank] = false;
  if (--readers_ == 0) cv_.notify_all();
}

void Rendezvous::AbortLocked(const absl::Status& reason) {
  if (first_error_.ok()) first_error_ = reason;
  if (!aborted_) {
    aborted_ = true;
    abort_reason_ = reason;
    for (const std::weak_ptr<Rendezvous>& w : children_) {
      if (std::shared_ptr<Rendezvous> child = w.lock()) child->Abort(reason);
    }
  }
  cv_.notify_all();
}

void Rendezvous::Abort(const absl::Status& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  AbortLocked(reason);
}

absl::Status RunOnThreads(Rendezvous& root, const char* who, const std::function<absl::Status(int rank)>& body) {
  const int n = root.n();
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      absl::Status status;
      try {
        status = body(r);
      } catch (const std::exception& e) {
        status = absl::InternalError(StrCat(who, ": rank ", r, " threw: ", e.what()));
      } catch (...) {
        status = absl::InternalError(StrCat(who, ": rank ", r, " threw a non-std exception"));
      }
      root.Depart(r, status);
    });
  }
  for (std::thread& t : threads) t.join();
  return root.first_error();
}

}  // namespace comm_internal

namespace {

using comm_internal::Buffer;
using comm_internal::Event;
using comm_internal::Mem;

// Thread ranks move bytes on the host: memcpy, and rank-order sums in a host loop. The staging
// buffers are kept between calls (they only grow), so back-to-back collectives do not allocate.
class HostMover {
 public:
  static constexpr const char* kName = "threads";

  bool devices() const { return false; }
  Mem Classify(std::initializer_list<Buffer>) const { return Mem::kHost; }
  absl::StatusOr<float*> Scratch(int slot, bool, int64_t n) {
    std::vector<float>& v = scratch_[slot];
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
  }
  absl::Status Copy(bool, float* dst, const float* src, int64_t n) {
    // A rank's empty shard may be an empty vector's null data(): memcpy from null is undefined
    // even for 0 bytes.
    if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return absl::OkStatus();
  }
  absl::Status Sum(bool, const float* const* in, int k, float* out, int64_t n) {
    comm_internal::SumInRankOrder(in, k, out, n);
    return absl::OkStatus();
  }
  absl::Status Record(Event) { return absl::OkStatus(); }
  absl::Status WaitPeers(Event) { return absl::OkStatus(); }
  absl::StatusOr<std::shared_ptr<void>> MakeGroup(int) const { return std::shared_ptr<void>(); }
  HostMover Join(std::shared_ptr<void>, int) const { return HostMover(); }
  // Every split has its own rendezvous, so threads may run them side by side.
  absl::Status ConcurrentUse() const { return absl::OkStatus(); }

 private:
  std::vector<float> scratch_[2];  // 0: published (padded shards, reduced chunks); 1: private
};

}  // namespace

absl::Status RunThreadRanks(int n, const std::function<absl::Status(Communicator&)>& fn, double timeout_s) {
  if (n < 1) return absl::InvalidArgumentError(StrCat("RunThreadRanks: n = ", n, "; expected >= 1"));
  if (!(timeout_s > 0)) {
    return absl::InvalidArgumentError(
        StrCat("RunThreadRanks: timeout_s = ", timeout_s, "; expected a positive number of seconds"));
  }
  auto root = std::make_shared<comm_internal::Rendezvous>(comm_internal::Rendezvous::Identity(n), timeout_s);
  return comm_internal::RunOnThreads(*root, "threads", [&](int r) {
    comm_internal::InProcessComm<HostMover> comm(root, HostMover(), r);
    return fn(comm);
  });
}

}  // namespace hetsynth::runtime
