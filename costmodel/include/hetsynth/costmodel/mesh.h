// The device mesh of a cluster: its nodes, the devices each holds, and whether the cluster is a
// two-level mesh (docs/topology.md, spec §1).
//
// A cluster is a **two-level** mesh when it has at least two nodes and its ranks are node-major:
// every node's devices are contiguous in rank order and nodes appear in node order. Then
// collectives can run hierarchically (inside every node, then across nodes) and properties can
// later be split per level. Otherwise the mesh is **flat**: one group of devices whose
// collectives are priced over the links they cross. Nodes may differ in device count and type.
//
//   const Mesh m = MeshOf(cluster);
//   if (m.two_level) for (const std::vector<DeviceId>& devs : m.nodes) ...  // node j's devices
#pragma once

#include <string>
#include <vector>

#include "hetsynth/costmodel/cluster.h"

namespace hetsynth::costmodel {

struct Mesh {
  bool two_level = false;                   // see above
  std::vector<std::vector<DeviceId>> nodes;  // per node (cluster file order): its devices, ascending
  std::vector<NodeId> node_of;               // per device: its node

  int num_nodes() const { return static_cast<int>(nodes.size()); }
  // "two-level: 8 nodes × 8 devices" / "two-level: 2 nodes (2, 4 devices)" / "flat: one node of 4
  // devices" / "flat: 3 nodes, ranks not node-major": what `explain` prints.
  std::string Describe() const;
};

// Every node of a parsed cluster holds at least one device (ParseCluster refuses empty nodes).
Mesh MeshOf(const Cluster& c);

}  // namespace hetsynth::costmodel
