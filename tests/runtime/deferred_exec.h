// DeferredExec: the GPU backend's execution interface (exec_host.h) on the host, with the two
// properties of a real device that HostExec hides and that stream hazards need:
//   - a forked executor (the communication stream, GpuExec::Fork) runs late: its work is queued
//     and runs only when another executor waits for its mark, or when it is read or synchronized;
//   - freed memory is never handed out again while a test runs: a tensor's storage is filled
//     with NaN when it is freed and parked.
// A buffer freed, reused or overwritten before a late stream has read it then shows up as NaN or
// wrong numbers, and a plan parity test fails on a machine without a GPU — as it would on a GPU,
// sometimes. (The compute executor runs at once: the hazards are the communication stream's.)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "exec/exec_host.h"
#include "exec/gemm_args.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime::gpu::testing {

// Freed storage (poisoned by ParkedTensor); kept until Release() (between test cases).
class Graveyard {
 public:
  static void Park(std::vector<float>&& v) {
    std::lock_guard<std::mutex> l(mu());
    blocks().push_back(std::move(v));
  }
  static void Release() {
    std::lock_guard<std::mutex> l(mu());
    blocks().clear();
  }

 private:
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::vector<std::vector<float>>& blocks() {
    static std::vector<std::vector<float>> b;
    return b;
  }
};

// The live tensors' storage ("device memory"): what a stream-ordered communicator defers;
// anything else is host memory, moved at once (as the GPU communicators do).
class DeviceRanges {
 public:
  static void Add(const float* p, size_t n) {
    std::lock_guard<std::mutex> l(mu());
    ranges()[p] = p + n;
  }
  static void Remove(const float* p) {
    std::lock_guard<std::mutex> l(mu());
    ranges().erase(p);
  }
  static bool Contains(const void* q) {
    const float* p = static_cast<const float*>(q);
    std::lock_guard<std::mutex> l(mu());
    auto it = ranges().upper_bound(p);
    if (it == ranges().begin()) return false;
    --it;
    return p < it->second;
  }

 private:
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::map<const float*, const float*>& ranges() {
    static std::map<const float*, const float*> r;
    return r;
  }
};

// Runs work in an executor's order (its queue); held weakly by the tensors it made.
using InOrder = std::function<void(std::function<void()>)>;

// A move-only tensor like DeviceTensor whose storage goes to the graveyard when freed — poisoned
// in the order of the executor that made it, as a freed block is reused only by that executor's
// later work (CachingAllocator's rule).
class ParkedTensor {
 public:
  ir::Shape shape;

  ParkedTensor() = default;
  ParkedTensor(ir::Shape s, std::weak_ptr<InOrder> owner)
      : shape(std::move(s)), data_(static_cast<size_t>(ir::NumElements(shape)), 0.0f), owner_(std::move(owner)) {
    if (!data_.empty()) DeviceRanges::Add(data_.data(), data_.size());
  }
  ParkedTensor(ParkedTensor&& o) noexcept { *this = std::move(o); }
  ParkedTensor& operator=(ParkedTensor&& o) noexcept {
    if (this != &o) {
      Free();
      shape = std::move(o.shape);
      data_ = std::move(o.data_);
      owner_ = std::move(o.owner_);
      o.data_.clear();
    }
    return *this;
  }
  ParkedTensor(const ParkedTensor&) = delete;
  ParkedTensor& operator=(const ParkedTensor&) = delete;
  ~ParkedTensor() { Free(); }

  int64_t numel() const { return ir::NumElements(shape); }
  int64_t dim(int64_t i) const { return shape[static_cast<size_t>(i < 0 ? i + rank() : i)]; }
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  float* ptr() { return data_.empty() ? nullptr : data_.data(); }
  const float* ptr() const { return data_.empty() ? nullptr : data_.data(); }

 private:
  void Free() {
    if (!data_.empty()) {
      DeviceRanges::Remove(data_.data());
      float* p = data_.data();
      const size_t n = data_.size();
      Graveyard::Park(std::move(data_));  // the storage stays; poisoned now or in order
      auto poison = [p, n] { std::fill(p, p + n, std::nanf("")); };
      if (std::shared_ptr<InOrder> owner = owner_.lock()) {
        (*owner)(poison);
      } else {
        poison();
      }
    }
    data_.clear();
  }
  std::vector<float> data_;
  std::weak_ptr<InOrder> owner_;
};

// kComputeLate: the executor made directly (the compute stream) runs late too — its work waits
// for a read, a synchronize or another executor waiting for its mark — so a communication
// stream that starts without waiting for the compute stream reads what is not computed yet.
template <bool kComputeLate>
class DeferredExecT {
 public:
  using Tensor = ParkedTensor;
  static constexpr bool kOnGpu = false;

  DeferredExecT() : late_(kComputeLate) {}
  // (its tensors freed after it is gone are poisoned at once)
  DeferredExecT(const DeferredExecT&) = delete;
  DeferredExecT& operator=(const DeferredExecT&) = delete;
  ~DeferredExecT() { Flush(); }

  Tensor Make(ir::Shape shape) { return Tensor(std::move(shape), in_order_); }  // fresh memory, zeroed
  template <class F>
  void For(int64_t n, const F& f) {
    Run([f, n] {
      for (int64_t i = 0; i < n; ++i) f(i);
    });
  }
  // HostExec's arithmetic, when the work runs.
  void Gemm(const GemmArgs& g, const float* a, const float* b, float* c) {
    Run([g, a, b, c] { HostExec().Gemm(g, a, b, c); });
  }
  void Zero(float* p, int64_t n) {
    Run([p, n] { HostExec().Zero(p, n); });
  }
  void Copy(float* dst, const float* src, int64_t n) {
    Run([dst, src, n] { HostExec().Copy(dst, src, n); });
  }
  float Read(const float* p) {
    Flush();
    return *p;
  }
  Tensor Upload(const runtime::Tensor& t) {
    Flush();
    Tensor out = Make(t.shape);
    if (t.numel() > 0) std::memcpy(out.ptr(), t.ptr(), static_cast<size_t>(t.numel()) * sizeof(float));
    return out;
  }
  runtime::Tensor Download(const Tensor& t) {
    Flush();
    runtime::Tensor out(t.shape);
    if (t.numel() > 0) std::memcpy(out.ptr(), t.ptr(), static_cast<size_t>(t.numel()) * sizeof(float));
    return out;
  }
  Tensor Clone(const Tensor& t) {
    Tensor out = Make(t.shape);
    Copy(out.ptr(), t.ptr(), t.numel());
    return out;
  }
  absl::Status status() const { return status_; }
  absl::Status Synchronize() {
    Flush();
    return status_;
  }
  void Fail(const absl::Status& s) {
    if (status_.ok()) status_ = s;
  }

  // A communicator over c's ranks whose collectives on device memory are stream-ordered on
  // `onto`: queued there, run when its queue is (the GPU communicators enqueue on a stream).
  static absl::StatusOr<std::unique_ptr<Communicator>> SplitOnto(Communicator& c, DeferredExecT& onto);
  // Queues work on this executor (at once on one that is not late).
  void Enqueue(std::function<void()> work) { Run(std::move(work)); }

  // The forked executor runs late (see the top of this file).
  absl::StatusOr<std::unique_ptr<DeferredExecT>> Fork() {
    auto x = std::make_unique<DeferredExecT>();
    x->late_ = true;
    return x;
  }
  // A mark: this executor and how much work had been issued to it. Waiting for it runs the
  // queued work up to there — not what was issued after (a device would not have either).
  struct Point {
    DeferredExecT* x;
    size_t issued;
  };
  std::shared_ptr<void> Mark() { return std::make_shared<Point>(Point{this, issued_}); }
  // A late executor waits in its queue (when its work before the wait has run); one that runs at
  // once waits now.
  void WaitMark(const std::shared_ptr<void>& mark) {
    if (!mark) return;
    const Point p = *static_cast<const Point*>(mark.get());
    if (p.x != this) Run([p] { p.x->RunUpTo(p.issued); });
  }

 private:
  void Run(std::function<void()> work) {
    ++issued_;
    if (late_) {
      queue_.push_back(std::move(work));
    } else {
      ++ran_;
      work();
    }
  }
  // Runs queued work until `issued` pieces have run.
  void RunUpTo(size_t issued) {
    while (ran_ < issued && !queue_.empty()) {
      std::function<void()> w = std::move(queue_.front());
      queue_.pop_front();
      ++ran_;
      w();
    }
  }
  void Flush() { RunUpTo(issued_); }

  bool late_ = false;
  std::shared_ptr<InOrder> in_order_ = std::make_shared<InOrder>([this](std::function<void()> w) { Run(std::move(w)); });
  absl::Status status_;
  size_t issued_ = 0, ran_ = 0;
  std::deque<std::function<void()>> queue_;
};

// DeferredExec::SplitOnto's communicator: a collective whose buffers are all device memory (or
// null) goes to the executor's queue, the rest (host floats) runs at once after the queue.
template <class X>
class StreamOrderedComm final : public Communicator {
 public:
  StreamOrderedComm(std::unique_ptr<Communicator> c, X* x) : c_(std::move(c)), x_(x), use_(c_.get()) {}
  // Over a communicator it does not own (which must outlive it).
  StreamOrderedComm(Communicator* c, X* x) : x_(x), use_(c) {}
  // Its queued collectives run while it still exists (the executor outlives it).
  ~StreamOrderedComm() override { x_->Synchronize().IgnoreError(); }
  Communicator* underlying() const { return use_; }
  absl::Status Drain() { return x_->Synchronize(); }
  int rank() const override { return use_->rank(); }
  int size() const override { return use_->size(); }
  std::string name() const override { return use_->name(); }
  absl::Status AllGatherV(const float* send, float* recv, const std::vector<int64_t>& counts, CommImpl impl) override {
    return Do([=, this] { return use_->AllGatherV(send, recv, counts, impl); }, {send, recv});
  }
  absl::Status ReduceScatterV(const float* send, float* recv, const std::vector<int64_t>& counts,
                              CommImpl impl) override {
    return Do([=, this] { return use_->ReduceScatterV(send, recv, counts, impl); }, {send, recv});
  }
  absl::Status AllReduce(float* data, int64_t count) override {
    return Do([=, this] { return use_->AllReduce(data, count); }, {data});
  }
  absl::Status AllToAllV(const float* send, const std::vector<int64_t>& sc, float* recv,
                         const std::vector<int64_t>& rc) override {
    return Do([=, this] { return use_->AllToAllV(send, sc, recv, rc); }, {send, recv});
  }
  absl::Status Broadcast(float* data, int64_t count, int root) override {
    return Do([=, this] { return use_->Broadcast(data, count, root); }, {data});
  }
  absl::Status Barrier() override {
    x_->Synchronize().IgnoreError();
    return use_->Barrier();
  }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    x_->Synchronize().IgnoreError();
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, use_->Split(color, key));
    if (!sub) return sub;
    return std::unique_ptr<Communicator>(new StreamOrderedComm<X>(std::move(sub), x_));
  }

 private:
  absl::Status Do(std::function<absl::Status()> op, std::initializer_list<const void*> buffers) {
    bool device = true;
    for (const void* b : buffers) device = device && (b == nullptr || DeviceRanges::Contains(b));
    if (!device) {
      HS_RETURN_IF_ERROR(x_->Synchronize());
      return op();
    }
    x_->Enqueue([op, x = x_] { x->Fail(op()); });
    return absl::OkStatus();
  }
  std::unique_ptr<Communicator> c_;
  X* x_;
  Communicator* use_;
};

template <bool kComputeLate>
absl::StatusOr<std::unique_ptr<Communicator>> DeferredExecT<kComputeLate>::SplitOnto(Communicator& c,
                                                                                    DeferredExecT& onto) {
  // A communicator already ordered on the compute executor: split what it orders (a split of it
  // would queue on the compute executor again).
  Communicator* base = &c;
  if (auto* ordered = dynamic_cast<StreamOrderedComm<DeferredExecT>*>(&c)) {
    HS_RETURN_IF_ERROR(ordered->Drain());
    base = ordered->underlying();
  }
  HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, base->Split(0, base->rank()));
  return std::unique_ptr<Communicator>(new StreamOrderedComm<DeferredExecT>(std::move(sub), &onto));
}

using DeferredExec = DeferredExecT<false>;      // the communication stream runs late
using LateComputeExec = DeferredExecT<true>;    // both streams run late

}  // namespace hetsynth::runtime::gpu::testing
