// The cluster the synthesizer plans for: devices (what each can compute and hold), the nodes they
// sit in, and the links between them, read from a cluster file (docs/cluster-format.md).
//
// Every number the cost model prices with comes from here, so the file is validated up front: a
// bad file is rejected with one message naming the file, the JSON location, the field, the value
// and what was expected. Devices of equal type, speed, memory and link class form a DeviceClass;
// the synthesizer gives all devices of a class the same sharding ratio, which keeps the ratio
// problem small on large clusters.
//
//   absl::StatusOr<Cluster> c = ReadClusterFile("examples/clusters/reference-64.json");
//   Link world = c->WorldLink();                    // inter_node: the devices span 8 nodes
//   Link inside = c->GroupLink({0, 1, 2, 3});       // n0's NVLink
//   for (const DeviceClass& k : c->Classes()) ...   // V100s, then P100s
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace hetsynth::costmodel {

using DeviceId = int;  // index into Cluster::devices (the device's rank)
using NodeId = int;    // index into Cluster::nodes

// An α–β link: sending m bytes in one message costs latency + m / bandwidth seconds.
struct Link {
  double bandwidth = 0;  // bytes/s per direction; > 0 in a parsed cluster
  double latency = 0;    // seconds per message; >= 0
  bool operator==(const Link&) const = default;
};

struct Device {
  std::string name;               // unique in the cluster
  std::string type;               // e.g. "V100"; devices of one type may still differ (inline fields)
  NodeId node = 0;
  double flops = 0;               // effective FLOP/s for GEMM-class work (profiled or model-calibrated)
  double memory_bytes = 0;        // capacity, bytes
  double memory_bandwidth = 0;    // bytes/s; prices memory-bound ops
  // Forward-only (inference) rates, where they differ from the training ones (a profile measures
  // them: forward kernels alone run at other rates than forward + backward); 0: the same.
  double forward_flops = 0;            // FLOP/s of GEMM-class forward work
  double forward_memory_bandwidth = 0;  // bytes/s of memory-bound forward work
  // Bytes/s at which a GEMM-class kernel streams its parameter operands (the weight read forward
  // and backward, its gradient written): a cost per call that a batch shard does not shrink.
  // `hetsynth profile` fits it on CPU hosts from two batch sizes; 0: not priced apart (the
  // operands' time is inside `flops`, as in a file without the field).
  double gemm_operand_bandwidth = 0;
  double ForwardFlops() const { return forward_flops > 0 ? forward_flops : flops; }
  double ForwardMemoryBandwidth() const {
    return forward_memory_bandwidth > 0 ? forward_memory_bandwidth : memory_bandwidth;
  }
};

struct Node {
  std::string name;  // unique in the cluster
  Link intra;        // device-to-device link inside this node (NVLink, PCIe, ...)
};

// One profiled point: a collective over `bytes` bytes per device took `seconds`.
struct CollectiveSample {
  double bytes = 0;    // > 0
  double seconds = 0;  // > 0
};

// An optional profiled table that replaces the α–β estimate for one collective on one link class.
struct CollectiveTable {
  std::string op;    // all_reduce | all_gather | reduce_scatter | all_to_all | broadcast
  std::string link;  // intra_node | inter_node
  std::vector<CollectiveSample> samples;  // strictly increasing bytes; at least one
};

// Devices the synthesizer treats as interchangeable: same type, flops, memory_bytes,
// memory_bandwidth and node intra link values. Every device of a class gets the same ratio.
struct DeviceClass {
  std::string key;                // readable and unique: type plus every value that defines the class
  std::vector<DeviceId> devices;  // ascending
};

class Cluster {
 public:
  std::string name;
  std::vector<Node> nodes;
  std::vector<Device> devices;  // in file order, which is rank order
  Link inter_node;              // between any two devices on different nodes
  std::vector<CollectiveTable> collectives;  // file order; at most one per (op, link)

  int size() const { return static_cast<int>(devices.size()); }

  // The link that bounds a collective over `devices` (non-empty, valid ids): the element-wise
  // slowest (lowest bandwidth, highest latency) of the links it crosses. Devices on one node cross
  // that node's intra link (a single device: its node's intra link). Devices on several nodes
  // cross inter_node, plus the intra link of every node holding two or more of them: a ring
  // crosses both, and a PCIe node can be slower than a fast network.
  Link GroupLink(const std::vector<DeviceId>& devices) const;
  Link WorldLink() const;  // GroupLink of all devices

  // Deterministic order: by each class's first device.
  std::vector<DeviceClass> Classes() const;
  double TotalFlops() const;  // FLOP/s summed over devices
  // 16 lower-case hex digits: 64-bit FNV-1a of ClusterToJson(*this). Plans record it so a plan
  // made for one cluster is not run on another.
  std::string Fingerprint() const;
};

// Parses a cluster file's text; `source` names the file in error messages.
// Bad input → InvalidArgumentError.
absl::StatusOr<Cluster> ParseCluster(const std::string& text, const std::string& source);
// Missing or unreadable file → NotFoundError; bad content → InvalidArgumentError.
absl::StatusOr<Cluster> ReadClusterFile(const std::string& path);

// Canonical form: deterministic bytes for equal clusters, re-readable by ParseCluster, fully
// expanded (one entry per device; device_types and per-node links rebuilt from the devices).
// Numbers are written in the shortest form that reads back to the same double.
std::string ClusterToJson(const Cluster& c);

// The cluster of `members` only (device names of c, in c's order whatever their order here),
// named `name`: nodes left without a device are dropped, links and collective tables kept.
// InvalidArgument naming the device when one is not in c, repeated, or members is empty.
absl::StatusOr<Cluster> SubCluster(const Cluster& c, const std::vector<std::string>& members, const std::string& name);

}  // namespace hetsynth::costmodel
