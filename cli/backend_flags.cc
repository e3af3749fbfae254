#include "backend_flags.h"

#include <vector>

#include "hetsynth/base/status.h"

namespace hetsynth::cli {
namespace {

// The backends with a capability, as the choice a message offers ("cuda", "cuda or rocm").
std::string BackendsWith(const std::function<bool(const runtime::Backend&)>& has) {
  std::vector<std::string> names;
  for (const runtime::Backend* b : runtime::Backends()) {
    if (has(*b)) names.emplace_back(b->name());
  }
  return runtime::OneOf(names);
}

}  // namespace

absl::StatusOr<runtime::Backend*> BackendFlag(const std::string& name) {
  absl::StatusOr<runtime::Backend*> backend = runtime::FindBackend(name);
  // The registry's message ("backend tpu; expected cpu or cuda") is about the flag's value.
  if (!backend.ok()) return absl::Status(backend.status().code(), StrCat("--", backend.status().message()));
  return backend;
}

absl::Status CheckPrecisionFlag(const runtime::Backend& backend, const std::string& precision, bool given) {
  const runtime::BackendCapabilities& caps = backend.capabilities();
  if (caps.precisions.size() == 1 && (given || precision != caps.precisions.front())) {
    return absl::InvalidArgumentError(
        StrCat("--precision ", precision, " needs --backend ",
               BackendsWith([](const runtime::Backend& b) { return b.capabilities().precisions.size() > 1; }), " (the ",
               caps.device, " computes in ", caps.precisions.front(), ")"));
  }
  if (!backend.supports_precision(precision)) {
    return absl::InvalidArgumentError(StrCat("--precision ", precision, "; expected ", runtime::OneOf(caps.precisions)));
  }
  return absl::OkStatus();
}

absl::Status NeedsBackendFlag(const std::string& flag, const std::function<bool(const runtime::Backend&)>& has) {
  return absl::InvalidArgumentError(StrCat(flag, " needs --backend ", BackendsWith(has)));
}

absl::Status RequireAvailable(const runtime::Backend& backend) {
  const absl::Status st = backend.Available();
  if (st.ok()) return st;
  return absl::InvalidArgumentError(StrCat("--backend ", backend.name(), ": ", st.message()));
}

}  // namespace hetsynth::cli
