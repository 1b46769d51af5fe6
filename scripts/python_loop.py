#!/usr/bin/env python3
"""The paper's MNIST experiment as a researcher would write it in Python: the comparison harness
of issue 31 (BENCHMARKS.md, "Against a Python loop").

numpy for the archive and the direct encoding, ONNX Runtime for inference, nothing else. It is
the same algorithm as `pareidolia run` with the default config (configs/mnist-direct.toml):

- direct encoding: 784 genes in [0, 1), pixel = int(gene * 255); mutation picks each gene with
  probability 0.1 (halved every 1000 generations) and applies Deb's polynomial mutation with
  eta_m = 15 as the released code does (no bound term), then clamps to [0, 1]; no crossover;
- MAP-Elites with one cell per class: 200 random genomes, then per generation 200 children of
  parents drawn uniformly over the filled cells (a genome holding k cells counts k times); every
  child competes for every class and replaces a champion whose confidence it strictly beats;
- the model: models/lenet-mnist (logits), input x = pixel / 256 as its manifest says, softmax
  here; the whole generation is one batch of 200 on ONNX Runtime with N intra-op threads.

It prints one line per run: seed, generations, evaluations, seconds, evaluations/s, and the
generation and time at which every digit first reached the threshold (`--until`), then stops.
The random numbers are numpy's, so a run is not the Rust run generation for generation; only
speeds and times-to-target are comparable, as medians over seeds.

    python3 scripts/python_loop.py --seeds 1 2 3 --threads 2
"""

import argparse
import os
import sys
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "models", "lenet-mnist", "lenet-mnist.onnx")


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def to_input(genes):
    """Genes in [0, 1] -> LeNet's input: pixel = int(g * 255), x = pixel / 256.

    The genes are stored column-major (gene x * 28 + y), as the released code writes them."""
    pixels = np.floor(genes * 255.0).astype(np.float32)
    images = pixels.reshape(-1, 28, 28).transpose(0, 2, 1)
    return (images / 256.0)[:, None, :, :]


def mutate(genes, rate, eta, rng):
    chosen = rng.random(genes.shape) < rate
    r = rng.random(genes.shape)
    exponent = 1.0 / (eta + 1.0)
    delta = np.where(r < 0.5, (2.0 * r) ** exponent - 1.0, 1.0 - (2.0 * (1.0 - r)) ** exponent)
    return np.clip(np.where(chosen, genes + delta, genes), 0.0, 1.0)


def run(seed, args, sess, input_name):
    rng = np.random.default_rng(seed)
    classes = 10
    genes = np.zeros((classes, 784))
    best = np.full(classes, -1.0)
    filled = np.zeros(classes, dtype=bool)
    evaluations = 0
    reached = None
    start = time.perf_counter()

    def insert(children):
        nonlocal evaluations
        probs = softmax(sess.run(None, {input_name: to_input(children).astype(np.float32)})[0])
        evaluations += len(children)
        for j in range(classes):
            i = int(np.argmax(probs[:, j]))
            if not filled[j] or probs[i, j] > best[j]:
                best[j] = probs[i, j]
                genes[j] = children[i]
                filled[j] = True

    insert(rng.random((args.offspring, 784)))
    generation = 0
    for generation in range(1, args.generations + 1):
        rate = args.mutation_rate * 0.5 ** ((generation - 1) // args.halving_period)
        cells = np.flatnonzero(filled)
        parents = genes[rng.choice(cells, size=args.offspring)]
        insert(mutate(parents, rate, args.eta_m, rng))
        if reached is None and best.min() >= args.until:
            reached = (generation, time.perf_counter() - start)
            if args.stop_at_target:
                break
    seconds = time.perf_counter() - start
    return generation, evaluations, seconds, reached, best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="ONNX Runtime intra-op threads")
    p.add_argument("--generations", type=int, default=200)
    p.add_argument("--offspring", type=int, default=200)
    p.add_argument("--mutation-rate", type=float, default=0.1)
    p.add_argument("--halving-period", type=int, default=1000)
    p.add_argument("--eta-m", type=float, default=15.0)
    p.add_argument("--until", type=float, default=0.9999, help="every digit at this confidence")
    p.add_argument("--stop-at-target", action="store_true", help="stop once every digit reaches --until")
    p.add_argument("--model", default=MODEL)
    args = p.parse_args()

    sess = session(args.model, args.threads)
    input_name = sess.get_inputs()[0].name
    print(f"# onnxruntime {ort.__version__}, numpy {np.__version__}, {args.threads} intra-op threads, "
          f"{args.offspring} children per generation", flush=True)
    print("seed,generations,evaluations,seconds,evaluations_per_s,target_generation,target_seconds,min,median")
    for seed in args.seeds:
        generation, evaluations, seconds, reached, best = run(seed, args, sess, input_name)
        tg, ts = (reached if reached else ("", ""))
        ts = f"{ts:.3f}" if ts != "" else ""
        print(f"{seed},{generation},{evaluations},{seconds:.3f},{evaluations / seconds:.0f},{tg},{ts},"
              f"{best.min():.6f},{np.median(best):.6f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
