// ONNX import: refusals of bad files (built here with ONNX's protobuf classes), and models
// exported from PyTorch by tests/onnx/export_models.py (the ctest fixture onnx_models runs it
// when python3-torch is installed) checked against what PyTorch computed: the forward output,
// the losses of 3 SGD steps, plans for mixed-4 and reference-64, and train --plan on 4 ranks
// against one device.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <system_error>
#include <thread>

#include <sys/stat.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <onnx/onnx_pb.h>

#include "absl/strings/str_cat.h"
#include "cli/run_hetsynth.h"
#include "hetsynth/ir/graph_json.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/ir/onnx_import.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/safetensors.h"
#include "hetsynth/runtime/trainer.h"

namespace hetsynth {
namespace {

using cli_testing::ExpectError;
using cli_testing::Hetsynth;
using json = nlohmann::json;

namespace fs = std::filesystem;

std::string temp_dir;  // set by the first TempDir()

// This process's scratch directory, removed when every test passed (kept, and named, when one
// failed: ctest runs each test in its own process, so one per test).
std::string TempDir() {
  if (temp_dir.empty()) {
    const fs::path p = fs::temp_directory_path() / ("hetsynth_onnx_test_" + std::to_string(getpid()));
    fs::create_directories(p);
    temp_dir = p.string();
  }
  return temp_dir;
}

class RemoveTempDir : public ::testing::Environment {
 public:
  void TearDown() override {
    if (temp_dir.empty()) return;
    if (::testing::UnitTest::GetInstance()->Failed()) {
      std::cerr << "kept " << temp_dir << " for the failure above\n";
      return;
    }
    std::error_code ec;
    fs::remove_all(temp_dir, ec);
  }
};
[[maybe_unused]] ::testing::Environment* const remove_temp_dir = ::testing::AddGlobalTestEnvironment(new RemoveTempDir);

// ---- hand-built models for the refusals ----

void AddTensorInput(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims,
                    const std::string& symbolic_dim0 = "") {
  onnx::ValueInfoProto* v = g->add_input();
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  for (size_t i = 0; i < dims.size(); ++i) {
    auto* d = tt->mutable_shape()->add_dim();
    if (i == 0 && !symbolic_dim0.empty()) d->set_dim_param(symbolic_dim0);
    else if (dims[i] < 0) d->set_dim_param("seq");
    else d->set_dim_value(dims[i]);
  }
}

void AddInitializer(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims) {
  onnx::TensorProto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  int64_t n = 1;
  for (int64_t d : dims) t->add_dims(d), n *= d;
  for (int64_t i = 0; i < n; ++i) t->add_float_data(0.01f * static_cast<float>(i % 7) - 0.02f);
}

// x[2,4] -> Gemm(W[3,4], b[3], transB=1) -> `op` -> y[2,3].
onnx::ModelProto TinyModel(const std::string& op = "Relu") {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("tiny");
  AddTensorInput(g, "x", {2, 4});
  AddInitializer(g, "fc.weight", {3, 4});
  AddInitializer(g, "fc.bias", {3});
  onnx::NodeProto* gemm = g->add_node();
  gemm->set_name("fc");
  gemm->set_op_type("Gemm");
  gemm->add_input("x");
  gemm->add_input("fc.weight");
  gemm->add_input("fc.bias");
  gemm->add_output("h");
  auto* a = gemm->add_attribute();
  a->set_name("transB");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(1);
  onnx::NodeProto* act = g->add_node();
  act->set_name("act");
  act->set_op_type(op);
  act->add_input("h");
  act->add_output("y");
  onnx::ValueInfoProto* y = g->add_output();
  y->set_name("y");
  y->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : {2, 3}) y->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(d);
  return m;
}

std::string Write(const onnx::ModelProto& m, const std::string& name, size_t keep = std::string::npos) {
  const std::string path = TempDir() + "/" + name;
  std::string bytes;
  m.SerializeToString(&bytes);
  std::ofstream(path, std::ios::binary) << bytes.substr(0, keep);
  return path;
}

TEST(OnnxImport, ATinyModelImportsWithItsWeightsAndTrains) {
  const std::string path = Write(TinyModel(), "tiny.onnx");
  absl::StatusOr<ir::OnnxImport> m = ir::ImportOnnx(path, {});
  ASSERT_TRUE(m.ok()) << m.status();
  const ir::Graph& g = m->graph;
  ASSERT_NE(g.Find("fc.weight"), ir::kNoValue);
  const ir::Value& w = g.value(g.Find("fc.weight"));
  EXPECT_EQ(w.init.kind, ir::Init::Kind::kData);
  ASSERT_EQ(w.init.data->size(), 12u);
  EXPECT_FLOAT_EQ((*w.init.data)[1], 0.01f - 0.02f);
  EXPECT_EQ(g.value(g.Find("labels")).shape, ir::Shape{2});
  const auto r = Hetsynth("train --model " + path + " --steps 2 --optimizer sgd --quiet");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST(OnnxImport, BadFilesExitTwoWithOneLine) {
  const std::string cluster = std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json";
  const std::string synth = " --cluster " + cluster + " -o " + TempDir() + "/p.json";
  // Truncated protobuf.
  const std::string truncated = Write(TinyModel(), "truncated.onnx", 40);
  ExpectError("synth --model " + truncated + synth, "truncated.onnx");
  // Missing initializer: the weight is declared as a graph input with no value.
  onnx::ModelProto missing = TinyModel();
  missing.mutable_graph()->mutable_initializer()->DeleteSubrange(0, 1);
  AddTensorInput(missing.mutable_graph(), "fc.weight", {3, 4});
  ExpectError("synth --model " + Write(missing, "missing.onnx") + synth, "missing initializer");
  // Dangling input.
  onnx::ModelProto dangling = TinyModel();
  dangling.mutable_graph()->mutable_node(1)->set_input(0, "nowhere");
  const auto d = Hetsynth("synth --model " + Write(dangling, "dangling.onnx") + synth);
  EXPECT_EQ(d.code, 2) << d.output;
  EXPECT_NE(d.output.find("nowhere"), std::string::npos) << d.output;
  // Unsupported operator: named, and the supported ones listed.
  ExpectError("synth --model " + Write(TinyModel("Elu"), "elu.onnx") + synth, "unsupported operator 'Elu'");
  ExpectError("synth --model " + Write(TinyModel("Elu"), "elu.onnx") + synth, "supported: Abs, Add,");
  // Unresolvable shapes: a symbolic batch without --batch, a symbolic dim other than the batch.
  onnx::ModelProto batch = TinyModel();
  batch.mutable_graph()->mutable_input()->Clear();
  AddTensorInput(batch.mutable_graph(), "x", {2, 4}, "N");
  ExpectError("synth --model " + Write(batch, "batch.onnx") + synth, "bind it with --batch");
  EXPECT_EQ(Hetsynth("synth --model " + Write(batch, "batch.onnx") + synth + " --batch 8").code, 0);
  onnx::ModelProto seq = TinyModel();
  seq.mutable_graph()->mutable_input()->Clear();
  AddTensorInput(seq.mutable_graph(), "x", {2, -1});
  ExpectError("synth --model " + Write(seq, "seq.onnx") + synth, "dim 1 ('seq') is symbolic");
  // A plan refuses a model file that changed since.
  const std::string good = Write(TinyModel(), "plan-model.onnx");
  const std::string plan = TempDir() + "/tiny-plan.json";
  ASSERT_EQ(Hetsynth("synth --model " + good + " --cluster " + cluster + " --flat --no-overlap -o " + plan).code, 0);
  Write(TinyModel("Sigmoid"), "plan-model.onnx");
  ExpectError("train --plan " + plan + " --steps 1", "has changed");
  // So does a graph file whose weights file changed (the graph's own bytes did not).
  Write(TinyModel(), "plan-model.onnx");
  const std::string graph = TempDir() + "/tiny-graph.json", weights = TempDir() + "/tiny-graph.safetensors";
  ASSERT_EQ(Hetsynth("import " + good + " -o " + graph + " --weights " + weights).code, 0);
  const std::string graph_plan = TempDir() + "/tiny-graph-plan.json";
  ASSERT_EQ(Hetsynth("synth --model " + graph + " --cluster " + cluster + " --flat --no-overlap -o " + graph_plan).code, 0);
  ASSERT_EQ(Hetsynth("train --plan " + graph_plan + " --steps 1 --quiet").code, 0);
  std::string bytes;
  {
    std::ifstream in(weights, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_FALSE(bytes.empty());
  bytes.back() = static_cast<char>(bytes.back() ^ 1);  // one bit of the last weight
  std::ofstream(weights, std::ios::binary) << bytes;
  ExpectError("train --plan " + graph_plan + " --steps 1", "(with its weights file) has changed");
}

// An ONNX file is read once per command: the graph MakeModelSpec imported goes to the BuildModel
// after it while the file's stamp (device, inode, size, mtime, ctime) holds; a file modified in
// the last 2 s has none. A file that changes in between is read again, and a plan's recorded
// hash refuses it — also when the rewrite put the old mtime back (ctime still moved).
TEST(OnnxImport, AFileIsParsedOnceAndReadAgainWhenItChanges) {
  namespace fs = std::filesystem;
  const auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(3100)); };  // past the 2 s
  const std::string path = Write(TinyModel("Relu"), "stamp.onnx");
  settle();
  uint64_t before = ir::OnnxFilesParsed();
  absl::StatusOr<ir::ModelSpec> spec = ir::MakeModelSpec(path, {}, 0, ir::Preset::kDefault);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(ir::BuildModel(*spec).ok());
  EXPECT_EQ(ir::OnnxFilesParsed() - before, 1u) << "the spec's graph was not handed to the build";
  // A handed-over graph is checked against the recorded hash too: the slot's hash, not the spec's.
  spec = ir::MakeModelSpec(path, {}, 0, ir::Preset::kDefault);
  ASSERT_TRUE(spec.ok()) << spec.status();
  for (const bool from_plan : {false, true}) {
    ir::ModelSpec other = *spec;
    other.args["file_hash"] = spec->args.at("file_hash") == 0 ? 1 : 0;
    other.file_hash_given = from_plan;
    before = ir::OnnxFilesParsed();
    absl::StatusOr<ir::Graph> refused = ir::BuildModel(other);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(std::string(refused.status().message())
                  .find(from_plan ? "has changed: it hashes to" : "has changed since this command first read it"),
              std::string::npos)
        << refused.status();
    EXPECT_EQ(ir::OnnxFilesParsed() - before, 0u) << "refused before parsing";
  }
  // A recorded hash is the file's 48-bit hash or nothing.
  for (const char* bad : {"file_hash=-1", "file_hash=nan", "file_hash=1e30", "file_hash=1.5", "file_hash=281474976710656"}) {
    absl::StatusOr<ir::ModelSpec> s = ir::MakeModelSpec(path, {bad}, 0, ir::Preset::kDefault);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(std::string(s.status().message()).find("expected the model file's 48-bit hash"), std::string::npos)
        << s.status();
  }
  // The same size, other bytes (Relu → Tanh), the old mtime put back, and settled: only ctime tells.
  spec = ir::MakeModelSpec(path, {}, 0, ir::Preset::kDefault);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const fs::file_time_type mtime = fs::last_write_time(path);
  Write(TinyModel("Tanh"), "stamp.onnx");
  fs::last_write_time(path, mtime);
  settle();
  ASSERT_TRUE(ir::StampOf(path).has_value());
  before = ir::OnnxFilesParsed();
  absl::StatusOr<ir::Graph> g = ir::BuildModel(*spec);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(std::string(g.status().message()).find("has changed"), std::string::npos) << g.status();
  EXPECT_EQ(ir::OnnxFilesParsed() - before, 0u) << "refused before parsing";
  // Without a recorded hash the build imports what the file now holds.
  ir::ModelSpec fresh = *spec;
  fresh.args.erase("file_hash");
  absl::StatusOr<ir::Graph> h = ir::BuildModel(fresh);
  ASSERT_TRUE(h.ok()) << h.status();
  bool has_tanh = false;
  for (const ir::Node& n : h->nodes()) has_tanh |= n.kind == ir::OpKind::kTanh;
  EXPECT_TRUE(has_tanh);
  // Just written: no stamp (checked when this machine got there within a second), and a file
  // modified in the future none either, so no handover (two parses).
  const auto written = std::chrono::steady_clock::now();
  Write(TinyModel("Relu"), "stamp.onnx");
  const bool stamped = ir::StampOf(path).has_value();
  if (std::chrono::steady_clock::now() - written < std::chrono::seconds(1)) {
    EXPECT_FALSE(stamped);
  }
  fs::last_write_time(path, fs::file_time_type::clock::now() + std::chrono::hours(1));
  EXPECT_FALSE(ir::StampOf(path).has_value());
  before = ir::OnnxFilesParsed();
  spec = ir::MakeModelSpec(path, {}, 0, ir::Preset::kDefault);
  ASSERT_TRUE(spec.ok() && ir::BuildModel(*spec).ok());
  EXPECT_EQ(ir::OnnxFilesParsed() - before, 2u);
  // Without --batch, a second input whose dim 0 is not the batch: the build binds it to the
  // batch (dim 0 of every input), so the spec's graph (imported at the file's own shapes) is not
  // the one to hand over.
  onnx::ModelProto two = TinyModel("Relu");
  AddTensorInput(two.mutable_graph(), "m", {1, 4});
  two.mutable_graph()->mutable_node(0)->set_input(0, "xm");
  onnx::NodeProto* add = two.mutable_graph()->add_node();
  add->set_name("add");
  add->set_op_type("Add");
  add->add_input("x");
  add->add_input("m");
  add->add_output("xm");
  two.mutable_graph()->mutable_node()->SwapElements(0, 2);  // add, act, fc
  two.mutable_graph()->mutable_node()->SwapElements(1, 2);  // add, fc, act: in order
  const std::string two_path = Write(two, "two-inputs.onnx");
  settle();
  before = ir::OnnxFilesParsed();
  spec = ir::MakeModelSpec(two_path, {}, 0, ir::Preset::kDefault);
  ASSERT_TRUE(spec.ok()) << spec.status();
  absl::StatusOr<ir::Graph> built = ir::BuildModel(*spec);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(ir::OnnxFilesParsed() - before, 2u);
  EXPECT_EQ(built->value(built->Find("m")).shape, (ir::Shape{2, 4}));
}

// ---- invalid attributes and inputs (docs/onnx.md, "Errors") ----

// A model: input x of `dims` (dim 0 symbolic, "batch"), output h, nodes and initializers added
// by the caller; written as `name` at `opset`.
struct Built {
  onnx::ModelProto m;
  onnx::GraphProto* g;
  explicit Built(const std::vector<int64_t>& dims, int64_t opset = 17) : g(m.mutable_graph()) {
    m.set_ir_version(8);
    m.add_opset_import()->set_version(opset);
    g->set_name("built");
    AddTensorInput(g, "x", dims, "batch");
    g->add_output()->set_name("h");
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
  }
  onnx::NodeProto* Node(const std::string& op, const std::string& name, const std::vector<std::string>& in,
                        const std::vector<std::string>& out = {"h"}) {
    onnx::NodeProto* n = g->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const std::string& i : in) n->add_input(i);
    for (const std::string& o : out) n->add_output(o);
    return n;
  }
  void Ints(const std::string& name, const std::vector<int64_t>& dims, const std::vector<int64_t>& v) {
    onnx::TensorProto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    for (int64_t d : dims) t->add_dims(d);
    for (int64_t x : v) t->add_int64_data(x);
  }
  void Floats(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
    onnx::TensorProto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    for (float x : v) t->add_float_data(x);
  }
  std::string Write(const std::string& name) const { return ::hetsynth::Write(m, name); }
};

void SetInts(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}
void SetInt(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
void SetFloat(onnx::NodeProto* n, const std::string& name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}
void SetString(onnx::NodeProto* n, const std::string& name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}
std::vector<float> Ones(size_t n) { return std::vector<float>(n, 1.0f); }

// Each was a crash (heap corruption, SIGSEGV, SIGFPE), a hang, gigabytes of folding or an
// internal exception's text; now one line naming the node, its field and value, exit status 2.
TEST(OnnxImport, InvalidAttributesAndInputsAreRefusedWithOneLine) {
  std::vector<std::pair<std::string, std::string>> cases;  // (model file, expected text)
  auto add = [&](const Built& b, const std::string& name, const std::string& needle) { cases.push_back({b.Write(name), needle}); };
  {
    Built b({2, 8});  // F1: an Unsqueeze axis out of range wrote out of bounds
    b.Node("Unsqueeze", "us", {"x", "ax"});
    b.Ints("ax", {1}, {7});
    add(b, "unsqueeze7.onnx", "node 'us' (Unsqueeze) input 1 (axes): 7 out of range for output rank 3");
  }
  {
    Built b({2, 8});
    b.Node("Unsqueeze", "us", {"x", "ax"});
    b.Ints("ax", {2}, {1, 1});
    add(b, "unsqueeze_dup.onnx", "node 'us' (Unsqueeze) input 1 (axes): [1,1] names axis 1 twice");
  }
  {
    Built b({2, 3, 4});  // F2
    SetInts(b.Node("Transpose", "tr", {"x"}), "perm", {0, 99, 1});
    add(b, "transpose99.onnx", "node 'tr' (Transpose) attribute perm: [0,99,1] for an input of rank 3");
  }
  {
    Built b({2, 8});
    SetInts(b.Node("Transpose", "tr", {"x"}), "perm", {0, 0});
    add(b, "transpose00.onnx", "attribute perm: [0,0] for an input of rank 2; expected a permutation");
  }
  {
    Built b({2, 2, 8});  // F3: crashed in ONNX's shape inference
    b.Node("Conv", "cv", {"x", "W"});
    b.Floats("W", {2, 2, 3, 3}, Ones(36));
    add(b, "conv_rank3.onnx", "node 'cv' (Conv) input 0 (X): shape [2,2,8]; W of shape [2,2,3,3] needs X of rank 4");
  }
  {
    Built b({2, 4, 8, 8});  // F4: SIGFPE
    SetInts(b.Node("Conv", "cv", {"x", "W"}), "strides", {0, 0});
    b.Floats("W", {6, 4, 3, 3}, Ones(216));
    add(b, "conv_stride0.onnx", "node 'cv' (Conv) attribute strides: [0,0]; expected positive values");
  }
  {
    Built b({2, 4, 8, 8});
    auto* n = b.Node("MaxPool", "mp", {"x"});
    SetInts(n, "kernel_shape", {2, 2});
    SetInts(n, "strides", {0, 0});
    add(b, "maxpool_stride0.onnx", "node 'mp' (MaxPool) attributes kernel_shape/strides/dilations: [2,2]/[0,0]/[1,1]");
  }
  {
    Built b({2, 4, 8, 8});  // F8: the attribute contradicted the weight
    SetInts(b.Node("Conv", "cv", {"x", "W"}), "kernel_shape", {5, 5});
    b.Floats("W", {6, 4, 3, 3}, Ones(216));
    add(b, "conv_kernel_shape.onnx", "node 'cv' (Conv) attribute kernel_shape: [5,5] but W has shape [6,4,3,3]");
  }
  {
    Built b({2, 1, 4, 4});
    auto* n = b.Node("AveragePool", "ap", {"x"});
    SetInts(n, "kernel_shape", {int64_t{1} << 40, 2});
    SetString(n, "auto_pad", "SAME_LOWER");
    add(b, "pool_huge_kernel.onnx", "node 'ap' (AveragePool) attribute kernel_shape: [1099511627776,2]");
  }
  {
    Built b({2, 8});  // U6: a shape computed from a NaN was reported at the Reshape using it
    SetInt(b.Node("Cast", "ct", {"f"}, {"s"}), "to", onnx::TensorProto::INT64);
    b.Floats("f", {2}, {std::nanf(""), 8.0f});
    b.Node("Reshape", "rs", {"x", "s"});
    add(b, "cast_nan.onnx", "node 'ct' (Cast) attribute to: INT64: element 0 is nan; expected a finite value");
  }
  {
    Built b({2, 8});  // U6: integer overflow in shape arithmetic
    b.Node("Mul", "mu", {"a", "a"}, {"s"});
    b.Ints("a", {2}, {int64_t{1} << 40, 4});
    b.Node("Reshape", "rs", {"x", "s"});
    add(b, "mul_overflow.onnx", "node 'mu' (Mul): integer result 1.20893e+24 (element 0) is past the int64 range");
  }
  {
    Built b({2, 8});  // F7: vector::_M_range_check
    b.Node("Slice", "sl", {"x", "st", "en", "ax"});
    b.Ints("st", {1}, {0});
    b.Ints("en", {1}, {4});
    b.Ints("ax", {1}, {5});
    add(b, "slice_axis.onnx", "node 'sl' (Slice) input 3 (axes): 5 out of range for rank 2");
  }
  {
    Built b({2, 8});
    SetInt(b.Node("Split", "sp", {"x"}, {"h", "h2"}), "axis", 4);
    add(b, "split_axis.onnx", "node 'sp' (Split) attribute axis: 4 out of range for an input of rank 2");
  }
  {
    Built b({2, 8});
    b.Node("Reshape", "rs", {"x", "s"});
    b.Ints("s", {4}, {0, 0, 0, 0});
    add(b, "reshape_zero.onnx", "node 'rs' (Reshape) input 1 (shape): cannot reshape [2,8] to [0,0,0,0]: 0 at position 2");
  }
  {
    Built b({2, 8});
    b.Node("Reshape", "rs", {"x", "s"});
    b.Ints("s", {2}, {-1, -1});
    add(b, "reshape_two_infer.onnx", "-1 appears more than once");
  }
  {
    Built b({2, 8});
    SetInt(b.Node("Flatten", "fl", {"x"}), "axis", 99);
    add(b, "flatten99.onnx", "node 'fl' (Flatten) attribute axis: 99 out of range for an input of rank 2; expected -2..2");
  }
  {
    Built b({2, 8});
    b.Node("Squeeze", "sq", {"x", "ax"});
    b.Ints("ax", {1}, {9});
    add(b, "squeeze9.onnx", "node 'sq' (Squeeze) input 1 (axes): 9 out of range for input rank 2");
  }
  {
    Built b({2, 8});
    b.Node("Squeeze", "sq", {"x", "ax"});
    b.Ints("ax", {1}, {1});
    add(b, "squeeze_not1.onnx", "input 1 (axes): axis 1 has size 8");
  }
  {
    Built b({2, 8});  // F6: a billion elements folded
    onnx::NodeProto* c = b.Node("ConstantOfShape", "cos", {"s"}, {"c"});
    (void)c;
    b.Node("Add", "ad", {"x", "c"});
    b.Ints("s", {1}, {1000000000});
    add(b, "constantofshape_1e9.onnx", "node 'cos' (ConstantOfShape) input 0 (shape): a constant of shape [1000000000]");
  }
  {
    Built b({2, 8});
    b.Node("ConstantOfShape", "cos", {"s"}, {"c"});
    b.Node("Add", "ad", {"x", "c"});
    b.Ints("s", {2}, {-5, 8});
    add(b, "constantofshape_neg.onnx", "node 'cos' (ConstantOfShape) input 0 (shape): a constant of shape [-5,8]: dim 0 is -5");
  }
  {
    Built b({2, 8});
    b.Node("Range", "rg", {"a", "l", "d"}, {"r"});
    b.Node("Add", "ad", {"x", "r"});
    b.Floats("a", {}, {0});
    b.Floats("l", {}, {INFINITY});
    b.Floats("d", {}, {1});
    add(b, "range_inf.onnx", "node 'rg' (Range): Range(start 0, limit inf, delta 1) has no end");
  }
  {
    Built b({2, 8});
    b.Node("Range", "rg", {"a", "l", "d"}, {"r"});
    b.Node("Add", "ad", {"x", "r"});
    b.Floats("a", {2}, {0, 1});
    b.Floats("l", {}, {8});
    b.Floats("d", {}, {1});
    add(b, "range_start.onnx", "node 'rg' (Range) input 0 (start): shape [2]; expected a scalar");
  }
  {
    Built b({2, 8});
    b.Node("Pad", "pd", {"x", "p"});
    b.Ints("p", {4}, {0, 1000000000, 0, 0});
    add(b, "pad_1e9.onnx", "node 'pd' (Pad) pads: [0,1000000000,0,0]");
  }
  {
    Built b({2, 3, 4}, 99);  // F9: an opset newer than the importer knows
    b.Node("Relu", "r", {"x"});
    add(b, "opset99.onnx", "opset 99; supported: opsets 1 to 17");
  }
  {
    Built b({2, 8}, 6);  // Add before opset 7 broadcasts by attributes
    b.Node("Add", "ad", {"x", "x"});
    add(b, "add_opset6.onnx", "node 'ad' (Add): opset 6 defines Add version 6, which is not supported; expected version 7");
  }
  {
    Built b({2, 4});  // F14
    SetInt(b.Node("Gemm", "fc", {"x", "W"}), "transB", 1);
    b.Floats("W", {3, 4}, {NAN, 1, 1, 1, 1, INFINITY, 1, 1, 1, 1, 1, 1});
    add(b, "weight_nan.onnx", "initializer 'W' of shape [3,4] element 0 is nan; expected finite weights");
  }
  {
    Built b({2, 4});  // a weight's raw bytes one float short (the direct float path leaves it to the full check)
    SetInt(b.Node("Gemm", "fc", {"x", "W"}), "transB", 1);
    b.Floats("W", {3, 4}, Ones(12));
    onnx::TensorProto* w = b.g->mutable_initializer(b.g->initializer_size() - 1);
    w->clear_float_data();
    w->set_raw_data(std::string(44, '\0'));
    add(b, "weight_raw_short.onnx", "tensor 'W' of shape [3,4] has 44 bytes of data; expected 48");
  }
  {
    Built b({2, 4});  // and one float_data value short
    SetInt(b.Node("Gemm", "fc", {"x", "W"}), "transB", 1);
    b.Floats("W", {3, 4}, Ones(11));
    add(b, "weight_values_short.onnx", "tensor 'W' of shape [3,4] holds 11 stored values; expected one per element");
  }
  {
    Built b({2, 4});
    auto* n = b.Node("Gemm", "fc", {"x", "W"});
    SetInt(n, "transB", 1);
    SetFloat(n, "alpha", NAN);
    b.Floats("W", {3, 4}, Ones(12));
    add(b, "gemm_alpha_nan.onnx", "node 'fc' (Gemm) attribute alpha: nan; expected a finite number");
  }
  {
    Built b({2, 2, 4, 4});
    b.Node("BatchNormalization", "bn", {"x", "sc", "bi", "mu", "va"});
    b.Floats("sc", {2}, Ones(2));
    b.Floats("bi", {2}, {0, 0});
    b.Floats("mu", {2}, {0, 0});
    b.Floats("va", {2}, {1, -1});
    add(b, "bn_var_neg.onnx", "node 'bn' (BatchNormalization) input 4 (input_var): 'va' element 1 is -1");
  }
  {
    Built b({2, 8});  // U1
    b.g->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_value(-1);
    b.Node("Relu", "r", {"x"});
    add(b, "dim_neg.onnx", "graph input 'x' dim 1 is -1; expected a positive size or a name");
  }
  for (const auto& [path, needle] : cases) ExpectError("models --model " + path + " --batch 2", needle);
}

// F5: a chain of 20000 nodes (each consuming the one before) imports: the importer's walk is
// iterative for constants and runs on a stack of its own for the rest (it overflowed the
// default 8 MiB stack at 5000).
TEST(OnnxImport, ADeepChainImports) {
  Built b({2, 8});
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    b.Node("Relu", absl::StrCat("relu", i), {i == 0 ? std::string("x") : absl::StrCat("r", i)},
           {i + 1 < n ? absl::StrCat("r", i + 1) : std::string("h")});
  }
  ir::OnnxImportOptions o;
  o.batch = 2;
  o.loss = "none";
  absl::StatusOr<ir::OnnxImport> m = ir::ImportOnnx(b.Write("chain.onnx"), o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->graph.nodes().size(), static_cast<size_t>(n));
}

// F9: before opset 13 Softmax(axis=1) normalizes each row of the input flattened to 2-D at the
// axis, not along dim 1 alone.
TEST(OnnxImport, OpsetElevenSoftmaxFlattensAtItsAxis) {
  Built b({2, 3, 4}, 11);
  SetInt(b.Node("Softmax", "sm", {"x"}), "axis", 1);
  ir::OnnxImportOptions o;
  o.batch = 2;
  o.loss = "none";
  absl::StatusOr<ir::OnnxImport> m = ir::ImportOnnx(b.Write("softmax11.onnx"), o);
  ASSERT_TRUE(m.ok()) << m.status();
  const ir::Graph& g = m->graph;
  bool found = false;
  for (const ir::Node& n : g.nodes()) {
    if (n.kind != ir::OpKind::kSoftmax) continue;
    found = true;
    EXPECT_EQ(g.value(n.inputs[0]).shape, (ir::Shape{2, 12}));
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(g.value(g.Find(m->output)).shape, (ir::Shape{2, 3, 4}));
}

// F10: a path that is not a regular file is refused before reading (/dev/zero never ends, a
// FIFO blocks), for model files and graph files alike; a directory says so (F7).
TEST(OnnxImport, NonRegularFilesAreRefusedBeforeReading) {
  const std::string fifo = TempDir() + "/fifo.onnx", fifo_json = TempDir() + "/fifo.json", dir = TempDir() + "/dir.onnx";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo(fifo_json.c_str(), 0600), 0);
  fs::create_directories(dir);
  ExpectError("models --model " + fifo + " --batch 2", "model file '" + fifo + "': is not a regular file");
  ExpectError("models --model " + fifo_json, "is not a regular file");
  const std::string zero = TempDir() + "/zero.onnx";
  fs::remove(zero);
  fs::create_symlink("/dev/zero", zero);
  ExpectError("models --model " + zero + " --batch 2", "model file '" + zero + "': is not a regular file");
  ExpectError("models --model " + dir + " --batch 2", "model file '" + dir + "': is a directory");
  absl::StatusOr<ir::Graph> g = ir::ReadGraphFile(fifo_json);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("not a regular file"), std::string::npos) << g.status();
  // A graph whose weights file is a FIFO: its check must not block either.
  const std::string graph = TempDir() + "/fifo-weights.json";
  ASSERT_EQ(Hetsynth("models --model mlp --small --graph-out " + graph).code, 0);
  nlohmann::json j = nlohmann::json::parse(std::ifstream(graph));
  j["weights"] = fifo;
  std::ofstream(graph) << j.dump();
  ExpectError("models --model " + graph, "weights: '" + fifo + "' cannot be opened (not a regular file)");
  fs::remove(fifo);
  fs::remove(fifo_json);
  fs::remove(zero);
}

// F11: a model whose output is its input has nothing to train.
TEST(OnnxImport, AModelWithoutParametersIsNotTrained) {
  Built b({2, 8});
  b.g->mutable_output(0)->set_name("x");
  ExpectError("train --model " + b.Write("no_params.onnx") + " --batch 2 --steps 2 --quiet", "has no trainable parameters");
}

// ---- models exported from PyTorch ----

std::string ModelDir() { return HETSYNTH_ONNX_MODELS; }

struct Expect {
  std::vector<double> losses, forward;
  // The same steps in float64 where recorded (batch-norm CNNs), else empty.
  std::vector<double> losses_fp64;
  std::vector<int64_t> forward_shape;
  // Batch norm's running statistics after the steps, by name (batch-norm CNNs).
  std::map<std::string, std::vector<double>> running;
  int64_t batch = 0;
  double lr = 0;
  std::string loss = "cross_entropy";
};

class FromPyTorch : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    onnx_ = ModelDir() + "/" + GetParam() + ".onnx";
    data_ = ModelDir() + "/" + GetParam() + ".data.safetensors";
    const std::string expect = ModelDir() + "/" + GetParam() + ".expect.json";
    if (!fs::exists(onnx_) || !fs::exists(expect)) {
      GTEST_SKIP() << "no " << onnx_ << ": tests/onnx/export_models.py did not run (it needs python3-torch, and "
                   << "python3-torchvision for torchvision_vit, torchvision_vgg11, resnet18 and mobilenet_v2; the ctest fixture onnx_models runs it)";
    }
    const json j = json::parse(std::ifstream(expect));
    e_.losses = j.at("losses").get<std::vector<double>>();
    e_.forward = j.at("forward").get<std::vector<double>>();
    e_.forward_shape = j.at("forward_shape").get<std::vector<int64_t>>();
    e_.batch = j.at("batch").get<int64_t>();
    e_.lr = j.at("lr").get<double>();
    e_.loss = j.value("loss", "cross_entropy");
    if (j.contains("losses_fp64")) e_.losses_fp64 = j.at("losses_fp64").get<std::vector<double>>();
    if (j.contains("running")) e_.running = j.at("running").get<std::map<std::string, std::vector<double>>>();
  }
  // How close step s's loss must be to PyTorch's: 1e-4, or — where PyTorch's own fp32 loss is
  // further than that from its float64 one — three times that spread. Two fp32 runs that sum in
  // different orders cannot agree better than the problem's conditioning allows: MobileNetV2's
  // batch norms over 8 images of 1×1 maps put PyTorch's fp32 losses 5e-4 and 6e-2 from its
  // float64 ones after one and two steps (ResNet-18's: 1e-5).
  double LossTolerance(size_t s) const {
    if (e_.losses_fp64.empty()) return 1e-4;
    return std::max(1e-4, 3 * std::abs(e_.losses[s] - e_.losses_fp64[s]));
  }
  std::string onnx_, data_;
  Expect e_;
};

TEST_P(FromPyTorch, ForwardMatchesPyTorch) {
  ir::OnnxImportOptions o;
  o.batch = e_.batch;
  o.loss = "none";
  absl::StatusOr<ir::OnnxImport> m = ir::ImportOnnx(onnx_, o);
  ASSERT_TRUE(m.ok()) << m.status();
  const ir::Graph& g = m->graph;
  absl::StatusOr<runtime::SafetensorsFile> data = runtime::ReadSafetensors(data_);
  ASSERT_TRUE(data.ok()) << data.status();
  // Every node forward on the CPU kernels, batch 0 of the data file as the input.
  std::vector<runtime::Tensor> values(g.values().size());
  for (ir::ValueId v = 0; v < static_cast<ir::ValueId>(g.values().size()); ++v) {
    const ir::Value& val = g.value(v);
    if (val.kind == ir::ValueKind::kParameter) {
      values[v] = runtime::Tensor(val.shape);
      std::copy(val.init.data->begin(), val.init.data->end(), values[v].data.begin());
    } else if (val.kind == ir::ValueKind::kInput) {
      const runtime::Tensor& all = data->tensors.at(val.name);
      values[v] = runtime::Tensor(val.shape);
      std::copy(all.data.begin(), all.data.begin() + values[v].numel(), values[v].data.begin());
    }
  }
  for (const ir::Node& n : g.nodes()) {
    std::vector<const runtime::Tensor*> in;
    for (ir::ValueId x : n.inputs) in.push_back(&values[x]);
    values[n.output] = runtime::Tensor(g.value(n.output).shape);
    runtime::SavedState saved;
    runtime::Forward(n, runtime::KernelContext{}, in, values[n.output], saved);
  }
  const runtime::Tensor& y = values[g.Find(m->output)];
  ASSERT_EQ(y.shape, e_.forward_shape);
  double worst = 0;
  for (size_t i = 0; i < e_.forward.size(); ++i) {
    // Relative to the value, or absolute below 1 (values near 0 have no relative accuracy).
    worst = std::max(worst, std::abs(y.data[i] - e_.forward[i]) / std::max(1.0, std::abs(e_.forward[i])));
  }
  EXPECT_LE(worst, 1e-4) << GetParam();
  std::printf("%s: forward max relative difference %.3g over %zu outputs\n", GetParam().c_str(), worst, e_.forward.size());
}

TEST_P(FromPyTorch, ThreeSgdStepsMatchPyTorch) {
  ir::OnnxImportOptions o;
  o.batch = e_.batch;
  o.loss = e_.loss;
  absl::StatusOr<ir::OnnxImport> m = ir::ImportOnnx(onnx_, o);
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<runtime::DataSource> data = runtime::DataSource::FromFile(data_, m->graph);
  ASSERT_TRUE(data.ok()) << data.status();
  runtime::OptimizerConfig cfg;
  cfg.kind = runtime::OptimizerKind::kSgd;
  cfg.lr = e_.lr;
  auto trainer = runtime::Trainer::Create(m->graph, cfg, 0);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  for (size_t s = 0; s < e_.losses.size(); ++s) {
    absl::StatusOr<float> loss = (*trainer)->Step(*data->Get(static_cast<int64_t>(s)));
    ASSERT_TRUE(loss.ok()) << loss.status();
    EXPECT_NEAR(*loss, e_.losses[s], LossTolerance(s)) << GetParam() << " step " << s;
    if (e_.losses_fp64.empty()) {
      std::printf("%s: step %zu loss %.6f (PyTorch %.6f)\n", GetParam().c_str(), s, *loss, e_.losses[s]);
    } else {
      std::printf("%s: step %zu loss %.6f (PyTorch %.6f, PyTorch float64 %.6f)\n", GetParam().c_str(), s, *loss,
                  e_.losses[s], e_.losses_fp64[s]);
    }
  }
  if (e_.running.empty()) return;
  // The running statistics moved as PyTorch's did: saved with the parameters, under their names.
  ASSERT_EQ(m->graph.running_stats().size(), e_.running.size());
  auto worst_of = [&](runtime::SingleDeviceTrainer& t, const std::map<std::string, std::vector<double>>& expect,
                      const std::string& tag) {
    const std::string ckpt = TempDir() + "/" + GetParam() + "-" + tag + ".safetensors";
    EXPECT_TRUE(t.Save(ckpt, GetParam()).ok());
    absl::StatusOr<runtime::SafetensorsFile> file = runtime::ReadSafetensors(ckpt);
    EXPECT_TRUE(file.ok()) << file.status();
    double worst = 0;
    for (const auto& [name, want] : expect) {
      if (!file.ok() || !file->tensors.count(name) || file->tensors.at(name).data.size() != want.size()) {
        ADD_FAILURE() << name << " missing or of the wrong size";
        return 1e9;
      }
      const runtime::Tensor& got = file->tensors.at(name);
      for (size_t i = 0; i < want.size(); ++i) {
        worst = std::max(worst, std::abs(got.data[i] - want[i]) / std::max(1.0, std::abs(want[i])));
      }
    }
    return worst;
  };
  const double after_all = worst_of(**trainer, e_.running, "running");
  std::printf("%s: running statistics (%zu tensors) after %zu steps: max relative difference from PyTorch's %.3g\n",
              GetParam().c_str(), e_.running.size(), e_.losses.size(), after_all);
  // They follow the weights after each step: as close as the losses allow (ResNet-18: 1e-3;
  // measured 1.4e-5).
  EXPECT_LE(after_all, 10 * LossTolerance(e_.losses.size() - 1)) << GetParam();
}

std::vector<double> Losses(const std::string& metrics) {
  std::vector<double> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(json::parse(line).at("loss").get<double>());
  }
  return out;
}

TEST_P(FromPyTorch, PlansForMixed4AndReference64AndFourRanksMatchOneDevice) {
  const std::string dir = TempDir() + "/" + GetParam();
  fs::create_directories(dir);
  const std::string clusters = std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/";
  const std::string model =
      " --model " + onnx_ + " --batch " + std::to_string(e_.batch) + (e_.loss == "mse" ? " --loss mse" : "");
  const auto big = Hetsynth("synth" + model + " --cluster " + clusters + "reference-64.json -o " + dir + "/ref64.json");
  EXPECT_EQ(big.code, 0) << big.output;
  const std::string plan = dir + "/mixed4.json";
  // --flat --no-overlap: the runtime does not run bucketed plans yet (as in train_plan_test).
  const auto s = Hetsynth("synth" + model + " --cluster " + clusters + "mixed-4.json --flat --no-overlap -o " + plan);
  ASSERT_EQ(s.code, 0) << s.output;
  const std::string train =
      " --data " + data_ + " --steps 3 --optimizer sgd --lr " + absl::StrCat(e_.lr) + " --quiet --metrics ";
  const auto one = Hetsynth("train" + model + " --save " + dir + "/one.safetensors" + train + dir + "/one.jsonl");
  ASSERT_EQ(one.code, 0) << one.output;
  std::vector<std::pair<std::string, std::string>> plans = {{"synthesized", plan}};
  if (!e_.losses_fp64.empty()) {
    // Batch norm: the data-parallel plan too, whose batch statistics are partial sums
    // all-reduced across the ranks (the synthesized one splits channels instead).
    const std::string ddp = dir + "/ddp.json";
    const auto d = Hetsynth("synth" + model + " --cluster " + clusters + "mixed-4.json --baseline ddp-cp -o " + ddp);
    ASSERT_EQ(d.code, 0) << d.output;
    plans.push_back({"ddp-cp", ddp});
  }
  const std::vector<double> a = Losses(dir + "/one.jsonl");
  ASSERT_EQ(a.size(), 3u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i], e_.losses[i], LossTolerance(i)) << GetParam() << " step " << i << " (hetsynth train vs PyTorch)";
  }
  // Batch norm: the model's own conditioning, measured. One device again, started from its
  // weights each moved one ulp up or down at random (three draws): how far one fp32 rounding
  // moves each step's loss. A ReLU or ReLU6 input that the rounding moves across the kink
  // changes a gradient outright, so the spread comes in jumps: MobileNetV2 at batch 8 and lr
  // 0.01 about 2% after one step in every draw, ResNet-18 about 1e-6 in most draws and 1% in
  // some; mobilenet_v2_b32 (batch 32, lr 1e-6) under 3e-6, so there the ranks are held to 1e-5.
  std::vector<double> spread(a.size(), 0.0);
  if (!e_.losses_fp64.empty()) {
    const auto init = Hetsynth("train" + model + " --steps 0 --quiet --save " + dir + "/init.safetensors");
    ASSERT_EQ(init.code, 0) << init.output;
    absl::StatusOr<runtime::SafetensorsFile> start = runtime::ReadSafetensors(dir + "/init.safetensors");
    ASSERT_TRUE(start.ok()) << start.status();
    // Trainable weights only: running statistics are not used by a training-mode forward, and a
    // frozen parameter (a constant computed at import) is part of the model, not a rounding.
    ir::OnnxImportOptions io;
    io.batch = e_.batch;
    io.loss = e_.loss;
    absl::StatusOr<ir::OnnxImport> imported = ir::ImportOnnx(onnx_, io);
    ASSERT_TRUE(imported.ok()) << imported.status();
    auto trainable = [&](const std::string& name) {
      const ir::ValueId id = imported->graph.Find(name);
      return id != ir::kNoValue && imported->graph.value(id).kind == ir::ValueKind::kParameter &&
             !imported->graph.value(id).frozen;
    };
    // The control: the same file, unmoved, trains exactly as the model's own start.
    ASSERT_TRUE(runtime::WriteSafetensors(dir + "/same.safetensors", start->tensors).ok());
    const auto c = Hetsynth("train" + model + " --load " + dir + "/same.safetensors" + train + dir + "/same.jsonl");
    ASSERT_EQ(c.code, 0) << c.output;
    EXPECT_EQ(Losses(dir + "/same.jsonl"), a) << GetParam() << ": --load of the starting weights";
    for (uint32_t seed = 1; seed <= 3; ++seed) {
      std::mt19937 rng(seed);
      std::map<std::string, runtime::Tensor> moved = start->tensors;
      size_t count = 0;
      for (auto& [name, t] : moved) {
        if (!trainable(name)) continue;
        for (float& v : t.data) v = std::nextafter(v, rng() % 2 ? INFINITY : -INFINITY);
        count += t.data.size();
      }
      ASSERT_GT(count, 0u);
      // Without a manifest the file is starting weights, as the model's own (no optimizer state).
      ASSERT_TRUE(runtime::WriteSafetensors(dir + "/moved.safetensors", moved).ok());
      const auto r = Hetsynth("train" + model + " --load " + dir + "/moved.safetensors" + train + dir + "/moved.jsonl");
      ASSERT_EQ(r.code, 0) << r.output;
      const std::vector<double> m = Losses(dir + "/moved.jsonl");
      ASSERT_EQ(m.size(), a.size());
      for (size_t i = 0; i < a.size(); ++i) spread[i] = std::max(spread[i], std::abs(m[i] - a[i]));
    }
    // What the steps themselves move: the same run at a thousandth of the learning rate. Where
    // the ranks are held to 1e-5 (the spread allows it), the steps must move the losses by at
    // least five times that, or the comparison could hardly see a wrong gradient
    // (mobilenet_v2_b32, lr 1e-6: 1.6e-4 and 1e-4). mobilenet_v2_b32 is chosen to be in that
    // regime at every step; that it is, is checked too (else the check would turn itself off).
    const auto still = Hetsynth("train" + model + " --data " + data_ + " --steps 3 --optimizer sgd --lr " +
                                absl::StrCat(e_.lr / 1000) + " --quiet --metrics " + dir + "/still.jsonl");
    ASSERT_EQ(still.code, 0) << still.output;
    const std::vector<double> z = Losses(dir + "/still.jsonl");
    ASSERT_EQ(z.size(), a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      std::printf("%s: step %zu loss on one device %.7f; from weights one ulp away (3 draws) up to %.3g relative apart; "
                  "the steps so far moved it %.3g\n",
                  GetParam().c_str(), i, a[i], spread[i] / std::abs(a[i]), std::abs(a[i] - z[i]) / std::abs(a[i]));
      if (GetParam() == "mobilenet_v2_b32") {
        EXPECT_LE(3 * spread[i], 1e-5 * std::abs(a[i])) << GetParam() << " step " << i << ": no longer well-conditioned";
      }
      if (i > 0 && 3 * spread[i] <= 1e-5 * std::abs(a[i])) {
        EXPECT_GE(std::abs(a[i] - z[i]), 5e-5 * std::abs(a[i])) << GetParam() << " step " << i;
      }
    }
  }
  for (const auto& [kind, file] : plans) {
    // The data-parallel plan with --bitwise: every image's convolutions as one device's.
    const std::string bitwise = kind == "ddp-cp" ? " --bitwise" : "";
    const auto four = Hetsynth("train --plan " + file + bitwise + " --save " + dir + "/four.safetensors" + train + dir + "/four.jsonl");
    ASSERT_EQ(four.code, 0) << four.output;
    if (!e_.running.empty()) {
      // The running statistics, from the moments gathered whole on the ranks, as on one device.
      absl::StatusOr<runtime::SafetensorsFile> a1 = runtime::ReadSafetensors(dir + "/one.safetensors");
      absl::StatusOr<runtime::SafetensorsFile> a4 = runtime::ReadSafetensors(dir + "/four.safetensors");
      ASSERT_TRUE(a1.ok() && a4.ok());
      double worst = 0;
      for (const auto& [name, want] : e_.running) {
        ASSERT_TRUE(a1->tensors.count(name) && a4->tensors.count(name)) << name;
        const runtime::Tensor &x = a1->tensors.at(name), &y = a4->tensors.at(name);
        for (size_t i = 0; i < x.data.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(x.data[i] - y.data[i]) / std::max(1.0f, std::abs(x.data[i]))));
      }
      std::printf("%s: %s plan, running statistics on 4 ranks vs one device: max relative difference %.3g\n", GetParam().c_str(),
                  kind.c_str(), worst);
      EXPECT_LE(worst, 10 * LossTolerance(2)) << GetParam() << " " << kind;
    }
    const std::vector<double> b = Losses(dir + "/four.jsonl");
    ASSERT_EQ(b.size(), 3u);
    if (kind == "ddp-cp") {
      // Data parallel with --bitwise, the first forward is one device's to the bit up to the
      // classifier: each image's convolutions are chunked as in the whole batch and the batch
      // statistics are all-reduced with their remainders (the loss differs only by its own
      // partial sums). Float sums of the ranks' rounded moments put it 2e-6 off, and the kinks
      // of ReLU6 amplify that.
      EXPECT_LE(std::abs(a[0] - b[0]), 2e-7 * std::abs(a[0])) << GetParam() << " step 0: " << b[0] << " vs " << a[0];
    }
    for (size_t i = 0; i < a.size(); ++i) {
      // 1e-5 relative; where one rounding moves the loss by more, the smaller of two measures of
      // that: three times the one-ulp spread above, and LossTolerance (three times PyTorch's own
      // fp32-to-float64 gap). Without batch norm the spread is not measured (zero): 1e-5.
      const double tol = std::max(1e-5 * std::abs(a[i]), std::min(3 * spread[i], LossTolerance(i)));
      EXPECT_LE(std::abs(a[i] - b[i]), tol) << GetParam() << " " << kind << " step " << i << ": " << b[i] << " vs " << a[i];
      std::printf("%s: %s plan, step %zu loss on 4 ranks %.7f, on one device %.7f\n", GetParam().c_str(), kind.c_str(), i,
                  b[i], a[i]);
    }
  }
  // The checkpoints of the larger models are large (VGG11: 515 MB each); kept on failure.
  if (!HasFailure()) fs::remove_all(dir);
}

// A strategy whose sharding rules cannot cover a model says so, not "memory" (megatron on a CNN
// whose layers have no tensor-parallel rules over two nodes).
TEST(ImportCommand, AStrategyWithoutRulesForTheModelSaysSo) {
  const std::string onnx = ModelDir() + "/eval_cnn.onnx";
  if (!fs::exists(onnx)) GTEST_SKIP() << "no " << onnx << ": tests/onnx/export_models.py did not run";
  ExpectError("synth --model " + onnx + " --batch 4 --cluster " HETSYNTH_SOURCE_DIR
              "/examples/clusters/two-node-mixed.json --baseline megatron -o " + TempDir() + "/never.json",
              "memory is not the cause");
}

// `hetsynth import` writes a graph file and a weights file that train exactly as the .onnx file
// does; the graph file without its weights file is refused with one line.
TEST(ImportCommand, GraphAndWeightsTrainAsTheOnnxFile) {
  const std::string onnx = ModelDir() + "/mlp.onnx", data = ModelDir() + "/mlp.data.safetensors";
  if (!fs::exists(onnx)) GTEST_SKIP() << "no " << onnx << ": tests/onnx/export_models.py did not run";
  const std::string dir = TempDir() + "/import";
  fs::create_directories(dir);
  const auto imp = Hetsynth("import " + onnx + " --batch 4 -o " + dir + "/mlp.graph.json");
  ASSERT_EQ(imp.code, 0) << imp.output;
  EXPECT_TRUE(fs::exists(dir + "/mlp.graph.safetensors"));
  const std::string train = " --data " + data + " --steps 3 --optimizer sgd --lr 0.1 --quiet --metrics ";
  const auto a = Hetsynth("train --model " + onnx + " --batch 4" + train + dir + "/onnx.jsonl");
  ASSERT_EQ(a.code, 0) << a.output;
  const auto b = Hetsynth("train --model " + dir + "/mlp.graph.json" + train + dir + "/graph.jsonl");
  ASSERT_EQ(b.code, 0) << b.output;
  EXPECT_EQ(Losses(dir + "/onnx.jsonl"), Losses(dir + "/graph.jsonl"));
  fs::remove(dir + "/mlp.graph.safetensors");
  const auto c = Hetsynth("train --model " + dir + "/mlp.graph.json" + train + dir + "/none.jsonl");
  EXPECT_EQ(c.code, 2) << c.output;
  EXPECT_NE(c.output.find("mlp.graph.safetensors"), std::string::npos) << c.output;
}

// A batch-norm model's graph file keeps its running statistics (graph `running_stats`, values in
// the weights file) and trains to the same checkpoint, statistics included, as the .onnx file.
TEST(ImportCommand, RunningStatisticsSurviveTheGraphFile) {
  const std::string onnx = ModelDir() + "/resnet18.onnx", data = ModelDir() + "/resnet18.data.safetensors";
  if (!fs::exists(onnx)) GTEST_SKIP() << "no " << onnx << ": tests/onnx/export_models.py did not run (needs torchvision)";
  const std::string dir = TempDir() + "/import-bn";
  fs::create_directories(dir);
  const auto imp = Hetsynth("import " + onnx + " --batch 8 -o " + dir + "/r.graph.json");
  ASSERT_EQ(imp.code, 0) << imp.output;
  const auto shown = Hetsynth("models --model " + dir + "/r.graph.json");  // listed, with their momentum
  EXPECT_NE(shown.output.find("running statistics"), std::string::npos) << shown.output;
  EXPECT_NE(shown.output.find("bn1.running_var"), std::string::npos) << shown.output;
  const std::string train = " --data " + data + " --steps 2 --optimizer sgd --lr 0.01 --quiet --save ";
  ASSERT_EQ(Hetsynth("train --model " + onnx + " --batch 8" + train + dir + "/onnx.safetensors").code, 0);
  ASSERT_EQ(Hetsynth("train --model " + dir + "/r.graph.json" + train + dir + "/graph.safetensors").code, 0);
  absl::StatusOr<runtime::SafetensorsFile> a = runtime::ReadSafetensors(dir + "/onnx.safetensors");
  absl::StatusOr<runtime::SafetensorsFile> b = runtime::ReadSafetensors(dir + "/graph.safetensors");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(a->tensors.count("bn1.running_var"));
  ASSERT_EQ(a->tensors.size(), b->tensors.size());
  for (const auto& [name, t] : a->tensors) {
    ASSERT_TRUE(b->tensors.count(name)) << name;
    EXPECT_EQ(t.data, b->tensors.at(name).data) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, FromPyTorch,
                         ::testing::Values("mlp", "mlp_mse", "gpt", "gpt_opset14", "vgg", "vit", "torchvision_vit",
                                           "torchvision_vgg11", "resnet18", "mobilenet_v2", "mobilenet_v2_b32", "eval_cnn",
                                           "pools"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace hetsynth

// ---- ONNX's node tests (Debian: libonnx-testdata) ----

namespace hetsynth {
namespace {

const char* kNodeTests = "/usr/share/libonnx-testdata/data/node";

// A test tensor's values as the importer reads initializers (every type it takes); {} with
// `dims` set for types it does not (strings, optionals) and for empty tensors.
std::vector<double> Values(const onnx::TensorProto& t, std::vector<int64_t>* dims) {
  dims->assign(t.dims().begin(), t.dims().end());
  absl::StatusOr<std::vector<double>> v = ir::OnnxTensorValues(t, dims);
  return v.ok() ? *std::move(v) : std::vector<double>{};
}

onnx::TensorProto ReadTensor(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  onnx::TensorProto t;
  t.ParseFromString(bytes);
  return t;
}

// Runs one node test; "" when it passes, else why not.
std::string RunNodeTest(const fs::path& dir) {
  onnx::ModelProto model;
  {
    std::ifstream in(dir / "model.onnx", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    model.ParseFromString(bytes);
  }
  const fs::path data = dir / "test_data_set_0";
  std::vector<onnx::TensorProto> inputs, outputs;
  for (int i = 0; fs::exists(data / ("input_" + std::to_string(i) + ".pb")); ++i) {
    inputs.push_back(ReadTensor(data / ("input_" + std::to_string(i) + ".pb")));
  }
  for (int i = 0; fs::exists(data / ("output_" + std::to_string(i) + ".pb")); ++i) {
    outputs.push_back(ReadTensor(data / ("output_" + std::to_string(i) + ".pb")));
  }
  if (outputs.empty()) return "no output_0.pb";
  // ONNX 1.12's test data stores bfloat16 tensors under data type UINT16 (their bits), where the
  // model declares BFLOAT16.
  auto retype = [](const onnx::ValueInfoProto& v, onnx::TensorProto& t) {
    if (v.type().tensor_type().elem_type() == onnx::TensorProto::BFLOAT16 && t.data_type() == onnx::TensorProto::UINT16) {
      t.set_data_type(onnx::TensorProto::BFLOAT16);
    }
  };
  for (int i = 0; i < model.graph().input_size() && i < static_cast<int>(inputs.size()); ++i) retype(model.graph().input(i), inputs[i]);
  for (int i = 0; i < model.graph().output_size() && i < static_cast<int>(outputs.size()); ++i) retype(model.graph().output(i), outputs[i]);
  std::vector<int64_t> want_dims;
  const std::vector<double> want = Values(outputs[0], &want_dims);
  if (want.empty() && std::find(want_dims.begin(), want_dims.end(), 0) == want_dims.end()) {
    return "output data type " + std::to_string(outputs[0].data_type()) + " (the IR is fp32)";
  }
  auto compare = [&](const ir::Shape& shape, const std::vector<double>& got) -> std::string {
    if (shape != want_dims) return "output shape " + ir::ShapeString(shape) + ", expected " + ir::ShapeString(want_dims);
    for (size_t i = 0; i < want.size(); ++i) {
      const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
      if (!(std::abs(got[i] - want[i]) <= 1e-3 * std::abs(want[i]) + 1e-5) && !(got[i] == want[i]) && !both_nan) {
        return "output element " + std::to_string(i) + ": " + std::to_string(got[i]) + ", expected " + std::to_string(want[i]);
      }
    }
    return "";
  };
  // A: inputs as data, the node as IR ops run on the CPU kernels. The node tests feed weights,
  // shapes and split sizes as inputs too; where A fails, A2 makes every input but the first an
  // initializer (weights, as an exported model holds them), then B makes them all initializers
  // (so that shape arithmetic folds to a constant).
  auto with_initializers = [&](size_t from) {
    onnx::ModelProto b = model;
    for (int i = static_cast<int>(from); i < b.graph().input_size() && i < static_cast<int>(inputs.size()); ++i) {
      onnx::TensorProto t = inputs[i];
      t.set_name(b.graph().input(i).name());
      *b.mutable_graph()->add_initializer() = t;
    }
    return b;
  };
  ir::OnnxImportOptions o;
  o.loss = "none";
  absl::StatusOr<ir::OnnxImport> m = ir::ImportOnnx(Write(model, "node.onnx"), o);
  if (!m.ok() && inputs.size() > 1) {
    absl::StatusOr<ir::OnnxImport> m2 = ir::ImportOnnx(Write(with_initializers(1), "node_weights.onnx"), o);
    m = std::move(m2);
  }
  std::string why_a;
  if (m.ok() && !m->constant) {
    const ir::Graph& g = m->graph;
    std::vector<runtime::Tensor> values(g.values().size());
    for (ir::ValueId v = 0; v < static_cast<ir::ValueId>(g.values().size()); ++v) {
      const ir::Value& val = g.value(v);
      values[v] = runtime::Tensor(val.shape);
      if (val.kind == ir::ValueKind::kParameter) std::copy(val.init.data->begin(), val.init.data->end(), values[v].data.begin());
      if (val.kind != ir::ValueKind::kInput) continue;
      for (int i = 0; i < model.graph().input_size() && i < static_cast<int>(inputs.size()); ++i) {
        if (model.graph().input(i).name() != val.name) continue;
        std::vector<int64_t> dims;
        const std::vector<double> x = Values(inputs[i], &dims);
        if (static_cast<int64_t>(x.size()) != values[v].numel()) return "input '" + val.name + "' has the wrong size";
        for (size_t k = 0; k < x.size(); ++k) values[v].data[k] = static_cast<float>(x[k]);
      }
    }
    for (const ir::Node& n : g.nodes()) {
      std::vector<const runtime::Tensor*> in;
      for (ir::ValueId x : n.inputs) in.push_back(&values[x]);
      runtime::SavedState saved;
      runtime::Forward(n, runtime::KernelContext{}, in, values[n.output], saved);
    }
    const runtime::Tensor& y = values[g.Find(m->output)];
    return compare(y.shape, std::vector<double>(y.data.begin(), y.data.end()));
  }
  if (!m.ok()) why_a = std::string(m.status().message());
  absl::StatusOr<ir::OnnxImport> c = ir::ImportOnnx(Write(with_initializers(0), "node_const.onnx"), o);
  if (c.ok() && c->constant) return compare(c->constant_shape, c->constant_values);
  return why_a.empty() ? (c.ok() ? "not constant" : std::string(c.status().message())) : why_a;
}

TEST(OnnxNodeTests, SupportedOperatorsPass) {
  if (!fs::exists(kNodeTests)) GTEST_SKIP() << "no " << kNodeTests << " (install libonnx-testdata)";
  std::vector<std::string> supported;
  {
    std::stringstream ss(ir::OnnxSupportedOps());
    for (std::string op; std::getline(ss, op, ',');) supported.push_back(op.substr(op.find_first_not_of(' ')));
  }
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(kNodeTests)) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  int run = 0, passed = 0;
  std::vector<std::string> failures;
  for (const fs::path& dir : dirs) {
    onnx::ModelProto model;
    std::ifstream in(dir / "model.onnx", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!model.ParseFromString(bytes)) continue;
    bool ours = model.graph().node_size() > 0;
    for (const onnx::NodeProto& n : model.graph().node()) {
      ours = ours && n.domain().empty() && std::find(supported.begin(), supported.end(), n.op_type()) != supported.end();
    }
    if (!ours) continue;
    ++run;
    if (std::getenv("HETSYNTH_NODE_TEST_VERBOSE")) std::fprintf(stderr, "%s\n", dir.c_str());
    const std::string why = RunNodeTest(dir);
    if (why.empty()) ++passed;
    else failures.push_back(dir.filename().string() + ": " + why);
  }
  std::printf("ONNX node tests for the supported operators: %d of %d pass (%.1f%%)\n", passed, run,
              run ? 100.0 * passed / run : 0.0);
  for (const std::string& f : failures) std::printf("  FAIL %s\n", f.c_str());
  EXPECT_GT(run, 200);
  // The floor measured last (267 of 281; the failures are listed above and in docs/onnx.md): a
  // regression in a supported operator lowers it.
  EXPECT_GE(passed, 267);
}

}  // namespace
}  // namespace hetsynth
