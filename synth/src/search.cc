// A* search for the forward program at fixed ratios (see synthesize.h).
//
// Nodes are taken in graph order, so a search state is (next node, the properties held for
// every live tensor); a tensor is live from its first use until its last consumer has run. One
// step picks a compute rule for the next node and fuses in what its preconditions need:
// placements of parameters and inputs on first use and at most one collective per tensor
// (local slices are free and always allowed). g is the predicted time so far; h, the sum over
// the remaining nodes of their cheapest rule's compute time, never overestimates.
#include <algorithm>
#include <cmath>
#include <limits>
#include <chrono>
#include <map>
#include <queue>

#include "hetsynth/ir/status.h"
#include "hetsynth/synth/synthesize.h"
#include "memory_oracle.h"

namespace hetsynth::synth {
namespace {

using costmodel::Cluster;
using costmodel::Term;
using instr::CollImpl;
using instr::ComputeRule;
using instr::Instruction;
using instr::InstrKind;
using instr::PropKind;
using instr::Property;

using Forms = std::vector<Property>;  // sorted, at most two
using Live = std::map<ir::ValueId, Forms>;

struct SearchNode {
  int idx = 0;  // next graph node to run
  Live live;
  double g = 0;
  std::vector<double> memory;  // bytes per device so far, at the current ratios
  double fixed = 0;            // bytes every device holds whatever the ratios
  double split = 0;            // bytes a device holds in proportion to its ratio
  int parent = -1;
  std::vector<Instruction> actions;
};

class Search {
 public:
  Search(const ir::Graph& g, const Cluster& c, const std::vector<double>& r, const Strategy& s,
         const SynthOptions& o)
      : g_(g), c_(c), r_(r), s_(s), o_(o), n_(c.size()), oracle_(c) {}

  absl::StatusOr<instr::Program> Run(int64_t* expanded);
  // Adds weight · (peak memory fraction) to g, so that states merged by the best-g table keep
  // the leaner path; the sum over a path telescopes to weight · its final peak fraction.
  void set_memory_weight(double w) { memory_weight_ = w; }
  double lower_bound() { Prepare(); return h_[0]; }
  // The cheapest goal cost over every choice sequence (no pruning; tests only).
  absl::StatusOr<double> Exhaustive();

 private:
  double Bytes(ir::ValueId v) const { return 4.0 * static_cast<double>(ir::NumElements(g_.value(v).shape)); }
  bool RuleAllowed(ir::NodeId k, const ComputeRule& r) const;
  template <typename T>  // Partial or SearchNode
  void AddMemory(T& at, double bytes, bool split) const {
    for (int i = 0; i < n_; ++i) at.memory[static_cast<size_t>(i)] += split ? bytes * r_[static_cast<size_t>(i)] : bytes;
    (split ? at.split : at.fixed) += bytes;
  }
  bool Fits(const std::vector<double>& mem) const {
    if (!o_.memory_limits) return true;
    for (int i = 0; i < n_; ++i) {
      if (mem[static_cast<size_t>(i)] > c_.devices[static_cast<size_t>(i)].memory_bytes) return false;
    }
    return true;
  }
  double MemoryFraction(const std::vector<double>& mem) const {
    if (!o_.memory_limits) return 0;
    double worst = 0;
    for (int i = 0; i < n_; ++i) {
      worst = std::max(worst, mem[static_cast<size_t>(i)] / c_.devices[static_cast<size_t>(i)].memory_bytes);
    }
    return worst;
  }
  double Time(const Term& t) const { return costmodel::TermTime(t, r_, c_); }
  // A collective instruction with the cheaper implementation where there is a choice.
  Instruction Collective(InstrKind kind, ir::ValueId t, int dim, int dim2, double* cost) const;
  Instruction LocalSlice(ir::ValueId t, int dim) const {
    Instruction sl;
    sl.kind = InstrKind::kSlice;
    sl.tensor = t;
    sl.dim = dim;
    HS_CHECK(instr::DeriveTriple(g_, sl).ok(), "search built an invalid slice");
    return sl;
  }
  // Ways to make `q` hold given the partial successor; each appends to `out`.
  struct Partial {
    Live live;
    double cost = 0;
    std::vector<double> memory;
    std::vector<Instruction> actions;
    double fixed = 0, split = 0;
  };
  void Satisfy(const Property& q, const Partial& p, std::vector<Partial>& out) const;
  std::vector<int64_t> Key(int idx, const Live& live) const;
  void Prepare();
  std::vector<SearchNode> Successors(const SearchNode& cur, int id) const;
  bool Goal(const SearchNode& n) const;
  instr::Program Build(const std::vector<SearchNode>& arena, int id) const;

  const ir::Graph& g_;
  const Cluster& c_;
  const std::vector<double>& r_;
  const Strategy& s_;
  const SynthOptions& o_;
  const int n_;
  std::vector<int> last_use_;                       // per value: its last consumer
  std::vector<std::vector<ComputeRule>> rules_;      // per node: the allowed rules
  std::vector<std::vector<double>> rule_time_;       // per node and rule: compute time
  std::vector<double> h_;                            // heuristic: cheapest compute from node k on
  double memory_weight_ = 0;                         // seconds per unit of peak memory fraction
  mutable MemoryOracle oracle_;                      // Z3: can any ratios fit this memory?
  mutable absl::Status oracle_error_;                // its first failure, which ends the search
};

bool Search::RuleAllowed(ir::NodeId k, const ComputeRule& r) const {
  const bool is_loss = g_.node(k).output == g_.loss();
  std::vector<Property> props = r.pre;
  props.push_back(r.post);
  for (const Property& p : props) {
    const bool param = g_.value(p.tensor).kind == ir::ValueKind::kParameter;
    if (s_.only_dim0_splits) {
      if (p.kind == PropKind::kGather && p.dim != 0) return false;
      if (p.kind == PropKind::kReduce && !is_loss) return false;
      if (p.kind == PropKind::kGather && param) return false;
    }
    if (s_.inputs_replicated && p.kind == PropKind::kGather && p.dim == 0 && !param) return false;
  }
  return true;
}

Instruction Search::Collective(InstrKind kind, ir::ValueId t, int dim, int dim2, double* cost) const {
  Instruction in;
  in.kind = kind;
  in.tensor = t;
  in.dim = dim;
  in.dim2 = dim2;
  if (kind == InstrKind::kAllGather || kind == InstrKind::kReduceScatter) {
    in.impl = CollImpl::kPadded;
    const double padded = Time(costmodel::CollectiveTerm(g_, in));
    in.impl = CollImpl::kGrouped;
    const double grouped = Time(costmodel::CollectiveTerm(g_, in));
    if (padded <= grouped) in.impl = CollImpl::kPadded;
    *cost = std::min(padded, grouped);
  } else {
    *cost = Time(costmodel::CollectiveTerm(g_, in));
  }
  HS_CHECK(instr::DeriveTriple(g_, in).ok(), "search built an invalid collective");
  return in;
}

void Search::Satisfy(const Property& q, const Partial& p, std::vector<Partial>& out) const {
  const ir::ValueId v = q.tensor;
  const ir::Value& val = g_.value(v);
  auto it = p.live.find(v);
  auto push = [&](Partial next, Property got) {
    Forms& f = next.live[v];
    f.push_back(got);
    std::sort(f.begin(), f.end());
    f.erase(std::unique(f.begin(), f.end()), f.end());
    out.push_back(std::move(next));
  };
  auto place = [&](Partial next, int dim) {
    Instruction in;
    in.kind = val.kind == ir::ValueKind::kInput ? InstrKind::kPlaceInput : InstrKind::kPlaceParameter;
    in.tensor = v;
    in.dim = dim;
    HS_CHECK(instr::DeriveTriple(g_, in).ok(), "search built an invalid placement");
    next.actions.push_back(in);
    return next;
  };
  if (it == p.live.end()) {
    if (val.kind == ir::ValueKind::kActivation) return;  // consumed after its last use: impossible
    if (val.kind == ir::ValueKind::kInput) {
      if (q.kind == PropKind::kReduce) return;
      const bool replicate = q.kind == PropKind::kIdentity || s_.inputs_replicated;
      Partial next = place(p, replicate ? -1 : q.dim);
      AddMemory(next, Bytes(v), !replicate);
      if (replicate && q.kind == PropKind::kGather) {
        next.live[v] = {Property::Identity(v)};
        next.actions.push_back(LocalSlice(v, q.dim));
      }
      push(std::move(next), q);
      return;
    }
    // A parameter's first use decides its placement.
    const double state = o_.cost.parameter_state_factor * Bytes(v);
    if (q.kind == PropKind::kGather && s_.allow_sharded_params) {
      Partial next = place(p, q.dim);
      AddMemory(next, state, true);
      next.cost += Time(costmodel::OptimizerTerm(g_, v, true, o_.cost));
      push(std::move(next), q);
    }
    if (q.kind == PropKind::kIdentity && s_.allow_replicated_params) {
      Partial next = place(p, -1);
      AddMemory(next, state, false);
      next.cost += Time(costmodel::OptimizerTerm(g_, v, false, o_.cost));
      if (n_ > 1) next.cost += Time(costmodel::GradientAllReduceTerm(g_, v));
      push(std::move(next), q);
    }
    if (q.kind == PropKind::kIdentity && s_.allow_zero_params && n_ > 1) {
      // ZeRO-3: stored as slices of dim 0, all-gathered for use (the gradient reduce-scattered).
      Partial next = place(p, 0);
      AddMemory(next, state, true);  // the gathered copy is transient: freed after use
      next.cost += Time(costmodel::OptimizerTerm(g_, v, true, o_.cost));
      double cost = 0;
      next.actions.push_back(Collective(InstrKind::kAllGather, v, 0, -1, &cost));
      next.cost += cost;
      next.live[v] = {Property::Gather(v, 0)};
      push(std::move(next), q);
    }
    return;
  }
  const Forms& have = it->second;
  if (std::find(have.begin(), have.end(), q) != have.end()) {
    out.push_back(p);
    return;
  }
  const bool has_identity = std::find(have.begin(), have.end(), Property::Identity(v)) != have.end();
  if (q.kind == PropKind::kGather && has_identity) {  // a local slice: free, always allowed
    Partial next = p;
    next.actions.push_back(LocalSlice(v, q.dim));
    push(std::move(next), q);
    return;
  }
  if (have.size() != 1) return;  // communicated once already
  const Property& f = have[0];
  double cost = 0;
  Instruction in;
  bool split_result = false;
  if (f.kind == PropKind::kGather && q.kind == PropKind::kIdentity) {
    in = Collective(InstrKind::kAllGather, v, f.dim, -1, &cost);
  } else if (f.kind == PropKind::kGather && q.kind == PropKind::kGather) {
    in = Collective(InstrKind::kAllToAll, v, f.dim, q.dim, &cost);
    split_result = true;
  } else if (f.kind == PropKind::kReduce && q.kind == PropKind::kIdentity) {
    in = Collective(InstrKind::kAllReduce, v, -1, -1, &cost);
  } else if (f.kind == PropKind::kReduce && q.kind == PropKind::kGather) {
    in = Collective(InstrKind::kReduceScatter, v, q.dim, -1, &cost);
    split_result = true;
  } else {
    return;  // Identity/Gather -> Reduce has no instruction
  }
  Partial next = p;
  next.cost += cost;
  next.actions.push_back(in);
  AddMemory(next, Bytes(v), split_result);
  push(std::move(next), q);
}

std::vector<int64_t> Search::Key(int idx, const Live& live) const {
  std::vector<int64_t> key = {idx};
  for (const auto& [v, forms] : live) {
    key.push_back(v);
    for (const Property& p : forms) key.push_back(static_cast<int64_t>(p.kind) * 64 + p.dim + 1);
    key.push_back(-1);
  }
  return key;
}

void Search::Prepare() {
  const int num_nodes = static_cast<int>(g_.nodes().size());
  last_use_.assign(g_.values().size(), -1);
  for (int k = 0; k < num_nodes; ++k) {
    for (ir::ValueId v : g_.node(k).inputs) last_use_[static_cast<size_t>(v)] = k;
  }
  last_use_[static_cast<size_t>(g_.loss())] = num_nodes;
  // Allowed rules, their compute time, and the heuristic's suffix sums.
  rules_.assign(static_cast<size_t>(num_nodes), {});
  rule_time_.assign(static_cast<size_t>(num_nodes), {});
  h_.assign(static_cast<size_t>(num_nodes) + 1, 0.0);
  for (int k = 0; k < num_nodes; ++k) {
    for (ComputeRule& r : instr::ShardingRules(g_, k)) {
      if (!RuleAllowed(k, r)) continue;
      rule_time_[static_cast<size_t>(k)].push_back(Time(costmodel::ComputeTerm(g_, k, r, c_)));
      rules_[static_cast<size_t>(k)].push_back(std::move(r));
    }
  }
  for (int k = num_nodes - 1; k >= 0; --k) {
    const auto& t = rule_time_[static_cast<size_t>(k)];
    h_[static_cast<size_t>(k)] = h_[static_cast<size_t>(k) + 1] + (t.empty() ? 0.0 : *std::min_element(t.begin(), t.end()));
  }
}

std::vector<SearchNode> Search::Successors(const SearchNode& cur, int id) const {
  std::vector<SearchNode> out;
  const ir::Node& node = g_.node(cur.idx);
  const auto& node_rules = rules_[static_cast<size_t>(cur.idx)];
  for (size_t ri = 0; ri < node_rules.size(); ++ri) {
    const ComputeRule& rule = node_rules[ri];
    std::vector<Partial> partials = {
        Partial{cur.live, rule_time_[static_cast<size_t>(cur.idx)][ri], cur.memory, {}, cur.fixed, cur.split}};
    for (const Property& q : rule.pre) {
      std::vector<Partial> next;
      for (const Partial& p : partials) Satisfy(q, p, next);
      partials = std::move(next);
    }
    for (Partial& p : partials) {
      Instruction in;
      in.kind = InstrKind::kCompute;
      in.node = cur.idx;
      in.rule = rule.id;
      in.pre = rule.pre;
      in.post = {rule.post};
      p.actions.push_back(in);
      p.live[node.output] = {rule.post};
      AddMemory(p, Bytes(node.output), rule.post.kind == PropKind::kGather);
      for (auto it = p.live.begin(); it != p.live.end();) {
        it = last_use_[static_cast<size_t>(it->first)] <= cur.idx ? p.live.erase(it) : std::next(it);
      }
      // Over capacity at these ratios: with a ratio LP to come, prune only when Z3 finds that
      // no ratios fit; with fixed ratios (baselines), prune now.
      if (!Fits(p.memory)) {
        if (!s_.optimize_ratios) continue;
        const absl::StatusOr<bool> any = oracle_.AnyRatioFits(p.fixed, p.split);
        if (!any.ok() && oracle_error_.ok()) oracle_error_ = any.status();  // Run and Exhaustive return it
        if (!any.ok() || !*any) continue;
      }
      const double penalty = memory_weight_ > 0 ? memory_weight_ * (MemoryFraction(p.memory) - MemoryFraction(cur.memory)) : 0;
      out.push_back(SearchNode{cur.idx + 1, std::move(p.live), cur.g + p.cost + penalty, std::move(p.memory), p.fixed,
                               p.split, id, std::move(p.actions)});
    }
  }
  return out;
}

bool Search::Goal(const SearchNode& n) const {
  if (n.idx != static_cast<int>(g_.nodes().size())) return false;
  const Forms& loss = n.live.at(g_.loss());
  return std::find(loss.begin(), loss.end(), Property::Reduce(g_.loss())) != loss.end() ||
         std::find(loss.begin(), loss.end(), Property::Identity(g_.loss())) != loss.end();
}

instr::Program Search::Build(const std::vector<SearchNode>& arena, int id) const {
  instr::Program prog;
  prog.num_devices = n_;
  prog.ratios = {r_};
  std::vector<const SearchNode*> path;
  for (int at = id; at >= 0; at = arena[static_cast<size_t>(at)].parent) path.push_back(&arena[static_cast<size_t>(at)]);
  for (auto it = path.rbegin(); it != path.rend(); ++it) {
    for (const Instruction& in : (*it)->actions) prog.instructions.push_back(in);
  }
  return prog;
}

absl::StatusOr<instr::Program> Search::Run(int64_t* expanded) {
  const auto start = std::chrono::steady_clock::now();
  Prepare();
  std::vector<SearchNode> arena;
  arena.push_back(SearchNode{0, {}, 0.0, std::vector<double>(static_cast<size_t>(n_), 0.0), 0, 0, -1, {}});
  using Entry = std::tuple<double, int64_t, int>;  // f, insertion order (ties), arena index
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> open;
  int64_t seq = 0;
  open.push({h_[0], seq++, 0});
  std::map<std::vector<int64_t>, double> best;  // the best g per state
  int64_t count = 0;
  while (!open.empty()) {
    const int id = std::get<2>(open.top());
    open.pop();
    if (arena[static_cast<size_t>(id)].idx == static_cast<int>(g_.nodes().size())) {
      if (!Goal(arena[static_cast<size_t>(id)])) continue;
      if (expanded) *expanded = count;
      return Build(arena, id);
    }
    if (++count % 1024 == 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > o_.time_limit_s) {
      return absl::DeadlineExceededError(StrCat("search exceeded the time limit of ", o_.time_limit_s, " s after ",
                                                count, " states; raise --time-limit"));
    }
    for (SearchNode& next : Successors(arena[static_cast<size_t>(id)], id)) {
      auto [bit, fresh] = best.try_emplace(Key(next.idx, next.live), next.g);
      if (!fresh) {
        if (next.g >= bit->second) continue;
        bit->second = next.g;
      }
      const double f = next.g + h_[static_cast<size_t>(next.idx)];
      arena.push_back(std::move(next));
      open.push({f, seq++, static_cast<int>(arena.size()) - 1});
    }
    HS_RETURN_IF_ERROR(oracle_error_);
  }
  if (expanded) *expanded = count;
  return absl::ResourceExhaustedError("no program fits every device's memory at these ratios");
}

absl::StatusOr<double> Search::Exhaustive() {
  Prepare();
  double best = std::numeric_limits<double>::infinity();
  std::vector<SearchNode> stack;
  stack.push_back(SearchNode{0, {}, 0.0, std::vector<double>(static_cast<size_t>(n_), 0.0), 0, 0, -1, {}});
  while (!stack.empty()) {
    SearchNode cur = std::move(stack.back());
    stack.pop_back();
    if (Goal(cur)) best = std::min(best, cur.g);
    if (cur.idx == static_cast<int>(g_.nodes().size())) continue;
    for (SearchNode& next : Successors(cur, -1)) stack.push_back(std::move(next));
  }
  HS_RETURN_IF_ERROR(oracle_error_);
  if (!std::isfinite(best)) return absl::ResourceExhaustedError("no program");
  return best;
}

}  // namespace

absl::StatusOr<instr::Program> SearchProgram(const ir::Graph& g, const costmodel::Cluster& c,
                                             const std::vector<double>& ratios, const Strategy& s,
                                             const SynthOptions& o, int64_t* states_expanded) {
  HS_RETURN_IF_ERROR(ValidateSynthOptions(o));
  // The best-g table merges states that differ only in memory, which is fast but can drop the
  // only path that fits. When nothing fits, search again with memory priced into g, each time
  // dearer (a memory-saving pass), until a program fits.
  absl::StatusOr<instr::Program> result = absl::ResourceExhaustedError("no search ran");
  int64_t total = 0;
  const double scale = Search(g, c, ratios, s, o).lower_bound();
  for (double weight : {0.0, 0.3, 3.0, 30.0, 300.0}) {
    if (weight > 0 && !o.memory_limits) break;
    Search search(g, c, ratios, s, o);
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
  Search search(g, c, ratios, s, o);
  absl::StatusOr<double> cost = search.Exhaustive();
  return cost.ok() ? *cost : std::numeric_limits<double>::infinity();
}

}  // namespace hetsynth::synth
