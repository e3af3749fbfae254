#include "hetsynth/runtime/snapshot.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "hetsynth/base/status.h"
#include "hetsynth/ir/input_limits.h"
#include "hetsynth/runtime/safetensors.h"
#include "hetsynth/runtime/shard.h"

namespace hetsynth::runtime {
namespace {

// "layers.0.w.exp_avg" → "layers.0.w" when that is a parameter of `shapes`; "" otherwise.
std::string ParamOf(const std::string& key, const std::map<std::string, ir::Shape>& shapes) {
  if (shapes.count(key)) return key;
  const size_t dot = key.rfind('.');
  if (dot == std::string::npos) return "";
  const std::string base = key.substr(0, dot);
  return shapes.count(base) ? base : "";
}

bool ParseInt(const std::string& s, int64_t* v) {
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

int SnapshotOwner(size_t key_index, int ranks) { return ranks > 0 ? static_cast<int>(key_index % static_cast<size_t>(ranks)) : 0; }

absl::StatusOr<Checkpoint> AssembleSnapshot(const std::vector<RankSnapshot>& survivors,
                                            const std::map<std::string, ir::Shape>& shapes) {
  if (survivors.empty()) return absl::FailedPreconditionError("snapshot: no surviving rank holds one");
  // The newest step every survivor holds a snapshot of: they are taken together, so a rank lost
  // while taking one leaves the others a step ahead only if it had finished — then all agree.
  int64_t step = survivors.front().step;
  for (const RankSnapshot& s : survivors) {
    if (s.step != step) {
      return absl::FailedPreconditionError(StrCat("snapshot: rank ", survivors.front().rank, " holds step ", step,
                                                  " but rank ", s.rank, " holds step ", s.step));
    }
  }
  const std::vector<std::string>& keys = survivors.front().keys;
  struct Whole {
    Tensor t;
    std::vector<std::pair<int64_t, int64_t>> covered;  // [begin, end) along the sharded dim, or whole
    int dim = -1;
    bool whole = false;
  };
  std::map<std::string, Whole> out;
  for (const std::string& key : keys) {
    const std::string param = ParamOf(key, shapes);
    if (param.empty()) {
      return absl::FailedPreconditionError(StrCat("snapshot: tensor '", key, "' belongs to no parameter of the model"));
    }
    out[key].t = Tensor::Uninitialized(shapes.at(param));
  }
  for (const RankSnapshot& s : survivors) {
    for (const SnapshotPiece& p : s.pieces) {
      auto it = out.find(p.key);
      if (it == out.end()) return absl::FailedPreconditionError(StrCat("snapshot of rank ", s.rank, ": unknown tensor '", p.key, "'"));
      Whole& w = it->second;
      if (w.whole) continue;  // a copy of what is already there
      if (p.dim < 0) {
        if (p.data.shape != w.t.shape) {
          return absl::FailedPreconditionError(StrCat("snapshot of rank ", s.rank, ": tensor '", p.key, "' has the wrong shape"));
        }
        w.t = p.data;
        w.whole = true;
        continue;
      }
      if (p.dim >= w.t.rank() || p.offset < 0 || p.offset + p.data.dim(p.dim) > w.t.dim(p.dim) ||
          p.data.shape != WithDim(w.t.shape, p.dim, p.data.dim(p.dim)) || (w.dim >= 0 && w.dim != p.dim)) {
        return absl::FailedPreconditionError(StrCat("snapshot of rank ", s.rank, ": a piece of '", p.key,
                                                    "' does not fit the tensor"));
      }
      w.dim = p.dim;
      Place(p.data, p.dim, p.offset, w.t);
      w.covered.emplace_back(p.offset, p.offset + p.data.dim(p.dim));
    }
  }
  Checkpoint ck;
  ck.step = step;
  for (auto& [key, w] : out) {
    bool complete = w.whole;
    if (!complete && w.dim >= 0) {
      std::sort(w.covered.begin(), w.covered.end());
      int64_t reach = 0;
      for (const auto& [b, e] : w.covered) {
        if (b > reach) break;
        reach = std::max(reach, e);
      }
      complete = reach == w.t.dim(w.dim);
    }
    if (!complete) {
      return absl::FailedPreconditionError(StrCat("snapshot: no survivor holds all of '", key,
                                                  "' (its holder and the rank keeping its copy were both lost)"));
    }
    if (shapes.count(key)) {
      ck.params[key] = std::move(w.t);
    } else {
      ck.state[key] = std::move(w.t);
    }
  }
  for (const auto& [name, shape] : shapes) {
    if (!ck.params.count(name)) return absl::FailedPreconditionError(StrCat("snapshot: parameter '", name, "' is missing"));
  }
  return ck;
}

absl::Status WriteRankSnapshot(const std::string& path, const RankSnapshot& s) {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> meta = {{"format", "hetsynth-rank-snapshot"},
                                             {"step", std::to_string(s.step)},
                                             {"rank", std::to_string(s.rank)},
                                             {"pieces", std::to_string(s.pieces.size())}};
  std::string keys;
  for (const std::string& k : s.keys) keys += (keys.empty() ? "" : "\n") + k;
  meta["keys"] = keys;
  for (size_t i = 0; i < s.pieces.size(); ++i) {
    const SnapshotPiece& p = s.pieces[i];
    const std::string id = std::to_string(i);
    tensors[id] = p.data;
    meta[id] = StrCat(p.dim, " ", p.offset, " ", p.key);
  }
  return WriteSafetensors(path, tensors, meta);
}

absl::StatusOr<RankSnapshot> ReadRankSnapshot(const std::string& path) {
  HS_ASSIGN_OR_RETURN(SafetensorsFile f, ReadSafetensors(path));
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(StrCat("snapshot '", path, "': ", what, "; expected a file written by hetsynth's elastic runs"));
  };
  auto meta = [&](const std::string& k) -> const std::string* {
    auto it = f.metadata.find(k);
    return it == f.metadata.end() ? nullptr : &it->second;
  };
  if (const std::string* fmt = meta("format"); fmt == nullptr || *fmt != "hetsynth-rank-snapshot") {
    return bad("metadata format is not 'hetsynth-rank-snapshot'");
  }
  RankSnapshot s;
  int64_t rank = 0, n = 0;
  if (meta("step") == nullptr || !ParseInt(*meta("step"), &s.step) || meta("rank") == nullptr ||
      !ParseInt(*meta("rank"), &rank) || meta("pieces") == nullptr || !ParseInt(*meta("pieces"), &n) || n < 0 ||
      n != static_cast<int64_t>(f.tensors.size()) || meta("keys") == nullptr) {
    return bad("metadata step/rank/pieces/keys missing or not integers matching the tensors");
  }
  s.rank = static_cast<int>(rank);
  for (size_t a = 0, b; a < meta("keys")->size(); a = b + 1) {
    const std::string& k = *meta("keys");
    b = k.find('\n', a);
    if (b == std::string::npos) b = k.size();
    s.keys.push_back(k.substr(a, b - a));
  }
  for (int64_t i = 0; i < n; ++i) {
    const std::string id = std::to_string(i);
    const std::string* m = meta(id);
    auto t = f.tensors.find(id);
    if (m == nullptr || t == f.tensors.end()) return bad(StrCat("piece ", i, " missing"));
    const size_t s1 = m->find(' '), s2 = s1 == std::string::npos ? s1 : m->find(' ', s1 + 1);
    int64_t dim = 0, offset = 0;
    if (s2 == std::string::npos || !ParseInt(m->substr(0, s1), &dim) || !ParseInt(m->substr(s1 + 1, s2 - s1 - 1), &offset)) {
      return bad(StrCat("piece ", i, ": metadata '", *m, "' is not 'DIM OFFSET KEY'"));
    }
    // A piece past fp32's range (a file damaged after it was written) would be resharded into
    // the next epoch's state: refused like a torn file, so the resume falls back past it.
    const auto& v = t->second.data;
    for (size_t j = 0; j < v.size(); ++j) {
      if (!std::isfinite(v[j])) {
        return absl::InvalidArgumentError(StrCat("snapshot '", path, "': piece ", i, " ('", ir::Shorten(m->substr(s2 + 1)),
                                                 "') element ", j, " is ", v[j], "; expected finite values"));
      }
    }
    s.pieces.push_back({m->substr(s2 + 1), static_cast<int>(dim), offset, std::move(t->second)});
  }
  return s;
}

}  // namespace hetsynth::runtime
