// The NCCL communicator (gpu_comm.h): device buffers through NCCL on the GpuExec's stream, host
// buffers through the host communicator it holds (MPI; a one-rank loopback for NcclSingle).
//
// Before moving data every collective agrees on its arguments through the host communicator:
// each rank contributes a small fingerprint (collective, implementation, hash of the counts,
// count, root, whether its own arguments were valid, host or device memory), so mismatched
// calls fail on every rank alike instead of hanging inside NCCL. A failure inside NCCL after
// that (a CUDA error on one rank) can still leave the others waiting in NCCL.
//
// Split is ncclCommSplit (NCCL >= 2.18) after a Split of the host communicator (MPI_Comm_split),
// both ranking by (key, rank), so the two stay paired. Compiled here; it needs GPUs to run
// (one rank per GPU), so only the one-rank case is tested (Nccl.* in gpu_comm_test, on a GPU).
//
// Sums: ncclAllReduce / ncclReduce / ncclReduceScatter add in an order NCCL chooses (rings,
// trees; not rank order), so unlike the CPU and the in-process device communicators the bits
// may differ from a rank-order sum (they are the same on every rank for AllReduce).
#include "comm/gpu_comm.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "exec/check.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm_common.h"

#if defined(HETSYNTH_HAVE_NCCL)
#include <nccl.h>
#endif

namespace hetsynth::runtime::gpu {

#if !defined(HETSYNTH_HAVE_NCCL)

bool NcclAvailable() { return false; }

absl::StatusOr<std::unique_ptr<Communicator>> NcclWorld(GpuExec&) {
  return absl::FailedPreconditionError(
      "nccl: this build has no NCCL (install libnccl-dev or the CUDA image's NCCL and reconfigure)");
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclSingle(GpuExec& x) { return NcclWorld(x); }

absl::StatusOr<std::unique_ptr<Communicator>> NcclSplitOnto(Communicator&, GpuExec& x) { return NcclWorld(x); }

#else

namespace {

using comm_internal::Buffer;
using comm_internal::CheckAllGatherV;
using comm_internal::CheckAllReduce;
using comm_internal::CheckAllToAllV;
using comm_internal::CheckBroadcast;
using comm_internal::CheckCounts;
using comm_internal::CheckReduceScatterV;
using comm_internal::FingerprintsDisagree;
using comm_internal::HashCounts;
using comm_internal::Join;
using comm_internal::Mem;
using comm_internal::Offset;
using comm_internal::Op;
using comm_internal::OpName;
using comm_internal::VSizes;

// 64-bit values through a float communicator, exactly: four 16-bit pieces per value.
constexpr int kFloatsPerInt = 4;
void Encode(int64_t v, float* out) {
  const uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < kFloatsPerInt; ++i) out[i] = static_cast<float>((u >> (16 * i)) & 0xffff);
}
int64_t Decode(const float* in) {
  uint64_t u = 0;
  for (int i = 0; i < kFloatsPerInt; ++i) u |= static_cast<uint64_t>(in[i]) << (16 * i);
  return static_cast<int64_t>(u);
}

Mem Classify(std::initializer_list<Buffer> buffers) { return comm_internal::ClassifyMemory(buffers, IsDeviceMemory); }

absl::Status NcclError(const std::string& where, const char* call, ncclResult_t rc, ncclComm_t comm,
                       const char* file, int line) {
  const char* last = ncclGetLastError(comm);
  return absl::InternalError(StrCat(where, "nccl: ", call, " failed (", file, ":", line, "): ", ncclGetErrorString(rc),
                                    last && *last ? StrCat("; ", last) : std::string()));
}

// Calls an NCCL function and returns its error as a status naming it.
#define HS_NCCL(call)                                                                            \
  do {                                                                                           \
    const ncclResult_t hs_nccl_rc_ = (call);                                                     \
    if (hs_nccl_rc_ != ncclSuccess) return NcclError(Where(), #call, hs_nccl_rc_, comm_, __FILE__, __LINE__); \
  } while (0)

// The host side of NcclSingle: a world of one.
class SelfComm final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "self"; }

  absl::Status AllGatherV(const float* send, float* recv, const std::vector<int64_t>& counts, CommImpl) override {
    HS_RETURN_IF_ERROR(Check(CheckCounts(counts, 1, "counts")));
    if (counts[0] > 0 && (send == nullptr || recv == nullptr)) return Check("send or recv is null but counts[0] > 0");
    return Move(recv, send, counts[0]);
  }
  absl::Status ReduceScatterV(const float* send, float* recv, const std::vector<int64_t>& counts, CommImpl) override {
    return AllGatherV(send, recv, counts, CommImpl::kGrouped);
  }
  absl::Status AllReduce(float* data, int64_t count) override {
    if (count < 0 || (count > 0 && data == nullptr)) return Check(StrCat("count = ", count, " with data ", data));
    return absl::OkStatus();
  }
  absl::Status AllToAllV(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                         const std::vector<int64_t>& recv_counts) override {
    HS_RETURN_IF_ERROR(Check(CheckCounts(send_counts, 1, "send_counts")));
    HS_RETURN_IF_ERROR(Check(CheckCounts(recv_counts, 1, "recv_counts")));
    if (send_counts[0] != recv_counts[0]) {
      return Check(StrCat("rank 0 sends ", send_counts[0], " elements to itself but expects ", recv_counts[0]));
    }
    if (send_counts[0] > 0 && (send == nullptr || recv == nullptr)) return Check("send or recv is null");
    return Move(recv, send, send_counts[0]);
  }
  absl::Status Broadcast(float* data, int64_t count, int root) override {
    if (root != 0) return Check(StrCat("root = ", root, "; expected a rank in [0, 1)"));
    return AllReduce(data, count);
  }
  absl::Status Barrier() override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int) override {
    HS_RETURN_IF_ERROR(Check(comm_internal::CheckSplit(color)));
    if (color == kNoColor) return std::unique_ptr<Communicator>();
    return std::unique_ptr<Communicator>(new SelfComm());
  }
  absl::Status CheckConcurrentUse() const override { return absl::OkStatus(); }

 private:
  static absl::Status Check(const std::string& error) {
    return error.empty() ? absl::OkStatus() : absl::InvalidArgumentError(StrCat("self: ", error));
  }
  static absl::Status Move(float* dst, const float* src, int64_t n) {
    if (n > 0 && dst != src) std::memmove(dst, src, static_cast<size_t>(n) * sizeof(float));
    return absl::OkStatus();
  }
};

class NcclComm final : public Communicator {
 public:
  NcclComm(std::unique_ptr<Communicator> host, GpuExec* x, ncclComm_t comm)
      : host_(std::move(host)), x_(x), comm_(comm), rank_(host_->rank()), n_(host_->size()) {}
  ~NcclComm() override {
    cudaSetDevice(x_->device());
    cudaStreamSynchronize(stream());
    ncclCommFinalize(comm_);
    ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return n_; }
  std::string name() const override { return "nccl"; }

  absl::Status AllGatherV(const float* send, float* recv, const std::vector<int64_t>& counts,
                          CommImpl impl) override {
    VSizes sz;
    const std::string error = CheckAllGatherV(send, recv, counts, n_, rank_, &sz);
    const int64_t m = sz.max, total = sz.total, mine = sz.mine, at = sz.offset;
    const Mem mem = Classify({{send, mine}, {recv, total}});
    bool device = false;
    HS_RETURN_IF_ERROR(Agree(Op::kAllGatherV, impl, counts, 0, 0, error, mem, &device));
    if (!device) return host_->AllGatherV(send, recv, counts, impl);
    if (impl == CommImpl::kGrouped) {
      if (mine > 0 && send != recv + at) HS_RETURN_IF_ERROR(Copy(recv + at, send, mine));
      if (n_ == 1) return absl::OkStatus();
      return Grouped([&]() -> absl::Status {
        for (int k = 0; k < n_; ++k) {
          if (k == rank_) continue;
          if (mine > 0) HS_NCCL(ncclSend(send, mine, ncclFloat, k, comm_, stream()));
          if (counts[k] > 0) HS_NCCL(ncclRecv(recv + Offset(counts, k), counts[k], ncclFloat, k, comm_, stream()));
        }
        return absl::OkStatus();
      });
    }
    if (m == 0) return absl::OkStatus();  // pad to max(counts), one ncclAllGather, unpad
    DeviceTensor padded = x_->Make({m}), gathered = x_->Make({n_ * m});
    HS_RETURN_IF_ERROR(Local(x_->status()));
    HS_RETURN_IF_ERROR(Copy(padded.ptr(), send, mine));
    HS_NCCL(ncclAllGather(padded.ptr(), gathered.ptr(), m, ncclFloat, comm_, stream()));
    float* out = recv;
    for (int k = 0; k < n_; ++k) {
      HS_RETURN_IF_ERROR(Copy(out, gathered.ptr() + k * m, counts[k]));
      out += counts[k];
    }
    return absl::OkStatus();
  }

  absl::Status ReduceScatterV(const float* send, float* recv, const std::vector<int64_t>& counts,
                              CommImpl impl) override {
    VSizes sz;
    const std::string error = CheckReduceScatterV(send, recv, counts, n_, rank_, &sz);
    const int64_t m = sz.max, total = sz.total, mine = sz.mine;
    const Mem mem = Classify({{send, total}, {recv, mine}});
    bool device = false;
    HS_RETURN_IF_ERROR(Agree(Op::kReduceScatterV, impl, counts, 0, 0, error, mem, &device));
    if (!device) return host_->ReduceScatterV(send, recv, counts, impl);
    if (impl == CommImpl::kGrouped) {  // one ncclReduce per segment, rooted at its owner
      return Grouped([&]() -> absl::Status {
        const float* in = send;
        for (int k = 0; k < n_; ++k) {
          if (counts[k] > 0) {
            HS_NCCL(ncclReduce(in, k == rank_ ? recv : nullptr, counts[k], ncclFloat, ncclSum, k, comm_, stream()));
          }
          in += counts[k];
        }
        return absl::OkStatus();
      });
    }
    if (m == 0) return absl::OkStatus();  // pad every segment to max(counts), one ncclReduceScatter
    DeviceTensor padded = x_->Make({n_ * m}), reduced = x_->Make({m});
    HS_RETURN_IF_ERROR(Local(x_->status()));
    const float* in = send;
    for (int k = 0; k < n_; ++k) {
      HS_RETURN_IF_ERROR(Copy(padded.ptr() + k * m, in, counts[k]));
      in += counts[k];
    }
    HS_NCCL(ncclReduceScatter(padded.ptr(), reduced.ptr(), m, ncclFloat, ncclSum, comm_, stream()));
    return Copy(recv, reduced.ptr(), mine);
  }

  absl::Status AllReduce(float* data, int64_t count) override {
    const std::string error = CheckAllReduce(data, count);
    bool device = false;
    HS_RETURN_IF_ERROR(Agree(Op::kAllReduce, CommImpl::kGrouped, {}, count, 0, error, Classify({{data, count}}), &device));
    if (!device) return host_->AllReduce(data, count);
    if (count == 0) return absl::OkStatus();
    HS_NCCL(ncclAllReduce(data, data, count, ncclFloat, ncclSum, comm_, stream()));
    return absl::OkStatus();
  }

  absl::Status AllToAllV(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                         const std::vector<int64_t>& recv_counts) override {
    int64_t nsend = 0, nrecv = 0;
    const std::string error = CheckAllToAllV(send, send_counts, recv, recv_counts, n_, &nsend, &nrecv);
    const Mem mem = Classify({{send, nsend}, {recv, nrecv}});
    bool device = false;
    HS_RETURN_IF_ERROR(Agree(Op::kAllToAllV, CommImpl::kGrouped, {}, 0, 0, error, mem, &device));
    if (!device) return host_->AllToAllV(send, send_counts, recv, recv_counts);
    // What every rank means to send here must be what this rank expects to receive.
    std::vector<float> out(static_cast<size_t>(n_) * kFloatsPerInt), in(out.size());
    for (int k = 0; k < n_; ++k) Encode(send_counts[k], out.data() + k * kFloatsPerInt);
    const std::vector<int64_t> fours(n_, kFloatsPerInt);
    HS_RETURN_IF_ERROR(host_->AllToAllV(out.data(), fours, in.data(), fours));
    std::string mismatch;
    for (int k = 0; k < n_ && mismatch.empty(); ++k) {
      const int64_t incoming = Decode(in.data() + k * kFloatsPerInt);
      if (incoming != recv_counts[k]) {
        mismatch = StrCat("rank ", k, " sends ", incoming, " elements to rank ", rank_, " but rank ", rank_,
                          " expects ", recv_counts[k], " (recv_counts[", k, "])");
      }
    }
    HS_RETURN_IF_ERROR(Agree(Op::kAllToAllV, CommImpl::kGrouped, {}, 0, 0, mismatch, mem, &device));
    const int64_t self = send_counts[rank_];
    if (self > 0) HS_RETURN_IF_ERROR(Copy(recv + Offset(recv_counts, rank_), send + Offset(send_counts, rank_), self));
    if (n_ == 1) return absl::OkStatus();
    return Grouped([&]() -> absl::Status {
      for (int k = 0; k < n_; ++k) {
        if (k == rank_) continue;
        if (send_counts[k] > 0) {
          HS_NCCL(ncclSend(send + Offset(send_counts, k), send_counts[k], ncclFloat, k, comm_, stream()));
        }
        if (recv_counts[k] > 0) {
          HS_NCCL(ncclRecv(recv + Offset(recv_counts, k), recv_counts[k], ncclFloat, k, comm_, stream()));
        }
      }
      return absl::OkStatus();
    });
  }

  absl::Status Broadcast(float* data, int64_t count, int root) override {
    const std::string error = CheckBroadcast(data, count, root, n_);
    bool device = false;
    HS_RETURN_IF_ERROR(Agree(Op::kBroadcast, CommImpl::kGrouped, {}, count, root, error, Classify({{data, count}}), &device));
    if (!device) return host_->Broadcast(data, count, root);
    if (count == 0) return absl::OkStatus();
    HS_NCCL(ncclBroadcast(data, data, count, ncclFloat, root, comm_, stream()));
    return absl::OkStatus();
  }

  // A host barrier (the agreement's all-gather); it does not wait for the streams.
  absl::Status Barrier() override {
    bool device = false;
    return Agree(Op::kBarrier, CommImpl::kGrouped, {}, 0, 0, "", Mem::kNone, &device);
  }

  // Collective over every rank (ncclCommSplit includes the ranks passing NCCL_SPLIT_NOCOLOR).
  // Split(0, rank) whose device work runs on x's stream (SplitOnto in gpu_comm.h).
  absl::StatusOr<std::unique_ptr<Communicator>> SplitOnto(GpuExec& x) {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, Split(0, rank_));
    static_cast<NcclComm&>(*sub).x_ = &x;
    return sub;
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    bool device = false;
    HS_RETURN_IF_ERROR(
        Agree(Op::kSplit, CommImpl::kGrouped, {}, 0, 0, comm_internal::CheckSplit(color), Mem::kNone, &device));
    absl::StatusOr<std::unique_ptr<Communicator>> host = host_->Split(color, key);
    HS_RETURN_IF_ERROR(Local(host.status()));
    ncclComm_t sub = nullptr;
    HS_NCCL(ncclCommSplit(comm_, color == kNoColor ? NCCL_SPLIT_NOCOLOR : color, key, &sub, nullptr));
    if (color == kNoColor) return std::unique_ptr<Communicator>();
    return std::unique_ptr<Communicator>(new NcclComm(*std::move(host), x_, sub));
  }

  absl::Status CheckConcurrentUse() const override {
    return absl::FailedPreconditionError(
        "nccl: collectives enqueue work on the rank's stream and allocator (its GpuExec), which one thread uses at "
        "a time; run them on the rank's thread");
  }

 private:
  cudaStream_t stream() const { return static_cast<cudaStream_t>(x_->stream()); }
  std::string Where() const { return StrCat("nccl ", OpName(op_), " (collective #", seq_, ", rank ", rank_, "): "); }

  absl::Status Local(const absl::Status& s) {
    return s.ok() ? s : absl::Status(s.code(), StrCat(Where(), s.message()));
  }
  absl::Status Copy(float* dst, const float* src, int64_t n) {
    if (n <= 0) return absl::OkStatus();
    return Local(HS_CUDA_STATUS(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float),
                                                cudaMemcpyDeviceToDevice, stream())));
  }

  // Runs body between ncclGroupStart and ncclGroupEnd (which is always called).
  template <class Body>
  absl::Status Grouped(const Body& body) {
    HS_NCCL(ncclGroupStart());
    absl::Status s = body();
    const ncclResult_t end = ncclGroupEnd();
    HS_RETURN_IF_ERROR(s);
    if (end != ncclSuccess) return NcclError(Where(), "ncclGroupEnd()", end, comm_, __FILE__, __LINE__);
    return absl::OkStatus();
  }

  // One all-gather of every rank's fingerprint over the host communicator; fails on every rank
  // when the calls do not fit together. *device: whether the data moves through NCCL.
  absl::Status Agree(Op op, CommImpl impl, const std::vector<int64_t>& counts, int64_t count, int root,
                     const std::string& error, Mem mem, bool* device) {
    ++seq_;
    op_ = op;
    HS_RETURN_IF_ERROR(Local(cudaSetDevice(x_->device()) == cudaSuccess
                                 ? absl::OkStatus()
                                 : absl::InternalError(StrCat("cudaSetDevice(", x_->device(), ") failed"))));
    constexpr int kFields = 7;
    const int64_t fields[kFields] = {static_cast<int64_t>(op), static_cast<int64_t>(impl),
                                     static_cast<int64_t>(HashCounts(counts)), count, root, error.empty() ? 0 : 1,
                                     static_cast<int64_t>(mem)};
    constexpr int kWidth = kFields * kFloatsPerInt;
    std::vector<float> mine(kWidth), all(static_cast<size_t>(n_) * kWidth);
    for (int f = 0; f < kFields; ++f) Encode(fields[f], mine.data() + f * kFloatsPerInt);
    HS_RETURN_IF_ERROR(Local(host_->AllGatherV(mine.data(), all.data(), std::vector<int64_t>(n_, kWidth),
                                               CommImpl::kGrouped)));
    auto field = [&](int r, int f) { return Decode(all.data() + r * kWidth + f * kFloatsPerInt); };
    std::string why = FingerprintsDisagree(n_, rank_, field, error, counts, "");
    int host_rank = -1, device_rank = -1;
    for (int r = 0; r < n_ && why.empty(); ++r) {
      const Mem m = static_cast<Mem>(field(r, 6));
      if (m == Mem::kMixed) why = StrCat("rank ", r, " passed both host and device buffers; pass one kind per call");
      if (m == Mem::kHost && host_rank < 0) host_rank = r;
      if (m == Mem::kDevice && device_rank < 0) device_rank = r;
    }
    if (why.empty() && host_rank >= 0 && device_rank >= 0) {
      why = StrCat("rank ", host_rank, " passed host buffers but rank ", device_rank,
                   " device buffers; every rank must pass the same kind of memory");
    }
    if (!why.empty()) return absl::InvalidArgumentError(StrCat(Where(), why));
    *device = device_rank >= 0;
    return absl::OkStatus();
  }

  std::unique_ptr<Communicator> host_;  // host buffers and argument agreement
  GpuExec* x_;
  ncclComm_t comm_;
  const int rank_, n_;
  int64_t seq_ = 0;
  Op op_ = Op::kBarrier;
};

}  // namespace

bool NcclAvailable() { return true; }

absl::StatusOr<std::unique_ptr<Communicator>> NcclWorld(GpuExec& x) {
  HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> host, MpiWorld());
  HS_CUDA_RETURN(cudaSetDevice(x.device()));
  // Rank 0's unique id, 16 bits per float (exact), after a flag saying whether it was made.
  constexpr int kIdFloats = NCCL_UNIQUE_ID_BYTES / 2;
  std::vector<float> msg(1 + kIdFloats, 0.0f);
  ncclUniqueId id{};
  ncclResult_t made = ncclSuccess;
  if (host->rank() == 0) {
    made = ncclGetUniqueId(&id);
    if (made == ncclSuccess) {
      msg[0] = 1.0f;
      const auto* bytes = reinterpret_cast<const unsigned char*>(id.internal);
      for (int i = 0; i < kIdFloats; ++i) msg[1 + i] = static_cast<float>(bytes[2 * i] | (bytes[2 * i + 1] << 8));
    }
  }
  HS_RETURN_IF_ERROR(host->Broadcast(msg.data(), static_cast<int64_t>(msg.size()), 0));
  if (msg[0] != 1.0f) {
    return absl::InternalError(host->rank() == 0
                                   ? StrCat("nccl: ncclGetUniqueId failed: ", ncclGetErrorString(made))
                                   : std::string("nccl: rank 0 could not make the NCCL unique id (see its error)"));
  }
  for (int i = 0; i < kIdFloats; ++i) {
    const unsigned v = static_cast<unsigned>(msg[1 + i]);
    id.internal[2 * i] = static_cast<char>(v & 0xff);
    id.internal[2 * i + 1] = static_cast<char>(v >> 8);
  }
  ncclComm_t comm = nullptr;
  const ncclResult_t rc = ncclCommInitRank(&comm, host->size(), id, host->rank());
  if (rc != ncclSuccess) {
    return absl::InternalError(StrCat("nccl: ncclCommInitRank (rank ", host->rank(), " of ", host->size(), ", device ",
                                      x.device(), ") failed: ", ncclGetErrorString(rc), "; ", ncclGetLastError(nullptr),
                                      " (one rank per GPU: NCCL refuses two ranks on one device)"));
  }
  return std::unique_ptr<Communicator>(new NcclComm(std::move(host), &x, comm));
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclSingle(GpuExec& x) {
  HS_CUDA_RETURN(cudaSetDevice(x.device()));
  ncclComm_t comm = nullptr;
  const int dev = x.device();
  const ncclResult_t rc = ncclCommInitAll(&comm, 1, &dev);
  if (rc != ncclSuccess) {
    return absl::InternalError(StrCat("nccl: ncclCommInitAll (1 rank, device ", dev, ") failed: ",
                                      ncclGetErrorString(rc), "; ", ncclGetLastError(nullptr)));
  }
  return std::unique_ptr<Communicator>(new NcclComm(std::make_unique<SelfComm>(), &x, comm));
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclSplitOnto(Communicator& comm, GpuExec& x) {
  auto* nccl = dynamic_cast<NcclComm*>(&comm);
  if (nccl == nullptr) {
    return absl::InvalidArgumentError(StrCat("NcclSplitOnto: a '", comm.name(), "' communicator; expected an NCCL one"));
  }
  return nccl->SplitOnto(x);
}

#endif  // HETSYNTH_HAVE_NCCL

}  // namespace hetsynth::runtime::gpu
