// Hierarchical collectives (mesh_collectives.h). Notation as in the topology spec: N nodes,
// node j has k_j devices from world rank first(j); P_j is node j's piece of a tensor (the
// concatenation of its devices' pieces), L_j its length, F_j its offset in the whole; "the m-th
// of k even sub-chunks" of a length L is [L·m/k, L·(m+1)/k).
//
// Cross-node phases are one world AllToAllV each (Exchange): every rank lists the segments it
// sends and receives, per peer in an order both sides derive from the same arguments, so the
// packed buffers line up without any count exchange of our own.
#include "hetsynth/runtime/mesh_collectives.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm_common.h"

namespace hetsynth::runtime {

using comm_internal::CheckCounts;
using comm_internal::HashCounts;
using comm_internal::Join;
using comm_internal::Overlap;

absl::StatusOr<Mesh> Mesh::FromSizes(const std::vector<int>& sizes) {
  if (sizes.empty()) return absl::InvalidArgumentError("mesh: no nodes; expected at least one node of >= 1 rank");
  Mesh m;
  m.first_.push_back(0);
  for (size_t j = 0; j < sizes.size(); ++j) {
    if (sizes[j] < 1) {
      return absl::InvalidArgumentError(StrCat("mesh: node ", j, " has ", sizes[j], " ranks; expected >= 1"));
    }
    m.first_.push_back(m.first_.back() + sizes[j]);
  }
  m.sizes_ = sizes;
  return m;
}

absl::StatusOr<Mesh> Mesh::FromNodes(const std::vector<std::vector<int>>& nodes) {
  std::vector<int> sizes;
  int next = 0;
  for (size_t j = 0; j < nodes.size(); ++j) {
    for (int r : nodes[j]) {
      if (r != next) {
        return absl::InvalidArgumentError(
            StrCat("mesh: node ", j, " lists rank ", r, " where rank ", next,
                   " was expected; ranks must be node-major (node 0's ranks first, each node's consecutive)"));
      }
      ++next;
    }
    sizes.push_back(static_cast<int>(nodes[j].size()));
  }
  return FromSizes(sizes);
}

int Mesh::node_of(int rank) const {
  return static_cast<int>(std::upper_bound(first_.begin(), first_.end(), rank) - first_.begin()) - 1;
}

std::string Mesh::ToString() const {
  std::string s;
  for (size_t j = 0; j < sizes_.size(); ++j) s += StrCat(j ? "+" : "", sizes_[j]);
  return s;
}

absl::StatusOr<std::unique_ptr<Communicator>> SplitByNode(Communicator& world, const Mesh& mesh) {
  // Every rank calls Split, even with a wrong mesh, so that no rank waits for the others alone;
  // a rank outside the mesh joins no node.
  const bool fits = world.size() == mesh.ranks();
  HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> node,
                      world.Split(fits ? mesh.node_of(world.rank()) : Communicator::kNoColor, world.rank()));
  if (!fits) {
    return absl::InvalidArgumentError(StrCat("SplitByNode: the mesh ", mesh.ToString(), " has ", mesh.ranks(),
                                             " ranks but the ", world.name(), " communicator ", world.size()));
  }
  return node;
}

namespace {

// Scratch buffers kept per thread between calls, grow-only (like the thread communicator's
// staging): fresh multi-MiB buffers page-fault anew on every call — measured, 16 MiB
// all-reduces on 2+4 thread ranks then took up to 20× longer in some runs. One slot per buffer
// that is live at the same time as another; the communication thread of AsyncCollectives has
// its own.
enum Slot { kChunk, kPartials, kReduced, kPack, kUnpack, kGathered, kSegment, kSlots };
float* Scratch(Slot slot, int64_t n) {
  thread_local std::vector<float> pool[kSlots];
  std::vector<float>& v = pool[slot];
  if (static_cast<int64_t>(v.size()) < n + 1) v.resize(static_cast<size_t>(n + 1));
  return v.data();
}

// Element e of the m-th of k even sub-chunks of a length L starts here.
int64_t Even(int64_t len, int k, int m) { return len * m / k; }

// [a, b) ∩ [c, d), as (start, length ≥ 0).
struct Range {
  int64_t start = 0, len = 0;
};
Range Intersect(int64_t a, int64_t b, int64_t c, int64_t d) {
  const int64_t lo = std::max(a, c), hi = std::min(b, d);
  return {lo, std::max<int64_t>(0, hi - lo)};
}

// 64-bit values through a float all-gather, exactly: four 16-bit pieces per value.
constexpr int kFloatsPerInt = 4;
void Encode(int64_t v, float* out) {
  const uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < kFloatsPerInt; ++i) out[i] = static_cast<float>((u >> (16 * i)) & 0xffff);
}
int64_t Decode(const float* in) {
  uint64_t u = 0;
  for (int i = 0; i < kFloatsPerInt; ++i) u |= static_cast<uint64_t>(in[i]) << (16 * i);
  return static_cast<int64_t>(u);
}

// One all-gather over the world of every rank's fingerprint (the mesh, the arguments that must
// match, whether its own arguments were valid): fails on every rank alike when the calls do not
// fit together. `error`: this rank's own argument error, "" when none.
absl::Status Agree(const MeshComms& c, const char* what, const std::vector<int64_t>& fields, const std::string& error) {
  Communicator& w = c.world;
  const int n = w.size();
  const std::vector<int64_t> sizes(c.mesh.sizes().begin(), c.mesh.sizes().end());
  std::vector<int64_t> mine = {static_cast<int64_t>(HashCounts(sizes)), error.empty() ? 0 : 1};
  mine.insert(mine.end(), fields.begin(), fields.end());
  const int width = static_cast<int>(mine.size()) * kFloatsPerInt;
  std::vector<float> out(static_cast<size_t>(width)), all(static_cast<size_t>(n) * width);
  for (size_t f = 0; f < mine.size(); ++f) Encode(mine[f], out.data() + f * kFloatsPerInt);
  const absl::Status s = w.AllGatherV(out.data(), all.data(), std::vector<int64_t>(n, width), CommImpl::kGrouped);
  if (!s.ok()) return absl::Status(s.code(), StrCat(what, ": ", s.message()));
  auto field = [&](int r, size_t f) { return Decode(all.data() + static_cast<size_t>(r) * width + f * kFloatsPerInt); };
  std::string why = error;  // our own error first: every rank with bad arguments says which
  for (int r = 0; r < n && why.empty(); ++r) {
    if (field(r, 1) != 0) why = StrCat("rank ", r, " passed invalid arguments (its own error says which)");
  }
  for (int r = 1; r < n && why.empty(); ++r) {
    if (field(r, 0) != field(0, 0)) {
      why = StrCat("rank ", r, " passed another mesh than rank 0 (this rank: ", c.mesh.ToString(),
                   "); every rank must pass the same mesh");
    }
    for (size_t f = 2; f < mine.size() && why.empty(); ++f) {
      if (field(r, f) != field(0, f)) {
        why = StrCat("rank ", r, " passed other counts than rank 0; every rank must pass the same counts");
      }
    }
  }
  if (why.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(StrCat(what, " (rank ", w.rank(), "): ", why));
}

// The checks every function makes of the communicators against the mesh; "" when they fit.
std::string CheckComms(const MeshComms& c) {
  const Mesh& m = c.mesh;
  if (c.world.size() != m.ranks()) {
    return StrCat("the mesh ", m.ToString(), " has ", m.ranks(), " ranks but the world communicator ", c.world.size());
  }
  const int j = m.node_of(c.world.rank());
  if (c.node.size() != m.size(j) || c.node.rank() != m.local(c.world.rank())) {
    return StrCat("world rank ", c.world.rank(), " is rank ", m.local(c.world.rank()), " of the ", m.size(j),
                  " on node ", j, " but its node communicator has it as rank ", c.node.rank(), " of ", c.node.size(),
                  " (make it with SplitByNode)");
  }
  return "";
}

// One rank's sends and receives of a cross-node phase. Segments to or from one peer are kept
// in the order they were listed; both sides list them in the same order.
class Exchange {
 public:
  explicit Exchange(Communicator& world) : w_(world), send_counts_(world.size()), recv_counts_(world.size()) {}

  void Send(int peer, const float* src, int64_t len) {
    if (len <= 0) return;
    sends_.push_back({peer, src, nullptr, len});
    send_counts_[peer] += len;
  }
  void Recv(int peer, float* dst, int64_t len) {
    if (len <= 0) return;
    recvs_.push_back({peer, nullptr, dst, len});
    recv_counts_[peer] += len;
  }

  // One AllToAllV: packs the sends by peer, unpacks the receives into their destinations —
  // unless they already lie back to back in peer order, as they do when every peer gets one
  // piece of one buffer (then the communicator reads and writes them in place).
  absl::Status Run() {
    std::stable_sort(sends_.begin(), sends_.end(), [](const Seg& a, const Seg& b) { return a.peer < b.peer; });
    std::stable_sort(recvs_.begin(), recvs_.end(), [](const Seg& a, const Seg& b) { return a.peer < b.peer; });
    const int64_t ns = comm_internal::Sum(send_counts_), nr = comm_internal::Sum(recv_counts_);
    const float* send = Contiguous(sends_, [](const Seg& s) { return s.src; });
    float* recv = const_cast<float*>(Contiguous(recvs_, [](const Seg& s) { return static_cast<const float*>(s.dst); }));
    if (send == nullptr || (recv != nullptr && Overlap(send, ns, recv, nr))) {
      float* out = Scratch(kPack, ns);
      float* p = out;
      for (const Seg& s : sends_) p = std::copy(s.src, s.src + s.len, p);
      send = out;
    }
    const bool unpack = recv == nullptr;
    if (unpack) {
      recv = Scratch(kUnpack, nr);
    }
    HS_RETURN_IF_ERROR(w_.AllToAllV(send, send_counts_, recv, recv_counts_));
    if (unpack) {
      const float* q = recv;
      for (const Seg& s : recvs_) {
        std::copy(q, q + s.len, s.dst);
        q += s.len;
      }
    }
    return absl::OkStatus();
  }

 private:
  struct Seg {
    int peer;
    const float* src;
    float* dst;
    int64_t len;
  };
  // The first segment's address when the segments lie back to back in order; else nullptr.
  template <class Addr>
  static const float* Contiguous(const std::vector<Seg>& segs, const Addr& addr) {
    static const float kNothing = 0;
    if (segs.empty()) return &kNothing;
    for (size_t i = 1; i < segs.size(); ++i) {
      if (addr(segs[i]) != addr(segs[i - 1]) + segs[i - 1].len) return nullptr;
    }
    return addr(segs[0]);
  }

  Communicator& w_;
  std::vector<Seg> sends_, recvs_;
  std::vector<int64_t> send_counts_, recv_counts_;
};

// Where node pieces are, from per-rank counts (world order).
struct Pieces {
  std::vector<int64_t> node_len;    // L_j
  std::vector<int64_t> node_start;  // F_j
  std::vector<int64_t> in_node;     // per rank: offset of its piece inside its node's piece
};
Pieces PiecesOf(const Mesh& m, const std::vector<int64_t>& counts) {
  Pieces p;
  int64_t at = 0;
  for (int j = 0; j < m.nodes(); ++j) {
    p.node_start.push_back(at);
    int64_t len = 0;
    for (int r = m.first(j); r < m.first(j) + m.size(j); ++r) {
      p.in_node.push_back(len);
      len += counts[r];
    }
    p.node_len.push_back(len);
    at += len;
  }
  return p;
}

// The intra-node layout of the hierarchical and nodes-level all-gathers: device m of node J
// contributes [its own piece (own_counts[m]; 0 at the nodes level)] then [the m-th of k_J even
// sub-chunks of P_j' for every other node j', in node order].
struct NodeLayout {
  std::vector<int64_t> seg_counts;  // per device of node J
  std::vector<int64_t> seg_start;   // per device of node J, in the gathered buffer
  std::vector<std::vector<int64_t>> block;  // [m][j']: offset of P_j''s sub-chunk in m's segment
  int64_t total = 0;
};
NodeLayout LayoutOf(const Mesh& mesh, int J, const std::vector<int64_t>& node_len, const std::vector<int64_t>& own) {
  NodeLayout l;
  const int k = mesh.size(J);
  l.block.assign(k, std::vector<int64_t>(mesh.nodes(), 0));
  for (int m = 0; m < k; ++m) {
    int64_t at = own[m];
    for (int j = 0; j < mesh.nodes(); ++j) {
      if (j == J) continue;
      l.block[m][j] = at;
      at += Even(node_len[j], k, m + 1) - Even(node_len[j], k, m);
    }
    l.seg_start.push_back(l.total);
    l.seg_counts.push_back(at);
    l.total += at;
  }
  return l;
}

// The elementary intervals of the nodes' tilings of [0, T): piece (j, l) covers
// [start[j][l], start[j][l] + len[j][l]). For each interval, its holder on every node.
struct Intervals {
  std::vector<int64_t> bounds;            // b_0 = 0 < b_1 < … < b_E = T
  std::vector<std::vector<int>> holder;   // [e][j]: the device of node j whose piece holds interval e
};
Intervals IntervalsOf(const std::vector<std::vector<int64_t>>& start, const std::vector<std::vector<int64_t>>& len,
                      int64_t total) {
  Intervals iv;
  for (size_t j = 0; j < start.size(); ++j) {
    for (size_t l = 0; l < start[j].size(); ++l) {
      if (len[j][l] > 0) iv.bounds.push_back(start[j][l]);
    }
  }
  iv.bounds.push_back(0);
  iv.bounds.push_back(total);
  std::sort(iv.bounds.begin(), iv.bounds.end());
  iv.bounds.erase(std::unique(iv.bounds.begin(), iv.bounds.end()), iv.bounds.end());
  if (total == 0) iv.bounds = {0};
  const size_t intervals = iv.bounds.size() - 1;
  iv.holder.assign(intervals, std::vector<int>(start.size(), 0));
  for (size_t j = 0; j < start.size(); ++j) {
    size_t l = 0;
    for (size_t e = 0; e < intervals; ++e) {
      while (start[j][l] + len[j][l] <= iv.bounds[e]) ++l;  // the pieces tile [0, T)
      iv.holder[e][j] = static_cast<int>(l);
    }
  }
  return iv;
}

// The cross-node all-reduce of pieces that tile [0, T) on every node (AcrossNodesAllReduce and
// HierarchicalAllReduce's middle phase), for several tensors at once (a gradient bucket): one
// exchange for the reduce-scatter of all of them and one for the all-gather, so a bucket pays
// the latency once. Per tensor: piece, counts[r] and in_node[r] (rank r's piece), total T.
// Arguments already agreed.
struct AcrossPiece {
  float* piece;
  const std::vector<int64_t>* counts;
  std::vector<int64_t> in_node;
  int64_t total;
};

absl::Status ReduceAcrossNodes(const MeshComms& c, const std::vector<AcrossPiece>& pieces) {
  const Mesh& mesh = c.mesh;
  const int N = mesh.nodes(), me = c.world.rank(), J = mesh.node_of(me), l = mesh.local(me);
  if (N == 1) return absl::OkStatus();
  // Per tensor: its elementary intervals, those this rank holds, and where its parts go.
  struct Plan {
    Intervals iv;
    std::vector<size_t> held;
    int64_t mine = 0, own_parts = 0, at = 0;  // at: its parts' offset in partials / reduced
  };
  std::vector<Plan> plans;
  int64_t own_total = 0;
  for (const AcrossPiece& ap : pieces) {
    std::vector<std::vector<int64_t>> start(N), len(N);
    for (int j = 0; j < N; ++j) {
      for (int r = mesh.first(j); r < mesh.first(j) + mesh.size(j); ++r) {
        start[j].push_back(ap.in_node[r]);
        len[j].push_back((*ap.counts)[r]);
      }
    }
    Plan pl{IntervalsOf(start, len, ap.total), {}, ap.in_node[me], 0, own_total};
    for (size_t e = 0; e + 1 < pl.iv.bounds.size(); ++e) {
      if (pl.iv.holder[e][J] == l) pl.held.push_back(e);
    }
    plans.push_back(std::move(pl));
    Plan& q = plans.back();
    // Part p of interval e: [lo + L·p/N, lo + L·(p+1)/N), summed on node p's holder.
    for (size_t e : q.held) {
      const int64_t L = q.iv.bounds[e + 1] - q.iv.bounds[e];
      q.own_parts += Even(L, N, J + 1) - Even(L, N, J);
    }
    own_total += q.own_parts;
  }
  auto part = [&](const Plan& q, size_t e, int p) {
    const int64_t lo = q.iv.bounds[e], L = q.iv.bounds[e + 1] - lo;
    return Range{lo + Even(L, N, p), Even(L, N, p + 1) - Even(L, N, p)};
  };
  // Reduce-scatter: every holder sends part p to node p's holder — our own part to ourselves,
  // which keeps the sends and receives back to back (no packing) when we hold one interval of
  // one tensor — and the nodes' partials of our part land in `partials` ([j] per node, per
  // interval).
  float* partials = Scratch(kPartials, own_total * N);
  float* reduced = Scratch(kReduced, own_total);
  {
    Exchange x(c.world);
    for (size_t k = 0; k < pieces.size(); ++k) {
      const Plan& q = plans[k];
      int64_t at = q.at;
      for (size_t e : q.held) {
        for (int p = 0; p < N; ++p) {
          const Range r = part(q, e, p);
          x.Send(mesh.first(p) + q.iv.holder[e][p], pieces[k].piece + (r.start - q.mine), r.len);
        }
        const Range own = part(q, e, J);
        for (int j = 0; j < N; ++j) {
          x.Recv(mesh.first(j) + q.iv.holder[e][j], partials + (at * N + j * own.len), own.len);
        }
        at += own.len;
      }
    }
    HS_RETURN_IF_ERROR(x.Run());
  }
  // Node-order sums of our parts.
  for (const Plan& q : plans) {
    int64_t at = q.at;
    for (size_t e : q.held) {
      const Range own = part(q, e, J);
      const float* slots = partials + at * N;
      std::vector<const float*> in(static_cast<size_t>(N));
      for (int j = 0; j < N; ++j) in[j] = slots + j * own.len;
      comm_internal::SumInRankOrder(in.data(), N, reduced + at, own.len);
      at += own.len;
    }
  }
  // All-gather: every holder sends its summed part to every node's holder (ourselves included).
  Exchange x(c.world);
  for (size_t k = 0; k < pieces.size(); ++k) {
    const Plan& q = plans[k];
    int64_t at = q.at;
    for (size_t e : q.held) {
      const Range own = part(q, e, J);
      for (int p = 0; p < N; ++p) {
        const int peer = mesh.first(p) + q.iv.holder[e][p];
        x.Send(peer, reduced + at, own.len);
        const Range r = part(q, e, p);
        x.Recv(peer, pieces[k].piece + (r.start - q.mine), r.len);
      }
      at += own.len;
    }
  }
  return x.Run();
}

absl::Status ReduceAcrossNodes(const MeshComms& c, float* piece, const std::vector<int64_t>& counts,
                               const std::vector<int64_t>& in_node, int64_t total) {
  return ReduceAcrossNodes(c, {AcrossPiece{piece, &counts, in_node, total}});
}

// "" when node_counts has one non-negative entry per node.
std::string CheckNodeCounts(const std::vector<int64_t>& node_counts, const Mesh& mesh) {
  if (static_cast<int>(node_counts.size()) != mesh.nodes()) {
    return StrCat("node_counts has ", node_counts.size(), " entries; expected one per node (", mesh.nodes(), ")");
  }
  for (size_t j = 0; j < node_counts.size(); ++j) {
    if (node_counts[j] < 0) return StrCat("node_counts[", j, "] = ", node_counts[j], "; expected >= 0");
  }
  return "";
}

// Pointer and count checks of a flat collective over the world, like the Communicator's.
std::string CheckFlat(const float* in, int64_t nin, const float* out, int64_t nout, bool in_place_ok,
                      const float* in_place_at) {
  if (nin > 0 && in == nullptr) return "the input is null but its count is > 0";
  if (nout > 0 && out == nullptr) return "the output is null but its count is > 0";
  if (!(in_place_ok && in == in_place_at) && Overlap(in, nin, out, nout)) {
    return in_place_ok ? "the input overlaps the output (only exactly in place is allowed)"
                       : "the input overlaps the output";
  }
  return "";
}

}  // namespace

absl::Status HierarchicalAllReduce(const MeshComms& c, float* data, int64_t count) {
  std::string error = CheckComms(c);
  if (error.empty()) error = comm_internal::CheckAllReduce(data, count);
  HS_RETURN_IF_ERROR(Agree(c, "HierarchicalAllReduce", {count}, error));
  const Mesh& mesh = c.mesh;
  const int me = c.world.rank(), J = mesh.node_of(me), k = mesh.size(J), l = mesh.local(me);
  // Even chunks: chunk m of every node's devices is [count·m/k, count·(m+1)/k).
  std::vector<int64_t> node_counts(k), counts(mesh.ranks()), in_node(mesh.ranks());
  for (int m = 0; m < k; ++m) node_counts[m] = Even(count, k, m + 1) - Even(count, k, m);
  for (int r = 0; r < mesh.ranks(); ++r) {
    const int kr = mesh.size(mesh.node_of(r)), lr = mesh.local(r);
    in_node[r] = Even(count, kr, lr);
    counts[r] = Even(count, kr, lr + 1) - in_node[r];
  }
  float* chunk = Scratch(kChunk, node_counts[l]);
  HS_RETURN_IF_ERROR(c.node.ReduceScatterV(data, chunk, node_counts, CommImpl::kGrouped));
  HS_RETURN_IF_ERROR(ReduceAcrossNodes(c, chunk, counts, in_node, count));
  return c.node.AllGatherV(chunk, data, node_counts, CommImpl::kGrouped);
}

absl::Status AcrossNodesAllReduce(const MeshComms& c, float* piece, const std::vector<int64_t>& counts) {
  return AcrossNodesAllReduce(c, std::vector<float*>{piece}, std::vector<std::vector<int64_t>>{counts});
}

absl::Status AcrossNodesAllReduce(const MeshComms& c, const std::vector<float*>& pieces,
                                  const std::vector<std::vector<int64_t>>& counts) {
  std::string error = CheckComms(c);
  if (error.empty() && pieces.size() != counts.size()) {
    error = StrCat(pieces.size(), " pieces but ", counts.size(), " count lists; expected one per piece");
  }
  std::vector<int64_t> totals(counts.size(), 0);
  std::vector<int64_t> agree;
  for (size_t k = 0; k < counts.size() && error.empty(); ++k) {
    const std::string which = counts.size() == 1 ? "" : StrCat(" (tensor ", k, ")");
    error = CheckCounts(counts[k], c.world.size(), "counts");
    if (!error.empty()) {
      error += which;
      break;
    }
    const Mesh& m = c.mesh;
    for (int j = 0; j < m.nodes() && error.empty(); ++j) {
      const int64_t t =
          std::accumulate(counts[k].begin() + m.first(j), counts[k].begin() + m.first(j) + m.size(j), int64_t{0});
      if (j == 0) totals[k] = t;
      if (t != totals[k]) {
        error = StrCat("node ", j, "'s counts sum to ", t, " but node 0's to ", totals[k],
                       "; every node's pieces must tile the same tensor", which);
      }
    }
    if (error.empty() && counts[k][c.world.rank()] > 0 && pieces[k] == nullptr) {
      error = StrCat("piece is null but its count is > 0", which);
    }
    agree.push_back(static_cast<int64_t>(HashCounts(counts[k])));
  }
  if (agree.empty()) agree.push_back(static_cast<int64_t>(counts.size()));
  HS_RETURN_IF_ERROR(Agree(c, "AcrossNodesAllReduce", {static_cast<int64_t>(HashCounts(agree))}, error));
  std::vector<AcrossPiece> ps;
  for (size_t k = 0; k < counts.size(); ++k) ps.push_back({pieces[k], &counts[k], PiecesOf(c.mesh, counts[k]).in_node, totals[k]});
  return ReduceAcrossNodes(c, ps);
}

absl::Status HierarchicalAllGatherV(const MeshComms& c, const float* send, float* recv,
                                    const std::vector<int64_t>& counts) {
  std::string error = CheckComms(c);
  if (error.empty()) error = CheckCounts(counts, c.world.size(), "counts");
  if (error.empty()) {
    const int me = c.world.rank();
    error = CheckFlat(send, counts[me], recv, comm_internal::Sum(counts), true,
                      recv ? recv + comm_internal::Offset(counts, me) : nullptr);
  }
  HS_RETURN_IF_ERROR(Agree(c, "HierarchicalAllGatherV", {static_cast<int64_t>(HashCounts(counts))}, error));
  const Mesh& mesh = c.mesh;
  const int N = mesh.nodes(), me = c.world.rank(), J = mesh.node_of(me), k = mesh.size(J), l = mesh.local(me);
  const Pieces p = PiecesOf(mesh, counts);
  std::vector<int64_t> own(k);
  for (int m = 0; m < k; ++m) own[m] = counts[mesh.first(J) + m];
  const NodeLayout lay = LayoutOf(mesh, J, p.node_len, own);
  float* gathered = Scratch(kGathered, lay.total);
  float* seg = gathered + lay.seg_start[l];
  const int64_t lo = p.in_node[me], hi = lo + counts[me];
  // Across nodes: our piece, cut at node j's sub-chunk bounds, to node j's devices; from every
  // other node, the parts of our sub-chunk of its piece, from the devices holding them.
  Exchange x(c.world);
  for (int j = 0; j < N; ++j) {
    if (j == J) continue;
    for (int m = 0; m < mesh.size(j); ++m) {
      const Range r = Intersect(lo, hi, Even(p.node_len[J], mesh.size(j), m), Even(p.node_len[J], mesh.size(j), m + 1));
      x.Send(mesh.first(j) + m, send + (r.start - lo), r.len);
    }
    const int64_t sub_lo = Even(p.node_len[j], k, l), sub_hi = Even(p.node_len[j], k, l + 1);
    for (int m = 0; m < mesh.size(j); ++m) {
      const int r = mesh.first(j) + m;
      const Range part = Intersect(p.in_node[r], p.in_node[r] + counts[r], sub_lo, sub_hi);
      x.Recv(r, seg + lay.block[l][j] + (part.start - sub_lo), part.len);
    }
  }
  if (counts[me] > 0) std::copy(send, send + counts[me], seg);
  HS_RETURN_IF_ERROR(x.Run());
  HS_RETURN_IF_ERROR(c.node.AllGatherV(seg, gathered, lay.seg_counts, CommImpl::kGrouped));
  for (int m = 0; m < k; ++m) {
    const float* s = gathered + lay.seg_start[m];
    const int r = mesh.first(J) + m;
    std::copy(s, s + counts[r], recv + p.node_start[J] + p.in_node[r]);
    for (int j = 0; j < N; ++j) {
      if (j == J) continue;
      const int64_t a = Even(p.node_len[j], k, m), b = Even(p.node_len[j], k, m + 1);
      std::copy(s + lay.block[m][j], s + lay.block[m][j] + (b - a), recv + p.node_start[j] + a);
    }
  }
  return absl::OkStatus();
}

absl::Status HierarchicalReduceScatterV(const MeshComms& c, const float* send, float* recv,
                                        const std::vector<int64_t>& counts) {
  std::string error = CheckComms(c);
  if (error.empty()) error = CheckCounts(counts, c.world.size(), "counts");
  if (error.empty()) error = CheckFlat(send, comm_internal::Sum(counts), recv, counts[c.world.rank()], false, nullptr);
  HS_RETURN_IF_ERROR(Agree(c, "HierarchicalReduceScatterV", {static_cast<int64_t>(HashCounts(counts))}, error));
  const Mesh& mesh = c.mesh;
  const int N = mesh.nodes(), me = c.world.rank(), J = mesh.node_of(me), k = mesh.size(J), l = mesh.local(me);
  const Pieces p = PiecesOf(mesh, counts);
  std::vector<int64_t> own(k);
  for (int m = 0; m < k; ++m) own[m] = counts[mesh.first(J) + m];
  const NodeLayout lay = LayoutOf(mesh, J, p.node_len, own);
  // The all-gather's scatter, transposed: gather `send` into the node layout.
  float* packed = Scratch(kGathered, lay.total);
  for (int m = 0; m < k; ++m) {
    float* s = packed + lay.seg_start[m];
    const int r = mesh.first(J) + m;
    const float* from = send + p.node_start[J] + p.in_node[r];
    std::copy(from, from + counts[r], s);
    for (int j = 0; j < N; ++j) {
      if (j == J) continue;
      const int64_t a = Even(p.node_len[j], k, m), b = Even(p.node_len[j], k, m + 1);
      std::copy(send + p.node_start[j] + a, send + p.node_start[j] + b, s + lay.block[m][j]);
    }
  }
  float* seg = Scratch(kSegment, lay.seg_counts[l]);
  HS_RETURN_IF_ERROR(c.node.ReduceScatterV(packed, seg, lay.seg_counts, CommImpl::kGrouped));
  // Across nodes: the node's partials of our sub-chunk of every other node's piece, to the
  // devices holding them; from every other node j, its partials of our own piece.
  const int64_t lo = p.in_node[me], hi = lo + counts[me];
  float* partials = Scratch(kPartials, counts[me] * N);  // [j]: node j's partial of our piece
  Exchange x(c.world);
  for (int j = 0; j < N; ++j) {
    if (j == J) continue;
    const int64_t sub_lo = Even(p.node_len[j], k, l), sub_hi = Even(p.node_len[j], k, l + 1);
    for (int m = 0; m < mesh.size(j); ++m) {
      const int r = mesh.first(j) + m;
      const Range part = Intersect(p.in_node[r], p.in_node[r] + counts[r], sub_lo, sub_hi);
      x.Send(r, seg + lay.block[l][j] + (part.start - sub_lo), part.len);
    }
    for (int m = 0; m < mesh.size(j); ++m) {
      const Range r = Intersect(lo, hi, Even(p.node_len[J], mesh.size(j), m), Even(p.node_len[J], mesh.size(j), m + 1));
      x.Recv(mesh.first(j) + m, partials + j * counts[me] + (r.start - lo), r.len);
    }
  }
  HS_RETURN_IF_ERROR(x.Run());
  // Node-order sum of the nodes' partials (ours: the start of our segment).
  const int64_t n = counts[me];
  for (int j = 0; j < N; ++j) {
    const float* v = j == J ? seg : partials + j * n;
    if (j == 0) {
      std::copy(v, v + n, recv);
    } else {
      for (int64_t i = 0; i < n; ++i) recv[i] += v[i];
    }
  }
  return absl::OkStatus();
}

absl::Status NodesAllGatherV(const MeshComms& c, const float* piece, float* recv,
                             const std::vector<int64_t>& node_counts) {
  std::string error = CheckComms(c);
  if (error.empty()) error = CheckNodeCounts(node_counts, c.mesh);
  if (error.empty()) {
    const int J = c.mesh.node_of(c.world.rank());
    error = CheckFlat(piece, node_counts[J], recv, comm_internal::Sum(node_counts), true,
                      recv ? recv + comm_internal::Offset(node_counts, J) : nullptr);
  }
  HS_RETURN_IF_ERROR(Agree(c, "NodesAllGatherV", {static_cast<int64_t>(HashCounts(node_counts))}, error));
  const Mesh& mesh = c.mesh;
  const int N = mesh.nodes(), me = c.world.rank(), J = mesh.node_of(me), k = mesh.size(J), l = mesh.local(me);
  std::vector<int64_t> start(N);
  for (int j = 1; j < N; ++j) start[j] = start[j - 1] + node_counts[j - 1];
  const NodeLayout lay = LayoutOf(mesh, J, node_counts, std::vector<int64_t>(k, 0));
  float* gathered = Scratch(kGathered, lay.total);
  float* seg = gathered + lay.seg_start[l];
  Exchange x(c.world);
  for (int j = 0; j < N; ++j) {
    if (j == J) continue;
    // To node j: sub-chunk m of our piece for each of its devices m with m mod k_J = l.
    for (int m = l; m < mesh.size(j); m += k) {
      const int64_t a = Even(node_counts[J], mesh.size(j), m), b = Even(node_counts[J], mesh.size(j), m + 1);
      x.Send(mesh.first(j) + m, piece + a, b - a);
    }
    // From node j's device (l mod k_j): our sub-chunk of its piece.
    x.Recv(mesh.first(j) + l % mesh.size(j), seg + lay.block[l][j], Even(node_counts[j], k, l + 1) - Even(node_counts[j], k, l));
  }
  HS_RETURN_IF_ERROR(x.Run());
  HS_RETURN_IF_ERROR(c.node.AllGatherV(seg, gathered, lay.seg_counts, CommImpl::kGrouped));
  if (node_counts[J] > 0 && piece != recv + start[J]) std::copy(piece, piece + node_counts[J], recv + start[J]);
  for (int m = 0; m < k; ++m) {
    const float* s = gathered + lay.seg_start[m];
    for (int j = 0; j < N; ++j) {
      if (j == J) continue;
      const int64_t a = Even(node_counts[j], k, m), b = Even(node_counts[j], k, m + 1);
      std::copy(s + lay.block[m][j], s + lay.block[m][j] + (b - a), recv + start[j] + a);
    }
  }
  return absl::OkStatus();
}

absl::Status NodesReduceScatterV(const MeshComms& c, const float* send, float* recv,
                                 const std::vector<int64_t>& node_counts) {
  std::string error = CheckComms(c);
  if (error.empty()) error = CheckNodeCounts(node_counts, c.mesh);
  if (error.empty()) {
    const int J = c.mesh.node_of(c.world.rank());
    error = CheckFlat(send, comm_internal::Sum(node_counts), recv, node_counts[J], false, nullptr);
  }
  HS_RETURN_IF_ERROR(Agree(c, "NodesReduceScatterV", {static_cast<int64_t>(HashCounts(node_counts))}, error));
  const Mesh& mesh = c.mesh;
  const int N = mesh.nodes(), me = c.world.rank(), J = mesh.node_of(me), k = mesh.size(J), l = mesh.local(me);
  std::vector<int64_t> start(N);
  for (int j = 1; j < N; ++j) start[j] = start[j - 1] + node_counts[j - 1];
  const NodeLayout lay = LayoutOf(mesh, J, node_counts, std::vector<int64_t>(k, 0));
  float* packed = Scratch(kGathered, lay.total);
  for (int m = 0; m < k; ++m) {
    float* s = packed + lay.seg_start[m];
    for (int j = 0; j < N; ++j) {
      if (j == J) continue;
      const int64_t a = Even(node_counts[j], k, m), b = Even(node_counts[j], k, m + 1);
      std::copy(send + start[j] + a, send + start[j] + b, s + lay.block[m][j]);
    }
  }
  float* seg = Scratch(kSegment, lay.seg_counts[l]);
  HS_RETURN_IF_ERROR(c.node.ReduceScatterV(packed, seg, lay.seg_counts, CommImpl::kGrouped));
  // The node's partials go to the owner nodes; from each other node j we receive its partials of
  // the sub-chunks m (of k_j) of our node's piece with m mod k_J = l.
  float* partials = Scratch(kPartials, node_counts[J] * N);  // [j]: node j's partials, at their place
  Exchange x(c.world);
  for (int j = 0; j < N; ++j) {
    if (j == J) continue;
    x.Send(mesh.first(j) + l % mesh.size(j), seg + lay.block[l][j],
           Even(node_counts[j], k, l + 1) - Even(node_counts[j], k, l));
    for (int m = l; m < mesh.size(j); m += k) {
      const int64_t a = Even(node_counts[J], mesh.size(j), m), b = Even(node_counts[J], mesh.size(j), m + 1);
      x.Recv(mesh.first(j) + m, partials + j * node_counts[J] + a, b - a);
    }
  }
  HS_RETURN_IF_ERROR(x.Run());
  // Our own contribution, then the other nodes' partials in node order.
  if (node_counts[J] > 0) std::copy(send + start[J], send + start[J] + node_counts[J], recv);
  for (int j = 0; j < N; ++j) {
    if (j == J) continue;
    for (int m = l; m < mesh.size(j); m += k) {
      const int64_t a = Even(node_counts[J], mesh.size(j), m), b = Even(node_counts[J], mesh.size(j), m + 1);
      const float* v = partials + j * node_counts[J];
      for (int64_t i = a; i < b; ++i) recv[i] += v[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace hetsynth::runtime
