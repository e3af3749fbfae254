// GEMM through Eigen's blocked kernels (single-threaded; ranks are the unit of parallelism).
#include <algorithm>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/kernels.h"

namespace hetsynth::runtime {

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, const float* b, float beta, float* c) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  HS_CHECK(beta == 0.0f || beta == 1.0f, "Gemm supports beta 0 or 1");
  if (m == 0 || n == 0) return;
  Eigen::Map<RowMat> cm(c, m, n);
  if (k == 0) {
    if (beta == 0.0f) cm.setZero();
    return;
  }
  // Eigen's matrix-vector and small-product paths peel unaligned heads, so their summation
  // order (and the bits) would depend on the operands' addresses — on the allocator, the
  // process, MPI vs threads. Every operand is therefore used from a 64-byte-aligned address: as
  // it is when it already sits at one (every host tensor starts at one: host_allocator.h),
  // otherwise copied to an aligned buffer first. Either way the result depends only on the
  // values and the sizes.
  thread_local std::vector<float, Eigen::aligned_allocator<float>> abuf, bbuf, cbuf;
  auto aligned = [](const float* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; };
  auto aligned_copy = [](auto& buf, const float* src, int64_t count) {
    if (buf.size() < static_cast<size_t>(count) + 16) buf.resize(static_cast<size_t>(count) + 16);
    float* p = buf.data();
    p += (16 - (reinterpret_cast<uintptr_t>(p) / sizeof(float)) % 16) % 16;
    std::copy(src, src + count, p);
    return p;
  };
  const float* aa = aligned(a) ? a : aligned_copy(abuf, a, m * k);
  const float* ba = aligned(b) ? b : aligned_copy(bbuf, b, k * n);
  const bool c_aligned = aligned(c);
  float* ca = c_aligned ? c : aligned_copy(cbuf, c, m * n);
  using AlignedMap = Eigen::Map<RowMat, Eigen::Aligned64>;
  using ConstAlignedMap = Eigen::Map<const RowMat, Eigen::Aligned64>;
  AlignedMap cam(ca, m, n);
  auto run = [&](const auto& lhs, const auto& rhs) {
    if (beta == 0.0f) {
      cam.noalias() = alpha * (lhs * rhs);
    } else {
      cam.noalias() += alpha * (lhs * rhs);
    }
    if (!c_aligned) cm = cam;
  };
  const ConstAlignedMap am(aa, trans_a ? k : m, trans_a ? m : k);
  const ConstAlignedMap bm(ba, trans_b ? n : k, trans_b ? k : n);
  if (!trans_a && !trans_b) run(am, bm);
  if (!trans_a && trans_b) run(am, bm.transpose());
  if (trans_a && !trans_b) run(am.transpose(), bm);
  if (trans_a && trans_b) run(am.transpose(), bm.transpose());
}

}  // namespace hetsynth::runtime
