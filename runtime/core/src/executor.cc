// Executor's members (executor.h), whatever the backend behind its Impl; Executor::Create asks
// the "cpu" backend object for its executor.
#include "hetsynth/runtime/executor.h"

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/backend.h"

namespace hetsynth::runtime {

absl::StatusOr<std::unique_ptr<Executor>> Executor::Create(const ir::Graph& graph, const instr::Plan& plan,
                                                           Communicator& comm, ExecutorOptions options) {
  HS_ASSIGN_OR_RETURN(const Backend* cpu, FindBackend("cpu"));
  return cpu->MakeExecutor(graph, plan, comm, std::move(options));
}

Executor::Executor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Executor::~Executor() = default;

absl::StatusOr<StepMetrics> Executor::Step(const Batch& batch) { return impl_->Step(batch); }
int64_t Executor::step() const { return impl_->steps(); }
int Executor::rank() const { return impl_->rank_index(); }
const std::vector<TraceEvent>& Executor::TraceEvents() const { return impl_->trace_events(); }
absl::StatusOr<std::map<std::string, Tensor>> Executor::FullParameters() { return impl_->FullParameters(); }
absl::Status Executor::Save(const std::string& path, const std::string& model) { return impl_->Save(path, model); }
absl::Status Executor::Load(const std::string& path, const std::string& model) { return impl_->Load(path, model); }
absl::Status Executor::Restore(const Checkpoint& ck) { return impl_->Restore(ck); }
absl::StatusOr<RankSnapshot> Executor::Snapshot() { return impl_->Snapshot(); }

}  // namespace hetsynth::runtime
