// A* search for the forward program at fixed ratios (see synthesize.h).
//
// Nodes are taken in graph order, so a search state is (next node, the properties held for
// every live tensor); a tensor is live from its first use until its last consumer has run. One
// step picks a compute rule for the next node and fuses in what its preconditions need:
// placements of parameters and inputs on first use and at most one collective per tensor
// (local slices are free and always allowed). g is the predicted time so far (additive; see
// synthesize.h for how gradient synchronization is charged); h, the sum over the remaining
// nodes of their cheapest rule's compute time, never overestimates.
//
// The state is kept small because the search expands millions of them: a live tensor and its
// (at most two) forms pack into one 64-bit word, states live in one arena with their words and
// actions in shared pools, memory is two numbers (bytes every device holds, bytes held in
// proportion to the ratio), and every price is computed once per search (rules per node,
// collectives per tensor and kind, placements per parameter).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <queue>
#include <unordered_map>

#include "hetsynth/base/status.h"
#include "hetsynth/synth/synthesize.h"
#include "memory_oracle.h"

namespace hetsynth::synth {
namespace {

using costmodel::ClusterModel;
using costmodel::Term;
using instr::CollImpl;
using instr::ComputeRule;
using instr::Instruction;
using instr::InstrKind;
using instr::PropKind;
using instr::Property;

// A form of a tensor in one byte: (kind + 1) << 4 | (dim + 1); 0 = none. Ordered like Property
// for one tensor (kind, then dim).
using Form = uint8_t;
Form FormOf(const Property& p) { return static_cast<Form>(((static_cast<int>(p.kind) + 1) << 4) | (p.dim + 1)); }
Property PropertyOf(ir::ValueId v, Form f) {
  return {static_cast<PropKind>((f >> 4) - 1), v, (f & 15) - 1};
}
// A live tensor: value << 16 | first form << 8 | second form (0: none), first < second.
using Entry = uint64_t;
Entry MakeEntry(ir::ValueId v, Form a, Form b) {
  if (b != 0 && b < a) std::swap(a, b);
  return (static_cast<uint64_t>(v) << 16) | (static_cast<uint64_t>(a) << 8) | b;
}
ir::ValueId EntryValue(Entry e) { return static_cast<ir::ValueId>(e >> 16); }
Form FormA(Entry e) { return static_cast<Form>((e >> 8) & 255); }
Form FormB(Entry e) { return static_cast<Form>(e & 255); }
bool Has(Entry e, Form f) { return FormA(e) == f || FormB(e) == f; }

// One instruction, compactly; turned into an instr::Instruction when the program is built.
struct Action {
  InstrKind kind = InstrKind::kCompute;
  CollImpl impl = CollImpl::kNone;
  int8_t dim = -1, dim2 = -1;
  int32_t id = -1;    // compute: the node; otherwise the tensor
  int32_t rule = -1;  // compute: index into the node's allowed rules
};

struct SearchNode {
  int idx = 0;        // next graph node to run
  int parent = -1;
  double g = 0;
  double fixed = 0;   // bytes every device holds whatever the ratios
  double split = 0;   // bytes a device holds in proportion to its ratio
  uint32_t live_begin = 0, live_len = 0;  // in the live pool
  uint32_t act_begin = 0, act_len = 0;    // in the action pool
  int next_same = -1;                     // the next state with the same key hash
  bool superseded = false;                // a cheaper path to the same state was found
};

// A small fixed-capacity vector: a step changes a handful of tensors and adds a handful of
// instructions; heap allocations per partial step dominated the search's time.
template <typename T, size_t N>
struct Small {
  T items[N];
  uint32_t size = 0;
  void push_back(const T& x) {
    HS_CHECK(size < N, "search step exceeds its fixed capacity");
    items[size++] = x;
  }
  const T* begin() const { return items; }
  const T* end() const { return items + size; }
};

// A step under construction: the tensors it changed and what it did.
struct Partial {
  double cost = 0;
  double fixed = 0, split = 0;
  Small<std::pair<ir::ValueId, Entry>, 12> changed;  // tensor → its entry now (0: dropped)
  Small<Action, 24> actions;
};

class Search {
 public:
  Search(const ir::Graph& g, const ClusterModel& m, const std::vector<double>& r, const Strategy& s,
         const SynthOptions& o, double sync_weight, Z3Session* session)
      : g_(g), m_(m), c_(m.cluster()), r_(r), s_(s), o_(o), n_(c_.size()), sync_weight_(sync_weight),
        oracle_(c_, session) {}

  absl::StatusOr<instr::Program> Run(int64_t* expanded);
  // Adds weight · (peak memory fraction) to g, so that states merged by the best-g table keep
  // the leaner path; the sum over a path telescopes to weight · its final peak fraction.
  void set_memory_weight(double w) { memory_weight_ = w; }
  double lower_bound() { Prepare(); return h_[0]; }
  // The cheapest goal cost over every choice sequence (no pruning; tests only).
  absl::StatusOr<double> Exhaustive();

 private:
  bool memory_limits() const { return o_.memory_limits && s_.memory_rows; }
  double Bytes(ir::ValueId v) const { return 4.0 * static_cast<double>(ir::NumElements(g_.value(v).shape)); }
  bool RuleAllowed(ir::NodeId k, const ComputeRule& r) const;
  void AddMemory(Partial& p, double bytes, bool split) const { (split ? p.split : p.fixed) += bytes; }
  bool Fits(double fixed, double split) const {
    if (!memory_limits()) return true;
    for (const auto& [r, cap] : capacity_) {
      if (fixed + split * r > cap) return false;
    }
    return true;
  }
  double MemoryFraction(double fixed, double split) const {
    if (!memory_limits()) return 0;
    double worst = 0;
    for (const auto& [r, cap] : capacity_) worst = std::max(worst, (fixed + split * r) / cap);
    return worst;
  }
  double Time(const Term& t) const { return costmodel::TermTime(t, r_, m_); }
  // The collective with the cheapest allowed implementation, and its cost (cached per search).
  std::pair<CollImpl, double> Collective(InstrKind kind, ir::ValueId t, int dim, int dim2);
  // What the search charges for a replicated parameter's gradient synchronization.
  double GradientSync(ir::ValueId v);
  void Satisfy(const Property& q, const SearchNode& cur, const Partial& p, std::vector<Partial>& out);
  Entry Lookup(const SearchNode& cur, const Partial& p, ir::ValueId v) const;
  void Prepare();
  void Successors(const SearchNode& cur, int id, std::vector<SearchNode>& out, std::vector<Entry>& live_out);
  bool Goal(const SearchNode& n) const;
  uint64_t Hash(int idx, const Entry* live, uint32_t len) const;
  instr::Program Build(int id) const;

  const ir::Graph& g_;
  const ClusterModel& m_;
  const costmodel::Cluster& c_;
  const std::vector<double>& r_;
  const Strategy& s_;
  const SynthOptions& o_;
  const int n_;
  const double sync_weight_;
  std::vector<int> last_use_;                       // per value: its last consumer
  std::vector<std::vector<ComputeRule>> rules_;      // per node: the allowed rules
  std::vector<std::vector<double>> rule_time_;       // per node and rule: compute time
  std::vector<double> h_;                            // heuristic: cheapest compute from node k on
  std::vector<std::pair<double, double>> capacity_;  // distinct (ratio, capacity bytes) of devices
  std::unordered_map<uint64_t, std::pair<CollImpl, double>> collective_cost_;
  std::vector<double> sync_cost_;                    // per value: GradientSync, −1 until computed
  std::vector<Entry> live_pool_;
  std::vector<Action> act_pool_;
  std::vector<SearchNode> arena_;
  double memory_weight_ = 0;                         // seconds per unit of peak memory fraction
  MemoryOracle oracle_;                              // Z3: can any ratios fit this memory?
  absl::Status oracle_error_;                        // its first failure, which ends the search
  int64_t memory_pruned_ = 0;                        // successors over a device's memory (Run's message)
};

bool Search::RuleAllowed(ir::NodeId k, const ComputeRule& r) const {
  const bool is_loss = g_.node(k).output == g_.loss();
  // Data parallel keeps batch statistics whole by all-reducing their partial sums (PyTorch's
  // SyncBatchNorm): the only data-parallel batch norm that trains as one device does.
  const bool batch_stats = g_.node(k).kind == ir::OpKind::kBatchMoments;
  if (!s_.allow_reduce_rules && r.post.kind == PropKind::kReduce && !is_loss) return false;
  std::vector<Property> props = r.pre;
  props.push_back(r.post);
  if (s_.split_weights_with_activations) {
    // Tensor parallel only: an op that splits an activation must not hold a weight matrix
    // (rank ≥ 2) whole — that would be data parallelism over another dim.
    bool split_activation = false, whole_matrix = false;
    for (const Property& p : props) {
      const ir::Value& v = g_.value(p.tensor);
      if (p.kind == PropKind::kGather && v.kind != ir::ValueKind::kParameter) split_activation = true;
      if (p.kind == PropKind::kIdentity && v.kind == ir::ValueKind::kParameter && v.shape.size() >= 2) whole_matrix = true;
    }
    if (split_activation && whole_matrix) return false;
  }
  for (const Property& p : props) {
    const bool param = g_.value(p.tensor).kind == ir::ValueKind::kParameter;
    if (s_.only_dim0_splits) {
      if (p.kind == PropKind::kGather && p.dim != 0) return false;
      if (p.kind == PropKind::kReduce && !is_loss && !batch_stats) return false;
      if (p.kind == PropKind::kGather && param) return false;
    }
    if (s_.inputs_replicated && p.kind == PropKind::kGather && p.dim == 0 && !param) return false;
    if (p.kind == PropKind::kGather && p.dim > 13) return false;  // a form keeps dims below 15
  }
  return true;
}

std::pair<CollImpl, double> Search::Collective(InstrKind kind, ir::ValueId t, int dim, int dim2) {
  const uint64_t key = (static_cast<uint64_t>(t) << 24) | (static_cast<uint64_t>(kind) << 16) |
                       (static_cast<uint64_t>(dim + 1) << 8) | static_cast<uint64_t>(dim2 + 1);
  if (const auto it = collective_cost_.find(key); it != collective_cost_.end()) return it->second;
  Instruction in;
  in.kind = kind;
  in.tensor = t;
  in.dim = dim;
  in.dim2 = dim2;
  std::vector<CollImpl> impls;
  if (kind == InstrKind::kAllGather || kind == InstrKind::kReduceScatter) {
    impls = {CollImpl::kPadded};
    if (s_.allow_grouped) impls.push_back(CollImpl::kGrouped);
    if (s_.allow_hierarchical && m_.hierarchical()) impls.push_back(CollImpl::kHierarchical);
  } else if (kind == InstrKind::kAllReduce) {
    impls = {CollImpl::kRing};
    if (s_.allow_hierarchical && m_.hierarchical()) impls.push_back(CollImpl::kHierarchical);
  } else {
    impls = {CollImpl::kNone};
  }
  std::pair<CollImpl, double> best = {impls.front(), std::numeric_limits<double>::infinity()};
  for (CollImpl impl : impls) {  // ties keep the earlier (simpler) implementation
    in.impl = impl;
    Term term = costmodel::CollectiveTerm(g_, in);
    double cost = Time(term);
    if (term.role == costmodel::TermRole::kParameterGather && s_.overlap) cost *= sync_weight_;
    if (cost < best.second) best = {impl, cost};
  }
  collective_cost_[key] = best;
  return best;
}

double Search::GradientSync(ir::ValueId v) {
  double& cached = sync_cost_[static_cast<size_t>(v)];
  if (cached >= 0) return cached;
  // With buckets the latency is paid once per bucket: charge it in proportion to the
  // parameter's part of a 25 MiB bucket (at most once).
  const double bytes = Bytes(v);
  const double share = s_.bucket_bytes.empty() ? 1.0 : std::min(1.0, bytes / (25.0 * 1048576.0));
  double best = std::numeric_limits<double>::infinity();
  for (CollImpl impl : {CollImpl::kRing, CollImpl::kHierarchical}) {
    if (impl == CollImpl::kHierarchical && !(s_.allow_hierarchical && m_.hierarchical())) continue;
    Term t = costmodel::GradientAllReduceTerm(g_, v, impl);
    const double full = Time(t);
    t.bytes = 0;
    const double latency = Time(t);
    best = std::min(best, full - latency + share * latency);
  }
  cached = (s_.overlap ? sync_weight_ : 1.0) * best;
  return cached;
}

Entry Search::Lookup(const SearchNode& cur, const Partial& p, ir::ValueId v) const {
  Entry found = 0;
  bool changed = false;
  for (const auto& [t, e] : p.changed) {
    if (t == v) found = e, changed = true;  // the last change counts
  }
  if (changed) return found;
  const Entry* begin = live_pool_.data() + cur.live_begin;
  const Entry* end = begin + cur.live_len;
  const Entry* it = std::lower_bound(begin, end, MakeEntry(v, 0, 0));
  return it != end && EntryValue(*it) == v ? *it : 0;
}

void Search::Satisfy(const Property& q, const SearchNode& cur, const Partial& p, std::vector<Partial>& out) {
  const ir::ValueId v = q.tensor;
  const ir::Value& val = g_.value(v);
  const Form want = FormOf(q);
  auto push = [&](Partial next, Entry before) {
    // Add the form to the tensor's entry (at most two forms).
    Entry e = before == 0 ? MakeEntry(v, want, 0) : before;
    if (!Has(e, want)) e = MakeEntry(v, FormA(e), want);
    next.changed.push_back({v, e});
    out.push_back(std::move(next));
  };
  auto place = [&](Partial& next, int dim) {
    Action a;
    a.kind = val.kind == ir::ValueKind::kInput ? InstrKind::kPlaceInput : InstrKind::kPlaceParameter;
    a.id = v;
    a.dim = static_cast<int8_t>(dim);
    next.actions.push_back(a);
  };
  const Entry have = Lookup(cur, p, v);
  if (have == 0) {
    if (val.kind == ir::ValueKind::kActivation) return;  // consumed after its last use: impossible
    if (val.kind == ir::ValueKind::kInput) {
      if (q.kind == PropKind::kReduce) return;
      const bool replicate = q.kind == PropKind::kIdentity || s_.inputs_replicated;
      Partial next = p;
      place(next, replicate ? -1 : q.dim);
      AddMemory(next, Bytes(v), !replicate);
      Entry before = 0;
      if (replicate && q.kind == PropKind::kGather) {
        before = MakeEntry(v, FormOf(Property::Identity(v)), 0);
        next.actions.push_back(Action{InstrKind::kSlice, CollImpl::kNone, static_cast<int8_t>(q.dim), -1, v, -1});
      }
      push(std::move(next), before);
      return;
    }
    // A parameter's first use decides its placement.
    const double state = o_.cost.parameter_state_factor * Bytes(v);
    if (q.kind == PropKind::kGather && s_.allow_sharded_params) {
      Partial next = p;
      place(next, q.dim);
      AddMemory(next, state, true);
      next.cost += Time(costmodel::OptimizerTerm(g_, v, true, o_.cost));
      push(std::move(next), 0);
    }
    // Tensor parallel only: a weight matrix is never whole on every device.
    const bool matrix_split = s_.split_weights_with_activations && n_ > 1 && g_.value(v).shape.size() >= 2;
    if (q.kind == PropKind::kIdentity && s_.allow_replicated_params && !matrix_split) {
      Partial next = p;
      place(next, -1);
      AddMemory(next, state, false);
      next.cost += Time(costmodel::OptimizerTerm(g_, v, false, o_.cost));
      if (n_ > 1) next.cost += GradientSync(v);
      push(std::move(next), 0);
    }
    if (q.kind == PropKind::kIdentity && s_.allow_zero_params && n_ > 1) {
      // ZeRO-3: stored as slices of dim 0, all-gathered for use (the gradient reduce-scattered).
      Partial next = p;
      place(next, 0);
      AddMemory(next, state, true);  // the gathered copy is transient: freed after use
      next.cost += Time(costmodel::OptimizerTerm(g_, v, true, o_.cost));
      const auto [impl, cost] = Collective(InstrKind::kAllGather, v, 0, -1);
      next.actions.push_back(Action{InstrKind::kAllGather, impl, 0, -1, v, -1});
      next.cost += cost;
      push(std::move(next), MakeEntry(v, FormOf(Property::Gather(v, 0)), 0));
    }
    return;
  }
  if (Has(have, want)) {
    out.push_back(p);
    return;
  }
  const Form identity = FormOf(Property::Identity(v));
  if (q.kind == PropKind::kGather && Has(have, identity)) {  // a local slice: free, always allowed
    Partial next = p;
    next.actions.push_back(Action{InstrKind::kSlice, CollImpl::kNone, static_cast<int8_t>(q.dim), -1, v, -1});
    push(std::move(next), have);
    return;
  }
  if (FormB(have) != 0) return;  // communicated once already
  const Property f = PropertyOf(v, FormA(have));
  Action a;
  a.id = v;
  bool split_result = false;
  if (f.kind == PropKind::kGather && q.kind == PropKind::kIdentity) {
    a.kind = InstrKind::kAllGather;
    a.dim = static_cast<int8_t>(f.dim);
  } else if (f.kind == PropKind::kGather && q.kind == PropKind::kGather) {
    a.kind = InstrKind::kAllToAll;
    a.dim = static_cast<int8_t>(f.dim);
    a.dim2 = static_cast<int8_t>(q.dim);
    split_result = true;
  } else if (f.kind == PropKind::kReduce && q.kind == PropKind::kIdentity) {
    a.kind = InstrKind::kAllReduce;
  } else if (f.kind == PropKind::kReduce && q.kind == PropKind::kGather) {
    a.kind = InstrKind::kReduceScatter;
    a.dim = static_cast<int8_t>(q.dim);
    split_result = true;
  } else {
    return;  // Identity/Gather -> Reduce has no instruction
  }
  const auto [impl, cost] = Collective(a.kind, v, a.dim, a.dim2);
  a.impl = impl;
  Partial next = p;
  next.cost += cost;
  next.actions.push_back(a);
  AddMemory(next, Bytes(v), split_result);
  push(std::move(next), have);
}

void Search::Prepare() {
  const int num_nodes = static_cast<int>(g_.nodes().size());
  last_use_.assign(g_.values().size(), -1);
  for (int k = 0; k < num_nodes; ++k) {
    for (ir::ValueId v : g_.node(k).inputs) last_use_[static_cast<size_t>(v)] = k;
  }
  last_use_[static_cast<size_t>(g_.loss())] = num_nodes;
  sync_cost_.assign(g_.values().size(), -1.0);
  // Allowed rules, their compute time, and the heuristic's suffix sums.
  rules_.assign(static_cast<size_t>(num_nodes), {});
  rule_time_.assign(static_cast<size_t>(num_nodes), {});
  h_.assign(static_cast<size_t>(num_nodes) + 1, 0.0);
  for (int k = 0; k < num_nodes; ++k) {
    for (ComputeRule& r : instr::ShardingRules(g_, k)) {
      if (!RuleAllowed(k, r)) continue;
      rule_time_[static_cast<size_t>(k)].push_back(Time(costmodel::ComputeTerm(g_, k, r, m_)));
      rules_[static_cast<size_t>(k)].push_back(std::move(r));
    }
  }
  for (int k = num_nodes - 1; k >= 0; --k) {
    const auto& t = rule_time_[static_cast<size_t>(k)];
    h_[static_cast<size_t>(k)] = h_[static_cast<size_t>(k) + 1] + (t.empty() ? 0.0 : *std::min_element(t.begin(), t.end()));
  }
  capacity_.clear();
  for (int i = 0; i < n_; ++i) {
    const std::pair<double, double> rc = {r_[static_cast<size_t>(i)], c_.devices[static_cast<size_t>(i)].memory_bytes};
    if (std::find(capacity_.begin(), capacity_.end(), rc) == capacity_.end()) capacity_.push_back(rc);
  }
}

void Search::Successors(const SearchNode& cur, int id, std::vector<SearchNode>& out, std::vector<Entry>& live_out) {
  out.clear();
  live_out.clear();
  const ir::Node& node = g_.node(cur.idx);
  const auto& node_rules = rules_[static_cast<size_t>(cur.idx)];
  std::vector<Partial> partials, next;
  for (size_t ri = 0; ri < node_rules.size(); ++ri) {
    const ComputeRule& rule = node_rules[ri];
    partials.clear();
    Partial start;
    start.cost = rule_time_[static_cast<size_t>(cur.idx)][ri];
    start.fixed = cur.fixed;
    start.split = cur.split;
    partials.push_back(start);
    for (const Property& q : rule.pre) {
      next.clear();
      for (const Partial& p : partials) Satisfy(q, cur, p, next);
      std::swap(partials, next);
    }
    for (Partial& p : partials) {
      p.actions.push_back(Action{InstrKind::kCompute, CollImpl::kNone, -1, -1, cur.idx, static_cast<int32_t>(ri)});
      p.changed.push_back({node.output, MakeEntry(node.output, FormOf(rule.post), 0)});
      AddMemory(p, Bytes(node.output), rule.post.kind == PropKind::kGather);
      // Over capacity at these ratios: with a ratio LP to come, prune only when Z3 finds that
      // no ratios fit; with fixed ratios (baselines), prune now.
      if (!Fits(p.fixed, p.split)) {
        ++memory_pruned_;
        if (!s_.optimize_ratios) continue;
        const absl::StatusOr<bool> any = oracle_.AnyRatioFits(p.fixed, p.split);
        if (!any.ok() && oracle_error_.ok()) oracle_error_ = any.status();  // Run and Exhaustive return it
        if (!any.ok() || !*any) continue;
      }
      // The successor's live tensors: the current ones with this step's changes, minus the
      // tensors whose last consumer has now run; sorted by value.
      const size_t begin = live_out.size();
      const Entry* cl = live_pool_.data() + cur.live_begin;
      for (uint32_t k = 0; k < cur.live_len; ++k) live_out.push_back(cl[k]);
      for (const auto& [v, e] : p.changed) {
        bool replaced = false;
        for (size_t k = begin; k < live_out.size(); ++k) {
          if (EntryValue(live_out[k]) == v) live_out[k] = e, replaced = true;
        }
        if (!replaced) live_out.push_back(e);
      }
      size_t w = begin;
      for (size_t k = begin; k < live_out.size(); ++k) {
        if (last_use_[static_cast<size_t>(EntryValue(live_out[k]))] > cur.idx) live_out[w++] = live_out[k];
      }
      live_out.resize(w);
      std::sort(live_out.begin() + static_cast<std::ptrdiff_t>(begin), live_out.end());
      const double penalty = memory_weight_ > 0
                                 ? memory_weight_ * (MemoryFraction(p.fixed, p.split) - MemoryFraction(cur.fixed, cur.split))
                                 : 0;
      SearchNode s;
      s.idx = cur.idx + 1;
      s.parent = id;
      s.g = cur.g + p.cost + penalty;
      s.fixed = p.fixed;
      s.split = p.split;
      s.live_begin = static_cast<uint32_t>(begin);  // relative to live_out until stored
      s.live_len = static_cast<uint32_t>(w - begin);
      s.act_begin = static_cast<uint32_t>(act_pool_.size());
      s.act_len = p.actions.size;
      for (const Action& a : p.actions) act_pool_.push_back(a);
      out.push_back(s);
    }
  }
}

bool Search::Goal(const SearchNode& n) const {
  if (n.idx != static_cast<int>(g_.nodes().size())) return false;
  const ir::ValueId loss = g_.loss();
  const Entry* begin = live_pool_.data() + n.live_begin;
  for (uint32_t k = 0; k < n.live_len; ++k) {
    if (EntryValue(begin[k]) != loss) continue;
    return Has(begin[k], FormOf(Property::Reduce(loss))) || Has(begin[k], FormOf(Property::Identity(loss)));
  }
  return false;
}

uint64_t Search::Hash(int idx, const Entry* live, uint32_t len) const {
  uint64_t h = 1469598103934665603ull ^ static_cast<uint64_t>(idx);
  for (uint32_t k = 0; k < len; ++k) {
    h ^= live[k] + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 1099511628211ull;
  }
  return h;
}

instr::Program Search::Build(int id) const {
  instr::Program prog;
  prog.num_devices = n_;
  prog.ratios = {r_};
  prog.overlap = s_.overlap && n_ > 1;
  if (m_.mesh().num_nodes() >= 2) {
    for (const auto& devs : m_.mesh().nodes) prog.nodes.push_back(std::vector<int>(devs.begin(), devs.end()));
  }
  std::vector<int> path;
  for (int at = id; at >= 0; at = arena_[static_cast<size_t>(at)].parent) path.push_back(at);
  for (auto it = path.rbegin(); it != path.rend(); ++it) {
    const SearchNode& sn = arena_[static_cast<size_t>(*it)];
    for (uint32_t k = 0; k < sn.act_len; ++k) {
      const Action& a = act_pool_[sn.act_begin + k];
      Instruction in;
      in.kind = a.kind;
      in.impl = a.impl;
      in.dim = a.dim;
      in.dim2 = a.dim2;
      if (a.kind == InstrKind::kCompute) {
        in.node = a.id;
        in.rule = rules_[static_cast<size_t>(a.id)][static_cast<size_t>(a.rule)].id;
      } else {
        in.tensor = a.id;
      }
      const absl::Status st = instr::DeriveTriple(g_, in);
      HS_CHECK(st.ok(), StrCat("search built an invalid instruction: ", st.message()));
      prog.instructions.push_back(std::move(in));
    }
  }
  return prog;
}

absl::StatusOr<instr::Program> Search::Run(int64_t* expanded) {
  const auto start = std::chrono::steady_clock::now();
  Prepare();
  arena_.clear();
  live_pool_.clear();
  act_pool_.clear();
  arena_.push_back(SearchNode{});
  using Entry3 = std::tuple<double, int64_t, int>;  // f, insertion order (ties), arena index
  std::priority_queue<Entry3, std::vector<Entry3>, std::greater<>> open;
  int64_t seq = 0;
  open.push({h_[0], seq++, 0});
  std::unordered_map<uint64_t, int> head;  // key hash → newest state with it (chained by next_same)
  head.reserve(1 << 16);
  int64_t count = 0;
  std::vector<SearchNode> succ;
  std::vector<Entry> succ_live;
  const int num_nodes = static_cast<int>(g_.nodes().size());
  while (!open.empty()) {
    const int id = std::get<2>(open.top());
    open.pop();
    if (arena_[static_cast<size_t>(id)].superseded) continue;
    if (arena_[static_cast<size_t>(id)].idx == num_nodes) {
      if (!Goal(arena_[static_cast<size_t>(id)])) continue;
      if (expanded) *expanded = count;
      return Build(id);
    }
    if (++count > o_.max_states) {
      if (expanded) *expanded = count - 1;
      // OutOfRange, not ResourceExhausted: the budget, not memory, ended this search.
      return absl::OutOfRangeError(StrCat("the search expanded its budget of ", o_.max_states,
                                          " states (SynthOptions::max_states) without reaching the goal"));
    }
    if (count % 4096 == 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > o_.time_limit_s) {
      return absl::DeadlineExceededError(StrCat("synthesis exceeded the time limit of ", o_.time_limit_s,
                                                " s (a safety stop: the plan must not depend on the machine's "
                                                "speed, so none is returned); raise --time-limit"));
    }
    const SearchNode cur = arena_[static_cast<size_t>(id)];
    Successors(cur, id, succ, succ_live);
    for (SearchNode& next : succ) {
      const Entry* live = succ_live.data() + next.live_begin;
      const uint64_t h = Hash(next.idx, live, next.live_len);
      auto [it, fresh] = head.try_emplace(h, -1);
      int same = -1;
      for (int at = it->second; at >= 0; at = arena_[static_cast<size_t>(at)].next_same) {
        const SearchNode& o = arena_[static_cast<size_t>(at)];
        if (o.superseded) continue;
        if (o.idx == next.idx && o.live_len == next.live_len &&
            std::equal(live, live + next.live_len, live_pool_.data() + o.live_begin)) {
          same = at;
          break;
        }
      }
      if (same >= 0) {
        if (next.g >= arena_[static_cast<size_t>(same)].g) continue;
        arena_[static_cast<size_t>(same)].superseded = true;
      }
      next.live_begin = static_cast<uint32_t>(live_pool_.size());
      live_pool_.insert(live_pool_.end(), live, live + next.live_len);
      next.next_same = it->second;
      const double f = next.g + h_[static_cast<size_t>(next.idx)];
      arena_.push_back(next);
      it->second = static_cast<int>(arena_.size()) - 1;
      open.push({f, seq++, static_cast<int>(arena_.size()) - 1});
    }
    HS_RETURN_IF_ERROR(oracle_error_);
  }
  if (expanded) *expanded = count;
  // No step was refused for memory: the strategy's rules cover no whole program of this model.
  if (memory_pruned_ == 0) {
    return absl::ResourceExhaustedError(StrCat("no program of strategy '", s_.name,
                                               "' computes the whole model: its sharding rules leave some node "
                                               "without a rule (memory is not the cause)"));
  }
  return absl::ResourceExhaustedError("no program fits every device's memory at these ratios");
}

absl::StatusOr<double> Search::Exhaustive() {
  Prepare();
  arena_.clear();
  live_pool_.clear();
  act_pool_.clear();
  double best = std::numeric_limits<double>::infinity();
  // Depth-first over every choice; states are kept in the arena (their live words in the pool).
  std::vector<int> stack = {0};
  arena_.push_back(SearchNode{});
  std::vector<SearchNode> succ;
  std::vector<Entry> succ_live;
  while (!stack.empty()) {
    const int id = stack.back();
    stack.pop_back();
    const SearchNode cur = arena_[static_cast<size_t>(id)];
    if (Goal(cur)) best = std::min(best, cur.g);
    if (cur.idx == static_cast<int>(g_.nodes().size())) continue;
    Successors(cur, id, succ, succ_live);
    for (SearchNode& next : succ) {
      const uint32_t at = static_cast<uint32_t>(live_pool_.size());
      live_pool_.insert(live_pool_.end(), succ_live.begin() + next.live_begin,
                        succ_live.begin() + next.live_begin + next.live_len);
      next.live_begin = at;
      arena_.push_back(next);
      stack.push_back(static_cast<int>(arena_.size()) - 1);
    }
  }
  HS_RETURN_IF_ERROR(oracle_error_);
  if (!std::isfinite(best)) return absl::ResourceExhaustedError("no program");
  return best;
}

}  // namespace

absl::StatusOr<instr::Program> SearchProgram(const ir::Graph& g, const costmodel::Cluster& c,
                                             const std::vector<double>& ratios, const Strategy& s,
                                             const SynthOptions& o, int64_t* states_expanded,
                                             double gradient_sync_weight) {
  return SearchProgram(g, ClusterModel(c), ratios, s, o, states_expanded, gradient_sync_weight);
}

absl::StatusOr<instr::Program> SearchProgram(const ir::Graph& g, const ClusterModel& m,
                                             const std::vector<double>& ratios, const Strategy& s,
                                             const SynthOptions& o, int64_t* states_expanded,
                                             double gradient_sync_weight) {
  Z3Session session;
  return SearchProgramIn(&session, g, m, ratios, s, o, states_expanded, gradient_sync_weight);
}

absl::StatusOr<instr::Program> SearchProgramIn(Z3Session* session, const ir::Graph& g, const ClusterModel& m,
                                               const std::vector<double>& ratios, const Strategy& s,
                                               const SynthOptions& o, int64_t* states_expanded,
                                               double gradient_sync_weight) {
  HS_RETURN_IF_ERROR(ValidateSynthOptions(o));
  // The best-g table merges states that differ only in memory, which is fast but can drop the
  // only path that fits. When nothing fits, search again with memory priced into g, each time
  // dearer (a memory-saving pass), until a program fits.
  absl::StatusOr<instr::Program> result = absl::ResourceExhaustedError("no search ran");
  int64_t total = 0;
  const double scale = Search(g, m, ratios, s, o, gradient_sync_weight, session).lower_bound();
  for (double weight : {0.0, 0.3, 3.0, 30.0, 300.0}) {
    if (weight > 0 && !(o.memory_limits && s.memory_rows)) break;
    Search search(g, m, ratios, s, o, gradient_sync_weight, session);
    search.set_memory_weight(weight * scale);
    int64_t expanded = 0;
    result = search.Run(&expanded);
    total += expanded;
    if (!absl::IsResourceExhausted(result.status())) break;
  }
  if (states_expanded) *states_expanded = total;
  return result;
}

double ExhaustiveSearchCost(const ir::Graph& g, const costmodel::Cluster& c, const std::vector<double>& ratios,
                            const Strategy& s, const SynthOptions& o) {
  const ClusterModel m(c);
  Z3Session session;
  Search search(g, m, ratios, s, o, 1.0, &session);
  absl::StatusOr<double> cost = search.Exhaustive();
  return cost.ok() ? *cost : std::numeric_limits<double>::infinity();
}

}  // namespace hetsynth::synth
