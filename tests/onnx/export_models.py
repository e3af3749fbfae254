#!/usr/bin/env python3
"""Exports small models with torch.onnx.export and records what PyTorch computes for them.

For each model NAME this writes, into OUT_DIR:
  NAME.onnx               the model (opset 17, gpt_opset14 at 14; batch dimension symbolic)
  NAME.data.safetensors   3 batches of inputs ("x") and labels ("labels"), fp32 (hetsynth's
                          data-file format: integers stored as exact floats)
  NAME.expect.json        PyTorch's forward output on batch 0 and the losses of 3 SGD steps
                          (lr 0.1, one batch per step, cross-entropy with mean reduction; batch
                          and lr per model in SETTINGS); for the batch-norm CNNs also the same
                          steps' losses in float64 ("losses_fp64") and the running statistics
                          after them ("running"); mlp_mse's loss is the
                          mean squared error against float targets ("loss": "mse")

Needs PyTorch (Debian 12: python3-torch 1.13); the models are written out below in plain
torch.nn, plus torchvision's VisionTransformer when python3-torchvision is installed. Exits 77 (the "skip" status ctest is told
about) when torch or onnx cannot be imported.

  /usr/bin/python3 tests/onnx/export_models.py OUT_DIR [NAME ...]
"""
import json
import math
import os
import struct
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    print(f"skip: PyTorch is not installed ({e}); install python3-torch", file=sys.stderr)
    sys.exit(77)

BATCH = 4
STEPS = 3
LR = 0.1


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3 * 32 * 32, 64)
        self.fc2 = nn.Linear(64, 32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = torch.sigmoid(self.fc2(x))
        return self.fc3(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (PyTorch 1.13 has no scaled_dot_product_attention)."""

    def __init__(self, c, heads, seq, causal):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.scale = 1.0 / math.sqrt(c // heads)
        self.causal = causal
        if causal:
            self.register_buffer("mask", torch.tril(torch.ones(seq, seq)).view(1, 1, seq, seq))

    def forward(self, x):
        b, t, c = x.size()
        q, k, v = self.qkv(x).split(c, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * self.scale
        if self.causal:
            att = att.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.proj(y)


class Block(nn.Module):
    """GPT-2 block: pre-LN attention and MLP (GELU, 4x wide), residual adds."""

    def __init__(self, c, heads, seq, causal):
        super().__init__()
        self.ln1 = nn.LayerNorm(c)
        self.attn = SelfAttention(c, heads, seq, causal)
        self.ln2 = nn.LayerNorm(c)
        self.fc = nn.Linear(c, 4 * c)
        self.out = nn.Linear(4 * c, c)
        self.gelu = nn.GELU()

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.out(self.gelu(self.fc(self.ln2(x))))


class Gpt(nn.Module):
    """A 2-layer GPT-2-style decoder: token and learned position embeddings, untied head."""

    def __init__(self, vocab=64, seq=16, c=32, heads=4, layers=2):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(seq, c)
        self.blocks = nn.ModuleList([Block(c, heads, seq, True) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(c)
        self.head = nn.Linear(c, vocab, bias=False)

    def forward(self, idx):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


class Vgg(nn.Module):
    """VGG-style: 3x3 convolutions (padding 1) + ReLU, 2x2 max pools, global pool, 2 FC."""

    def __init__(self, widths=(8, 16, 32, 32, 32), classes=10):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
                       nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Linear(cin, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class Vit(nn.Module):
    """A small vision transformer (torchvision's layout): conv patch embedding, class token,
    learned positions, pre-LN blocks, head on the class token."""

    def __init__(self, image=32, patch=8, c=32, heads=4, layers=2, classes=10):
        super().__init__()
        n = (image // patch) ** 2
        self.embed = nn.Conv2d(3, c, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, c) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, c) * 0.02)
        self.blocks = nn.ModuleList([Block(c, heads, n + 1, False) for _ in range(layers)])
        self.ln = nn.LayerNorm(c)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.size(0), -1, -1), x], dim=1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x)[:, 0])


class EvalCnn(nn.Module):
    """Fine-tuning with frozen statistics: batch norm in eval mode (its running statistics fixed,
    its scale and shift trained), a float16 round trip, and constants computed in forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 10)
        with torch.no_grad():  # statistics as a pretrained model has them
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        h = self.bn(F.relu(self.conv(x)))  # after the ReLU: an eval export keeps it a BatchNormalization
        h = F.max_pool2d(h, 4).half().float()
        h = torch.flatten(h, 1) * 0.5 + torch.arange(512, dtype=torch.float32) * 1e-3
        return self.fc(h)


class Pools(nn.Module):
    """Windows the IR's square 2-D pools do not have: rectangular, dilated, 1-D and 3-D."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 9 + 4 * 2 * 3 * 2, 10)

    def forward(self, x):
        h = F.relu(self.conv(x))                                      # [B, 4, 16, 16]
        a = F.max_pool2d(h, 3, stride=1, dilation=2)                  # [B, 4, 12, 12]
        a = F.avg_pool2d(a, (3, 2), stride=(3, 2))                    # [B, 4, 4, 6]
        a = F.max_pool1d(a.flatten(2), 3, stride=3, padding=1)        # [B, 4, 8]
        a = F.avg_pool1d(a, 2, stride=1, padding=1, count_include_pad=False)  # [B, 4, 9]
        b = F.max_pool3d(h.view(-1, 4, 4, 4, 16), (2, 2, 3), stride=(2, 1, 3))  # [B, 4, 2, 3, 5]
        b = F.avg_pool3d(b, (1, 1, 2), stride=(1, 1, 2))             # [B, 4, 2, 3, 2]
        return self.fc(torch.cat([a.flatten(1), b.flatten(1)], 1))


# name -> (constructor, input maker, classes or vocab, labels per sample)
MODELS = {
    "mlp": (Mlp, lambda g: torch.randn(STEPS * BATCH, 3, 32, 32, generator=g), 10),
    "gpt": (Gpt, lambda g: torch.randint(0, 64, (STEPS * BATCH, 16), generator=g), 64),
    "vgg": (Vgg, lambda g: torch.randn(STEPS * BATCH, 3, 32, 32, generator=g), 10),
    "vit": (Vit, lambda g: torch.randn(STEPS * BATCH, 3, 32, 32, generator=g), 10),
    # The same decoder at PyTorch 1.13's default opset 14: LayerNorm decomposed into
    # ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add.
    "gpt_opset14": (Gpt, lambda g: torch.randint(0, 64, (STEPS * BATCH, 16), generator=g), 64),
}
OPSET = {"gpt_opset14": 14}
# The MLP as a regression model: mean squared error against float targets of the output's shape
# (hetsynth --loss mse).
MODELS["mlp_mse"] = MODELS["mlp"]
# Trained in eval mode, exported without constant folding (which would turn the computed
# constants into initializers, that is, parameters).
MODELS["eval_cnn"] = (EvalCnn, lambda g: torch.randn(STEPS * BATCH, 3, 32, 32, generator=g), 10)
EVAL_MODE = {"eval_cnn"}
MODELS["pools"] = (Pools, lambda g: torch.randn(STEPS * BATCH, 3, 16, 16, generator=g), 10)
LOSS = {"mlp_mse": "mse"}

# torchvision's VisionTransformer at a small size (its attention is nn.MultiheadAttention,
# exported sequence-first), when Debian's python3-torchvision is installed.
try:
    from torchvision.models.vision_transformer import VisionTransformer
    def torchvision_vit():
        m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                              num_classes=10)
        nn.init.normal_(m.heads.head.weight, std=0.1)  # torchvision starts it at zero: nothing to compare
        return m

    MODELS["torchvision_vit"] = (
        torchvision_vit,
        lambda g: torch.randn(STEPS * BATCH, 3, 32, 32, generator=g), 10)
    # torchvision's VGG11 with its 25088-wide classifier (25088 -> 4096 -> 4096 -> 10; 129M
    # parameters, a 515 MB file) at 32x32 images: the last feature map is 1x1, and the 7x7
    # adaptive average pool of a 1x1 map (which PyTorch 1.13 cannot export) is the map repeated,
    # so the pool is replaced by that expand. Classifier dropout p = 0 (a PyTorch mask cannot be
    # reproduced).
    from torchvision.models import vgg11

    class Repeat7(nn.Module):
        """AdaptiveAvgPool2d(7) on a 1x1 map: every output cell averages the one input cell."""

        def forward(self, x):
            return x.expand(-1, -1, 7, 7)

    def torchvision_vgg11():
        m = vgg11(num_classes=10)
        m.avgpool = Repeat7()
        m.classifier[2].p = 0.0
        m.classifier[5].p = 0.0
        return m

    MODELS["torchvision_vgg11"] = (torchvision_vgg11,
                                   lambda g: torch.randn(STEPS * BATCH, 3, 32, 32, generator=g), 10)
    # CNNs with batch normalization, exported in training mode (BatchNormalization with batch
    # statistics, as the 3 SGD steps below use them). MobileNetV2's classifier dropout is set to
    # p = 0: a training-mode dropout mask of PyTorch's cannot be reproduced.
    from torchvision.models import mobilenet_v2, resnet18

    def torchvision_mobilenet_v2():
        m = mobilenet_v2(num_classes=10)
        m.classifier[0].p = 0.0
        return m

    MODELS["resnet18"] = (lambda: resnet18(num_classes=10),
                          lambda g: torch.randn(STEPS * BATCH, 3, 32, 32, generator=g), 10)
    MODELS["mobilenet_v2"] = (torchvision_mobilenet_v2,
                              lambda g: torch.randn(STEPS * BATCH, 3, 32, 32, generator=g), 10)
    # The same model where fp32 permits a 1e-5 comparison (SETTINGS below).
    MODELS["mobilenet_v2_b32"] = MODELS["mobilenet_v2"]
except ImportError:
    print("torchvision_vit, torchvision_vgg11, resnet18, mobilenet_v2: skipped (python3-torchvision is not installed)",
          file=sys.stderr)
TRAINING_MODE = {"resnet18", "mobilenet_v2", "mobilenet_v2_b32"}
# (batch, lr) where not (BATCH, LR). Batch normalization over 4 images is ill-conditioned at the
# 1×1 maps these CNNs end in at 32×32 (MobileNetV2's fp32 forward is 4e-4 from its fp64 one at
# batch 4, 2e-5 at batch 8), and at lr 0.1 their losses jump to 5-14 within 3 steps. At batch 8
# and lr 0.01 one ulp moved in MobileNetV2's weights moves its second loss by about 2%;
# mobilenet_v2_b32 takes steps small enough (batch 32, lr 1e-6) that it moves them by under
# 2e-6 while the steps still move the losses by about 1e-4 (docs/onnx.md).
SETTINGS = {"torchvision_vgg11": (4, 0.01), "resnet18": (8, 0.01), "mobilenet_v2": (8, 0.01),
            "mobilenet_v2_b32": (32, 1e-6), "eval_cnn": (4, 0.01)}


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def loss_of(name, logits, labels):
    if LOSS.get(name) == "mse":
        return F.mse_loss(logits, labels)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def sgd_losses(name, model, x, labels, batch, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for step in range(STEPS):
        xb, yb = x[step * batch:(step + 1) * batch], labels[step * batch:(step + 1) * batch]
        loss = loss_of(name, model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def export(name, out_dir):
    make, inputs, classes = MODELS[name]
    batch, lr = SETTINGS.get(name, (BATCH, LR))
    torch.manual_seed(0)
    model = make()
    if name in EVAL_MODE:
        model.eval()
    g = torch.Generator().manual_seed(1)
    x = inputs(g)
    if x.shape[0] != STEPS * batch:
        x = torch.cat([x] + [inputs(g) for _ in range((STEPS * batch - 1) // x.shape[0])])[:STEPS * batch]
    first = x[:batch]
    with torch.no_grad():
        sample = model(first)
    labels_shape = (STEPS * batch,) + tuple(sample.shape[1:-1])
    labels = torch.randint(0, classes, labels_shape, generator=g)
    if LOSS.get(name) == "mse":
        labels = torch.randn((STEPS * batch,) + tuple(sample.shape[1:]), generator=g)
    path = os.path.join(out_dir, name + ".onnx")
    if name in TRAINING_MODE:
        # Exporting runs the model once in training mode, which moves the running statistics;
        # put them back so that the file holds the model's starting state.
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.onnx.export(model, (first,), path, opset_version=OPSET.get(name, 17), input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}},
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)
        model.load_state_dict(state)
    elif name in EVAL_MODE:
        torch.onnx.export(model, (first,), path, opset_version=OPSET.get(name, 17), input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}},
                          training=torch.onnx.TrainingMode.EVAL, do_constant_folding=False)
    else:
        torch.onnx.export(model, (first,), path, opset_version=OPSET.get(name, 17), input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}}, do_constant_folding=True)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        forward = model(first)
    losses = sgd_losses(name, model, x, labels, batch, lr)
    expect = {"batch": batch, "lr": lr, "steps": STEPS, "losses": losses, "forward_shape": list(forward.shape),
              "forward": [float(v) for v in forward.reshape(-1)], "torch": torch.__version__,
              "loss": LOSS.get(name, "cross_entropy")}
    if name in TRAINING_MODE:
        # Batch norm's running statistics after the 3 steps (each training forward moves them).
        expect["running"] = {k: [float(x) for x in v.reshape(-1)] for k, v in model.state_dict().items()
                             if k.endswith("running_mean") or k.endswith("running_var")}
        # The same steps in float64: how far PyTorch's own fp32 losses are from exact ones.
        model64 = make().double()
        model64.load_state_dict(start)
        expect["losses_fp64"] = sgd_losses(name, model64, x.double(), labels, batch, lr)
    write_safetensors(os.path.join(out_dir, name + ".data.safetensors"), {"x": x, "labels": labels})
    with open(os.path.join(out_dir, name + ".expect.json"), "w") as f:
        json.dump(expect, f)
    print(f"{name}: {path}, losses {', '.join(f'{l:.6f}' for l in losses)}")


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for name in sys.argv[2:] or list(MODELS):
        export(name, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
