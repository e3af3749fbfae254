#!/usr/bin/env python3
"""hetsynth vs PyTorch eager on one CPU thread each, in the same run (scripts/bench-vs-pytorch).

Both sides train the same model (docs/models.md: same shapes, same FLOPs) with Adam on one
thread, WARMUP steps and then STEPS timed steps, in separate processes; the two sides alternate
within each of ROUNDS rounds and every figure is the median over the rounds.
- PyTorch (a child process of a Python that imports torch: Debian python3-torch) measures itself
  over the timed steps: wall clock, CPU time (user + system) and minor page faults
  (getrusage); peak memory is the process's maximum resident set.
- hetsynth runs twice, for WARMUP and for WARMUP + STEPS steps: CPU time and page faults per step
  are the difference of the two runs over STEPS (start-up and warm-up cancel out), the wall time
  per step is the mean of its own per-step times (--metrics) over the timed steps, and peak
  memory is the longer run's maximum resident set.
Without a Python that imports torch the PyTorch rows say so and are skipped.

  bench_vs_pytorch.py --hetsynth build/bin/hetsynth [--torch-python /usr/bin/python3]
                      [--steps N] [--warmup 3] [--rounds 3] [--models gpt,mlp] [--markdown FILE]
  bench_vs_pytorch.py --torch-child MODEL WARMUP STEPS   (internal: one PyTorch run)
"""
import argparse
import json
import os
import shutil
import statistics
import tempfile
import subprocess
import sys
import time

# Workloads: hetsynth arguments, and the same hyperparameters for the PyTorch model.
WORKLOADS = {
    "gpt": {
        "label": "gpt (layers 4, hidden 256, heads 4, ffn 1024, seq 128, vocab 2048; batch 8)",
        "hp": {"layers": 4, "hidden": 256, "heads": 4, "ffn": 1024, "seq": 128, "vocab": 2048},
        "batch": 8,
        "steps": 10,
    },
    "mlp": {
        "label": "mlp defaults (layers 4, hidden 1024, inputs 784, classes 10; batch 32)",
        "hp": {"layers": 4, "hidden": 1024, "inputs": 784, "classes": 10},
        "batch": 32,
        "steps": 40,
    },
}

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def hetsynth_cmd(binary, model, steps):
    w = WORKLOADS[model]
    cmd = [binary, "train", "--model", model, "--batch", str(w["batch"]), "--steps", str(steps), "--quiet",
           "--optimizer", "adam"]
    for k, v in w["hp"].items():
        cmd += ["--model-arg", f"{k}={v}"]
    return cmd


def run_measured(cmd):
    """Runs cmd; returns wall seconds, CPU seconds, minor faults, peak RSS bytes (of that process)."""
    env = dict(os.environ, **THREAD_ENV)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench-vs-pytorch: {' '.join(cmd)} failed (exit status {os.waitstatus_to_exitcode(status)}): {err.strip()[-500:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "minflt": ru.ru_minflt, "maxrss": ru.ru_maxrss * 1024}


def run_json(cmd):
    """Runs cmd (a PyTorch child); returns the JSON object it prints last."""
    r = subprocess.run(cmd, env=dict(os.environ, **THREAD_ENV), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench-vs-pytorch: {' '.join(cmd)} failed (exit status {r.returncode}): {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def per_step(short, long_, steps):
    return {  # (+ 0.0: no "-0")
        "step_ms": (long_["wall"] - short["wall"]) / steps * 1e3,
        "cpu_ms": (long_["cpu"] - short["cpu"]) / steps * 1e3,
        "faults": (long_["minflt"] - short["minflt"]) / steps + 0.0,
        "rss_mb": long_["maxrss"] / 2**20,
    }


def faults_str(v):
    """Faults per step as a whole number ("0", not "-0", for the differencing's noise around 0)."""
    return str(int(round(v)) + 0) if round(v) != 0 else "0"


def median_of(rows):
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


# ---- the PyTorch side (child process) ---------------------------------------------------------

def torch_child(model, warmup, steps):
    import math
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(0)
    w = WORKLOADS[model]
    hp, B = w["hp"], w["batch"]

    class Mlp(nn.Module):  # docs/models.md, mlp
        def __init__(s, layers, hidden, inputs, classes):
            super().__init__()
            s.layers = nn.ModuleList(nn.Linear(inputs if i == 0 else hidden, hidden) for i in range(layers))
            s.head = nn.Linear(hidden if layers else inputs, classes)

        def forward(s, x, labels):
            for l in s.layers:
                x = F.relu(l(x))
            return F.cross_entropy(s.head(x), labels)

    def attention(q, k, v):
        if hasattr(F, "scaled_dot_product_attention"):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        # PyTorch < 2.0: the same causal softmax attention, spelled out.
        T, D = q.shape[-2], q.shape[-1]
        s = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        return torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v

    class Block(nn.Module):  # docs/models.md, gpt
        def __init__(s, C, H, Fw):
            super().__init__()
            s.ln1, s.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
            s.attn = nn.Module()
            s.attn.q, s.attn.k, s.attn.v, s.attn.proj = (nn.Linear(C, C) for _ in range(4))
            s.mlp = nn.Module()
            s.mlp.fc1, s.mlp.fc2 = nn.Linear(C, Fw), nn.Linear(Fw, C)
            s.H = H

        def forward(s, h):
            B_, T, C = h.shape
            D = C // s.H
            a = s.ln1(h)
            q, k, v = (l(a).view(B_, T, s.H, D).transpose(1, 2) for l in (s.attn.q, s.attn.k, s.attn.v))
            att = attention(q, k, v).transpose(1, 2).reshape(B_, T, C)
            h = h + s.attn.proj(att)
            return h + s.mlp.fc2(F.gelu(s.mlp.fc1(s.ln2(h))))

    class Gpt(nn.Module):
        def __init__(s, layers, C, H, Fw, T, V):
            super().__init__()
            s.tok_emb, s.pos_emb = nn.Embedding(V, C), nn.Embedding(T, C)
            s.layers = nn.ModuleList(Block(C, H, Fw) for _ in range(layers))
            s.ln_f, s.head = nn.LayerNorm(C), nn.Linear(C, V, bias=False)

        def forward(s, tokens, targets):
            h = s.tok_emb(tokens) + s.pos_emb.weight
            for blk in s.layers:
                h = blk(h)
            logits = s.head(s.ln_f(h))
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    if model == "gpt":
        net = Gpt(hp["layers"], hp["hidden"], hp["heads"], hp["ffn"], hp["seq"], hp["vocab"])
        T, V = hp["seq"], hp["vocab"]

        def batch(step):  # the counting task's shapes (docs/models.md, synthetic data)
            g = torch.Generator().manual_seed(step)
            start = torch.randint(0, V, (B, 1), generator=g)
            stride = torch.randint(1, 4, (B, 1), generator=g)
            t = torch.arange(T + 1)
            seq = (start + stride * t) % V
            return seq[:, :T], seq[:, 1:]
    else:
        net = Mlp(hp["layers"], hp["hidden"], hp["inputs"], hp["classes"])

        def batch(step):
            g = torch.Generator().manual_seed(step)
            return torch.randn(B, hp["inputs"], generator=g), torch.randint(0, hp["classes"], (B,), generator=g)

    import resource
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0 = ru0 = None
    for step in range(warmup + steps):
        if step == warmup:
            t0, ru0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
        x, y = batch(step)
        opt.zero_grad(set_to_none=True)
        loss = net(x, y)
        loss.backward()
        opt.step()
    wall, ru = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "step_ms": wall / steps * 1e3,
        "cpu_ms": ((ru.ru_utime + ru.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / steps * 1e3,
        "faults": (ru.ru_minflt - ru0.ru_minflt) / steps,
        "rss_mb": ru.ru_maxrss / 1024,
        "loss": float(loss),
    }))


def torch_python(requested):
    """A Python that can import torch, or None with the reason."""
    candidates = [requested] if requested else [sys.executable, "/usr/bin/python3"]
    # The torch version and the BLAS library its matrix products load (from the process's maps).
    probe = ("import torch\n"
             "torch.ones(64, 64) @ torch.ones(64, 64)\n"
             "libs = sorted({l.split()[-1] for l in open('/proc/self/maps') if 'blas' in l.split()[-1]})\n"
             "print(torch.__version__, ', '.join(libs) or 'no separate BLAS library')\n")
    for py in candidates:
        if py and os.path.exists(py):
            r = subprocess.run([py, "-c", probe], capture_output=True, text=True, env=dict(os.environ, **THREAD_ENV))
            if r.returncode == 0:
                return py, r.stdout.strip()
    return None, "no Python here imports torch (install Debian python3-torch: scripts/install-deps --tests)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-child", nargs=3, metavar=("MODEL", "WARMUP", "STEPS"))
    ap.add_argument("--hetsynth", default="build/bin/hetsynth")
    ap.add_argument("--torch-python", default="")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 10 for gpt, 40 for mlp)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="gpt,mlp")
    ap.add_argument("--markdown", default="")
    a = ap.parse_args()
    if a.torch_child:
        torch_child(a.torch_child[0], int(a.torch_child[1]), int(a.torch_child[2]))
        return
    models = [m for m in a.models.split(",") if m]
    for m in models:
        if m not in WORKLOADS:
            print(f"bench-vs-pytorch: --models {m}: expected one of {', '.join(WORKLOADS)}", file=sys.stderr)
            sys.exit(2)
    for flag, v in (("--steps", a.steps or 1), ("--rounds", a.rounds), ("--warmup", a.warmup + 1)):
        if v < 1:
            print(f"bench-vs-pytorch: {flag} {v}: expected a positive count", file=sys.stderr)
            sys.exit(2)
    if not os.access(a.hetsynth, os.X_OK):
        print(f"bench-vs-pytorch: --hetsynth {a.hetsynth}: not an executable (build it: scripts/build)", file=sys.stderr)
        sys.exit(2)
    py, torch_version = torch_python(a.torch_python)
    if py is None:
        print(f"bench-vs-pytorch: PyTorch skipped: {torch_version}")
    else:
        version, _, blas = torch_version.partition(" ")
        print(f"bench-vs-pytorch: PyTorch {version} ({py}), torch.set_num_threads(1), BLAS {blas}")
        if "openblas" not in blas:
            print("bench-vs-pytorch: warning: PyTorch is not on OpenBLAS (Debian: apt-get install libopenblas0-pthread); "
                  "its GEMMs are the reference BLAS's, and the ratio flatters hetsynth")
    print(f"bench-vs-pytorch: one thread each ({', '.join(f'{k}=1' for k in THREAD_ENV)}), Adam, {a.warmup} warm-up "
          f"steps; median of {a.rounds} rounds")

    tmpdir = tempfile.mkdtemp(prefix="bench-vs-pytorch.")
    metrics = os.path.join(tmpdir, "metrics.jsonl")
    lines = ["| model | side | step ms | CPU ms | page faults / step | peak RSS MB |", "|---|---|---:|---:|---:|---:|"]
    ratios = []
    for m in models:
        rows = {"hetsynth": [], "PyTorch": []}
        for r in range(a.rounds):
            steps = a.steps or WORKLOADS[m]["steps"]
            sides = ["hetsynth"] + (["PyTorch"] if py else [])
            for side in sides:
                if side == "hetsynth":
                    short = run_measured(hetsynth_cmd(a.hetsynth, m, a.warmup))
                    long_ = run_measured(hetsynth_cmd(a.hetsynth, m, a.warmup + steps) + ["--metrics", metrics])
                    x = per_step(short, long_, steps)
                    # Wall time from hetsynth's own per-step times (free of start-up noise).
                    with open(metrics) as f:
                        times = [json.loads(line)["step_time_s"] for line in f if line.strip()][a.warmup:]
                    x["step_ms"] = sum(times) / len(times) * 1e3
                else:
                    x = run_json([py, os.path.abspath(__file__), "--torch-child", m, str(a.warmup), str(steps)])
                rows[side].append(x)
                print(f"  {m} round {r + 1} {side}: {x['step_ms']:.1f} ms/step, CPU {x['cpu_ms']:.1f} ms, "
                      f"{faults_str(x['faults'])} faults/step, peak {x['rss_mb']:.0f} MB", flush=True)
        med = {side: median_of(v) for side, v in rows.items() if v}
        for side, x in med.items():
            lines.append(f"| {m} | {side} | {x['step_ms']:.1f} | {x['cpu_ms']:.1f} | {faults_str(x['faults'])} | {x['rss_mb']:.0f} |")
        if "PyTorch" in med:
            h, t = med["hetsynth"], med["PyTorch"]
            ratios.append(f"{m}: hetsynth / PyTorch step time {h['step_ms'] / t['step_ms']:.2f}x, "
                          f"CPU time {h['cpu_ms'] / t['cpu_ms']:.2f}x, peak RSS {h['rss_mb'] / t['rss_mb']:.2f}x")
        else:
            ratios.append(f"{m}: no ratio (PyTorch skipped)")
    labels = [f"- {m}: {WORKLOADS[m]['label']}" for m in models]
    out = "\n".join(labels + [""] + lines + [""] + [f"- {r}" for r in ratios])
    print()
    print(out)
    shutil.rmtree(tmpdir, ignore_errors=True)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(out + "\n")


if __name__ == "__main__":
    main()
