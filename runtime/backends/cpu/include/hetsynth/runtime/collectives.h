// Collectives on host tensor pieces split along one dim by uneven lengths — the data movement
// of a plan's all_gather / reduce_scatter / all_to_all instructions (and their duals), including
// the packing of strided slices into the communicator's flat rank-order buffers. The CPU
// instance of collectives_along.h, which the GPU backend shares.
//
//   std::vector<int64_t> lengths = {3, 0, 5};   // rank r holds lengths[r] along dim d
//   HS_ASSIGN_OR_RETURN(Tensor full, AllGatherAlong(comm, mine, full_shape, d, lengths, CommImpl::kGrouped));
//   // The same packing around a hierarchical all-gather (mesh_collectives.h):
//   HS_ASSIGN_OR_RETURN(Tensor full2, GatherAlong(mine, full_shape, d, lengths,
//       [&](const float* s, float* r, const std::vector<int64_t>& c) { return HierarchicalAllGatherV(mc, s, r, c); }));
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// Gather(t, d) pieces → the whole t (of shape `full`) on every rank.
absl::StatusOr<Tensor> AllGatherAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                      const std::vector<int64_t>& lengths, CommImpl impl);
// Whole-shape partial sums → this rank's piece of their sum along d.
absl::StatusOr<Tensor> ReduceScatterAlong(Communicator& comm, const Tensor& whole, int d,
                                          const std::vector<int64_t>& lengths, CommImpl impl);
// Gather(t, d) pieces (lengths ld) → Gather(t, d2) pieces (lengths ld2).
absl::StatusOr<Tensor> AllToAllAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                     const std::vector<int64_t>& ld, int d2, const std::vector<int64_t>& ld2);

// A flat all-gather-v / reduce-scatter-v over (send, recv, counts per rank in rank order).
using FlatGather = std::function<absl::Status(const float* send, float* recv, const std::vector<int64_t>& counts)>;
using FlatScatter = FlatGather;
// AllGatherAlong / ReduceScatterAlong through any flat collective (e.g. the hierarchical ones).
absl::StatusOr<Tensor> GatherAlong(const Tensor& piece, const ir::Shape& full, int d,
                                   const std::vector<int64_t>& lengths, const FlatGather& gather);
absl::StatusOr<Tensor> ScatterAlong(const Tensor& whole, int d, const std::vector<int64_t>& lengths, int rank,
                                    const FlatScatter& scatter);

}  // namespace hetsynth::runtime
