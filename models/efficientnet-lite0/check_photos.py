#!/usr/bin/env python3
"""Classify five real photographs shipped in PyPI wheels with efficientnet-lite0.onnx (or Lite1, Lite2).

Run after convert.py (from the repository root):

    python models/efficientnet-lite0/check_photos.py          # Lite0 (the default)
    python models/efficientnet-lite0/check_photos.py lite1    # models/efficientnet-lite1/
    python models/efficientnet-lite0/check_photos.py lite2    # models/efficientnet-lite2/

Photos: scikit-image 0.26.0's skimage.data.astronaut(), coffee(), chelsea(), rocket() and
matplotlib 3.11.2's sample image grace_hopper.jpg (matplotlib.cbook.get_sample_data).

Preprocessing (standard ImageNet evaluation): the shorter side resized to S + 32 with PIL's bilinear
filter (antialiased when shrinking; longer side int((S + 32) * long / short), as torchvision's Resize),
centre crop SxS (offsets rounded as torchvision's CenterCrop), kept as 8-bit RGB; S is the model's
input size (224 for Lite0, so 256 then 224; Lite1 272 then 240; Lite2 292 then 260: TensorFlow's
EfficientNet evaluation crop, CROP_PADDING = 32). Those
8-bit pixels are then mapped exactly as the Rust side maps them from manifest.toml, in float32:
x = ((p / 255) * (range[1] - range[0]) + range[0] - mean) / std, i.e. (p - 127) / 128.

Writes, into the model's folder (models/efficientnet-liteN/):
    photos.json            top-5 (ONNX Runtime) per photo, ORT vs PyTorch logit difference, and the
                           top-1 under other normalisations (evidence for the manifest's)
    samples/NAME.png       the SxS crops (8-bit RGB)
    samples/expected.json  per PNG: top-1 class index, label and probability computed by ONNX Runtime
                           from the PNG as re-read from disk with the manifest normalisation
"""

import hashlib
import json
import os
import sys
import tomllib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import convert  # noqa: E402  (this folder's convert.py: the variants and the unfolded model)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def photos():
    """[(name, source description, path of the shipped file, HxWx3 uint8)]"""
    import matplotlib
    import matplotlib.cbook
    import skimage
    import skimage.data
    from PIL import Image

    out = []
    for name, fname in [("astronaut", "astronaut.png"), ("coffee", "coffee.png"),
                        ("chelsea", "chelsea.png"), ("rocket", "rocket.jpg")]:
        arr = getattr(skimage.data, name)()
        path = os.path.join(skimage.data.data_dir, fname)
        out.append((name, f"scikit-image {skimage.__version__}, skimage.data.{name}() (skimage/data/{fname})", path, arr))
    path = str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    out.append(("grace_hopper", f"matplotlib {matplotlib.__version__}, "
                "matplotlib.cbook.get_sample_data('grace_hopper.jpg') (mpl-data/sample_data/grace_hopper.jpg)", path, arr))
    for name, _, _, arr in out:
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, (name, arr.shape, arr.dtype)
    return out


def resize_crop(arr, short=256, crop=224):
    from PIL import Image

    im = Image.fromarray(arr, "RGB")
    w, h = im.size
    if w <= h:
        size = (short, int(short * h / w))
    else:
        size = (int(short * w / h), short)
    im = im.resize(size, Image.BILINEAR)
    w, h = im.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    im = im.crop((left, top, left + crop, top + crop))
    out = np.asarray(im, dtype=np.uint8)
    assert out.shape == (crop, crop, 3)
    return out


def normalise(hwc, spec):
    """8-bit HxWx3 RGB -> 1x3xHxW float32, exactly as crates/pareidolia-eval/src/preprocess.rs."""
    r0, r1 = np.float32(spec["range"][0]), np.float32(spec["range"][1])
    mean = np.array(spec["mean"], np.float32).reshape(-1, 1, 1)
    std = np.array(spec["std"], np.float32).reshape(-1, 1, 1)
    unit = hwc.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    x = (unit * (r1 - r0) + r0 - mean) / std
    assert x.dtype == np.float32
    return x[None]


def softmax(logits):
    z = logits.astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def top5(probs, labels):
    idx = np.argsort(-probs, kind="stable")[:5]
    return [{"index": int(i), "label": labels[i], "probability": float(probs[i])} for i in idx]


def stem_statistics(model, crops, specs):
    """For each normalisation: how the batch statistics of the stem convolution's output (before its
    BatchNorm) compare with the BatchNorm's running statistics learnt in training. The normalisation
    the weights were trained with should give a mean z-shift near 0 and a variance ratio near 1."""
    import torch
    import torch.nn.functional as F

    bn = model.stem.bn
    rm, rv = bn.running_mean.numpy(), bn.running_var.numpy()
    live = rv > 1e-6
    out = {}
    for what, s in specs.items():
        x = torch.from_numpy(np.concatenate([normalise(c, s) for c in crops]))
        with torch.no_grad():
            y = model.stem.conv(F.pad(x, model.stem.pad)).numpy()
        mu, var = y.mean((0, 2, 3))[live], y.var((0, 2, 3))[live]
        out[what] = {
            "median_mean_shift_in_running_std": float(np.median((mu - rm[live]) / np.sqrt(rv[live]))),
            "median_variance_ratio": float(np.exp(np.median(np.log(var / rv[live])))),
        }
    return out


def main():
    import onnxruntime as ort
    import torch
    from PIL import Image

    variant = convert.variant_from_args(sys.argv)
    size = variant.size
    out_dir = variant.dir
    with open(os.path.join(out_dir, "manifest.toml"), "rb") as f:
        manifest = tomllib.load(f)
    spec = manifest["input"]
    assert spec["color"] == "rgb" and spec["layout"] == "NCHW" and (spec["height"], spec["width"]) == (size, size)
    onnx_path = os.path.join(out_dir, manifest["onnx"])
    assert sha256(onnx_path) == manifest["sha256"], "ONNX file does not match manifest sha256; rerun convert.py"
    with open(os.path.join(out_dir, manifest["labels"])) as f:
        labels = f.read().splitlines()
    assert len(labels) == 1000

    # The manifest mapping is exactly (p - 127) / 128 for every 8-bit value in float32?
    p = np.arange(256, dtype=np.uint8).reshape(1, 1, 256).repeat(3, 0).transpose(1, 2, 0)
    exact = np.array_equal(normalise(p, spec)[0, 0, 0], (np.arange(256, dtype=np.float32) - 127) / 128)

    torch.set_num_threads(1)
    reference = convert.build(variant, fold=False)  # the unfolded PyTorch model
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    run = lambda x: sess.run(["logits"], {"input": x})[0][0]

    # Other normalisations, for comparison only (the top-1 probability drops when they are wrong).
    others = {
        "torchvision ImageNet mean/std (p/255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]":
            {"range": [0.0, 1.0], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "p/255 in [0, 1]": {"range": [0.0, 1.0], "mean": [0.0], "std": [1.0]},
    }

    sdir = os.path.join(out_dir, "samples")
    os.makedirs(sdir, exist_ok=True)
    for f in os.listdir(sdir):
        if f.endswith(".png"):
            os.remove(os.path.join(sdir, f))
    report, expected, worst, crops = [], [], 0.0, []
    for name, source, path, arr in photos():
        crop = resize_crop(arr, short=size + 32, crop=size)
        crops.append(crop)
        png = os.path.join(sdir, f"{name}.png")
        Image.fromarray(crop, "RGB").save(png, format="PNG", optimize=False)
        with Image.open(png) as im:
            assert im.mode == "RGB" and im.size == (size, size), (im.mode, im.size)
            back = np.asarray(im, dtype=np.uint8)
        assert np.array_equal(back, crop)
        x = normalise(back, spec)
        logits = run(x)
        with torch.no_grad():
            ref = reference(torch.from_numpy(x)).numpy()[0]
        diff = float(np.abs(logits - ref).max())
        assert diff < 1e-3 and logits.argmax() == ref.argmax(), (name, diff)
        worst = max(worst, diff)
        probs = softmax(logits)
        t5 = top5(probs, labels)
        alt = {}
        for what, s in others.items():
            ap = softmax(run(normalise(back, s)))
            alt[what] = top5(ap, labels)[0]
        report.append({
            "photo": name, "source": source, "file_sha256": sha256(path),
            "original_size": [int(arr.shape[1]), int(arr.shape[0])], "sample": f"samples/{name}.png",
            "top5": t5, "ort_vs_pytorch_max_abs_logit_diff": diff, "top1_with_other_normalisations": alt,
        })
        expected.append({"file": f"{name}.png", "top1": t5[0]["index"], "label": t5[0]["label"],
                         "probability": t5[0]["probability"]})
        print(f"{name}  ({arr.shape[1]}x{arr.shape[0]}; ORT vs PyTorch max |logit diff| {diff:.2g})")
        for r in t5:
            print(f"    {r['probability']:.4f}  {r['index']:4d}  {r['label']}")
        for what, r in alt.items():
            print(f"    [other normalisation: {what}] top-1 {r['probability']:.4f} {r['label']}")

    specs = {"manifest: (p - 127) / 128": spec, **others}
    stem = stem_statistics(reference, crops, specs)
    for what, r in stem.items():
        print(f"stem BatchNorm fit, {what}: mean shift {r['median_mean_shift_in_running_std']:+.3f} running std, "
              f"variance ratio {r['median_variance_ratio']:.3f}")

    with open(os.path.join(sdir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2)
        f.write("\n")
    import matplotlib, onnxruntime, PIL, skimage
    out = {
        "model": manifest["name"], "onnx_sha256": manifest["sha256"],
        "normalisation": "x = (p - 127) / 128 per RGB channel (manifest range [0, 255], mean 127, std 128)",
        "manifest_mapping_exact_in_float32": bool(exact),
        "preprocessing": f"shorter side to {size + 32} (PIL bilinear, antialiased), centre crop {size}, 8-bit RGB",
        "probabilities": "softmax of the ONNX Runtime logits (float64)",
        "max_abs_logit_diff_ort_vs_pytorch": worst,
        "stem_batchnorm_fit_over_the_5_crops": stem,
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                     "pillow": PIL.__version__, "scikit-image": skimage.__version__,
                     "matplotlib": matplotlib.__version__, "numpy": np.__version__},
        "photos": report,
    }
    with open(os.path.join(out_dir, "photos.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"manifest mapping == (p - 127) / 128 exactly in float32 for all 256 values: {exact}")
    print(f"max |ORT - PyTorch| logit difference over the photos: {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
