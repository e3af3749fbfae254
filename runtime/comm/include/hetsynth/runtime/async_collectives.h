// Collectives on a communication thread, for gradient buckets all-reduced while backward goes
// on (the topology spec, §4.5 and §7): each rank enqueues a bucket's all-reduce as soon as its
// last gradient is ready, keeps computing, and waits for the bucket before the optimizer reads
// it.
//
// An AsyncCollectives owns one thread per rank and its own communicators — splits of the world
// (and of the node communicator, for hierarchical all-reduce) — so its collectives never
// interleave with those the rank runs on its own thread. Operations run one at a time, in the
// order they were enqueued, which must be the same on every rank (as for any collective).
//
// When the communicator cannot run a split on another thread (CheckConcurrentUse: MPI without
// MPI_THREAD_MULTIPLE; the GPU communicators, whose streams one thread drives), every operation
// runs synchronously inside Enqueue on the calling thread instead, with the same results;
// overlapped() is then false and why_synchronous() says why.
//
//   HS_ASSIGN_OR_RETURN(std::unique_ptr<AsyncCollectives> async, AsyncCollectives::Create(world));
//   AsyncCollectives::Handle h = async->AllReduce(bucket.data(), bucket.size());
//   ... more backward compute ...
//   HS_RETURN_IF_ERROR(h.Wait());   // the bucket holds the sum now
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/mesh_collectives.h"

namespace hetsynth::runtime {

class AsyncCollectives {
 public:
  // An operation on the communication thread's communicators: its world split, and its node
  // split (nullptr without a mesh).
  using Op = std::function<absl::Status(Communicator& world, Communicator* node)>;

  // The completion of one enqueued operation. Copyable; Wait may be called from any thread,
  // any number of times.
  class Handle {
   public:
    Handle() = default;
    // Blocks until the operation ran; its status (InvalidArgument for an empty handle).
    absl::Status Wait() const;
    // Whether it ran (without blocking).
    bool done() const;

   private:
    friend class AsyncCollectives;
    struct State;
    std::shared_ptr<State> state_;
  };

  // Collective over world's ranks (and the node communicator's, when given): splits world —
  // and node — for the communication thread and starts it. With a mesh, node must be this
  // rank's node communicator (SplitByNode) and HierarchicalAllReduce becomes available.
  static absl::StatusOr<std::unique_ptr<AsyncCollectives>> Create(Communicator& world, Communicator* node = nullptr,
                                                                  const Mesh* mesh = nullptr);

  // Runs what is still queued, then stops the thread. Operations enqueued on every rank must
  // run on every rank, or peers would wait for them; so nothing is dropped.
  ~AsyncCollectives();

  AsyncCollectives(const AsyncCollectives&) = delete;
  AsyncCollectives& operator=(const AsyncCollectives&) = delete;

  // Queues op after those enqueued before it. The buffers it touches must stay alive and
  // untouched by the rank until its handle's Wait returns.
  Handle Enqueue(Op op);

  // Communicator::AllReduce of `count` elements at data, in place (rank-order sum).
  Handle AllReduce(float* data, int64_t count);
  // HierarchicalAllReduce over the mesh given to Create (FailedPrecondition without one).
  Handle HierarchicalAllReduce(float* data, int64_t count);

  // Waits for everything enqueued so far; the first failure among them.
  absl::Status WaitAll();

  // Whether operations run on the communication thread (false: synchronously in Enqueue).
  bool overlapped() const { return overlapped_; }
  // OK when overlapped; otherwise why not (CheckConcurrentUse's answer).
  const absl::Status& why_synchronous() const { return why_synchronous_; }

 private:
  AsyncCollectives() = default;
  void Loop();

  std::unique_ptr<Communicator> world_, node_;
  const Mesh* mesh_ = nullptr;
  bool overlapped_ = false;
  absl::Status why_synchronous_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Op, Handle>> queue_;
  std::vector<Handle> issued_;  // for WaitAll
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace hetsynth::runtime
