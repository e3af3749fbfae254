// HostExec: the GPU backend's execution interface carried out on the host.
//
// Every GPU operator (ops.h) is a template over an executor X that provides:
//   using Tensor = ...;                       // shape, ptr(), numel(), dim(i), rank()
//   Tensor Make(ir::Shape shape);             // zero-filled
//   void For(int64_t n, const F& f);          // f(i) for every i in [0, n), any order
//   void Gemm(const GemmArgs& g, const float* a, const float* b, float* c);
//   void Zero(float* p, int64_t n);
//   void Copy(float* dst, const float* src, int64_t n);   // non-overlapping
//   float Read(const float* p);               // one element to the host
//   Tensor Upload(const runtime::Tensor& t);  runtime::Tensor Download(const Tensor& t);
//   Tensor Clone(const Tensor& t);
//   absl::Status status(); absl::Status Synchronize();   // first error; wait for queued work
//   std::unique_ptr<X> Fork();                // (StatusOr) another stream on the device
//   std::shared_ptr<void> Mark();  void WaitMark(mark);   // order two streams on the device
// GpuExec (exec_gpu.h) implements it with CUDA streams, cuBLAS and the caching allocator;
// HostExec implements it with host memory, plain loops and the CPU GEMM. HostExec is not a
// backend users choose: it exists so that the GPU operators' arithmetic and indexing run and
// are checked against the CPU kernels on machines without a GPU.
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "exec/gemm_args.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime::gpu {

class HostExec {
 public:
  using Tensor = runtime::Tensor;
  static constexpr bool kOnGpu = false;

  Tensor Make(ir::Shape shape) { return Tensor(std::move(shape)); }
  template <class F>
  void For(int64_t n, const F& f) {
    for (int64_t i = 0; i < n; ++i) f(i);
  }
  void Gemm(const GemmArgs& g, const float* a, const float* b, float* c) {
    for (int64_t i = 0; i < g.batch; ++i) {
      runtime::Gemm(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, a + i * g.stride_a,
                    b + i * g.stride_b, g.beta, c + i * g.stride_c);
    }
  }
  void Zero(float* p, int64_t n) { std::fill(p, p + n, 0.0f); }
  void Copy(float* dst, const float* src, int64_t n) {
    if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  }
  float Read(const float* p) { return *p; }
  Tensor Upload(const runtime::Tensor& t) { return t; }
  runtime::Tensor Download(const Tensor& t) { return t; }
  Tensor Clone(const Tensor& t) { return t; }
  absl::Status status() const { return absl::OkStatus(); }
  absl::Status Synchronize() { return absl::OkStatus(); }
  // Streams (GpuExec::Fork/Mark/WaitMark): the host runs everything in order as it is issued.
  absl::StatusOr<std::unique_ptr<HostExec>> Fork() { return std::make_unique<HostExec>(); }
  std::shared_ptr<void> Mark() { return nullptr; }
  void WaitMark(const std::shared_ptr<void>&) {}
  // gpu::SplitOnto's counterpart: the communicator's own split (host buffers move at once).
  static absl::StatusOr<std::unique_ptr<Communicator>> SplitOnto(Communicator& c, HostExec&) {
    return c.Split(0, c.rank());
  }
};

}  // namespace hetsynth::runtime::gpu
