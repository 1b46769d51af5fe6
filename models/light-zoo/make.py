"""Builds models/light-zoo/*.onnx: the `onnx` wheel's light zoo graphs (DenseNet-121,
Inception v1, Inception v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512; AlexNet is
models/alexnet-light) with a dynamic batch and seeded random weights, for the differentiable
evaluator's checks (tests/integration/gradients.rs). Not classifiers: the weights are random.

Source: `onnx/backend/test/data/light/light_*.onnx` from the `onnx` wheel (requirements.txt
pins the version). Those files keep the zoo's graphs but build every weight with
`ConstantOfShape`, so every class gets the same logit and every input gradient is exactly
zero. What this script changes:

- Weights of rank >= 2 (convolutions, fully connected): He-normal as in
  models/alexnet-light/make.py: one block of BLOCK (a prime) standard-normal values, tiled,
  sliced at a per-layer offset, reshaped, scaled by sqrt(2 / fan_in) and centred per output
  unit, all inside the graph, so each file stays small.
- Vectors (biases, BatchNormalization's scale, B, mean and var, DenseNet's and Inception
  v2's per-channel Mul and Add): plain initializers, seeded; scales and variances in
  [0.8, 1.2], shifts and means in [-0.1, 0.1].
- The last layer (the last Gemm or Conv) is scaled so that the logits of a seeded noise image
  have a standard deviation of LOGIT_STD (measured with ONNX Runtime), so the softmax is not
  saturated.
- Input `[N, 3, 224, 224]` with a symbolic batch; each Reshape's leading 1 becomes -1; graph
  inputs that are initializers are dropped; opset stays 9.

Usage: `python3 make.py` (writes the .onnx files beside this script and prints their sha256
for the manifests). Deterministic: the same versions give the same bytes.
"""

import hashlib
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SEED = 20261205
BLOCK = 65537  # prime
LOGIT_STD = 3.0
MODELS = ["densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet", "vgg19", "zfnet512"]
HERE = os.path.dirname(os.path.abspath(__file__))


def source(name):
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")


def build(name, gain):
    src = onnx.load(source(name))
    inits = {t.name: numpy_helper.to_array(t) for t in src.graph.initializer}
    rng = np.random.default_rng([SEED, MODELS.index(name)])
    block = rng.standard_normal(BLOCK).astype(np.float32)
    consumers = {}
    for node in src.graph.node:
        for i, x in enumerate(node.input):
            consumers.setdefault(x, []).append((node, i))
    made = {n.output[0] for n in src.graph.node if n.op_type == "ConstantOfShape"}
    # The last layer: the last Gemm or Conv; its weight gets the gain.
    last = [n for n in src.graph.node if n.op_type in ("Gemm", "Conv")][-1]
    last_weight = last.input[1]
    for n in src.graph.node:  # Inception v1 reshapes its fc weight first
        if n.output[0] == last_weight and n.op_type == "Reshape":
            last_weight = n.input[0]

    def kind(out):
        """'scale' for multiplicative vectors, else 'shift'."""
        for node, i in consumers.get(out, []):
            if node.op_type == "Unsqueeze":
                return kind(node.output[0])
            if node.op_type == "Mul" or (node.op_type == "BatchNormalization" and i in (1, 4)):
                return "scale"
        return "shift"

    nodes, initializers = [], [numpy_helper.from_array(block, "weights_block")]
    for node in src.graph.node:
        if node.op_type != "ConstantOfShape":
            continue
        out = node.output[0]
        shape = [int(d) for d in inits[node.input[0]]]
        if len(shape) < 2:
            u = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
            v = 1.0 + 0.2 * u if kind(out) == "scale" else 0.1 * u
            initializers.append(numpy_helper.from_array(v.astype(np.float32), out))
            continue
        count = int(np.prod(shape))
        fan_in = int(np.prod(shape[1:]))
        offset = int(rng.integers(0, BLOCK))
        repeats = -(-(offset + count) // BLOCK)
        scale = np.sqrt(2.0 / fan_in) * (gain if out == last_weight else 1.0)
        tiled, window, shaped = out + "_tiled", out + "_window", out + "_unscaled"
        scaled, mean = out + "_scaled", out + "_mean"
        initializers += [
            numpy_helper.from_array(np.array([repeats], np.int64), out + "_repeats"),
            numpy_helper.from_array(np.array(shape, np.int64), out + "_shape"),
            numpy_helper.from_array(np.array(scale, np.float32), out + "_scale"),
        ]
        nodes += [
            helper.make_node("Tile", ["weights_block", out + "_repeats"], [tiled], name=tiled),
            helper.make_node("Slice", [tiled], [window], name=window, starts=[offset], ends=[offset + count], axes=[0]),
            helper.make_node("Reshape", [window, out + "_shape"], [shaped], name=shaped),
            helper.make_node("Mul", [shaped, out + "_scale"], [scaled], name=scaled),
            helper.make_node("ReduceMean", [scaled], [mean], name=mean, axes=list(range(1, len(shape))), keepdims=1),
            helper.make_node("Sub", [scaled, mean], [out], name=out),
        ]
    # Other initializers (Reshape targets) are kept; a leading 1 of an activation's reshape is the batch.
    for t in src.graph.initializer:
        a = inits[t.name]
        users = consumers.get(t.name, [])
        if users and all(n.op_type == "Reshape" and i == 1 and n.input[0] not in made for n, i in users) and a[0] == 1:
            a = a.copy()
            a[0] = -1
        if not users or t.name in made or any(n.op_type == "ConstantOfShape" for n, _ in users):
            continue
        initializers.append(numpy_helper.from_array(a, t.name))
    nodes += [n for n in src.graph.node if n.op_type != "ConstantOfShape"]
    init_names = {t.name for t in initializers}
    x = [i for i in src.graph.input if i.name not in init_names and i.name not in made][0]
    y = src.graph.output[0]
    out_dims = ["N"] + [d.dim_value for d in y.type.tensor_type.shape.dim[1:]]
    graph = helper.make_graph(
        nodes,
        f"{name}_random",
        [helper.make_tensor_value_info(x.name, TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(y.name, TensorProto.FLOAT, out_dims)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)],
                              producer_name="pareidolia models/light-zoo/make.py", ir_version=7)
    onnx.checker.check_model(model, full_check=True)
    return model, x.name, y.name, [n for n in src.graph.node if n.output[0] == y.name][0]


def logits(model, x_name, y_name, final):
    """The logits of a seeded noise image: the final Softmax's input, or the output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    name = final.input[0] if final.op_type == "Softmax" else y_name
    if name != y_name:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    img = np.random.default_rng(SEED).uniform(-2.0, 2.0, (1, 3, 224, 224)).astype(np.float32)
    return sess.run([name], {x_name: img})[0].ravel()


def main():
    for name in MODELS:
        model, x, y, final = build(name, 1.0)
        std = float(np.std(logits(model, x, y, final)))
        model, x, y, final = build(name, LOGIT_STD / std)
        check = float(np.std(logits(model, x, y, final)))
        data = model.SerializeToString()
        path = os.path.join(HERE, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(data)
        print(f"{name}: input {x}, output {y}, logit std {std:.3g} -> {check:.3g}, "
              f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
