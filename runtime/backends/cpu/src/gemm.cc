// GEMM through Eigen's blocked kernels (single-threaded; ranks are the unit of parallelism).
#include <Eigen/Core>

#include "hetsynth/ir/status.h"
#include "hetsynth/runtime/kernels.h"

namespace hetsynth::runtime {

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, const float* b, float beta, float* c) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMat>;
  HS_CHECK(beta == 0.0f || beta == 1.0f, "Gemm supports beta 0 or 1");
  if (m == 0 || n == 0) return;
  Eigen::Map<RowMat> cm(c, m, n);
  if (k == 0) {
    if (beta == 0.0f) cm.setZero();
    return;
  }
  auto run = [&](const auto& lhs, const auto& rhs) {
    if (beta == 0.0f) {
      cm.noalias() = alpha * (lhs * rhs);
    } else {
      cm.noalias() += alpha * (lhs * rhs);
    }
  };
  const ConstMap am(a, trans_a ? k : m, trans_a ? m : k);
  const ConstMap bm(b, trans_b ? n : k, trans_b ? k : n);
  if (!trans_a && !trans_b) run(am, bm);
  if (!trans_a && trans_b) run(am, bm.transpose());
  if (trans_a && !trans_b) run(am.transpose(), bm);
  if (trans_a && trans_b) run(am.transpose(), bm.transpose());
}

}  // namespace hetsynth::runtime
