// The backend registry (backend.h). Backends register from static initializers of their own
// targets, so the registry is a function-local static: it exists before the first of them runs,
// whatever the order in which the linker placed their initializers.
#include "hetsynth/runtime/backend.h"

#include <algorithm>
#include <map>

#include "hetsynth/base/status.h"

namespace hetsynth::runtime {
namespace {

// By name, so that listings and messages do not depend on the order of registration.
std::map<std::string, Backend*, std::less<>>& Registry() {
  static auto* registry = new std::map<std::string, Backend*, std::less<>>();
  return *registry;
}

}  // namespace

bool Backend::supports_precision(std::string_view precision) const {
  const std::vector<std::string>& p = capabilities().precisions;
  return std::find(p.begin(), p.end(), precision) != p.end();
}

bool RegisterBackend(Backend* backend) {
  HS_CHECK(backend != nullptr, "RegisterBackend: null backend");
  const bool added = Registry().emplace(std::string(backend->name()), backend).second;
  HS_CHECK(added, StrCat("backend '", backend->name(), "' registered twice"));
  return true;
}

std::vector<Backend*> Backends() {
  std::vector<Backend*> out;
  for (const auto& [name, backend] : Registry()) out.push_back(backend);
  return out;
}

absl::StatusOr<Backend*> FindBackend(std::string_view name) {
  const auto& registry = Registry();
  if (auto it = registry.find(name); it != registry.end()) return it->second;
  std::vector<std::string> names;
  for (const auto& [n, backend] : registry) names.push_back(n);
  // No backend at all: the program links none of the backend targets.
  return absl::InvalidArgumentError(
      StrCat("backend ", name, "; expected ", names.empty() ? "a registered backend (none is linked in)" : OneOf(names)));
}

std::string OneOf(const std::vector<std::string>& choices) {
  std::string out;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i > 0) out += i + 1 == choices.size() ? " or " : ", ";
    out += choices[i];
  }
  return out;
}

}  // namespace hetsynth::runtime
