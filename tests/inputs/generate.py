#!/usr/bin/env python3
"""Writes the malformed-input corpus: tests/inputs/<kind>/<case>.* and tests/inputs/cases.json.

Every case is one hetsynth command (or, for graph files, which no subcommand reads, one
ReadGraphFile call) that must exit 2 with exactly one stderr line containing `error`.
corpus_test (tests/cli/corpus_test.cc) runs them all. The generated files are committed; rerun
this script after changing it (python3 tests/inputs/generate.py) and commit what changes.
To add a case by hand, drop the input file under tests/inputs/<kind>/ and add an entry to
cases.json: {"name", "args" (with {in} = tests/inputs, {tmp} = a fresh scratch directory),
"error" (a substring of the expected line)} or {"name", "graph", "error"}.
"""
import copy
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
cases = []
for kind in ("cluster", "plan", "safetensors", "graph"):
    shutil.rmtree(os.path.join(HERE, kind), ignore_errors=True)


def path(kind, name, ext):
    os.makedirs(os.path.join(HERE, kind), exist_ok=True)
    return os.path.join(kind, name + ext)


def write(rel, data):
    with open(os.path.join(HERE, rel), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def case(name, args, error):
    cases.append({"name": name, "args": args, "error": error})


def dumps(d):
    return json.dumps(d, indent=1)


# ---------------------------------------------------------------------------------------------
# Cluster files, read by synth (and profile --like, train --plan --cluster, bench, cluster up).
BASE_CLUSTER = {
    "format": "hetsynth-cluster", "version": 1, "name": "mixed-4",
    "device_types": {
        "fast": {"flops": 4e10, "memory_bytes": 17179869184, "memory_bandwidth": 2e10},
        "half": {"flops": 2e10, "memory_bytes": 8589934592, "memory_bandwidth": 2e10},
    },
    "nodes": [{"name": "n0"}],
    "devices": [
        {"name": "fast0", "type": "fast", "node": "n0"},
        {"name": "fast1", "type": "fast", "node": "n0"},
        {"name": "half0", "type": "half", "node": "n0"},
    ],
    "links": {"intra_node": {"bandwidth": 1e10, "latency": 2e-6},
              "inter_node": {"bandwidth": 1e10, "latency": 2e-6}},
    "collectives": [{"op": "all_reduce", "link": "intra_node", "samples": [[1024, 1e-5], [1048576, 1e-3]]}],
}


def cluster_case(name, text, error, cmd="synth"):
    rel = path("cluster", name, ".json")
    write(rel, text)
    if cmd == "synth":
        args = ["synth", "--model", "mlp", "--small", "--cluster", "{in}/" + rel, "-o", "{tmp}/plan.json"]
    elif cmd == "like":
        args = ["profile", "--model", "mlp", "--small", "--like", "{in}/" + rel, "-o", "{tmp}/c.json"]
    else:
        args = ["bench", "--model", "mlp", "--small", "--cluster", "{in}/" + rel, "--steps", "1", "--out", "{tmp}/b"]
    case("cluster/" + name, args, error)


def cluster_mut(name, mutate, error, cmd="synth"):
    c = copy.deepcopy(BASE_CLUSTER)
    mutate(c)
    cluster_case(name, dumps(c), error, cmd)


base_text = dumps(BASE_CLUSTER)
for frac in (0, 1, 5, 20, 50, 90, 99):
    cut = len(base_text) * frac // 100
    cluster_case(f"truncated_{frac:02d}pct", base_text[:cut], "cluster '")
cluster_case("not_json", "format: hetsynth-cluster\n", "not valid JSON")
cluster_case("top_level_array", "[1, 2, 3]", "expected a JSON object")
cluster_case("deep_name", '{"format": "hetsynth-cluster", "version": 1, "name": ' + "[" * 100000 + "]" * 100000 + "}",
             "deep; expected at most 64")
cluster_case("deep_unclosed", "[" * 200000, "deep; expected at most 64")
cluster_case("deep_objects", '{"a":' * 50000 + "1" + "}" * 50000, "deep; expected at most 64")
cluster_case("binary_garbage", bytes(range(256)) * 4, "not valid JSON")
cluster_case("nul_bytes", b"\0" * 100, "not valid JSON")
cluster_case("duplicate_key", base_text.replace('"version": 1,', '"version": 1, "version": 1,', 1), "version")
cluster_mut("wrong_format", lambda c: c.update(format="hetsynth-plan"), "format=")
cluster_mut("version_2", lambda c: c.update(version=2), "version=2")
cluster_mut("version_string", lambda c: c.update(version="1"), "version=")
cluster_mut("name_number", lambda c: c.update(name=5), "name")
cluster_mut("name_huge", lambda c: c.update(name="x" * 1000000), "name")
cluster_mut("name_newline", lambda c: c.update(name="a\nb"), "control character")
cluster_mut("name_nul", lambda c: c.update(name="a\u0000b"), "control character")
cluster_mut("device_name_newline", lambda c: c["devices"][0].update(name="fast\n0"), "control character")
cluster_mut("missing_nodes", lambda c: c.pop("nodes"), "nodes")
cluster_mut("empty_nodes", lambda c: c.update(nodes=[]), "nodes")
cluster_mut("missing_devices", lambda c: c.pop("devices"), "devices")
cluster_mut("empty_devices", lambda c: c.update(devices=[]), "devices")
cluster_mut("missing_links", lambda c: c.pop("links"), "links")
cluster_mut("unknown_field", lambda c: c.update(memory_byte=1), "memory_byte")
cluster_mut("flops_negative", lambda c: c["device_types"]["fast"].update(flops=-4e10), "flops=")
cluster_mut("flops_zero", lambda c: c["device_types"]["fast"].update(flops=0), "flops=")
cluster_mut("flops_string_nan", lambda c: c["device_types"]["fast"].update(flops="NaN"), "flops")
cluster_mut("flops_denormal", lambda c: c["device_types"]["fast"].update(flops=5e-324), "flops=")
cluster_mut("flops_huge", lambda c: c["device_types"]["fast"].update(flops=1e308), "flops=")
cluster_case("flops_overflow_inf", base_text.replace('"flops": 40000000000.0', '"flops": 1e999', 1),
             "line 7, column 13: field 'flops': number 1e999 is out of range; expected a finite number")
cluster_mut("memory_negative", lambda c: c["device_types"]["fast"].update(memory_bytes=-1), "memory_bytes=")
cluster_mut("bandwidth_zero", lambda c: c["links"]["intra_node"].update(bandwidth=0), "bandwidth=")
cluster_mut("latency_negative", lambda c: c["links"]["inter_node"].update(latency=-1), "latency=")
cluster_mut("latency_huge", lambda c: c["links"]["intra_node"].update(latency=1e308), "latency=")
cluster_mut("latency_string", lambda c: c["links"]["intra_node"].update(latency="2us"), "latency")
cluster_mut("type_missing_flops", lambda c: c["device_types"]["fast"].pop("flops"), "flops")
cluster_mut("duplicate_device", lambda c: c["devices"].append({"name": "fast0", "type": "fast", "node": "n0"}),
            "fast0")
cluster_mut("duplicate_node", lambda c: c["nodes"].append({"name": "n0"}), "n0")
cluster_mut("unknown_node", lambda c: c["devices"][0].update(node="n9"), "n9")
cluster_mut("unknown_type", lambda c: c["devices"][0].update(type="fastt"), "fastt")
cluster_mut("node_without_devices", lambda c: c["nodes"].append({"name": "n1"}), "n1")
cluster_mut("count_zero", lambda c: c["devices"].append({"name_prefix": "g", "count": 0, "type": "fast", "node": "n0"}),
            "count")
cluster_mut("count_negative", lambda c: c["devices"].append({"name_prefix": "g", "count": -3, "type": "fast", "node": "n0"}),
            "count")
cluster_mut("count_fraction", lambda c: c["devices"].append({"name_prefix": "g", "count": 1.5, "type": "fast", "node": "n0"}),
            "count")
cluster_mut("count_2p62", lambda c: c["devices"].append({"name_prefix": "g", "count": 2**62, "type": "fast", "node": "n0"}),
            "count")
cluster_mut("count_2p64", lambda c: c["devices"].append({"name_prefix": "g", "count": 2**64 + 1, "type": "fast", "node": "n0"}),
            "count")
cluster_mut("name_and_prefix", lambda c: c["devices"][0].update(name_prefix="g", count=2), "name")
cluster_mut("device_not_object", lambda c: c["devices"].append("fast2"), "devices[3]")
cluster_mut("samples_unsorted", lambda c: c["collectives"][0].update(samples=[[1048576, 1e-3], [1024, 1e-5]]),
            "samples")
cluster_mut("samples_negative_time", lambda c: c["collectives"][0].update(samples=[[1024, -1e-5]]), "samples")
cluster_mut("samples_empty", lambda c: c["collectives"][0].update(samples=[]), "samples")
cluster_mut("samples_ragged", lambda c: c["collectives"][0].update(samples=[[1024]]), "samples")
cluster_mut("collective_unknown_op", lambda c: c["collectives"][0].update(op="all_reduse"), "all_reduse")
cluster_mut("collective_unknown_link", lambda c: c["collectives"][0].update(link="nvlink"), "nvlink")
cluster_mut("collective_duplicate", lambda c: c["collectives"].append(copy.deepcopy(c["collectives"][0])),
            "all_reduce")
cluster_mut("like_flops_negative", lambda c: c["device_types"]["half"].update(flops=-1), "flops=", cmd="like")
cluster_mut("like_deep", lambda c: c.update(name=json.loads("[" * 60 + "]" * 60)), "name", cmd="like")
cluster_case("bench_truncated", base_text[:100], "cluster '", cmd="bench")
case("cluster/missing_file", ["synth", "--model", "mlp", "--small", "--cluster", "{in}/cluster/no-such-file.json",
                              "-o", "{tmp}/p.json"], "no-such-file.json")
case("cluster/directory", ["synth", "--model", "mlp", "--small", "--cluster", "{in}/cluster", "-o", "{tmp}/p.json"],
     "cluster")

# ---------------------------------------------------------------------------------------------
# Plan files, read by check and train --plan.
with open(os.path.join(HERE, "base-plan.json")) as f:
    BASE_PLAN = json.load(f)


def plan_case(name, text, error, cmd="check"):
    rel = path("plan", name, ".json")
    write(rel, text)
    if cmd == "check":
        args = ["check", "{in}/" + rel]
    elif cmd == "explain":
        args = ["explain", "{in}/" + rel]
    else:
        args = ["train", "--plan", "{in}/" + rel, "--steps", "1", "--quiet"]
    case("plan/" + name, args, error)


def plan_mut(name, mutate, error, cmd="check"):
    p = copy.deepcopy(BASE_PLAN)
    mutate(p)
    plan_case(name, dumps(p), error, cmd)


plan_text = dumps(BASE_PLAN)
for frac in (0, 3, 10, 30, 60, 95):
    plan_case(f"truncated_{frac:02d}pct", plan_text[:len(plan_text) * frac // 100], "plan '")
plan_case("truncated_train", plan_text[:len(plan_text) // 2], "plan '", cmd="train")
plan_case("not_json", "hetsynth-plan v2", "plan '")
plan_case("number_overflow", plan_text.replace('"classes": 4.0', '"classes": -1e999', 1),
          "field 'classes': number -1e999 is out of range; expected a finite number")
plan_case("deep_args", plan_text.replace('"classes": 4.0', '"classes": ' + "[" * 100000 + "]" * 100000, 1),
          "deep; expected at most 64")
plan_case("deep_op", plan_text.replace('"op": "place_input"', '"op": ' + "[" * 100000 + "]" * 100000, 1),
          "deep; expected at most 64", cmd="train")
plan_mut("wrong_format", lambda p: p.update(format="hetsynth-cluster"), "format")
plan_mut("version_4", lambda p: p.update(version=4), "version")
plan_mut("missing_model", lambda p: p.pop("model"), "model")
plan_mut("model_unknown", lambda p: p["model"].update(name="resnet"), "resnet")
plan_mut("batch_zero", lambda p: p["model"].update(batch=0), "batch")
plan_mut("batch_negative", lambda p: p["model"].update(batch=-8), "batch")
plan_mut("batch_float", lambda p: p["model"].update(batch=8.5), "batch")
plan_mut("batch_huge", lambda p: p["model"].update(batch=2**62), "batch")
plan_mut("arg_string", lambda p: p["model"]["args"].update(hidden="32"), "hidden")
plan_mut("arg_unknown", lambda p: p["model"]["args"].update(width=3), "width")
plan_mut("arg_negative", lambda p: p["model"]["args"].update(hidden=-32), "hidden")
plan_mut("arg_huge", lambda p: p["model"]["args"].update(layers=1e9), "layers")
plan_mut("arg_fraction", lambda p: p["model"]["args"].update(hidden=32.5), "hidden")
plan_mut("devices_duplicate", lambda p: p["cluster"]["devices"].__setitem__(1, "fast0"), "fast0")
plan_mut("devices_not_strings", lambda p: p["cluster"]["devices"].__setitem__(1, 7), "devices")
plan_mut("device_flops_negative", lambda p: p["cluster"]["device_flops"].__setitem__(0, -1), "device_flops")
plan_mut("device_flops_count", lambda p: p["cluster"]["device_flops"].pop(), "device_flops")
plan_mut("counts_wrap_int64", lambda p: p["splits"][0].update(counts=[2**62, 2**62, 2**62, 2**62 + 8]), "counts",
         cmd="train")
plan_mut("counts_wrap_check", lambda p: p["splits"][0].update(counts=[2**62, 2**62, 2**62, 2**62 + 8]), "counts")
plan_mut("counts_negative", lambda p: p["splits"][0].update(counts=[9, 3, -5, 1]), "counts")
plan_mut("counts_sum", lambda p: p["splits"][0].update(counts=[3, 3, 1, 2]), "count")
plan_mut("counts_short", lambda p: p["splits"][0].update(counts=[4, 4]), "count")
plan_mut("atoms_zero", lambda p: p["splits"][0].update(atoms=0), "atoms")
plan_mut("segment_2p32", lambda p: p["program"][3].update(segment=2**32), "segment")
plan_mut("dim_2p32", lambda p: p["program"][0].update(dim=2**32), "dim")
plan_mut("dim_negative", lambda p: p["program"][0].update(dim=-1), "dim")
plan_mut("op_unknown", lambda p: p["program"][0].update(op="place_everything"), "place_everything")
plan_mut("op_number", lambda p: p["program"][0].update(op=3), "op")
plan_mut("tensor_unknown", lambda p: p["program"][0].update(tensor="y"), "y")
plan_mut("node_unknown", lambda p: p["program"][3].update(node="layers.9.linear"), "layers.9.linear")
plan_mut("rule_unknown", lambda p: p["program"][3].update(rule="batch7"), "batch7")
plan_mut("post_wrong", lambda p: p["program"][0].update(post=["Identity(x)"]), "program[0]")
plan_mut("program_empty", lambda p: p.update(program=[]), "plan '")
plan_mut("program_not_array", lambda p: p.update(program={}), "program")
plan_mut("ratios_string", lambda p: p["ratios"][0].__setitem__(0, "NaN"), "ratios")
plan_mut("predicted_string", lambda p: p.update(predicted_step_time_s="fast"), "predicted_step_time_s")
plan_mut("predicted_negative", lambda p: p.update(predicted_step_time_s=-1), "predicted_step_time_s")
plan_mut("overlap_string", lambda p: p.update(overlap="yes"), "overlap")
plan_mut("bucket_unknown_param", lambda p: p["buckets"][0]["params"].append("layers.7.weight"), "layers.7.weight")
plan_mut("bucket_bytes_wrong", lambda p: p["buckets"][0].update(bytes=1), "bytes")
plan_mut("bucket_duplicate_param", lambda p: p["buckets"][0]["params"].append("head.bias"), "head.bias")
plan_mut("bucket_impl_unknown", lambda p: p["buckets"][0].update(impl="tree"), "tree")
plan_mut("explain_batch_negative", lambda p: p["model"].update(batch=-1), "batch", cmd="explain")
plan_mut("train_devices_duplicate", lambda p: p["cluster"]["devices"].__setitem__(1, "fast0"), "fast0", cmd="train")
case("plan/missing_file", ["check", "{in}/plan/no-such-plan.json"], "no-such-plan.json")

# ---------------------------------------------------------------------------------------------
# Safetensors checkpoints (train --load) and data files (train --data).
PARAMS = {"layers.0.weight": [32, 16], "layers.0.bias": [32], "layers.1.weight": [32, 32],
          "layers.1.bias": [32], "head.weight": [4, 32], "head.bias": [4]}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def safetensors(tensors, metadata=None, header_override=None, raw_header=None):
    """tensors: name -> (dtype, shape, bytes)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    buf = b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(buf), len(buf) + len(data)]}
        buf += data
    if header_override:
        header_override(header)
    text = raw_header if raw_header is not None else json.dumps(header)
    text = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(text)) + text + buf


def f32(shape, value=0.01):
    return struct.pack("<f", value) * numel(shape)


def good_params():
    return {n: ("F32", s, f32(s)) for n, s in PARAMS.items()}


META = {"format": "hetsynth-checkpoint", "model": "mlp", "step": "2", "optimizer": "sgd"}


def load_case(name, blob, error, flag="--load"):
    rel = path("safetensors", name, ".safetensors")
    write(rel, blob)
    case("safetensors/" + name,
         ["train", "--model", "mlp", "--small", "--steps", "1", "--quiet", flag, "{in}/" + rel], error)


good = safetensors(good_params(), META)
load_case("empty", b"", "expected at least 8")
load_case("seven_bytes", b"\x01" * 7, "expected at least 8")
load_case("header_size_huge", struct.pack("<Q", 2**63) + b"{}", "header size")
load_case("header_size_past_end", struct.pack("<Q", 1000) + b"{}", "truncated")
for cut in (8, 20, 100, len(good) - 1000, len(good) - 1):
    load_case(f"truncated_at_{cut}", good[:cut], "safetensors '")
load_case("header_not_json", struct.pack("<Q", 5) + b"hello", "not valid JSON")
load_case("header_number_overflow", safetensors({}, raw_header='{"x": 1E444440}'), "not valid JSON")  # found by fuzz_safetensors
load_case("header_array", safetensors({}, raw_header="[1,2]"), "expected a JSON object")
deep = "[" * 1000000 + "]" * 1000000
load_case("header_deep_2mb", safetensors({}, raw_header='{"x": ' + deep + "}"), "deep; expected at most 64")
load_case("metadata_deep", safetensors({}, raw_header='{"__metadata__": {"a": ' + "[" * 70 + "]" * 70 + "}}"),
          "deep; expected at most 64")
load_case("dtype_unknown", safetensors(good_params(), META, lambda h: h["head.bias"].update(dtype="F8")), "F8")
load_case("dtype_number", safetensors(good_params(), META, lambda h: h["head.bias"].update(dtype=32)), "dtype")
load_case("shape_negative", safetensors(good_params(), META, lambda h: h["head.bias"].update(shape=[-4])), "shape")
load_case("shape_float", safetensors(good_params(), META, lambda h: h["head.bias"].update(shape=[4.0])), "shape")
load_case("shape_overflow", safetensors(good_params(), META,
                                        lambda h: h["head.bias"].update(shape=[2**32, 2**32, 2**32])), "shape")
load_case("shape_mismatch_bytes", safetensors(good_params(), META, lambda h: h["head.bias"].update(shape=[5])),
          "head.bias")
load_case("offsets_reversed", safetensors(good_params(), META, lambda h: h["head.bias"].update(
    data_offsets=list(reversed(h["head.bias"]["data_offsets"])))), "data_offsets")
load_case("offsets_past_end", safetensors(good_params(), META, lambda h: h["head.bias"].update(
    data_offsets=[10**9, 10**9 + 16])), "data_offsets")
load_case("offsets_overlap", safetensors(good_params(), META, lambda h: h["head.bias"].update(
    data_offsets=[0, 16])), "overlap")
load_case("offsets_missing", safetensors(good_params(), META, lambda h: h["head.bias"].pop("data_offsets")),
          "data_offsets")
load_case("duplicate_name", safetensors({}, raw_header='{"a": {"dtype":"F32","shape":[0],"data_offsets":[0,0]}, '
                                                       '"a": {"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'),
          "twice")
load_case("metadata_not_object", safetensors(good_params(), ["a"]), "__metadata__")
load_case("metadata_value_number", safetensors(good_params(), {"step": 2}), "__metadata__")
load_case("step_negative", safetensors(good_params(), dict(META, step="-1")), "step")
load_case("step_text", safetensors(good_params(), dict(META, step="two")), "step")
load_case("step_overflow", safetensors(good_params(), dict(META, step="99999999999999999999999")), "step")
load_case("missing_param", safetensors({k: v for k, v in good_params().items() if k != "head.bias"}, META),
          "head.bias")
load_case("extra_tensor", safetensors(dict(good_params(), extra=("F32", [1], f32([1]))), META), "extra")
load_case("wrong_shape", safetensors(dict(good_params(), **{"head.bias": ("F32", [5], f32([5]))}), META), "head.bias")
load_case("nan_values", safetensors(dict(good_params(), **{"head.bias": ("F32", [4], f32([4], float("nan")))}), META),
          "head.bias")
load_case("inf_values", safetensors(dict(good_params(), **{"head.weight": ("F32", [4, 32], f32([4, 32], float("inf")))}),
                                    META), "head.weight")
load_case("other_model", safetensors({"w": ("F32", [3], f32([3]))}, dict(META, model="gpt")), "checkpoint")
good_header = json.dumps(json.loads(good[8:8 + struct.unpack("<Q", good[:8])[0]]))
load_case("duplicate_key_in_entry", safetensors(good_params(), raw_header=good_header.replace(
    '"head.bias": {"dtype": "F32"', '"head.bias": {"dtype": "X9", "dtype": "F32"')), "has key 'dtype' twice")
load_case("duplicate_metadata_key", safetensors(good_params(), raw_header=good_header.replace(
    '"step": "2"', '"step": "2", "step": "999"')), "__metadata__ has key 'step' twice")
load_case("trailing_bytes", good + b"\0" * 64, "64 bytes after the last tensor's data")
load_case("format_unknown", safetensors(good_params(), dict(META, format="pytorch")), "metadata format='pytorch'")
load_case("optimizer_unknown", safetensors(good_params(), dict(META, optimizer="lion")), "metadata optimizer='lion'")
load_case("model_other_architecture", safetensors(good_params(), dict(
    META, model="mlp(layers=2, hidden=64, inputs=16, classes=4; batch 8)")), "has hidden=64 but the model is 'mlp(")
load_case("step_past_2_53", safetensors(good_params(), dict(META, step="9007199254740993")), "at most 2^53")


def state_case(name, state, error, state_meta=None):
    """A checkpoint from before sets: the manifest and its state file NAME.optim.safetensors."""
    load_case(name, safetensors(good_params(), dict(META, optimizer="adam")), error)
    write(path("safetensors", name + ".optim", ".safetensors"),
          safetensors(state, state_meta if state_meta is not None else {"optimizer": "adam", "step": "2"}))


def adam_state(value=0.0, value_sq=0.0):
    out = {}
    for n, s in PARAMS.items():
        out[n + ".exp_avg"] = ("F32", s, f32(s, value))
        out[n + ".exp_avg_sq"] = ("F32", s, f32(s, value_sq))
    return out


state_case("state_nan_exp_avg", adam_state(value=float("nan")), "tensor 'head.bias.exp_avg' element 0 is nan")
state_case("state_negative_exp_avg_sq", adam_state(value_sq=-1.0), "element 0 is -1; expected finite, non-negative")
state_case("state_missing_exp_avg_sq", {k: v for k, v in adam_state().items() if k != "head.bias.exp_avg_sq"},
           "parameter 'head.bias' has exp_avg but no exp_avg_sq")
state_case("state_unknown_suffix", dict(adam_state(), **{"head.bias.bogus": ("F32", [4], f32([4]))}),
           "tensor 'head.bias.bogus' is not optimizer state")
state_case("state_other_optimizer_than_manifest", {}, "metadata optimizer='sgd' but its manifest says 'adam'",
           state_meta={"optimizer": "sgd"})
load_case("not_a_file", b"", "safetensors '")  # replaced below by a directory
os.remove(os.path.join(HERE, "safetensors", "not_a_file.safetensors"))
os.makedirs(os.path.join(HERE, "safetensors", "not_a_file.safetensors"), exist_ok=True)
write("safetensors/not_a_file.safetensors/.keep", "")


def data_case(name, tensors, error):
    load_case(name, safetensors(tensors), error, flag="--data")


def labels(n, value=1):
    return struct.pack("<q", value) * n


data_case("data_zero_rows", {"x": ("F32", [0, 16], b""), "labels": ("I64", [0], b"")}, "rows")
data_case("data_not_multiple", {"x": ("F32", [12, 16], f32([12, 16])), "labels": ("I64", [12], labels(12))},
          "multiple of the batch")
data_case("data_wrong_tail", {"x": ("F32", [8, 15], f32([8, 15])), "labels": ("I64", [8], labels(8))}, "x")
data_case("data_missing_input", {"x": ("F32", [8, 16], f32([8, 16]))}, "labels")
data_case("data_extra_tensor", {"x": ("F32", [8, 16], f32([8, 16])), "labels": ("I64", [8], labels(8)),
                                "y": ("F32", [8], f32([8]))}, "'y'")
data_case("data_rows_differ", {"x": ("F32", [16, 16], f32([16, 16])), "labels": ("I64", [8], labels(8))}, "rows")
data_case("data_label_range", {"x": ("F32", [8, 16], f32([8, 16])), "labels": ("I64", [8], labels(8, 4))}, "labels")
data_case("data_label_negative", {"x": ("F32", [8, 16], f32([8, 16])), "labels": ("I64", [8], labels(8, -1))},
          "labels")
data_case("data_label_huge", {"x": ("F32", [8, 16], f32([8, 16])), "labels": ("I64", [8], labels(8, 2**40))},
          "labels")
data_case("data_label_fraction", {"x": ("F32", [8, 16], f32([8, 16])), "labels": ("F32", [8], f32([8], 0.5))},
          "labels")
data_case("data_nan_input", {"x": ("F32", [8, 16], f32([8, 16], float("nan"))), "labels": ("I64", [8], labels(8))},
          "'x'")

# ---------------------------------------------------------------------------------------------
# Graph files: no subcommand reads one, so corpus_test calls ir::ReadGraphFile on them.
BASE_GRAPH = {
    "format": "hetsynth-graph", "version": 1, "name": "g", "loss": "loss",
    "values": [{"kind": "input", "name": "x", "shape": [8, 16]},
               {"kind": "input", "name": "labels", "shape": [8]},
               {"kind": "parameter", "name": "w", "shape": [4, 16], "init": {"kind": "normal", "scale": 0.1}},
               {"kind": "parameter", "name": "b", "shape": [4], "init": {"kind": "zeros"}}],
    "nodes": [{"name": "fc", "op": "linear", "inputs": ["x", "w", "b"]},
              {"name": "loss", "op": "cross_entropy", "inputs": ["fc", "labels"]}],
}


def graph_case(name, text, error):
    rel = path("graph", name, ".json")
    write(rel, text)
    cases.append({"name": "graph/" + name, "graph": "{in}/" + rel, "error": error})


def graph_mut(name, mutate, error):
    g = copy.deepcopy(BASE_GRAPH)
    mutate(g)
    graph_case(name, dumps(g), error)


gtext = dumps(BASE_GRAPH)
for frac in (0, 10, 50, 90):
    graph_case(f"truncated_{frac:02d}pct", gtext[:len(gtext) * frac // 100], "graph '")
graph_case("deep_op", gtext.replace('"op": "linear"', '"op": ' + "[" * 100000 + "]" * 100000), "deep; expected at most 64")
graph_mut("wrong_format", lambda g: g.update(format="hetsynth-plan"), "format")
graph_mut("version_9", lambda g: g.update(version=9), "version")
graph_mut("shape_zero", lambda g: g["values"][0].update(shape=[8, 0]), "shape")
graph_mut("shape_overflow", lambda g: g["values"][0].update(shape=[2**40, 2**40]), "shape")
graph_case("number_overflow", gtext.replace('"scale": 0.1', '"scale": 1e400', 1),
           "field 'scale': number 1e400 is out of range; expected a finite number")
graph_mut("shape_string", lambda g: g["values"][0].update(shape="8x16"), "shape")
graph_mut("duplicate_value", lambda g: g["values"].append({"kind": "input", "name": "x", "shape": [8, 16]}), "x")
graph_mut("op_unknown", lambda g: g["nodes"][0].update(op="linearr"), "linearr")
graph_mut("op_long", lambda g: g["nodes"][0].update(op="z" * 100000), "op")
graph_mut("dangling_input", lambda g: g["nodes"][0].update(inputs=["x", "w", "bias"]), "bias")
graph_mut("loss_unknown", lambda g: g.update(loss="nope"), "nope")
graph_mut("init_unknown", lambda g: g["values"][2].update(init={"kind": "xavier"}), "init")
graph_mut("init_scale_nan", lambda g: g["values"][2].update(init={"kind": "normal", "scale": "NaN"}), "init")
graph_mut("kind_unknown", lambda g: g["values"][0].update(kind="output"), "kind")
graph_mut("wrong_arity", lambda g: g["nodes"][0].update(inputs=["x"]), "fc")
graph_mut("shape_mismatch", lambda g: g["values"][2].update(shape=[4, 15]), "fc")

# ---------------------------------------------------------------------------------------------
# Flag values.
TRAIN = ["train", "--model", "mlp", "--small", "--steps", "1", "--quiet"]


def flag(name, args, error):
    case("flags/" + name, args, error)


flag("batch_huge", ["train", "--model", "mlp", "--small", "--batch", "100000000000", "--steps", "1", "--quiet"],
     "GiB")
flag("layers_billion", ["models", "mlp", "--model-arg", "layers=1000000000"], "layers")
flag("hidden_overflow", ["models", "gpt", "--model-arg", "hidden=1000000000", "--model-arg", "seq=1000000000",
                         "--batch", "1000000000"], "2^50")
flag("model_arg_unknown", ["models", "mlp", "--model-arg", "width=3"], "width")
flag("model_arg_zero", ["models", "mlp", "--model-arg", "hidden=0"], "hidden")
flag("model_arg_negative", ["models", "mlp", "--model-arg", "hidden=-4"], "hidden")
flag("model_arg_fraction", ["models", "mlp", "--model-arg", "hidden=1.5"], "hidden")
flag("model_arg_text", ["models", "mlp", "--model-arg", "hidden=big"], "hidden")
flag("model_arg_no_equals", ["models", "mlp", "--model-arg", "hidden"], "hidden")
flag("model_arg_twice", ["models", "mlp", "--model-arg", "hidden=8", "--model-arg", "hidden=16"], "already given")
flag("model_arg_hex", ["models", "mlp", "--model-arg", "hidden=0x10"], "hidden")
flag("model_unknown", ["models", "resnet"], "resnet")
flag("lr_huge", TRAIN + ["--lr", "1e308"], "--lr")
flag("lr_inf", TRAIN + ["--lr", "inf"], "--lr")
flag("lr_nan", TRAIN + ["--lr", "nan"], "--lr")
flag("lr_negative", TRAIN + ["--lr", "-0.1"], "--lr")
flag("lr_text", TRAIN + ["--lr", "fast"], "--lr")
flag("momentum_nan", TRAIN + ["--momentum", "nan"], "--momentum")
flag("momentum_negative", TRAIN + ["--momentum", "-1"], "--momentum")
flag("weight_decay_negative", TRAIN + ["--weight-decay", "-1"], "--weight-decay")
flag("weight_decay_nan", TRAIN + ["--weight-decay", "nan"], "--weight-decay")
flag("seed_negative", TRAIN + ["--seed", "-1"], "--seed")
flag("seed_text", TRAIN + ["--seed", "abc"], "--seed")
flag("seed_overflow", TRAIN + ["--seed", "18446744073709551616"], "--seed")
flag("dilation_zero", ["train", "--plan", "{in}/base-plan.json", "--steps", "1", "--dilation", "0"], "--dilation")
flag("dilation_nan", ["train", "--plan", "{in}/base-plan.json", "--steps", "1", "--dilation", "nan"], "--dilation")
flag("dilation_huge", ["train", "--plan", "{in}/base-plan.json", "--steps", "1", "--dilation", "1e300"], "--dilation")
flag("dilation_without_plan", TRAIN + ["--dilation", "2"], "--dilation needs --plan")
flag("deadline_without_plan", TRAIN + ["--deadline", "5"], "--deadline needs --plan")
flag("members_without_elastic", TRAIN + ["--members", "fast0"], "--members needs --elastic")
flag("workers_without_elastic", ["train", "--plan", "{in}/base-plan.json", "--steps", "1", "--workers", "mpi"],
     "--workers needs --elastic")
flag("snapshot_every_without_elastic", TRAIN + ["--snapshot-every", "5"], "--snapshot-every needs --elastic")
flag("save_every_with_plan", ["train", "--plan", "{in}/base-plan.json", "--steps", "1", "--save", "{tmp}/c.safetensors",
                              "--save-every", "1"], "--save-every is for one-device training")
flag("steps_negative", ["train", "--model", "mlp", "--small", "--steps", "-1"], "--steps")
flag("steps_text", ["train", "--model", "mlp", "--small", "--steps", "ten"], "--steps")
flag("optimizer_unknown", TRAIN + ["--optimizer", "lamb"], "lamb")
flag("backend_unknown", TRAIN + ["--backend", "tpu"], "tpu")
flag("ranks_zero", ["train", "--plan", "{in}/base-plan.json", "--steps", "1", "--ranks", "0"], "--ranks")
flag("save_bad_dir", TRAIN + ["--save", "{tmp}/no/such/dir/ck.safetensors"], "--save")
flag("metrics_bad_dir", TRAIN + ["--metrics", "{tmp}/no/such/dir/m.jsonl"], "--metrics")
flag("load_missing", TRAIN + ["--load", "{tmp}/missing.safetensors"], "missing.safetensors")
flag("save_empty", TRAIN + ["--save", ""], "--save ''; expected a file name")
flag("save_device", TRAIN + ["--save", "/dev/null"], "--save '/dev/null' is a character device")
flag("metrics_write_fails", TRAIN + ["--metrics", "/dev/full"], "--metrics '/dev/full': write failed at step 1")
flag("metrics_is_load", TRAIN + ["--load", "{tmp}/c.safetensors", "--metrics", "{tmp}/c.safetensors"],
     "is the file of --load")
flag("save_is_data", TRAIN + ["--data", "{tmp}/d.safetensors", "--save", "{tmp}/d.safetensors"], "is the file of --data")
flag("data_missing", TRAIN + ["--data", "{tmp}/missing.safetensors"], "missing.safetensors")
# Finite weights whose forward overflows: the loss is not finite before any update, so not --lr's doing.
load_case("overflows_forward", safetensors(dict(good_params(), **{
    "layers.1.bias": ("F32", [32], f32([32], 1e3)),
    "head.weight": ("F32", [4, 32], f32([32], 3e38) + f32([32], -3e38) + f32([64], 0.0))}), META),
    "at step 3, this run's first, before any update")
DIVERGE = ["--optimizer", "sgd", "--lr", "1e38", "--weight-decay", "1000", "--save", "{tmp}/d.safetensors"]
flag("diverged_save", TRAIN + DIVERGE, "not written: tensor 'head.weight' element 0 is -inf; the training diverged")
flag("diverged_save_every", ["train", "--model", "mlp", "--small", "--steps", "3", "--quiet", "--save-every", "1"] + DIVERGE,
     "the training diverged")
flag("diverged_save_plan", ["train", "--plan", "{in}/base-plan.json", "--steps", "1", "--quiet"] + DIVERGE,
     "the training diverged")
flag("nan_loss_quiet", ["train", "--model", "mlp", "--small", "--steps", "5", "--quiet", "--lr", "1e30"], "loss became")
flag("synth_out_bad_dir", ["synth", "--model", "mlp", "--small", "--cluster", "{in}/../../examples/clusters/mixed-4.json",
                           "-o", "{tmp}/no/such/dir/p.json"], "no/such/dir")
flag("synth_time_limit_negative", ["synth", "--model", "mlp", "--small", "--cluster",
                                   "{in}/../../examples/clusters/mixed-4.json", "-o", "{tmp}/p.json",
                                   "--time-limit", "-1"], "--time-limit")
flag("synth_time_limit_nan", ["synth", "--model", "mlp", "--small", "--cluster",
                              "{in}/../../examples/clusters/mixed-4.json", "-o", "{tmp}/p.json",
                              "--time-limit", "nan"], "--time-limit")
flag("synth_baseline_unknown", ["synth", "--model", "mlp", "--small", "--cluster",
                                "{in}/../../examples/clusters/mixed-4.json", "-o", "{tmp}/p.json",
                                "--baseline", "ddp-xx"], "ddp-xx")
flag("profile_out_bad_dir", ["profile", "--model", "mlp", "--small", "-o", "{tmp}/no/such/dir/c.json"], "no/such/dir")
flag("profile_repeats_zero", ["profile", "--model", "mlp", "--small", "-o", "{tmp}/c.json", "--repeats", "0"],
     "--repeats")
flag("profile_max_bytes_negative", ["profile", "--model", "mlp", "--small", "-o", "{tmp}/c.json", "--max-bytes", "-1"],
     "--max-bytes")
BENCH = ["bench", "--model", "mlp", "--small", "--cluster", "{in}/../../examples/clusters/mixed-4.json", "--out", "{tmp}/b"]
flag("bench_ranks_not_devices", BENCH + ["--ranks", "2"], "--ranks 2")
flag("bench_seed_negative", BENCH + ["--seed", "-1"], "--seed")
flag("bench_inference_rounds", BENCH + ["--inference", "--rounds", "2"], "--rounds is for training plans")
flag("bench_inference_no_mesh_levels", BENCH + ["--inference", "--no-mesh-levels"], "--no-mesh-levels is for training")
flag("bench_dilation_zero", BENCH + ["--emulate-network", "--dilation", "0"], "--dilation")
flag("profile_ranks_zero", ["profile", "--model", "mlp", "--small", "-o", "{tmp}/c.json", "--ranks", "0"], "--ranks 0")
flag("cluster_is_directory", ["synth", "--model", "mlp", "--small", "--cluster", "{in}/cluster", "-o", "{tmp}/p.json"],
     "is a directory")
flag("graph_out_bad_dir", ["models", "mlp", "--small", "--graph-out", "{tmp}/no/such/dir/g.json"], "no/such/dir")
flag("unknown_subcommand", ["trian"], "trian")
flag("unknown_flag", ["train", "--model", "mlp", "--steps", "1", "--stepz", "1"], "--stepz")
flag("long_unknown_value", ["models", "x" * 100000], "unknown")

with open(os.path.join(HERE, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
    f.write("\n")
print(f"{len(cases)} cases")
