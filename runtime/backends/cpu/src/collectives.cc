// collectives.h on host tensors: collectives_along.h's one definition with a host mover.
#include "hetsynth/runtime/collectives.h"

#include <algorithm>

#include "hetsynth/runtime/collectives_along.h"
#include "hetsynth/runtime/shard.h"

namespace hetsynth::runtime {
namespace {

// Slices of host tensors, copied by rows of the dims after `dim`.
struct HostMover {
  using Tensor = runtime::Tensor;
  Tensor Make(ir::Shape shape) { return Tensor::Uninitialized(std::move(shape)); }  // overwritten whole
  void SliceInto(const Tensor& src, int dim, int64_t start, int64_t len, float* dst) {
    const Around a = AroundDim(src.shape, dim);
    for (int64_t o = 0; o < a.outer; ++o) {
      const float* from = src.ptr() + (o * a.len + start) * a.inner;
      dst = std::copy(from, from + len * a.inner, dst);
    }
  }
  void PlaceFrom(const float* src, int dim, int64_t start, int64_t len, Tensor& full) {
    const Around a = AroundDim(full.shape, dim);
    for (int64_t o = 0; o < a.outer; ++o) {
      std::copy(src, src + len * a.inner, full.ptr() + (o * a.len + start) * a.inner);
      src += len * a.inner;
    }
  }
};

}  // namespace

absl::StatusOr<Tensor> AllGatherAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                      const std::vector<int64_t>& lengths, CommImpl impl) {
  HostMover m;
  return along::AllGatherAlong(m, comm, piece, full, d, lengths, impl);
}

absl::StatusOr<Tensor> ReduceScatterAlong(Communicator& comm, const Tensor& whole, int d,
                                          const std::vector<int64_t>& lengths, CommImpl impl) {
  HostMover m;
  return along::ReduceScatterAlong(m, comm, whole, d, lengths, impl);
}

absl::StatusOr<Tensor> AllToAllAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                     const std::vector<int64_t>& ld, int d2, const std::vector<int64_t>& ld2) {
  HostMover m;
  return along::AllToAllAlong(m, comm, piece, full, d, ld, d2, ld2);
}

absl::StatusOr<Tensor> GatherAlong(const Tensor& piece, const ir::Shape& full, int d,
                                   const std::vector<int64_t>& lengths, const FlatGather& gather) {
  HostMover m;
  return along::GatherAlong(m, piece, full, d, lengths, gather);
}

absl::StatusOr<Tensor> ScatterAlong(const Tensor& whole, int d, const std::vector<int64_t>& lengths, int rank,
                                    const FlatScatter& scatter) {
  HostMover m;
  return along::ScatterAlong(m, whole, d, lengths, rank, scatter);
}

}  // namespace hetsynth::runtime
