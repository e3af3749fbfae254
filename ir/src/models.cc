#include "hetsynth/ir/models.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>

#include "absl/strings/str_join.h"
#include "hetsynth/ir/graph_json.h"
#include "hetsynth/ir/onnx_import.h"
#include "hetsynth/base/status.h"

namespace hetsynth::ir {
namespace {

absl::Status Bad(const std::string& msg) { return absl::InvalidArgumentError(msg); }

std::vector<ModelInfo> MakeModels() {
  const HyperParam layers_gpt{"layers", 12, 2, true, "transformer blocks"};
  const HyperParam hidden_t{"hidden", 768, 32, true, "model width C"};
  const HyperParam heads{"heads", 12, 4, true, "attention heads (divide hidden)"};
  const HyperParam ffn{"ffn", 3072, 64, true, "feed-forward width F"};
  const HyperParam dropout{"dropout", 0, 0, false, "dropout probability (0 = no dropout ops)"};
  return {
      {"mlp",
       "stack of linear+relu layers with a softmax cross-entropy head",
       {{"layers", 4, 2, true, "hidden linear+relu layers"},
        {"hidden", 1024, 32, true, "hidden width"},
        {"inputs", 784, 16, true, "input features"},
        {"classes", 10, 4, true, "output classes"}},
       32,
       8},
      {"gpt",
       "GPT-style causal LM: pre-LN blocks, learned positions, untied head",
       {layers_gpt, hidden_t, heads, ffn,
        {"seq", 128, 16, true, "sequence length T"},
        {"vocab", 33278, 64, true, "vocabulary V (WikiText-2 sized)"},
        dropout},
       32,
       4},
      {"vit",
       "vision transformer: conv patch embedding, class token, pre-LN blocks",
       {layers_gpt, hidden_t, heads, ffn,
        {"image", 32, 8, true, "image side (square, 3 channels)"},
        {"patch", 4, 4, true, "patch side (divides image)"},
        {"classes", 10, 4, true, "output classes"},
        dropout},
       32,
       4},
      {"vgg19",
       "VGG19: 16 conv3x3+relu with 5 max pools, adaptive pool, 3 FC",
       {{"width", 1, 0.125, false, "channel multiplier (64..512 at 1)"},
        {"pool", 1, 1, true, "side of the adaptive average pool before the classifier (7: torchvision's 25088-wide one)"},
        {"hidden", 4096, 32, true, "width of the two hidden FC layers"},
        {"image", 32, 32, true, "image side (square, 3 channels; multiple of 32)"},
        {"classes", 10, 4, true, "output classes"}},
       32,
       16},
      {"moe",
       "gpt with a top-2 mixture-of-experts FFN in every other block",
       {layers_gpt, hidden_t, heads, ffn,
        {"seq", 128, 16, true, "sequence length T"},
        {"vocab", 33278, 64, true, "vocabulary V"},
        {"experts", 8, 4, true, "experts per MoE block (>= 2)"},
        {"capacity_factor", 1.25, 1.25, false, "slots per expert = ceil(2·B·T·factor/experts)"},
        dropout},
       32,
       4},
  };
}

std::string Fmt(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// Names of the values inside one transformer block, rooted at `prefix` ("layers.3.").
struct Block {
  Builder& b;
  const ModelSpec& spec;
  std::string prefix;
  int* dropout_ordinal;

  std::string N(const std::string& s) const { return prefix + s; }

  ValueId Param(const std::string& name, const Shape& shape, Init init) {
    return b.Parameter(N(name), shape, init);
  }

  ValueId LayerNorm(const std::string& name, ValueId x, int64_t c) {
    const ValueId g = Param(name + ".weight", {c}, Init::Ones());
    const ValueId beta = Param(name + ".bias", {c}, Init::Zeros());
    Attrs a;
    a.eps = 1e-5;
    return b.Op(N(name), OpKind::kLayerNorm, {x, g, beta}, a);
  }

  ValueId Linear(const std::string& name, ValueId x, int64_t in, int64_t out, bool bias = true) {
    const ValueId w = Param(name + ".weight", {out, in}, Init::Normal(0.02));
    const ValueId bb = bias ? Param(name + ".bias", {out}, Init::Zeros()) : kNoValue;
    return b.Linear(N(name), x, w, bb);
  }

  ValueId Dropout(const std::string& name, ValueId x) {
    const double p = spec.Real("dropout");
    if (p <= 0) return x;
    Attrs a;
    a.p = p;
    a.seed = static_cast<uint64_t>((*dropout_ordinal)++);
    return b.Op(N(name), OpKind::kDropout, {x}, a);
  }

  // x + proj(attention(ln1(x)))
  ValueId AttentionPart(ValueId x, bool causal) {
    const int64_t c = spec.Int("hidden");
    const ValueId a = LayerNorm("ln1", x, c);
    const ValueId q = Linear("attn.q", a, c, c);
    const ValueId k = Linear("attn.k", a, c, c);
    const ValueId v = Linear("attn.v", a, c, c);
    Attrs at;
    at.heads = spec.Int("heads");
    at.causal = causal;
    const ValueId att = b.Op(N("attn"), OpKind::kAttention, {q, k, v}, at);
    const ValueId o = Dropout("attn.dropout", Linear("attn.proj", att, c, c));
    return b.Add(N("attn.residual"), x, o);
  }

  // x + fc2(gelu(fc1(ln2(x))))
  ValueId MlpPart(ValueId x) {
    const int64_t c = spec.Int("hidden"), f = spec.Int("ffn");
    const ValueId m = LayerNorm("ln2", x, c);
    const ValueId h = b.Gelu(N("mlp.gelu"), Linear("mlp.fc1", m, c, f));
    const ValueId o = Dropout("mlp.dropout", Linear("mlp.fc2", h, f, c));
    return b.Add(N("mlp.residual"), x, o);
  }

  // x + combine(experts(dispatch(ln2(x)))) with top-2 routing.
  ValueId MoePart(ValueId x) {
    const int64_t c = spec.Int("hidden"), f = spec.Int("ffn"), e = spec.Int("experts");
    const int64_t bsz = spec.batch, t = spec.Int("seq"), s = bsz * t;
    const int64_t cap = static_cast<int64_t>(
        std::ceil(2.0 * static_cast<double>(s) * spec.Real("capacity_factor") / static_cast<double>(e)));
    const ValueId m = LayerNorm("ln2", x, c);
    const ValueId flat = b.Reshape(N("moe.flatten"), m, {s, c});
    const ValueId gate = Linear("moe.gate", flat, c, e, /*bias=*/false);
    Attrs ga;
    ga.k = 2;
    ga.capacity = cap;
    const ValueId route = b.Op(N("moe.route"), OpKind::kTopKGate, {gate}, ga);
    Attrs da;
    da.experts = e;
    da.capacity = cap;
    const ValueId disp = b.Op(N("moe.dispatch"), OpKind::kMoEDispatch, {flat, route}, da);
    const ValueId w1 = Param("moe.fc1.weight", {e, c, f}, Init::Normal(0.02));
    const ValueId b1 = Param("moe.fc1.bias", {e, 1, f}, Init::Zeros());
    const ValueId w2 = Param("moe.fc2.weight", {e, f, c}, Init::Normal(0.02));
    const ValueId b2 = Param("moe.fc2.bias", {e, 1, c}, Init::Zeros());
    ValueId h = b.Op(N("moe.fc1"), OpKind::kMatMul, {disp, w1});
    h = b.Add(N("moe.fc1.add_bias"), h, b1);
    h = b.Gelu(N("moe.gelu"), h);
    h = b.Op(N("moe.fc2"), OpKind::kMatMul, {h, w2});
    h = b.Add(N("moe.fc2.add_bias"), h, b2);
    const ValueId comb = b.Op(N("moe.combine"), OpKind::kMoECombine, {h, route});
    const ValueId back = Dropout("moe.dropout", b.Reshape(N("moe.unflatten"), comb, {bsz, t, c}));
    return b.Add(N("moe.residual"), x, back);
  }
};

absl::Status CheckDivides(const ModelSpec& s, const std::string& a, const std::string& b) {
  if (s.Int(b) % s.Int(a) != 0) {
    return Bad(StrCat("model '", s.name, "': ", a, "=", s.Int(a), " does not divide ", b, "=",
                      s.Int(b), "; pick ", a, " among the divisors of ", b));
  }
  return absl::OkStatus();
}

absl::StatusOr<Graph> BuildMlp(const ModelSpec& s) {
  Builder b("mlp");
  const int64_t batch = s.batch;
  ValueId h = b.Input("x", {batch, s.Int("inputs")});
  const ValueId labels = b.Input("labels", {batch});
  int64_t in = s.Int("inputs");
  for (int64_t i = 0; i < s.Int("layers"); ++i) {
    const std::string p = StrCat("layers.", i);
    const int64_t out = s.Int("hidden");
    const ValueId w = b.Parameter(p + ".weight", {out, in}, Init::Normal(std::sqrt(2.0 / in)));
    const ValueId bias = b.Parameter(p + ".bias", {out}, Init::Zeros());
    h = b.Relu(p + ".relu", b.Linear(p + ".linear", h, w, bias));
    in = out;
  }
  const int64_t k = s.Int("classes");
  const ValueId w = b.Parameter("head.weight", {k, in}, Init::Normal(std::sqrt(1.0 / in)));
  const ValueId bias = b.Parameter("head.bias", {k}, Init::Zeros());
  const ValueId logits = b.Linear("head", h, w, bias);
  b.SetLoss(b.Op("loss", OpKind::kCrossEntropy, {logits, labels}));
  return std::move(b).Finish();
}

// Shared by gpt and moe: embeddings, blocks (MoE FFN in odd blocks when moe), head, loss.
absl::StatusOr<Graph> BuildLm(const ModelSpec& s, bool moe) {
  HS_RETURN_IF_ERROR(CheckDivides(s, "heads", "hidden"));
  if (moe && s.Int("experts") < 2) {
    return Bad(StrCat("model 'moe': experts=", s.Int("experts"),
                      "; expected at least 2 (routing is top-2)"));
  }
  Builder b(s.name);
  const int64_t bsz = s.batch, t = s.Int("seq"), c = s.Int("hidden"), v = s.Int("vocab");
  const ValueId tokens = b.Input("tokens", {bsz, t});
  const ValueId targets = b.Input("targets", {bsz, t});
  const ValueId tok_emb = b.Parameter("tok_emb.weight", {v, c}, Init::Normal(0.02));
  const ValueId pos_emb = b.Parameter("pos_emb.weight", {t, c}, Init::Normal(0.02));
  int dropout_ordinal = 0;
  Block top{b, s, "", &dropout_ordinal};
  ValueId h = b.Add("embed", b.Op("tok_embed", OpKind::kEmbedding, {tokens, tok_emb}), pos_emb);
  h = top.Dropout("embed.dropout", h);
  for (int64_t i = 0; i < s.Int("layers"); ++i) {
    Block blk{b, s, StrCat("layers.", i, "."), &dropout_ordinal};
    h = blk.AttentionPart(h, /*causal=*/true);
    h = (moe && i % 2 == 1) ? blk.MoePart(h) : blk.MlpPart(h);
  }
  h = top.LayerNorm("ln_f", h, c);
  const ValueId logits = top.Linear("head", h, c, v, /*bias=*/false);
  b.SetLoss(b.Op("loss", OpKind::kCrossEntropy, {logits, targets}));
  return std::move(b).Finish();
}

absl::StatusOr<Graph> BuildVit(const ModelSpec& s) {
  HS_RETURN_IF_ERROR(CheckDivides(s, "heads", "hidden"));
  HS_RETURN_IF_ERROR(CheckDivides(s, "patch", "image"));
  Builder b("vit");
  const int64_t bsz = s.batch, img = s.Int("image"), p = s.Int("patch"), c = s.Int("hidden");
  const int64_t g = img / p, n = g * g;
  const ValueId images = b.Input("images", {bsz, 3, img, img});
  const ValueId labels = b.Input("labels", {bsz});
  const ValueId pw = b.Parameter("patch_embed.weight", {c, 3, p, p}, Init::Normal(0.02));
  const ValueId pb = b.Parameter("patch_embed.bias", {c}, Init::Zeros());
  Attrs conv;
  conv.kernel = p;
  conv.stride = p;
  ValueId h = b.Op("patch_embed", OpKind::kConv2d, {images, pw, pb}, conv);  // [B,C,G,G]
  h = b.Reshape("patch_embed.flatten", h, {bsz, c, n});
  Attrs tr;
  tr.axis = 1;
  tr.axis2 = 2;
  h = b.Op("patch_embed.transpose", OpKind::kTranspose, {h}, tr);  // [B,N,C]
  const ValueId cls = b.Parameter("cls_token", {1, 1, c}, Init::Normal(0.02));
  Attrs ex;
  ex.shape = {bsz, 1, c};
  const ValueId cls_b = b.Op("cls_token.expand", OpKind::kExpand, {cls}, ex);
  Attrs cat;
  cat.axis = 1;
  h = b.Op("tokens", OpKind::kConcat, {cls_b, h}, cat);  // [B,N+1,C]
  const ValueId pos = b.Parameter("pos_emb.weight", {n + 1, c}, Init::Normal(0.02));
  h = b.Add("embed", h, pos);
  int dropout_ordinal = 0;
  Block top{b, s, "", &dropout_ordinal};
  h = top.Dropout("embed.dropout", h);
  for (int64_t i = 0; i < s.Int("layers"); ++i) {
    Block blk{b, s, StrCat("layers.", i, "."), &dropout_ordinal};
    h = blk.MlpPart(blk.AttentionPart(h, /*causal=*/false));
  }
  h = top.LayerNorm("ln_f", h, c);
  Attrs sl;
  sl.axis = 1;
  sl.start = 0;
  sl.length = 1;
  h = b.Reshape("cls_out", b.Op("cls_select", OpKind::kSlice, {h}, sl), {bsz, c});
  const ValueId logits = top.Linear("head", h, c, s.Int("classes"));
  b.SetLoss(b.Op("loss", OpKind::kCrossEntropy, {logits, labels}));
  return std::move(b).Finish();
}

absl::StatusOr<Graph> BuildVgg19(const ModelSpec& s) {
  const int64_t img = s.Int("image");
  if (img < 32 || img % 32 != 0) {
    return Bad(StrCat("model 'vgg19': image=", img,
                      "; expected a multiple of 32 (five 2x2 max pools)"));
  }
  Builder b("vgg19");
  const int64_t bsz = s.batch;
  ValueId h = b.Input("images", {bsz, 3, img, img});
  const ValueId labels = b.Input("labels", {bsz});
  const int64_t cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0,
                         512, 512, 512, 512, 0, 512, 512, 512, 512, 0};
  int64_t in = 3, conv_i = 0, pool_i = 0;
  for (int64_t ch : cfg) {
    if (ch == 0) {
      Attrs pa;
      pa.kernel = 2;
      pa.stride = 2;
      h = b.Op(StrCat("pool", pool_i++), OpKind::kMaxPool2d, {h}, pa);
      continue;
    }
    const int64_t out = std::max<int64_t>(1, std::llround(static_cast<double>(ch) * s.Real("width")));
    const std::string p = StrCat("features.", conv_i++);
    const ValueId w = b.Parameter(p + ".weight", {out, in, 3, 3}, Init::Normal(std::sqrt(2.0 / (9.0 * in))));
    const ValueId bias = b.Parameter(p + ".bias", {out}, Init::Zeros());
    Attrs ca;
    ca.kernel = 3;
    ca.stride = 1;
    ca.padding = 1;
    h = b.Relu(p + ".relu", b.Op(p + ".conv", OpKind::kConv2d, {h, w, bias}, ca));
    in = out;
  }
  Attrs ap;
  const int64_t pool = s.Int("pool");
  if (pool < 1) return Bad(StrCat("model 'vgg19': pool=", pool, "; expected a positive integer"));
  ap.out_h = pool;
  ap.out_w = pool;
  h = b.Op("avgpool", OpKind::kAdaptiveAvgPool2d, {h}, ap);
  Attrs fl;
  fl.axis = 1;
  h = b.Op("flatten", OpKind::kFlatten, {h}, fl);
  in *= pool * pool;  // flatten: channels × pool × pool features
  const int64_t widths[] = {s.Int("hidden"), s.Int("hidden"), s.Int("classes")};
  for (int i = 0; i < 3; ++i) {
    const std::string p = StrCat("classifier.", i);
    const double gain = i < 2 ? 2.0 : 1.0;
    const ValueId w = b.Parameter(p + ".weight", {widths[i], in}, Init::Normal(std::sqrt(gain / in)));
    const ValueId bias = b.Parameter(p + ".bias", {widths[i]}, Init::Zeros());
    h = b.Linear(p + ".linear", h, w, bias);
    if (i < 2) h = b.Relu(p + ".relu", h);
    in = widths[i];
  }
  b.SetLoss(b.Op("loss", OpKind::kCrossEntropy, {h, labels}));
  return std::move(b).Finish();
}

}  // namespace

const std::vector<ModelInfo>& Models() {
  static const std::vector<ModelInfo> models = MakeModels();
  return models;
}

const ModelInfo* FindModel(const std::string& name) {
  for (const ModelInfo& m : Models()) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

std::string ModelNames() {
  std::vector<std::string> names;
  for (const ModelInfo& m : Models()) names.push_back(m.name);
  return absl::StrJoin(names, ", ");
}

namespace {
bool EndsWith(const std::string& name, const std::string& ext) {
  return name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0;
}
}  // namespace

bool IsModelFile(const std::string& name) { return IsOnnxFile(name) || EndsWith(name, ".json"); }
bool IsOnnxFile(const std::string& name) { return EndsWith(name, ".onnx"); }

namespace {

// The graph MakeModelSpec imported from an ONNX file, handed to the BuildModel that follows it
// (every command resolves a spec, then builds it): importing a 515 MB file twice took seconds.
// One slot, emptied by the next build of any ONNX file: it hands the graph over when that build
// is of the same file (same stamp), batch and loss.
struct Handoff {
  std::string path;
  int64_t batch = 0;
  double loss = 0;
  FileStamp stamp;
  uint64_t hash = 0;
  Graph graph;
};
std::mutex handoff_mu;
std::optional<Handoff> handoff;

double LossArg(const std::map<std::string, double>& args) {
  auto it = args.find("loss");
  return it == args.end() ? 0 : it->second;  // absent: cross_entropy (0)
}

// A model file's graph (ONNX or graph JSON) at `batch` (0: the file's own), checked against the
// hash recorded in args "file_hash" (when present; by a plan when from_plan) before anything
// else; `hash`, when given, receives the file's hash.
absl::StatusOr<Graph> BuildFromFile(const std::string& path, const std::map<std::string, double>& args, int64_t batch,
                                    bool from_plan, uint64_t* hash = nullptr) {
  const auto recorded = args.find("file_hash");
  const auto loss = args.find("loss");
  if (IsOnnxFile(path)) {
    std::optional<Handoff> slot;
    {
      std::lock_guard<std::mutex> lock(handoff_mu);
      slot.swap(handoff);
    }
    if (slot && slot->path == path && slot->batch == batch && slot->loss == LossArg(args) && StampOf(path) == slot->stamp) {
      if (recorded != args.end() && static_cast<uint64_t>(recorded->second) != slot->hash) {
        return Bad(ChangedModelFile(path, slot->hash, static_cast<uint64_t>(recorded->second), from_plan));
      }
      if (hash) *hash = slot->hash;
      return std::move(slot->graph);
    }
    slot.reset();
    // One read: the import hashes the bytes it parses, and refuses them unparsed when they are
    // not what the plan recorded.
    OnnxImportOptions o;
    o.batch = batch;
    if (loss != args.end()) o.loss = loss->second == 1 ? "mse" : "cross_entropy";
    if (recorded != args.end()) o.expected_hash = static_cast<uint64_t>(recorded->second);
    o.expected_hash_from_plan = from_plan;
    HS_ASSIGN_OR_RETURN(OnnxImport m, ImportOnnx(path, o));
    if (hash) *hash = m.file_hash;
    return std::move(m.graph);
  }
  HS_ASSIGN_OR_RETURN(const uint64_t h, ModelFileHash(path));
  if (recorded != args.end() && static_cast<uint64_t>(recorded->second) != h) {
    return Bad(ChangedModelFile(path, h, static_cast<uint64_t>(recorded->second), from_plan));
  }
  if (hash) *hash = h;
  if (loss != args.end()) {
    return Bad(StrCat("model file '", path, "': --loss applies to ONNX models; a graph file names its own loss"));
  }
  HS_ASSIGN_OR_RETURN(Graph g, ReadGraphFile(path));
  const std::vector<ValueId> in = g.inputs();
  if (batch > 0 && !in.empty() && !g.value(in[0]).shape.empty() && g.value(in[0]).shape[0] != batch) {
    return Bad(StrCat("model file '", path, "': --batch ", batch, " but graph files have fixed shapes (batch ",
                      g.value(in[0]).shape[0], ")"));
  }
  return g;
}

}  // namespace

std::string ModelSpec::ToString() const {
  if (IsModelFile(name)) {
    auto it = args.find("file_hash");
    const auto loss = args.find("loss");
    return StrCat(name, "(file hash ", it == args.end() ? 0 : static_cast<uint64_t>(it->second),
                  loss != args.end() && loss->second == 1 ? "; loss mse" : "", "; batch ", batch, ")");
  }
  std::vector<std::string> kv;
  const ModelInfo* info = FindModel(name);
  if (info) {
    for (const HyperParam& p : info->params) kv.push_back(p.name + "=" + Fmt(args.at(p.name)));
  }
  return StrCat(name, "(", absl::StrJoin(kv, ", "), "; batch ", batch, ")");
}

absl::StatusOr<ModelSpec> MakeModelSpec(const std::string& name,
                                        const std::vector<std::string>& overrides,
                                        int64_t batch, Preset preset) {
  {
    // A graph waiting in the slot is only for the build right after its spec.
    std::lock_guard<std::mutex> lock(handoff_mu);
    handoff.reset();
  }
  if (IsModelFile(name)) {
    if (preset == Preset::kSmall) return Bad(StrCat("--small: model file '", name, "' has no presets"));
    ModelSpec spec;
    spec.name = name;
    for (const std::string& kv : overrides) {
      const size_t eq = kv.find('=');
      char* end = nullptr;
      const std::string key = kv.substr(0, eq), text = eq == std::string::npos ? "" : kv.substr(eq + 1);
      if (key == "loss") {
        // Recorded as a number (plans keep model args as numbers): 0 cross_entropy, 1 mse.
        if (text != "cross_entropy" && text != "mse" && text != "0" && text != "1") {
          return Bad(StrCat("--loss '", text, "': expected cross_entropy or mse"));
        }
        spec.args["loss"] = text == "mse" || text == "1" ? 1 : 0;
        continue;
      }
      const double v = std::strtod(text.c_str(), &end);
      if (key != "file_hash" || text.empty() || *end != '\0') {
        return Bad(StrCat("--model-arg '", kv, "': a model file (", name, ") takes no hyperparameters"));
      }
      if (!(v >= 0 && v < 281474976710656.0 && v == std::floor(v))) {  // also refuses NaN
        return Bad(StrCat("--model-arg '", kv, "': expected the model file's 48-bit hash, an integer from 0 to ",
                          "281474976710655"));
      }
      spec.args["file_hash"] = v;
      spec.file_hash_given = true;
    }
    const std::optional<FileStamp> stamp = StampOf(name);  // before the import reads it
    uint64_t hash = 0;
    HS_ASSIGN_OR_RETURN(Graph g, BuildFromFile(name, spec.args, batch, spec.file_hash_given, &hash));
    if (!spec.args.count("file_hash")) spec.args["file_hash"] = static_cast<double>(hash);
    const std::vector<ValueId> in = g.inputs();
    spec.batch = batch > 0 ? batch : (in.empty() || g.value(in[0]).shape.empty() ? 1 : g.value(in[0]).shape[0]);
    // Handed over as the graph at spec.batch: imported at it, or at the file's own batch when
    // every input with dims has spec.batch as its first (the import at spec.batch binds dim 0
    // of every input, so only then is it the same graph).
    bool same = batch > 0;
    if (!same) {
      same = true;
      for (ValueId v : in) same = same && (g.value(v).shape.empty() || g.value(v).shape[0] == spec.batch);
    }
    if (IsOnnxFile(name) && stamp && same) {
      std::lock_guard<std::mutex> lock(handoff_mu);
      handoff = Handoff{name, spec.batch, LossArg(spec.args), *stamp, hash, std::move(g)};
    }
    return spec;
  }
  const ModelInfo* info = FindModel(name);
  if (!info) {
    return Bad(StrCat("unknown model '", name, "'; known models: ", ModelNames(),
                      ", or a model file (.onnx, or a graph .json)"));
  }
  ModelSpec spec;
  spec.name = name;
  for (const HyperParam& p : info->params) {
    spec.args[p.name] = preset == Preset::kSmall ? p.small_value : p.default_value;
  }
  std::map<std::string, std::string> given;  // key → its KEY=VALUE, to refuse a key given twice
  for (const std::string& kv : overrides) {
    const size_t eq = kv.find('=');
    const std::string key = kv.substr(0, eq);
    std::vector<std::string> known;
    for (const HyperParam& p : info->params) known.push_back(p.name);
    const HyperParam* hp = nullptr;
    for (const HyperParam& p : info->params) {
      if (p.name == key) hp = &p;
    }
    if (eq == std::string::npos) {
      return Bad(StrCat("--model-arg '", kv, "': expected KEY=VALUE with KEY one of ",
                        absl::StrJoin(known, ", ")));
    }
    if (!hp) {
      return Bad(StrCat("model '", name, "' has no hyperparameter '", key, "'; known: ",
                        absl::StrJoin(known, ", ")));
    }
    if (auto [it, fresh] = given.emplace(key, kv); !fresh) {
      return Bad(StrCat("--model-arg '", kv, "': ", key, " is already given ('", it->second, "'); give each KEY once"));
    }
    const std::string text = kv.substr(eq + 1);
    // Decimal only (from_chars: no hex, no leading blanks, no "inf").
    double v = 0;
    const auto [stop, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    const bool parsed = !text.empty() && ec == std::errc() && stop == text.data() + text.size() && std::isfinite(v);
    if (!parsed || (hp->integer && (v != std::floor(v) || v < 1 || v > 1e9)) ||
        (!hp->integer && v < 0)) {
      return Bad(StrCat("model '", name, "': ", key, "='", text, "'; expected ",
                        hp->integer ? "a positive integer" : "a non-negative number", " (",
                        hp->help, ")"));
    }
    spec.args[key] = v;
  }
  spec.batch = batch > 0 ? batch : (preset == Preset::kSmall ? info->small_batch : info->default_batch);
  if (spec.args.count("dropout") && spec.args["dropout"] >= 1.0) {
    return Bad(StrCat("model '", name, "': dropout=", spec.args["dropout"], "; expected 0 <= dropout < 1"));
  }
  if (spec.args.count("width") && spec.args["width"] <= 0) {
    return Bad(StrCat("model '", name, "': width=", spec.args["width"], "; expected a positive multiplier"));
  }
  if (spec.args.count("capacity_factor") && spec.args["capacity_factor"] <= 0) {
    return Bad(StrCat("model '", name, "': capacity_factor=", spec.args["capacity_factor"],
                      "; expected a positive number"));
  }
  return spec;
}

// Limits that keep a model buildable and its sizes within int64: a graph of at most this many
// layers (each layer is a handful of nodes), and tensors of at most 2^50 elements (4 PiB of
// fp32 — far past any machine, and far from int64 overflow in FLOP and byte counts).
constexpr int64_t kMaxLayers = 10000;
constexpr int64_t kMaxElements = int64_t{1} << 50;

absl::StatusOr<Graph> BuildModel(const ModelSpec& spec) {
  if (IsModelFile(spec.name)) return BuildFromFile(spec.name, spec.args, spec.batch, spec.file_hash_given);
  if (spec.args.count("layers") && spec.args.at("layers") > kMaxLayers) {
    return Bad(StrCat("model '", spec.name, "': layers=", spec.args.at("layers"), "; expected at most ",
                      kMaxLayers));
  }
  // Every dimension of every tensor is a product of at most a few arguments and the batch: bound
  // the batch and each argument's product with it before building, so no shape wraps around.
  for (const auto& [key, v] : spec.args) {
    if (static_cast<double>(spec.batch) * v > static_cast<double>(kMaxElements)) {
      return Bad(StrCat("model '", spec.name, "': batch ", spec.batch, " x ", key, "=", v,
                        " exceeds 2^50 elements; use a smaller batch or ", key));
    }
  }
  absl::StatusOr<Graph> g = Bad(StrCat("unknown model '", spec.name, "'; known models: ", ModelNames()));
  if (spec.name == "mlp") g = BuildMlp(spec);
  if (spec.name == "gpt") g = BuildLm(spec, /*moe=*/false);
  if (spec.name == "moe") g = BuildLm(spec, /*moe=*/true);
  if (spec.name == "vit") g = BuildVit(spec);
  if (spec.name == "vgg19") g = BuildVgg19(spec);
  if (!g.ok()) return Bad(StrCat(spec.ToString(), ": ", g.status().message()));
  for (const Value& v : g->values()) {
    int64_t n = 1;
    for (int64_t d : v.shape) {
      if (d <= 0 || __builtin_mul_overflow(n, d, &n) || n > kMaxElements) {
        return Bad(StrCat(spec.ToString(), ": tensor '", v.name, "' of shape ", ShapeString(v.shape),
                          " has more than 2^50 elements; use a smaller batch or model"));
      }
    }
  }
  return g;
}

}  // namespace hetsynth::ir
