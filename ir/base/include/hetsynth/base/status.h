// Status helpers shared by every module: absl::Status carries expected failures (bad user
// input, infeasible problems) up to main; these macros keep the propagation short.
//
//   absl::StatusOr<Graph> g = BuildModel(...);
//   HS_ASSIGN_OR_RETURN(Graph graph, BuildModel(spec));
//   HS_RETURN_IF_ERROR(graph.Validate());
#pragma once

#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define HS_CONCAT_INNER_(a, b) a##b
#define HS_CONCAT_(a, b) HS_CONCAT_INNER_(a, b)

#define HS_RETURN_IF_ERROR(expr)                   \
  do {                                             \
    ::absl::Status hs_status_ = (expr);            \
    if (!hs_status_.ok()) return hs_status_;       \
  } while (0)

#define HS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(*tmp)

#define HS_ASSIGN_OR_RETURN(lhs, expr) \
  HS_ASSIGN_OR_RETURN_IMPL_(HS_CONCAT_(hs_statusor_, __LINE__), lhs, expr)

// Programming-error check: aborts with file, line and a message. Not for user input.
#define HS_CHECK(cond, msg)                                                              \
  do {                                                                                   \
    if (!(cond)) ::hetsynth::internal::CheckFailed(__FILE__, __LINE__, #cond, (msg));    \
  } while (0)

namespace hetsynth {
// Concatenates anything printable with operator<< (numbers, strings, string_views, shapes as
// strings). Debian's absl has its own string_view, so absl::StrCat rejects std::string_view.
template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// A bad input file, in the one form every file reader (graph, plan, placement, cluster) uses:
// InvalidArgument "KIND 'SOURCE': WHERE: WHAT", or "KIND 'SOURCE': WHAT" when `where` is empty —
// e.g. "plan 'p.json': field 'version': 4; expected 1, 2 or 3".
absl::Status FileError(const char* kind, const std::string& source, const std::string& where, const std::string& what);
}  // namespace hetsynth

namespace hetsynth::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond, const std::string& msg);
}  // namespace hetsynth::internal
