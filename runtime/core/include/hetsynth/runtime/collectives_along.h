// Collectives along one dim of a tensor — the counts and packing of a plan's all_gather /
// reduce_scatter / all_to_all instructions (and their duals) — defined ONCE for every backend,
// as templates over a mover that copies a dim's slices between a tensor and the flat
// rank-order buffers the communicators take: host loops on the CPU (collectives.h), the
// SliceCopy / PlaceCopy kernels on GPUs (backends/cuda/src/executor/backend.h).
//
// A mover M provides:
//   using Tensor = …;                              // shape, ptr(), numel(), dim(d)
//   Tensor Make(ir::Shape shape);                  // contents unspecified
//   void SliceInto(const Tensor& src, int dim, int64_t start, int64_t len, float* dst);
//        // src[..., start:start+len, ...] along dim into dst, contiguous
//   void PlaceFrom(const float* src, int dim, int64_t start, int64_t len, Tensor& full);
//        // the inverse: a contiguous piece into full at rows [start, start + len) of dim
//
// GatherAlong / ScatterAlong take the flat collective as a callable, so the same packing
// serves the communicator's flat all-gather-v / reduce-scatter-v and the hierarchical ones of
// mesh_collectives.h (which take the same flat rank-order buffers and per-rank counts):
//
//   HS_ASSIGN_OR_RETURN(T full, along::AllGatherAlong(mover, comm, piece, shape, d, lengths, impl));
//   HS_ASSIGN_OR_RETURN(T full, along::GatherAlong(mover, piece, shape, d, lengths,
//       [&](const float* send, float* recv, const std::vector<int64_t>& counts) {
//         return HierarchicalAllGatherV(mesh_comms, send, recv, counts);
//       }));
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/shard.h"

namespace hetsynth::runtime::along {

// Elements per rank when the ranks hold `lengths` rows of dim d of a tensor shaped `shape`.
inline std::vector<int64_t> CountsAlong(const ir::Shape& shape, int d, const std::vector<int64_t>& lengths) {
  const Around a = AroundDim(shape, d);
  std::vector<int64_t> counts;
  counts.reserve(lengths.size());
  for (int64_t len : lengths) counts.push_back(len * a.outer * a.inner);
  return counts;
}

// The slices of t along dim by `lengths`, each contiguous, concatenated in rank order (flat).
template <class M>
typename M::Tensor PackAlong(M& m, const typename M::Tensor& t, int dim, const std::vector<int64_t>& lengths) {
  typename M::Tensor out = m.Make({t.numel()});
  const int64_t per = t.numel() / std::max<int64_t>(1, t.dim(dim));
  int64_t at = 0;
  for (size_t r = 0; r < lengths.size(); ++r) {
    m.SliceInto(t, dim, Offset(lengths, static_cast<int>(r)), lengths[r], out.ptr() + at);
    at += per * lengths[r];
  }
  return out;
}

// The inverse: rank-order slices (flat, `counts` elements each) placed along dim into out.
template <class M>
void UnpackAlong(M& m, const float* flat, int dim, const std::vector<int64_t>& lengths,
                 const std::vector<int64_t>& counts, typename M::Tensor& out) {
  int64_t at = 0;
  for (size_t r = 0; r < lengths.size(); ++r) {
    m.PlaceFrom(flat + at, dim, Offset(lengths, static_cast<int>(r)), lengths[r], out);
    at += counts[r];
  }
}

// Gather(t, d) pieces (rank r holds lengths[r] rows) → the whole t, shaped `full`, through
// gather(send, recv, counts): a flat all-gather-v of counts[r] elements from rank r.
template <class M, class Gather>
absl::StatusOr<typename M::Tensor> GatherAlong(M& m, const typename M::Tensor& piece, const ir::Shape& full, int d,
                                               const std::vector<int64_t>& lengths, const Gather& gather) {
  const std::vector<int64_t> counts = CountsAlong(full, d, lengths);
  typename M::Tensor out = m.Make(full);
  if (AroundDim(full, d).outer == 1) {  // the rank-order concatenation already is the layout
    HS_RETURN_IF_ERROR(gather(piece.ptr(), out.ptr(), counts));
    return out;
  }
  typename M::Tensor recv = m.Make({ir::NumElements(full)});
  HS_RETURN_IF_ERROR(gather(piece.ptr(), recv.ptr(), counts));
  UnpackAlong(m, recv.ptr(), d, lengths, counts, out);
  return out;
}

// Whole-shape partial sums → this rank's piece of their sum along d (lengths[rank] rows),
// through scatter(send, recv, counts): a flat reduce-scatter-v.
template <class M, class Scatter>
absl::StatusOr<typename M::Tensor> ScatterAlong(M& m, const typename M::Tensor& whole, int d,
                                                const std::vector<int64_t>& lengths, int rank, const Scatter& scatter) {
  const std::vector<int64_t> counts = CountsAlong(whole.shape, d, lengths);
  typename M::Tensor out = m.Make(WithDim(whole.shape, d, lengths[static_cast<size_t>(rank)]));
  if (AroundDim(whole.shape, d).outer == 1) {  // the segments are already contiguous, in rank order
    HS_RETURN_IF_ERROR(scatter(whole.ptr(), out.ptr(), counts));
    return out;
  }
  const typename M::Tensor send = PackAlong(m, whole, d, lengths);
  HS_RETURN_IF_ERROR(scatter(send.ptr(), out.ptr(), counts));
  return out;
}

// The communicator's flat collectives along a dim (the contracts of collectives.h).
template <class M>
absl::StatusOr<typename M::Tensor> AllGatherAlong(M& m, Communicator& comm, const typename M::Tensor& piece,
                                                  const ir::Shape& full, int d, const std::vector<int64_t>& lengths,
                                                  CommImpl impl) {
  return GatherAlong(m, piece, full, d, lengths, [&](const float* send, float* recv, const std::vector<int64_t>& c) {
    return comm.AllGatherV(send, recv, c, impl);
  });
}

template <class M>
absl::StatusOr<typename M::Tensor> ReduceScatterAlong(M& m, Communicator& comm, const typename M::Tensor& whole,
                                                      int d, const std::vector<int64_t>& lengths, CommImpl impl) {
  return ScatterAlong(m, whole, d, lengths, comm.rank(),
                      [&](const float* send, float* recv, const std::vector<int64_t>& c) {
                        return comm.ReduceScatterV(send, recv, c, impl);
                      });
}

// Gather(t, d) pieces (lengths ld) → Gather(t, d2) pieces (lengths ld2), one all-to-all-v.
template <class M>
absl::StatusOr<typename M::Tensor> AllToAllAlong(M& m, Communicator& comm, const typename M::Tensor& piece,
                                                 const ir::Shape& full, int d, const std::vector<int64_t>& ld, int d2,
                                                 const std::vector<int64_t>& ld2) {
  typename M::Tensor packed;
  const bool pack = AroundDim(piece.shape, d2).outer != 1;
  if (pack) packed = PackAlong(m, piece, d2, ld2);
  const float* send = pack ? packed.ptr() : piece.ptr();
  const int64_t per_d2 = piece.numel() / std::max<int64_t>(1, full[static_cast<size_t>(d2)]);
  const ir::Shape out_shape = WithDim(full, d2, ld2[static_cast<size_t>(comm.rank())]);
  const int64_t per_d = ir::NumElements(out_shape) / std::max<int64_t>(1, full[static_cast<size_t>(d)]);
  std::vector<int64_t> send_counts, recv_counts;
  for (size_t r = 0; r < ld.size(); ++r) {
    send_counts.push_back(per_d2 * ld2[r]);
    recv_counts.push_back(per_d * ld[r]);
  }
  typename M::Tensor out = m.Make(out_shape);
  if (AroundDim(out_shape, d).outer == 1) {
    HS_RETURN_IF_ERROR(comm.AllToAllV(send, send_counts, out.ptr(), recv_counts));
    return out;
  }
  typename M::Tensor recv = m.Make({ir::NumElements(out_shape)});
  HS_RETURN_IF_ERROR(comm.AllToAllV(send, send_counts, recv.ptr(), recv_counts));
  UnpackAlong(m, recv.ptr(), d, ld, recv_counts, out);
  return out;
}

}  // namespace hetsynth::runtime::along
