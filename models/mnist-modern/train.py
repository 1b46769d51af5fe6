#!/usr/bin/env python3
"""Train two of today's architectures at MNIST scale, for the question of issue 25's results:
are they fooled as LeNet is?

    python models/mnist-modern/train.py --arch resnet   # -> models/mnist-resnet-bn/
    python models/mnist-modern/train.py --arch vit      # -> models/mnist-vit/

Both train on exactly LeNet's data: the 4,000 training digits of `data/mnist-5k` (the IDX files,
read here directly), measured on its 1,000 held-out digits, input x = pixel / 256 with no mean
(the manifest is LeNet's but for the file), raw logits out. Exported to ONNX at opset 17 with the
legacy TorchScript exporter, so the graphs use the standard ops a user's export has:

- `resnet`: a pre-activation-free ResNet (He et al. 2016) shrunk to MNIST: a 3x3 stem of 16
  channels, three stages of two basic blocks (16, 32, 64 channels, stride 2 between stages,
  1x1 projection shortcuts), each convolution followed by BatchNormalization, ReLU, global
  average pooling, a linear layer. The BatchNormalization nodes stay in the graph (the export
  keeps the training-mode structure: `training=PRESERVE` from an eval-mode model does not fold
  them into the convolutions), with the running statistics PyTorch accumulated.
- `vit`: a Vision Transformer (Dosovitskiy et al. 2021) shrunk to MNIST: 4x4 patches (49 of
  them) embedded to 64 by a strided convolution, a class token, learned position embeddings,
  4 pre-norm encoder blocks (LayerNormalization, 4-head attention: MatMul, Softmax on the last
  axis, Transpose; MLP 64-128-64 with exact GELU, i.e. Erf), a final LayerNorm, the class
  token's head.

Training: AdamW (lr 2e-3, weight decay 0.05, cosine schedule, 1 epoch warm-up), batch 64,
random shifts of up to 2 pixels as the only augmentation, 30 epochs (resnet) / 60 (vit); seed
fixed, one thread, deterministic algorithms. What it writes beside the manifest: NAME.onnx,
labels.txt, manifest.toml (sha256 and held-out accuracy filled in), metrics.json (accuracy from
PyTorch and ONNX Runtime, the largest logit difference, the graph's ops, versions, time).
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(REPO, "data", "mnist-5k")
SEED = 20241205
INPUT_SCALE = 1.0 / 256.0


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load():
    x_train = read_idx("train-images-idx3-ubyte.gz")
    y_train = read_idx("train-labels-idx1-ubyte.gz")
    x_test = read_idx("t10k-images-idx3-ubyte.gz")
    y_test = read_idx("t10k-labels-idx1-ubyte.gz")
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28)

    def tensor(x):
        return torch.from_numpy(x.astype(np.float32) * np.float32(INPUT_SCALE)).unsqueeze(1)

    return (tensor(x_train), torch.from_numpy(y_train.astype(np.int64)),
            tensor(x_test), torch.from_numpy(y_test.astype(np.int64)))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet(nn.Module):
    def __init__(self, widths=(16, 32, 64), blocks=2, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                layers.append(Block(cin, w, 2 if (b == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x):
        # Shapes from constants only (-1 for the batch), so the exported graph has no Shape,
        # Gather-of-shape or Expand nodes: one Reshape per reshape, with a constant target.
        _, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(-1, int(t), 3, h, int(d) // h).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(int(d) // h), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(-1, int(t), int(d)))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, patch=4, dim=64, depth=4, heads=4, mlp=128, classes=10):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, patch)
        tokens = (28 // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp) for _ in range(depth)])
        # Prepending the class token: a constant (tokens+1, tokens) matrix whose row 0 is zero
        # and whose other rows are the identity moves every patch token down one place; the
        # class embedding is then added at position 0 (`first` is one there, zero elsewhere).
        self.register_buffer("prepend", torch.cat([torch.zeros(1, tokens), torch.eye(tokens)]), persistent=False)
        self.register_buffer("first", torch.eye(tokens + 1)[:, :1].reshape(1, tokens + 1, 1), persistent=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        dim, tokens = self.pos.shape[2], self.pos.shape[1] - 1
        x = self.embed(x).reshape(-1, dim, tokens).transpose(1, 2)
        # The same function as concatenating an expanded class token, without batch-sized
        # Shape/Expand nodes in the graph: one MatMul by a constant, one Add of a constant
        # (the exporter folds pos + first * cls).
        x = self.prepend @ x + (self.pos + self.first * self.cls)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


ARCHS = {
    "resnet": dict(make=ResNet, out="mnist-resnet-bn", epochs=30,
                   what="ResNet with BatchNormalization (3 stages x 2 basic blocks, 16/32/64 channels)"),
    "vit": dict(make=ViT, out="mnist-vit", epochs=60,
                what="Vision Transformer (4x4 patches, dim 64, 4 blocks, 4 heads, MLP 128, class token)"),
}


def shift(x, gen):
    """Random translation by up to 2 pixels (zero fill), one shift per image."""
    n = x.shape[0]
    pad = F.pad(x, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    return torch.stack([pad[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(n)])


@torch.no_grad()
def logits_of(model, x):
    model.eval()
    return torch.cat([model(x[i:i + 250]) for i in range(0, len(x), 250)])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=sorted(ARCHS), required=True)
    p.add_argument("--epochs", type=int, help="override the architecture's epoch count")
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)
    spec = ARCHS[args.arch]
    epochs = args.epochs or spec["epochs"]
    name = spec["out"]
    out_dir = os.path.join(REPO, "models", name)
    os.makedirs(out_dir, exist_ok=True)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load()
    model = spec["make"]()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(x_train) / 64)
    total = epochs * steps_per_epoch

    def lr_at(step):
        if step < steps_per_epoch:
            return (step + 1) / steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * (step - steps_per_epoch) / max(1, total - steps_per_epoch)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), 64):
            b = order[i:i + 64]
            loss = F.cross_entropy(model(shift(x_train[b], gen)), y_train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            acc = float((logits_of(model, x_test).argmax(1) == y_test).float().mean())
            print(f"epoch {epoch + 1}: loss {loss.item():.4f}, held-out accuracy {acc:.4f}", flush=True)
    train_s = time.time() - t0

    model.eval()
    torch_logits = logits_of(model, x_test)
    torch_acc = float((torch_logits.argmax(1) == y_test).float().mean())
    onnx_path = os.path.join(out_dir, f"{name}.onnx")
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), onnx_path, dynamo=False, export_params=True,
                      opset_version=17, do_constant_folding=True, training=torch.onnx.TrainingMode.PRESERVE,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})

    import onnx
    import onnxruntime as ort

    graph = onnx.load(onnx_path)
    onnx.checker.check_model(graph, full_check=True)
    ops = sorted({n.op_type for n in graph.graph.node})
    if args.arch == "resnet":
        assert "BatchNormalization" in ops, f"BatchNormalization was folded away: {ops}"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    xt = x_test.numpy()
    ort_logits = np.concatenate([sess.run(["logits"], {"input": xt[i:i + 250]})[0] for i in range(0, 1000, 250)])
    max_diff = float(np.abs(ort_logits - torch_logits.numpy()).max())
    ort_acc = float((ort_logits.argmax(1) == y_test.numpy()).mean())
    with open(onnx_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"{name}: held-out accuracy {ort_acc:.4f} (ONNX Runtime), {torch_acc:.4f} (PyTorch); "
          f"max |logit diff| {max_diff:.2e}; ops {ops}; {train_s:.0f} s")

    with open(os.path.join(out_dir, "labels.txt"), "w") as f:
        f.write("".join(f"{c}\n" for c in range(10)))
    training = (f"AdamW lr 2e-3 weight decay 0.05, cosine schedule with 1 epoch warm-up, batch 64, "
                f"random shifts up to 2 px, {epochs} epochs, seed {args.seed}, 1 thread, "
                f"torch {torch.__version__.split('+')[0]}")
    manifest = f"""# {spec['what']} trained on LeNet's MNIST digits; see ../mnist-modern/train.py.
name = "{name}"
onnx = "{name}.onnx"
sha256 = "{digest}"
labels = "labels.txt"
output = "logits"

[input]
name = "input"
layout = "NCHW"
channels = 1
height = 28
width = 28
color = "gray"
# x = pixel / 256, as LeNet's (models/lenet-mnist/manifest.toml)
range = [0.0, 0.99609375]
mean = [0.0]
std = [1.0]

[provenance]
made_by = "models/mnist-modern/train.py --arch {args.arch}"
data = "data/mnist-5k: the 4,000 training digits of models/lenet-mnist's split; measured on its 1,000 held-out digits, never trained on"
training = "{training}"
held_out_accuracy = {ort_acc!r}
held_out_count = 1000
"""
    with open(os.path.join(out_dir, "manifest.toml"), "w") as f:
        f.write(manifest)
    metrics = {
        "held_out_accuracy_onnxruntime": ort_acc,
        "held_out_accuracy_torch": torch_acc,
        "max_abs_logit_diff_onnxruntime_vs_torch": max_diff,
        "onnx_sha256": digest,
        "onnx_ops": ops,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": epochs,
        "train_seconds": round(train_s, 1),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": ort.__version__, "numpy": np.__version__},
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
