#!/usr/bin/env python3
"""PyTorch's side of the LeNet training-speed comparison (issue 25 item 2, BENCHMARKS.md).

Runs models/lenet-mnist/train.py unchanged but for two overrides, the iteration count (its
MAX_ITER) and the intra-op thread count (the script pins one), and prints the images per
second of its training loop alone: from the first batch drawn to the last, so that loading
the csv and writing the ONNX file are not counted (the script's own `train_seconds` counts
the loading). Compare with `pareidolia train --train-iterations N --train-threads T`, whose
`training.json` reports `images_per_s` the same way.

    python3 scripts/lenet_train_rate.py --iterations 1000 --threads 1 --out /tmp/lenet-py
"""
import argparse
import importlib.util
import os
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(HERE, "..", "models", "lenet-mnist", "train.py")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="folder for train.py's outputs (a scratch folder)")
    args = p.parse_args()
    if args.iterations < 2:
        p.error("--iterations must be at least 2")
    os.makedirs(args.out, exist_ok=True)

    spec = importlib.util.spec_from_file_location("lenet_train", TRAIN)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    train.MAX_ITER = args.iterations

    pin = train.set_determinism

    def set_determinism(seed):
        pin(seed)
        torch.set_num_threads(args.threads)

    train.set_determinism = set_determinism

    stamps = []
    stream = train.batch_stream

    def timed_stream(n, gen):
        for b in stream(n, gen):
            stamps.append(time.perf_counter())
            yield b

    train.batch_stream = timed_stream
    train.main(["--out", args.out, "--name", "lenet-py"])
    # The loop draws exactly MAX_ITER batches: MAX_ITER - 1 iterations lie between the first
    # draw and the last.
    span = stamps[args.iterations - 1] - stamps[0]
    rate = (args.iterations - 1) * train.BATCH / span
    print(f"pytorch {torch.__version__}: {args.iterations} iterations on {args.threads} threads, "
          f"{rate:.0f} images/s")


if __name__ == "__main__":
    main()
