#!/usr/bin/env python3
"""The highest probability models/mnist-vit can give any class, from its weights alone.

The ViT's logits are a linear head on the class token after a final LayerNormalization:
logits = W (gamma * z + beta) + b, where z = (x - mean(x)) / sqrt(var(x) + eps) has mean 0
and |z|^2 = d var / (var + eps) < d (d = 64). Whatever the image, z lies in the set
{sum(z) = 0, |z| <= sqrt(d)}, so max over that set of softmax(logits)_k bounds the class's
probability from above for every input. log softmax_k is concave in the logits and the logits
are linear in z, so this is a concave maximisation over a convex set: projected gradient ascent
finds its global maximum. (An upper bound: not every z in the set need be reachable from an
image.)

    python3 scripts/vit_ceiling.py [models/mnist-vit/mnist-vit.onnx]

Prints per class the bound on p, 1 - p and the logit margin to the runner-up at the optimum,
and the remaining tangential gradient (convergence check). Needs numpy and onnx (to read the
weights).
"""

import sys

import numpy as np
import onnx
from onnx import numpy_helper


def head(path):
    """(gamma, beta, W, b) of the final LayerNormalization -> Gather -> Gemm, checked."""
    g = onnx.load(path).graph
    init = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in g.initializer}
    ln, gather, gemm = g.node[-3:]
    if (ln.op_type, gather.op_type, gemm.op_type) != ("LayerNormalization", "Gather", "Gemm"):
        sys.exit(f"{path}: does not end in LayerNormalization -> Gather -> Gemm")
    if gather.input[0] != ln.output[0] or gemm.input[0] != gather.output[0]:
        sys.exit(f"{path}: the last three nodes are not chained")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute}
    if attrs.get("transB") != 1 or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        sys.exit(f"{path}: unexpected Gemm attributes {attrs}")
    ln_attrs = {a.name: onnx.helper.get_attribute_value(a) for a in ln.attribute}
    if ln_attrs.get("axis", -1) != -1:
        sys.exit(f"{path}: LayerNormalization not over the last axis")
    return init[ln.input[1]], init[ln.input[2]], init[gemm.input[1]], init[gemm.input[2]]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "models/mnist-vit/mnist-vit.onnx"
    gamma, beta, w, b = head(path)
    d = gamma.size
    radius = np.sqrt(d)
    a = w * gamma  # logits = a @ z + c
    c = w @ beta + b
    classes = a.shape[0]

    def project(z):
        z = z - z.mean()
        n = np.linalg.norm(z)
        return z * (radius / n) if n > radius else z

    print(f"{path}: d = {d}, {classes} classes; bound on each class's probability over all inputs")
    print("class | max p | 1 - p | logit margin | tangential gradient")
    for k in range(classes):
        z = project(a[k] - a.mean(0))
        onehot = np.eye(classes)[k]
        for _ in range(20000):
            logits = a @ z + c
            p = np.exp(logits - logits.max())
            p /= p.sum()
            z = project(z + 200.0 * (a.T @ (onehot - p)))
        logits = a @ z + c
        top = logits.max()
        logp = logits[k] - (top + np.log(np.exp(logits - top).sum()))
        p = np.exp(logits - top)
        p /= p.sum()
        grad = a.T @ (onehot - p)
        grad -= grad.mean()
        tangential = grad - (grad @ z) / (z @ z) * z
        margin = logits[k] - np.max(np.delete(logits, k))
        print(
            f"{k} | {np.exp(logp) * 100:.5f}% | {-np.expm1(logp):.3e} | {margin:.3f} | "
            f"{np.linalg.norm(tangential):.1e}"
        )


if __name__ == "__main__":
    main()
