#include "exec/exec_gpu.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cxxabi.h>

#include <cstdlib>

#include "exec/check.h"
#include "hetsynth/base/status.h"

namespace hetsynth::runtime::gpu {

absl::Status CallStatus(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(StrCat(call, " failed at ", file, ":", line, ": ", cudaGetErrorName(err), ": ",
                                    cudaGetErrorString(err)));
}

absl::Status CallStatus(CUresult err, const char* call, const char* file, int line) {
  if (err == CUDA_SUCCESS) return absl::OkStatus();
  // The driver library is not linked (see runtime/CMakeLists.txt): look its strings up.
  using ErrorFn = CUresult (*)(CUresult, const char**);
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  const char* text = nullptr;
  if (cudaGetDriverEntryPointByVersion("cuGetErrorString", &fn, 12000, cudaEnableDefault, &found) == cudaSuccess &&
      found == cudaDriverEntryPointSuccess && fn) {
    reinterpret_cast<ErrorFn>(fn)(err, &text);
  }
  return absl::InternalError(StrCat(call, " failed at ", file, ":", line, ": CUresult ", static_cast<int>(err), ": ",
                                    text ? text : "unknown driver error"));
}

absl::Status CallStatus(cublasStatus_t err, const char* call, const char* file, int line) {
  if (err == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(StrCat(call, " failed at ", file, ":", line, ": ", cublasGetStatusName(err), ": ",
                                    cublasGetStatusString(err)));
}

const char* PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32: return "fp32";
    case Precision::kTf32: return "tf32";
    case Precision::kBf16: return "bf16";
  }
  return "?";
}

absl::StatusOr<Precision> ParsePrecision(const std::string& name) {
  for (Precision p : {Precision::kFp32, Precision::kTf32, Precision::kBf16}) {
    if (name == PrecisionName(p)) return p;
  }
  return absl::InvalidArgumentError(StrCat("precision '", name, "'; expected fp32, tf32 or bf16"));
}

// --- CachingAllocator ------------------------------------------------------------------------

size_t CachingAllocator::RoundUp(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t{2} << 20;
  if (bytes == 0) return 0;
  if (bytes <= (size_t{1} << 20)) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

void* CachingAllocator::Allocate(size_t bytes, absl::Status* status) {
  bytes = RoundUp(bytes);
  if (bytes == 0) return nullptr;
  if (auto it = free_.find(bytes); it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    in_use_ += bytes;
    peak_ = std::max(peak_, in_use_);
    return p;
  }
  void* p = nullptr;
  cudaSetDevice(device_);
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state of the runtime
    ReleaseCache();
    for (CachingAllocator* peer : peers_) peer->ReleaseCache();
    absl::Status st = HS_CUDA_STATUS(cudaMalloc(&p, bytes));
    if (!st.ok()) {
      *status = absl::ResourceExhaustedError(StrCat("device ", device_, ": cannot allocate ", bytes, " bytes with ",
                                                    in_use_, " bytes in use: ", st.message()));
      return nullptr;
    }
  }
  in_use_ += bytes;
  peak_ = std::max(peak_, in_use_);
  return p;
}

void CachingAllocator::Free(void* p, size_t bytes) {
  if (!p) return;
  bytes = RoundUp(bytes);
  free_[bytes].push_back(p);
  in_use_ -= bytes;
  cached_ += bytes;
}

void CachingAllocator::ReleaseCache() {
  cudaSetDevice(device_);
  cudaDeviceSynchronize();  // blocks may still be read by queued work
  for (auto& [bytes, blocks] : free_) {
    for (void* p : blocks) cudaFree(p);
  }
  free_.clear();
  cached_ = 0;
}

CachingAllocator::~CachingAllocator() { ReleaseCache(); }

// --- DeviceTensor ----------------------------------------------------------------------------

DeviceTensor& DeviceTensor::operator=(DeviceTensor&& o) noexcept {
  if (this != &o) {
    Release();
    shape = std::move(o.shape);
    p_ = o.p_;
    bytes_ = o.bytes_;
    alloc_ = o.alloc_;
    o.p_ = nullptr;
    o.bytes_ = 0;
    o.shape.clear();
  }
  return *this;
}

void DeviceTensor::Release() {
  if (p_ && alloc_) alloc_->Free(p_, bytes_);
  p_ = nullptr;
  bytes_ = 0;
}

// --- GpuExec ---------------------------------------------------------------------------------

namespace {
cudaStream_t S(void* s) { return static_cast<cudaStream_t>(s); }
cublasHandle_t H(void* h) { return static_cast<cublasHandle_t>(h); }
}  // namespace

absl::StatusOr<std::unique_ptr<GpuExec>> GpuExec::Create(GpuExecOptions options) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || options.device < 0 || options.device >= count) {
    return absl::FailedPreconditionError(
        StrCat("CUDA device ", options.device, " is not available (", count, " visible",
               err != cudaSuccess ? StrCat("; cudaGetDeviceCount: ", cudaGetErrorString(err)) : std::string(), ")"));
  }
  std::unique_ptr<GpuExec> x(new GpuExec());
  x->device_ = options.device;
  x->precision_ = options.precision;
  HS_CUDA_RETURN(cudaSetDevice(options.device));
  if (options.stream) {
    x->stream_ = options.stream;
  } else {
    cudaStream_t s = nullptr;
    HS_CUDA_RETURN(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    x->stream_ = s;
    x->own_stream_ = true;
  }
  cublasHandle_t h = nullptr;
  HS_CUDA_RETURN(cublasCreate(&h));
  x->cublas_ = h;
  HS_CUDA_RETURN(cublasSetStream(h, S(x->stream_)));
  // Default math: with CUBLAS_COMPUTE_32F no TF32 down-conversion happens; the compute type of
  // each call (Precision) is what allows tensor cores.
  HS_CUDA_RETURN(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  if (options.sm_count > 0) HS_CUDA_RETURN(cublasSetSmCountTarget(h, options.sm_count));
  x->alloc_ = std::make_unique<CachingAllocator>(options.device);
  return x;
}

absl::StatusOr<std::unique_ptr<GpuExec>> GpuExec::Fork() {
  HS_ASSIGN_OR_RETURN(std::unique_ptr<GpuExec> x,
                      Create({.device = device_, .precision = precision_, .stream = nullptr, .sm_count = 0}));
  alloc_->Pair(x->alloc_.get());
  x->parent_alloc_ = alloc_.get();
  return x;
}

std::shared_ptr<void> GpuExec::Mark() {
  if (!status_.ok()) return nullptr;
  cudaEvent_t e = nullptr;
  Fail(HS_CUDA_STATUS(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)));
  if (!status_.ok()) return nullptr;
  Fail(HS_CUDA_STATUS(cudaEventRecord(e, S(stream_))));
  // Destroying a recorded event whose work is still running is allowed: its resources go when
  // the work completes.
  return std::shared_ptr<void>(e, [](void* p) { cudaEventDestroy(static_cast<cudaEvent_t>(p)); });
}

void GpuExec::WaitMark(const std::shared_ptr<void>& mark) {
  if (!status_.ok() || !mark) return;
  Fail(HS_CUDA_STATUS(cudaStreamWaitEvent(S(stream_), static_cast<cudaEvent_t>(mark.get()), 0)));
}

GpuExec::~GpuExec() {
  if (stream_) cudaStreamSynchronize(S(stream_));
  if (parent_alloc_ && alloc_) parent_alloc_->Unpair(alloc_.get());
  alloc_.reset();
  if (cublas_) cublasDestroy(H(cublas_));
  if (own_stream_) cudaStreamDestroy(S(stream_));
}

void GpuExec::CheckLaunch(const std::type_info& f) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return;
  int demangled = -1;
  char* name = abi::__cxa_demangle(f.name(), nullptr, nullptr, &demangled);
  const std::string what = StrCat("LaunchFor<", demangled == 0 && name ? name : f.name(), ">");
  std::free(name);
  Fail(CallStatus(err, what.c_str(), __FILE__, __LINE__));
}

GpuExec::Tensor GpuExec::Make(ir::Shape shape) {
  const int64_t n = ir::NumElements(shape);
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  if (!status_.ok() || n == 0) return Tensor(std::move(shape), nullptr, 0, alloc_.get());
  absl::Status st;
  float* p = static_cast<float*>(alloc_->Allocate(bytes, &st));
  if (!p) {
    Fail(st);
    return Tensor(std::move(shape), nullptr, 0, alloc_.get());
  }
  Fail(HS_CUDA_STATUS(cudaMemsetAsync(p, 0, bytes, S(stream_))));
  return Tensor(std::move(shape), p, bytes, alloc_.get());
}

void GpuExec::Gemm(const GemmArgs& g, const float* a, const float* b, float* c) {
  if (!status_.ok() || g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (g.k == 0) {
    if (g.beta == 0.0f) {
      for (int64_t i = 0; i < g.batch; ++i) Zero(c + i * g.stride_c, g.m * g.n);
    }
    return;
  }
  // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands.
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int64_t lda = g.trans_a ? g.m : g.k, ldb = g.trans_b ? g.k : g.n, ldc = g.n;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  if (precision_ == Precision::kTf32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  if (precision_ == Precision::kBf16) compute = CUBLAS_COMPUTE_32F_FAST_16BF;
  Fail(HS_CUDA_STATUS(cublasGemmStridedBatchedEx(
      H(cublas_), op_b, op_a, static_cast<int>(g.n), static_cast<int>(g.m), static_cast<int>(g.k), &g.alpha, b,
      CUDA_R_32F, static_cast<int>(ldb), g.stride_b, a, CUDA_R_32F, static_cast<int>(lda), g.stride_a, &g.beta, c,
      CUDA_R_32F, static_cast<int>(ldc), g.stride_c, static_cast<int>(g.batch), compute, CUBLAS_GEMM_DEFAULT)));
}

void GpuExec::Zero(float* p, int64_t n) {
  if (!status_.ok() || n <= 0) return;
  Fail(HS_CUDA_STATUS(cudaMemsetAsync(p, 0, static_cast<size_t>(n) * sizeof(float), S(stream_))));
}

void GpuExec::Copy(float* dst, const float* src, int64_t n) {
  if (!status_.ok() || n <= 0) return;
  Fail(HS_CUDA_STATUS(
      cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice, S(stream_))));
}

float GpuExec::Read(const float* p) {
  float v = 0;
  if (!status_.ok()) return v;
  Fail(HS_CUDA_STATUS(cudaMemcpyAsync(&v, p, sizeof(float), cudaMemcpyDeviceToHost, S(stream_))));
  Fail(HS_CUDA_STATUS(cudaStreamSynchronize(S(stream_))));
  return v;
}

GpuExec::Tensor GpuExec::Upload(const runtime::Tensor& t) {
  Tensor d = Make(t.shape);
  if (status_.ok() && t.numel() > 0) {
    Fail(HS_CUDA_STATUS(cudaMemcpyAsync(d.ptr(), t.ptr(), static_cast<size_t>(t.numel()) * sizeof(float),
                                        cudaMemcpyHostToDevice, S(stream_))));
    // The host buffer may go away when this returns.
    Fail(HS_CUDA_STATUS(cudaStreamSynchronize(S(stream_))));
  }
  return d;
}

runtime::Tensor GpuExec::Download(const Tensor& t) {
  runtime::Tensor h(t.shape);
  if (status_.ok() && h.numel() > 0) {
    Fail(HS_CUDA_STATUS(cudaMemcpyAsync(h.ptr(), t.ptr(), static_cast<size_t>(h.numel()) * sizeof(float),
                                        cudaMemcpyDeviceToHost, S(stream_))));
    Fail(HS_CUDA_STATUS(cudaStreamSynchronize(S(stream_))));
  }
  return h;
}

GpuExec::Tensor GpuExec::Clone(const Tensor& t) {
  Tensor d = Make(t.shape);
  Copy(d.ptr(), t.ptr(), t.numel());
  return d;
}

absl::Status GpuExec::Synchronize() {
  // Even after an error: callers free buffers once this returns, so queued work must be done.
  Fail(HS_CUDA_STATUS(cudaStreamSynchronize(S(stream_))));
  return status_;
}

}  // namespace hetsynth::runtime::gpu
