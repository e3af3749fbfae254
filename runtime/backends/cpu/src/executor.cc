// The plan executor on CPU ranks: core's algorithm (executor_impl.h) over host tensors, the CPU
// kernels and collectives.h (cpu_backend.h).
#include "cpu_backend.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/executor_impl.h"

namespace hetsynth::runtime::cpu {

absl::StatusOr<std::unique_ptr<Executor>> MakeCpuExecutor(const ir::Graph& graph, const instr::Plan& plan,
                                                          Communicator& comm, ExecutorOptions options) {
  HS_ASSIGN_OR_RETURN(auto impl, executor_detail::MakeExecutor(CpuBackend{}, graph, plan, comm, options));
  return std::make_unique<Executor>(std::move(impl));
}

}  // namespace hetsynth::runtime::cpu
