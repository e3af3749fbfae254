// Dense CPU kernels: linear and matmul, every matrix product through runtime::Gemm.
//
// Both ops fold leading batch dims into the GEMM's row count wherever the weight is shared
// (linear's W, matmul's 2-D b), so a [B, T, C] activation costs one large product instead of
// B small ones. Gradients accumulate into din with beta = 1, which is what the "add into a
// zero-filled din" contract asks for and saves a temporary per input.
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/ops/checks.h"
#include "ops.h"

namespace hetsynth::runtime::cpu {

// x[M, in] · W[out, in]ᵀ (+ b) with M the product of x's leading dims.
void LinearForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                   SavedState& saved) {
  const Tensor& x = *in[0];
  const Tensor& w = *in[1];
  const int64_t k = w.dim(1), n = w.dim(0);
  CheckLinear(node, x.shape, k);
  const int64_t m = x.numel() / k;
  Gemm(false, true, m, n, k, 1.0f, x.ptr(), w.ptr(), 0.0f, out.ptr());
  if (in.size() > 2 && in[2] != nullptr) {
    const float* b = in[2]->ptr();
    float* y = out.ptr();
    for (int64_t r = 0; r < m; ++r) {
      float* row = y + r * n;
      for (int64_t j = 0; j < n; ++j) row[j] += b[j];
    }
  }
}

void LinearBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                    const Tensor& dout, const SavedState& saved, DIn din) {
  const Tensor& x = *in[0];
  const Tensor& w = *in[1];
  const int64_t k = w.dim(1), n = w.dim(0);
  const int64_t m = x.numel() / k;
  const float* dy = dout.ptr();
  if (din[0]) Gemm(false, false, m, k, n, 1.0f, dy, w.ptr(), 1.0f, din[0]->ptr());
  if (din[1]) Gemm(true, false, n, k, m, 1.0f, dy, x.ptr(), 1.0f, din[1]->ptr());
  if (din.size() > 2 && din[2]) {
    // A float running sum over thousands of rows loses digits; the column sums go in double.
    std::vector<double> acc(static_cast<size_t>(n), 0.0);
    for (int64_t r = 0; r < m; ++r) {
      const float* row = dy + r * n;
      for (int64_t j = 0; j < n; ++j) acc[j] += row[j];
    }
    float* db = din[2]->ptr();
    for (int64_t j = 0; j < n; ++j) db[j] += static_cast<float>(acc[j]);
  }
}

void MatMulForward(const ir::Node& node, const KernelContext& ctx, In in, Tensor& out,
                   SavedState& saved) {
  const Tensor& a = *in[0];
  const Tensor& b = *in[1];
  const MatMulDims d = GetMatMulDims(node, a.shape, b.shape);
  if (d.shared) {
    Gemm(false, false, d.batch * d.m, d.n, d.k, 1.0f, a.ptr(), b.ptr(), 0.0f, out.ptr());
    return;
  }
  for (int64_t i = 0; i < d.batch; ++i) {
    Gemm(false, false, d.m, d.n, d.k, 1.0f, a.ptr() + i * d.m * d.k, b.ptr() + i * d.k * d.n,
         0.0f, out.ptr() + i * d.m * d.n);
  }
}

void MatMulBackward(const ir::Node& node, const KernelContext& ctx, In in, const Tensor& out,
                    const Tensor& dout, const SavedState& saved, DIn din) {
  const Tensor& a = *in[0];
  const Tensor& b = *in[1];
  const MatMulDims d = GetMatMulDims(node, a.shape, b.shape);
  const float* dc = dout.ptr();
  if (d.shared) {
    const int64_t rows = d.batch * d.m;
    if (din[0]) Gemm(false, true, rows, d.k, d.n, 1.0f, dc, b.ptr(), 1.0f, din[0]->ptr());
    if (din[1]) Gemm(true, false, d.k, d.n, rows, 1.0f, a.ptr(), dc, 1.0f, din[1]->ptr());
    return;
  }
  for (int64_t i = 0; i < d.batch; ++i) {
    const float* dci = dc + i * d.m * d.n;
    if (din[0]) {
      Gemm(false, true, d.m, d.k, d.n, 1.0f, dci, b.ptr() + i * d.k * d.n, 1.0f,
           din[0]->ptr() + i * d.m * d.k);
    }
    if (din[1]) {
      Gemm(true, false, d.k, d.n, d.m, 1.0f, a.ptr() + i * d.m * d.k, dci, 1.0f,
           din[1]->ptr() + i * d.k * d.n);
    }
  }
}

}  // namespace hetsynth::runtime::cpu
