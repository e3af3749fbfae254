// The executor's gradient synchronization and communication stream (executor_impl.h), kept apart
// from its instruction loop: the plan's two-level mesh (hierarchical collectives), gradient
// buckets (pack the replicated gradients of a bucket, one all-reduce, unpack), and the
// communication stream on which, with Program::overlap, bucket all-reduces, ZeRO gradient
// reduce-scatters and prefetched ZeRO parameter all-gathers run beside compute
// (async_collectives.h: a communication thread on CPU ranks; synchronous where the communicator
// cannot run on another thread, e.g. the GPU communicators) — docs/runtime.md.
//
// Emulated time with overlap has two streams per rank: the compute clock (the executor's
// `clock`) and the communication stream. An operation enqueued at compute time `ready` starts at
// max(ready on every rank, when the stream finished its previous operation) and lasts the time
// the ranks measured for it (ScheduleStream); whoever needs its result waits until it ends.
//
//   HS_ASSIGN_OR_RETURN(PlanMesh mesh, MakePlanMesh(program, comm, /*host_buffers=*/B::kHostTensors));
//   const GradBuckets buckets = GradBuckets::Of(program);
//   HS_ASSIGN_OR_RETURN(T whole, AllGatherBy(b, mesh, comm, mesh.node.get(), piece, shape, d, lengths, impl));
//   HS_RETURN_IF_ERROR(AllReduceBucket(b, mesh, comm, mesh.node.get(), grads, bucket.impl));
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/async_collectives.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/mesh_collectives.h"

namespace hetsynth::runtime {

// The plan's mesh as communicators: active when the program names a two-level node-major mesh
// and uses mesh levels (mixed forms, devices- or nodes-level collectives, nodes buckets), or has
// a hierarchical collective or bucket and the backend's tensors are host memory (`host`: the
// hierarchical collectives move data with host copies; device backends run them flat — the same
// sums in another order).
struct PlanMesh {
  std::optional<Mesh> mesh;
  std::unique_ptr<Communicator> node;  // this rank's node communicator
  bool host = false;                   // hierarchical collectives run on it (host buffers)
  bool active() const { return mesh.has_value() && node != nullptr; }
  bool hierarchical() const { return active() && host; }
  MeshComms Comms(Communicator& world) const { return MeshComms{world, *node, *mesh}; }
};

// Whether the program needs the node communicators for its mesh levels.
inline bool UsesMeshLevels(const instr::Program& p) {
  return p.UsesMesh() || std::any_of(p.buckets.begin(), p.buckets.end(),
                                     [](const instr::Bucket& b) { return b.kind != instr::Level::kWorld; });
}

inline bool UsesHierarchical(const instr::Program& p) {
  for (const instr::Instruction& in : p.instructions) {
    if (in.impl == instr::CollImpl::kHierarchical) return true;
  }
  for (const instr::Bucket& b : p.buckets) {
    if (b.impl == instr::CollImpl::kHierarchical) return true;
  }
  return false;
}

// Collective over `world` (every rank decides alike from the program).
inline absl::StatusOr<PlanMesh> MakePlanMesh(const instr::Program& p, Communicator& world, bool host_buffers) {
  PlanMesh m;
  m.host = host_buffers;
  if (world.size() < 2 || !((host_buffers && UsesHierarchical(p)) || UsesMeshLevels(p)) ||
      !instr::TwoLevelNodes(p.nodes, p.num_devices)) {
    return m;
  }
  HS_ASSIGN_OR_RETURN(Mesh mesh, Mesh::FromNodes(p.nodes));
  m.mesh = std::move(mesh);
  HS_ASSIGN_OR_RETURN(m.node, SplitByNode(world, *m.mesh));
  return m;
}

// How a flat communicator moves an all-gather / reduce-scatter of implementation c (hierarchical
// ones where the mesh is not active: grouped).
inline CommImpl FlatImpl(instr::CollImpl c) { return c == instr::CollImpl::kPadded ? CommImpl::kPadded : CommImpl::kGrouped; }

// Collectives by the plan's implementation for a backend B (executor_impl.h), over a world
// communicator and its node split: hierarchical ones on the mesh when it is active (B's host
// tensors, through B's GatherVia / ScatterVia packing), the flat ones otherwise.
template <class B>
absl::StatusOr<typename B::Tensor> AllGatherBy(B& b, const PlanMesh& mesh, Communicator& w, Communicator* node,
                                               const typename B::Tensor& piece, const ir::Shape& full, int dim,
                                               const std::vector<int64_t>& lengths, instr::CollImpl impl) {
  if constexpr (B::kHostTensors) {
    if (impl == instr::CollImpl::kHierarchical && mesh.hierarchical()) {
      const MeshComms mc{w, *node, *mesh.mesh};
      return b.GatherVia(piece, full, dim, lengths, [&](const float* s, float* r, const std::vector<int64_t>& c) {
        return HierarchicalAllGatherV(mc, s, r, c);
      });
    }
  }
  return b.AllGatherAlong(w, piece, full, dim, lengths, FlatImpl(impl));
}

template <class B>
absl::StatusOr<typename B::Tensor> ReduceScatterBy(B& b, const PlanMesh& mesh, Communicator& w, Communicator* node,
                                                   const typename B::Tensor& whole, int dim,
                                                   const std::vector<int64_t>& lengths, instr::CollImpl impl) {
  if constexpr (B::kHostTensors) {
    if (impl == instr::CollImpl::kHierarchical && mesh.hierarchical()) {
      const MeshComms mc{w, *node, *mesh.mesh};
      return b.ScatterVia(whole, dim, lengths, w.rank(), [&](const float* s, float* r, const std::vector<int64_t>& c) {
        return HierarchicalReduceScatterV(mc, s, r, c);
      });
    }
  }
  return b.ReduceScatterAlong(w, whole, dim, lengths, FlatImpl(impl));
}

template <class T>
absl::Status AllReduceBy(const PlanMesh& mesh, Communicator& w, Communicator* node, T& t, instr::CollImpl impl) {
  if (impl == instr::CollImpl::kHierarchical && mesh.hierarchical()) {
    return HierarchicalAllReduce(MeshComms{w, *node, *mesh.mesh}, t.ptr(), t.numel());
  }
  return w.AllReduce(t.ptr(), t.numel());
}

// The all-reduces of gradients: of replicated parameters over the world, and of parameters
// whole over the nodes and split within them ((I, G e), NodeSyncParametersInReadyOrder) across
// the nodes. Each kind: the program's buckets of that kind, or (with none) one per parameter,
// in the order backward makes the gradients ready.
struct GradBuckets {
  struct One {
    std::vector<ir::ValueId> params;
    instr::CollImpl impl = instr::CollImpl::kRing;
    instr::Level kind = instr::Level::kWorld;  // kWorld or kNodes (instr::Bucket::kind)
  };
  std::vector<One> buckets;
  std::map<ir::ValueId, std::pair<size_t, size_t>> where;  // parameter → (bucket, position)

  static GradBuckets Of(const instr::Program& p) {
    GradBuckets out;
    for (instr::Level kind : {instr::Level::kWorld, instr::Level::kNodes}) {
      const bool bucketed = std::any_of(p.buckets.begin(), p.buckets.end(), [&](const instr::Bucket& b) { return b.kind == kind; });
      if (bucketed) continue;
      const std::vector<ir::ValueId> ready = kind == instr::Level::kWorld ? instr::ReplicatedParametersInReadyOrder(p)
                                                                          : instr::NodeSyncParametersInReadyOrder(p);
      for (ir::ValueId v : ready) out.buckets.push_back({{v}, instr::CollImpl::kRing, kind});
    }
    for (const instr::Bucket& b : p.buckets) out.buckets.push_back({b.params, b.impl, b.kind});
    for (size_t k = 0; k < out.buckets.size(); ++k) {
      for (size_t i = 0; i < out.buckets[k].params.size(); ++i) out.where[out.buckets[k].params[i]] = {k, i};
    }
    return out;
  }
};

// The tensors concatenated, flat (backend B: Make, Place; host tensors are copied directly into
// an uninitialized buffer).
template <class B, class T>
T PackFlat(B& b, const std::vector<T*>& parts) {
  int64_t total = 0;
  for (const T* t : parts) total += t->numel();
  if constexpr (B::kHostTensors) {
    T flat = T::Uninitialized({total});
    float* at = flat.ptr();
    for (const T* t : parts) at = std::copy(t->data.begin(), t->data.end(), at);
    return flat;
  }
  T flat = b.Make({total});
  int64_t at = 0;
  for (T* t : parts) {
    const ir::Shape shape = t->shape;
    t->shape = {t->numel()};
    b.Place(*t, 0, at, flat);
    t->shape = shape;
    at += t->numel();
  }
  return flat;
}

// The inverse: flat's consecutive pieces back into the tensors, in place (shapes kept).
template <class B, class T>
void UnpackFlat(B& b, const T& flat, const std::vector<T*>& parts) {
  int64_t at = 0;
  if constexpr (B::kHostTensors) {
    for (T* t : parts) {
      std::copy(flat.ptr() + at, flat.ptr() + at + t->numel(), t->ptr());
      at += t->numel();
    }
  } else {
    // Into the parts' own memory: replacing them would hand their blocks back to their
    // allocator while a communication stream may still be about to read them (PackFlat's copies).
    for (T* t : parts) {
      const int64_t n = t->numel();
      b.SliceInto(flat, 0, at, n, t->ptr());
      at += n;
    }
  }
}

// A bucket's gradients, in place: one all-reduce of their concatenation.
template <class B, class T>
absl::Status AllReduceBucket(B& b, const PlanMesh& mesh, Communicator& w, Communicator* node, std::vector<T>& gs,
                             instr::CollImpl impl) {
  if (gs.size() == 1) return AllReduceBy(mesh, w, node, gs[0], impl);
  std::vector<T*> parts;
  for (T& t : gs) parts.push_back(&t);
  T flat = PackFlat(b, parts);
  HS_RETURN_IF_ERROR(AllReduceBy(mesh, w, node, flat, impl));
  UnpackFlat(b, flat, parts);
  return absl::OkStatus();
}

// One operation on the communication stream during a step.
struct StreamOp {
  std::string name;
  double ready = 0;                      // this rank's compute clock when it was enqueued
  bool after_pending = false;            // enqueued after a blocking collective whose time is not settled yet
  std::shared_ptr<double> measured;      // its time as measured on the stream (set when it ran)
  AsyncCollectives::Handle handle;      // on a communication thread (host tensors)
  // On a device backend's communication stream (executor_impl.h): issued at once; `mark` is the
  // device event after it, `status` what issuing it returned, `keep` what it reads that nothing
  // else keeps alive until the compute stream has waited for `mark`.
  bool device = false;
  std::shared_ptr<void> mark, keep;
  absl::Status status;
  double start = 0, end = 0;             // settled: emulated start and end on the stream
  bool settled = false;
};

// The stream's schedule for ops [from, to): every rank sent (ready, measured) per op, rank-major
// in `all` (2·(to−from) values per rank). An op starts when every rank has enqueued it and the
// stream is free, and lasts `pick`(the ranks' measurements): the median of thread CPU times
// (robust to one rank's hiccup) or the minimum of wall times (the last rank to arrive measures
// the transfer alone; the others also measure their wait). Returns the stream's new free time.
inline double ScheduleStream(std::vector<StreamOp>& ops, size_t from, size_t to, const std::vector<float>& all,
                             int ranks, bool median, double stream_free) {
  const size_t per = 2 * (to - from);
  for (size_t k = from; k < to; ++k) {
    double ready = 0;
    std::vector<double> m;
    for (int r = 0; r < ranks; ++r) {
      const size_t at = static_cast<size_t>(r) * per + 2 * (k - from);
      ready = std::max<double>(ready, all[at]);
      m.push_back(all[at + 1]);
    }
    std::sort(m.begin(), m.end());
    const size_t n = m.size();
    const double dur = !median ? m.front() : (n % 2 ? m[n / 2] : 0.5 * (m[n / 2 - 1] + m[n / 2]));
    StreamOp& op = ops[k];
    op.start = std::max(ready, stream_free);
    op.end = op.start + dur;
    op.settled = true;
    stream_free = op.end;
  }
  return stream_free;
}

}  // namespace hetsynth::runtime
