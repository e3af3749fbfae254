// Collectives on a two-level mesh: nodes whose devices share fast links, joined by NICs that
// every flow leaving or entering a node shares (the topology spec, §1, §4.3–4.5, §7). They run
// over two communicators a rank holds — the world (every rank, node-major) and its node
// (SplitByNode) — and move across nodes only what the cost model prices: each node's NIC
// carries about 2(N−1)/N·B for an all-reduce of B bytes over N nodes, whatever the number of
// devices behind it, with every device of a node carrying its 1/k share.
//
// Cross-node phases are point-to-point patterns over the world communicator (one AllToAllV
// with zero counts off the pattern), so nodes may differ in their number of devices. Every
// function first agrees on its arguments over the world (one small all-gather): a bad or
// mismatched argument on any rank fails on every rank with the same message.
//
// Sums are deterministic and the same on every communicator (threads, MPI, the in-process
// device one): within a node in rank order, then across nodes in node order,
//   (((x₀ + x₁) + …)_node 0 + (x_k₀ + …)_node 1) + …,
// so thread ranks and MPI processes give identical bits — but not the bits of a flat
// AllReduce, which adds every rank in one rank order.
//
// Buffers are flat and in world rank order, as the Communicator's v-collectives take them; the
// executor packs a dim's slices into them (collectives_along.h's GatherAlong / ScatterAlong).
//
//   HS_ASSIGN_OR_RETURN(Mesh mesh, Mesh::FromSizes({2, 4}));            // ranks 0-1, 2-5
//   HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> node, SplitByNode(world, mesh));
//   const MeshComms mc{world, *node, mesh};
//   HS_RETURN_IF_ERROR(HierarchicalAllReduce(mc, grad.data(), grad.size()));
//   HS_RETURN_IF_ERROR(HierarchicalAllGatherV(mc, mine.data(), full.data(), counts));
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/runtime/comm.h"

namespace hetsynth::runtime {

// Which world ranks share a node. Node-major: node 0 holds ranks [0, k₀), node 1 the next k₁,
// and so on (the plan's "mesh": {"nodes": [[0,1],[2,3,4,5]]}); every node holds >= 1 rank.
class Mesh {
 public:
  // nodes[j]: the world ranks of node j, which must be the next consecutive ranks.
  static absl::StatusOr<Mesh> FromNodes(const std::vector<std::vector<int>>& nodes);
  // sizes[j] = k_j >= 1 ranks on node j.
  static absl::StatusOr<Mesh> FromSizes(const std::vector<int>& sizes);

  int ranks() const { return first_.back(); }                         // Σ k_j
  int nodes() const { return static_cast<int>(first_.size()) - 1; }   // N
  int size(int node) const { return first_[node + 1] - first_[node]; }  // k_j
  int first(int node) const { return first_[node]; }                  // its first world rank
  int node_of(int rank) const;
  int local(int rank) const { return rank - first_[node_of(rank)]; }  // its rank in the node
  std::string ToString() const;                                       // "2+4"
  const std::vector<int>& sizes() const { return sizes_; }

 private:
  std::vector<int> sizes_;
  std::vector<int> first_;  // first_[j] = Σ_{j' < j} k_j'; first_[N] = ranks()
};

// A rank's view of the mesh: the world communicator (every rank, ranks as in the mesh) and the
// communicator of its node (ranks in world order).
struct MeshComms {
  Communicator& world;
  Communicator& node;
  const Mesh& mesh;
};

// world.Split by node: this rank's node communicator. Collective over the world.
absl::StatusOr<std::unique_ptr<Communicator>> SplitByNode(Communicator& world, const Mesh& mesh);

// All-reduce (R,R)→(I,I), in place, `count` elements on every rank (§4.3): intra-node
// reduce-scatter into k_j even chunks → for every chunk, an all-reduce across nodes among the
// devices holding overlapping ranges (AcrossNodesAllReduce) → intra-node all-gather.
absl::Status HierarchicalAllReduce(const MeshComms& c, float* data, int64_t count);

// All-gather-v of a world Gather (G,G)→(I,I), counts[r] elements from rank r (uneven, zeros
// allowed); recv = the rank-order concatenation (Σ counts); send may be exactly in place at
// recv + Σ counts[< rank]. Across nodes, device m of node j receives the m-th of k_j even
// sub-chunks of every other node's piece — from the devices holding it (each sends the part of
// its own piece that falls in the sub-chunk, to each other node once); then one intra-node
// all-gather of the node's own pieces and the received sub-chunks.
absl::Status HierarchicalAllGatherV(const MeshComms& c, const float* send, float* recv,
                                    const std::vector<int64_t>& counts);

// Its exact transpose, reduce-scatter-v (R,R)→(G,G): send Σ counts elements of partial sums on
// every rank; recv counts[rank] elements of their sum. Intra-node reduce-scatter of the node's
// own pieces and of the even sub-chunks of every other node's piece → each device sends its
// node's partial of each sub-chunk to the devices owning it → the owner adds the nodes'
// partials in node order.
absl::Status HierarchicalReduceScatterV(const MeshComms& c, const float* send, float* recv,
                                        const std::vector<int64_t>& counts);

// Nodes-level all-gather (G d, I)→(I, I) (§4.4): every device of node j holds its node piece
// (node_counts[j] elements; one entry per node); recv = the node pieces concatenated in node
// order. Device m of node j receives the m-th of k_j even sub-chunks of every other node's
// piece from device (m mod k_j') of that node, then the node all-gathers what it received.
// piece may be exactly in place at recv + Σ node_counts[< node].
absl::Status NodesAllGatherV(const MeshComms& c, const float* piece, float* recv,
                             const std::vector<int64_t>& node_counts);

// Its transpose (R,R)→(G d, R): send Σ node_counts elements of partial sums; recv
// node_counts[node] elements such that the node's devices' recvs sum to the node's piece of
// the total. No intra-node reduction of the own piece: intra-node reduce-scatter of the other
// nodes' sub-chunks, sends to their owner nodes, and each device adds what it received to its
// own contribution (own first, then the other nodes in node order).
absl::Status NodesReduceScatterV(const MeshComms& c, const float* send, float* recv,
                                 const std::vector<int64_t>& node_counts);

// Across-node all-reduce of per-device pieces (§4.5, gradients of (I, G e) parameters): within
// every node the devices' pieces tile the same T elements (counts[r]: rank r's piece, in rank
// order; each node's counts sum to T). In place, every piece becomes the node-order sum of the
// nodes' values on its range. Among the devices holding overlapping ranges — elementary
// intervals of all nodes' boundaries; with equal nodes, device m of every node — each interval
// is reduce-scattered in N parts, part p summed on node p's holder, and all-gathered back.
absl::Status AcrossNodesAllReduce(const MeshComms& c, float* piece, const std::vector<int64_t>& counts);
// The same for several tensors at once (a gradient bucket): pieces[k] with counts[k]; one
// exchange for the reduce-scatter of all of them and one for the all-gather, so the bucket pays
// the cross-node latency once. The same sums, bit for bit, as one call per tensor.
absl::Status AcrossNodesAllReduce(const MeshComms& c, const std::vector<float*>& pieces,
                                  const std::vector<std::vector<int64_t>>& counts);

}  // namespace hetsynth::runtime
