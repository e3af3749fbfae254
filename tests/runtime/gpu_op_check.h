// Differential checks of the GPU operators (runtime/backends/cuda/src/ops) against the CPU kernels.
//
// Every check runs twice, as a typed test over the two executors: HostExec (the operators'
// functors in a host loop — runs everywhere, so the arithmetic and indexing are checked on
// machines without a GPU) and, in a CUDA build, GpuExec on device 0 (skipped with the reason
// when no GPU is visible).
//
//   TYPED_TEST_SUITE(GpuNormTest, hetsynth::runtime::testing::GpuExecutors);
//   TYPED_TEST(GpuNormTest, Softmax) {
//     OpCase c = RandomCase(ir::OpKind::kSoftmax, {{4, 7}});
//     ExpectMatchesCpu(this->x(), c, &gpu::SoftmaxForward<TypeParam>, &gpu::SoftmaxBackward<TypeParam>);
//   }
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "exec/exec_host.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/cuda.h"
#include "hetsynth/runtime/kernels.h"
#include "ops/ops.h"
#if defined(HETSYNTH_HAVE_CUDA)
#include "exec/exec_gpu.h"
#endif

namespace hetsynth::runtime::testing {

#if defined(HETSYNTH_HAVE_CUDA)
using GpuExecutors = ::testing::Types<gpu::HostExec, gpu::GpuExec>;
#else
using GpuExecutors = ::testing::Types<gpu::HostExec>;
#endif

// The fixture: this->x() is the executor; GpuExec tests skip without a GPU.
template <class X>
class GpuOpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if constexpr (X::kOnGpu) {
#if defined(HETSYNTH_HAVE_CUDA)
      const CudaInfo info = ProbeCuda();
      if (info.devices == 0) GTEST_SKIP() << "no GPU: " << info.reason;
      auto made = X::Create({});
      ASSERT_TRUE(made.ok()) << made.status();
      x_ = std::move(*made);
#endif
    } else {
      x_ = std::make_unique<X>();
    }
  }
  void TearDown() override {
    if constexpr (X::kOnGpu) {
      if (x_) {
        EXPECT_TRUE(x_->Synchronize().ok()) << x_->status();
      }
    }
  }
  X& x() { return *x_; }

 private:
  std::unique_ptr<X> x_;
};

// One operator call: inputs (integers where the op wants ids, labels or routes), attributes,
// and optionally a shard description for the kernels that read one.
struct OpCase {
  ir::OpKind kind = ir::OpKind::kAdd;
  ir::Attrs attrs;
  std::vector<Tensor> inputs;
  bool has_shard = false;
  ShardInfo shard;
  int64_t step = 0;
  double tol = 1e-5;  // max |gpu − cpu| <= tol · max(max |cpu|, 1e-6), per output; 0: the same
                      // bits (signed zeros and NaNs included)
  uint32_t seed = 7;  // for the output gradient
};

inline Tensor RandomTensor(ir::Shape shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(std::move(shape));
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (float& v : t.data) v = u(gen);
  return t;
}

// Random inputs of these shapes (uniform in [-1, 1)); set integer inputs afterwards.
inline OpCase RandomCase(ir::OpKind kind, const std::vector<ir::Shape>& shapes, const ir::Attrs& attrs = {},
                         uint32_t seed = 1) {
  OpCase c;
  c.kind = kind;
  c.attrs = attrs;
  for (size_t i = 0; i < shapes.size(); ++i) c.inputs.push_back(RandomTensor(shapes[i], seed + 101 * i));
  return c;
}

// max |a − b| / max(max |ref|, 1e-6), or +inf when the shapes differ.
inline double RelativeError(const Tensor& got, const Tensor& ref) {
  if (got.shape != ref.shape) return INFINITY;
  double diff = 0, scale = 1e-6;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double g = got.data[static_cast<size_t>(i)], r = ref.data[static_cast<size_t>(i)];
    if (std::isnan(g) != std::isnan(r)) return INFINITY;
    if (std::isinf(r) || std::isinf(g)) {
      if (g != r) return INFINITY;
      continue;
    }
    diff = std::max(diff, std::fabs(g - r));
    scale = std::max(scale, std::fabs(r));
  }
  return diff / scale;
}

// The first element whose bits differ, as a message; empty when the tensors are identical.
inline std::string BitDifference(const Tensor& got, const Tensor& ref) {
  if (got.shape != ref.shape) return StrCat("shape ", ir::ShapeString(got.shape), " vs ", ir::ShapeString(ref.shape));
  for (size_t i = 0; i < ref.data.size(); ++i) {
    if (std::memcmp(&got.data[i], &ref.data[i], sizeof(float)) != 0) {
      return StrCat("element ", i, " is ", got.data[i], "; expected the bits of ", ref.data[i]);
    }
  }
  return "";
}

inline ir::Node CaseNode(const OpCase& c) {
  ir::Node node;
  node.name = std::string(ir::OpName(c.kind));
  node.kind = c.kind;
  node.attrs = c.attrs;
  return node;
}

// Runs the CPU kernel and the GPU operator on the case's inputs and compares the outputs, then
// both backwards with the same random output gradient and compares every input gradient.
template <class X, class Fwd, class Bwd>
void ExpectMatchesCpu(X& x, const OpCase& c, Fwd gpu_forward, Bwd gpu_backward) {
  const ir::Node node = CaseNode(c);
  KernelContext ctx{c.step};
  if (c.has_shard) ctx.shard = &c.shard;
  std::vector<ir::Shape> shapes;
  std::vector<const Tensor*> cpu_in;
  for (const Tensor& t : c.inputs) shapes.push_back(t.shape), cpu_in.push_back(&t);
  absl::StatusOr<ir::Shape> shape = ir::InferShape(c.kind, shapes, c.attrs);
  ASSERT_TRUE(shape.ok()) << shape.status();

  // CPU reference.
  Tensor cpu_out(*shape);
  SavedState cpu_saved;
  Forward(node, ctx, cpu_in, cpu_out, cpu_saved);
  const Tensor dout = RandomTensor(*shape, c.seed);
  std::vector<Tensor> cpu_store(c.inputs.size());
  std::vector<Tensor*> cpu_din(c.inputs.size(), nullptr);
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (Differentiable(c.kind, i)) cpu_store[i] = Tensor(c.inputs[i].shape), cpu_din[i] = &cpu_store[i];
  }
  Backward(node, ctx, cpu_in, cpu_out, dout, cpu_saved, cpu_din);

  // The GPU operator.
  std::vector<typename X::Tensor> in;
  for (const Tensor& t : c.inputs) in.push_back(x.Upload(t));
  std::vector<const typename X::Tensor*> in_ptr;
  for (const auto& t : in) in_ptr.push_back(&t);
  typename X::Tensor out = x.Make(*shape);
  gpu::Saved<X> saved;
  gpu_forward(x, node, ctx, in_ptr, out, saved);
  typename X::Tensor gdout = x.Upload(dout);
  std::vector<typename X::Tensor> store;
  for (size_t i = 0; i < c.inputs.size(); ++i) store.push_back(x.Make(Differentiable(c.kind, i) ? c.inputs[i].shape : ir::Shape{0}));
  std::vector<typename X::Tensor*> din(c.inputs.size(), nullptr);
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (Differentiable(c.kind, i)) din[i] = &store[i];
  }
  gpu_backward(x, node, ctx, in_ptr, out, gdout, saved, din);

  const std::string what = StrCat(ir::OpName(c.kind), " on ", c.inputs.empty() ? "" : ir::ShapeString(c.inputs[0].shape));
  const double fwd = RelativeError(x.Download(out), cpu_out);
  EXPECT_LE(fwd, c.tol) << what << ": forward output";
  if (c.tol == 0) {
    EXPECT_EQ(BitDifference(x.Download(out), cpu_out), "") << what << ": forward output";
  }
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (!cpu_din[i]) continue;
    const double err = RelativeError(x.Download(store[i]), cpu_store[i]);
    EXPECT_LE(err, c.tol) << what << ": gradient of input " << i;
    if (c.tol == 0) {
      EXPECT_EQ(BitDifference(x.Download(store[i]), cpu_store[i]), "") << what << ": gradient of input " << i;
    }
  }
}

}  // namespace hetsynth::runtime::testing
