"""Builds models/alexnet-light/alexnet-light.onnx: the BVLC AlexNet graph (the network of
Nguyen, Yosinski & Clune 2015) with a dynamic batch dimension and seeded random weights.

Source: `onnx/backend/test/data/light/light_bvlc_alexnet.onnx` from the `onnx` wheel
(requirements.txt pins the version; the file's sha256 is checked below). That "light" file
keeps the real graph (5 convolutions with Caffe's groups, LRN, max-pooling, 3 fully
connected layers, softmax) but no weights: each weight is `ConstantOfShape(0.02)`.

What this script changes, and why:

- Input `data_0` becomes `[N, 3, 227, 227]` with a symbolic batch `N` (the light file says
  `[1, 3, 224, 224]`). 227 is Caffe's crop size for this network; with it every pooling
  window lies inside its feature map, so ONNX's floor-mode pooling gives Caffe's (ceil-mode)
  sizes; with 224, pool1 gives 26x26 where Caffe gives 27x27. The flatten before fc6 becomes
  `Reshape(-1, 9216)`, the output
  `prob_1` becomes `[N, 1000]`.
- Weights: He-normal (std sqrt(2 / fan_in)), seeded. Storing the 60,954,656 weights as
  independent float32 values makes a 244 MB file, too big to commit, so the file stores one block
  of BLOCK (a prime) standard-normal values and builds each layer's weight tensor in the
  graph: Tile the block, Slice a window at a per-layer offset, Reshape, Mul by the layer's
  scale, then subtract each output unit's mean weight (ReduceMean, Sub). Because BLOCK is
  prime, no two rows of a layer read the same window. The centring matters: without it every
  unit of a random network shares one large common component (ReLU outputs are positive),
  and nearly every image gets the same class. Tile, Slice, Reshape and Mul are exact; only
  the mean's summation order can differ between backends (by about 1e-10 per weight).
  ONNX Runtime and Pareidolia's tract backend fold all of it into constants when they
  prepare the model, so inference costs what AlexNet costs.
- Biases: zero (He initialisation), still `ConstantOfShape`.
- fc8 is scaled down by FC8_GAIN so the logits spread over a few units and softmax
  outputs are not one-hot (measured: see README.md).
- Graph inputs that were only initialisers are dropped (IR version 7); opset stays 9.

Usage: `python3 make.py` (writes alexnet-light.onnx beside this script and prints its
sha256 for manifest.toml). Deterministic: the same versions give the same bytes.
"""

import hashlib
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20261126
BLOCK = 262147  # prime, just above 2**18: a 1 MiB block of float32
FC8_GAIN = 0.2
SIZE = 227
SOURCE_SHA256 = "2afa78cef5a88aed9d6e3d63fb92bd330c9177ac150d19189c6b3e7204ba0212"

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "alexnet-light.onnx")


def source_path():
    return os.path.join(
        os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_bvlc_alexnet.onnx"
    )


def main():
    path = source_path()
    data = open(path, "rb").read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{path} has sha256 {digest}, expected {SOURCE_SHA256}: install onnx from requirements.txt")
    src = onnx.load_from_string(data)
    shapes = {t.name: numpy_helper.to_array(t).tolist() for t in src.graph.initializer}

    rng = np.random.default_rng(SEED)
    block = rng.standard_normal(BLOCK).astype(np.float32)

    nodes = []
    initializers = [numpy_helper.from_array(block, "weights_block")]
    for node in src.graph.node:
        if node.op_type != "ConstantOfShape":
            continue
        out = node.output[0]
        shape = shapes[out + "__SHAPE"]
        if out.endswith("_b_0"):
            nodes.append(helper.make_node(
                "ConstantOfShape", [out + "__SHAPE"], [out], name=out,
                value=numpy_helper.from_array(np.zeros(1, np.float32), "zero")))
            initializers.append(numpy_helper.from_array(np.array(shape, np.int64), out + "__SHAPE"))
            continue
        count = int(np.prod(shape))
        fan_in = int(np.prod(shape[1:]))
        offset = int(rng.integers(0, BLOCK))
        repeats = -(-(offset + count) // BLOCK)
        scale = np.sqrt(2.0 / fan_in) * (FC8_GAIN if out.startswith("fc8") else 1.0)
        tiled, window, shaped = out + "_tiled", out + "_window", out + "_unscaled"
        scaled, mean = out + "_scaled", out + "_mean"
        initializers += [
            numpy_helper.from_array(np.array([repeats], np.int64), out + "_repeats"),
            numpy_helper.from_array(np.array(shape, np.int64), out + "_shape"),
            numpy_helper.from_array(np.array(scale, np.float32), out + "_scale"),
        ]
        nodes += [
            helper.make_node("Tile", ["weights_block", out + "_repeats"], [tiled], name=tiled),
            helper.make_node("Slice", [tiled], [window], name=window,
                             starts=[offset], ends=[offset + count], axes=[0]),
            helper.make_node("Reshape", [window, out + "_shape"], [shaped], name=shaped),
            helper.make_node("Mul", [shaped, out + "_scale"], [scaled], name=scaled),
            helper.make_node("ReduceMean", [scaled], [mean], name=mean,
                             axes=list(range(1, len(shape))), keepdims=1),
            helper.make_node("Sub", [scaled, mean], [out], name=out),
        ]
    initializers.append(numpy_helper.from_array(np.array([-1, 9216], np.int64), "OC2_DUMMY_1"))
    nodes += [n for n in src.graph.node if n.op_type != "ConstantOfShape"]

    graph = helper.make_graph(
        nodes,
        "alexnet_light",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, ["N", 1000])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 9)],
        producer_name="pareidolia models/alexnet-light/make.py",
        ir_version=7,
    )
    onnx.checker.check_model(model, full_check=True)
    out = model.SerializeToString()
    with open(OUT, "wb") as f:
        f.write(out)
    print(f"wrote {OUT}: {len(out)} bytes, sha256 {hashlib.sha256(out).hexdigest()}")


if __name__ == "__main__":
    main()
