#!/usr/bin/env python3
"""Builds models/modern-zoo/*.onnx: four of today's architectures at reduced width and depth,
with seeded random weights, for the differentiable evaluator's checks
(tests/integration/gradients.rs). Not classifiers: nothing is trained.

    python3 models/modern-zoo/make.py     # writes NAME.onnx beside this script, prints sha256

Inputs 32x32 RGB (NCHW, a dynamic batch), 10 classes, logits out; opset 17 through the legacy
TorchScript exporter (`dynamo=False`), as models/mnist-modern/train.py exports, so the graphs
have the ops a user's PyTorch export has:

- `resnet_bn`: torchvision's ResNet-18 layout shrunk: 3x3 stem (16 channels), BatchNorm, ReLU,
  3x3/2 max-pooling, three stages of one basic block (16/32/64 channels, 1x1 projection
  shortcuts), global average pooling, a linear layer. BatchNormalization stays in the graph
  (`training=PRESERVE` from an eval-mode model).
- `mobilenetv3_small`: torchvision's MobileNetV3-Small blocks shrunk: a 3x3/2 stem with
  HardSwish; inverted residuals (1x1 expansion, depthwise 3x3 or 5x5, squeeze-excitation as
  ReduceMean, 1x1 convolutions, ReLU, HardSigmoid and a broadcast Mul; 1x1 projection;
  residual Add) with ReLU or HardSwish; a 1x1 head convolution, global average pooling,
  Linear, HardSwish, Linear.
- `convnext`: torchvision's ConvNeXt blocks shrunk: a 2x2/2 patchify stem and a channels-first
  LayerNorm (Transpose, LayerNormalization, Transpose); blocks of depthwise 7x7 convolution,
  Transpose to channels-last, LayerNorm, Linear (MatMul + Add) x4, exact GELU (Erf), Linear,
  layer scale (Mul by a weight), Transpose back, residual Add; a LayerNorm + 2x2/2 convolution
  between the stages (24, 48 channels); global average pooling, LayerNorm, Linear.
- `vit`: a Vision Transformer: 4x4 patches (64) embedded to 48 by a strided convolution, a
  class token and position embeddings (prepended as models/mnist-modern/train.py does, with a
  constant MatMul and Add, so the graph has no batch-sized Shape/Expand), 2 pre-norm blocks
  with separate q, k, v projections and 4-head attention (MatMul, Softmax on the last axis,
  Transpose), MLP with exact GELU, the class token's head through Gather and Gemm.

Why not torchvision's constructors: the package index has no torchvision for torch 2.15.0
(the newest is 0.29.2, built against an older torch), and installing it would replace the
pinned torch. The modules below follow torchvision's definitions (file and class named in each
docstring) at reduced size.

Weights: PyTorch's default initialisation under torch.manual_seed(SEED + index); the
BatchNormalization running statistics are those of one pass over 64 seeded noise images
(momentum None: the exact mean and variance); ConvNeXt's layer scale is uniform in [0.5, 1]
(torchvision starts it at 1e-6, which would make every block the identity); the last layer is
scaled so that the logits of seeded noise images have a standard deviation of LOGIT_STD, so the
softmax is not saturated. Versions: torch 2.15.0, onnx 1.23.2, onnxruntime 1.24.4, numpy 2.4.6
(checked at start).
"""

import hashlib
import math
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261205
LOGIT_STD = 3.0
VERSIONS = {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "numpy": np.__version__}
PINNED = {"torch": "2.15.0", "onnx": "1.23.2", "onnxruntime": "1.24.4", "numpy": "2.4.6"}


class BasicBlock(nn.Module):
    """torchvision/models/resnet.py `BasicBlock`."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNetBN(nn.Module):
    """torchvision/models/resnet.py `ResNet` (ResNet-18 layout), one block per stage."""

    def __init__(self, widths=(16, 32, 64), classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SqueezeExcitation(nn.Module):
    """torchvision/ops/misc.py `SqueezeExcitation` with MobileNetV3's Hardsigmoid (the mean
    written as `mean`, which exports as ReduceMean)."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """torchvision/models/mobilenetv3.py `InvertedResidual`."""

    def __init__(self, cin, k, exp, cout, se, act, stride):
        super().__init__()
        self.res = stride == 1 and cin == cout
        layers = []
        if exp != cin:
            layers += [nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), act()]
        layers += [nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False), nn.BatchNorm2d(exp), act()]
        if se:
            layers.append(SqueezeExcitation(exp, max(8, exp // 4)))
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.res else y


class MobileNetV3Small(nn.Module):
    """torchvision/models/mobilenetv3.py `mobilenet_v3_small`, first blocks at half width."""

    def __init__(self, classes=10):
        super().__init__()
        hs, re = nn.Hardswish, nn.ReLU
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), hs())
        # (in, kernel, expanded, out, SE, activation, stride), from torchvision's table.
        cfg = [(8, 3, 8, 8, True, re, 2), (8, 3, 36, 12, False, re, 2), (12, 3, 44, 12, False, re, 1),
               (12, 5, 48, 20, True, hs, 2), (20, 5, 120, 20, True, hs, 1)]
        self.blocks = nn.Sequential(*[InvertedResidual(*c) for c in cfg])
        self.last = nn.Sequential(nn.Conv2d(20, 120, 1, bias=False), nn.BatchNorm2d(120), hs())
        self.fc1 = nn.Linear(120, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x):
        x = self.last(self.blocks(self.stem(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc2(F.hardswish(self.fc1(x)))


class LayerNorm2d(nn.LayerNorm):
    """torchvision/models/convnext.py `LayerNorm2d`: a LayerNorm over channels of NCHW."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """torchvision/models/convnext.py `CNBlock` (stochastic depth is the identity in eval)."""

    def __init__(self, dim):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        return x + self.layer_scale * y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """torchvision/models/convnext.py `ConvNeXt`, two stages (24, 48 channels) of one block."""

    def __init__(self, dims=(24, 48), classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 2, 2), LayerNorm2d(dims[0], eps=1e-6))
        self.stage1 = CNBlock(dims[0])
        self.down = nn.Sequential(LayerNorm2d(dims[0], eps=1e-6), nn.Conv2d(dims[0], dims[1], 2, 2))
        self.stage2 = CNBlock(dims[1])
        self.norm = LayerNorm2d(dims[1], eps=1e-6)
        self.fc = nn.Linear(dims[1], classes)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(self.norm(F.adaptive_avg_pool2d(x, 1)), 1))


class EncoderBlock(nn.Module):
    """A pre-norm encoder block (torchvision/models/vision_transformer.py `EncoderBlock`) with
    the attention written out, separate q, k and v projections."""

    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x):
        _, t, d = x.shape
        h, e = self.heads, int(d) // self.heads
        y = self.norm1(x)
        q, k, v = (f(y).reshape(-1, int(t), h, e).transpose(1, 2) for f in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-2, -1) * (1.0 / math.sqrt(e)), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(-1, int(t), int(d)))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """torchvision/models/vision_transformer.py `VisionTransformer` shrunk (patch 4, dim 48,
    2 blocks, 4 heads, MLP 96); the class token prepended as models/mnist-modern/train.py does."""

    def __init__(self, patch=4, dim=48, depth=2, heads=4, mlp=96, classes=10):
        super().__init__()
        tokens = (32 // patch) ** 2
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.register_buffer("prepend", torch.cat([torch.zeros(1, tokens), torch.eye(tokens)]), persistent=False)
        self.register_buffer("first", torch.eye(tokens + 1)[:, :1].reshape(1, tokens + 1, 1), persistent=False)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        dim, tokens = self.pos.shape[2], self.pos.shape[1] - 1
        x = self.embed(x).reshape(-1, dim, tokens).transpose(1, 2)
        x = self.prepend @ x + (self.pos + self.first * self.cls)
        return self.head(self.norm(self.blocks(x))[:, 0])


MODELS = {
    "resnet_bn": (ResNetBN, "fc"),
    "mobilenetv3_small": (MobileNetV3Small, "fc2"),
    "convnext": (ConvNeXt, "fc"),
    "vit": (ViT, "head"),
}


def noise(seed, n):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g) * 4.0 - 2.0  # the manifests' input range


def build(index, name):
    make, last = MODELS[name]
    torch.manual_seed(SEED + index)
    model = make()
    for m in model.modules():
        if isinstance(m, CNBlock):
            with torch.no_grad():
                m.layer_scale.uniform_(0.5, 1.0)
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # the exact statistics of the calibration pass
    model.train()
    with torch.no_grad():
        model(noise(SEED + 100 + index, 64))
    model.eval()
    with torch.no_grad():
        std = model(noise(SEED + 200 + index, 64)).std().item()
        fc = getattr(model, last)
        fc.weight.mul_(LOGIT_STD / std)
        fc.bias.mul_(LOGIT_STD / std)
    path = os.path.join(HERE, f"{name}.onnx")
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), path, dynamo=False, export_params=True,
                      opset_version=17, do_constant_folding=True,
                      training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    # Check against ONNX Runtime on noise images, in a batch of 4.
    x = noise(SEED + 300 + index, 4)
    with torch.no_grad():
        want = model(x).numpy()
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    diff = float(np.abs(want - got).max())
    assert diff < 1e-4, f"{name}: ONNX Runtime differs from PyTorch by {diff}"
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    data = open(path, "rb").read()
    print(f"{name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}, "
          f"max |logit diff| vs ONNX Runtime {diff:.1e}, logit std {want.std():.2f}, ops {', '.join(ops)}")


def main():
    wrong = {k: (v, PINNED[k]) for k, v in VERSIONS.items() if v != PINNED[k]}
    if wrong:
        sys.exit(f"versions differ from the pinned ones (have, want): {wrong}")
    torch.set_num_threads(1)
    for i, name in enumerate(MODELS):
        build(i, name)


if __name__ == "__main__":
    main()
