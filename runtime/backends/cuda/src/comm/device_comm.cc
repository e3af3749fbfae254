// The in-process device communicator and RunVirtualGpus (gpu_comm.h).
//
// The ranks are host threads run by RunThreadRanks; its communicator serves here only as the
// barrier (with its abort-on-failure and timeout behaviour). Every collective is:
//   1. each rank records its "ready" event on its stream (everything it enqueued so far, e.g.
//      the kernel producing its send buffer) and publishes its Slot — what it was called with,
//      its buffer pointers — then all meet at a barrier;
//   2. every rank checks that the Slots agree (the same verdict everywhere: every rank reads the
//      same Slots) and whether the buffers are host or device memory;
//   3. device: each rank makes its stream wait for the peers' ready events and enqueues copies
//      and rank-order sums that read the peers' buffers (one GPU: one address space) and write
//      only its own; host: the same with memcpy and the same functors in a host loop;
//   4. each rank records its "done" event; after a barrier, it makes its stream wait for every
//      peer's done event, so nothing it enqueues later (reusing or freeing a buffer) runs while
//      a peer may still read its buffers.
// AllReduce has a middle round (rank r sums chunk r of everyone's data into its scratch; then
// every rank copies every chunk), ordered the same way with a "mid" event.
//
// Events are re-recorded only after a barrier that every peer passes after waiting on the
// previous record, so a wait never sees a newer record than the one it was meant for.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "comm/comm_kernels.h"
#include "comm/gpu_comm.h"
#include "exec/check.h"
#include "exec/launch.h"
#include "green.h"
#include "hetsynth/ir/status.h"
#include "hetsynth/runtime/comm_common.h"

namespace hetsynth::runtime::gpu {
namespace {

using comm_internal::Buffer;
using comm_internal::CallsDisagree;
using comm_internal::CheckAllGatherV;
using comm_internal::CheckAllReduce;
using comm_internal::CheckAllToAllV;
using comm_internal::CheckBroadcast;
using comm_internal::CheckReduceScatterV;
using comm_internal::Join;
using comm_internal::Mem;
using comm_internal::Offset;
using comm_internal::Op;
using comm_internal::OpName;
using comm_internal::VSizes;

const char* MemName(Mem m) {
  switch (m) {
    case Mem::kNone: return "no buffers";
    case Mem::kHost: return "host buffers";
    case Mem::kDevice: return "device buffers";
    case Mem::kMixed: return "host and device buffers";
  }
  return "?";
}

Mem Classify(std::initializer_list<Buffer> buffers) { return comm_internal::ClassifyMemory(buffers, IsDeviceMemory); }

// What one rank passed to the current collective. Written by its owner before the opening
// barrier, read by every rank until the closing one.
struct Slot {
  Op op = Op::kBarrier;
  CommImpl impl = CommImpl::kGrouped;
  std::vector<int64_t> counts;       // AllGatherV / ReduceScatterV counts; AllToAllV send counts
  std::vector<int64_t> recv_counts;  // AllToAllV
  int64_t count = 0;                 // AllReduce / Broadcast
  int root = 0;                      // Broadcast
  Mem mem = Mem::kNone;
  std::string error;                 // non-empty: this rank cannot take part (argument or CUDA)
  absl::StatusCode code = absl::StatusCode::kInvalidArgument;  // of `error`
  const float* send = nullptr;       // input (AllReduce / Broadcast: data)
  const float* scratch = nullptr;    // staging: padded shards, reduced chunks
};

// What the ranks share: their Slots and their events (none on host-only runs).
struct Shared {
  explicit Shared(int n) : slots(n) {}
  std::vector<Slot> slots;
  bool devices = false;
  std::vector<cudaEvent_t> ready, mid, done;  // per rank
};

// A staging buffer in device memory (from the rank's allocator) or host memory.
class Staging {
 public:
  // Zero-filled, n elements.
  absl::Status Make(GpuExec* x, bool device, int64_t n) {
    if (n <= 0) return absl::OkStatus();
    if (!device) {
      host_.assign(n, 0.0f);
      return absl::OkStatus();
    }
    dev_ = x->Make({n});
    if (!x->status().ok()) return x->status();
    return absl::OkStatus();
  }
  float* ptr() { return host_.empty() ? dev_.ptr() : host_.data(); }

 private:
  std::vector<float> host_;
  DeviceTensor dev_;
};

class DeviceComm final : public Communicator {
 public:
  DeviceComm(Shared* shared, Communicator* host, GpuExec* x)
      : sh_(shared), host_(host), x_(x), rank_(host->rank()), n_(host->size()) {}

  int rank() const override { return rank_; }
  int size() const override { return n_; }
  std::string name() const override { return "device"; }

  absl::Status AllGatherV(const float* send, float* recv, const std::vector<int64_t>& counts,
                          CommImpl impl) override {
    Slot s;
    s.op = Op::kAllGatherV;
    s.impl = impl;
    s.counts = counts;
    s.send = send;
    VSizes sz;
    s.error = CheckAllGatherV(send, recv, counts, n_, rank_, &sz);
    const int64_t m = sz.max, total = sz.total, mine = sz.mine;
    s.mem = Classify({{send, mine}, {recv, total}});
    Staging padded;
    if (s.error.empty() && impl == CommImpl::kPadded) {
      Prepare(s, padded, m, [&](float* p) { Copy(s.mem, p, send, mine); });
    }
    HS_RETURN_IF_ERROR(Enter(std::move(s)));
    const std::vector<Slot>& slots = sh_->slots;
    WaitPeers(sh_->ready);
    if (impl == CommImpl::kGrouped) {
      float* out = recv;
      for (int k = 0; k < n_; ++k) {
        if (counts[k] > 0 && slots[k].send != out) Copy(path_, out, slots[k].send, counts[k]);
        out += counts[k];
      }
    } else if (m > 0) {  // one equal-size all-gather of the padded shards, then unpadding
      Staging gathered;
      Note(gathered.Make(x_, path_ == Mem::kDevice, n_ * m));
      if (st_.ok()) {
        for (int k = 0; k < n_; ++k) Copy(path_, gathered.ptr() + k * m, slots[k].scratch, m);
        float* out = recv;
        for (int k = 0; k < n_; ++k) {
          Copy(path_, out, gathered.ptr() + k * m, counts[k]);
          out += counts[k];
        }
      }
      return Leave();  // frees `gathered` after: only this rank's stream uses it
    }
    return Leave();
  }

  absl::Status ReduceScatterV(const float* send, float* recv, const std::vector<int64_t>& counts,
                              CommImpl impl) override {
    Slot s;
    s.op = Op::kReduceScatterV;
    s.impl = impl;
    s.counts = counts;
    s.send = send;
    VSizes sz;
    s.error = CheckReduceScatterV(send, recv, counts, n_, rank_, &sz);
    const int64_t m = sz.max, total = sz.total, mine = sz.mine;
    s.mem = Classify({{send, total}, {recv, mine}});
    Staging padded;
    if (s.error.empty() && impl == CommImpl::kPadded) {
      Prepare(s, padded, n_ * m, [&](float* p) {
        const float* in = send;
        for (int k = 0; k < n_; ++k) {
          Copy(s.mem, p + k * m, in, counts[k]);
          in += counts[k];
        }
      });
    }
    HS_RETURN_IF_ERROR(Enter(std::move(s)));
    const std::vector<Slot>& slots = sh_->slots;
    WaitPeers(sh_->ready);
    if (mine > 0) {
      const int64_t at = impl == CommImpl::kGrouped ? Offset(counts, rank_) : rank_ * m;
      RankSum f{};
      f.n = n_;
      f.out = recv;
      for (int k = 0; k < n_; ++k) f.in[k] = (impl == CommImpl::kGrouped ? slots[k].send : slots[k].scratch) + at;
      Reduce(f, mine);
    }
    return Leave();
  }

  absl::Status AllReduce(float* data, int64_t count) override {
    Slot s;
    s.op = Op::kAllReduce;
    s.count = count;
    s.send = data;
    s.error = CheckAllReduce(data, count);
    s.mem = Classify({{data, count}});
    // Rank r reduces elements [chunk(r), chunk(r+1)) into its scratch; then all copy every chunk.
    auto chunk = [&](int r) { return count * r / n_; };
    const int64_t lo = s.error.empty() ? chunk(rank_) : 0;
    const int64_t len = s.error.empty() ? chunk(rank_ + 1) - lo : 0;
    Staging reduced;
    if (s.error.empty()) Prepare(s, reduced, len, [](float*) {});
    HS_RETURN_IF_ERROR(Enter(std::move(s)));
    const std::vector<Slot>& slots = sh_->slots;
    WaitPeers(sh_->ready);
    if (len > 0) {
      RankSum f{};
      f.n = n_;
      f.out = reduced.ptr();
      for (int k = 0; k < n_; ++k) f.in[k] = slots[k].send + lo;
      Reduce(f, len);
    }
    // Every chunk is reduced: nobody reads `data` any more; now all read the reduced chunks.
    HS_RETURN_IF_ERROR(Meet(sh_->mid));
    for (int k = 0; k < n_; ++k) {
      const int64_t klo = chunk(k), klen = chunk(k + 1) - klo;
      if (klen > 0) Copy(path_, data + klo, slots[k].scratch, klen);
    }
    return Leave();
  }

  absl::Status AllToAllV(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                         const std::vector<int64_t>& recv_counts) override {
    Slot s;
    s.op = Op::kAllToAllV;
    s.counts = send_counts;
    s.recv_counts = recv_counts;
    s.send = send;
    int64_t nsend = 0, nrecv = 0;
    s.error = CheckAllToAllV(send, send_counts, recv, recv_counts, n_, &nsend, &nrecv);
    s.mem = Classify({{send, nsend}, {recv, nrecv}});
    HS_RETURN_IF_ERROR(Enter(std::move(s)));
    const std::vector<Slot>& slots = sh_->slots;
    WaitPeers(sh_->ready);
    float* out = recv;
    for (int k = 0; k < n_; ++k) {
      if (recv_counts[k] > 0) Copy(path_, out, slots[k].send + Offset(slots[k].counts, rank_), recv_counts[k]);
      out += recv_counts[k];
    }
    return Leave();
  }

  absl::Status Broadcast(float* data, int64_t count, int root) override {
    Slot s;
    s.op = Op::kBroadcast;
    s.count = count;
    s.root = root;
    s.send = data;
    s.error = CheckBroadcast(data, count, root, n_);
    s.mem = Classify({{data, count}});
    HS_RETURN_IF_ERROR(Enter(std::move(s)));
    WaitPeers(sh_->ready);
    if (rank_ != root && count > 0) Copy(path_, data, sh_->slots[root].send, count);
    return Leave();
  }

  // On devices, also orders the streams: work any rank enqueues after the barrier runs after
  // the work every rank enqueued before it.
  absl::Status Barrier() override {
    Slot s;
    s.op = Op::kBarrier;
    HS_RETURN_IF_ERROR(Enter(std::move(s)));
    WaitPeers(sh_->ready);
    return Leave();
  }

 private:
  bool OnDevice() const { return path_ == Mem::kDevice; }
  cudaStream_t stream() const { return static_cast<cudaStream_t>(x_->stream()); }

  void Note(absl::Status s) {
    if (st_.ok() && !s.ok()) st_ = std::move(s);
  }

  // Allocates a zero-filled staging buffer of n elements in the slot's memory, fills it with
  // `fill` and publishes it; failures become the slot's error.
  template <class Fill>
  void Prepare(Slot& s, Staging& staging, int64_t n, const Fill& fill) {
    if (s.mem == Mem::kMixed || (s.mem == Mem::kDevice && x_ == nullptr)) return;  // Enter reports it
    st_ = absl::OkStatus();
    Note(staging.Make(x_, s.mem == Mem::kDevice, n));
    if (st_.ok() && n > 0) fill(staging.ptr());
    if (!st_.ok()) {
      s.error = st_.ToString();
      s.code = absl::StatusCode::kInternal;
    }
    s.scratch = staging.ptr();
  }

  // n elements, non-overlapping; on the stream for device memory.
  void Copy(Mem mem, float* dst, const float* src, int64_t n) {
    if (n <= 0 || !st_.ok()) return;
    if (mem == Mem::kDevice) {
      Note(HS_CUDA_STATUS(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float),
                                          cudaMemcpyDeviceToDevice, stream())));
    } else {
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    }
  }

  void Reduce(const RankSum& f, int64_t n) {
    if (n <= 0 || !st_.ok()) return;
    if (OnDevice()) {
      LaunchFor(x_->stream(), n, f);
      Note(HS_CUDA_STATUS(cudaGetLastError()));
    } else {
      for (int64_t i = 0; i < n; ++i) f(i);
    }
  }

  // Device path: this rank's stream waits for the peers' last record of `events`.
  void WaitPeers(const std::vector<cudaEvent_t>& events) {
    if (!OnDevice()) return;
    for (int k = 0; k < n_; ++k) {
      if (k != rank_) Note(HS_CUDA_STATUS(cudaStreamWaitEvent(stream(), events[k], 0)));
    }
  }

  std::string Where() const { return StrCat("device ", OpName(op_), " (collective #", seq_, ", rank ", rank_, "): "); }

  // A barrier that fails (abort, timeout) ends the collective at once on every rank.
  absl::Status HostBarrier() {
    absl::Status s = host_->Barrier();
    if (s.ok()) return s;
    return absl::Status(s.code(), StrCat(Where(), s.message()));
  }

  // Device: records `events[rank]`, meets the others and waits for their records of it.
  absl::Status Meet(const std::vector<cudaEvent_t>& events) {
    if (OnDevice() && st_.ok()) Note(HS_CUDA_STATUS(cudaEventRecord(events[rank_], stream())));
    HS_RETURN_IF_ERROR(HostBarrier());
    WaitPeers(events);
    return absl::OkStatus();
  }

  // Publishes this rank's slot (after recording "ready"), meets the others and checks that the
  // slots agree; on disagreement every rank fails alike.
  absl::Status Enter(Slot s) {
    ++seq_;
    op_ = s.op;
    st_ = absl::OkStatus();
    if (x_ != nullptr && s.error.empty()) {
      absl::Status rec = HS_CUDA_STATUS(cudaEventRecord(sh_->ready[rank_], stream()));
      if (!rec.ok()) {
        s.error = rec.ToString();
        s.code = absl::StatusCode::kInternal;
      }
    }
    sh_->slots[rank_] = std::move(s);
    HS_RETURN_IF_ERROR(HostBarrier());
    absl::Status verdict = Verdict();
    if (verdict.ok()) return verdict;
    HS_RETURN_IF_ERROR(HostBarrier());  // the others still read our slot
    return verdict;
  }

  // Closes the collective: device ranks record "done", meet, and wait for the peers' "done".
  absl::Status Leave() {
    HS_RETURN_IF_ERROR(Meet(sh_->done));
    if (st_.ok()) return st_;
    return absl::Status(st_.code(), StrCat(Where(), st_.message()));
  }

  // Whether the ranks' slots fit together (the same verdict on every rank); sets path_.
  absl::Status Verdict() {
    const std::vector<Slot>& slots = sh_->slots;
    auto fail = [&](absl::StatusCode code, const std::string& why) {
      return absl::Status(code, StrCat(Where(), why));
    };
    for (int r = 0; r < n_; ++r) {
      if (!slots[r].error.empty()) return fail(slots[r].code, StrCat("rank ", r, ": ", slots[r].error));
    }
    const std::string why = CallsDisagree(slots);
    if (!why.empty()) return fail(absl::StatusCode::kInvalidArgument, why);
    // Host or device: one kind of memory per collective, the same on every rank.
    int host_rank = -1, device_rank = -1;
    for (int r = 0; r < n_; ++r) {
      if (slots[r].mem == Mem::kMixed) {
        return fail(absl::StatusCode::kInvalidArgument,
                    StrCat("rank ", r, " passed both host and device buffers; pass one kind per call"));
      }
      if (slots[r].mem == Mem::kHost && host_rank < 0) host_rank = r;
      if (slots[r].mem == Mem::kDevice && device_rank < 0) device_rank = r;
    }
    if (host_rank >= 0 && device_rank >= 0) {
      return fail(absl::StatusCode::kInvalidArgument,
                  StrCat("rank ", host_rank, " passed ", MemName(Mem::kHost), " but rank ", device_rank, " passed ",
                         MemName(Mem::kDevice), "; every rank must pass the same kind of memory"));
    }
    if (device_rank >= 0 && !sh_->devices) {
      return fail(absl::StatusCode::kInvalidArgument,
                  StrCat("rank ", device_rank, " passed device buffers to a communicator without devices"));
    }
    // A barrier orders the streams whenever there are any.
    path_ = device_rank >= 0 || (slots[0].op == Op::kBarrier && sh_->devices) ? Mem::kDevice : Mem::kHost;
    return absl::OkStatus();
  }

  Shared* sh_;
  Communicator* host_;  // the thread communicator: barriers only
  GpuExec* x_;          // null on host-only runs
  const int rank_, n_;
  int64_t seq_ = 0;         // collectives so far, for messages
  Op op_ = Op::kBarrier;    // the one in progress
  Mem path_ = Mem::kHost;   // how it moves data
  absl::Status st_;         // its first CUDA failure
};

// Everything RunVirtualGpus creates, destroyed in reverse (streams synchronized first).
struct VirtualGpus {
  int device = 0;
  std::unique_ptr<GreenContexts> green;
  std::vector<cudaStream_t> plain;  // green == nullptr
  std::vector<std::unique_ptr<GpuExec>> execs;
  Shared shared{0};

  ~VirtualGpus() {
    cudaSetDevice(device);
    execs.clear();  // synchronizes each stream
    for (auto* events : {&shared.ready, &shared.mid, &shared.done}) {
      for (cudaEvent_t e : *events) cudaEventDestroy(e);
    }
    for (cudaStream_t s : plain) cudaStreamDestroy(s);
    green.reset();
  }
};

absl::Status CheckRankCount(int n, double timeout_s, const char* who) {
  if (n < 1 || n > kMaxCommRanks) {
    return absl::InvalidArgumentError(StrCat(who, ": ", n, " ranks; expected 1 to ", kMaxCommRanks));
  }
  if (!(timeout_s > 0)) {
    return absl::InvalidArgumentError(StrCat(who, ": timeout_s = ", timeout_s, "; expected a positive number of seconds"));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsDeviceMemory(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

absl::Status RunDeviceCommOnHost(int n, const std::function<absl::Status(Communicator&)>& fn, double timeout_s) {
  HS_RETURN_IF_ERROR(CheckRankCount(n, timeout_s, "RunDeviceCommOnHost"));
  Shared shared(n);
  return RunThreadRanks(
      n,
      [&](Communicator& host) -> absl::Status {
        DeviceComm comm(&shared, &host, nullptr);
        return fn(comm);
      },
      timeout_s);
}

absl::Status RunVirtualGpus(const std::vector<double>& speeds,
                            const std::function<absl::Status(Communicator&, GpuExec&)>& fn, VirtualGpuOptions opt) {
  const std::string bad = CheckSpeeds(speeds, kMaxCommRanks);
  if (!bad.empty()) return absl::InvalidArgumentError(StrCat("RunVirtualGpus: ", bad));
  const int n = static_cast<int>(speeds.size());
  HS_RETURN_IF_ERROR(CheckRankCount(n, opt.timeout_s, "RunVirtualGpus"));
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || opt.device < 0 || opt.device >= count) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        StrCat("RunVirtualGpus: CUDA device ", opt.device, " is not available (", count, " visible",
               err != cudaSuccess ? StrCat("; cudaGetDeviceCount: ", cudaGetErrorString(err)) : std::string(), ")"));
  }

  VirtualGpus v;
  v.device = opt.device;
  HS_CUDA_RETURN(cudaSetDevice(opt.device));
  VirtualGpuLayout layout;
  layout.green = opt.green;
  HS_CUDA_RETURN(cudaDeviceGetAttribute(&layout.device_sms, cudaDevAttrMultiProcessorCount, opt.device));
  std::vector<void*> streams(n);
  if (opt.green) {
    HS_ASSIGN_OR_RETURN(v.green, GreenContexts::Create(opt.device, speeds, opt.fine_grained));
    layout.group_sms = v.green->group_sms();
    layout.groups = v.green->groups();
    layout.sm_counts = v.green->sm_counts();
    for (int r = 0; r < n; ++r) streams[r] = v.green->stream(r);
  } else {
    layout.sm_counts.assign(n, layout.device_sms);
    for (int r = 0; r < n; ++r) {
      cudaStream_t s = nullptr;
      HS_CUDA_RETURN(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      v.plain.push_back(s);
      streams[r] = s;
    }
  }
  for (int r = 0; r < n; ++r) {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<GpuExec> x,
                        GpuExec::Create({.device = opt.device, .precision = opt.precision, .stream = streams[r],
                                         .sm_count = layout.green ? layout.sm_counts[static_cast<size_t>(r)] : 0}));
    v.execs.push_back(std::move(x));
  }
  v.shared = Shared(n);
  v.shared.devices = true;
  for (auto* events : {&v.shared.ready, &v.shared.mid, &v.shared.done}) {
    for (int r = 0; r < n; ++r) {
      cudaEvent_t e = nullptr;
      HS_CUDA_RETURN(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      events->push_back(e);
    }
  }
  if (opt.layout) *opt.layout = layout;

  absl::Status status = RunThreadRanks(
      n,
      [&](Communicator& host) -> absl::Status {
        const int r = host.rank();
        HS_CUDA_RETURN(cudaSetDevice(opt.device));  // the runtime's current device is per thread
        DeviceComm comm(&v.shared, &host, v.execs[r].get());
        absl::Status s = fn(comm, *v.execs[r]);
        // The rank's queued work (its collectives' reads of the peers' buffers included) ends
        // before any peer can free what it reads: every rank synchronizes before it returns.
        absl::Status synced = v.execs[r]->Synchronize();
        return s.ok() ? synced : s;
      },
      opt.timeout_s);
  for (int r = 0; r < n; ++r) {
    absl::Status s = v.execs[r]->Synchronize();
    if (status.ok() && !s.ok()) status = s;
  }
  return status;
}

}  // namespace hetsynth::runtime::gpu
