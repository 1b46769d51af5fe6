#!/usr/bin/env python3
"""PyTorch's BatchNorm in train() mode on the shipped ResNet, as the reference
`pareidolia train --batch-norm train` is tested against (tests/integration/gradients.rs).

    python models/mnist-modern/batchnorm_reference.py   # -> models/mnist-resnet-bn/batchnorm-reference.json

The ResNet of `train.py` gets the weights and running statistics of
`models/mnist-resnet-bn/mnist-resnet-bn.onnx` (the initializers are named as its state_dict);
then, in `train()` mode, one forward pass of 32 training digits of `data/mnist-5k` (every 125th)
(x = pixel / 256, LeNet's input), softmax cross-entropy averaged over the batch, one backward
pass. Written: the loss; every BatchNorm's running mean and variance after that forward pass
(PyTorch updates them there: momentum 0.1, unbiased variance); per parameter three summaries of
its gradient (the sum, the L2 norm, and the dot product with v[i] = sin(0.37 i + 1) over the
flattened index i), which the test recomputes without shipping 175,000 numbers. The two
projection shortcuts' BatchNorm biases are not initializers of the ONNX file (the exporter made
them Identity copies of `layers.N.bn2.bias`, equal in value), so pareidolia holds them as
constants and the test skips their gradients.

Pinned: torch 2.15.0, onnx 1.23.2, numpy 2.4.6 (CPU, one thread, float64 for the reference).
"""

import json
import os
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import train  # noqa: E402  (models/mnist-modern/train.py: the architecture and the data reader)

BATCH = 32
OUT = os.path.join(REPO, "models", "mnist-resnet-bn", "batchnorm-reference.json")


def main():
    torch.set_num_threads(1)
    graph = onnx.load(os.path.join(REPO, "models", "mnist-resnet-bn", "mnist-resnet-bn.onnx")).graph
    weights = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in graph.initializer}
    # The exporter shares initializers of equal value through Identity nodes (the projection
    # shortcuts' BatchNorm biases read `layers.N.bn2.bias`): follow them.
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    model = train.ResNet()
    state = model.state_dict()
    loaded = {name: weights[name] for name in state if name in weights}
    missing = [name for name in state if name not in weights and not name.endswith("num_batches_tracked")]
    assert not missing, f"not in the ONNX file: {missing}"
    model.load_state_dict(loaded, strict=False)
    model = model.double().train()

    x_train, y_train, _, _ = train.load()
    # The training digits are sorted by class: every 125th is a batch of all ten.
    picks = [i * len(x_train) // BATCH for i in range(BATCH)]
    x = x_train[picks].double()
    y = y_train[picks]
    loss = F.cross_entropy(model(x), y)
    loss.backward()

    def summary(g):
        flat = g.detach().reshape(-1).double()
        v = torch.sin(0.37 * torch.arange(flat.numel(), dtype=torch.float64) + 1.0)
        return {"sum": flat.sum().item(), "l2": flat.norm().item(), "dot_sin": (flat * v).sum().item()}

    running = {name: buf.tolist() for name, buf in model.named_buffers() if name.endswith(("running_mean", "running_var"))}
    gradients = {name: summary(p.grad) for name, p in model.named_parameters()}
    with open(OUT, "w") as f:
        json.dump(
            {
                "made_by": "models/mnist-modern/batchnorm_reference.py",
                "torch": torch.__version__,
                "batch": BATCH,
                "images": "training digits of data/mnist-5k at these indices, x = pixel / 256",
                "indices": picks,
                "labels": y.tolist(),
                "loss": loss.item(),
                "running": running,
                "gradients": gradients,
            },
            f,
            indent=1,
        )
        f.write("\n")
    print(f"loss {loss.item():.6f}; {len(running)} running buffers, {len(gradients)} gradients -> {OUT}")


if __name__ == "__main__":
    main()
