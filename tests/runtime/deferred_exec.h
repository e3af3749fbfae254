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
#include "exec/gemm_args.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime::gpu::testing {

// Freed storage, poisoned; kept until Release() (between test cases).
class Graveyard {
 public:
  static void Park(std::vector<float>&& v) {
    std::fill(v.begin(), v.end(), std::nanf(""));
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

// A move-only tensor like DeviceTensor whose storage goes to the graveyard when freed.
class ParkedTensor {
 public:
  ir::Shape shape;

  ParkedTensor() = default;
  explicit ParkedTensor(ir::Shape s) : shape(std::move(s)), data_(static_cast<size_t>(ir::NumElements(shape)), 0.0f) {
    if (!data_.empty()) DeviceRanges::Add(data_.data(), data_.size());
  }
  ParkedTensor(ParkedTensor&& o) noexcept { *this = std::move(o); }
  ParkedTensor& operator=(ParkedTensor&& o) noexcept {
    if (this != &o) {
      Free();
      shape = std::move(o.shape);
      data_ = std::move(o.data_);
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
      Graveyard::Park(std::move(data_));
    }
    data_.clear();
  }
  std::vector<float> data_;
};

class DeferredExec {
 public:
  using Tensor = ParkedTensor;
  static constexpr bool kOnGpu = false;

  DeferredExec() = default;
  DeferredExec(const DeferredExec&) = delete;
  DeferredExec& operator=(const DeferredExec&) = delete;
  ~DeferredExec() { Flush(); }

  Tensor Make(ir::Shape shape) { return Tensor(std::move(shape)); }  // fresh memory, zeroed
  template <class F>
  void For(int64_t n, const F& f) {
    Run([f, n] {
      for (int64_t i = 0; i < n; ++i) f(i);
    });
  }
  void Gemm(const GemmArgs& g, const float* a, const float* b, float* c) {
    Run([g, a, b, c] {
      for (int64_t i = 0; i < g.batch; ++i) {
        runtime::Gemm(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, a + i * g.stride_a, b + i * g.stride_b, g.beta,
                      c + i * g.stride_c);
      }
    });
  }
  void Zero(float* p, int64_t n) {
    Run([p, n] { std::fill(p, p + n, 0.0f); });
  }
  void Copy(float* dst, const float* src, int64_t n) {
    Run([dst, src, n] {
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    });
  }
  float Read(const float* p) {
    Flush();
    return *p;
  }
  Tensor Upload(const runtime::Tensor& t) {
    Flush();
    Tensor out(t.shape);
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
    Tensor out(t.shape);
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
  static absl::StatusOr<std::unique_ptr<Communicator>> SplitOnto(Communicator& c, DeferredExec& onto);
  // Queues work on this executor (at once on one that is not late).
  void Enqueue(std::function<void()> work) { Run(std::move(work)); }

  // The forked executor runs late (see the top of this file).
  absl::StatusOr<std::unique_ptr<DeferredExec>> Fork() {
    auto x = std::make_unique<DeferredExec>();
    x->late_ = true;
    return x;
  }
  // A mark: this executor and how much work had been issued to it. Waiting for it runs the
  // queued work up to there — not what was issued after (a device would not have either).
  struct Point {
    DeferredExec* x;
    size_t issued;
  };
  std::shared_ptr<void> Mark() { return std::make_shared<Point>(Point{this, issued_}); }
  void WaitMark(const std::shared_ptr<void>& mark) {
    if (!mark) return;
    const Point& p = *static_cast<const Point*>(mark.get());
    if (p.x != this) p.x->RunUpTo(p.issued);
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
  absl::Status status_;
  size_t issued_ = 0, ran_ = 0;
  std::deque<std::function<void()>> queue_;
};

// DeferredExec::SplitOnto's communicator: a collective whose buffers are all device memory (or
// null) goes to the executor's queue, the rest (host floats) runs at once after the queue.
class StreamOrderedComm final : public Communicator {
 public:
  StreamOrderedComm(std::unique_ptr<Communicator> c, DeferredExec* x) : c_(std::move(c)), x_(x) {}
  int rank() const override { return c_->rank(); }
  int size() const override { return c_->size(); }
  std::string name() const override { return c_->name(); }
  absl::Status AllGatherV(const float* send, float* recv, const std::vector<int64_t>& counts, CommImpl impl) override {
    return Do([=, this] { return c_->AllGatherV(send, recv, counts, impl); }, {send, recv});
  }
  absl::Status ReduceScatterV(const float* send, float* recv, const std::vector<int64_t>& counts,
                              CommImpl impl) override {
    return Do([=, this] { return c_->ReduceScatterV(send, recv, counts, impl); }, {send, recv});
  }
  absl::Status AllReduce(float* data, int64_t count) override {
    return Do([=, this] { return c_->AllReduce(data, count); }, {data});
  }
  absl::Status AllToAllV(const float* send, const std::vector<int64_t>& sc, float* recv,
                         const std::vector<int64_t>& rc) override {
    return Do([=, this] { return c_->AllToAllV(send, sc, recv, rc); }, {send, recv});
  }
  absl::Status Broadcast(float* data, int64_t count, int root) override {
    return Do([=, this] { return c_->Broadcast(data, count, root); }, {data});
  }
  absl::Status Barrier() override {
    x_->Synchronize().IgnoreError();
    return c_->Barrier();
  }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    x_->Synchronize().IgnoreError();
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, c_->Split(color, key));
    if (!sub) return sub;
    return std::unique_ptr<Communicator>(new StreamOrderedComm(std::move(sub), x_));
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
  DeferredExec* x_;
};

inline absl::StatusOr<std::unique_ptr<Communicator>> DeferredExec::SplitOnto(Communicator& c, DeferredExec& onto) {
  HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, c.Split(0, c.rank()));
  return std::unique_ptr<Communicator>(new StreamOrderedComm(std::move(sub), &onto));
}

}  // namespace hetsynth::runtime::gpu::testing
