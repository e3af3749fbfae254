// The flags that choose a backend (--backend, --precision, --emulate-gpus), checked against the
// backend object (hetsynth/runtime/backend.h) — by its capabilities, never by its name — with one
// message per mistake for every subcommand (train, train --plan, bench, profile).
//
//   HS_ASSIGN_OR_RETURN(runtime::Backend* backend, BackendFlag(flags.backend));
//   HS_RETURN_IF_ERROR(CheckPrecisionFlag(*backend, flags.precision, /*given=*/false));
//   if (flags.emulate_gpus && !backend->supports_emulate_gpus()) return NeedsBackendFlag("--emulate-gpus", ...);
//   HS_RETURN_IF_ERROR(RequireAvailable(*backend));
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/runtime/backend.h"

namespace hetsynth::cli {

// --backend NAME: the registered backend, or "--backend tpu; expected cpu or cuda".
absl::StatusOr<runtime::Backend*> BackendFlag(const std::string& name);

// --precision P on `backend`. A backend without a choice of precision takes only its own, and
// only when the flag was not `given` explicitly: "--precision tf32 needs --backend cuda (the CPU
// computes in fp32)"; otherwise P must be one it offers: "--precision fp8; expected fp32, tf32 or
// bf16".
absl::Status CheckPrecisionFlag(const runtime::Backend& backend, const std::string& precision, bool given);

// `flag` works only on backends with a capability: "--emulate-gpus needs --backend cuda" (the
// backends that have it).
absl::Status NeedsBackendFlag(const std::string& flag, const std::function<bool(const runtime::Backend&)>& has);

// "--backend cuda: no GPU: <reason>" when the backend cannot run in this process.
absl::Status RequireAvailable(const runtime::Backend& backend);

}  // namespace hetsynth::cli
