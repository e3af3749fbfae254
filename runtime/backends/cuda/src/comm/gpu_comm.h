// GPU communicators: the Communicator interface (hetsynth/runtime/comm.h) over device memory.
//
// Two implementations:
//   - NCCL (NcclWorld): one process per GPU under mpirun; collectives are enqueued on the
//     GpuExec's stream. Uneven all-gather / all-to-all are grouped ncclSend/ncclRecv, grouped
//     reduce-scatter is one ncclReduce per segment; the padded variants pad to max(counts) and
//     use ncclAllGather / ncclReduceScatter. NCCL sums in an order of its choosing (not rank
//     order): its sums may differ from the CPU communicators' in the last bits.
//   - the in-process device communicator (RunVirtualGpus): N virtual devices on ONE GPU, each a
//     CUDA green context holding a share of the SMs proportional to its speed (or a plain stream
//     with every SM), one host thread each. Collectives are device-to-device copies and
//     rank-order reduction kernels on the calling rank's stream, ordered after the peers' work
//     with CUDA events; sums are ((x₀ + x₁) + x₂) + … in float, the same bits as the CPU
//     communicators. This is how a mixed cluster is emulated on one GPU (NCCL refuses two ranks
//     on one device).
//
// Both also accept HOST buffers (the executor exchanges a few host floats — clocks, losses —
// through the same communicator): each call looks at its pointers (cudaPointerGetAttributes;
// memory CUDA does not know, or pinned host memory, is host) and moves host buffers on the host
// — NCCL through the MPI communicator it holds, the device communicator by host copies. All
// ranks must pass the same kind of memory to one call; device results are ready in stream order
// (synchronize the stream before reading them on the host), host results when the call returns.
//
//   std::vector<double> speeds = {4, 4, 2, 1};
//   VirtualGpuLayout layout;
//   HS_RETURN_IF_ERROR(RunVirtualGpus(speeds, [&](Communicator& comm, GpuExec& x) -> absl::Status {
//     DeviceTensor shard = x.Make({counts[comm.rank()]}), full = x.Make({total});
//     HS_RETURN_IF_ERROR(comm.AllGatherV(shard.ptr(), full.ptr(), counts, CommImpl::kGrouped));
//     return x.Synchronize();
//   }, {.device = 0, .layout = &layout}));   // layout.sm_counts: e.g. {48, 48, 24, 8} on an H100
//
// CUDA builds only (the declarations need no CUDA headers).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "exec/exec_gpu.h"
#include "hetsynth/runtime/comm.h"

namespace hetsynth::runtime::gpu {

// --- NCCL ------------------------------------------------------------------------------------

// Whether this build includes the NCCL communicator (NCCL found at configure time).
bool NcclAvailable();

// The NCCL communicator over MPI_COMM_WORLD: MPI rank r uses x's device (so pick the device by
// local rank when creating x). Rank 0 makes the ncclUniqueId and broadcasts it over MPI
// (MpiWorld()); the MPI communicator is kept for host buffers and argument agreement.
// Collective over all MPI processes. FailedPrecondition in a build without NCCL or MPI. x must
// outlive the communicator; use it from one thread at a time. name() = "nccl".
absl::StatusOr<std::unique_ptr<Communicator>> NcclWorld(GpuExec& x);

// A one-rank NCCL communicator on x's device (no MPI), for tests.
absl::StatusOr<std::unique_ptr<Communicator>> NcclSingle(GpuExec& x);

// SplitOnto for an NCCL communicator (ncclCommSplit with one color).
absl::StatusOr<std::unique_ptr<Communicator>> NcclSplitOnto(Communicator& comm, GpuExec& x);

// --- A communication stream -------------------------------------------------------------------

// A communicator over comm's ranks, in comm's order, whose device work (copies, sums, NCCL
// kernels, staging buffers) runs on x's stream and allocator instead of comm's: the
// communication stream of overlapped plans (executor_impl.h). comm: an NCCL or an in-process
// device communicator (FailedPrecondition for others); x on comm's device, outliving the
// result. Collective over comm's ranks. Its collectives, like comm's, must be issued in the same
// order on every rank — and the two communicators' collectives in the same relative order too
// (NCCL kernels of two communicators can otherwise wait for each other).
absl::StatusOr<std::unique_ptr<Communicator>> SplitOnto(Communicator& comm, GpuExec& x);

// --- Virtual GPUs: one GPU split into green contexts ----------------------------------------

// What RunVirtualGpus gave each virtual device.
struct VirtualGpuLayout {
  bool green = false;          // green contexts (false: plain streams sharing every SM)
  int device_sms = 0;          // SMs of the physical device
  int group_sms = 0;           // SMs per indivisible group the driver split the device into
                               // (green only; 0 otherwise)
  int groups = 0;              // such groups available (green only)
  std::vector<int> sm_counts;  // per virtual device: SMs it may use (device_sms each when !green)
  // VirtualGpuOptions::plain_if_green_fails: why green contexts could not be set up ("" when
  // they were, or were not asked for).
  std::string green_failed;
};

struct VirtualGpuOptions {
  int device = 0;                         // the physical CUDA device
  bool green = true;                      // false: plain streams, all SMs each
  // green, when the driver has no green contexts, too few SM groups or refuses work the ranks
  // need on their streams (FailedPrecondition while setting up, before fn runs): plain streams
  // instead, with the reason in layout.green_failed; false: that FailedPrecondition is returned.
  bool plain_if_green_fails = false;
  // Green only: ask the driver for its finest split (CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_-
  // COSCHEDULING): smaller SM groups, at the cost of large thread-block clusters.
  bool fine_grained = false;
  Precision precision = Precision::kFp32;  // of every virtual device's GpuExec
  double timeout_s = 120;                 // a collective waiting longer than this fails
  VirtualGpuLayout* layout = nullptr;     // if set: filled before fn runs on any rank
};

// Runs fn(comm, x) on speeds.size() virtual devices of GPU opt.device, one host thread each,
// and joins them. Virtual device r gets SMs in proportion to speeds[r] (ApportionSmGroups over
// the driver's SM groups; every device gets at least one group; opt.layout says what each got),
// its own stream and its own GpuExec on that stream, and rank r of an in-process device
// communicator connecting the virtual devices. Returns OK when every rank returned OK, else the
// first failure; like RunThreadRanks, a rank that fails or returns early makes the others'
// collectives fail (Aborted) instead of hanging, and a collective waiting more than
// opt.timeout_s fails with DeadlineExceeded. Every rank's stream is synchronized before this
// returns. speeds: 1 to kMaxCommRanks (64) positive numbers. FailedPrecondition when the device
// does not exist or (green, without opt.plain_if_green_fails) the driver has no green contexts,
// too few SM groups, or refuses work the ranks need on their streams (TryGreenStreams).
absl::Status RunVirtualGpus(const std::vector<double>& speeds,
                            const std::function<absl::Status(Communicator&, GpuExec&)>& fn,
                            VirtualGpuOptions opt = {});

// Whether p is device (or managed) memory as the GPU communicators see it: pinned host memory
// and pointers CUDA cannot look up (e.g. without a driver) are host memory.
bool IsDeviceMemory(const void* p);

// The device communicator's protocol without any device: n ranks on host threads whose
// buffers must all be host memory. For testing the argument checks, agreement and host path on
// machines without a GPU; RunVirtualGpus is the real thing.
absl::Status RunDeviceCommOnHost(int n, const std::function<absl::Status(Communicator&)>& fn,
                                 double timeout_s = 120);

}  // namespace hetsynth::runtime::gpu
