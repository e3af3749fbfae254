#include "hetsynth/runtime/collectives.h"

#include <algorithm>

#include "hetsynth/ir/status.h"
#include "hetsynth/runtime/shard.h"

namespace hetsynth::runtime {
absl::StatusOr<Tensor> AllGatherAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                      const std::vector<int64_t>& lengths, CommImpl impl) {
  const Around a = AroundDim(full, d);
  std::vector<int64_t> counts;
  for (int64_t len : lengths) counts.push_back(len * a.outer * a.inner);
  if (a.outer == 1) {  // the rank-order concatenation already is the tensor's layout
    Tensor out(full);
    HS_RETURN_IF_ERROR(comm.AllGatherV(piece.ptr(), out.ptr(), counts, impl));
    return out;
  }
  std::vector<float> recv(static_cast<size_t>(ir::NumElements(full)));
  HS_RETURN_IF_ERROR(comm.AllGatherV(piece.ptr(), recv.data(), counts, impl));
  return UnpackAlong(recv.data(), full, d, lengths);
}

absl::StatusOr<Tensor> ReduceScatterAlong(Communicator& comm, const Tensor& whole, int d,
                                          const std::vector<int64_t>& lengths, CommImpl impl) {
  const Around a = AroundDim(whole.shape, d);
  std::vector<int64_t> counts;
  for (int64_t len : lengths) counts.push_back(len * a.outer * a.inner);
  Tensor out(WithDim(whole.shape, d, lengths[static_cast<size_t>(comm.rank())]));
  if (a.outer == 1) {  // the segments are already contiguous and in rank order
    HS_RETURN_IF_ERROR(comm.ReduceScatterV(whole.ptr(), out.ptr(), counts, impl));
    return out;
  }
  const std::vector<float> send = PackAlong(whole, d, lengths);
  HS_RETURN_IF_ERROR(comm.ReduceScatterV(send.data(), out.ptr(), counts, impl));
  return out;
}

absl::StatusOr<Tensor> AllToAllAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                     const std::vector<int64_t>& ld, int d2, const std::vector<int64_t>& ld2) {
  std::vector<float> packed;
  if (AroundDim(piece.shape, d2).outer != 1) packed = PackAlong(piece, d2, ld2);
  const float* send = packed.empty() ? piece.ptr() : packed.data();
  const int64_t per_d2 = piece.numel() / std::max<int64_t>(1, full[static_cast<size_t>(d2)]);
  const int64_t mine2 = ld2[static_cast<size_t>(comm.rank())];
  const ir::Shape out_shape = WithDim(full, d2, mine2);
  const int64_t per_d = ir::NumElements(out_shape) / std::max<int64_t>(1, full[static_cast<size_t>(d)]);
  std::vector<int64_t> send_counts, recv_counts;
  for (size_t r = 0; r < ld.size(); ++r) {
    send_counts.push_back(per_d2 * ld2[r]);
    recv_counts.push_back(per_d * ld[r]);
  }
  if (AroundDim(out_shape, d).outer == 1) {
    Tensor out(out_shape);
    HS_RETURN_IF_ERROR(comm.AllToAllV(send, send_counts, out.ptr(), recv_counts));
    return out;
  }
  std::vector<float> recv(static_cast<size_t>(ir::NumElements(out_shape)));
  HS_RETURN_IF_ERROR(comm.AllToAllV(send, send_counts, recv.data(), recv_counts));
  return UnpackAlong(recv.data(), out_shape, d, ld);
}

}  // namespace hetsynth::runtime
