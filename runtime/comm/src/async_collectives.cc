// AsyncCollectives (async_collectives.h): a queue served by one communication thread per rank.
#include "hetsynth/runtime/async_collectives.h"

#include <exception>

#include "hetsynth/base/status.h"

namespace hetsynth::runtime {

struct AsyncCollectives::Handle::State {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  absl::Status status;

  void Finish(absl::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = std::move(s);
    done = true;
    cv.notify_all();
  }
};

absl::Status AsyncCollectives::Handle::Wait() const {
  if (state_ == nullptr) return absl::InvalidArgumentError("AsyncCollectives::Handle: empty handle (nothing was enqueued)");
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->done; });
  return state_->status;
}

bool AsyncCollectives::Handle::done() const {
  if (state_ == nullptr) return false;
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->done;
}

namespace {

// Runs op, turning an exception into a status.
absl::Status RunOp(const AsyncCollectives::Op& op, Communicator& world, Communicator* node) {
  try {
    return op(world, node);
  } catch (const std::exception& e) {
    return absl::InternalError(StrCat("AsyncCollectives: an operation threw: ", e.what()));
  } catch (...) {
    return absl::InternalError("AsyncCollectives: an operation threw a non-std exception");
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<AsyncCollectives>> AsyncCollectives::Create(Communicator& world, Communicator* node,
                                                                          const Mesh* mesh) {
  std::unique_ptr<AsyncCollectives> a(new AsyncCollectives());
  // Every rank splits (world, then node) before looking at its own arguments, so that a rank
  // with a bad mesh cannot leave the others waiting in a Split.
  HS_ASSIGN_OR_RETURN(a->world_, world.Split(0, world.rank()));
  if (node != nullptr) {
    HS_ASSIGN_OR_RETURN(a->node_, node->Split(0, node->rank()));
  }
  if (mesh != nullptr && node == nullptr) {
    return absl::InvalidArgumentError("AsyncCollectives::Create: a mesh needs this rank's node communicator");
  }
  a->mesh_ = mesh;
  a->why_synchronous_ = world.CheckConcurrentUse();
  if (a->why_synchronous_.ok() && node != nullptr) a->why_synchronous_ = node->CheckConcurrentUse();
  a->overlapped_ = a->why_synchronous_.ok();
  if (a->overlapped_) a->thread_ = std::thread([p = a.get()] { p->Loop(); });
  return a;
}

AsyncCollectives::~AsyncCollectives() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void AsyncCollectives::Loop() {
  while (true) {
    std::pair<Op, Handle> item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything ran
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    item.second.state_->Finish(RunOp(item.first, *world_, node_.get()));
  }
}

AsyncCollectives::Handle AsyncCollectives::Enqueue(Op op) {
  Handle h;
  h.state_ = std::make_shared<Handle::State>();
  if (!overlapped_) {
    h.state_->Finish(RunOp(op, *world_, node_.get()));
  } else {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.emplace_back(std::move(op), h);
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Keep what WaitAll still has to report: the unfinished and the failed.
  std::erase_if(issued_, [](const Handle& i) { return i.done() && i.Wait().ok(); });
  issued_.push_back(h);
  return h;
}

AsyncCollectives::Handle AsyncCollectives::AllReduce(float* data, int64_t count) {
  return Enqueue([data, count](Communicator& world, Communicator*) { return world.AllReduce(data, count); });
}

AsyncCollectives::Handle AsyncCollectives::HierarchicalAllReduce(float* data, int64_t count) {
  const Mesh* mesh = mesh_;
  // Every rank enqueues, so every rank runs a collective; without a mesh every rank fails alike.
  return Enqueue([data, count, mesh](Communicator& world, Communicator* node) -> absl::Status {
    if (mesh == nullptr || node == nullptr) {
      return absl::FailedPreconditionError(
          "AsyncCollectives::HierarchicalAllReduce: no mesh (pass the mesh and the node communicator to Create)");
    }
    return runtime::HierarchicalAllReduce(MeshComms{world, *node, *mesh}, data, count);
  });
}

absl::Status AsyncCollectives::WaitAll() {
  std::vector<Handle> issued;
  {
    std::lock_guard<std::mutex> lock(mu_);
    issued.swap(issued_);
  }
  absl::Status first;
  for (const Handle& h : issued) {
    absl::Status s = h.Wait();
    if (first.ok() && !s.ok()) first = s;
  }
  return first;
}

}  // namespace hetsynth::runtime
