#include "hetsynth/costmodel/mesh.h"

#include "hetsynth/base/status.h"

namespace hetsynth::costmodel {

Mesh MeshOf(const Cluster& c) {
  Mesh m;
  m.nodes.assign(c.nodes.size(), {});
  m.node_of.reserve(c.devices.size());
  bool node_major = true;
  for (size_t i = 0; i < c.devices.size(); ++i) {
    const NodeId j = c.devices[i].node;
    HS_CHECK(j >= 0 && static_cast<size_t>(j) < c.nodes.size(),
             StrCat("device '", c.devices[i].name, "' has node ", j, " outside [0, ", c.nodes.size(), ")"));
    // Node-major: a device's node is its predecessor's or the next one (no node skipped, none
    // revisited, so each node is one contiguous run and nodes come in order).
    if (i > 0 && j != c.devices[i - 1].node && j != c.devices[i - 1].node + 1) node_major = false;
    if (i == 0 && j != 0) node_major = false;
    m.nodes[static_cast<size_t>(j)].push_back(static_cast<DeviceId>(i));
    m.node_of.push_back(j);
  }
  m.two_level = node_major && m.nodes.size() >= 2;
  return m;
}

std::string Mesh::Describe() const {
  const size_t n_nodes = nodes.size();
  size_t devices = 0;
  bool equal = true;
  for (const auto& d : nodes) devices += d.size(), equal = equal && d.size() == nodes.front().size();
  if (n_nodes == 1) return StrCat("flat: one node of ", devices, " devices");
  if (!two_level) return StrCat("flat: ", n_nodes, " nodes, ranks not node-major");
  if (equal) return StrCat("two-level: ", n_nodes, " nodes x ", nodes.front().size(), " devices");
  std::string counts;
  for (size_t j = 0; j < n_nodes; ++j) counts += StrCat(j ? ", " : "", nodes[j].size());
  return StrCat("two-level: ", n_nodes, " nodes (", counts, " devices)");
}

}  // namespace hetsynth::costmodel
