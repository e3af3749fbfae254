#include "green.h"

#include <cuda.h>
#include <cuda_runtime.h>

#include "exec/check.h"

namespace hetsynth::runtime::gpu {
namespace {

// The driver entry points green contexts need, looked up by the CUDA version that introduced
// each signature (cudaTypedefs.h: PFN_cu…_v12040 etc.).
struct GreenApi {
  CUresult (*DeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*DeviceGetDevResource)(CUdevice, CUdevResource*, CUdevResourceType) = nullptr;
  CUresult (*DevSmResourceSplitByCount)(CUdevResource*, unsigned int*, const CUdevResource*, CUdevResource*,
                                        unsigned int, unsigned int) = nullptr;
  CUresult (*DevResourceGenerateDesc)(CUdevResourceDesc*, CUdevResource*, unsigned int) = nullptr;
  CUresult (*GreenCtxCreate)(CUgreenCtx*, CUdevResourceDesc, CUdevice, unsigned int) = nullptr;
  CUresult (*GreenCtxDestroy)(CUgreenCtx) = nullptr;
  CUresult (*GreenCtxGetDevResource)(CUgreenCtx, CUdevResource*, CUdevResourceType) = nullptr;
  CUresult (*GreenCtxStreamCreate)(CUstream*, CUgreenCtx, unsigned int, int) = nullptr;
  CUresult (*StreamDestroy)(CUstream) = nullptr;
};

template <class Fn>
absl::Status Load(const char* symbol, unsigned int version, Fn* fn) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult found{};
  const cudaError_t err = cudaGetDriverEntryPointByVersion(symbol, &p, version, cudaEnableDefault, &found);
  if (err != cudaSuccess || found != cudaDriverEntryPointSuccess || p == nullptr) {
    cudaGetLastError();
    return absl::FailedPreconditionError(StrCat(
        "green contexts: the CUDA driver has no ", symbol, " (version ", version / 1000, ".", version % 1000 / 10,
        ": ",
        err != cudaSuccess ? cudaGetErrorString(err)
        : found == cudaDriverEntryPointVersionNotSufficent ? "driver too old"
                                                          : "symbol not found",
        "); update the driver or run the virtual devices on plain streams (green = false)"));
  }
  *fn = reinterpret_cast<Fn>(p);
  return absl::OkStatus();
}

absl::StatusOr<GreenApi> LoadGreenApi() {
  GreenApi api;
  HS_RETURN_IF_ERROR(Load("cuDeviceGet", 2000, &api.DeviceGet));
  HS_RETURN_IF_ERROR(Load("cuDeviceGetDevResource", 12040, &api.DeviceGetDevResource));
  HS_RETURN_IF_ERROR(Load("cuDevSmResourceSplitByCount", 12040, &api.DevSmResourceSplitByCount));
  HS_RETURN_IF_ERROR(Load("cuDevResourceGenerateDesc", 12040, &api.DevResourceGenerateDesc));
  HS_RETURN_IF_ERROR(Load("cuGreenCtxCreate", 12040, &api.GreenCtxCreate));
  HS_RETURN_IF_ERROR(Load("cuGreenCtxDestroy", 12040, &api.GreenCtxDestroy));
  HS_RETURN_IF_ERROR(Load("cuGreenCtxGetDevResource", 12040, &api.GreenCtxGetDevResource));
  HS_RETURN_IF_ERROR(Load("cuGreenCtxStreamCreate", 12050, &api.GreenCtxStreamCreate));
  HS_RETURN_IF_ERROR(Load("cuStreamDestroy", 4000, &api.StreamDestroy));
  return api;
}

const GreenApi* Api() {  // loaded once; null when the driver lacks green contexts
  static const absl::StatusOr<GreenApi> api = LoadGreenApi();
  return api.ok() ? &*api : nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GreenContexts>> GreenContexts::Create(int device, const std::vector<double>& speeds,
                                                                     bool fine_grained) {
  const std::string bad = CheckSpeeds(speeds, 1 << 20);
  if (!bad.empty()) return absl::InvalidArgumentError(StrCat("green contexts: ", bad));
  // The primary context first: green contexts retain it, and allocations and events live in it.
  HS_CUDA_RETURN(cudaSetDevice(device));
  HS_CUDA_RETURN(cudaFree(nullptr));
  if (Api() == nullptr) return LoadGreenApi().status();
  const GreenApi& api = *Api();

  CUdevice dev = 0;
  HS_CUDA_RETURN(api.DeviceGet(&dev, device));
  CUdevResource whole{};
  HS_CUDA_RETURN(api.DeviceGetDevResource(dev, &whole, CU_DEV_RESOURCE_TYPE_SM));
  const unsigned int flags = fine_grained ? CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING : 0;
  // The smallest groups the driver allows: it rounds minCount up to its granularity.
  const unsigned int min_count = fine_grained ? 1 : std::max(1u, whole.sm.minSmPartitionSize);
  unsigned int groups = 0;
  HS_CUDA_RETURN(api.DevSmResourceSplitByCount(nullptr, &groups, &whole, nullptr, flags, min_count));
  std::vector<CUdevResource> parts(groups);
  CUdevResource rest{};
  if (groups > 0) {
    HS_CUDA_RETURN(api.DevSmResourceSplitByCount(parts.data(), &groups, &whole, &rest, flags, min_count));
    parts.resize(groups);
  }
  HS_ASSIGN_OR_RETURN(std::vector<int> shares, ApportionSmGroups(speeds, static_cast<int>(groups)));

  std::unique_ptr<GreenContexts> g(new GreenContexts());
  g->device_sms_ = static_cast<int>(whole.sm.smCount);
  g->groups_ = static_cast<int>(groups);
  g->group_sms_ = groups > 0 ? static_cast<int>(parts[0].sm.smCount) : 0;
  size_t at = 0;
  for (size_t r = 0; r < speeds.size(); ++r) {
    CUdevResourceDesc desc = nullptr;
    HS_CUDA_RETURN(api.DevResourceGenerateDesc(&desc, parts.data() + at, static_cast<unsigned int>(shares[r])));
    at += shares[r];
    CUgreenCtx ctx = nullptr;
    HS_CUDA_RETURN(api.GreenCtxCreate(&ctx, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM));
    g->contexts_.push_back(ctx);
    CUdevResource got{};
    HS_CUDA_RETURN(api.GreenCtxGetDevResource(ctx, &got, CU_DEV_RESOURCE_TYPE_SM));
    g->sm_counts_.push_back(static_cast<int>(got.sm.smCount));
    CUstream stream = nullptr;
    HS_CUDA_RETURN(api.GreenCtxStreamCreate(&stream, ctx, CU_STREAM_NON_BLOCKING, 0));
    g->streams_.push_back(stream);
  }
  return g;
}

GreenContexts::~GreenContexts() {
  const GreenApi* api = Api();
  if (api == nullptr) return;
  for (void* s : streams_) api->StreamDestroy(static_cast<CUstream>(s));
  for (void* c : contexts_) api->GreenCtxDestroy(static_cast<CUgreenCtx>(c));
}

}  // namespace hetsynth::runtime::gpu
