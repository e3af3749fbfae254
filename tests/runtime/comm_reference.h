// Inputs and reference results for the communicator tests (threads and MPI): random buffers
// and uneven counts, and sums in rank order — what every communicator must reproduce bit for bit.
//
// For the mesh collectives (mesh_collectives.h) the references spell out the documented sums:
// within a node in rank order, then across nodes in node order; Forwarding wraps a
// communicator for tests that count or restrict what goes through it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "hetsynth/runtime/comm.h"

namespace hetsynth::runtime::comm_testing {

using Buffers = std::vector<std::vector<float>>;  // one buffer per rank

inline std::vector<float> Random(std::mt19937& rng, int64_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Counts per rank in [0, max_count], about a third of them zero.
inline std::vector<int64_t> RandomCounts(std::mt19937& rng, int n, int64_t max_count) {
  std::vector<int64_t> c(n);
  for (int64_t& x : c) {
    x = std::uniform_int_distribution<int>(0, 2)(rng) == 0
            ? 0
            : std::uniform_int_distribution<int64_t>(0, max_count)(rng);
  }
  return c;
}

inline int64_t Sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

// ((x₀ + x₁) + x₂) + … for each element.
inline std::vector<float> RankOrderSum(const Buffers& in) {
  std::vector<float> out = in[0];
  for (size_t k = 1; k < in.size(); ++k) {
    for (size_t i = 0; i < out.size(); ++i) out[i] += in[k][i];
  }
  return out;
}

// ---- mesh collectives ------------------------------------------------------------------------

// Node sizes k_j → the node of each rank (node-major).
inline std::vector<int> NodeOf(const std::vector<int>& sizes) {
  std::vector<int> node;
  for (size_t j = 0; j < sizes.size(); ++j) node.insert(node.end(), sizes[j], static_cast<int>(j));
  return node;
}

inline int FirstOf(const std::vector<int>& sizes, int j) {
  int f = 0;
  for (int i = 0; i < j; ++i) f += sizes[i];
  return f;
}

// Whole-length inputs per rank → (((x_f0 + x_f0+1) + …) + ((x_f1 + …))) + …: the node sums in
// rank order, then the nodes in node order.
inline std::vector<float> MeshSum(const Buffers& in, const std::vector<int>& sizes) {
  std::vector<float> total;
  for (size_t j = 0; j < sizes.size(); ++j) {
    const int f = FirstOf(sizes, static_cast<int>(j));
    Buffers node(in.begin() + f, in.begin() + f + sizes[j]);
    const std::vector<float> part = RankOrderSum(node);
    if (j == 0) {
      total = part;
    } else {
      for (size_t i = 0; i < total.size(); ++i) total[i] += part[i];
    }
  }
  return total;
}

// NodesReduceScatterV's result on rank (J, l): its own contribution to node J's piece, then, in
// node order, node j's rank-order partial on the sub-chunks m (of k_j even ones of the node
// piece) with m mod k_J = l.
inline std::vector<float> NodesReduceScatterReference(const Buffers& in, const std::vector<int>& sizes,
                                                      const std::vector<int64_t>& node_counts, int rank) {
  const std::vector<int> node = NodeOf(sizes);
  const int J = node[rank], l = rank - FirstOf(sizes, J), N = static_cast<int>(sizes.size());
  int64_t start = 0;
  for (int j = 0; j < J; ++j) start += node_counts[j];
  const int64_t L = node_counts[J];
  std::vector<float> out(in[rank].begin() + start, in[rank].begin() + start + L);
  for (int j = 0; j < N; ++j) {
    if (j == J) continue;
    const int f = FirstOf(sizes, j), kj = sizes[j];
    const std::vector<float> partial = RankOrderSum(Buffers(in.begin() + f, in.begin() + f + kj));
    for (int m = 0; m < kj; ++m) {
      if (m % sizes[J] != l) continue;
      for (int64_t i = L * m / kj; i < L * (m + 1) / kj; ++i) out[i] += partial[start + i];
    }
  }
  return out;
}

// AcrossNodesAllReduce's result on every rank: pieces[r] tile each node's T elements (counts
// in rank order); each element is the node-order sum of the nodes' values (one holder each).
inline Buffers AcrossNodesReference(const Buffers& pieces, const std::vector<int>& sizes,
                                    const std::vector<int64_t>& counts) {
  const int N = static_cast<int>(sizes.size());
  std::vector<std::vector<float>> whole(N);  // node j's values over [0, T)
  for (int j = 0; j < N; ++j) {
    const int f = FirstOf(sizes, j);
    for (int m = 0; m < sizes[j]; ++m) whole[j].insert(whole[j].end(), pieces[f + m].begin(), pieces[f + m].end());
  }
  std::vector<float> total = whole[0];
  for (int j = 1; j < N; ++j) {
    for (size_t i = 0; i < total.size(); ++i) total[i] += whole[j][i];
  }
  Buffers out(pieces.size());
  for (int j = 0; j < N; ++j) {
    const int f = FirstOf(sizes, j);
    int64_t at = 0;
    for (int m = 0; m < sizes[j]; ++m) {
      out[f + m].assign(total.begin() + at, total.begin() + at + counts[f + m]);
      at += counts[f + m];
    }
  }
  return out;
}

// Counts per rank for a mesh test: each node's share split unevenly among its devices
// (zeros included); `node_total(j)` elements on node j.
inline std::vector<int64_t> MeshCounts(std::mt19937& rng, const std::vector<int>& sizes,
                                       const std::function<int64_t(int)>& node_total) {
  std::vector<int64_t> counts;
  for (size_t j = 0; j < sizes.size(); ++j) {
    const int64_t total = node_total(static_cast<int>(j));
    std::vector<int64_t> w = RandomCounts(rng, sizes[j], 9);
    int64_t sw = Sum(w);
    if (sw == 0) {
      w.back() = 1;
      sw = 1;
    }
    int64_t given = 0;
    for (int m = 0; m < sizes[j]; ++m) {
      const int64_t c = m + 1 == sizes[j] ? total - given : total * w[m] / sw;
      counts.push_back(c);
      given += c;
    }
  }
  return counts;
}

// A communicator that passes every call to another one; tests override what they watch.
class Forwarding : public Communicator {
 public:
  explicit Forwarding(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string name() const override { return inner_.name(); }
  absl::Status AllGatherV(const float* s, float* r, const std::vector<int64_t>& c, CommImpl i) override {
    return inner_.AllGatherV(s, r, c, i);
  }
  absl::Status ReduceScatterV(const float* s, float* r, const std::vector<int64_t>& c, CommImpl i) override {
    return inner_.ReduceScatterV(s, r, c, i);
  }
  absl::Status AllReduce(float* d, int64_t n) override { return inner_.AllReduce(d, n); }
  absl::Status AllToAllV(const float* s, const std::vector<int64_t>& sc, float* r,
                         const std::vector<int64_t>& rc) override {
    return inner_.AllToAllV(s, sc, r, rc);
  }
  absl::Status Broadcast(float* d, int64_t n, int root) override { return inner_.Broadcast(d, n, root); }
  absl::Status Barrier() override { return inner_.Barrier(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override { return inner_.Split(color, key); }
  absl::Status CheckConcurrentUse() const override { return inner_.CheckConcurrentUse(); }

 protected:
  Communicator& inner_;
};

}  // namespace hetsynth::runtime::comm_testing
