#include "hetsynth/instr/rules.h"

#include <numeric>

#include "hetsynth/ir/op_table.h"
#include "hetsynth/base/status.h"

namespace hetsynth::instr {
namespace {

using ir::OpKind;
using ir::Shape;
using F = RuleFamily;

std::string KindName(PropKind k) {
  return k == PropKind::kIdentity ? "Identity" : k == PropKind::kGather ? "Gather" : "Reduce";
}

class RuleSet {
 public:
  RuleSet(const ir::Graph& g, const ir::Node& n) : g_(g), n_(n) {}

  const Shape& in(size_t i) const { return g_.value(n_.inputs[i]).shape; }
  const Shape& out() const { return g_.value(n_.output).shape; }
  int rank(size_t i) const { return static_cast<int>(in(i).size()); }
  ir::ValueId x(size_t i) const { return n_.inputs[i]; }
  ir::ValueId y() const { return n_.output; }

  // A rule with the given properties; every Gather operand joins one split group whose atom
  // count may not exceed its dim size (or `max_atoms` where given, for the output and inputs).
  void Add(RuleId id, std::vector<Property> pre, Property post, Work work,
           int64_t max_atoms = 0, bool bias_once = false) {
    ComputeRule r;
    r.id = id;
    r.pre = std::move(pre);
    r.post = post;
    r.work = work;
    r.bias_once = bias_once;
    auto use = [&](const Property& p) {
      if (p.kind != PropKind::kGather) return;
      const int64_t size = g_.value(p.tensor).shape[static_cast<size_t>(p.dim)];
      r.split.push_back({p, max_atoms > 0 ? std::gcd(max_atoms, size) : size});
    };
    for (const Property& p : r.pre) use(p);
    use(r.post);
    rules_.push_back(std::move(r));
  }

  // Per-element ops that keep a Gather on any dim below `limit`: input 0 split like the
  // output, the other inputs replicated.
  void KeepDims(int limit) {
    for (int d = 0; d < limit; ++d) {
      std::vector<Property> pre = {Property::Gather(x(0), d)};
      for (size_t i = 1; i < n_.inputs.size(); ++i) pre.push_back(Property::Identity(x(i)));
      Add({F::kSplit, d}, std::move(pre), Property::Gather(y(), d), Work::kProportional);
    }
  }

  std::vector<ComputeRule> Build();

 private:
  void Broadcasting();
  void Partials(ir::Partial partial);
  void Own();
  const ir::Graph& g_;
  const ir::Node& n_;
  std::vector<ComputeRule> rules_;
};

// add / mul: b broadcasts onto a. A dim of a that b has at full size is split in both; a dim b
// lacks or has at size 1 is split in a only.
void RuleSet::Broadcasting() {
  const int ra = rank(0), rb = rank(1), off = ra - rb;
  for (int d = 0; d < ra; ++d) {
    const bool b_full = d >= off && in(1)[static_cast<size_t>(d - off)] == in(0)[static_cast<size_t>(d)] &&
                        in(0)[static_cast<size_t>(d)] != 1;
    Add({F::kSplit, d},
        {Property::Gather(x(0), d), b_full ? Property::Gather(x(1), d - off) : Property::Identity(x(1))},
        Property::Gather(y(), d), Work::kProportional);
  }
}

// Partial sums pass through an op that is linear in them.
void RuleSet::Partials(ir::Partial partial) {
  std::vector<Property> pre;
  switch (partial) {
    case ir::Partial::kNone:
      return;
    case ir::Partial::kSum:
      // Σ_i (a_i + b_i) = a + b: partial sums add (of one shape: no broadcast of a partial).
      for (size_t i = 0; i < n_.inputs.size(); ++i) {
        if (in(i) != in(0)) return;
        pre.push_back(Property::Reduce(x(i)));
      }
      break;
    case ir::Partial::kFirst:
      // Σ_i a_i ⊙ b = a ⊙ b: scaling a partial sum by a replicated tensor stays a partial sum.
      pre.push_back(Property::Reduce(x(0)));
      for (size_t i = 1; i < n_.inputs.size(); ++i) pre.push_back(Property::Identity(x(i)));
      break;
  }
  Add(F::kPartial, std::move(pre), Property::Reduce(y()), Work::kFull);
}

std::vector<ComputeRule> RuleSet::Build() {
  std::vector<Property> all_ident;
  for (ir::ValueId v : n_.inputs) all_ident.push_back(Property::Identity(v));
  Add(F::kReplicated, all_ident, Property::Identity(y()), Work::kFull);

  const ir::Sharding& sharding = ir::DefOf(n_.kind).sharding;
  switch (sharding.family) {
    case ir::Sharding::Family::kReplicatedOnly:
      break;
    case ir::Sharding::Family::kKeepDims:
      KeepDims(static_cast<int>(out().size()) - sharding.whole_trailing_dims);
      break;
    case ir::Sharding::Family::kBroadcasting:
      Broadcasting();
      break;
    case ir::Sharding::Family::kOwn:
      Own();
      break;
  }
  Partials(sharding.partial);
  return std::move(rules_);
}

// The rules of ops with a family of their own (ir::Sharding::Family::kOwn).
void RuleSet::Own() {
  const int ro = static_cast<int>(out().size());
  switch (n_.kind) {
    case OpKind::kLinear: {
      const int rx = rank(0);
      const bool bias = n_.inputs.size() == 3;
      for (int d = 0; d < rx - 1; ++d) {
        std::vector<Property> pre = {Property::Gather(x(0), d), Property::Identity(x(1))};
        if (bias) pre.push_back(Property::Identity(x(2)));
        Add(RuleId(F::kBatch, d), pre, Property::Gather(y(), d), Work::kProportional);
      }
      std::vector<Property> col = {Property::Identity(x(0)), Property::Gather(x(1), 0)};
      if (bias) col.push_back(Property::Gather(x(2), 0));
      Add(F::kColumn, col, Property::Gather(y(), rx - 1), Work::kProportional);
      std::vector<Property> row = {Property::Gather(x(0), rx - 1), Property::Gather(x(1), 1)};
      if (bias) row.push_back(Property::Identity(x(2)));
      Add(F::kRow, row, Property::Reduce(y()), Work::kProportional, 0, bias);
      break;
    }
    case OpKind::kMatMul: {
      const int ra = rank(0), rb = rank(1);
      for (int d = 0; d < ra - 2; ++d) {
        Add(RuleId(F::kBatch, d),
            {Property::Gather(x(0), d), rb == 2 ? Property::Identity(x(1)) : Property::Gather(x(1), d)},
            Property::Gather(y(), d), Work::kProportional);
      }
      Add(F::kRows, {Property::Gather(x(0), ra - 2), Property::Identity(x(1))}, Property::Gather(y(), ra - 2),
          Work::kProportional);
      Add(F::kColumns, {Property::Identity(x(0)), Property::Gather(x(1), rb - 1)}, Property::Gather(y(), ra - 1),
          Work::kProportional);
      Add(F::kInner, {Property::Gather(x(0), ra - 1), Property::Gather(x(1), rb - 2)}, Property::Reduce(y()),
          Work::kProportional);
      break;
    }
    case OpKind::kAttention:
      Add(F::kBatch, {Property::Gather(x(0), 0), Property::Gather(x(1), 0), Property::Gather(x(2), 0)},
          Property::Gather(y(), 0), Work::kProportional);
      Add(F::kHeads, {Property::Gather(x(0), 2), Property::Gather(x(1), 2), Property::Gather(x(2), 2)},
          Property::Gather(y(), 2), Work::kProportional, n_.attrs.heads);
      break;
    case OpKind::kEmbedding: {
      const int ri = rank(0);
      for (int d = 0; d < ri; ++d) {
        Add(RuleId(F::kBatch, d), {Property::Gather(x(0), d), Property::Identity(x(1))}, Property::Gather(y(), d),
            Work::kProportional);
      }
      Add(F::kHidden, {Property::Identity(x(0)), Property::Gather(x(1), 1)}, Property::Gather(y(), ri),
          Work::kProportional);
      // Each device looks up the ids in its rows of the table and contributes zeros for the rest.
      Add(F::kVocab, {Property::Identity(x(0)), Property::Gather(x(1), 0)}, Property::Reduce(y()),
          Work::kProportional);
      break;
    }
    case OpKind::kConv2d: {
      const bool bias = n_.inputs.size() == 3;
      std::vector<Property> batch = {Property::Gather(x(0), 0), Property::Identity(x(1))};
      std::vector<Property> outc = {Property::Identity(x(0)), Property::Gather(x(1), 0)};
      std::vector<Property> inc = {Property::Gather(x(0), 1), Property::Gather(x(1), 1)};
      if (bias) {
        batch.push_back(Property::Identity(x(2)));
        outc.push_back(Property::Gather(x(2), 0));
        inc.push_back(Property::Identity(x(2)));
      }
      Add(F::kBatch, batch, Property::Gather(y(), 0), Work::kProportional);
      if (n_.attrs.groups > 1) {
        // Whole channel groups: a device convolves its groups' input channels with their filters.
        std::vector<Property> grp = {Property::Gather(x(0), 1), Property::Gather(x(1), 0)};
        if (bias) grp.push_back(Property::Gather(x(2), 0));
        Add(F::kOutChannels, grp, Property::Gather(y(), 1), Work::kProportional, n_.attrs.groups);
        break;
      }
      Add(F::kOutChannels, outc, Property::Gather(y(), 1), Work::kProportional);
      Add(F::kInChannels, inc, Property::Reduce(y()), Work::kProportional, 0, bias);
      break;
    }
    case OpKind::kMseLoss:
      // The mean over all elements is a sum of per-device partial sums (each divided by the
      // global count), as for cross_entropy.
      for (int d = 0; d < rank(0); ++d) {
        Add(RuleId(F::kBatch, d), {Property::Gather(x(0), d), Property::Gather(x(1), d)}, Property::Reduce(y()),
            Work::kProportional);
      }
      break;
    case OpKind::kBatchMoments:
      // Per channel: a channel split keeps its channels; any other split sums partial means.
      for (int d = 0; d < rank(0); ++d) {
        if (d == 1) {
          Add(RuleId(F::kSplit, 1), {Property::Gather(x(0), 1)}, Property::Gather(y(), 1), Work::kProportional);
        } else {
          Add(RuleId(F::kBatch, d), {Property::Gather(x(0), d)}, Property::Reduce(y()), Work::kProportional);
        }
      }
      break;
    case OpKind::kBatchNorm:
      for (int d = 0; d < rank(0); ++d) {
        const bool c = d == 1;
        Add(RuleId(F::kSplit, d),
            {Property::Gather(x(0), d), c ? Property::Gather(x(1), 1) : Property::Identity(x(1)),
             c ? Property::Gather(x(2), 0) : Property::Identity(x(2)),
             c ? Property::Gather(x(3), 0) : Property::Identity(x(3))},
            Property::Gather(y(), d), Work::kProportional);
      }
      break;
    case OpKind::kFlatten: {
      const int axis = static_cast<int>(n_.attrs.axis < 0 ? n_.attrs.axis + rank(0) : n_.attrs.axis);
      KeepDims(axis);
      // The first merged dim: its atoms are whole blocks of the merged dim.
      Add(RuleId(F::kSplit, axis), {Property::Gather(x(0), axis)}, Property::Gather(y(), axis), Work::kProportional,
          in(0)[static_cast<size_t>(axis)]);
      break;
    }
    case OpKind::kReshape: {
      // Dims that start at the same flat offset in x and y can be cut together, in at most
      // gcd(x[d], y[e]) atoms (each atom a contiguous block of the flat data).
      int64_t px = 1;
      for (int d = 0; d < rank(0); ++d) {
        int64_t py = 1;
        for (int e = 0; e < ro; ++e) {
          if (px == py) {
            const int64_t atoms = std::gcd(in(0)[static_cast<size_t>(d)], out()[static_cast<size_t>(e)]);
            if (atoms > 1) {
              Add(RuleId(F::kSplit, d, e), {Property::Gather(x(0), d)}, Property::Gather(y(), e),
                  Work::kProportional, atoms);
            }
          }
          py *= out()[static_cast<size_t>(e)];
        }
        px *= in(0)[static_cast<size_t>(d)];
      }
      break;
    }
    case OpKind::kTranspose: {
      const int r = rank(0);
      const int a1 = static_cast<int>(n_.attrs.axis < 0 ? n_.attrs.axis + r : n_.attrs.axis);
      const int a2 = static_cast<int>(n_.attrs.axis2 < 0 ? n_.attrs.axis2 + r : n_.attrs.axis2);
      for (int d = 0; d < r; ++d) {
        const int e = d == a1 ? a2 : d == a2 ? a1 : d;
        Add(RuleId(F::kSplit, d), {Property::Gather(x(0), d)}, Property::Gather(y(), e), Work::kProportional);
      }
      break;
    }
    case OpKind::kConcat:
    case OpKind::kSlice: {
      const int r = ro;
      const int axis = static_cast<int>(n_.attrs.axis < 0 ? n_.attrs.axis + r : n_.attrs.axis);
      for (int d = 0; d < r; ++d) {
        if (d == axis) continue;
        std::vector<Property> pre;
        for (ir::ValueId v : n_.inputs) pre.push_back(Property::Gather(v, d));
        Add(RuleId(F::kSplit, d), pre, Property::Gather(y(), d), Work::kProportional);
      }
      break;
    }
    case OpKind::kExpand: {
      const int off = ro - rank(0);
      for (int e = 0; e < ro; ++e) {
        const bool from_x = e >= off && in(0)[static_cast<size_t>(e - off)] == out()[static_cast<size_t>(e)];
        Add(RuleId(F::kSplit, e), {from_x ? Property::Gather(x(0), e - off) : Property::Identity(x(0))},
            Property::Gather(y(), e), Work::kProportional);
      }
      break;
    }
    case OpKind::kCrossEntropy:
      // The mean over all positions is a sum of per-device partial sums (each divided by the
      // global count), so batch-split logits give a partial loss: the goal Reduce(loss).
      for (int d = 0; d < rank(0) - 1; ++d) {
        Add(RuleId(F::kBatch, d), {Property::Gather(x(0), d), Property::Gather(x(1), d)}, Property::Reduce(y()),
            Work::kProportional);
      }
      break;
    case OpKind::kMoEDispatch:
      Add(F::kExperts, {Property::Identity(x(0)), Property::Identity(x(1))}, Property::Gather(y(), 0),
          Work::kProportional);
      Add(F::kHidden, {Property::Gather(x(0), 1), Property::Identity(x(1))}, Property::Gather(y(), 2),
          Work::kProportional);
      // Each device scatters its own tokens into a zero buffer; the buffers sum to the result.
      Add(F::kTokens, {Property::Gather(x(0), 0), Property::Gather(x(1), 0)}, Property::Reduce(y()),
          Work::kProportional);
      break;
    case OpKind::kMoECombine:
      Add(F::kExperts, {Property::Gather(x(0), 0), Property::Identity(x(1))}, Property::Reduce(y()),
          Work::kProportional);
      Add(F::kHidden, {Property::Gather(x(0), 2), Property::Identity(x(1))}, Property::Gather(y(), 1),
          Work::kProportional);
      Add(F::kTokens, {Property::Identity(x(0)), Property::Gather(x(1), 0)}, Property::Gather(y(), 0),
          Work::kProportional);
      break;
    default:
      HS_CHECK(false, StrCat("op '", ir::OpName(n_.kind), "' is marked kOwn in the op table but has no rules in rules.cc"));
  }
}

}  // namespace

std::string_view LevelName(Level l) {
  switch (l) {
    case Level::kWorld: return "world";
    case Level::kNodes: return "nodes";
    case Level::kDevices: return "devices";
  }
  return "?";
}

bool ParseLevel(std::string_view name, Level* out) {
  for (Level l : {Level::kWorld, Level::kNodes, Level::kDevices}) {
    if (LevelName(l) == name) {
      *out = l;
      return true;
    }
  }
  return false;
}

Property Property::Mesh(ir::ValueId t, Placement outer, Placement inner) {
  if (outer.kind != PropKind::kGather) outer.dim = -1;
  if (inner.kind != PropKind::kGather) inner.dim = -1;
  Property p{inner.kind, t, inner.dim};
  if (outer == inner) return p;  // a world form
  p.mixed = true;
  p.outer_kind = outer.kind;
  p.outer_dim = outer.dim;
  return p;
}

std::string PlacementString(const Placement& p) {
  if (p.kind == PropKind::kGather) return StrCat("Gather(", p.dim, ")");
  return KindName(p.kind);
}

bool ParsePlacement(std::string_view text, Placement* out) {
  if (text == "Identity") return *out = {PropKind::kIdentity, -1}, true;
  if (text == "Reduce") return *out = {PropKind::kReduce, -1}, true;
  if (text.size() < 9 || text.substr(0, 7) != "Gather(" || text.back() != ')') return false;
  const std::string_view digits = text.substr(7, text.size() - 8);
  if (digits.empty() || digits.size() > 6 || (digits.size() > 1 && digits[0] == '0')) return false;
  int d = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    d = 10 * d + (c - '0');
  }
  *out = {PropKind::kGather, d};
  return true;
}

std::string PropertyString(const ir::Graph& g, const Property& p) {
  const std::string name = p.tensor == ir::kNoValue ? "?" : g.value(p.tensor).name;
  if (p.mixed) {
    return StrCat("Mesh(", name, "; nodes=", PlacementString(p.Outer()), ", devices=", PlacementString(p.Inner()), ")");
  }
  if (p.kind == PropKind::kGather) return StrCat("Gather(", name, ", ", p.dim, ")");
  return StrCat(KindName(p.kind), "(", name, ")");
}

std::vector<ComputeRule> ShardingRules(const ir::Graph& g, ir::NodeId node) {
  return RuleSet(g, g.node(node)).Build();
}

absl::StatusOr<ComputeRule> CombineRules(const ir::Graph& g, ir::NodeId node, const ComputeRule& outer,
                                         const ComputeRule& inner) {
  if (outer.id == inner.id) return inner;
  ComputeRule r;
  r.id = inner.id;
  r.mesh = true;
  r.outer_id = outer.id;
  r.work = inner.work;
  r.outer_work = outer.work;
  r.bias_once = inner.bias_once;
  r.outer_bias_once = outer.bias_once;
  auto combine = [](const Property& o, const Property& i) {
    return Property::Mesh(i.tensor, o.Inner(), i.Inner());
  };
  for (size_t k = 0; k < inner.pre.size(); ++k) r.pre.push_back(combine(outer.pre[k], inner.pre[k]));
  r.post = combine(outer.post, inner.post);
  // The combined property of the operand a split use names (operands matched by position).
  auto operand = [&](const ComputeRule& rule, const Property& p) -> absl::StatusOr<Property> {
    for (size_t k = 0; k < rule.pre.size(); ++k) {
      if (rule.pre[k] == p) return r.pre[k];
    }
    if (rule.post == p) return r.post;
    return absl::InternalError("a split use names no operand of its rule");
  };
  for (const auto& [rule, cut] : {std::pair{&outer, Level::kNodes}, std::pair{&inner, Level::kDevices}}) {
    for (const SplitUse& u : rule->split) {
      HS_ASSIGN_OR_RETURN(const Property p, operand(*rule, u.prop));
      if (!p.mixed) {
        return absl::InvalidArgumentError(
            StrCat("node '", g.node(node).name, "': rules (", RuleName(outer.id), ", ", RuleName(inner.id), ") split ",
                   g.value(p.tensor).name, " on dim ", p.dim, " at both levels, which is the world rule's split; "
                   "expected a pair whose levels cut different dims"));
      }
      r.split.push_back({p, u.max_atoms, cut});
    }
  }
  return r;
}

const ComputeRule* FindRule(const std::vector<ComputeRule>& rules, const RuleId& id) {
  for (const ComputeRule& r : rules) {
    if (r.id == id) return &r;
  }
  return nullptr;
}

std::string RuleNames(const std::vector<ComputeRule>& rules) {
  std::string names;
  for (const ComputeRule& r : rules) names += (names.empty() ? "" : ", ") + RuleName(r.id);
  return names;
}

std::string RuleName(const RuleId& id) {
  std::string name(kRuleFamilyNames.at(static_cast<size_t>(id.family)));
  if (id.dim >= 0) name += std::to_string(id.dim);
  if (id.dim2 >= 0) {
    name += '_';
    name += std::to_string(id.dim2);
  }
  return name;
}

std::ostream& operator<<(std::ostream& os, const RuleId& id) { return os << RuleName(id); }

}  // namespace hetsynth::instr
