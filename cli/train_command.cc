// `hetsynth train`: train a built-in model on one device of a backend (--backend: the CPU, or a
// GPU with cuda), or run a plan across ranks (train_plan.cc).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "backend_flags.h"
#include "commands.h"
#include "train.h"
#include "hetsynth/base/memory.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/data.h"

namespace hetsynth::cli {

absl::StatusOr<runtime::OptimizerConfig> TrainOptions::Optimizer() const {
  HS_ASSIGN_OR_RETURN(runtime::OptimizerKind kind, runtime::ParseOptimizerKind(optimizer));
  runtime::OptimizerConfig cfg;
  cfg.kind = kind;
  cfg.lr = Given("--lr") ? lr : (kind == runtime::OptimizerKind::kAdam ? 1e-3 : 1e-2);
  cfg.momentum = momentum;
  cfg.weight_decay = weight_decay;
  return cfg;
}

absl::Status TrainOptions::Validate() const {
  // A learning rate past fp32's range becomes inf in the kernels; momentum >= 1 never decays.
  if (Given("--lr") && !(lr > 0 && lr <= 3.0e38)) {
    return absl::InvalidArgumentError(StrCat("--lr ", lr, "; expected a positive number that fits in fp32 (at most 3e38)"));
  }
  if (!(momentum >= 0 && momentum < 1)) {
    return absl::InvalidArgumentError(StrCat("--momentum ", momentum, "; expected 0 <= momentum < 1"));
  }
  if (!(weight_decay >= 0 && weight_decay <= 3.0e38)) {
    return absl::InvalidArgumentError(StrCat("--weight-decay ", weight_decay, "; expected a finite number >= 0"));
  }
  if (!(deadline > 0 && deadline <= 86400)) {
    return absl::InvalidArgumentError(StrCat("--deadline ", deadline, "; expected seconds in (0, 86400]"));
  }
  if (save_every < 0) return absl::InvalidArgumentError(StrCat("--save-every ", save_every, "; expected steps >= 0"));
  if (save_every > 0 && save.empty()) return absl::InvalidArgumentError("--save-every needs --save FILE");
  // Flags that mean something only in another mode are refused rather than ignored.
  if (!elastic && elastic_worker.empty()) {
    for (const char* flag : {"--snapshot-every", "--elastic-dir", "--members", "--workers", "--mpirun", "--mpirun-args"}) {
      if (Given(flag)) return absl::InvalidArgumentError(StrCat(flag, " needs --elastic (it configures elastic training)"));
    }
  }
  if (plan.empty() && !elastic) {
    for (const char* flag : {"--dilation", "--deadline"}) {
      if (Given(flag)) return absl::InvalidArgumentError(StrCat(flag, " needs --plan (it is about running across ranks)"));
    }
  }
  if (save_every > 0 && (!plan.empty() || elastic)) {
    return absl::InvalidArgumentError(StrCat("--save-every is for one-device training; with ", elastic ? "--elastic" : "--plan",
                                             " the --save checkpoint is written at the end"));
  }
  for (const auto& [flag, path] : FlagPaths{{"--save", save}, {"--metrics", metrics}, {"--trace", trace}, {"--load", load},
                                            {"--data", data}, {"--plan", plan}, {"--cluster", cluster}}) {
    if (Given(flag) && path.empty()) return absl::InvalidArgumentError(StrCat(flag, " ''; expected a file name"));
  }
  HS_RETURN_IF_ERROR(CheckOutputPath("--save", save));
  // Elastic runs write their metrics whole at the end (replacing the file); the others stream them.
  HS_RETURN_IF_ERROR(CheckOutputPath("--metrics", metrics, elastic ? OutputWrite::kReplace : OutputWrite::kStream));
  HS_RETURN_IF_ERROR(CheckOutputPath("--trace", trace, OutputWrite::kStream));
  // --save may replace its --load (resuming and saving back is the usual loop: the checkpoint is
  // read whole first and replaced atomically at the end); no other output may name an input.
  FlagPaths inputs = {{"--data", data}, {"--plan", plan}, {"--cluster", cluster}};
  for (auto& in : ModelFileInput(model.name)) inputs.push_back(in);
  HS_RETURN_IF_ERROR(RefuseSameFiles({{"--save", save}, {"--metrics", metrics}, {"--trace", trace}}, inputs));
  return RefuseSameFiles({{"--metrics", metrics}, {"--trace", trace}}, {{"--load", load}});
}

absl::Status NonFiniteLoss(float loss, int64_t step, bool first, const runtime::OptimizerConfig& cfg) {
  if (first) {
    return absl::InvalidArgumentError(StrCat("loss is ", loss, " at step ", step, ", this run's first, before any update: "
                                             "the starting weights (the model file's or --load's) or the data hold "
                                             "values that are not finite or overflow fp32 in the forward"));
  }
  std::string hint = StrCat("lower --lr (now ", cfg.lr, ")");
  if (cfg.weight_decay > 0) hint += StrCat(" or --weight-decay (now ", cfg.weight_decay, ")");
  if (cfg.kind == runtime::OptimizerKind::kSgd && cfg.momentum > 0) hint += StrCat(" or --momentum (now ", cfg.momentum, ")");
  return absl::InvalidArgumentError(StrCat("loss became ", loss, " at step ", step, "; ", hint));
}

absl::Status CheckHostMemory(double bytes, const std::string& what, const std::string& hint) {
  const double have = PhysicalRamBytes();
  if (have > 0 && bytes > have) {
    constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
    return absl::InvalidArgumentError(fmt::format("{} needs at least {:.0f} GiB; this machine has {:.0f} GiB; {}", what,
                                                  bytes / kGiB, have / kGiB, hint));
  }
  return absl::OkStatus();
}

namespace {

// Bytes a single-device run holds at least: every value of the graph (activations and inputs)
// and its gradient, plus parameters, their gradients and up to two optimizer moments, plus what
// kernels save for backward (attention's probabilities). Counted
// in double (no overflow) and compared with physical memory before anything is allocated.
absl::Status CheckFitsInMemory(const ir::Graph& g, const std::string& what) {
  double bytes = 0;
  for (const ir::Value& v : g.values()) {
    double n = 1;
    for (int64_t d : v.shape) n *= static_cast<double>(d);
    bytes += 4.0 * n * (v.kind == ir::ValueKind::kParameter ? 4 : 2);
  }
  for (size_t n = 0; n < g.nodes().size(); ++n) bytes += 4.0 * g.NodeSavedElements(static_cast<ir::NodeId>(n));
  return CheckHostMemory(bytes, what, "use a smaller --batch or model, or --plan across ranks");
}

// A model with no trainable parameter (a graph whose output is an input, or only frozen
// constants) has nothing to train: its loss only moves with the batches drawn.
absl::Status CheckTrainable(const ir::Graph& g, const std::string& what) {
  for (const ir::Value& v : g.values()) {
    if (v.kind == ir::ValueKind::kParameter && !v.frozen) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(StrCat("train: model ", what, " has no trainable parameters (its output depends on none); "
                                           "nothing to train"));
}

absl::Status Train(const TrainOptions& o) {
  HS_RETURN_IF_ERROR(o.Validate());
  HS_ASSIGN_OR_RETURN(runtime::Backend* backend, BackendFlag(o.backend));
  HS_RETURN_IF_ERROR(CheckPrecisionFlag(*backend, o.precision, /*given=*/false));
  if (o.elastic) return RunElastic(o, *backend);
  if (!o.plan.empty()) return TrainPlan(o, *backend);
  if (o.model.name.empty()) return absl::InvalidArgumentError("train: give --model NAME (one device) or --plan PLAN (one rank per plan device)");
  for (const auto& [flag, given] : {std::pair{"--ranks", o.Given("--ranks")}, {"--cluster", !o.cluster.empty()},
                                    {"--trace", !o.trace.empty()}, {"--no-emulate", o.no_emulate},
                                    {"--bitwise", o.bitwise},
                                    {"--emulate-gpus", o.emulate_gpus}}) {
    if (given) return absl::InvalidArgumentError(StrCat(flag, " needs --plan (it is about running across ranks)"));
  }
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, o.model.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph graph, ir::BuildModel(spec));
  // A graph file from `hetsynth import` starts from its weights file unless --load says otherwise.
  const std::string load = o.load.empty() ? graph.weights_file() : o.load;
  HS_ASSIGN_OR_RETURN(runtime::OptimizerConfig cfg, o.Optimizer());
  HS_RETURN_IF_ERROR(CheckTrainable(graph, spec.ToString()));
  HS_RETURN_IF_ERROR(CheckFitsInMemory(graph, spec.ToString()));

  runtime::DataSource data;
  if (o.data.empty()) {
    HS_ASSIGN_OR_RETURN(data, runtime::DataSource::Synthetic(spec, graph, o.seed));
  } else {
    HS_ASSIGN_OR_RETURN(data, runtime::DataSource::FromFile(o.data, graph));
  }
  std::ofstream metrics;
  if (!o.metrics.empty()) {
    metrics.open(o.metrics, std::ios::binary | std::ios::trunc);
    if (!metrics) return absl::InvalidArgumentError(StrCat("--metrics '", o.metrics, "': cannot open for writing"));
  }
  // One device, on the backend's trainer (the same initialization, data and checkpoints on every backend).
  HS_RETURN_IF_ERROR(RequireAvailable(*backend));
  runtime::TrainerOptions to;
  to.precision = o.precision;
  HS_ASSIGN_OR_RETURN(std::unique_ptr<runtime::SingleDeviceTrainer> trainer,
                      backend->MakeTrainer(std::move(graph), cfg, o.seed, to));
  const std::string device = trainer->device();
  if (!load.empty()) HS_RETURN_IF_ERROR(trainer->Load(load, spec.ToString()));

  const int64_t first = trainer->step();
  if (!o.quiet) fmt::print(stderr, "training {} on {}: {} step{} from step {}, {} lr {:g}, {}\n",
             spec.ToString(), device, o.steps, o.steps == 1 ? "" : "s", first, o.optimizer, cfg.lr, data.description());
  const int64_t every = std::max<int64_t>(1, o.steps / 10);
  float first_loss = NAN, last_loss = NAN;
  double total_s = 0;
  for (int64_t i = 0; i < o.steps; ++i) {
    const int64_t step = trainer->step();
    HS_ASSIGN_OR_RETURN(runtime::Batch batch, data.Get(step));
    const auto t0 = std::chrono::steady_clock::now();
    HS_ASSIGN_OR_RETURN(float loss, trainer->Step(batch));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    total_s += dt;
    if (i == 0) first_loss = loss;
    last_loss = loss;
    if (metrics.is_open()) {
      metrics << fmt::format("{{\"step\": {}, \"loss\": {}, \"step_time_s\": {:.6f}}}\n", step + 1,
                             std::isfinite(loss) ? fmt::format("{}", loss) : "null", dt);
      metrics.flush();
      if (!metrics) {
        return absl::InvalidArgumentError(
            StrCat("--metrics '", o.metrics, "': write failed at step ", step + 1, " (", std::strerror(errno), ")"));
      }
    }
    // Checked with or without --quiet: a NaN must never reach a checkpoint.
    if (!std::isfinite(loss) && o.quiet) {
      return NonFiniteLoss(loss, step + 1, i == 0, cfg);
    }
    if (o.save_every > 0 && (i + 1) % o.save_every == 0 && i + 1 < o.steps) {
      HS_RETURN_IF_ERROR(trainer->Save(o.save, spec.ToString()));
    }
    if (o.quiet) continue;
    // Steps counted as in checkpoints and --metrics: a run from --load continues their count.
    const std::string line = fmt::format("step {:>5}/{}  loss {:.4f}  {:.3f} s/step", step + 1,
                                         first + o.steps, loss, total_s / static_cast<double>(i + 1));
    PrintProgress(line, i + 1 == o.steps, (i + 1) % every == 0 || i == 0);
    if (!std::isfinite(loss)) {
      return NonFiniteLoss(loss, step + 1, i == 0, cfg);
    }
  }
  if (!o.save.empty()) {
    HS_RETURN_IF_ERROR(trainer->Save(o.save, spec.ToString()));
    if (!o.quiet) fmt::print(stderr, "checkpoint written to {}\n", o.save);
  }
  if (o.steps == 0) {
    fmt::print("{}: no steps run (--steps 0){}\n", spec.name, o.save.empty() ? "" : "; the checkpoint holds the starting state");
  } else {
    fmt::print("trained {} for {} step{}: loss {:.4f} -> {:.4f}, {:.2f} ms/step\n", spec.name, o.steps, o.steps == 1 ? "" : "s",
               first_loss, last_loss, 1e3 * total_s / static_cast<double>(o.steps));
  }
  return absl::OkStatus();
}

}  // namespace

Runner RegisterTrain(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "train", "Train a built-in model on one device (--model), or run a plan across ranks (--plan)");
  auto o = std::make_shared<TrainOptions>();
  cmd->add_option("--model", o->model.name, "model to train: built-in (" + ir::ModelNames() + ") or a file (.onnx, graph .json); with --plan, must match the plan's");
  o->model.AddFlags(*cmd);
  cmd->add_option("--steps", o->steps, "optimizer steps to run")->required()->check(NonNegativeInt());
  cmd->add_option("--optimizer", o->optimizer, "sgd or adam (PyTorch semantics)")->capture_default_str();
  cmd->add_option("--lr", o->lr, "learning rate (default: 1e-3 for adam, 1e-2 for sgd)");
  cmd->add_option("--momentum", o->momentum, "SGD momentum")->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay, "L2 weight decay")->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of initialization, synthetic data and dropout")
      ->capture_default_str()
      ->check(SeedValue());
  cmd->add_option("--data", o->data,
                  "safetensors file with one tensor per model input, first dim a multiple of the "
                  "batch (default: the model's synthetic task)")
      ->type_name("FILE");
  cmd->add_option("--load", o->load, "start from this safetensors checkpoint")->type_name("FILE");
  cmd->add_option("--save", o->save,
                  "write a safetensors checkpoint at the end (with its optimizer state, committed as a set: "
                  "docs/runtime.md)")
      ->type_name("FILE");
  cmd->add_option("--save-every", o->save_every, "one device: also write the --save checkpoint every N steps")
      ->type_name("N");
  cmd->add_option("--metrics", o->metrics, "write one JSON line per step to FILE")->type_name("FILE");
  cmd->add_flag("--quiet", o->quiet, "no progress lines");
  cmd->add_option("--plan", o->plan,
                  "run this plan (hetsynth synth -o) across ranks: threads here, or one process per rank "
                  "under mpirun/srun")
      ->type_name("PLAN");
  cmd->add_option("--ranks", o->ranks, "thread ranks (default: one per plan device)")
                           ->check(PositiveInt());
  cmd->add_option("--cluster", o->cluster,
                  "check the plan against this cluster file (fingerprint) and take device speeds from it")
      ->type_name("FILE");
  cmd->add_option("--trace", o->trace, "with --plan: write a Chrome trace of every rank (open in Perfetto)")
      ->type_name("FILE");
  cmd->add_option("--backend", o->backend, "cpu, or cuda (GPUs; needs a CUDA build and a visible GPU)")
      ->capture_default_str();
  cmd->add_option("--precision", o->precision,
                  "with --backend cuda: GEMM arithmetic fp32, tf32 or bf16 (fp32 master weights)")
      ->capture_default_str();
  cmd->add_flag("--emulate-gpus", o->emulate_gpus,
                "with --plan --backend cuda: run the plan's devices as green contexts of one GPU, each "
                "with a share of the SMs proportional to its speed");
  cmd->add_option("--dilation", o->dilation,
                  "with --plan on CPU ranks: time dilation K — pace each rank in real time K x slower than its "
                  "device, report wall clock / K (default: $HETSYNTH_DILATION, set by `hetsynth cluster run`)")
      ->type_name("K")
      ->check(DilationFactor());
  cmd->add_option("--deadline", o->deadline,
                  "with --plan: seconds a collective may wait for the other ranks before the job ends with one "
                  "line naming the collective and the missing rank (a stopped, dead or stuck process)")
      ->capture_default_str();
  cmd->add_flag("--no-emulate", o->no_emulate,
                "with --plan: time with the wall clock instead of emulating each device's speed");
  cmd->add_flag("--bitwise", o->bitwise,
                "with --plan on CPU ranks: compute every image of a batch split with one device's bits, to compare "
                "against a one-device run (slower on ranks holding few images of small feature maps)");
  cmd->add_flag("--elastic", o->elastic,
                "elastic training (docs/elastic.md): synthesize a plan for --cluster's devices, snapshot every "
                "--snapshot-every steps, and on a lost device or a join/leave request re-plan and go on");
  cmd->add_option("--snapshot-every", o->snapshot_every,
                  "with --elastic: steps between snapshots, or auto: as often as keeps them within 1% of the step time")
      ->capture_default_str()
      ->type_name("N|auto");
  cmd->add_option("--elastic-dir", o->elastic_dir,
                  "with --elastic: where plans, snapshots (MPI), requests and the membership log go "
                  "(default: /dev/shm/hetsynth-elastic-PID)")
      ->type_name("DIR");
  cmd->add_option("--members", o->members, "with --elastic: the devices to start with, comma-separated (default: all)")
      ->type_name("D1,D2,...");
  cmd->add_option("--workers", o->workers, "with --elastic: threads (in this process) or mpi (mpirun, one process per device)")
      ->capture_default_str();
  cmd->add_option("--mpirun", o->mpirun, "with --elastic --workers mpi: the launcher (default: mpirun on PATH)")
      ->type_name("PATH");
  cmd->add_option("--mpirun-args", o->mpirun_args, "with --elastic --workers mpi: more launcher arguments (e.g. a hostfile)")
      ->type_name("ARGS");
  cmd->add_option("--elastic-worker", o->elastic_worker)->group("");  // set by the agent for its MPI workers
  cmd->add_option("--elastic-epoch", o->elastic_epoch)->group("");
  return [o, cmd]() {
    for (const CLI::Option* opt : cmd->get_options()) {
      if (opt->count() > 0 && !opt->get_lnames().empty()) o->given.insert("--" + opt->get_lnames().front());
    }
    return Train(*o);
  };
}

}  // namespace hetsynth::cli
