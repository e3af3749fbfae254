#include "hetsynth/instr/rules.h"

#include <numeric>

#include "hetsynth/ir/status.h"

namespace hetsynth::instr {
namespace {

using ir::OpKind;
using ir::Shape;

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
  void Add(std::string name, std::vector<Property> pre, Property post, Work work,
           int64_t max_atoms = 0, bool bias_once = false) {
    ComputeRule r;
    r.name = std::move(name);
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

  // Per-element ops that keep a Gather on any dim below `limit` (all dims when limit < 0):
  // input 0 split like the output, the other inputs replicated.
  void KeepDims(int limit, const char* name = "split") {
    const int r = static_cast<int>(out().size());
    for (int d = 0; d < (limit < 0 ? r : limit); ++d) {
      std::vector<Property> pre = {Property::Gather(x(0), d)};
      for (size_t i = 1; i < n_.inputs.size(); ++i) pre.push_back(Property::Identity(x(i)));
      Add(StrCat(name, d), std::move(pre), Property::Gather(y(), d), Work::kProportional);
    }
  }

  std::vector<ComputeRule> Build();

 private:
  void Broadcasting();
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
    Add(StrCat("split", d),
        {Property::Gather(x(0), d), b_full ? Property::Gather(x(1), d - off) : Property::Identity(x(1))},
        Property::Gather(y(), d), Work::kProportional);
  }
  if (n_.kind == OpKind::kAdd && in(0) == in(1)) {
    // Σ_i (a_i + b_i) = a + b: partial sums add.
    Add("partial", {Property::Reduce(x(0)), Property::Reduce(x(1))}, Property::Reduce(y()), Work::kFull);
  }
  if (n_.kind == OpKind::kMul) {
    // Σ_i a_i ⊙ b = a ⊙ b: scaling a partial sum by a replicated tensor stays a partial sum.
    Add("partial", {Property::Reduce(x(0)), Property::Identity(x(1))}, Property::Reduce(y()), Work::kFull);
  }
}

std::vector<ComputeRule> RuleSet::Build() {
  std::vector<Property> all_ident;
  for (ir::ValueId v : n_.inputs) all_ident.push_back(Property::Identity(v));
  Add("replicated", all_ident, Property::Identity(y()), Work::kFull);

  const int ro = static_cast<int>(out().size());
  switch (n_.kind) {
    case OpKind::kRelu:
    case OpKind::kGelu:
    case OpKind::kDropout:
      KeepDims(-1);
      break;
    case OpKind::kCausalMask:
      KeepDims(ro - 2);
      break;
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax:
    case OpKind::kLayerNorm:  // gamma and beta replicated
      KeepDims(ro - 1);
      break;
    case OpKind::kAdd:
    case OpKind::kMul:
      Broadcasting();
      break;
    case OpKind::kLinear: {
      const int rx = rank(0);
      const bool bias = n_.inputs.size() == 3;
      for (int d = 0; d < rx - 1; ++d) {
        std::vector<Property> pre = {Property::Gather(x(0), d), Property::Identity(x(1))};
        if (bias) pre.push_back(Property::Identity(x(2)));
        Add(StrCat("batch", d), pre, Property::Gather(y(), d), Work::kProportional);
      }
      std::vector<Property> col = {Property::Identity(x(0)), Property::Gather(x(1), 0)};
      if (bias) col.push_back(Property::Gather(x(2), 0));
      Add("column", col, Property::Gather(y(), rx - 1), Work::kProportional);
      std::vector<Property> row = {Property::Gather(x(0), rx - 1), Property::Gather(x(1), 1)};
      if (bias) row.push_back(Property::Identity(x(2)));
      Add("row", row, Property::Reduce(y()), Work::kProportional, 0, bias);
      break;
    }
    case OpKind::kMatMul: {
      const int ra = rank(0), rb = rank(1);
      for (int d = 0; d < ra - 2; ++d) {
        Add(StrCat("batch", d),
            {Property::Gather(x(0), d), rb == 2 ? Property::Identity(x(1)) : Property::Gather(x(1), d)},
            Property::Gather(y(), d), Work::kProportional);
      }
      Add("rows", {Property::Gather(x(0), ra - 2), Property::Identity(x(1))}, Property::Gather(y(), ra - 2),
          Work::kProportional);
      Add("columns", {Property::Identity(x(0)), Property::Gather(x(1), rb - 1)}, Property::Gather(y(), ra - 1),
          Work::kProportional);
      Add("inner", {Property::Gather(x(0), ra - 1), Property::Gather(x(1), rb - 2)}, Property::Reduce(y()),
          Work::kProportional);
      break;
    }
    case OpKind::kAttention:
      Add("batch", {Property::Gather(x(0), 0), Property::Gather(x(1), 0), Property::Gather(x(2), 0)},
          Property::Gather(y(), 0), Work::kProportional);
      Add("heads", {Property::Gather(x(0), 2), Property::Gather(x(1), 2), Property::Gather(x(2), 2)},
          Property::Gather(y(), 2), Work::kProportional, n_.attrs.heads);
      break;
    case OpKind::kEmbedding: {
      const int ri = rank(0);
      for (int d = 0; d < ri; ++d) {
        Add(StrCat("batch", d), {Property::Gather(x(0), d), Property::Identity(x(1))}, Property::Gather(y(), d),
            Work::kProportional);
      }
      Add("hidden", {Property::Identity(x(0)), Property::Gather(x(1), 1)}, Property::Gather(y(), ri),
          Work::kProportional);
      // Each device looks up the ids in its rows of the table and contributes zeros for the rest.
      Add("vocab", {Property::Identity(x(0)), Property::Gather(x(1), 0)}, Property::Reduce(y()),
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
      Add("batch", batch, Property::Gather(y(), 0), Work::kProportional);
      Add("out_channels", outc, Property::Gather(y(), 1), Work::kProportional);
      Add("in_channels", inc, Property::Reduce(y()), Work::kProportional, 0, bias);
      break;
    }
    case OpKind::kMaxPool2d:
    case OpKind::kAdaptiveAvgPool2d:
      KeepDims(2);
      break;
    case OpKind::kFlatten: {
      const int axis = static_cast<int>(n_.attrs.axis < 0 ? n_.attrs.axis + rank(0) : n_.attrs.axis);
      KeepDims(axis);
      // The first merged dim: its atoms are whole blocks of the merged dim.
      Add(StrCat("split", axis), {Property::Gather(x(0), axis)}, Property::Gather(y(), axis), Work::kProportional,
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
              Add(StrCat("split", d, "_", e), {Property::Gather(x(0), d)}, Property::Gather(y(), e),
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
        Add(StrCat("split", d), {Property::Gather(x(0), d)}, Property::Gather(y(), e), Work::kProportional);
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
        Add(StrCat("split", d), pre, Property::Gather(y(), d), Work::kProportional);
      }
      break;
    }
    case OpKind::kExpand: {
      const int off = ro - rank(0);
      for (int e = 0; e < ro; ++e) {
        const bool from_x = e >= off && in(0)[static_cast<size_t>(e - off)] == out()[static_cast<size_t>(e)];
        Add(StrCat("split", e), {from_x ? Property::Gather(x(0), e - off) : Property::Identity(x(0))},
            Property::Gather(y(), e), Work::kProportional);
      }
      break;
    }
    case OpKind::kCrossEntropy:
      // The mean over all positions is a sum of per-device partial sums (each divided by the
      // global count), so batch-split logits give a partial loss: the goal Reduce(loss).
      for (int d = 0; d < rank(0) - 1; ++d) {
        Add(StrCat("batch", d), {Property::Gather(x(0), d), Property::Gather(x(1), d)}, Property::Reduce(y()),
            Work::kProportional);
      }
      break;
    case OpKind::kTopKGate:
      // Slot assignment depends on every token in order, so the gate only runs replicated.
      break;
    case OpKind::kMoEDispatch:
      Add("experts", {Property::Identity(x(0)), Property::Identity(x(1))}, Property::Gather(y(), 0),
          Work::kProportional);
      Add("hidden", {Property::Gather(x(0), 1), Property::Identity(x(1))}, Property::Gather(y(), 2),
          Work::kProportional);
      // Each device scatters its own tokens into a zero buffer; the buffers sum to the result.
      Add("tokens", {Property::Gather(x(0), 0), Property::Gather(x(1), 0)}, Property::Reduce(y()),
          Work::kProportional);
      break;
    case OpKind::kMoECombine:
      Add("experts", {Property::Gather(x(0), 0), Property::Identity(x(1))}, Property::Reduce(y()),
          Work::kProportional);
      Add("hidden", {Property::Gather(x(0), 2), Property::Identity(x(1))}, Property::Gather(y(), 1),
          Work::kProportional);
      Add("tokens", {Property::Identity(x(0)), Property::Gather(x(1), 0)}, Property::Gather(y(), 0),
          Work::kProportional);
      break;
  }
  return std::move(rules_);
}

}  // namespace

std::string PropertyString(const ir::Graph& g, const Property& p) {
  const std::string name = p.tensor == ir::kNoValue ? "?" : g.value(p.tensor).name;
  if (p.kind == PropKind::kGather) return StrCat("Gather(", name, ", ", p.dim, ")");
  return StrCat(KindName(p.kind), "(", name, ")");
}

std::vector<ComputeRule> ShardingRules(const ir::Graph& g, ir::NodeId node) {
  return RuleSet(g, g.node(node)).Build();
}

}  // namespace hetsynth::instr
