#include "hetsynth/instr/program.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "hetsynth/ir/status.h"

namespace hetsynth::instr {
namespace {

absl::Status Bad(const std::string& m) { return absl::InvalidArgumentError(m); }

std::string Describe(const ir::Graph& g, const Instruction& in, size_t index) {
  std::string what = std::string(InstrKindName(in.kind));
  if (in.kind == InstrKind::kCompute && in.node >= 0 && static_cast<size_t>(in.node) < g.nodes().size()) {
    what += StrCat(" '", g.node(in.node).name, "' (", in.rule, ")");
  } else if (in.tensor >= 0 && static_cast<size_t>(in.tensor) < g.values().size()) {
    what += StrCat(" '", g.value(in.tensor).name, "'");
  }
  return StrCat("instruction ", index, " (", what, ")");
}

// Union-find over Gather properties.
class Groups {
 public:
  int Id(const Property& p) {
    auto [it, fresh] = ids_.try_emplace(p, static_cast<int>(parent_.size()));
    if (fresh) {
      parent_.push_back(it->second);
      limit_.push_back(0);
      segment_.push_back(1 << 30);
    }
    return it->second;
  }
  int Find(int x) {
    while (parent_[x] != x) x = parent_[x] = parent_[parent_[x]];
    return x;
  }
  void Use(const Property& p, int64_t max_atoms, int segment) {
    const int id = Find(Id(p));
    limit_[id] = std::gcd(limit_[id], max_atoms);
    segment_[id] = std::min(segment_[id], segment);
  }
  void Join(const Property& a, const Property& b) {
    const int x = Find(Id(a)), y = Find(Id(b));
    if (x == y) return;
    parent_[y] = x;
    limit_[x] = std::gcd(limit_[x], limit_[y]);
    segment_[x] = std::min(segment_[x], segment_[y]);
  }
  // Groups in a deterministic order (by their smallest member).
  std::vector<SplitGroup> Collect() {
    std::map<int, SplitGroup> by_root;
    for (const auto& [p, id] : ids_) {
      SplitGroup& g = by_root[Find(id)];
      g.members.push_back(p);  // ids_ is ordered, so members come sorted
    }
    std::vector<SplitGroup> out;
    for (auto& [root, g] : by_root) {
      g.atoms = limit_[root];
      g.segment = segment_[root];
      out.push_back(std::move(g));
    }
    std::sort(out.begin(), out.end(),
              [](const SplitGroup& a, const SplitGroup& b) { return a.members.front() < b.members.front(); });
    return out;
  }

 private:
  std::map<Property, int> ids_;
  std::vector<int> parent_;
  std::vector<int64_t> limit_;
  std::vector<int> segment_;
};

std::string NodesString(const std::vector<std::vector<int>>& nodes) {
  if (nodes.empty()) return "not given";
  std::string out = "[";
  for (size_t j = 0; j < nodes.size(); ++j) {
    out += j ? ", [" : "[";
    for (size_t k = 0; k < nodes[j].size(); ++k) out += StrCat(k ? ", " : "", nodes[j][k]);
    out += "]";
  }
  return out + "]";
}

int64_t DimSize(const ir::Graph& g, const Property& p) {
  return g.value(p.tensor).shape[static_cast<size_t>(p.dim)];
}

}  // namespace

absl::Status NoRule(const ir::Graph& g, ir::NodeId node, std::string_view rule,
                    const std::vector<ComputeRule>& rules) {
  return Bad(StrCat("node '", g.node(node).name, "' has no rule '", rule, "'; its rules: ", RuleNames(rules)));
}

std::string_view InstrKindName(InstrKind k) {
  switch (k) {
    case InstrKind::kPlaceInput: return "place_input";
    case InstrKind::kPlaceParameter: return "place_parameter";
    case InstrKind::kCompute: return "compute";
    case InstrKind::kAllGather: return "all_gather";
    case InstrKind::kReduceScatter: return "reduce_scatter";
    case InstrKind::kAllReduce: return "all_reduce";
    case InstrKind::kAllToAll: return "all_to_all";
    case InstrKind::kSlice: return "slice";
  }
  return "?";
}

std::string_view CollImplName(CollImpl c) {
  switch (c) {
    case CollImpl::kNone: return "none";
    case CollImpl::kPadded: return "padded";
    case CollImpl::kGrouped: return "grouped";
    case CollImpl::kRing: return "ring";
    case CollImpl::kHierarchical: return "hierarchical";
  }
  return "?";
}

bool ParseCollImpl(std::string_view name, CollImpl* out) {
  for (CollImpl c : {CollImpl::kNone, CollImpl::kPadded, CollImpl::kGrouped, CollImpl::kRing, CollImpl::kHierarchical}) {
    if (CollImplName(c) == name) {
      *out = c;
      return true;
    }
  }
  return false;
}

bool ImplAllowed(InstrKind kind, CollImpl impl) {
  switch (kind) {
    case InstrKind::kAllGather:
    case InstrKind::kReduceScatter:
      return impl == CollImpl::kPadded || impl == CollImpl::kGrouped || impl == CollImpl::kHierarchical;
    case InstrKind::kAllReduce: return impl == CollImpl::kRing || impl == CollImpl::kHierarchical;
    default: return impl == CollImpl::kNone;
  }
}

std::vector<ir::ValueId> ReplicatedParametersInReadyOrder(const Program& p) {
  std::vector<ir::ValueId> out;
  for (auto it = p.instructions.rbegin(); it != p.instructions.rend(); ++it) {
    if (it->kind == InstrKind::kPlaceParameter && it->dim < 0) out.push_back(it->tensor);
  }
  return out;
}

bool TwoLevelNodes(const std::vector<std::vector<int>>& nodes, int num_devices) {
  if (nodes.size() < 2) return false;
  int next = 0;
  for (const std::vector<int>& node : nodes) {
    if (node.empty()) return false;
    for (int d : node) {
      if (d != next++) return false;
    }
  }
  return next == num_devices;
}

absl::Status RuntimeSupports(const Program& p) {
  // The runtime executes every plan CheckProgram accepts: padded, grouped, ring and hierarchical
  // collectives (hierarchical over the two-level mesh `nodes`; on device backends they run
  // flat, the same sums in another order), gradient buckets, and overlap (a communication
  // thread on CPU ranks where the communicator allows one; otherwise the stream's collectives
  // block in the same order) — docs/runtime.md. A feature the planner adds before the runtime
  // runs it is refused here, naming it and the synth flags that avoid it.
  (void)p;
  return absl::OkStatus();
}

int Program::GroupOf(const Property& p) const {
  for (size_t i = 0; i < groups.size(); ++i) {
    if (std::binary_search(groups[i].members.begin(), groups[i].members.end(), p)) return static_cast<int>(i);
  }
  return -1;
}

std::vector<int64_t> Program::ShardLengths(const ir::Graph& g, const Property& p) const {
  const int gi = GroupOf(p);
  HS_CHECK(gi >= 0, StrCat(PropertyString(g, p), " is in no split group"));
  const SplitGroup& group = groups[static_cast<size_t>(gi)];
  const int64_t atom = DimSize(g, p) / group.atoms;
  std::vector<int64_t> out;
  for (int64_t c : group.counts) out.push_back(c * atom);
  return out;
}

std::vector<int64_t> RoundShares(const std::vector<double>& ratios, int64_t total) {
  const size_t n = ratios.size();
  std::vector<int64_t> out(n, 0);
  if (n == 0) return out;
  double sum = 0;
  for (double r : ratios) sum += std::max(0.0, r);
  std::vector<std::pair<double, size_t>> rest;
  int64_t given = 0;
  for (size_t i = 0; i < n; ++i) {
    const double exact = sum > 0 ? std::max(0.0, ratios[i]) / sum * static_cast<double>(total)
                                 : static_cast<double>(total) / static_cast<double>(n);
    out[i] = static_cast<int64_t>(std::floor(exact));
    given += out[i];
    rest.push_back({exact - static_cast<double>(out[i]), i});
  }
  // Largest remainder first; equal remainders go to the lower index.
  std::stable_sort(rest.begin(), rest.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t k = 0; given < total; ++k, ++given) ++out[rest[k % n].second];
  return out;
}

absl::Status DeriveTriple(const ir::Graph& g, Instruction& in) {
  in.pre.clear();
  in.post.clear();
  if (in.kind == InstrKind::kCompute) {
    if (in.node < 0 || static_cast<size_t>(in.node) >= g.nodes().size()) {
      return Bad(StrCat("compute instruction names node ", in.node, " which does not exist"));
    }
    const std::vector<ComputeRule> rules = ShardingRules(g, in.node);
    const ComputeRule* r = FindRule(rules, in.rule);
    if (r == nullptr) return NoRule(g, in.node, RuleName(in.rule), rules);
    in.pre = r->pre;
    in.post = {r->post};
    return absl::OkStatus();
  }
  if (in.tensor < 0 || static_cast<size_t>(in.tensor) >= g.values().size()) {
    return Bad(StrCat(InstrKindName(in.kind), " names tensor ", in.tensor, " which does not exist"));
  }
  const ir::Value& v = g.value(in.tensor);
  const int rank = static_cast<int>(v.shape.size());
  auto dim_ok = [&](int d) { return d >= 0 && d < rank; };
  const ir::ValueId t = in.tensor;
  switch (in.kind) {
    case InstrKind::kPlaceInput:
    case InstrKind::kPlaceParameter: {
      const ir::ValueKind want = in.kind == InstrKind::kPlaceInput ? ir::ValueKind::kInput : ir::ValueKind::kParameter;
      if (v.kind != want) {
        return Bad(StrCat(InstrKindName(in.kind), " of '", v.name, "', which is not a model ",
                          want == ir::ValueKind::kInput ? "input" : "parameter"));
      }
      if (in.dim >= 0 && !dim_ok(in.dim)) break;
      in.post = {in.dim < 0 ? Property::Identity(t) : Property::Gather(t, in.dim)};
      return absl::OkStatus();
    }
    case InstrKind::kAllGather:
      if (!dim_ok(in.dim)) break;
      in.pre = {Property::Gather(t, in.dim)};
      in.post = {Property::Identity(t)};
      return absl::OkStatus();
    case InstrKind::kReduceScatter:
      if (!dim_ok(in.dim)) break;
      in.pre = {Property::Reduce(t)};
      in.post = {Property::Gather(t, in.dim)};
      return absl::OkStatus();
    case InstrKind::kAllReduce:
      in.pre = {Property::Reduce(t)};
      in.post = {Property::Identity(t)};
      return absl::OkStatus();
    case InstrKind::kAllToAll:
      if (!dim_ok(in.dim) || !dim_ok(in.dim2) || in.dim == in.dim2) break;
      in.pre = {Property::Gather(t, in.dim)};
      in.post = {Property::Gather(t, in.dim2)};
      return absl::OkStatus();
    case InstrKind::kSlice:
      if (!dim_ok(in.dim)) break;
      in.pre = {Property::Identity(t)};
      in.post = {Property::Gather(t, in.dim)};
      return absl::OkStatus();
    case InstrKind::kCompute:
      break;
  }
  return Bad(StrCat(InstrKindName(in.kind), " of '", v.name, "' with dim ", in.dim,
                    in.kind == InstrKind::kAllToAll ? StrCat(" -> ", in.dim2) : std::string(),
                    "; expected ", in.kind == InstrKind::kAllToAll ? "two different dims" : "a dim",
                    " in [0, ", rank, ")"));
}

absl::Status BuildSplitGroups(const ir::Graph& g, Program& p) {
  Groups groups;
  for (const Instruction& in : p.instructions) {
    if (in.kind == InstrKind::kCompute) {
      const std::vector<ComputeRule> rules = ShardingRules(g, in.node);
      const ComputeRule* it = FindRule(rules, in.rule);
      if (it == nullptr) return Bad(StrCat("node '", g.node(in.node).name, "' has no rule '", in.rule, "'"));
      for (const SplitUse& u : it->split) {
        groups.Use(u.prop, u.max_atoms, in.segment);
        groups.Join(it->split.front().prop, u.prop);
      }
      continue;
    }
    for (const auto* props : {&in.pre, &in.post}) {
      for (const Property& q : *props) {
        if (q.kind == PropKind::kGather) groups.Use(q, DimSize(g, q), in.segment);
      }
    }
  }
  p.groups = groups.Collect();
  for (SplitGroup& group : p.groups) {
    const size_t seg = static_cast<size_t>(group.segment);
    if (seg >= p.ratios.size()) {
      return Bad(StrCat("split group of ", PropertyString(g, group.members.front()), " uses segment ", seg,
                        " but the program has ", p.ratios.size(), " segments of ratios"));
    }
    group.counts = RoundShares(p.ratios[seg], group.atoms);
  }
  return absl::OkStatus();
}

absl::Status CheckProgram(const ir::Graph& g, const Program& p) {
  if (p.num_devices <= 0) return Bad(StrCat("program has ", p.num_devices, " devices; expected at least 1"));
  for (size_t s = 0; s < p.ratios.size(); ++s) {
    double sum = 0;
    for (double r : p.ratios[s]) {
      if (!(r >= 0)) return Bad(StrCat("segment ", s, " has ratio ", r, "; expected non-negative ratios"));
      sum += r;
    }
    if (p.ratios[s].size() != static_cast<size_t>(p.num_devices) || std::abs(sum - 1.0) > 1e-6) {
      return Bad(StrCat("segment ", s, " has ", p.ratios[s].size(), " ratios summing to ", sum, "; expected ",
                        p.num_devices, " summing to 1"));
    }
  }
  if (!p.nodes.empty()) {
    std::vector<int> seen(static_cast<size_t>(p.num_devices), 0);
    for (const std::vector<int>& node : p.nodes) {
      for (int d : node) {
        if (d < 0 || d >= p.num_devices || seen[static_cast<size_t>(d)]++) {
          return Bad(StrCat("mesh nodes ", NodesString(p.nodes), " do not list each of the ", p.num_devices,
                            " devices exactly once"));
        }
      }
      if (node.empty()) return Bad(StrCat("mesh nodes ", NodesString(p.nodes), " include an empty node"));
    }
    if (std::count(seen.begin(), seen.end(), 1) != p.num_devices) {
      return Bad(StrCat("mesh nodes ", NodesString(p.nodes), " do not list each of the ", p.num_devices,
                        " devices exactly once"));
    }
  }
  const bool two_level = TwoLevelNodes(p.nodes, p.num_devices);
  std::set<Property> held;
  std::vector<int> computed(g.nodes().size(), 0), placed(g.values().size(), 0);
  for (size_t i = 0; i < p.instructions.size(); ++i) {
    Instruction derived = p.instructions[i];
    const std::string where = Describe(g, derived, i);
    absl::Status st = DeriveTriple(g, derived);
    if (!st.ok()) return Bad(StrCat(where, ": ", st.message()));
    const Instruction& in = p.instructions[i];
    if (derived.pre != in.pre || derived.post != in.post) {
      return Bad(StrCat(where, ": its stated triple does not match its definition"));
    }
    for (const Property& q : in.pre) {
      if (!held.count(q)) return Bad(StrCat(where, ": precondition ", PropertyString(g, q), " does not hold"));
    }
    if (!ImplAllowed(in.kind, in.impl)) {
      return Bad(StrCat(where, ": implementation '", CollImplName(in.impl), "' is not one of ", InstrKindName(in.kind),
                        "'s (", in.kind == InstrKind::kAllReduce ? "ring or hierarchical"
                               : in.kind == InstrKind::kAllGather || in.kind == InstrKind::kReduceScatter
                                   ? "padded, grouped or hierarchical"
                                   : "none", ")"));
    }
    if (in.impl == CollImpl::kHierarchical && !two_level) {
      return Bad(StrCat(where, ": hierarchical needs a two-level mesh (two or more nodes, ranks node-major); the "
                        "program's nodes are ", NodesString(p.nodes)));
    }
    if (in.kind == InstrKind::kCompute && ++computed[static_cast<size_t>(in.node)] > 1) {
      return Bad(StrCat(where, ": node '", g.node(in.node).name, "' is computed twice"));
    }
    if ((in.kind == InstrKind::kPlaceInput || in.kind == InstrKind::kPlaceParameter) &&
        ++placed[static_cast<size_t>(in.tensor)] > 1) {
      return Bad(StrCat(where, ": '", g.value(in.tensor).name, "' is placed twice"));
    }
    for (const Property& q : in.post) {
      if (q.kind == PropKind::kGather && p.GroupOf(q) < 0) {
        return Bad(StrCat(where, ": ", PropertyString(g, q), " has no shard lengths (no split group)"));
      }
      held.insert(q);
    }
  }
  for (ir::ValueId w : g.parameters()) {
    if (placed[static_cast<size_t>(w)] != 1) {
      return Bad(StrCat("parameter '", g.value(w).name, "' is never placed; every parameter needs exactly one "
                        "placement (its gradient is accounted for by the placement's dual)"));
    }
  }
  const ir::ValueId loss = g.loss();
  if (!held.count(Property::Reduce(loss)) && !held.count(Property::Identity(loss))) {
    return Bad(StrCat("the program never reaches the goal Reduce(", g.value(loss).name, ")"));
  }
  if (!p.buckets.empty()) {
    const std::vector<ir::ValueId> ready = ReplicatedParametersInReadyOrder(p);
    size_t at = 0;
    for (size_t b = 0; b < p.buckets.size(); ++b) {
      const Bucket& bucket = p.buckets[b];
      if (bucket.params.empty()) return Bad(StrCat("bucket ", b, " is empty; expected at least one parameter"));
      if (bucket.impl != CollImpl::kRing && bucket.impl != CollImpl::kHierarchical) {
        return Bad(StrCat("bucket ", b, " has implementation '", CollImplName(bucket.impl),
                          "'; expected ring or hierarchical"));
      }
      if (bucket.impl == CollImpl::kHierarchical && !two_level) {
        return Bad(StrCat("bucket ", b, " is hierarchical, which needs a two-level mesh; the program's nodes are ",
                          NodesString(p.nodes)));
      }
      for (ir::ValueId v : bucket.params) {
        const std::string name = v >= 0 && static_cast<size_t>(v) < g.values().size() ? g.value(v).name : StrCat("#", v);
        if (at >= ready.size() || ready[at] != v) {
          return Bad(StrCat("bucket ", b, " lists '", name, "' where ",
                            at < ready.size() ? StrCat("'", g.value(ready[at]).name, "'") : std::string("no parameter"),
                            " is expected: buckets must list every replicated parameter once, in the order their "
                            "gradients become ready (reverse placement order)"));
        }
        ++at;
      }
    }
    if (at != ready.size()) {
      return Bad(StrCat("the buckets cover ", at, " of ", ready.size(), " replicated parameters; '",
                        g.value(ready[at]).name, "' is in none"));
    }
  }
  Program fresh = p;
  HS_RETURN_IF_ERROR(BuildSplitGroups(g, fresh));
  if (fresh.groups.size() != p.groups.size()) {
    return Bad(StrCat("the program has ", p.groups.size(), " split groups; its instructions imply ", fresh.groups.size()));
  }
  for (size_t k = 0; k < p.groups.size(); ++k) {
    const SplitGroup &a = p.groups[k], &b = fresh.groups[k];
    const std::string name = StrCat("split group ", k, " (", PropertyString(g, b.members.front()), ")");
    if (a.members != b.members || a.atoms != b.atoms || a.segment != b.segment) {
      return Bad(StrCat(name, " does not match its instructions: expected ", b.atoms, " atoms over ",
                        b.members.size(), " members in segment ", b.segment));
    }
    int64_t sum = 0;
    for (int64_t c : a.counts) {
      if (c < 0) return Bad(StrCat(name, " gives a device ", c, " atoms; expected non-negative counts"));
      sum += c;
    }
    if (a.counts.size() != static_cast<size_t>(p.num_devices) || sum != a.atoms) {
      return Bad(StrCat(name, " has ", a.counts.size(), " counts summing to ", sum, "; expected ", p.num_devices,
                        " summing to ", a.atoms));
    }
  }
  return absl::OkStatus();
}

}  // namespace hetsynth::instr
