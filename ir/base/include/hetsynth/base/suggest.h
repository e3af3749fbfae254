// Naming what a user may have meant, for one-line errors about a misspelt name (a cluster
// file's device type, a plan's field): Suggest gives "; did you mean 'flops'?" when exactly one
// candidate is the closest within two edits, KnownList the candidates cut to a dozen.
//
//   Err(where, StrCat("unknown field '", key, "'", Suggest(key, allowed), " (expected one of: ",
//                     KnownList(allowed), ")"));
#pragma once

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "hetsynth/base/status.h"

namespace hetsynth {

// Levenshtein distance (insertions, deletions, substitutions).
inline size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diag = up;
    }
  }
  return row[b.size()];
}

// "; did you mean 'flops'?" when exactly one candidate is the closest, within two edits, else "":
// for 'n9' among n0..n7 every node is as close, and naming one of them would mislead.
inline std::string Suggest(const std::string& name, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_d = 3;
  bool tie = false;
  for (const std::string& c : candidates) {
    const size_t d = EditDistance(name, c);
    if (d >= name.size()) continue;
    if (d < best_d) best = &c, best_d = d, tie = false;
    else if (d == best_d) tie = true;
  }
  return best && !tie ? StrCat("; did you mean '", *best, "'?") : "";
}

// "a, b, c", cut after a dozen names so a 128-node cluster does not flood the message.
inline std::string KnownList(const std::vector<std::string>& names) {
  if (names.empty()) return "none";
  constexpr size_t kShown = 12;
  std::string out;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > kShown) out += StrCat(", ... (", names.size(), " in all)");
  return out;
}

}  // namespace hetsynth
