// The distributed instruction set, part 2: instructions, programs and plans — the contract
// between the synthesizer (which writes plans) and the runtime (which runs them).
//
// A program is a sequence of instructions, each a Hoare triple {pre} instr {post} over the
// properties of rules.h, that starts from the placements of the inputs and parameters and
// reaches the goal Reduce(loss). Only the forward program is stored: backward runs every
// compute instruction's local backward kernel and every collective's dual, in reverse.
// Split groups give the integer shard length of every sharded tensor on every device.
// Gradients of replicated parameters are all-reduced in buckets (one collective per bucket, in
// the order the gradients become ready in backward); with `overlap` they run on a
// communication stream beside backward compute (docs/topology.md).
//
//   absl::Status ok = CheckProgram(graph, program);   // re-derives every triple
//   absl::Status run = RuntimeSupports(program);      // can this build's runtime execute it?
//   std::string json = PlanToJson(graph, plan);
//   absl::StatusOr<Plan> back = PlanFromJson(graph_for(plan), text, "plan.json");
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/instr/rules.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::instr {

enum class InstrKind : uint8_t {
  kPlaceInput,      // {} → Identity(x) | Gather(x, d): every device reads (its rows of) an input
  kPlaceParameter,  // {} → Identity(W): replicated, gradient all-reduced in backward (data
                    //      parallel); {} → Gather(W, d): sharded, each device owns and updates
                    //      its slice (tensor parallel; followed by an all-gather it is ZeRO-3)
  kCompute,         // a compute rule of rules.h
  kAllGather,       // {Gather(t, d)} → {Identity(t)};        dual: reduce-scatter(d)
  kReduceScatter,   // {Reduce(t)} → {Gather(t, d)};          dual: all-gather(d)
  kAllReduce,       // {Reduce(t)} → {Identity(t)};           dual: all-reduce
  kAllToAll,        // {Gather(t, d)} → {Gather(t, d2)};      dual: all-to-all(d2 → d)
  kSlice,           // {Identity(t)} → {Gather(t, d)}, local;  dual: zero-padded gradient
};

// How a collective moves data (DESIGN §4, docs/topology.md). An all-gather / reduce-scatter is
// padded, grouped or hierarchical; an all-reduce ring or hierarchical; an all-to-all has one
// implementation (kNone). Hierarchical needs a two-level mesh (Program::nodes).
enum class CollImpl : uint8_t {
  kNone,          // not a collective, or an all-to-all (one implementation)
  kPadded,        // every shard padded to the largest one; a standard ring collective
  kGrouped,       // grouped point-to-point sends of the true shard sizes
  kRing,          // all-reduce: ring over all devices
  kHierarchical,  // inside every node, then across nodes, then inside every node again
};

std::string_view InstrKindName(InstrKind k);   // "place_input", "all_gather", ...
// "none", "padded", "grouped", "ring", "hierarchical"
std::string_view CollImplName(CollImpl c);
// Inverse of CollImplName; false for any other text.
bool ParseCollImpl(std::string_view name, CollImpl* out);
// Whether `impl` is one of the implementations of collective `kind` (kNone for non-collectives
// and all-to-all; padded, grouped or hierarchical for all-gather and reduce-scatter; ring or
// hierarchical for all-reduce).
bool ImplAllowed(InstrKind kind, CollImpl impl);

struct Instruction {
  InstrKind kind = InstrKind::kCompute;
  ir::NodeId node = -1;            // compute: the graph node
  RuleId rule;                     // compute: the rule (ShardingRules); named in plan files
  ir::ValueId tensor = ir::kNoValue;  // placements and collectives: the tensor moved
  int dim = -1;                    // Gather dim of the pre (all-gather, all-to-all) or post
  int dim2 = -1;                   // all-to-all: the Gather dim of the post
  CollImpl impl = CollImpl::kNone;
  int segment = 0;                 // whose ratios cut the tensors this instruction splits
  // Two-level mesh (topology spec §2–§4). Collectives: world (today's), devices (inside every
  // node at once; the outer placement `outer` kept) or nodes (across nodes; inner Identity
  // before and after). Placements: `outer` set places the mixed form (outer, dim's inner).
  // Compute: `outer_rule` set makes a mesh rule (outer_rule over nodes, rule within a node).
  Level level = Level::kWorld;
  std::optional<Placement> outer;
  std::optional<RuleId> outer_rule;
  std::vector<Property> pre;       // the triple, derived from the fields above
  std::vector<Property> post;
};

// Sharded (tensor, dim) pairs that are cut identically: `atoms` equal units, of which device i
// holds counts[i] contiguous ones in rank order (Σ counts = atoms; zero is allowed).
// On a two-level mesh a group has a level (spec §2): world (per device, Σ = atoms; a mixed
// member's node piece is the sum of its node's devices' counts), nodes (per node, Σ = atoms)
// or devices (per device, each node's counts Σ = atoms). A world form is a member of a world
// group; a mixed form of a world or nodes group by its outer Gather and of a devices group by
// its inner Gather.
struct SplitGroup {
  std::vector<Property> members;   // Gather properties, sorted
  int64_t atoms = 0;
  int segment = 0;
  std::vector<int64_t> counts;     // per device (nodes level: per node)
  Level level = Level::kWorld;
};

// One all-reduce of the concatenated gradients of some replicated parameters, in backward.
// Its collective starts once the last of them is ready (and, with overlap, once the previous
// bucket's is done).
struct Bucket {
  std::vector<ir::ValueId> params;  // replicated parameters in the order their gradients become ready
  CollImpl impl = CollImpl::kRing;  // kRing or kHierarchical
  // kWorld: replicated parameters (Identity), one world all-reduce; kNodes: parameters placed
  // (I, G e) over a two-level mesh, each device's pieces all-reduced across nodes (ring).
  Level kind = Level::kWorld;
};

struct Program {
  int num_devices = 0;
  std::vector<Instruction> instructions;
  std::vector<std::vector<double>> ratios;  // [segment][device], each row sums to 1
  std::vector<SplitGroup> groups;
  // The devices of each node (ranks, ascending), node by node; empty: unknown (one group, no
  // hierarchical collectives). Hierarchical implementations need two or more nodes with ranks
  // node-major (each node's ranks contiguous, nodes in order).
  std::vector<std::vector<int>> nodes;
  // Gradient synchronization of replicated parameters (DESIGN §2's all-reduce dual of an
  // Identity placement). Empty: one all-reduce per parameter, run when backward reaches its
  // placement. Otherwise every replicated parameter is in exactly one bucket, and the buckets'
  // parameters, concatenated, are the replicated parameters in reverse placement order (the
  // order their gradients become ready in backward).
  std::vector<Bucket> buckets;
  // Gradient all-reduces (buckets) and reduce-scatters of ZeRO gradients run on a communication
  // stream overlapping the rest of backward (the optimizer waits for them), and ZeRO
  // parameters are all-gathered ahead of use on that stream. false: every collective blocks.
  bool overlap = false;

  // The group holding a Gather property; -1 if none. `cut` kDevices: the devices group of a
  // mixed form's inner Gather; otherwise the world or nodes group of its outer Gather (of a
  // world form: its group).
  int GroupOf(const Property& p, Level cut = Level::kWorld) const;
  // Per-device lengths of a Gather property's dim (sum = the dim's size). A mixed form: the
  // lengths of its inner Gather dim (each node's sum to the node piece's length).
  std::vector<int64_t> ShardLengths(const ir::Graph& g, const Property& p) const;
  // Per-node lengths of a form's outer Gather dim (world Gather: its node pieces).
  std::vector<int64_t> NodeLengths(const ir::Graph& g, const Property& p) const;
  // The shape of device `rank`'s piece of a property (Gather dims cut, the rest whole).
  ir::Shape LocalShape(const ir::Graph& g, const Property& p, int rank) const;
  // Whether any instruction uses a mixed form, a mesh rule or a non-world collective.
  bool UsesMesh() const;
  // The node of each device (from `nodes`; every device in node 0 when `nodes` is empty).
  std::vector<int> NodeOfDevice() const;
};

// Derives the triple of an instruction from its kind and fields (compute: from the node's rule
// `rule`); an error when the fields do not describe a valid instruction.
absl::Status DeriveTriple(const ir::Graph& g, Instruction& instr);

// "node 'fc' has no rule 'heads'; its rules: replicated, batch0, column, row": the error for a
// compute instruction whose rule (as named in a plan, or by RuleName) its node lacks.
absl::Status NoRule(const ir::Graph& g, ir::NodeId node, std::string_view rule,
                    const std::vector<ComputeRule>& rules);

// The compute rule an instruction names: its node's rule `rule`, or the mesh rule
// (outer_rule, rule) (CombineRules). An error names the node and its rules.
absl::StatusOr<ComputeRule> InstructionRule(const ir::Graph& g, const Instruction& in);

// Builds the split groups of a program from its instructions (union of the split uses of
// every compute rule, plus each collective's Gather operand) with atoms = gcd of the members'
// limits, and assigns counts from the segment ratios by largest-remainder rounding.
absl::Status BuildSplitGroups(const ir::Graph& g, Program& p);

// Largest-remainder rounding of ratios·total to integers that sum to total exactly; ties go to
// the lower index (deterministic).
std::vector<int64_t> RoundShares(const std::vector<double>& ratios, int64_t total);

// Re-verifies a program from the triples: every instruction's triple matches its definition,
// every precondition holds where used, each node is computed at most once, each parameter is
// placed exactly once, the goal Reduce(loss) (or Identity(loss)) is reached, split groups are
// consistent and their counts sum to their atoms, every collective's implementation is one of
// its kind's (hierarchical only on a two-level `nodes`), and the buckets cover the replicated
// parameters in ready order. The error names the instruction or bucket.
absl::Status CheckProgram(const ir::Graph& g, const Program& p);

// The replicated parameters (placed as Identity) in the order their gradients become ready in
// backward: reverse placement order. What CheckProgram requires buckets to list.
std::vector<ir::ValueId> ReplicatedParametersInReadyOrder(const Program& p);

// The parameters placed whole over the nodes and split within them ((I, G e): their gradients
// are all-reduced across nodes), in ready order. What nodes buckets list.
std::vector<ir::ValueId> NodeSyncParametersInReadyOrder(const Program& p);

// Whether `nodes` describes a two-level mesh of `num_devices` ranks: two or more nodes, each
// non-empty, ranks 0..n−1 node-major. What hierarchical collectives need.
bool TwoLevelNodes(const std::vector<std::vector<int>>& nodes, int num_devices);

// OK when this build's runtime can execute the program as planned; otherwise
// FailedPrecondition naming the first feature it cannot run yet and how to get a plan it can.
// Today the runtime runs every program CheckProgram accepts (hierarchical collectives, buckets,
// overlap and properties over mesh levels included; docs/runtime.md) but one that places an
// input or parameter partial over the nodes. The runtime updates this function as it learns new
// features; `hetsynth train --plan` and `bench` ask it before running.
absl::Status RuntimeSupports(const Program& p);

// A plan: the program plus what it was made for and what it is predicted to cost.
struct Plan {
  std::string model;                     // built-in model name
  std::map<std::string, double> model_args;
  int64_t batch = 0;
  std::string cluster;                   // cluster name
  std::string cluster_fingerprint;       // costmodel::Cluster::Fingerprint()
  std::vector<std::string> devices;      // device names in rank order
  std::vector<double> device_flops;      // their FLOP/s (empty in plans that predate it); the
                                         // runtime emulates relative speeds from it
  std::string strategy;                  // "synthesized" or a baseline's name (synth::BaselineNames)
  Program program;
  double predicted_step_time_s = 0;
  double predicted_compute_s = 0;
  double predicted_communication_s = 0;
  double predicted_exposed_communication_s = 0;  // step time not covered by compute (s)
  std::vector<double> instruction_compute_s;        // per instruction, slowest device
  std::vector<double> instruction_communication_s;  // per instruction (forward + backward)
  std::vector<double> predicted_memory_bytes;  // per device
  std::vector<double> memory_capacity_bytes;   // per device
};

std::string PlanToJson(const ir::Graph& g, const Plan& plan);
// Model fields only (to build the graph before reading the program).
absl::StatusOr<Plan> PlanHeaderFromJson(const std::string& text, const std::string& source);
absl::StatusOr<Plan> PlanFromJson(const ir::Graph& g, const std::string& text, const std::string& source);

}  // namespace hetsynth::instr
