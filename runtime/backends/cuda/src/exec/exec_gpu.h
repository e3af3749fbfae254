// GpuExec: the GPU operators' executor on one CUDA device (or one green context of it) — a
// stream, a cuBLAS handle and a caching allocator. See exec_host.h for the interface.
//
// Errors are sticky: the first failing CUDA/cuBLAS call is recorded (with the call and its
// error string) and later calls on this executor do nothing; status() reports it. Callers check
// status() after a step, and Synchronize() returns it after waiting for the stream.
//
//   HS_ASSIGN_OR_RETURN(std::unique_ptr<GpuExec> x, GpuExec::Create({.device = 0}));
//   DeviceTensor t = x->Upload(host);
//   ... ops ...
//   HS_RETURN_IF_ERROR(x->Synchronize());
#pragma once

#include <algorithm>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "exec/gemm_args.h"
#include "exec/launch.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime::gpu {

// How GEMMs compute (tensors are fp32 in memory in every mode; docs/runtime.md):
//   kFp32 — full fp32 (CUBLAS_COMPUTE_32F);
//   kTf32 — tensor cores with TF32 inputs, fp32 accumulation (CUBLAS_COMPUTE_32F_FAST_TF32);
//   kBf16 — tensor cores with bf16 inputs, fp32 accumulation and fp32 master weights
//           (CUBLAS_COMPUTE_32F_FAST_16BF).
enum class Precision : uint8_t { kFp32, kTf32, kBf16 };
const char* PrecisionName(Precision p);
absl::StatusOr<Precision> ParsePrecision(const std::string& name);

// Device memory in size classes, kept for reuse instead of freed. Blocks freed by a tensor go
// back to its pool at once: safe because every use of a pool's blocks is ordered on the one
// stream that owns the pool.
class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // nullptr (and the error in *status) when the device is out of memory even after the cache
  // was released.
  void* Allocate(size_t bytes, absl::Status* status);
  void Free(void* p, size_t bytes);
  void ReleaseCache();
  // Another allocator of the same device (a forked executor's) whose cache is released too when
  // this one runs out of memory — and the other way round.
  void Pair(CachingAllocator* other) {
    peers_.push_back(other);
    other->peers_.push_back(this);
  }
  void Unpair(CachingAllocator* other) {
    peers_.erase(std::remove(peers_.begin(), peers_.end(), other), peers_.end());
    other->peers_.erase(std::remove(other->peers_.begin(), other->peers_.end(), this), other->peers_.end());
  }
  size_t bytes_in_use() const { return in_use_; }
  size_t peak_bytes_in_use() const { return peak_; }
  size_t bytes_cached() const { return cached_; }
  static size_t RoundUp(size_t bytes);

 private:
  int device_;
  std::vector<CachingAllocator*> peers_;
  std::map<size_t, std::vector<void*>> free_;
  size_t in_use_ = 0, peak_ = 0, cached_ = 0;
};

// An fp32 tensor in device memory (move-only; Clone copies).
class DeviceTensor {
 public:
  ir::Shape shape;

  DeviceTensor() = default;
  DeviceTensor(ir::Shape s, float* p, size_t bytes, CachingAllocator* alloc)
      : shape(std::move(s)), p_(p), bytes_(bytes), alloc_(alloc) {}
  DeviceTensor(DeviceTensor&& o) noexcept { *this = std::move(o); }
  DeviceTensor& operator=(DeviceTensor&& o) noexcept;
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;
  ~DeviceTensor() { Release(); }

  int64_t numel() const { return ir::NumElements(shape); }
  int64_t dim(int64_t i) const { return shape[static_cast<size_t>(i < 0 ? i + rank() : i)]; }
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  float* ptr() { return p_; }
  const float* ptr() const { return p_; }

 private:
  void Release();
  float* p_ = nullptr;
  size_t bytes_ = 0;  // as allocated (the shape may be renamed, e.g. by a reshape)
  CachingAllocator* alloc_ = nullptr;
};

struct GpuExecOptions {
  int device = 0;
  Precision precision = Precision::kFp32;
  // A stream to run on (a cudaStream_t, e.g. one created in a green context); null: create one.
  void* stream = nullptr;
  // SMs this executor may use (a green context's share), so cuBLAS sizes its kernels for them
  // (cublasSetSmCountTarget); 0: the whole device.
  int sm_count = 0;
};

class GpuExec {
 public:
  using Tensor = DeviceTensor;
  static constexpr bool kOnGpu = true;

  // Fails (FailedPrecondition) when the device does not exist.
  static absl::StatusOr<std::unique_ptr<GpuExec>> Create(GpuExecOptions options);
  ~GpuExec();

  Tensor Make(ir::Shape shape);
  template <class F>
  void For(int64_t n, const F& f) {
    if (!status_.ok() || n <= 0) return;
    LaunchFor<F>(stream_, n, f);
    CheckLaunch(typeid(F));
  }
  void Gemm(const GemmArgs& g, const float* a, const float* b, float* c);
  void Zero(float* p, int64_t n);
  void Copy(float* dst, const float* src, int64_t n);
  float Read(const float* p);
  Tensor Upload(const runtime::Tensor& t);
  runtime::Tensor Download(const Tensor& t);
  Tensor Clone(const Tensor& t);

  absl::Status status() const { return status_; }
  // Waits for the stream; returns the first error.
  absl::Status Synchronize();

  // A second executor on this one's device with a stream and an allocator of its own (a plain
  // stream with every SM, even when this one is a green context's) — the communication stream
  // of overlapped plans. The two allocators release each other's caches when one runs out of
  // memory. It must be destroyed before this one.
  absl::StatusOr<std::unique_ptr<GpuExec>> Fork();
  // An event recorded on this stream after the work queued so far (null after an error).
  std::shared_ptr<void> Mark();
  // Work queued on this stream from now on waits for `mark` (another stream's Mark) on the
  // device; the host does not wait. A null mark is ignored.
  void WaitMark(const std::shared_ptr<void>& mark);
  void* stream() const { return stream_; }
  int device() const { return device_; }
  Precision precision() const { return precision_; }
  CachingAllocator& allocator() { return *alloc_; }
  // Records `s` unless an error is already recorded.
  void Fail(absl::Status s) {
    if (status_.ok() && !s.ok()) status_ = std::move(s);
  }

 private:
  GpuExec() = default;
  // Records a launch error of functor f's kernel (named in the message).
  void CheckLaunch(const std::type_info& f);

  int device_ = 0;
  Precision precision_ = Precision::kFp32;
  void* stream_ = nullptr;
  bool own_stream_ = false;
  CachingAllocator* parent_alloc_ = nullptr;  // Fork: the forking executor's allocator (paired)
  void* cublas_ = nullptr;  // cublasHandle_t
  std::unique_ptr<CachingAllocator> alloc_;
  absl::Status status_;
};

}  // namespace hetsynth::runtime::gpu
