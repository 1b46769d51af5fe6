"""Builds models/bvlcalexnet/test/standin.onnx: a stand-in for the ONNX model zoo's
`bvlcalexnet-12.onnx` with the zoo file's exact interface and seeded random weights, so that
the tests can check `models/bvlcalexnet/manifest.toml` without the 233 MB file.

Source: `onnx/backend/test/data/light/light_bvlc_alexnet.onnx` from the `onnx` wheel
(requirements.txt pins the version; the file's sha256 is checked below). That "light" file is
the zoo's AlexNet graph (the same onnx-caffe2 export) with every weight replaced by
`ConstantOfShape(0.02)`.

What the stand-in keeps from the zoo file, unchanged:

- input `data_0` declared `[1, 3, 224, 224]`: the batch is FIXED at 1, as in the zoo file;
- the flatten before fc6, `Reshape(r14, OC2_DUMMY_1)` with `OC2_DUMMY_1 = [1, 9216]`, which
  only works at batch 1 (this is why the zoo file cannot be run with a larger batch);
- every layer and attribute of the graph (pool5's pads [0, 0, 1, 1], LRN, grouped convolutions,
  the final Softmax), and opset 12 (the light file is opset 9; `onnx.version_converter` brings
  it to 12 as the zoo did for its `-12` files);
- output `[1, 1000]` probabilities, renamed `softmaxout_1` as the zoo's README names it (the
  light file calls it `prob_1`; Pareidolia reads the graph's first output whatever its name).

What it changes: the weights. As in models/alexnet-light/make.py (which explains the method),
the file stores one block of BLOCK (a prime) seeded standard-normal values, and the graph builds
each layer's weights from it (Tile, Slice at a per-layer offset, Reshape, Mul by the He-normal
scale, minus each output unit's mean), so the file stays about 1 MB instead of 244 MB. fc8 is
scaled by FC8_GAIN so the softmax is spread out. Biases are zero. Both of Pareidolia's backends
fold this into constants when they prepare the model.

Usage: `python3 make_standin.py` writes standin.onnx beside this script and prints its size
and sha256 (tests/integration/zoo_alexnet.rs checks the sha256). Deterministic: the same
versions give the same bytes.
"""

import hashlib
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

SEED = 20261127
BLOCK = 262147  # prime, just above 2**18: a 1 MiB block of float32
FC8_GAIN = 0.2
OPSET = 12
OUTPUT = "softmaxout_1"
SOURCE_SHA256 = "2afa78cef5a88aed9d6e3d63fb92bd330c9177ac150d19189c6b3e7204ba0212"

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "standin.onnx")


def source_path():
    return os.path.join(
        os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_bvlc_alexnet.onnx"
    )


def weight_nodes(src, rng, block):
    """The nodes and initialisers that build every weight and bias of `src` from `block`."""
    shapes = {t.name: numpy_helper.to_array(t).tolist() for t in src.graph.initializer}
    nodes, initializers = [], [numpy_helper.from_array(block, "weights_block")]
    for node in src.graph.node:
        if node.op_type != "ConstantOfShape":
            continue
        out = node.output[0]
        shape = shapes[out + "__SHAPE"]
        initializers.append(numpy_helper.from_array(np.array(shape, np.int64), out + "__SHAPE"))
        if out.endswith("_b_0"):
            nodes.append(helper.make_node(
                "ConstantOfShape", [out + "__SHAPE"], [out], name=out,
                value=numpy_helper.from_array(np.zeros(1, np.float32), "zero")))
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
            numpy_helper.from_array(np.array(scale, np.float32), out + "_scale"),
        ]
        nodes += [
            helper.make_node("Tile", ["weights_block", out + "_repeats"], [tiled], name=tiled),
            helper.make_node("Slice", [tiled], [window], name=window,
                             starts=[offset], ends=[offset + count], axes=[0]),
            helper.make_node("Reshape", [window, out + "__SHAPE"], [shaped], name=shaped),
            helper.make_node("Mul", [shaped, out + "_scale"], [scaled], name=scaled),
            helper.make_node("ReduceMean", [scaled], [mean], name=mean,
                             axes=list(range(1, len(shape))), keepdims=1),
            helper.make_node("Sub", [scaled, mean], [out], name=out),
        ]
    return nodes, initializers


def main():
    path = source_path()
    data = open(path, "rb").read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{path} has sha256 {digest}, expected {SOURCE_SHA256}: install onnx from requirements.txt")
    src = onnx.load_from_string(data)
    (data_0,) = [i for i in src.graph.input if i.name == "data_0"]
    dims = [d.dim_value for d in data_0.type.tensor_type.shape.dim]
    assert dims == [1, 3, 224, 224], dims
    (dummy,) = [t for t in src.graph.initializer if t.name == "OC2_DUMMY_1"]
    assert numpy_helper.to_array(dummy).tolist() == [1, 9216]

    rng = np.random.default_rng(SEED)
    block = rng.standard_normal(BLOCK).astype(np.float32)
    nodes, initializers = weight_nodes(src, rng, block)
    initializers.append(dummy)  # the fixed [1, 9216] flatten, kept as it is
    rename = {src.graph.output[0].name: OUTPUT}
    for node in src.graph.node:
        if node.op_type == "ConstantOfShape":
            continue
        node = onnx.NodeProto.FromString(node.SerializeToString())
        for k, name in enumerate(node.output):
            node.output[k] = rename.get(name, name)
        nodes.append(node)

    graph = helper.make_graph(
        nodes,
        src.graph.name,
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 1000])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 9)],
        producer_name="pareidolia models/bvlcalexnet/test/make_standin.py",
        ir_version=7,
    )
    model = version_converter.convert_version(model, OPSET)
    onnx.checker.check_model(model, full_check=True)
    out = model.SerializeToString()
    with open(OUT, "wb") as f:
        f.write(out)
    print(f"wrote {OUT}: {len(out)} bytes, sha256 {hashlib.sha256(out).hexdigest()}")


if __name__ == "__main__":
    main()
