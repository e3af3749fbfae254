// The plan executor's algorithm (executor.h), written once over a backend B that owns the
// tensors and their arithmetic: the CPU backend (backends/cpu/src/executor.cc: host tensors, CPU
// kernels, collectives.h) and the GPU backend (backends/cuda/src/executor/backend.h: an
// executor's device tensors, the GPU operators, device-pointer collectives). For backends only;
// everyone else uses Executor. What a rank runs for a compute instruction (local attributes,
// output piece, bias owner, a piece's place, experts) comes from instr::LocalComputeOf: the
// executor takes no decision by rule name or op kind. B provides:
//   using Tensor; using Saved; using Optimizer;      static constexpr bool kHostTensors;
//   Tensor Make(shape) (zeros), FromHost(runtime::Tensor), Clone(const Tensor&);
//   runtime::Tensor ToHost(const Tensor&);  float ReadScalar(const Tensor&);
//   Slice(x, dim, start, len), Place(part, dim, start, full), AddInto(acc, x);
//   AllGatherAlong / ReduceScatterAlong / AllToAllAlong (collectives.h's contracts);
//   Forward / Backward (kernel_contract.h's contracts);  RenumberRoutes(routes, offset, local);
//   MakeOptimizer(cfg), OptimizerStep(opt, params, grads), StateTensors(opt) (host),
//   RestoreState(opt, host tensors, steps);  Wait() (finish queued work);  status();
//   with kHostTensors: GatherVia / ScatterVia (collectives_along.h's GatherAlong / ScatterAlong
//   through a flat collective: the hierarchical ones of mesh_collectives.h).
// Gradient buckets, hierarchical collectives and the communication stream: grad_sync.h.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "hetsynth/instr/local_compute.h"
#include "hetsynth/instr/rules.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/collectives_along.h"
#include "hetsynth/runtime/cpu_time.h"
#include "hetsynth/runtime/executor.h"
#include "hetsynth/runtime/grad_sync.h"
#include "hetsynth/runtime/kernel_contract.h"
#include "hetsynth/runtime/pacer.h"
#include "hetsynth/runtime/shard.h"
#include "hetsynth/runtime/training.h"

namespace hetsynth::runtime {
namespace executor_detail {

using instr::InstrKind;
using instr::Property;
using instr::PropKind;

inline double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Host tensors as a mover for collectives_along.h (device backends stage the mesh collectives,
// which work on host buffers, through host memory).
struct HostMover {
  using Tensor = runtime::Tensor;
  Tensor Make(ir::Shape shape) { return Tensor::Uninitialized(std::move(shape)); }
  void SliceInto(const Tensor& src, int dim, int64_t start, int64_t len, float* dst) {
    const Tensor part = Slice(src, dim, start, len);
    std::copy(part.data.begin(), part.data.end(), dst);
  }
  void PlaceFrom(const float* src, int dim, int64_t start, int64_t len, Tensor& full) {
    Tensor part = Tensor::Uninitialized(WithDim(full.shape, dim, len));
    std::copy(src, src + part.numel(), part.ptr());
    Place(part, dim, start, full);
  }
};

// What one instruction needs at run time on this rank, worked out once.
struct Op {
  const instr::Instruction* instr = nullptr;
  std::string label;  // for traces: node name or "all_gather(x)"
  // compute: what this rank runs (instr::LocalComputeOf: the node with local attributes, the
  // output piece, the kernel's inputs, an empty piece to skip, the piece's place, experts)
  instr::LocalCompute local;
  bool has_shard = false;
  ShardInfo shard;  // local.shard, as kernels take it
  // collectives: shard lengths along dim (and dim2 for all-to-all) at the instruction's level
  // (world: per rank; devices: per device of this rank's node; nodes: per node), and the whole
  // the pieces make at that level (devices: this node's piece)
  std::vector<int64_t> lengths, lengths2;
  ir::Shape full;
  // placements: where this rank's piece of the placed tensor sits (instr::PieceCuts); slices:
  // the one cut the slice makes (start within the piece it slices)
  std::vector<instr::Cut> cuts;
};

// Backends whose tensors live on a device with streams (the GPU backend): their overlapped
// collectives run on a second stream of the device, issued by the rank's own thread, instead of
// on a communication thread (AsyncCollectives, for host tensors).
template <class B>
concept DeviceStreamBackend = requires { B::kDeviceStreams; };

// The communication stream of a device backend: its executor and the communicators over it
// (SplitOnto: the world's and, with a mesh, the node's).
template <class B, bool = DeviceStreamBackend<B>>
struct DeviceCommStream {
  bool on = false;
};
template <class B>
struct DeviceCommStream<B, true> {
  bool on = false;
  std::unique_ptr<typename B::Stream> x;
  std::unique_ptr<Communicator> world, node;  // destroyed before x
};

template <class B>
struct ExecutorImpl final : Executor::Impl {
  using T = typename B::Tensor;
  B b;
  // Declared before every tensor, so destroyed after them: some come from its allocator.
  DeviceCommStream<B> dstream;
  const ir::Graph& g;
  instr::Plan plan;
  Communicator& comm;
  ExecutorOptions opt;
  typename B::Optimizer optimizer;
  int rank = 0;
  std::vector<Op> ops;
  std::vector<bool> needs_grad;                 // per value
  std::map<std::string, T> params;               // this rank's pieces
  std::map<std::string, Property> param_prop;    // how each parameter is placed
  std::set<ir::ValueId> is_param;
  PlanMesh mesh;               // hierarchical collectives and mesh levels (grad_sync.h)
  GradBuckets gbuckets;        // replicated and across-nodes gradients' all-reduces
  // Parameters whole over the nodes and split within them ((I, G e)): e and every rank's piece
  // in elements, for the across-nodes all-reduce of their gradients (AcrossNodesAllReduce).
  struct NodeSync {
    int dim = -1;
    std::vector<int64_t> counts;
  };
  std::map<ir::ValueId, NodeSync> node_sync;
  int my_node = 0, my_local = 0;  // this rank's node and its index there (the plan's mesh)
  std::unique_ptr<AsyncCollectives> async;  // the communication stream (overlap), when it overlaps

  // During a step.
  struct Slot {
    T value;
    const T* alias = nullptr;  // parameters (and, on the host, inputs) are not copied
    const T& get() const { return alias ? *alias : value; }
  };
  std::map<Property, Slot> vals;
  // Partial sums whose kernels kept the remainder of their rounding (ForwardKeepsRemainder),
  // and those remainders after each all-reduce stage; by the form they are held in.
  std::map<Property, T> remainders;
  std::map<Property, T> grads;
  std::vector<typename B::Saved> saved;  // per op
  std::vector<T> routes;                 // per op: shifted routes (moe experts rule)
  const Batch* batch = nullptr;
  KernelContext ctx;
  // Gradient buckets in backward: each bucket's gradients as they become ready.
  std::vector<std::vector<T>> staged;
  std::vector<size_t> staged_count;
  // The communication stream (overlap): its operations this step, what they produce, and
  // what consumes it.
  std::vector<StreamOp> stream;
  size_t stream_settled = 0;
  double stream_free = 0;  // emulated: when the stream finished its last settled operation
  double stream_busy = 0, stream_waited = 0;  // this step: the stream's work; compute waiting for it
  std::map<size_t, std::pair<size_t, std::shared_ptr<T>>> prefetched;  // instruction → (op, gathered)
  struct BucketOp {
    size_t bucket, op;
    std::shared_ptr<std::vector<T>> grads;
  };
  std::vector<BucketOp> bucket_ops;
  std::vector<std::pair<std::string, std::pair<size_t, std::shared_ptr<T>>>> zero_grads;  // param → (op, piece)

  // Timing.
  // Held from a rank's first kernel after a collective to its next collective: a rank runs its
  // whole stretch of local work alone (emulated thread ranks), keeping its caches warm as a
  // device of its own would.
  std::unique_lock<std::mutex> turn;
  double clock = 0;       // this rank's (virtual) time since the step started
  double run_offset = 0;  // start of this step since the first step
  RankTimes times;
  std::vector<TraceEvent> events;
  std::vector<TraceEvent> pending_events;  // since the last Sync
  bool has_pending_comm = false;           // a collective whose time the next Sync settles
  double pending_comm = 0, pending_start = 0;
  std::string pending_name;
  Pacer pacer;  // time dilation (opt.dilation > 0): real time, paced; then opt.emulate is off
  std::map<std::string, Tensor> running;  // batch-norm running statistics (UpdateRunning)

  ExecutorImpl(B backend, const ir::Graph& graph, instr::Plan p, Communicator& c, ExecutorOptions o)
      : b(std::move(backend)), g(graph), plan(std::move(p)), comm(c), opt(o), optimizer(b.MakeOptimizer(o.optimizer)),
        rank(c.rank()), pacer(o.dilation > 0 ? Pacer(o.dilation, o.slowdown) : Pacer()), running(InitRunningStats(graph)) {
    if (pacer.on()) opt.emulate = false;
  }

  // Batch-norm running statistics, whole on every rank (host): after the forward, each moves
  // toward its batch statistic, from the moments gathered whole in the form the plan's
  // batch_norm read them (the program's, so every rank gathers the same forms in the same
  // order; a collective where they are split).
  absl::Status UpdateRunning() {
    for (ir::ValueId m : RunningStatMoments(g)) {
      const Property* form = nullptr;
      for (const instr::Instruction& in : plan.program.instructions) {
        if (in.kind != InstrKind::kCompute || g.node(in.node).kind != ir::OpKind::kBatchNorm ||
            g.node(in.node).inputs.at(1) != m || in.pre.size() < 2) {
          continue;
        }
        form = &in.pre[1];
        break;
      }
      auto held = form ? vals.find(*form) : vals.end();
      if (held == vals.end() || form->kind == PropKind::kReduce || (form->mixed && form->outer_kind == PropKind::kReduce)) {
        return absl::InternalError(StrCat("running statistics: no batch_norm of this rank read the moments '",
                                          g.value(m).name, "' whole or split"));
      }
      Tensor whole;
      HS_RETURN_IF_ERROR(Communicate(StrCat("gather(", g.value(m).name, ")"), [&]() -> absl::Status {
        HS_ASSIGN_OR_RETURN(whole, WholeOf(*form, held->second.get()));
        return absl::OkStatus();
      }));
      UpdateRunningStats(g, m, whole, running);
    }
    return absl::OkStatus();
  }

  std::vector<int64_t> Lengths(const Property& p) const { return plan.program.ShardLengths(g, p); }


  // This rank's piece of a whole tensor placed as `p`, and the whole tensor from the pieces
  // (collective when p is a Gather).
  // (Host tensors in and out: initialization, checkpoints.)
  T PieceOf(const Property& p, Tensor whole) {
    return b.FromHost(SliceBox(whole, instr::PieceCuts(g, plan.program, p, rank)));
  }
  absl::StatusOr<Tensor> WholeOf(const Property& p, const T& piece) {
    if (!p.mixed) {
      if (p.kind != PropKind::kGather) return b.ToHost(piece);
      HS_ASSIGN_OR_RETURN(T whole, b.AllGatherAlong(comm, piece, g.value(p.tensor).shape, p.dim, Lengths(p), CommImpl::kGrouped));
      return b.ToHost(whole);
    }
    // A mixed form: every rank's box, gathered flat over the world and placed (pieces with the
    // same box are copies).
    const int n = comm.size();
    std::vector<std::vector<instr::Cut>> boxes;
    std::vector<int64_t> counts;
    for (int r = 0; r < n; ++r) {
      boxes.push_back(instr::PieceCuts(g, plan.program, p, r));
      counts.push_back(ir::NumElements(instr::PieceShape(g, plan.program, p, r)));
    }
    const Tensor mine = b.ToHost(piece);
    std::vector<float> all(static_cast<size_t>(Offset(counts, n)));
    HS_RETURN_IF_ERROR(comm.AllGatherV(mine.ptr(), all.data(), counts, CommImpl::kGrouped));
    Tensor whole(g.value(p.tensor).shape);
    for (int r = 0; r < n; ++r) {
      Tensor part = Tensor::Uninitialized(instr::PieceShape(g, plan.program, p, r));
      std::copy(all.begin() + Offset(counts, r), all.begin() + Offset(counts, r + 1), part.data.begin());
      PlaceBox(part, boxes[static_cast<size_t>(r)], whole);
    }
    return whole;
  }

  absl::Status Prepare();

  // Events since the last synchronization wait there until the time of the collective before
  // them is known (Sync), then move to `events`.
  void Record(const char* category, const std::string& name, double start, double dur) {
    if (opt.trace && dur > 0) pending_events.push_back({name, category, rank, run_offset + start, dur});
  }

  // Runs local work and charges it to this rank's clock.
  template <class F>
  void Compute(const std::string& name, F&& f, const char* category = "compute") {
    double dt;
    if (pacer.on()) {
      dt = pacer.Work(f);
    } else if (opt.emulate) {
      if (comm.name() == "threads" && !turn.owns_lock()) turn = std::unique_lock<std::mutex>(ComputeTurn());
      const double c0 = ThreadCpuSeconds();
      f();
      dt = (ThreadCpuSeconds() - c0) * opt.slowdown;
    } else {
      const double w0 = WallSeconds();
      f();
      b.Wait();  // device work is asynchronous: its time is up to its completion
      dt = WallSeconds() - w0;
    }
    Record(category, name, clock, dt);
    clock += dt;
    times.compute_s += dt;
  }

  // Emulated time: every rank waits for the slowest to arrive. The last collective's time is
  // settled here too: all ranks leave a collective together, after the median of the times the
  // ranks measured for it (robust against one rank's scheduling hiccup — a thread's CPU time in
  // an in-process collective has a heavy tail from wake-ups on a busy host).
  absl::Status Sync() {
    if (turn.owns_lock()) turn.unlock();  // never hold the turn into a collective
    if (pacer.on()) {
      times.late_s += pacer.Settle();
      clock = pacer.Elapsed();
    }
    if (!opt.emulate || comm.size() == 1) {
      events.insert(events.end(), pending_events.begin(), pending_events.end());
      pending_events.clear();
      return absl::OkStatus();
    }
    const float mine[2] = {static_cast<float>(clock), static_cast<float>(pending_comm)};
    std::vector<float> all(2 * static_cast<size_t>(comm.size()));
    HS_RETURN_IF_ERROR(
        comm.AllGatherV(mine, all.data(), std::vector<int64_t>(static_cast<size_t>(comm.size()), 2), CommImpl::kGrouped));
    std::vector<double> measured;
    double latest = clock;
    for (int r = 0; r < comm.size(); ++r) {
      latest = std::max<double>(latest, all[2 * static_cast<size_t>(r)]);
      measured.push_back(all[2 * static_cast<size_t>(r) + 1]);
    }
    std::sort(measured.begin(), measured.end());
    const size_t m = measured.size();
    const double c = has_pending_comm ? (m % 2 ? measured[m / 2] : 0.5 * (measured[m / 2 - 1] + measured[m / 2])) : 0.0;
    if (has_pending_comm) {
      if (opt.trace && c > 0) events.push_back({pending_name, "communication", rank, run_offset + pending_start, c});
      times.communication_s += c;
    }
    for (TraceEvent& e : pending_events) e.start_s += c;
    events.insert(events.end(), pending_events.begin(), pending_events.end());
    pending_events.clear();
    ShiftStreamReady(c);
    clock += c;
    latest += c;
    has_pending_comm = false;
    pending_comm = 0;
    if (opt.trace && latest > clock) events.push_back({"wait", "idle", rank, run_offset + clock, latest - clock});
    times.idle_s += latest - clock;
    clock = latest;
    return absl::OkStatus();
  }

  // Runs a collective (with its packing). Emulated on thread ranks: its time is the CPU time the
  // ranks spend moving data (waiting for other threads is idle time, counted by Sync), settled at
  // the next Sync; otherwise (MPI, or no emulation) this rank's wall time, at once.
  template <class F>
  absl::Status Communicate(const std::string& name, F&& f) {
    HS_RETURN_IF_ERROR(Sync());
    const bool cpu = opt.emulate && comm.name() == "threads";
    const double t0 = cpu ? ThreadCpuSeconds() : WallSeconds();
    absl::Status st = f();
    if (!cpu) b.Wait();
    const double dt = pacer.Modelled((cpu ? ThreadCpuSeconds() : WallSeconds()) - t0);
    if (opt.emulate && comm.size() > 1) {
      has_pending_comm = true;
      pending_comm = dt;
      pending_name = name;
      pending_start = clock;
    } else {
      Record("communication", name, clock, dt);
      clock += dt;
      times.communication_s += dt;
    }
    return st;
  }

  // Collectives by implementation (grad_sync.h), over a world communicator and its node split:
  // the rank's own, or the communication stream's.
  absl::StatusOr<T> AllGatherOn(Communicator& w, Communicator* node, const T& piece, const ir::Shape& full, int dim,
                                const std::vector<int64_t>& lengths, instr::CollImpl impl) {
    return AllGatherBy(b, mesh, w, node, piece, full, dim, lengths, impl);
  }
  absl::StatusOr<T> ReduceScatterOn(Communicator& w, Communicator* node, const T& whole, int dim,
                                    const std::vector<int64_t>& lengths, instr::CollImpl impl) {
    return ReduceScatterBy(b, mesh, w, node, whole, dim, lengths, impl);
  }
  absl::Status AllReduceOn(Communicator& w, Communicator* node, T& t, instr::CollImpl impl) {
    return AllReduceBy(mesh, w, node, t, impl);
  }
  absl::Status ReduceBucket(Communicator& w, Communicator* node, std::vector<T>& gs, const GradBuckets::One& bucket) {
    if (bucket.kind == instr::Level::kWorld) return AllReduceBucket(b, mesh, w, node, gs, bucket.impl);
    // Across nodes, one collective for the bucket: each device's piece of dim e, laid out so the
    // node's pieces tile the tensor, summed with the pieces of the other nodes that overlap it
    // (on host memory: device tensors are staged through it).
    HS_RETURN_IF_ERROR(NeedMesh("an across-nodes gradient all-reduce"));
    std::vector<Tensor> staged_host;          // device tensors' host copies
    std::vector<std::vector<float>> major;    // dim-major copies of pieces not split on a leading dim
    std::vector<float*> ptrs;
    std::vector<std::vector<int64_t>> counts;
    staged_host.reserve(gs.size());
    major.reserve(gs.size());
    for (size_t j = 0; j < gs.size(); ++j) {
      const NodeSync& ns = node_sync.at(bucket.params[j]);
      Tensor* h = nullptr;
      if constexpr (B::kHostTensors) {
        h = &gs[j];
      } else {
        staged_host.push_back(b.ToHost(gs[j]));
        h = &staged_host.back();
      }
      if (AroundDim(h->shape, ns.dim).outer == 1) {
        ptrs.push_back(h->ptr());
      } else {
        major.push_back(DimMajor(*h, ns.dim));
        ptrs.push_back(major.back().data());
      }
      counts.push_back(ns.counts);
    }
    HS_RETURN_IF_ERROR(AcrossNodesAllReduce(MeshComms{w, *node, *mesh.mesh}, ptrs, counts));
    size_t next_major = 0, next_host = 0;
    for (size_t j = 0; j < gs.size(); ++j) {
      const NodeSync& ns = node_sync.at(bucket.params[j]);
      Tensor* h = nullptr;
      if constexpr (B::kHostTensors) {
        h = &gs[j];
      } else {
        h = &staged_host[next_host++];
      }
      if (AroundDim(h->shape, ns.dim).outer != 1) FromDimMajor(major[next_major++].data(), ns.dim, *h);
      if constexpr (!B::kHostTensors) gs[j] = b.FromHost(std::move(*h));
    }
    return absl::OkStatus();
  }

  // OK when the node communicators of the plan's mesh are here (a two-level mesh).
  absl::Status NeedMesh(std::string_view what) const {
    if (mesh.active()) return absl::OkStatus();
    return absl::FailedPreconditionError(StrCat(what, " needs the plan's two-level mesh; this run has none"));
  }

  // Collectives at an instruction's level (Op::lengths and Op::full are at that level): world —
  // by implementation (above); devices — inside this rank's node on its communicator, the outer
  // placement kept; nodes — across the nodes, every device of a node holding the node's piece
  // (mesh_collectives.h). Over a world communicator and its node split: the rank's own, or the
  // communication stream's. `backward` runs the dual's direction where it differs.
  // (An all-gather runs forward for an all_gather instruction and backward for a reduce_scatter;
  // a reduce-scatter the other way round.)
  absl::StatusOr<T> AllGatherAt(Communicator& w, Communicator* node, const Op& op, const T& piece, bool backward) {
    const instr::Instruction& in = *op.instr;
    if (in.level == instr::Level::kWorld) return AllGatherOn(w, node, piece, op.full, in.dim, op.lengths, in.impl);
    HS_RETURN_IF_ERROR(NeedMesh(op.label));
    if (in.level == instr::Level::kDevices) return b.AllGatherAlong(*node, piece, op.full, in.dim, op.lengths, FlatImpl(in.impl));
    if (!backward) return NodesGather(w, node, piece, op.full, in.dim, op.lengths);  // (G d, I) → (I, I)
    // (G d, R) → (I, R): the node's partials summed, gathered across the nodes, kept on the
    // node's first device.
    T mine = b.Clone(piece);
    HS_RETURN_IF_ERROR(node->AllReduce(mine.ptr(), mine.numel()));
    HS_ASSIGN_OR_RETURN(T whole, NodesGather(w, node, mine, op.full, in.dim, op.lengths));
    if (my_local != 0) whole = b.Make(op.full);
    return whole;
  }
  absl::StatusOr<T> ReduceScatterAt(Communicator& w, Communicator* node, const Op& op, const T& whole, bool backward) {
    const instr::Instruction& in = *op.instr;
    if (in.level == instr::Level::kWorld) return ReduceScatterOn(w, node, whole, in.dim, op.lengths, in.impl);
    HS_RETURN_IF_ERROR(NeedMesh(op.label));
    if (in.level == instr::Level::kDevices) return b.ReduceScatterAlong(*node, whole, in.dim, op.lengths, FlatImpl(in.impl));
    if (backward) return NodesScatter(w, node, whole, in.dim, op.lengths);  // (R, R) → (G d, R)
    // (R, I) → (G d, I): one copy of each node's partial (its first device's) reduce-scattered,
    // the node's partials of its piece summed inside the node.
    T mine = my_local == 0 ? b.Clone(whole) : b.Make(whole.shape);
    HS_ASSIGN_OR_RETURN(T piece, NodesScatter(w, node, mine, in.dim, op.lengths));
    HS_RETURN_IF_ERROR(node->AllReduce(piece.ptr(), piece.numel()));
    return piece;
  }
  absl::Status AllReduceAt(Communicator& w, Communicator* node, const Op& op, T& t, bool backward) {
    const instr::Instruction& in = *op.instr;
    if (in.level == instr::Level::kWorld) return AllReduceOn(w, node, t, in.impl);
    HS_RETURN_IF_ERROR(NeedMesh(op.label));
    if (in.level == instr::Level::kDevices) return node->AllReduce(t.ptr(), t.numel());
    // Nodes: (R, I) → (I, I) counts one copy per node (its first device's); the dual (R, R) →
    // (I, R) leaves the sum on the node's first device.
    if (!backward && my_local != 0) t = b.Make(t.shape);
    HS_RETURN_IF_ERROR(w.AllReduce(t.ptr(), t.numel()));
    if (backward && my_local != 0) t = b.Make(t.shape);
    return absl::OkStatus();
  }
  // A forward all-reduce of partial sums kept with their remainders (hi + lo ≈ each rank's sum to
  // about 48 bits), on host tensors (CPU ranks): every rank's pair gathered at the instruction's
  // level and summed in double in rank order, then split into hi and lo again for a later stage.
  // The float sum of rounded partials would differ from one device's sum by a rounding of each;
  // this differs by about 2^-48 of it, so rounding it to float almost always gives one device's
  // bits.
  absl::Status CompensatedAllReduceAt(const Op& op, Tensor& hi, Tensor& lo) {
    const instr::Instruction& in = *op.instr;
    Communicator* c = &comm;
    if (in.level != instr::Level::kWorld) {
      HS_RETURN_IF_ERROR(NeedMesh(op.label));
      if (in.level == instr::Level::kDevices) c = mesh.node.get();
    }
    // Nodes: one copy per node (its first device's), as AllReduceAt.
    const bool counted = in.level != instr::Level::kNodes || my_local == 0;
    const size_t n = hi.data.size();
    std::vector<float> pair(2 * n, 0.0f);
    if (counted) {
      std::copy(hi.data.begin(), hi.data.end(), pair.begin());
      std::copy(lo.data.begin(), lo.data.end(), pair.begin() + static_cast<std::ptrdiff_t>(n));
    }
    const size_t ranks = static_cast<size_t>(c->size());
    std::vector<float> all(2 * n * ranks);
    HS_RETURN_IF_ERROR(c->AllGatherV(pair.data(), all.data(), std::vector<int64_t>(ranks, static_cast<int64_t>(2 * n)),
                                     CommImpl::kGrouped));
    for (size_t i = 0; i < n; ++i) {
      double total = 0;
      for (size_t r = 0; r < ranks; ++r) total += double(all[2 * r * n + i]) + double(all[(2 * r + 1) * n + i]);
      hi.data[i] = static_cast<float>(total);
      lo.data[i] = static_cast<float>(total - hi.data[i]);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<T> AllToAllAt(Communicator& w, Communicator* node, const Op& op, const T& piece, bool backward) {
    const instr::Instruction& in = *op.instr;
    const int d = backward ? in.dim2 : in.dim, d2 = backward ? in.dim : in.dim2;
    const std::vector<int64_t>& l = backward ? op.lengths2 : op.lengths;
    const std::vector<int64_t>& l2 = backward ? op.lengths : op.lengths2;
    if (in.level == instr::Level::kWorld) return b.AllToAllAlong(w, piece, op.full, d, l, d2, l2);
    HS_RETURN_IF_ERROR(NeedMesh(op.label));
    if (in.level == instr::Level::kDevices) return b.AllToAllAlong(*node, piece, op.full, d, l, d2, l2);
    const size_t j = static_cast<size_t>(my_node);
    if (!backward) {
      // (G d, I) → (G d2, I): the node pieces gathered, then this node's slice of d2.
      HS_ASSIGN_OR_RETURN(T whole, NodesGather(w, node, piece, op.full, d, l));
      return b.Slice(whole, d2, Offset(l2, my_node), l2[j]);
    }
    // (G d, R) → (G d2, R): the partial placed in a whole of zeros, reduce-scattered over d2.
    T whole = b.Make(op.full);
    b.Place(piece, d, Offset(l, my_node), whole);
    return NodesScatter(w, node, whole, d2, l2);
  }
  // Nodes-level all-gather / reduce-scatter (mesh_collectives.h work on host buffers: device
  // tensors are staged through host memory).
  absl::StatusOr<T> NodesGather(Communicator& w, Communicator* node, const T& piece, const ir::Shape& full, int dim,
                                const std::vector<int64_t>& node_lengths) {
    HS_RETURN_IF_ERROR(NeedMesh("a nodes-level all-gather"));
    const MeshComms mc{w, *node, *mesh.mesh};
    auto gather = [&](const float* s, float* r, const std::vector<int64_t>& c) { return NodesAllGatherV(mc, s, r, c); };
    if constexpr (B::kHostTensors) {
      return b.GatherVia(piece, full, dim, node_lengths, gather);
    } else {
      HostMover host;
      HS_ASSIGN_OR_RETURN(Tensor whole, along::GatherAlong(host, b.ToHost(piece), full, dim, node_lengths, gather));
      return b.FromHost(std::move(whole));
    }
  }
  absl::StatusOr<T> NodesScatter(Communicator& w, Communicator* node, const T& whole, int dim,
                                 const std::vector<int64_t>& node_lengths) {
    HS_RETURN_IF_ERROR(NeedMesh("a nodes-level reduce-scatter"));
    const MeshComms mc{w, *node, *mesh.mesh};
    auto scatter = [&](const float* s, float* r, const std::vector<int64_t>& c) { return NodesReduceScatterV(mc, s, r, c); };
    if constexpr (B::kHostTensors) {
      return b.ScatterVia(whole, dim, node_lengths, my_node, scatter);
    } else {
      HostMover host;
      HS_ASSIGN_OR_RETURN(Tensor piece, along::ScatterAlong(host, b.ToHost(whole), dim, node_lengths, my_node, scatter));
      return b.FromHost(std::move(piece));
    }
  }

  // The communication stream (overlap, grad_sync.h). Enqueue runs fn on the stream's
  // communicators after what was enqueued before; its time, measured there, is settled later.
  // `keep`: what the operation reads that must outlive it (device streams: until the compute
  // stream has waited for it).
  using StreamFn = std::function<absl::Status(Communicator& w, Communicator* node)>;
  size_t Enqueue(const std::string& name, StreamFn fn, std::shared_ptr<void> keep = nullptr) {
    StreamOp op;
    op.name = name;
    op.ready = clock;
    op.after_pending = has_pending_comm;
    op.measured = std::make_shared<double>(0);
    if constexpr (DeviceStreamBackend<B>) {
      if (dstream.on) {
        // The communication stream starts after the compute stream's work so far (the
        // gradients and parameters it reads). fn runs now, on this thread, with the backend
        // pointed at the stream's executor (its copies, sums, staging and outputs go there) and
        // over the stream's communicators: NCCL and the device communicator enqueue their work
        // and return without waiting for the device. Its time here is the issuing.
        if (turn.owns_lock()) turn.unlock();  // the peers may need the turn to reach the collective
        dstream.x->WaitMark(b.Mark());
        {
          struct OnStream {
            B& b;
            decltype(b.exec()) own;
            ~OnStream() { b.set_exec(own); }
          } on{b, b.exec()};
          b.set_exec(dstream.x.get());
          const double t0 = WallSeconds();
          op.status = fn(*dstream.world, dstream.node.get());
          *op.measured = WallSeconds() - t0;
        }
        op.mark = dstream.x->Mark();
        op.keep = std::move(keep);
        op.device = true;
        stream.push_back(std::move(op));
        return stream.size() - 1;
      }
    }
    const bool cpu = opt.emulate && comm.name() == "threads";
    const double per_s = pacer.Modelled(1.0);  // dilation: real seconds → modelled
    op.handle = async->Enqueue([fn = std::move(fn), m = op.measured, cpu, per_s](Communicator& w, Communicator* node) {
      const double t0 = cpu ? ThreadCpuSeconds() : WallSeconds();
      absl::Status st = fn(w, node);
      *m = ((cpu ? ThreadCpuSeconds() : WallSeconds()) - t0) * per_s;
      return st;
    });
    stream.push_back(std::move(op));
    return stream.size() - 1;
  }
  // A blocking collective's time c became known: stream operations enqueued after it were
  // ready c later than the clock said then.
  void ShiftStreamReady(double c) {
    for (size_t k = stream_settled; k < stream.size(); ++k) {
      if (stream[k].after_pending) {
        stream[k].ready += c;
        stream[k].after_pending = false;
      }
    }
  }
  // Waits for stream operations [stream_settled, upto) and settles their emulated times (and the
  // pending blocking collective's, like Sync but without making the ranks meet).
  absl::Status SettleStream(size_t upto) {
    if (turn.owns_lock()) turn.unlock();  // the other ranks may need the turn to reach the stream
    if (pacer.on()) {
      // Dilation: the compute stream first finishes its paced stretch, then waits in real time.
      times.late_s += pacer.Settle();
      clock = pacer.Elapsed();
    }
    if (upto <= stream_settled) return absl::OkStatus();
    for (size_t k = stream_settled; k < upto; ++k) HS_RETURN_IF_ERROR(WaitOp(stream[k]));
    const bool cpu = opt.emulate && comm.name() == "threads";
    std::vector<float> mine = {static_cast<float>(clock), static_cast<float>(pending_comm)};
    for (size_t k = stream_settled; k < upto; ++k) {
      mine.push_back(static_cast<float>(stream[k].ready));
      mine.push_back(static_cast<float>(*stream[k].measured));
    }
    const size_t width = mine.size();
    int ranks = 1;
    std::vector<float> all = mine;
    if (opt.emulate && comm.size() > 1) {
      ranks = comm.size();
      all.assign(width * static_cast<size_t>(ranks), 0.0f);
      HS_RETURN_IF_ERROR(comm.AllGatherV(mine.data(), all.data(),
                                         std::vector<int64_t>(static_cast<size_t>(ranks), static_cast<int64_t>(width)),
                                         CommImpl::kGrouped));
      if (has_pending_comm) {
        std::vector<double> m;
        for (int r = 0; r < ranks; ++r) m.push_back(all[static_cast<size_t>(r) * width + 1]);
        std::sort(m.begin(), m.end());
        const size_t n = m.size();
        const double c = n % 2 ? m[n / 2] : 0.5 * (m[n / 2 - 1] + m[n / 2]);
        if (opt.trace && c > 0) events.push_back({pending_name, "communication", rank, run_offset + pending_start, c});
        times.communication_s += c;
        for (TraceEvent& e : pending_events) e.start_s += c;
        ShiftStreamReady(c);
        clock += c;
        has_pending_comm = false;
        pending_comm = 0;
      }
    }
    events.insert(events.end(), pending_events.begin(), pending_events.end());
    pending_events.clear();
    // Only the stream's columns.
    std::vector<float> cols;
    for (int r = 0; r < ranks; ++r) {
      const float* row = &all[static_cast<size_t>(r) * width];
      cols.insert(cols.end(), row + 2, row + width);
    }
    const size_t from = stream_settled;
    stream_free = ScheduleStream(stream, from, upto, cols, ranks, cpu, stream_free);
    for (size_t k = from; k < upto; ++k) {
      const double dur = stream[k].end - stream[k].start;
      stream_busy += dur;
      if (opt.trace && dur > 0) {
        TraceEvent e{stream[k].name, "communication", rank, run_offset + stream[k].start, dur};
        e.track = 1;
        events.push_back(e);
      }
    }
    stream_settled = upto;
    return absl::OkStatus();
  }
  // Waits for one stream operation: its thread's handle, or, on a device stream, the compute
  // stream waits (on the device) for its mark, after which what it read may go.
  absl::Status WaitOp(StreamOp& op) {
    if (!op.device) return op.handle.Wait();
    if constexpr (DeviceStreamBackend<B>) {
      b.WaitMark(op.mark);
      HS_RETURN_IF_ERROR(dstream.x->status());  // a launch or copy that failed on the stream
    }
    op.keep.reset();
    return op.status;
  }
  // Whether collectives go to a communication stream (a thread, or a device stream).
  bool Streamed() const { return async != nullptr || dstream.on; }
  // The compute stream waits for stream operation k (and everything before it).
  absl::Status WaitStream(size_t upto) {
    HS_RETURN_IF_ERROR(SettleStream(upto));
    if (pacer.on()) {
      // Dilation: the wait was real; what it cost is the time that passed (÷ K).
      const double now = pacer.Elapsed();
      if (now > clock) {
        if (opt.trace) events.push_back({"wait for communication stream", "communication", rank, run_offset + clock, now - clock});
        times.communication_s += now - clock;
        stream_waited += now - clock;
        clock = now;
      }
      return absl::OkStatus();
    }
    const double end = upto == 0 ? 0.0 : stream[upto - 1].end;
    if (end > clock) {
      // Exposed communication while the stream works; idle while it waits for slower ranks
      // to enqueue (as at a blocking collective).
      double busy = 0;
      for (size_t k = 0; k < upto; ++k) {
        busy += std::max(0.0, std::min(end, stream[k].end) - std::max(clock, stream[k].start));
      }
      if (opt.trace) events.push_back({"wait for communication stream", "communication", rank, run_offset + clock, end - clock});
      times.communication_s += busy;
      times.idle_s += end - clock - busy;
      stream_waited += busy;
      clock = end;
    }
    return absl::OkStatus();
  }

  void AddGrad(const Property& p, T&& t) {
    auto it = grads.find(p);
    if (it == grads.end()) {
      grads.emplace(p, std::move(t));
    } else {
      b.AddInto(it->second, t);
    }
  }
  // The gradient of a piece, zeros when nothing reached it on this rank.
  T TakeGrad(const Property& p) {
    auto it = grads.find(p);
    if (it == grads.end()) return b.Make(instr::PieceShape(g, plan.program, p, rank));
    T t = std::move(it->second);
    grads.erase(it);
    return t;
  }

  // The form the program leaves the loss in, and whether this rank's piece counts in the loss:
  // summed pieces count at a Reduce level, one copy (node 0's, the node's first device's) at an
  // Identity level — so the loss is the sum of the counted pieces, and backward seeds those.
  std::pair<Property, bool> LossPiece() const {
    const ir::ValueId loss = g.loss();
    const instr::Placement I{PropKind::kIdentity, -1}, R{PropKind::kReduce, -1};
    for (const Property& p : {Property::Identity(loss), Property::Reduce(loss), Property::Mesh(loss, R, I),
                              Property::Mesh(loss, I, R)}) {
      if (!vals.count(p)) continue;
      const bool outer = p.Outer().kind == PropKind::kReduce || my_node == 0;
      const bool inner = p.Inner().kind == PropKind::kReduce || my_local == 0;
      return {p, outer && inner};
    }
    return {Property::Reduce(loss), true};
  }

  std::vector<const T*> Inputs(size_t i, const Op& op) const {
    std::vector<const T*> in;
    const int route_input = op.local.experts ? op.local.experts->route_input : -1;
    for (size_t k = 0; k < op.local.num_inputs; ++k) {
      in.push_back(static_cast<int>(k) == route_input ? &routes[i] : &vals.at(op.local.rule.pre[k]).get());
    }
    return in;
  }

  absl::Status Forward();
  absl::Status Backward(std::map<std::string, T>* param_grads);
  absl::StatusOr<StepMetrics> Step(const Batch& batch) override;
  int64_t steps() const override { return optimizer.steps(); }
  int rank_index() const override { return rank; }
  const std::vector<TraceEvent>& trace_events() const override { return events; }
  absl::StatusOr<std::map<std::string, Tensor>> FullParameters() override;
  absl::Status Save(const std::string& path, const std::string& model) override;
  absl::Status Load(const std::string& path, const std::string& model) override;
  absl::Status Restore(const Checkpoint& ck) override;
  absl::StatusOr<RankSnapshot> Snapshot() override;
};

template <class B>
absl::Status ExecutorImpl<B>::Prepare() {
  const instr::Program& prog = plan.program;
  if (prog.num_devices != comm.size()) {
    std::string names;
    for (const std::string& d : plan.devices) names += (names.empty() ? "" : ", ") + d;
    return absl::InvalidArgumentError(StrCat("the plan is for ", prog.num_devices, " devices (", names,
                                             ") but this run has ", comm.size(), " rank",
                                             comm.size() == 1 ? "" : "s", "; run one rank per device"));
  }
  HS_RETURN_IF_ERROR(instr::CheckProgram(g, prog));
  HS_RETURN_IF_ERROR(ValidateOptimizerConfig(opt.optimizer));
  if (!(opt.slowdown >= 1.0 && std::isfinite(opt.slowdown))) {
    return absl::InvalidArgumentError(StrCat("slowdown ", opt.slowdown, "; expected a finite number >= 1"));
  }
  needs_grad.assign(g.values().size(), false);
  for (ir::ValueId p : g.parameters()) needs_grad[static_cast<size_t>(p)] = true;
  for (const ir::Node& n : g.nodes()) {
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (needs_grad[static_cast<size_t>(n.inputs[i])] && Differentiable(n.kind, i)) {
        needs_grad[static_cast<size_t>(n.output)] = true;
      }
    }
  }
  if (!prog.nodes.empty()) {
    const std::vector<int> node_of = prog.NodeOfDevice();
    my_node = node_of.at(static_cast<size_t>(rank));
    const std::vector<int>& mine = prog.nodes.at(static_cast<size_t>(my_node));
    my_local = static_cast<int>(std::find(mine.begin(), mine.end(), rank) - mine.begin());
  } else {
    my_local = rank;
  }
  // Lengths of a Gather at a level: per rank (world), per device of this node (devices), per
  // node (nodes).
  auto level_lengths = [&](const instr::Instruction& in, int dim) -> std::vector<int64_t> {
    const instr::Placement I{PropKind::kIdentity, -1}, G{PropKind::kGather, dim};
    switch (in.level) {
      case instr::Level::kWorld: return Lengths(Property::Gather(in.tensor, dim));
      case instr::Level::kNodes: return prog.NodeLengths(g, Property::Mesh(in.tensor, G, I));
      case instr::Level::kDevices: {
        const std::vector<int64_t> all = Lengths(Property::Mesh(in.tensor, *in.outer, G));
        const std::vector<int>& mine = prog.nodes.at(static_cast<size_t>(my_node));
        return std::vector<int64_t>(all.begin() + mine.front(), all.begin() + mine.back() + 1);
      }
    }
    return {};
  };
  for (size_t i = 0; i < prog.instructions.size(); ++i) {
    const instr::Instruction& in = prog.instructions[i];
    Op op;
    op.instr = &in;
    if (in.kind == InstrKind::kCompute) {
      HS_ASSIGN_OR_RETURN(op.local, instr::LocalComputeOf(g, prog, i, rank));
      op.label = op.local.node.name;
      if (op.local.shard) {
        op.has_shard = true;
        const instr::Shard& sh = *op.local.shard;
        op.shard = {sh.full, sh.dim, sh.start, sh.dim2, sh.start2};
      }
    } else if (in.kind == InstrKind::kPlaceInput || in.kind == InstrKind::kPlaceParameter) {
      op.full = g.value(in.tensor).shape;
      op.label = StrCat(instr::InstrKindName(in.kind), "(", g.value(in.tensor).name, ")");
      const Property& post = in.post.at(0);
      op.cuts = instr::PieceCuts(g, prog, post, rank);
      if (in.kind == InstrKind::kPlaceParameter) {
        const ir::Value& v = g.value(in.tensor);
        if (post.mixed && (post.kind == PropKind::kReduce || post.outer_kind == PropKind::kReduce)) {
          return absl::FailedPreconditionError(StrCat("parameter '", v.name, "' is placed as ", instr::PropertyString(g, post),
                                                      "; this runtime places parameters whole or split at each level"));
        }
        param_prop[v.name] = post;
        params[v.name] = PieceOf(post, InitParameter(v, opt.seed));
        if (post.mixed && post.outer_kind == PropKind::kIdentity) {
          // (I, G e): its gradient is summed across nodes (NodeSyncParametersInReadyOrder).
          NodeSync ns;
          ns.dim = post.dim;
          const std::vector<int64_t> len = Lengths(post);
          const int64_t per = ir::NumElements(v.shape) / std::max<int64_t>(1, v.shape[static_cast<size_t>(post.dim)]);
          for (int64_t l : len) ns.counts.push_back(l * per);
          node_sync[in.tensor] = std::move(ns);
        }
      }
    } else {
      op.label = StrCat(instr::InstrKindName(in.kind), "(", g.value(in.tensor).name, ")");
      op.full = g.value(in.tensor).shape;
      if (in.level == instr::Level::kDevices && in.outer->kind == PropKind::kGather) {
        // The whole at this level: this node's piece (the outer placement kept, cut alike
        // before and after).
        const Property& q = in.pre.at(0).Outer().kind == PropKind::kGather ? in.pre.at(0) : in.post.at(0);
        op.full[static_cast<size_t>(in.outer->dim)] = prog.NodeLengths(g, q).at(static_cast<size_t>(my_node));
      }
      if (in.kind == InstrKind::kSlice) {
        // Local: the post's cut of dim, from the start of the piece the pre holds.
        for (const instr::Cut& c : instr::PieceCuts(g, prog, in.post.at(0), rank)) {
          if (c.dim == in.dim) op.cuts = {c};
        }
        for (const instr::Cut& c : instr::PieceCuts(g, prog, in.pre.at(0), rank)) {
          if (c.dim == in.dim && !op.cuts.empty()) op.cuts[0].start -= c.start;
        }
        if (op.cuts.empty()) return absl::InternalError(StrCat(op.label, " cuts nothing on dim ", in.dim));
        op.full = instr::PieceShape(g, prog, in.pre.at(0), rank);
      } else {
        if (in.dim >= 0) op.lengths = level_lengths(in, in.dim);
        if (in.dim2 >= 0) op.lengths2 = level_lengths(in, in.dim2);
      }
    }
    ops.push_back(std::move(op));
  }
  for (ir::ValueId p : g.parameters()) is_param.insert(p);
  gbuckets = GradBuckets::Of(prog);
  HS_ASSIGN_OR_RETURN(mesh, MakePlanMesh(prog, comm, B::kHostTensors));
  if (prog.overlap && B::kHostTensors && comm.size() > 1) {
    // A communication thread when the communicator allows one; otherwise the stream's
    // collectives block where they are enqueued (the same results; docs/runtime.md).
    HS_ASSIGN_OR_RETURN(async, AsyncCollectives::Create(comm, mesh.node.get(), mesh.active() ? &*mesh.mesh : nullptr));
    if (!async->overlapped()) async.reset();
  }
  if constexpr (DeviceStreamBackend<B>) {
    if (prog.overlap && comm.size() > 1) {
      // A second stream of the device and communicators over it (collective over the ranks).
      HS_ASSIGN_OR_RETURN(dstream.x, b.ForkStream());
      HS_ASSIGN_OR_RETURN(dstream.world, b.SplitOnto(comm, *dstream.x));
      if (mesh.node) {
        HS_ASSIGN_OR_RETURN(dstream.node, b.SplitOnto(*mesh.node, *dstream.x));
      }
      // One collective on each now, so their set-up (NCCL connects lazily, allocating device
      // memory) happens here rather than while the other stream's collectives are in flight.
      T one = dstream.x->Make({1});
      for (Communicator* c : {dstream.world.get(), dstream.node.get()}) {
        if (c != nullptr) HS_RETURN_IF_ERROR(c->AllReduce(one.ptr(), 1));
      }
      HS_RETURN_IF_ERROR(dstream.x->Synchronize());
      dstream.on = true;
    }
  }
  return absl::OkStatus();
}

template <class B>
absl::Status ExecutorImpl<B>::Forward() {
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const instr::Instruction& in = *op.instr;
    switch (in.kind) {
      case InstrKind::kPlaceInput: {
        const Tensor& x = batch->at(g.value(in.tensor).name);
        Slot s;
        if (op.cuts.empty()) {
          if constexpr (B::kHostTensors) {
            s.alias = &x;
          } else {
            Compute(op.label, [&] { s.value = b.FromHost(x); });
          }
        } else {
          Compute(op.label, [&] { s.value = b.FromHost(SliceBox(x, op.cuts)); });
        }
        vals[in.post.at(0)] = std::move(s);
        break;
      }
      case InstrKind::kPlaceParameter: {
        Slot s;
        s.alias = &params.at(g.value(in.tensor).name);
        vals[in.post.at(0)] = std::move(s);
        break;
      }
      case InstrKind::kCompute: {
        const instr::LocalCompute& lc = op.local;
        if (lc.experts && !lc.skip) {
          // Routes name global experts: keep ours, renumbered from 0; drop the others.
          routes[i] = b.Clone(vals.at(lc.rule.pre[static_cast<size_t>(lc.experts->route_input)]).get());
          b.RenumberRoutes(routes[i], lc.experts->offset, lc.experts->count);
        }
        T out = lc.skip ? b.Make(lc.out_shape) : MakeForwardOutput(b, lc.node, lc.out_shape);
        if (!lc.skip) {
          const std::vector<const T*> inputs = Inputs(i, op);
          KernelContext kc = ctx;
          if (op.has_shard) kc.shard = &op.shard;
          Compute(op.label, [&] { b.Forward(lc.node, kc, inputs, out, saved[i]); });
        }
        if constexpr (B::kHostTensors) {
          if (!lc.skip && ForwardKeepsRemainder(lc.node.kind)) remainders[lc.rule.post] = std::move(saved[i].remainder);
        }
        Slot s;
        s.value = std::move(out);
        vals[lc.rule.post] = std::move(s);
        break;
      }
      case InstrKind::kAllGather: {
        Slot s;
        if (auto pf = prefetched.find(i); pf != prefetched.end()) {  // gathered ahead on the stream
          HS_RETURN_IF_ERROR(WaitStream(pf->second.first + 1));
          s.value = std::move(*pf->second.second);
          vals[in.post.at(0)] = std::move(s);
          break;
        }
        const T& piece = vals.at(in.pre.at(0)).get();
        HS_RETURN_IF_ERROR(Communicate(op.label, [&]() -> absl::Status {
          HS_ASSIGN_OR_RETURN(s.value, AllGatherAt(comm, mesh.node.get(), op, piece, false));
          return absl::OkStatus();
        }));
        vals[in.post.at(0)] = std::move(s);
        break;
      }
      case InstrKind::kReduceScatter: {
        const T& whole = vals.at(in.pre.at(0)).get();
        Slot s;
        HS_RETURN_IF_ERROR(Communicate(op.label, [&]() -> absl::Status {
          HS_ASSIGN_OR_RETURN(s.value, ReduceScatterAt(comm, mesh.node.get(), op, whole, false));
          return absl::OkStatus();
        }));
        vals[in.post.at(0)] = std::move(s);
        break;
      }
      case InstrKind::kAllReduce: {
        Slot s;
        s.value = b.Clone(vals.at(in.pre.at(0)).get());
        bool compensated = false;
        if constexpr (B::kHostTensors) {
          // Every rank takes this branch or none (it depends on the graph alone); a rank that
          // computed an empty piece has no remainder and adds zeros. Device backends all-reduce
          // on the device: the sums in double are on the host, and a round trip per batch norm
          // would stall the device's queue for bits its GEMM libraries do not keep.
          const ir::NodeId producer = g.value(in.tensor).producer;
          if (producer >= 0 && ForwardKeepsRemainder(g.node(producer).kind)) {
            auto r = remainders.find(in.pre.at(0));
            Tensor rem = r != remainders.end() ? std::move(r->second) : Tensor(s.value.shape);
            HS_RETURN_IF_ERROR(Communicate(op.label, [&] { return CompensatedAllReduceAt(op, s.value, rem); }));
            remainders[in.post.at(0)] = std::move(rem);
            compensated = true;
          }
        }
        if (!compensated) {
          HS_RETURN_IF_ERROR(Communicate(op.label, [&] { return AllReduceAt(comm, mesh.node.get(), op, s.value, false); }));
        }
        vals[in.post.at(0)] = std::move(s);
        break;
      }
      case InstrKind::kAllToAll: {
        const T& piece = vals.at(in.pre.at(0)).get();
        Slot s;
        HS_RETURN_IF_ERROR(Communicate(op.label, [&]() -> absl::Status {
          HS_ASSIGN_OR_RETURN(s.value, AllToAllAt(comm, mesh.node.get(), op, piece, false));
          return absl::OkStatus();
        }));
        vals[in.post.at(0)] = std::move(s);
        break;
      }
      case InstrKind::kSlice: {
        const T& whole = vals.at(in.pre.at(0)).get();
        Slot s;
        Compute(op.label, [&] { s.value = b.Slice(whole, in.dim, op.cuts[0].start, op.cuts[0].len); });
        vals[in.post.at(0)] = std::move(s);
        break;
      }
    }
  }
  return absl::OkStatus();
}

template <class B>
absl::Status ExecutorImpl<B>::Backward(std::map<std::string, T>* param_grads) {
  // The loss is the sum of the pieces of the ranks that count it (LossCounted).
  const auto [loss_prop, counted] = LossPiece();
  if (counted) grads.emplace(loss_prop, b.FromHost(Tensor({}, 1.0f)));
  for (size_t i = ops.size(); i-- > 0;) {
    const Op& op = ops[i];
    const instr::Instruction& in = *op.instr;
    const ir::ValueId t = in.tensor;
    switch (in.kind) {
      case InstrKind::kPlaceInput:
        break;
      case InstrKind::kPlaceParameter: {
        const std::string& name = g.value(t).name;
        const Property& pp = in.post.at(0);
        T grad = TakeGrad(pp);
        if (pp.mixed && pp.outer_kind == PropKind::kGather && pp.kind == PropKind::kIdentity) {
          // (G d, I): the node's devices hold partials of the node piece's gradient.
          HS_RETURN_IF_ERROR(Communicate(StrCat("all_reduce(grad ", name, ", devices)"), [&]() -> absl::Status {
            HS_RETURN_IF_ERROR(NeedMesh("a parameter split over the nodes"));
            return mesh.node->AllReduce(grad.ptr(), grad.numel());
          }));
          (*param_grads)[name] = std::move(grad);
          break;
        }
        if (!gbuckets.where.count(t)) {
          // Split at every level that holds it: the gradient piece is whole.
          (*param_grads)[name] = std::move(grad);
          break;
        }
        // Replicated (or whole over the nodes): every rank's contribution is part of the
        // gradient, all-reduced (across the nodes) with the rest of its bucket once the bucket's
        // last gradient is ready.
        const auto [k, pos] = gbuckets.where.at(t);
        staged[k][pos] = std::move(grad);
        if (++staged_count[k] < staged[k].size()) break;
        const GradBuckets::One& bucket = gbuckets.buckets[k];
        const std::string across = bucket.kind == instr::Level::kNodes ? ", nodes" : "";
        const std::string label = bucket.params.size() == 1
                                      ? StrCat("all_reduce(grad ", name, across, ")")
                                      : StrCat("all_reduce(bucket ", k, ": ", bucket.params.size(), " gradients", across, ")");
        if (Streamed()) {
          auto gs = std::make_shared<std::vector<T>>(std::move(staged[k]));
          const size_t sop = Enqueue(label, [this, gs, &bucket](Communicator& w, Communicator* node) {
            return ReduceBucket(w, node, *gs, bucket);
          });
          bucket_ops.push_back({k, sop, gs});
          break;
        }
        HS_RETURN_IF_ERROR(Communicate(label, [&] { return ReduceBucket(comm, mesh.node.get(), staged[k], bucket); }));
        for (size_t j = 0; j < bucket.params.size(); ++j) {
          (*param_grads)[g.value(bucket.params[j]).name] = std::move(staged[k][j]);
        }
        break;
      }
      case InstrKind::kCompute: {
        const instr::LocalCompute& lc = op.local;
        auto it = grads.find(lc.rule.post);
        if (it == grads.end() || lc.skip) {
          if (it != grads.end()) grads.erase(it);
          break;
        }
        const T dout = std::move(it->second);
        grads.erase(it);
        const std::vector<const T*> inputs = Inputs(i, op);
        std::vector<T> store(lc.num_inputs);
        std::vector<T*> din(lc.num_inputs, nullptr);
        for (size_t k = 0; k < lc.num_inputs; ++k) {
          if (needs_grad[static_cast<size_t>(lc.node.inputs[k])] && Differentiable(lc.node.kind, k)) {
            store[k] = b.Make(inputs[k]->shape);
            din[k] = &store[k];
          }
        }
        KernelContext kc = ctx;
        if (op.has_shard) kc.shard = &op.shard;
        const T& out = vals.at(lc.rule.post).get();
        Compute(op.label, [&] { b.Backward(lc.node, kc, inputs, out, dout, saved[i], din); });
        saved[i] = typename B::Saved();
        for (size_t k = 0; k < lc.num_inputs; ++k) {
          if (din[k]) AddGrad(lc.rule.pre[k], std::move(store[k]));
        }
        break;
      }
      case InstrKind::kAllGather: {
        if (!needs_grad[static_cast<size_t>(t)]) break;
        const std::string label = StrCat("reduce_scatter(grad ", g.value(t).name, ")");
        if (Streamed() && is_param.count(t) && in.level == instr::Level::kWorld) {
          // A ZeRO parameter's gradient: reduce-scattered on the stream; the optimizer waits.
          // (Inside a node, its piece still goes across the nodes after: not on the stream.)
          auto grad = std::make_shared<T>(TakeGrad(in.post.at(0)));
          auto piece = std::make_shared<T>();
          const size_t sop = Enqueue(label, [this, grad, piece, &op](Communicator& w, Communicator* node) -> absl::Status {
            HS_ASSIGN_OR_RETURN(*piece, ReduceScatterAt(w, node, op, *grad, true));
            // A thread is done with it; a device stream may not have read it yet (kept below).
            if constexpr (!DeviceStreamBackend<B>) *grad = T();
            return absl::OkStatus();
          }, grad);
          zero_grads.push_back({g.value(t).name, {sop, piece}});
          break;
        }
        const T grad = TakeGrad(in.post.at(0));
        T piece;
        HS_RETURN_IF_ERROR(Communicate(label, [&]() -> absl::Status {
          HS_ASSIGN_OR_RETURN(piece, ReduceScatterAt(comm, mesh.node.get(), op, grad, true));
          return absl::OkStatus();
        }));
        AddGrad(in.pre.at(0), std::move(piece));
        break;
      }
      case InstrKind::kReduceScatter: {
        if (!needs_grad[static_cast<size_t>(t)]) break;
        const T grad = TakeGrad(in.post.at(0));
        T whole;
        HS_RETURN_IF_ERROR(Communicate(StrCat("all_gather(grad ", g.value(t).name, ")"), [&]() -> absl::Status {
          HS_ASSIGN_OR_RETURN(whole, AllGatherAt(comm, mesh.node.get(), op, grad, true));
          return absl::OkStatus();
        }));
        AddGrad(in.pre.at(0), std::move(whole));
        break;
      }
      case InstrKind::kAllReduce: {
        if (!needs_grad[static_cast<size_t>(t)]) break;
        T grad = TakeGrad(in.post.at(0));
        HS_RETURN_IF_ERROR(Communicate(StrCat("all_reduce(grad ", g.value(t).name, ")"),
                                       [&] { return AllReduceAt(comm, mesh.node.get(), op, grad, true); }));
        AddGrad(in.pre.at(0), std::move(grad));
        break;
      }
      case InstrKind::kAllToAll: {
        if (!needs_grad[static_cast<size_t>(t)]) break;
        const T grad = TakeGrad(in.post.at(0));
        T piece;
        HS_RETURN_IF_ERROR(Communicate(StrCat("all_to_all(grad ", g.value(t).name, ")"), [&]() -> absl::Status {
          HS_ASSIGN_OR_RETURN(piece, AllToAllAt(comm, mesh.node.get(), op, grad, true));
          return absl::OkStatus();
        }));
        AddGrad(in.pre.at(0), std::move(piece));
        break;
      }
      case InstrKind::kSlice: {
        auto it = grads.find(in.post.at(0));
        if (it == grads.end()) break;
        T whole = b.Make(op.full);
        Compute(op.label, [&] { b.Place(it->second, in.dim, op.cuts[0].start, whole); });
        grads.erase(it);
        AddGrad(in.pre.at(0), std::move(whole));
        break;
      }
    }
  }
  grads.clear();
  if (Streamed()) {
    // The optimizer waits for the communication stream.
    HS_RETURN_IF_ERROR(WaitStream(stream.size()));
    for (BucketOp& bo : bucket_ops) {
      const GradBuckets::One& bucket = gbuckets.buckets[bo.bucket];
      for (size_t j = 0; j < bucket.params.size(); ++j) {
        (*param_grads)[g.value(bucket.params[j]).name] = std::move((*bo.grads)[j]);
      }
    }
    for (auto& [name, zg] : zero_grads) b.AddInto(param_grads->at(name), *zg.second);
  }
  return absl::OkStatus();
}

template <class B>
absl::StatusOr<StepMetrics> ExecutorImpl<B>::Step(const Batch& input) {
  HS_RETURN_IF_ERROR(ValidateBatch(g, input, "batch"));
  batch = &input;
  ctx.step = optimizer.steps();
  ctx.one_device_bits = opt.bitwise;
  clock = 0;
  times = RankTimes();
  pacer.StartStep();
  has_pending_comm = false;
  pending_comm = 0;
  pending_events.clear();
  vals.clear();
  remainders.clear();
  grads.clear();
  saved.clear();
  saved.resize(ops.size());
  routes.clear();
  routes.resize(ops.size());
  staged.clear();
  staged.resize(gbuckets.buckets.size());
  for (size_t k = 0; k < staged.size(); ++k) staged[k].resize(gbuckets.buckets[k].params.size());
  staged_count.assign(gbuckets.buckets.size(), 0);
  stream.clear();
  stream_settled = 0;
  stream_free = 0;
  stream_busy = stream_waited = 0;
  prefetched.clear();
  bucket_ops.clear();
  zero_grads.clear();
  if (Streamed()) {
    // ZeRO parameters are all-gathered ahead of use on the stream, in program order.
    for (size_t i = 0; i < ops.size(); ++i) {
      const instr::Instruction& in = *ops[i].instr;
      if (in.kind != InstrKind::kAllGather || !is_param.count(in.tensor)) continue;
      const std::string& name = g.value(in.tensor).name;
      if (!(param_prop.at(name) == in.pre.at(0))) continue;
      auto out = std::make_shared<T>();
      const T* piece = &params.at(name);
      const Op* o = &ops[i];
      const size_t sop = Enqueue(o->label, [this, out, piece, o](Communicator& w, Communicator* node) -> absl::Status {
        HS_ASSIGN_OR_RETURN(*out, AllGatherAt(w, node, *o, *piece, false));
        return absl::OkStatus();
      });
      prefetched[i] = {sop, out};
    }
  }

  absl::Status st = Forward();
  if (st.ok() && !g.running_stats().empty()) st = UpdateRunning();
  const ir::ValueId loss_id = g.loss();
  float loss = 0;
  bool loss_partial = false;
  if (st.ok()) {
    const auto [loss_prop, counted] = LossPiece();
    if (auto it = vals.find(loss_prop); it == vals.end()) {
      st = absl::InternalError(StrCat("the plan does not reach the loss ", g.value(loss_id).name));
    } else if (loss_prop == Property::Identity(loss_id)) {
      loss = b.ReadScalar(it->second.get());  // every rank holds it whole
    } else {
      loss = counted ? b.ReadScalar(it->second.get()) : 0.0f;
      loss_partial = true;
    }
  }
  std::map<std::string, T> param_grads;
  if (st.ok()) st = Backward(&param_grads);
  if (!st.ok()) {
    if (turn.owns_lock()) turn.unlock();
    if (async) (void)async->WaitAll();  // the stream's buffers must outlive its operations
    if constexpr (DeviceStreamBackend<B>) {
      if (dstream.on) (void)dstream.x->Synchronize();  // likewise on the device
    }
    vals.clear();
    return st;
  }
  DropFrozenGradients(g, param_grads);
  Compute("optimizer", [&] { b.OptimizerStep(optimizer, params, param_grads); }, "optimizer");
  HS_RETURN_IF_ERROR(b.status());
  vals.clear();
  routes.clear();
  HS_RETURN_IF_ERROR(Sync());

  // Reporting (not timed): the global loss and every rank's breakdown.
  if (loss_partial) HS_RETURN_IF_ERROR(comm.AllReduce(&loss, 1));
  const int n = comm.size();
  times.overlapped_s = std::max(0.0, stream_busy - stream_waited);
  constexpr int kFields = 7;
  const float mine[kFields] = {static_cast<float>(times.compute_s), static_cast<float>(times.communication_s),
                               static_cast<float>(times.idle_s), static_cast<float>(times.overlapped_s),
                               static_cast<float>(clock), static_cast<float>(times.late_s),
                               opt.step_flags ? opt.step_flags(optimizer.steps()) : 0.0f};
  std::vector<float> all(static_cast<size_t>(kFields * n));
  HS_RETURN_IF_ERROR(
      comm.AllGatherV(mine, all.data(), std::vector<int64_t>(static_cast<size_t>(n), kFields), CommImpl::kGrouped));
  StepMetrics m;
  m.step = optimizer.steps();
  m.loss = loss;
  m.flags = all[6];
  for (int r = 0; r < n; ++r) {
    const float* x = &all[static_cast<size_t>(kFields * r)];
    m.ranks.push_back({x[0], x[1], x[2], x[3], x[5]});
    m.step_time_s = std::max<double>(m.step_time_s, x[4]);
  }
  run_offset += m.step_time_s;
  return m;
}


// "layers.0.w.exp_avg" → "layers.0.w" when that is a parameter.
inline std::string ParamOfState(const std::string& key) {
  const size_t dot = key.rfind('.');
  return dot == std::string::npos ? "" : key.substr(0, dot);
}

template <class B>
absl::StatusOr<std::map<std::string, Tensor>> ExecutorImpl<B>::FullParameters() {
  std::map<std::string, Tensor> out;
  for (const auto& [name, piece] : params) {
    HS_ASSIGN_OR_RETURN(out[name], WholeOf(param_prop.at(name), piece));
  }
  HS_RETURN_IF_ERROR(b.status());
  return out;
}

template <class B>
absl::Status ExecutorImpl<B>::Save(const std::string& path, const std::string& model) {
  HS_ASSIGN_OR_RETURN(auto full, FullParameters());
  full.insert(running.begin(), running.end());  // batch-norm running statistics
  std::map<std::string, Tensor> state;
  for (auto& [key, piece] : b.StateTensors(optimizer)) {
    HS_ASSIGN_OR_RETURN(state[key], WholeOf(param_prop.at(ParamOfState(key)), b.FromHost(std::move(piece))));
  }
  // A diverged run fails alike on every rank (each holds the full tensors), with one message.
  HS_RETURN_IF_ERROR(CheckCheckpointFinite(path, full, state));
  // Rank 0 writes; every rank learns whether it worked.
  absl::Status st;
  float ok = 1;
  if (rank == 0) {
    st = WriteCheckpoint(path, model, full, state, optimizer.config().kind, optimizer.steps());
    ok = st.ok() ? 1.0f : 0.0f;
  }
  HS_RETURN_IF_ERROR(comm.Broadcast(&ok, 1, 0));
  if (rank == 0) return st;
  if (ok != 1.0f) return absl::AbortedError(StrCat("rank 0 could not write checkpoint '", path, "'"));
  return absl::OkStatus();
}

template <class B>
absl::Status ExecutorImpl<B>::Load(const std::string& path, const std::string& model) {
  HS_ASSIGN_OR_RETURN(Checkpoint ck, ReadCheckpoint(path, CheckpointShapes(g), optimizer.config(), model));
  if (rank == 0) PrintCheckpointNote(ck);
  return Restore(ck);
}

template <class B>
absl::Status ExecutorImpl<B>::Restore(const Checkpoint& ck) {
  for (auto& [name, t] : running) {
    auto it = ck.params.find(name);
    if (it == ck.params.end()) return absl::InvalidArgumentError(StrCat("checkpoint: running statistic '", name, "' is missing"));
    t = it->second;
  }
  for (auto& [name, t] : params) {
    auto it = ck.params.find(name);
    if (it == ck.params.end()) return absl::InvalidArgumentError(StrCat("checkpoint: parameter '", name, "' is missing"));
    t = PieceOf(param_prop.at(name), it->second);
  }
  std::map<std::string, Tensor> state;
  for (const auto& [key, whole] : ck.state) {
    auto it = param_prop.find(ParamOfState(key));
    if (it == param_prop.end()) return absl::InvalidArgumentError(StrCat("checkpoint: state '", key, "' belongs to no parameter"));
    state[key] = SliceBox(whole, instr::PieceCuts(g, plan.program, it->second, rank));
  }
  b.RestoreState(optimizer, std::move(state), ck.step);
  return b.status();
}

// Own pieces: this rank's slice of every sharded tensor, and the whole replicated tensors it owns
// (SnapshotOwner); then the pieces go to the next rank and the previous rank's come here.
template <class B>
absl::StatusOr<RankSnapshot> ExecutorImpl<B>::Snapshot() {
  const int n = comm.size();
  if (plan.program.UsesMesh()) {
    // A snapshot's layout is per-rank slices of one dim; a mixed form's piece is a box.
    return absl::UnimplementedError(
        "snapshots (elastic training) of plans over mesh levels are not supported; synthesize with --no-mesh-levels");
  }
  std::map<std::string, Tensor> state = b.StateTensors(optimizer);
  HS_RETURN_IF_ERROR(b.status());
  RankSnapshot s;
  s.step = optimizer.steps();
  s.rank = rank;
  for (const auto& [name, piece] : params) s.keys.push_back(name);
  for (const auto& [key, t] : state) s.keys.push_back(key);
  std::sort(s.keys.begin(), s.keys.end());
  auto prop_of = [&](const std::string& key) -> const Property& {
    auto it = param_prop.find(key);
    return it != param_prop.end() ? it->second : param_prop.at(ParamOfState(key));
  };
  struct Slot {
    size_t key;
    int dim;
    int64_t offset;
    ir::Shape shape;
  };
  auto layout = [&](int q) {
    std::vector<Slot> out;
    for (size_t i = 0; i < s.keys.size(); ++i) {
      const Property& p = prop_of(s.keys[i]);
      const ir::Shape& whole = g.value(p.tensor).shape;
      if (p.kind == PropKind::kGather) {
        const std::vector<int64_t> len = Lengths(p);
        out.push_back({i, p.dim, Offset(len, q), WithDim(whole, p.dim, len[static_cast<size_t>(q)])});
      } else if (SnapshotOwner(i, n) == q) {
        out.push_back({i, -1, 0, whole});
      }
    }
    return out;
  };
  for (const Slot& slot : layout(rank)) {
    const std::string& key = s.keys[slot.key];
    auto st = state.find(key);
    Tensor t = st != state.end() ? std::move(st->second) : b.ToHost(params.at(key));
    s.pieces.push_back({key, slot.dim, slot.offset, std::move(t)});
  }
  HS_RETURN_IF_ERROR(b.status());
  if (n == 1) return s;
  const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  // Staging from the caching host allocator, unfilled: no page faults after the first snapshot.
  int64_t mine = 0, total = 0;
  for (const SnapshotPiece& p : s.pieces) mine += p.data.numel();
  HostVector send(static_cast<size_t>(mine));
  int64_t put = 0;
  for (const SnapshotPiece& p : s.pieces) std::copy(p.data.data.begin(), p.data.data.end(), send.begin() + put), put += p.data.numel();
  const std::vector<Slot> theirs = layout(prev);
  for (const Slot& slot : theirs) total += ir::NumElements(slot.shape);
  std::vector<int64_t> send_counts(static_cast<size_t>(n), 0), recv_counts(static_cast<size_t>(n), 0);
  send_counts[static_cast<size_t>(next)] = mine;
  recv_counts[static_cast<size_t>(prev)] = total;
  HostVector recv(static_cast<size_t>(total));
  HS_RETURN_IF_ERROR(comm.AllToAllV(send.data(), send_counts, recv.data(), recv_counts));
  int64_t at = 0;
  for (const Slot& slot : theirs) {
    Tensor t = Tensor::Uninitialized(slot.shape);
    std::copy(recv.begin() + at, recv.begin() + at + t.numel(), t.data.begin());
    at += t.numel();
    s.pieces.push_back({s.keys[slot.key], slot.dim, slot.offset, std::move(t)});
  }
  return s;
}

// Checks the plan and makes this rank's executor on backend `b`.
template <class B>
absl::StatusOr<std::unique_ptr<Executor::Impl>> MakeExecutor(B b, const ir::Graph& graph, const instr::Plan& plan,
                                                              Communicator& comm, ExecutorOptions options) {
  auto impl = std::make_unique<ExecutorImpl<B>>(std::move(b), graph, plan, comm, options);
  HS_RETURN_IF_ERROR(impl->Prepare());
  return std::unique_ptr<Executor::Impl>(std::move(impl));
}

}  // namespace executor_detail
}  // namespace hetsynth::runtime
