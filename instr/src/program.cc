#include "hetsynth/instr/program.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "hetsynth/base/status.h"

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

// A Gather cut: a world form's split (cut 0), a mixed form's outer (0) or inner (1) Gather.
using Cut = std::pair<Property, int>;

Cut CutOf(const Property& p, Level cut) { return {p, p.mixed && cut == Level::kDevices ? 1 : 0}; }

// Union-find over Gather cuts.
class Groups {
 public:
  int Id(const Cut& p) {
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
  void Use(const Cut& p, int64_t max_atoms, int segment) {
    const int id = Find(Id(p));
    limit_[id] = std::gcd(limit_[id], max_atoms);
    segment_[id] = std::min(segment_[id], segment);
  }
  void Join(const Cut& a, const Cut& b) {
    const int x = Find(Id(a)), y = Find(Id(b));
    if (x == y) return;
    parent_[y] = x;
    limit_[x] = std::gcd(limit_[x], limit_[y]);
    segment_[x] = std::min(segment_[x], segment_[y]);
  }
  // Groups in a deterministic order (by their smallest member).
  std::vector<SplitGroup> Collect() {
    std::map<int, SplitGroup> by_root;
    std::map<int, int> world, mixed_outer;
    for (const auto& [cut, id] : ids_) {
      const int root = Find(id);
      SplitGroup& g = by_root[root];
      // ids_ is ordered by (property, cut); a property appears once per group.
      if (g.members.empty() || g.members.back() != cut.first) g.members.push_back(cut.first);
      if (!cut.first.mixed) ++world[root];
      if (cut.first.mixed && cut.second == 0) ++mixed_outer[root];
      if (cut.second == 1) g.level = Level::kDevices;
    }
    std::vector<SplitGroup> out;
    for (auto& [root, g] : by_root) {
      g.atoms = limit_[root];
      g.segment = segment_[root];
      if (g.level != Level::kDevices) g.level = world.count(root) ? Level::kWorld : Level::kNodes;
      out.push_back(std::move(g));
    }
    std::sort(out.begin(), out.end(), [](const SplitGroup& a, const SplitGroup& b) {
      return std::pair(a.members.front(), a.level) < std::pair(b.members.front(), b.level);
    });
    return out;
  }

 private:
  std::map<Cut, int> ids_;
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

int64_t DimSize(const ir::Graph& g, const Cut& c) {
  const int d = c.second == 0 ? c.first.Outer().dim : c.first.dim;
  return g.value(c.first.tensor).shape[static_cast<size_t>(d)];
}

// Every Gather cut of a property: a world Gather's split, a mixed form's outer and inner Gathers.
std::vector<Cut> CutsOf(const Property& p) {
  std::vector<Cut> out;
  if (!p.mixed) {
    if (p.kind == PropKind::kGather) out.push_back({p, 0});
    return out;
  }
  if (p.outer_kind == PropKind::kGather) out.push_back({p, 0});
  if (p.kind == PropKind::kGather) out.push_back({p, 1});
  return out;
}

bool UsesMeshIn(const Instruction& in) {
  if (in.level != Level::kWorld || in.outer || in.outer_rule) return true;
  for (const auto* ps : {&in.pre, &in.post}) {
    for (const Property& q : *ps) {
      if (q.mixed) return true;
    }
  }
  return false;
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
    if (it->kind == InstrKind::kPlaceParameter && it->dim < 0 && !it->outer) out.push_back(it->tensor);
  }
  return out;
}

std::vector<ir::ValueId> NodeSyncParametersInReadyOrder(const Program& p) {
  std::vector<ir::ValueId> out;
  for (auto it = p.instructions.rbegin(); it != p.instructions.rend(); ++it) {
    if (it->kind == InstrKind::kPlaceParameter && it->outer && it->outer->kind == PropKind::kIdentity) {
      out.push_back(it->tensor);
    }
  }
  return out;
}

absl::StatusOr<ComputeRule> InstructionRule(const ir::Graph& g, const Instruction& in) {
  if (in.node < 0 || static_cast<size_t>(in.node) >= g.nodes().size()) {
    return Bad(StrCat("compute instruction names node ", in.node, " which does not exist"));
  }
  const std::vector<ComputeRule> rules = ShardingRules(g, in.node);
  const ComputeRule* r = FindRule(rules, in.rule);
  if (r == nullptr) return NoRule(g, in.node, RuleName(in.rule), rules);
  if (!in.outer_rule) return *r;
  const ComputeRule* o = FindRule(rules, *in.outer_rule);
  if (o == nullptr) return NoRule(g, in.node, RuleName(*in.outer_rule), rules);
  return CombineRules(g, in.node, *o, *r);
}

bool Program::UsesMesh() const {
  return std::any_of(instructions.begin(), instructions.end(), UsesMeshIn);
}

std::vector<int> Program::NodeOfDevice() const {
  std::vector<int> out(static_cast<size_t>(num_devices), 0);
  for (size_t j = 0; j < nodes.size(); ++j) {
    for (int d : nodes[j]) {
      if (d >= 0 && d < num_devices) out[static_cast<size_t>(d)] = static_cast<int>(j);
    }
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
  // The runtime executes every plan CheckProgram accepts: padded, grouped, ring and
  // hierarchical collectives, gradient buckets, overlap (a communication thread on CPU ranks
  // where the communicator allows one; otherwise the stream's collectives block in the same
  // order), and properties over mesh levels — mixed forms, mesh rules, devices- and nodes-level
  // collectives, nodes buckets — on the node communicators of the plan's mesh (docs/runtime.md).
  // Not run: an input or parameter placed partial (Reduce) over the nodes — no plan the
  // synthesizer writes has one.
  for (size_t i = 0; i < p.instructions.size(); ++i) {
    const Instruction& in = p.instructions[i];
    const bool place = in.kind == InstrKind::kPlaceParameter || in.kind == InstrKind::kPlaceInput;
    if (place && in.outer && in.outer->kind == PropKind::kReduce) {
      return absl::FailedPreconditionError(
          StrCat("instruction ", i, " (", InstrKindName(in.kind), ") places a tensor partial (Reduce) over the nodes; "
                 "this runtime places inputs and parameters whole or split at each level"));
    }
  }
  return absl::OkStatus();
}

int Program::GroupOf(const Property& p, Level cut) const {
  const bool devices = p.mixed && cut == Level::kDevices;
  for (size_t i = 0; i < groups.size(); ++i) {
    if ((groups[i].level == Level::kDevices) != devices) continue;
    if (std::binary_search(groups[i].members.begin(), groups[i].members.end(), p)) return static_cast<int>(i);
  }
  return -1;
}

std::vector<int64_t> Program::ShardLengths(const ir::Graph& g, const Property& p) const {
  const int gi = GroupOf(p, Level::kDevices);
  HS_CHECK(gi >= 0 && p.kind == PropKind::kGather, StrCat(PropertyString(g, p), " is in no split group"));
  const SplitGroup& group = groups[static_cast<size_t>(gi)];
  const int64_t atom = DimSize(g, p) / group.atoms;
  std::vector<int64_t> out;
  if (p.mixed || group.level != Level::kWorld) {
    HS_CHECK(group.level == Level::kDevices, StrCat(PropertyString(g, p), " has no devices-level split"));
  }
  for (int64_t c : group.counts) out.push_back(c * atom);
  return out;
}

std::vector<int64_t> Program::NodeLengths(const ir::Graph& g, const Property& p) const {
  const Placement o = p.Outer();
  HS_CHECK(o.kind == PropKind::kGather, StrCat(PropertyString(g, p), " is not split over the nodes"));
  const int gi = GroupOf(p, Level::kNodes);
  HS_CHECK(gi >= 0, StrCat(PropertyString(g, p), " is in no split group"));
  const SplitGroup& group = groups[static_cast<size_t>(gi)];
  const int64_t atom = g.value(p.tensor).shape[static_cast<size_t>(o.dim)] / group.atoms;
  std::vector<int64_t> out;
  if (group.level == Level::kNodes) {
    for (int64_t c : group.counts) out.push_back(c * atom);
    return out;
  }
  const std::vector<int> node_of = NodeOfDevice();
  out.assign(std::max<size_t>(nodes.size(), 1), 0);
  for (size_t i = 0; i < group.counts.size(); ++i) out[static_cast<size_t>(node_of[i])] += group.counts[i] * atom;
  return out;
}

ir::Shape Program::LocalShape(const ir::Graph& g, const Property& p, int rank) const {
  ir::Shape shape = g.value(p.tensor).shape;
  const Placement o = p.Outer(), in = p.Inner();
  if (!p.mixed) {
    if (p.kind == PropKind::kGather) shape[static_cast<size_t>(p.dim)] = ShardLengths(g, p).at(static_cast<size_t>(rank));
    return shape;
  }
  if (o.kind == PropKind::kGather) {
    shape[static_cast<size_t>(o.dim)] = NodeLengths(g, p).at(static_cast<size_t>(NodeOfDevice().at(static_cast<size_t>(rank))));
  }
  if (in.kind == PropKind::kGather) shape[static_cast<size_t>(in.dim)] = ShardLengths(g, p).at(static_cast<size_t>(rank));
  return shape;
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
    if (in.level != Level::kWorld || in.outer) return Bad("a compute instruction has no level and no outer placement");
    HS_ASSIGN_OR_RETURN(const ComputeRule r, InstructionRule(g, in));
    in.pre = r.pre;
    in.post = {r.post};
    return absl::OkStatus();
  }
  if (in.outer_rule) return Bad(StrCat(InstrKindName(in.kind), " has an outer rule; only compute instructions do"));
  if (in.tensor < 0 || static_cast<size_t>(in.tensor) >= g.values().size()) {
    return Bad(StrCat(InstrKindName(in.kind), " names tensor ", in.tensor, " which does not exist"));
  }
  const ir::Value& v = g.value(in.tensor);
  const int rank = static_cast<int>(v.shape.size());
  auto dim_ok = [&](int d) { return d >= 0 && d < rank; };
  const ir::ValueId t = in.tensor;
  const bool place = in.kind == InstrKind::kPlaceInput || in.kind == InstrKind::kPlaceParameter;
  if (in.outer && in.outer->kind == PropKind::kGather && !dim_ok(in.outer->dim)) {
    return Bad(StrCat(InstrKindName(in.kind), " of '", v.name, "' with outer ", PlacementString(*in.outer),
                      "; expected a dim in [0, ", rank, ")"));
  }
  if (in.outer && in.outer->kind != PropKind::kGather) in.outer->dim = -1;
  if (in.outer && !place && in.level != Level::kDevices) {
    return Bad(StrCat(InstrKindName(in.kind), " of '", v.name, "' has an outer placement; only placements and "
                      "devices-level collectives do"));
  }
  if (place && in.level != Level::kWorld) {
    return Bad(StrCat(InstrKindName(in.kind), " of '", v.name, "' has level ", LevelName(in.level),
                      "; placements have none (give 'outer' for a mixed form)"));
  }
  if (in.level != Level::kWorld && !place) {
    // A collective over one level: devices (inside every node; the outer placement kept) or
    // nodes (across nodes; inner Identity before and after).
    const bool dev = in.level == Level::kDevices;
    if (dev && !in.outer) return Bad(StrCat(InstrKindName(in.kind), " of '", v.name, "' at level devices needs 'outer'"));
    const Placement o = dev ? *in.outer : Placement{};
    const Placement I{PropKind::kIdentity, -1}, R{PropKind::kReduce, -1};
    auto G = [](int d) { return Placement{PropKind::kGather, d}; };
    auto mk = [&](Placement a, Placement b) {
      return dev ? Property::Mesh(t, o, b) : Property::Mesh(t, a, I);
    };
    auto same = [&](Placement a, Placement b) {  // dev: inner a → b; nodes: outer a → b
      in.pre = {mk(a, a)};
      in.post = {mk(b, b)};
    };
    switch (in.kind) {
      case InstrKind::kAllGather:
        if (!dim_ok(in.dim)) break;
        same(G(in.dim), I);
        return absl::OkStatus();
      case InstrKind::kReduceScatter:
        if (!dim_ok(in.dim)) break;
        same(R, G(in.dim));
        return absl::OkStatus();
      case InstrKind::kAllReduce:
        same(R, I);
        return absl::OkStatus();
      case InstrKind::kAllToAll:
        if (!dim_ok(in.dim) || !dim_ok(in.dim2) || in.dim == in.dim2) break;
        same(G(in.dim), G(in.dim2));
        return absl::OkStatus();
      case InstrKind::kSlice:
        if (!dim_ok(in.dim)) break;
        same(I, G(in.dim));
        return absl::OkStatus();
      default:
        break;
    }
    return Bad(StrCat(InstrKindName(in.kind), " of '", v.name, "' at level ", LevelName(in.level), " with dim ",
                      in.dim, "; expected ", in.kind == InstrKind::kAllToAll ? "two different dims" : "a dim",
                      " in [0, ", rank, ")"));
  }
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
      if (in.outer) {
        in.post = {Property::Mesh(t, *in.outer, in.post[0].Inner())};
        if (!in.post[0].mixed) {
          return Bad(StrCat(InstrKindName(in.kind), " of '", v.name, "' with outer ", PlacementString(*in.outer),
                            " and the same inner placement is a world form; omit 'outer'"));
        }
      }
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
      absl::StatusOr<ComputeRule> it = InstructionRule(g, in);
      if (!it.ok()) return it.status();
      // A mesh rule's outer uses share one split, its inner uses another.
      for (Level cut : {Level::kWorld, Level::kNodes, Level::kDevices}) {
        const SplitUse* first = nullptr;
        for (const SplitUse& u : it->split) {
          if (u.cut != cut) continue;
          groups.Use(CutOf(u.prop, u.cut), u.max_atoms, in.segment);
          if (first == nullptr) first = &u;
          groups.Join(CutOf(first->prop, cut), CutOf(u.prop, cut));
        }
      }
      continue;
    }
    for (const auto* props : {&in.pre, &in.post}) {
      for (const Property& q : *props) {
        for (const Cut& c : CutsOf(q)) groups.Use(c, DimSize(g, c), in.segment);
      }
    }
    // A devices-level collective keeps the outer placement: the node pieces before and after
    // are cut alike.
    if (in.level == Level::kDevices && in.outer && in.outer->kind == PropKind::kGather) {
      groups.Join({in.pre[0], 0}, {in.post[0], 0});
    }
  }
  p.groups = groups.Collect();
  const bool two_level = TwoLevelNodes(p.nodes, p.num_devices);
  for (SplitGroup& group : p.groups) {
    if (group.segment < 0 || static_cast<size_t>(group.segment) >= p.ratios.size()) {
      return Bad(StrCat("split group of ", PropertyString(g, group.members.front()), " uses segment ", group.segment,
                        "; expected a segment in [0, ", p.ratios.size(), ") (a row of ratios)"));
    }
    const size_t seg = static_cast<size_t>(group.segment);
    const std::vector<double>& r = p.ratios[seg];
    if (group.level == Level::kWorld) {
      group.counts = RoundShares(r, group.atoms);
      continue;
    }
    if (!two_level || r.size() != static_cast<size_t>(p.num_devices)) {
      return Bad(StrCat("split group of ", PropertyString(g, group.members.front()), " is at level ",
                        LevelName(group.level), ", which needs a two-level mesh; the program's nodes are ",
                        NodesString(p.nodes)));
    }
    group.counts.clear();
    if (group.level == Level::kNodes) {
      // Node shares R_j = Σ of the node's device ratios.
      std::vector<double> node_ratios;
      for (const std::vector<int>& node : p.nodes) {
        double sum = 0;
        for (int d : node) sum += r[static_cast<size_t>(d)];
        node_ratios.push_back(sum);
      }
      group.counts = RoundShares(node_ratios, group.atoms);
      continue;
    }
    // Devices: within-node shares r_i / R_j, each node's counts summing to the atoms.
    for (const std::vector<int>& node : p.nodes) {
      std::vector<double> within;
      for (int d : node) within.push_back(r[static_cast<size_t>(d)]);
      for (int64_t c : RoundShares(within, group.atoms)) group.counts.push_back(c);
    }
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
    if (in.segment < 0 || static_cast<size_t>(in.segment) >= p.ratios.size()) {
      return Bad(StrCat(where, ": segment ", in.segment, "; expected a segment in [0, ", p.ratios.size(),
                        ") (a row of ratios)"));
    }
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
    if (UsesMeshIn(in) && !two_level) {
      return Bad(StrCat(where, ": mesh levels (mixed properties, mesh rules, devices- or nodes-level collectives) need "
                        "a two-level mesh (two or more nodes, ranks node-major); the program's nodes are ",
                        NodesString(p.nodes)));
    }
    if (in.level != Level::kWorld && in.impl == CollImpl::kHierarchical) {
      return Bad(StrCat(where, ": a ", LevelName(in.level), "-level collective runs over one level; expected ",
                        in.kind == InstrKind::kAllReduce ? "ring" : "padded or grouped", ", not hierarchical"));
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
      bool grouped = true;
      for (const Cut& c : CutsOf(q)) grouped = grouped && p.GroupOf(q, c.second ? Level::kDevices : Level::kNodes) >= 0;
      if (!grouped) {
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
  // Any form without a Gather reaches the goal (spec §3): the pieces sum to the loss once.
  const Placement I{PropKind::kIdentity, -1}, R{PropKind::kReduce, -1};
  if (!held.count(Property::Reduce(loss)) && !held.count(Property::Identity(loss)) &&
      !held.count(Property::Mesh(loss, R, I)) && !held.count(Property::Mesh(loss, I, R))) {
    return Bad(StrCat("the program never reaches the goal Reduce(", g.value(loss).name, ")"));
  }
  // Buckets of each kind: world (replicated parameters) and nodes (parameters whole over the
  // nodes and split or partial within them, all-reduced across nodes, spec §4.5). A kind with
  // buckets lists all of its parameters once, in ready order.
  const bool any_nodes_bucket = std::any_of(p.buckets.begin(), p.buckets.end(),
                                            [](const Bucket& b) { return b.kind == Level::kNodes; });
  for (Level kind : {Level::kWorld, Level::kNodes}) {
    const bool checked = kind == Level::kNodes ? any_nodes_bucket
                                               : !p.buckets.empty() && (!any_nodes_bucket ||
                                                                        std::any_of(p.buckets.begin(), p.buckets.end(),
                                                                                    [](const Bucket& b) { return b.kind == Level::kWorld; }));
    if (!checked) continue;
    const std::vector<ir::ValueId> ready =
        kind == Level::kWorld ? ReplicatedParametersInReadyOrder(p) : NodeSyncParametersInReadyOrder(p);
    const std::string what = kind == Level::kWorld ? "replicated parameter" : "across-nodes parameter";
    size_t at = 0;
    for (size_t b = 0; b < p.buckets.size(); ++b) {
      const Bucket& bucket = p.buckets[b];
      if (bucket.kind != Level::kWorld && bucket.kind != Level::kNodes) {
        return Bad(StrCat("bucket ", b, " has kind '", LevelName(bucket.kind), "'; expected world or nodes"));
      }
      if (bucket.kind != kind) continue;
      if (bucket.params.empty()) return Bad(StrCat("bucket ", b, " is empty; expected at least one parameter"));
      if (bucket.impl != CollImpl::kRing && (bucket.impl != CollImpl::kHierarchical || kind == Level::kNodes)) {
        return Bad(StrCat("bucket ", b, " has implementation '", CollImplName(bucket.impl), "'; expected ",
                          kind == Level::kNodes ? "ring (a nodes bucket)" : "ring or hierarchical"));
      }
      if ((bucket.impl == CollImpl::kHierarchical || kind == Level::kNodes) && !two_level) {
        return Bad(StrCat("bucket ", b, " is ", kind == Level::kNodes ? "of kind nodes" : "hierarchical",
                          ", which needs a two-level mesh; the program's nodes are ", NodesString(p.nodes)));
      }
      for (ir::ValueId v : bucket.params) {
        const std::string name = v >= 0 && static_cast<size_t>(v) < g.values().size() ? g.value(v).name : StrCat("#", v);
        if (at >= ready.size() || ready[at] != v) {
          return Bad(StrCat("bucket ", b, " lists '", name, "' where ",
                            at < ready.size() ? StrCat("'", g.value(ready[at]).name, "'") : std::string("no parameter"),
                            " is expected: buckets must list every ", what, " once, in the order their "
                            "gradients become ready (reverse placement order)"));
        }
        ++at;
      }
    }
    if (at != ready.size()) {
      return Bad(StrCat("the buckets cover ", at, " of ", ready.size(), " ", what, "s; '", g.value(ready[at]).name,
                        "' is in none"));
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
    if (a.members != b.members || a.atoms != b.atoms || a.segment != b.segment || a.level != b.level) {
      return Bad(StrCat(name, " does not match its instructions: expected ", b.atoms, " atoms over ",
                        b.members.size(), " members in segment ", b.segment, " at level ", LevelName(b.level)));
    }
    for (int64_t c : a.counts) {
      if (c < 0) return Bad(StrCat(name, " gives a device ", c, " atoms; expected non-negative counts"));
    }
    const size_t want = a.level == Level::kNodes ? p.nodes.size() : static_cast<size_t>(p.num_devices);
    const int64_t sum = std::accumulate(a.counts.begin(), a.counts.end(), int64_t{0});
    if (a.counts.size() != want || (a.level != Level::kDevices && sum != a.atoms)) {
      return Bad(StrCat(name, " has ", a.counts.size(), " counts summing to ", sum, "; expected ", want,
                        a.level == Level::kNodes ? " (one per node)" : "", " summing to ", a.atoms));
    }
    if (a.level == Level::kDevices) {
      for (size_t j = 0; j < p.nodes.size(); ++j) {
        int64_t node_sum = 0;
        for (int d : p.nodes[j]) node_sum += a.counts[static_cast<size_t>(d)];
        if (node_sum != a.atoms) {
          return Bad(StrCat(name, " is split within each node: node ", j, "'s counts sum to ", node_sum,
                            "; expected ", a.atoms));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace hetsynth::instr
