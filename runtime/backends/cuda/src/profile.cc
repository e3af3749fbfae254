// ProfileCuda (the end of hetsynth/runtime/cuda_backend.h): the raw measurements behind
// `hetsynth profile --backend cuda` — per-node kernel times of the GPU trainer, the optimizer
// update, a device-to-device copy, and collectives among virtual GPUs of one device. The CLI
// (cli/profile_command.cc) classifies and fits them as it does the CPU's.
//
// Clocks: kernels, the update and the collectives are timed by wall clock after waiting for the
// stream (the clock the GPU plan executor charges with: it waits for the device after every
// instruction); the copy by CUDA events around it.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <numeric>

#include "comm/comm_kernels.h"
#include "comm/gpu_comm.h"
#include "device_trainer.h"
#include "exec/check.h"
#include "exec/exec_gpu.h"
#include "hetsynth/base/median.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/cuda.h"
#include "hetsynth/runtime/cuda_backend.h"
#include "hetsynth/runtime/profile_collectives.h"
#include "hetsynth/runtime/profile_kernels.h"
#include "ops/optim.h"

namespace hetsynth::runtime {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Per node: the median over `repeats` timed training steps (after one warm-up) of its forward
// + backward seconds on the GPU (DeviceTrainer's kernel timer waits for the device around
// every operator), then the same over forward-only passes.
absl::Status TimeKernels(gpu::GpuExec& x, const ir::Graph& graph, const Batch& batch, const OptimizerConfig& cfg,
                         int repeats, CudaProfile& out) {
  HS_ASSIGN_OR_RETURN(auto trainer, gpu::DeviceTrainer<gpu::GpuExec>::Create(x, graph, cfg, /*seed=*/0));
  const size_t num_nodes = graph.nodes().size();
  std::vector<double> t(num_nodes, 0.0);
  out.node_backward.assign(num_nodes, false);
  trainer->SetKernelTimer([&](ir::NodeId node, bool backward, double seconds) {
    t[static_cast<size_t>(node)] += seconds;
    if (backward) out.node_backward[static_cast<size_t>(node)] = true;
  });
  // The warm-up step also loads the kernels and fills the allocator.
  HS_ASSIGN_OR_RETURN(out.node_seconds, NodeMedians(repeats, t, [&] { return trainer->Step(batch).status(); }));
  HS_RETURN_IF_ERROR(x.Synchronize());
  // The forward alone, as inference runs it (the forward rates placement prices with).
  HS_ASSIGN_OR_RETURN(out.node_forward_seconds, NodeMedians(repeats, t, [&] { return trainer->Loss(batch).status(); }));
  return x.Synchronize();
}

// The optimizer update of tensors shaped like every parameter (zero parameters and gradients:
// the arithmetic, and so the time, does not depend on the values), as DeviceTrainer::Step runs
// it; the median over `repeats` after one warm-up (which also allocates the optimizer state).
absl::StatusOr<double> TimeOptimizer(gpu::GpuExec& x, const ir::Graph& graph, const OptimizerConfig& cfg,
                                     int repeats) {
  std::map<std::string, gpu::DeviceTensor> params, grads;
  for (ir::ValueId p : graph.parameters()) {
    const ir::Value& v = graph.value(p);
    params.emplace(v.name, x.Make(v.shape));
    grads.emplace(v.name, x.Make(v.shape));
  }
  gpu::DeviceOptimizer<gpu::GpuExec> optimizer(cfg);
  std::vector<double> samples;
  for (int r = 0; r <= repeats; ++r) {
    HS_RETURN_IF_ERROR(x.Synchronize());
    const auto t0 = Clock::now();
    optimizer.Step(x, params, grads);
    HS_RETURN_IF_ERROR(x.Synchronize());
    if (r > 0) samples.push_back(Since(t0));
  }
  return Median(samples);
}

// A device-to-device copy of `bytes` (at most a quarter of the free memory), timed by CUDA
// events on x's stream: 2 × bytes (read and written) / the median time.
absl::StatusOr<double> TimeCopy(gpu::GpuExec& x, int64_t bytes, int repeats) {
  size_t free_bytes = 0, total_bytes = 0;
  HS_CUDA_RETURN(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(bytes, static_cast<int64_t>(free_bytes / 4)) / 4);
  gpu::DeviceTensor a = x.Make({n}), b = x.Make({n});
  HS_RETURN_IF_ERROR(x.Synchronize());
  cudaEvent_t start = nullptr, stop = nullptr;
  HS_CUDA_RETURN(cudaEventCreate(&start));
  absl::Status st = HS_CUDA_STATUS(cudaEventCreate(&stop));
  const cudaStream_t stream = static_cast<cudaStream_t>(x.stream());
  const size_t size = static_cast<size_t>(n) * sizeof(float);
  std::vector<double> samples;
  for (int r = 0; r <= repeats && st.ok(); ++r) {
    st = HS_CUDA_STATUS(cudaEventRecord(start, stream));
    if (st.ok()) st = HS_CUDA_STATUS(cudaMemcpyAsync(b.ptr(), a.ptr(), size, cudaMemcpyDeviceToDevice, stream));
    if (st.ok()) st = HS_CUDA_STATUS(cudaEventRecord(stop, stream));
    if (st.ok()) st = HS_CUDA_STATUS(cudaEventSynchronize(stop));
    float ms = 0;
    if (st.ok()) st = HS_CUDA_STATUS(cudaEventElapsedTime(&ms, start, stop));
    if (st.ok() && r > 0) samples.push_back(ms * 1e-3);
  }
  cudaEventDestroy(start);
  if (stop) cudaEventDestroy(stop);
  HS_RETURN_IF_ERROR(st);
  const double s = Median(samples);
  return s > 0 ? 2.0 * static_cast<double>(size) / s : 0.0;
}

// On each virtual GPU, per tensor of options.collectives and per repeat: a grouped all-gather,
// a grouped reduce-scatter, an all-reduce of the whole tensor and a padded all-gather, each
// after the rank's stream is idle and a barrier, timed until the rank's stream is done with it.
// Per tensor and op: the median over the repeats (after one warm-up) of the slowest rank.
absl::Status TimeCollectives(const CudaProfileOptions& options, gpu::Precision precision, CudaProfile& out) {
  const int n = static_cast<int>(options.speeds.size());
  const size_t num = options.collectives.size();
  CollectiveTimings seconds(num, options.repeats, n);  // each rank writes its own slots
  auto run = [&](Communicator& comm, gpu::GpuExec& x) -> absl::Status {
    const int rank = comm.rank();
    for (size_t c = 0; c < num; ++c) {
      const std::vector<int64_t>& lengths = options.collectives[c];
      const int64_t total = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
      gpu::DeviceTensor piece = x.Make({std::max<int64_t>(1, lengths[static_cast<size_t>(rank)])});
      gpu::DeviceTensor whole = x.Make({total}), data = x.Make({total});
      for (int rep = 0; rep <= options.repeats; ++rep) {
        for (int op = 0; op < kProfileCommOps; ++op) {
          HS_RETURN_IF_ERROR(x.Synchronize());
          HS_RETURN_IF_ERROR(comm.Barrier());
          HS_RETURN_IF_ERROR(x.Synchronize());
          const auto t0 = Clock::now();
          switch (op) {
            case 0: HS_RETURN_IF_ERROR(comm.AllGatherV(piece.ptr(), whole.ptr(), lengths, CommImpl::kGrouped)); break;
            case 1: HS_RETURN_IF_ERROR(comm.ReduceScatterV(whole.ptr(), piece.ptr(), lengths, CommImpl::kGrouped)); break;
            case 2: HS_RETURN_IF_ERROR(comm.AllReduce(data.ptr(), total)); break;
            default: HS_RETURN_IF_ERROR(comm.AllGatherV(piece.ptr(), whole.ptr(), lengths, CommImpl::kPadded)); break;
          }
          HS_RETURN_IF_ERROR(x.Synchronize());
          seconds.at(c, op, rep, rank) = Since(t0);
        }
      }
    }
    return x.Synchronize();
  };
  gpu::VirtualGpuLayout layout;
  gpu::VirtualGpuOptions vo;
  vo.device = options.device;
  vo.green = options.green;
  vo.precision = precision;
  vo.layout = &layout;
  // E.g. more virtual GPUs than the driver has SM groups: plain streams still time the copies
  // and sums (which use few SMs), sharing every SM.
  vo.plain_if_green_fails = true;
  HS_RETURN_IF_ERROR(gpu::RunVirtualGpus(options.speeds, run, vo));
  const std::string fallback =
      layout.green_failed.empty() ? "" : StrCat(" (green contexts failed: ", layout.green_failed, ")");
  std::string sms;
  for (int s : layout.sm_counts) sms += (sms.empty() ? "" : ", ") + std::to_string(s);
  out.comm_description = StrCat(n, " virtual GPUs of ", layout.device_sms, " SMs with ", sms, " SMs (",
                                layout.green ? "green contexts" : "plain streams sharing every SM", ")", fallback);
  seconds.AppendTo(options.collectives, out.collectives);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CudaProfile> ProfileCuda(const ir::Graph& graph, const Batch& batch, const CudaProfileOptions& options) {
  const CudaInfo info = ProbeCuda();
  if (info.devices == 0) return absl::FailedPreconditionError(StrCat("no GPU: ", info.reason));
  if (options.device < 0 || options.device >= info.devices) {
    return absl::InvalidArgumentError(StrCat("GPU ", options.device, " does not exist (", info.devices, " visible)"));
  }
  if (options.repeats < 1) return absl::InvalidArgumentError(StrCat("repeats ", options.repeats, "; expected at least 1"));
  HS_ASSIGN_OR_RETURN(gpu::Precision precision, gpu::ParsePrecision(options.precision));
  HS_RETURN_IF_ERROR(ValidateOptimizerConfig(options.optimizer));
  const int n = static_cast<int>(options.speeds.size());
  if (n == 1 || n > gpu::kMaxCommRanks) {
    return absl::InvalidArgumentError(StrCat(n, " virtual GPUs for the collectives; expected 2 to ", gpu::kMaxCommRanks,
                                             " (or none)"));
  }
  int64_t largest = 0;
  for (const std::vector<int64_t>& lengths : options.collectives) {
    int64_t total = 0;
    bool negative = false;
    for (int64_t l : lengths) total += l, negative = negative || l < 0;
    if (static_cast<int>(lengths.size()) != n || negative || total <= 0) {
      return absl::InvalidArgumentError(StrCat("a collective with ", lengths.size(),
                                               " shard lengths; expected one non-negative length per virtual GPU (",
                                               n, "), not all zero"));
    }
    largest = std::max(largest, total);
  }
  HS_CUDA_RETURN(cudaSetDevice(options.device));
  CudaProfile out;
  {
    cudaDeviceProp prop{};
    HS_CUDA_RETURN(cudaGetDeviceProperties(&prop, options.device));
    out.device_name = prop.name;
    out.memory_bytes = static_cast<double>(prop.totalGlobalMem);
  }
  if (n >= 2 && largest > 0) {
    // Per virtual GPU: the shard, the whole tensor twice and the communicator's staging (at most
    // about the whole tensor again).
    size_t free_bytes = 0, total_bytes = 0;
    HS_CUDA_RETURN(cudaMemGetInfo(&free_bytes, &total_bytes));
    const double need = 4.0 * 4.0 * static_cast<double>(largest) * n;
    if (need > static_cast<double>(free_bytes) / 2) {
      return absl::InvalidArgumentError(StrCat("collectives of ", largest, " elements on ", n, " virtual GPUs need about ",
                                               need / (1 << 20), " MiB, more than half of the GPU's free ",
                                               static_cast<double>(free_bytes) / (1 << 20), " MiB"));
    }
  }
  {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<gpu::GpuExec> x, gpu::GpuExec::Create({options.device, precision, nullptr}));
    HS_RETURN_IF_ERROR(TimeKernels(*x, graph, batch, options.optimizer, options.repeats, out));
    HS_ASSIGN_OR_RETURN(out.optimizer_s, TimeOptimizer(*x, graph, options.optimizer, options.repeats));
    HS_ASSIGN_OR_RETURN(out.copy_bytes_per_s, TimeCopy(*x, options.copy_bytes, options.repeats));
    HS_RETURN_IF_ERROR(x->Synchronize());
    x->allocator().ReleaseCache();  // the virtual GPUs get the memory back
  }
  if (n >= 2 && !options.collectives.empty()) HS_RETURN_IF_ERROR(TimeCollectives(options, precision, out));
  return out;
}

}  // namespace hetsynth::runtime
