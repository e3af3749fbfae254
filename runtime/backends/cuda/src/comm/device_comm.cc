// The in-process device communicator and RunVirtualGpus (gpu_comm.h).
//
// The protocol is the in-process communicator's (comm_inprocess.h: the rendezvous, argument
// agreement, abort on failure, deadlines, Split), the same code the thread ranks run; what
// differs is how bytes move, which is DeviceMover below: device-to-device copies and rank-order
// sum kernels (RankSum) on the calling rank's stream, ordered after the peers' work with CUDA
// events — each rank records "ready" before the opening barrier and its stream waits for the
// peers' "ready" before reading their buffers; AllReduce's middle round uses "mid"; "done" after
// the closing barrier keeps a rank from reusing or freeing a buffer a peer's stream still
// reads. Host buffers (RunDeviceCommOnHost; or host floats on virtual GPUs) move by memcpy and
// host sums with the same bits.
//
// Events are re-recorded only after a barrier that every peer passes after waiting on the
// previous record, so a wait never sees a newer record than the one it was meant for. A group
// made by Split has its own events (made by its first rank).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "comm/comm_kernels.h"
#include "comm/gpu_comm.h"
#include "exec/check.h"
#include "exec/launch.h"
#include "green.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm_common.h"
#include "hetsynth/runtime/comm_inprocess.h"

namespace hetsynth::runtime::gpu {
namespace {

using comm_internal::Buffer;
using comm_internal::Event;
using comm_internal::InProcessComm;
using comm_internal::Mem;
using comm_internal::Rendezvous;

// What the ranks of one group share: one event per rank for each ordering point (none on
// host-only runs).
struct DeviceGroup {
  int device = 0;
  bool devices = false;
  std::vector<cudaEvent_t> ready, mid, done;  // per rank

  // n events of each kind on `device` (the calling thread's current device).
  static absl::StatusOr<std::shared_ptr<DeviceGroup>> Make(int device, int n) {
    auto g = std::make_shared<DeviceGroup>();
    g->device = device;
    g->devices = true;
    for (auto* events : {&g->ready, &g->mid, &g->done}) {
      for (int r = 0; r < n; ++r) {
        cudaEvent_t e = nullptr;
        HS_CUDA_RETURN(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        events->push_back(e);
      }
    }
    return g;
  }
  // An event still awaited by a stream is destroyed once it completes (CUDA's rule), so the
  // last member to drop the group may destroy them.
  ~DeviceGroup() {
    for (auto* events : {&ready, &mid, &done}) {
      for (cudaEvent_t e : *events) cudaEventDestroy(e);
    }
  }
};

// Device buffers move on the rank's stream; host buffers on the host.
class DeviceMover {
 public:
  static constexpr const char* kName = "device";

  DeviceMover(std::shared_ptr<DeviceGroup> group, int rank, GpuExec* x) : g_(std::move(group)), rank_(rank), x_(x) {}

  bool devices() const { return g_->devices && x_ != nullptr; }
  // Moves this rank's bytes on x's stream and stages them in x's allocator from now on (a split
  // made for a communication stream; before its first collective, so no scratch is held).
  void Rebind(GpuExec* x) {
    dev_[0] = DeviceTensor();
    dev_[1] = DeviceTensor();
    x_ = x;
  }
  Mem Classify(std::initializer_list<Buffer> buffers) const {
    return comm_internal::ClassifyMemory(buffers, IsDeviceMemory);
  }

  // Device staging comes from the rank's allocator, one buffer per call (freed in stream order
  // at the next call: the stream has waited for every peer's "done" by then).
  absl::StatusOr<float*> Scratch(int slot, bool device, int64_t n) {
    if (!device) {
      std::vector<float>& v = host_[slot];
      if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
      return v.data();
    }
    dev_[slot] = DeviceTensor();
    if (n <= 0) return nullptr;
    dev_[slot] = x_->Make({n});
    if (!x_->status().ok()) return x_->status();
    return dev_[slot].ptr();
  }

  absl::Status Copy(bool device, float* dst, const float* src, int64_t n) {
    if (!device) {
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return absl::OkStatus();
    }
    return HS_CUDA_STATUS(
        cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice, stream()));
  }

  absl::Status Sum(bool device, const float* const* in, int k, float* out, int64_t n) {
    RankSum f{};
    f.n = k;
    f.out = out;
    for (int r = 0; r < k; ++r) f.in[r] = in[r];
    if (!device) {
      for (int64_t i = 0; i < n; ++i) f(i);
      return absl::OkStatus();
    }
    LaunchFor(x_->stream(), n, f);
    return HS_CUDA_STATUS(cudaGetLastError());
  }

  absl::Status Record(Event e) { return HS_CUDA_STATUS(cudaEventRecord(Events(e)[rank_], stream())); }
  // This rank's stream waits for the peers' last record of e.
  absl::Status WaitPeers(Event e) {
    const std::vector<cudaEvent_t>& events = Events(e);
    for (int k = 0; k < static_cast<int>(events.size()); ++k) {
      if (k != rank_) HS_RETURN_IF_ERROR(HS_CUDA_STATUS(cudaStreamWaitEvent(stream(), events[k], 0)));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::shared_ptr<void>> MakeGroup(int n) const {
    if (!devices()) return std::shared_ptr<void>(std::make_shared<DeviceGroup>());
    HS_ASSIGN_OR_RETURN(std::shared_ptr<DeviceGroup> g, DeviceGroup::Make(g_->device, n));
    return std::shared_ptr<void>(std::move(g));
  }
  DeviceMover Join(std::shared_ptr<void> group, int rank) const {
    return DeviceMover(std::static_pointer_cast<DeviceGroup>(std::move(group)), rank, x_);
  }

  absl::Status ConcurrentUse() const {
    return absl::FailedPreconditionError(
        "device: collectives enqueue work on the rank's stream and allocator (its GpuExec), which one thread uses "
        "at a time; run them on the rank's thread");
  }

 private:
  cudaStream_t stream() const { return static_cast<cudaStream_t>(x_->stream()); }
  const std::vector<cudaEvent_t>& Events(Event e) const {
    return e == Event::kReady ? g_->ready : e == Event::kMid ? g_->mid : g_->done;
  }

  std::shared_ptr<DeviceGroup> g_;
  int rank_;
  GpuExec* x_;  // null on host-only runs
  std::vector<float> host_[2];
  DeviceTensor dev_[2];
};

using DeviceComm = InProcessComm<DeviceMover>;

// Everything RunVirtualGpus creates, destroyed in reverse (streams synchronized first).
struct VirtualGpus {
  int device = 0;
  std::unique_ptr<GreenContexts> green;
  std::vector<cudaStream_t> plain;  // green == nullptr
  std::vector<std::unique_ptr<GpuExec>> execs;
  std::shared_ptr<DeviceGroup> group;

  ~VirtualGpus() {
    cudaSetDevice(device);
    execs.clear();  // synchronizes each stream
    group.reset();
    for (cudaStream_t s : plain) cudaStreamDestroy(s);
    green.reset();
  }
};

// Every kind of work the ranks issue on their streams, tried once on each green context's stream
// before any rank runs: an event made with the primary context current recorded there and waited
// on by the next stream, a copy, a kernel, a GEMM, and events to and from a plain second stream
// (the communication stream of overlapped plans). A driver that refuses one (the rules for
// events and streams of different contexts are the least documented part of green contexts)
// fails here as FailedPrecondition — which callers answer with plain streams — instead of in
// a rank's first collective.
absl::Status TryGreenStreams(const std::vector<std::unique_ptr<GpuExec>>& execs) {
  const int n = static_cast<int>(execs.size());
  for (int r = 0; r < n; ++r) {
    GpuExec& x = *execs[static_cast<size_t>(r)];
    auto failed = [&](const std::string& what, const absl::Status& why) {
      cudaGetLastError();  // clears a non-sticky error, so plain streams can still be tried
      return absl::FailedPreconditionError(
          StrCat("green contexts: ", what, " on virtual device ", r, "'s stream failed (", why.message(), ")"));
    };
    GpuExec& next = *execs[static_cast<size_t>((r + 1) % n)];
    next.WaitMark(x.Mark());
    if (absl::Status st = x.status().ok() ? next.status() : x.status(); !st.ok()) {
      return failed("an event recorded and waited for", st);
    }
    DeviceTensor a = x.Make({16}), b = x.Make({16}), c = x.Make({16});
    x.Copy(b.ptr(), a.ptr(), 16);
    RankSum f{};
    f.n = 2;
    f.in[0] = a.ptr();
    f.in[1] = b.ptr();
    f.out = c.ptr();
    x.For(16, f);
    x.Gemm(GemmArgs{.m = 4, .n = 4, .k = 4}, a.ptr(), b.ptr(), c.ptr());
    // The communication stream of overlapped plans (GpuExec::Fork: a plain stream) and this
    // one wait for each other's events.
    absl::StatusOr<std::unique_ptr<GpuExec>> fork = x.Fork();
    if (!fork.ok()) return failed("making a second stream", fork.status());
    (*fork)->WaitMark(x.Mark());
    (*fork)->Copy(c.ptr(), b.ptr(), 16);
    x.WaitMark((*fork)->Mark());
    absl::Status st = (*fork)->Synchronize();
    if (st.ok()) st = x.Synchronize();
    if (!st.ok()) return failed("a copy, a kernel, a GEMM or an event between it and a plain stream", st);
  }
  return absl::OkStatus();
}

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

absl::StatusOr<std::unique_ptr<Communicator>> SplitOnto(Communicator& comm, GpuExec& x) {
  if (auto* device = dynamic_cast<DeviceComm*>(&comm)) {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, device->Split(0, device->rank()));
    static_cast<DeviceComm&>(*sub).mover().Rebind(&x);
    return sub;
  }
  if (comm.name() == "nccl") return NcclSplitOnto(comm, x);
  return absl::FailedPreconditionError(
      StrCat("SplitOnto: a '", comm.name(), "' communicator; a communication stream needs an NCCL or a device one"));
}

absl::Status RunDeviceCommOnHost(int n, const std::function<absl::Status(Communicator&)>& fn, double timeout_s) {
  HS_RETURN_IF_ERROR(CheckRankCount(n, timeout_s, "RunDeviceCommOnHost"));
  auto group = std::make_shared<DeviceGroup>();  // no devices: every buffer must be host memory
  auto root = std::make_shared<Rendezvous>(Rendezvous::Identity(n), timeout_s);
  return comm_internal::RunOnThreads(*root, "device", [&](int r) {
    DeviceComm comm(root, DeviceMover(group, r, nullptr), r);
    return fn(comm);
  });
}

namespace {

// RunVirtualGpus' device side: streams (green contexts' when `green`), one GpuExec each, the
// device communicator's events; layout says what each virtual device got.
absl::Status SetUpVirtualGpus(VirtualGpus& v, const std::vector<double>& speeds, const VirtualGpuOptions& opt, bool green,
                              VirtualGpuLayout& layout) {
  const int n = static_cast<int>(speeds.size());
  v.device = opt.device;
  HS_CUDA_RETURN(cudaSetDevice(opt.device));
  layout.green = green;
  HS_CUDA_RETURN(cudaDeviceGetAttribute(&layout.device_sms, cudaDevAttrMultiProcessorCount, opt.device));
  std::vector<void*> streams(n);
  if (green) {
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
                                         .sm_count = green ? layout.sm_counts[static_cast<size_t>(r)] : 0}));
    v.execs.push_back(std::move(x));
  }
  HS_ASSIGN_OR_RETURN(v.group, DeviceGroup::Make(opt.device, n));
  if (green) HS_RETURN_IF_ERROR(TryGreenStreams(v.execs));
  return absl::OkStatus();
}

}  // namespace

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

  auto v = std::make_unique<VirtualGpus>();
  VirtualGpuLayout layout;
  absl::Status set_up = SetUpVirtualGpus(*v, speeds, opt, opt.green, layout);
  if (!set_up.ok() && opt.green && opt.plain_if_green_fails && set_up.code() == absl::StatusCode::kFailedPrecondition) {
    const std::string why(set_up.message());
    v.reset();  // synchronizes and frees what the green attempt made
    v = std::make_unique<VirtualGpus>();
    layout = VirtualGpuLayout();
    set_up = SetUpVirtualGpus(*v, speeds, opt, /*green=*/false, layout);
    layout.green_failed = why;
  }
  HS_RETURN_IF_ERROR(set_up);
  if (opt.layout) *opt.layout = layout;

  auto root = std::make_shared<Rendezvous>(Rendezvous::Identity(n), opt.timeout_s);
  absl::Status status = comm_internal::RunOnThreads(*root, "device", [&](int r) -> absl::Status {
    HS_CUDA_RETURN(cudaSetDevice(opt.device));  // the runtime's current device is per thread
    absl::Status s;
    {
      DeviceComm comm(root, DeviceMover(v->group, r, v->execs[r].get()), r);
      s = fn(comm, *v->execs[r]);
    }
    // The rank's queued work (its collectives' reads of the peers' buffers included) ends
    // before any peer can free what it reads: every rank synchronizes before it returns.
    absl::Status synced = v->execs[r]->Synchronize();
    return s.ok() ? synced : s;
  });
  for (int r = 0; r < n; ++r) {
    absl::Status s = v->execs[r]->Synchronize();
    if (status.ok() && !s.ok()) status = s;
  }
  return status;
}

}  // namespace hetsynth::runtime::gpu
