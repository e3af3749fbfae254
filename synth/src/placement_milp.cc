// The exact placement MILP (docs/inference.md, "The MILP"), solved with Z3 by bisecting the
// makespan bound between a proven lower bound and the best schedule found.
//
// Variables: x[i][m] (coarse node i on modelled device m), start s[i], a transfer delay per
// edge with "same device" / "same cluster node" literals, an order literal per pair of coarse
// nodes that precedence leaves unordered, and the makespan T. Rows: each node on exactly one
// device; s[to] >= s[from] + dur[from] + delay for every edge, delay >= the link's α + bytes/β
// when the ends differ; unordered pairs on one device do not overlap; memory per device (integer
// units, demand rounded up and capacity down, so an accepted placement always fits); T >= every
// finish. Interchangeable cluster nodes (same intra link and devices) and interchangeable
// devices (same cluster node, capacity and time on every coarse node) beyond the node count are
// dropped, and the rest are used in order (symmetry breaking): device
// k of a group only hosts node i if device k-1 hosts a node before i. Neither changes the optimum.
#include <z3++.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <numeric>

#include "hetsynth/base/status.h"
#include "hetsynth/synth/placement.h"
#include "z3_rational.h"

namespace hetsynth::synth {
namespace {

double Value(const z3::model& m, const z3::expr& e) {
  return std::stod(m.eval(e, true).get_decimal_string(17));
}

constexpr double kScale = 1e6;  // the model's time unit: microseconds

// Siblings: coarse nodes with the same predecessors and the same successors (q/k/v projections
// of a block, parallel branches). None of them starts before every predecessor finishes, and
// no successor starts before all of them finish, so the shortest time to run them all on the
// devices separates the two. With at most one predecessor a and one successor b, transfers
// count too: for every device pair (da, db) of a and b (up to symmetry: `representatives`), a device d running some siblings takes
// at least [its cheapest transfer in from da] + its load + [its cheapest transfer out to db]
// (the brackets only when d differs); the bound is the minimum over (da, db) and over
// assignments of the maximum over devices — memory ignored, a relaxation. Exact branch and
// bound (devices equivalent for this (da, db) tried once while empty); past the search budget,
// the weaker max over siblings of its fastest time.
double SiblingBound(const PlacementProblem& p, std::vector<int> jobs, const std::vector<int>& devices,
                    const std::vector<int>& representatives, const std::vector<int>& preds, const std::vector<int>& succs,
                    const std::map<std::pair<int, int>, double>& edge_bytes) {
  auto fastest = [&](int i) {
    double t = std::numeric_limits<double>::infinity();
    for (int d : devices) t = std::min(t, p.nodes[i].seconds[d]);
    return t;
  };
  double simple = 0;
  for (int i : jobs) simple = std::max(simple, fastest(i));
  std::sort(jobs.begin(), jobs.end(), [&](int a, int b) { return fastest(a) > fastest(b); });
  const int nd = static_cast<int>(devices.size()), nj = static_cast<int>(jobs.size());
  const bool with_comm = preds.size() <= 1 && succs.size() <= 1;
  auto bytes = [&](int from, int to) {
    const auto it = edge_bytes.find({from, to});
    return it == edge_bytes.end() ? 0.0 : it->second;
  };
  int64_t budget = 2000000;
  bool exhausted = false;
  double overall = std::numeric_limits<double>::infinity();
  // For each (da, db): -1 = no predecessor / successor (or transfers ignored).
  std::vector<int> das = {-1}, dbs = {-1};
  if (with_comm && !preds.empty()) das = representatives;
  if (with_comm && !succs.empty()) dbs = representatives;
  std::vector<double> load(nd), in(nd), out(nd);
  std::vector<std::vector<double>> tin(nj, std::vector<double>(nd, 0)), tout(nj, std::vector<double>(nd, 0));
  for (int da : das) {
    for (int db : dbs) {
      for (int k = 0; k < nj; ++k) {
        for (int a = 0; a < nd; ++a) {
          tin[k][a] = da < 0 ? 0 : p.Transfer(da, devices[a], bytes(preds[0], jobs[k]));
          tout[k][a] = db < 0 ? 0 : p.Transfer(devices[a], db, bytes(jobs[k], succs[0]));
        }
      }
      std::vector<int> twin(nd, -1);
      for (int a = 0; a < nd; ++a) {
        for (int b = 0; b < a && twin[a] < 0; ++b) {
          bool same = true;  // equal times, transfers in and transfers out: interchangeable here
          for (int k = 0; k < nj && same; ++k) {
            same = p.nodes[jobs[k]].seconds[devices[a]] == p.nodes[jobs[k]].seconds[devices[b]] && tin[k][a] == tin[k][b] &&
                   tout[k][a] == tout[k][b];
          }
          if (same) twin[a] = b;
        }
      }
      std::fill(load.begin(), load.end(), 0);
      std::fill(in.begin(), in.end(), std::numeric_limits<double>::infinity());
      std::fill(out.begin(), out.end(), std::numeric_limits<double>::infinity());
      double best = overall;  // only improvements on the best over earlier (da, db) matter
      std::function<void(int, double)> go = [&](int k, double cur) {
        if (cur >= best) return;
        if (k == nj) {
          best = cur;
          return;
        }
        if (--budget < 0) {
          exhausted = true;
          return;
        }
        for (int a = 0; a < nd; ++a) {
          if (twin[a] >= 0 && load[a] == 0 && load[twin[a]] == 0) continue;
          const double l0 = load[a], i0 = in[a], o0 = out[a];
          load[a] += p.nodes[jobs[k]].seconds[devices[a]];
          in[a] = std::min(in[a], tin[k][a]);
          out[a] = std::min(out[a], tout[k][a]);
          go(k + 1, std::max(cur, in[a] + load[a] + out[a]));
          load[a] = l0, in[a] = i0, out[a] = o0;
        }
      };
      go(0, 0);
      if (exhausted) return simple;
      overall = std::min(overall, best);
    }
  }
  return std::max(simple, overall);
}

struct SiblingSet {
  std::vector<int> preds, succs, members;
  double bound = 0;  // seconds
};

}  // namespace

absl::StatusOr<MilpResult> SolvePlacementMilp(const PlacementProblem& p, const Schedule* seed, const MilpOptions& o) {
  if (!(o.time_limit_s > 0) || !std::isfinite(o.time_limit_s)) {
    return absl::InvalidArgumentError(StrCat("MILP time limit ", o.time_limit_s, " s; expected finite seconds > 0"));
  }
  if (!(o.gap_tolerance >= 0 && o.gap_tolerance < 1)) {
    return absl::InvalidArgumentError(StrCat("MILP gap tolerance ", o.gap_tolerance, "; expected a number in [0, 1)"));
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  const int n = static_cast<int>(p.nodes.size()), nd = p.num_devices();
  HS_CHECK(n > 0 && nd > 0, "SolvePlacementMilp: empty problem");

  // Obvious infeasibility, said in one line.
  const double largest = *std::max_element(p.capacity_bytes.begin(), p.capacity_bytes.end());
  double total_need = 0;
  for (const CoarseNode& c : p.nodes) {
    total_need += c.memory_bytes();
    if (c.memory_bytes() > largest) {
      return absl::ResourceExhaustedError(StrCat("coarse node '", c.name, "' needs ", c.memory_bytes() / 1e9,
                                                 " GB; the largest device holds ", largest / 1e9, " GB"));
    }
  }
  const double total_cap = std::accumulate(p.capacity_bytes.begin(), p.capacity_bytes.end(), 0.0);
  if (total_need > total_cap) {
    return absl::ResourceExhaustedError(StrCat("the model needs ", total_need / 1e9, " GB; all devices together hold ",
                                               total_cap / 1e9, " GB"));
  }

  // Interchangeable cluster nodes: the same intra link and the same devices (capacity and
  // seconds of every coarse node); the network between nodes is one link, so a placement uses
  // at most n nodes of each kind and the first n serve. Then interchangeable devices: equal
  // cluster node, capacity and seconds of every coarse node.
  auto device_key = [&](int d) {
    std::vector<double> key = {p.capacity_bytes[d]};
    for (const CoarseNode& c : p.nodes) key.push_back(c.seconds[d]);
    return key;
  };
  std::vector<char> kept_node(p.node_link.size(), 0);
  std::vector<int> node_kind(p.node_link.size(), -1);  // index of its signature
  {
    std::vector<std::vector<std::vector<double>>> members(p.node_link.size());
    for (int d = 0; d < nd; ++d) members[p.device_node[d]].push_back(device_key(d));
    std::map<std::vector<std::vector<double>>, int> seen;  // signature → nodes kept so far
    std::map<std::vector<std::vector<double>>, int> kind;
    for (size_t k = 0; k < p.node_link.size(); ++k) {
      if (members[k].empty()) continue;
      std::sort(members[k].begin(), members[k].end());
      members[k].push_back({p.node_link[k].latency, p.node_link[k].bandwidth});
      if (!kind.count(members[k])) kind[members[k]] = static_cast<int>(kind.size());
      node_kind[k] = kind[members[k]];
      if (seen[members[k]]++ < n) kept_node[k] = 1;
    }
  }
  std::map<std::vector<double>, std::vector<int>> by_key;
  for (int d = 0; d < nd; ++d) {
    if (!kept_node[p.device_node[d]]) continue;
    std::vector<double> key = device_key(d);
    key.insert(key.begin(), static_cast<double>(p.device_node[d]));
    by_key[key].push_back(d);
  }
  std::vector<int> modelled;                   // device ids, ascending
  std::vector<std::vector<int>> sym_groups;    // indices into `modelled`, in order of use
  {
    std::vector<std::vector<int>> groups;
    for (auto& [key, devs] : by_key) {
      if (static_cast<int>(devs.size()) > n) devs.resize(n);
      groups.push_back(devs);
      for (int d : devs) modelled.push_back(d);
    }
    std::sort(modelled.begin(), modelled.end());
    for (const auto& devs : groups) {
      std::vector<int> idx;
      for (int d : devs) idx.push_back(static_cast<int>(std::lower_bound(modelled.begin(), modelled.end(), d) - modelled.begin()));
      if (idx.size() > 1) sym_groups.push_back(idx);
    }
  }
  const int nm = static_cast<int>(modelled.size());

  // Memory unit: a billionth of the largest capacity, so that every capacity fits an int.
  const double unit = largest / 1e9;

  // Precedence closure: reach[i][j] when j depends on i.
  std::vector<std::vector<char>> reach(n, std::vector<char>(n, 0));
  std::vector<std::vector<int>> preds(n);
  for (const CoarseEdge& e : p.edges) preds[e.to].push_back(e.from);
  for (int j = 0; j < n; ++j) {
    for (int i : preds[j]) {
      reach[i][j] = 1;
      for (int k = 0; k < i; ++k) {
        if (reach[k][i]) reach[k][j] = 1;
      }
    }
  }
  // Sibling sets (same predecessors, same successors; at least two members).
  std::vector<std::vector<int>> succs(n);
  for (const CoarseEdge& e : p.edges) succs[e.from].push_back(e.to);
  // Where the fork and join of a sibling set may sit, up to symmetry: the first two kept nodes of
  // each kind, in each the first two devices of each kind.
  std::vector<int> representatives;
  {
    std::map<int, int> nodes_of_kind;
    std::map<std::pair<int, std::vector<double>>, int> per_node_key;
    std::vector<int> node_rank(p.node_link.size(), -1);
    for (size_t k = 0; k < p.node_link.size(); ++k) {
      if (node_kind[k] >= 0 && kept_node[k]) node_rank[k] = nodes_of_kind[node_kind[k]]++;
    }
    for (int d : modelled) {
      const int k = p.device_node[d];
      if (node_rank[k] >= 2) continue;
      if (per_node_key[{k, device_key(d)}]++ < 2) representatives.push_back(d);
    }
  }
  std::map<std::pair<int, int>, double> edge_bytes;
  for (const CoarseEdge& e : p.edges) edge_bytes[{e.from, e.to}] += e.bytes;
  std::vector<SiblingSet> siblings;
  {
    std::map<std::pair<std::vector<int>, std::vector<int>>, std::vector<int>> by_ends;
    for (int i = 0; i < n; ++i) {
      std::vector<int> a = preds[i], b = succs[i];
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      by_ends[{a, b}].push_back(i);
    }
    for (auto& [ends, members] : by_ends) {
      if (members.size() < 2) continue;
      SiblingSet ss{ends.first, ends.second, members, 0};
      ss.bound = SiblingBound(p, members, modelled, representatives, ss.preds, ss.succs, edge_bytes);
      siblings.push_back(std::move(ss));
    }
  }
  // Earliest start and latest "tail" of each node in the relaxation (each node on its fastest
  // device, transfers free, sibling sets taking at least their bound): valid lower bounds.
  std::vector<double> fastest(n), head(n, 0), tail(n, 0);
  for (int i = 0; i < n; ++i) fastest[i] = *std::min_element(p.nodes[i].seconds.begin(), p.nodes[i].seconds.end());
  std::vector<std::vector<const SiblingSet*>> sib_into(n), sib_out(n);
  for (const SiblingSet& ss : siblings) {
    for (int b : ss.succs) sib_into[b].push_back(&ss);
    for (int a : ss.preds) sib_out[a].push_back(&ss);
  }
  for (int i = 0; i < n; ++i) {
    for (int k : preds[i]) head[i] = std::max(head[i], head[k] + fastest[k]);
    for (const SiblingSet* ss : sib_into[i]) {
      double ready = 0;
      for (int a : ss->preds) ready = std::max(ready, head[a] + fastest[a]);
      head[i] = std::max(head[i], ready + ss->bound);
    }
  }
  for (int i = n - 1; i >= 0; --i) {
    for (int k : succs[i]) tail[i] = std::max(tail[i], fastest[k] + tail[k]);
    for (const SiblingSet* ss : sib_out[i]) {
      double after = 0;
      for (int b : ss->succs) after = std::max(after, fastest[b] + tail[b]);
      tail[i] = std::max(tail[i], ss->bound + after);
    }
  }
  double lb0 = 0;
  for (int i = 0; i < n; ++i) lb0 = std::max(lb0, head[i] + fastest[i] + tail[i]);
  for (const SiblingSet& ss : siblings) {
    if (!ss.preds.empty() || !ss.succs.empty()) continue;
    lb0 = std::max(lb0, ss.bound);
  }

  MilpResult res;
  res.devices_modelled = nm;
  double hi = std::numeric_limits<double>::infinity(), lo = lb0;
  bool have = false;
  if (seed != nullptr && static_cast<int>(seed->device.size()) == n && CheckMemory(p, seed->device).ok()) {
    res.schedule = *seed;
    hi = seed->latency;
    have = true;
  }

  try {
    z3::context ctx;
    z3::solver s(ctx);
    std::vector<std::vector<z3::expr>> x(n);
    std::vector<z3::expr> st, dur, fin;
    const z3::expr T = ctx.real_const("T");
    int bools = 0;
    for (int i = 0; i < n; ++i) {
      z3::expr_vector row(ctx);
      for (int m = 0; m < nm; ++m) {
        const int d = modelled[m];
        if (p.nodes[i].memory_bytes() > p.capacity_bytes[d]) {
          x[i].push_back(ctx.bool_val(false));
        } else {
          x[i].push_back(ctx.bool_const(StrCat("x_", i, "_", m).c_str()));
          row.push_back(x[i].back());
          ++bools;
        }
      }
      s.add(z3::mk_or(row));
      s.add(z3::atmost(row, 1));
      st.push_back(ctx.real_const(StrCat("s_", i).c_str()));
      dur.push_back(ctx.real_const(StrCat("d_", i).c_str()));
      s.add(st[i] >= 0);
      for (int m = 0; m < nm; ++m) {
        if (!x[i][m].is_const() || x[i][m].is_false()) continue;
        s.add(z3::implies(x[i][m], dur[i] == Q(ctx, p.nodes[i].seconds[modelled[m]] * kScale)));
      }
      s.add(dur[i] >= Q(ctx, fastest[i] * kScale * (1 - 1e-6)));
      fin.push_back(st[i] + dur[i]);
      s.add(T >= fin[i]);
      s.add(st[i] >= Q(ctx, head[i] * kScale * (1 - 1e-6)));
      s.add(T >= fin[i] + Q(ctx, tail[i] * kScale * (1 - 1e-6)));
    }
    s.add(T >= Q(ctx, lb0 * kScale * (1 - 1e-6)));

    // Cluster nodes present among the modelled devices; z[i][k]: node i on cluster node k.
    std::vector<int> cnodes;
    for (int d : modelled) cnodes.push_back(p.device_node[d]);
    std::sort(cnodes.begin(), cnodes.end());
    cnodes.erase(std::unique(cnodes.begin(), cnodes.end()), cnodes.end());
    const bool multi_node = cnodes.size() > 1;
    std::vector<std::vector<z3::expr>> z(n);
    if (multi_node) {
      for (int i = 0; i < n; ++i) {
        for (size_t k = 0; k < cnodes.size(); ++k) {
          z3::expr_vector on(ctx);
          for (int m = 0; m < nm; ++m) {
            if (p.device_node[modelled[m]] == cnodes[k]) on.push_back(x[i][m]);
          }
          z[i].push_back(ctx.bool_const(StrCat("z_", i, "_", k).c_str()));
          s.add(z[i][k] == z3::mk_or(on));
        }
      }
    }
    for (size_t ei = 0; ei < p.edges.size(); ++ei) {
      const CoarseEdge& e = p.edges[ei];
      const z3::expr delay = ctx.real_const(StrCat("c_", ei).c_str());
      const z3::expr same = ctx.bool_const(StrCat("same_", ei).c_str());
      ++bools;
      s.add(delay >= 0);
      s.add(st[e.to] >= fin[e.from] + delay);
      for (int m = 0; m < nm; ++m) s.add(z3::implies(same && x[e.from][m], x[e.to][m]));
      z3::expr same_node = ctx.bool_val(true);
      if (multi_node) {
        same_node = ctx.bool_const(StrCat("sn_", ei).c_str());
        ++bools;
        s.add(z3::implies(same, same_node));
        for (size_t k = 0; k < cnodes.size(); ++k) s.add(z3::implies(same_node && z[e.from][k], z[e.to][k]));
        const double inter = p.inter_node.latency + e.bytes / p.inter_node.bandwidth;
        s.add(z3::implies(!same_node, delay >= Q(ctx, inter * kScale)));
      }
      for (size_t k = 0; k < cnodes.size(); ++k) {
        const costmodel::Link& l = p.node_link[cnodes[k]];
        const double intra = l.latency + e.bytes / l.bandwidth;
        const z3::expr on_k = multi_node ? z[e.from][k] : ctx.bool_val(true);
        s.add(z3::implies(!same && same_node && on_k, delay >= Q(ctx, intra * kScale)));
      }
    }
    // Sibling cuts: every successor waits for every predecessor plus the siblings' bound.
    for (const SiblingSet& ss : siblings) {
      const z3::expr gap = Q(ctx, ss.bound * kScale * (1 - 1e-6));
      for (int b : ss.succs) {
        if (ss.preds.empty()) s.add(st[b] >= gap);
        for (int a : ss.preds) s.add(st[b] >= fin[a] + gap);
      }
      if (ss.succs.empty()) {
        for (int a : ss.preds) s.add(T >= fin[a] + gap);
      }
    }
    // Unordered pairs sharing a device do not overlap.
    for (int i = 0; i < n; ++i) {
      for (int j = i + 1; j < n; ++j) {
        if (reach[i][j] || reach[j][i]) continue;
        const z3::expr before = ctx.bool_const(StrCat("o_", i, "_", j).c_str());
        ++bools;
        for (int m = 0; m < nm; ++m) {
          if (x[i][m].is_false() || x[j][m].is_false()) continue;
          s.add(z3::implies(x[i][m] && x[j][m] && before, st[j] >= fin[i]));
          s.add(z3::implies(x[i][m] && x[j][m] && !before, st[i] >= fin[j]));
        }
      }
    }
    // Memory, in integer units (demand up, capacity down).
    for (int m = 0; m < nm; ++m) {
      z3::expr_vector lits(ctx);
      std::vector<int> coeffs;
      for (int i = 0; i < n; ++i) {
        if (x[i][m].is_false()) continue;
        lits.push_back(x[i][m]);
        coeffs.push_back(static_cast<int>(std::ceil(p.nodes[i].memory_bytes() / unit)));
      }
      if (lits.empty()) continue;
      s.add(z3::pble(lits, coeffs.data(), static_cast<int>(std::floor(p.capacity_bytes[modelled[m]] / unit))));
    }
    // Symmetry breaking over interchangeable devices: used in order of first coarse node.
    for (const std::vector<int>& grp : sym_groups) {
      std::vector<std::vector<z3::expr>> used(grp.size());  // used[k][i]: device grp[k] hosts a node <= i
      for (size_t k = 0; k < grp.size(); ++k) {
        for (int i = 0; i < n; ++i) {
          used[k].push_back(ctx.bool_const(StrCat("u_", grp[k], "_", i).c_str()));
          s.add(used[k][i] == (i == 0 ? x[0][grp[k]] : (used[k][i - 1] || x[i][grp[k]])));
          if (k > 0) s.add(z3::implies(x[i][grp[k]], i == 0 ? ctx.bool_val(false) : used[k - 1][i - 1]));
        }
      }
    }
    res.variables = bools;

    auto extract = [&](const z3::model& mdl) {
      std::vector<int> device(n, 0);
      std::vector<std::pair<double, int>> by_start;
      for (int i = 0; i < n; ++i) {
        for (int m = 0; m < nm; ++m) {
          if (mdl.eval(x[i][m], true).is_true()) device[i] = modelled[m];
        }
        by_start.push_back({Value(mdl, st[i]), i});
      }
      std::sort(by_start.begin(), by_start.end());
      std::vector<CoarseId> order;
      for (const auto& [t, i] : by_start) order.push_back(i);
      return Evaluate(p, device, order);
    };

    // The bound asked for cuts `cut` of the gap: a half (bisection) while Z3 answers; when a
    // call runs out of its share of the time, a quarter of that (an easier question: a better
    // placement than the best by less) until the time limit.
    double cut = 0.5;
    for (int iter = 0;; ++iter) {
      if (have && (hi - lo) <= o.gap_tolerance * hi) break;
      const double remaining = o.time_limit_s - elapsed();
      if (remaining <= 0.05 || cut < 1e-3) {
        res.timed_out = true;
        break;
      }
      z3::params prm(ctx);
      const double share = have ? std::max(std::min(remaining, 1.0), remaining / 3) : remaining;
      prm.set("timeout", static_cast<unsigned>(std::max(1.0, share * 1000)));
      s.set(prm);
      z3::expr_vector assume(ctx);
      double target = std::numeric_limits<double>::infinity();
      if (have) {
        target = std::max(lo, hi - cut * (hi - lo));
        const z3::expr b = ctx.bool_const(StrCat("bound_", iter).c_str());
        s.add(z3::implies(b, T <= Q(ctx, target * kScale)));
        assume.push_back(b);
      }
      ++res.solver_calls;
      const z3::check_result r = s.check(assume);
      if (r == z3::sat) {
        Schedule cand = extract(s.get_model());
        if (!CheckMemory(p, cand.device).ok()) {
          return absl::InternalError("placement MILP: the solver's placement exceeds a device's memory");
        }
        if (!have || cand.latency < hi) {
          res.schedule = std::move(cand);
          hi = res.schedule.latency;
          have = true;
        } else {
          break;  // only 7-digit rounding of the times separates the bound from the best schedule
        }
      } else if (r == z3::unsat) {
        if (!have) return absl::ResourceExhaustedError("no placement of the coarse nodes fits the devices' memory");
        lo = target;
      } else if (have) {
        cut /= 4;
      } else {
        res.timed_out = true;
        break;
      }
    }
  } catch (const z3::exception& e) {
    return absl::InternalError(StrCat("z3: placement MILP failed (", __FILE__, ":", __LINE__, "): ", e.msg()));
  }
  if (!have) {
    return absl::DeadlineExceededError(StrCat("the placement MILP found no placement within its time limit of ",
                                              o.time_limit_s, " s; raise --time-limit"));
  }
  res.lower_bound = std::min(lo, res.schedule.latency);
  res.gap = res.schedule.latency > 0 ? (res.schedule.latency - res.lower_bound) / res.schedule.latency : 0;
  res.optimal = res.gap <= o.gap_tolerance;
  res.solve_seconds = elapsed();
  return res;
}

}  // namespace hetsynth::synth
