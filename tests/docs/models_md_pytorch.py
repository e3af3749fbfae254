#!/usr/bin/env python3
"""docs/models.md, run as a user would: its PyTorch 1.13 helpers and its gpt definition, taken
from the page itself, trained from hetsynth's starting weights on the same data with dropout on
must give hetsynth's losses.

  /usr/bin/python3 tests/docs/models_md_pytorch.py HETSYNTH_BIN DOCS_MODELS_MD WORK_DIR

Exits 77 (skipped) when PyTorch or numpy is missing, 1 when the losses differ by more than 1e-4.
"""
import json
import os
import re
import subprocess
import sys

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}; install python3-torch", file=sys.stderr)
    sys.exit(77)

STEPS, LR, P = 3, 0.1, 0.1


def code_blocks(text, after):
    """The ```python blocks of the section whose heading is `after`."""
    section = text.split(f"## {after}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def main():
    hetsynth, models_md, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    text = open(models_md).read()
    scope = {}
    exec(code_blocks(text, "PyTorch 1.13 helpers")[0], scope)
    exec(code_blocks(text, "gpt")[0], scope)
    run = lambda *a: subprocess.run([hetsynth, *a], check=True, capture_output=True, text=True)
    common = ["--model", "gpt", "--small", "--model-arg", f"dropout={P}"]
    init = os.path.join(work, "init.safetensors")
    run("train", *common, "--steps", "0", "--save", init)
    # Data: 3 batches of 4 rows of 16 tokens from a vocabulary of 64, as exact floats.
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 64, (STEPS * 4, 16), generator=g)
    targets = torch.randint(0, 64, (STEPS * 4, 16), generator=g)
    data = os.path.join(work, "data.safetensors")
    header, blobs, off = {}, [], 0
    for name, t in (("tokens", tokens), ("targets", targets)):
        b = t.to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(data, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    metrics = os.path.join(work, "metrics.jsonl")
    run("train", *common, "--load", init, "--data", data, "--steps", str(STEPS), "--optimizer", "sgd", "--lr", str(LR),
        "--quiet", "--metrics", metrics)
    theirs = [json.loads(line)["loss"] for line in open(metrics) if line.strip()]

    model = scope["Gpt"](2, 32, 4, 64, 16, 64)
    model.load_state_dict(scope["load_safetensors"](init))
    scope["Dropout"].p = P
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    ours = []
    for s in range(STEPS):
        scope["Dropout"].new_step()
        loss = model(tokens[4 * s:4 * s + 4], targets[4 * s:4 * s + 4])
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours.append(loss.item())
    worst = max(abs(a - b) for a, b in zip(ours, theirs))
    print(f"docs/models.md gpt in PyTorch {torch.__version__}: losses {ours}; hetsynth {theirs}; max |diff| {worst:.2g}")
    return 0 if len(theirs) == STEPS and worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
