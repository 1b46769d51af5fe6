#!/usr/bin/env python3
"""Random search over the released gradient-ascent code's hyper-parameters (issue 29, item 4).

The released code (`caffe/ascent/hyperparam_search.py`, PAPER.md section 6) drew each setting at
random with fixed weights and kept seeds 169, 188 and 360 for the supplementary figures. This
script draws settings from the same value lists with the same weights (Python's `random` seeded
with the setting's number: the draws are ours, not the released script's, whose random-number
stream we do not have), runs `pareidolia run` with each on the 20 classes of the supplementary
figures, and scores every setting by:

- how many classes reach 99% (and 99.99%), by the real-valued image and by its 8-bit PNG as the
  inference backend scores it (`summary.json`'s `ascent.classes[].png_confidence`);
- how regular the images are: the mean absolute difference between neighbouring pixels of the
  gallery PNGs (total variation per pixel, in 8-bit levels: white noise ~ 85, a smooth picture
  ~ 5) and the share of the spectrum's energy (mean removed) below an eighth of the Nyquist
  frequency (noise ~ 0.02, natural photographs ~ 0.8).

`--set KEY=VALUE` (repeatable) overrides one drawn value in every setting of the invocation,
e.g. `--set late_prog_mult=1` for the bolder late phase of the gradient operator (README,
"Gradient-informed MAP-Elites"); any key of the draw except `steps` can be set. The progress
policy's desired gain per step is `min(early_prog, late_prog_mult * (1 - p))`, so
`late_prog_mult` changes nothing while `p < 1 - early_prog / late_prog_mult` (below 90% for
early_prog 0.02 and late_prog_mult 0.2); `--set early_prog=0.1` makes the early phase bolder.

Each run goes to OUT/setting-N (N the setting's number), with `-xS` appended when the step
count is scaled by S != 1 and `-KEY=VALUE` for each override, e.g. `setting-169-x0.5` or
`setting-169-late_prog_mult=1`; a run whose summary.json is present is not run again, so an
interrupted search goes on with the next run. A run stopped by SIGTERM writes its checkpoint
and summary.json at the step it reached (`steps` in the tables says how far it got) and
counts as done; `pareidolia resume` takes it further. To stop a search, stop this script
first, then SIGTERM the run in flight (otherwise the script starts the next one). Each run's
folder stays in OUT, so its gallery can be looked at. The name does not say how many classes
ran: give a search over other classes its own OUT.

Results cover every run folder in OUT with a summary.json, whatever invocation made it (the
values are read back from summary.json's recipe): OUT/results.csv (one line per run, ranked:
most classes at >= 99% first, then the most regular), OUT/results.md (the same as a table) and
OUT/classes.csv (one line per run and class: the best image's probability, its PNG's, the step
the best image was seen at, the first steps at 99% and 99.99%, and the two regularity figures);
the `run` column is the folder's name without `setting-`. `best_step_median` tells a stall (the
best image came early) from a run still rising at its last step. `scripts/plot_ascent_search.py`
draws the runs' curves and their images with the perturbation amplified.

    python3 scripts/ascent_search.py --settings 169 188 360 1-20 --out runs/ascent-search
    python3 scripts/ascent_search.py --settings 1-40 --steps-scale 0.25 --classes 3 --out /tmp/s
    python3 scripts/ascent_search.py --settings -1 169 --set late_prog_mult=1 --out /tmp/s

Environment: PAREIDOLIA (the binary; default target/release/pareidolia), NICE (default 19).
Needs numpy and pillow (scripts/requirements.txt).
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CLASSES = [200, 207, 215, 279, 366, 367, 390, 414, 445, 500, 509, 580, 643, 657, 704, 713, 782,
           805, 826, 906]
PCTS = [0, 10, 20, 30, 50, 80, 90]


def draw(seed):
    """One setting, drawn as the released search drew it (value lists and weights of PAPER.md §6)."""
    if seed == -1:  # the released "seed -1": no regularisation
        return dict(decay=0.0, steps=500, early_prog=0.02, late_prog_mult=0.1, blur_radius=0.0,
                    blur_every=0, small_norm_percentile=0.0, px_benefit_percentile=0.0,
                    px_abs_benefit_percentile=0.0)
    r = random.Random(seed)

    def pick(values, weights=None):
        return r.choices(values, weights=weights)[0]

    blur_radius = pick([0.0, 0.3, 0.4, 0.5, 1.0], [10, 2, 1, 1, 1])
    return dict(
        decay=pick([0.0, 1e-4, 1e-3, 0.01, 0.1, 0.2, 0.3], [4, 1, 1, 2, 1, 1, 1]),
        steps=pick([250, 500, 750, 1000, 1500]),
        early_prog=pick([0.02, 0.03, 0.04], [1, 2, 1]),
        late_prog_mult=pick([0.02, 0.05, 0.1, 0.2]),
        blur_radius=blur_radius,
        blur_every=pick([1, 2, 3, 4]) if blur_radius > 0 else 0,
        small_norm_percentile=float(pick(PCTS, [10, 10, 5, 2, 2, 2, 2])),
        px_abs_benefit_percentile=float(pick(PCTS, [10, 10, 5, 2, 2, 2, 2])),
        px_benefit_percentile=float(pick(PCTS, [20, 10, 5, 2, 2, 2, 2])),
    )


def config_text(setting, steps, classes, manifest, backend, batch, color):
    search = "\n".join(f"{k} = {v}" for k, v in setting.items() if k != "steps")
    return f"""# Drawn by scripts/ascent_search.py
seed = 1
generations = {steps}
batch_size = {batch}

[model]
manifest = "{manifest}"
backend = "{backend}"

[encoding]
plugin = "direct"

[encoding.params]
color_space = "{color}"

[fitness]
plugin = "confidence"

[search]
kind = "gradient-ascent"
preset = "released"
max_lr = 1e7
{search}

[archive]
classes = {classes}
"""


def regularity(path):
    """(total variation per pixel in 8-bit levels, low-frequency share of the spectrum's energy)."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    tv = (np.abs(np.diff(img, axis=0)).mean() + np.abs(np.diff(img, axis=1)).mean()) / 2
    gray = img.mean(axis=2)
    power = np.abs(np.fft.fft2(gray - gray.mean())) ** 2
    fy = np.abs(np.fft.fftfreq(gray.shape[0]))[:, None]
    fx = np.abs(np.fft.fftfreq(gray.shape[1]))[None, :]
    low = np.hypot(fx, fy) < 0.5 / 8
    total = power.sum()
    return tv, (power[low].sum() / total) if total > 0 else 1.0


def parse_settings(specs):
    out = []
    for spec in specs:
        for part in spec.split(","):
            if "-" in part.lstrip("-"):
                a, b = part.lstrip("-").split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    return out


def parse_overrides(items, keys):
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in keys or key == "steps":
            sys.exit(f"--set {item}: expected KEY=VALUE with KEY one of "
                     f"{', '.join(k for k in keys if k != 'steps')}")
        out[key] = int(value) if key == "blur_every" else float(value)
    return out


def run_name(number, scale, overrides):
    name = f"setting-{number}"
    if scale != 1.0:
        name += f"-x{scale:g}"
    for key, value in overrides.items():
        name += f"-{key}={value:g}"
    return name


def collect(out_dir):
    """One row per run folder in OUT with a summary.json, and one per run and class."""
    rows, class_rows = [], []
    for name in sorted(os.listdir(out_dir)):
        summary_path = os.path.join(out_dir, name, "summary.json")
        if not name.startswith("setting-") or not os.path.exists(summary_path):
            continue
        with open(summary_path) as f:
            ascent = json.load(f)["ascent"]
        recipe = ascent["recipe"]
        per_class = ascent["classes"]
        confs = np.array([c["confidence"] for c in per_class])
        pngs = np.array([c["png_confidence"] if c["png_confidence"] is not None else 0.0 for c in per_class])
        gallery = os.path.join(out_dir, name, "gallery")
        regs = []
        for c in per_class:
            # Gallery PNGs are named `007_label_0.999912.png`, after the class.
            images = [f for f in os.listdir(gallery)
                      if f.endswith(".png") and f.split("_")[0].isdigit() and int(f.split("_")[0]) == c["class"]]
            regs.append(regularity(os.path.join(gallery, images[0])) if images else (float("nan"), float("nan")))
        regs = np.array(regs)
        for c, (tv, low) in zip(per_class, regs):
            first = c["first_step_reaching"]
            class_rows.append(dict(run=name[len("setting-"):], **{"class": c["class"]},
                                   confidence=c["confidence"], png_confidence=c["png_confidence"],
                                   best_step=c["best_step"], first_99=first["0.99"],
                                   first_9999=first["0.9999"], tv_per_pixel=float(tv),
                                   low_freq_share=float(low)))
        rows.append(dict(
            run=name[len("setting-"):], steps=ascent["steps"],
            **{k: recipe[k] for k in ("decay", "blur_radius", "blur_every", "small_norm_percentile",
                                      "px_benefit_percentile", "px_abs_benefit_percentile",
                                      "early_prog", "late_prog_mult", "max_lr")},
            classes=len(per_class),
            median=float(np.median(confs)), min=float(confs.min()),
            at_99=int((confs >= 0.99).sum()), at_9999=int((confs >= 0.9999).sum()),
            png_median=float(np.median(pngs)), png_at_99=int((pngs >= 0.99).sum()),
            best_step_median=float(np.median([c["best_step"] for c in per_class])),
            tv_per_pixel=float(np.nanmean(regs[:, 0])), low_freq_share=float(np.nanmean(regs[:, 1])),
            images_steps_per_s=ascent.get("images_steps_per_s"),
        ))
    rows.sort(key=lambda r: (-r["at_99"], r["tv_per_pixel"]))
    return rows, class_rows


def write_tables(out_dir, rows, class_rows):
    if not rows:
        return
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out_dir, "classes.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(class_rows[0]))
        w.writeheader()
        w.writerows(class_rows)
    cols = ["run", "steps", "decay", "blur_radius", "blur_every", "small_norm_percentile",
            "px_benefit_percentile", "px_abs_benefit_percentile", "early_prog", "late_prog_mult",
            "median", "at_99", "at_9999", "png_median", "png_at_99", "best_step_median",
            "tv_per_pixel", "low_freq_share"]
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
        for r in rows:
            f.write("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", default=["-1", "169", "188", "360"],
                   help="setting numbers (seeds of the draw): 169 188 360 1-20; -1 = no regularisation")
    p.add_argument("--out", required=True)
    p.add_argument("--classes", type=int, default=len(CLASSES), help="the first N of the 20 classes")
    p.add_argument("--class-list", help="other class indices, comma-separated (another model's labels)")
    p.add_argument("--steps-scale", type=float, default=1.0, help="scale every setting's step count")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one drawn value in every setting, e.g. late_prog_mult=1 (repeatable)")
    p.add_argument("--manifest", default=os.path.join(ROOT, "models", "efficientnet-lite0", "manifest.toml"))
    p.add_argument("--backend", default="auto")
    p.add_argument("--color-space", default="rgb", help="the direct encoding's color_space (hsv, hls-opencv, rgb; gray models use the first channel)")
    args = p.parse_args()

    binary = os.environ.get("PAREIDOLIA", os.path.join(ROOT, "target", "release", "pareidolia"))
    nice = os.environ.get("NICE", "19")
    classes = [int(c) for c in args.class_list.split(",")] if args.class_list else CLASSES[: args.classes]
    overrides = parse_overrides(args.overrides, list(draw(-1)))
    os.makedirs(args.out, exist_ok=True)
    for number in parse_settings(args.settings):
        setting = {**draw(number), **overrides}
        steps = max(1, round(setting["steps"] * args.steps_scale))
        name = run_name(number, args.steps_scale, overrides)
        run_dir = os.path.join(args.out, name)
        if not os.path.exists(os.path.join(run_dir, "summary.json")):
            cfg = os.path.join(args.out, f"{name}.toml")
            with open(cfg, "w") as f:
                f.write(config_text(setting, steps, classes, os.path.abspath(args.manifest),
                                    args.backend, len(classes), args.color_space))
            print(f"{name}: {setting} ({steps} steps)", flush=True)
            subprocess.run(["nice", "-n", nice, binary, "run", "--config", cfg, "--out", run_dir],
                           check=True, stdout=subprocess.DEVNULL)
    rows, class_rows = collect(args.out)
    write_tables(args.out, rows, class_rows)
    if rows:
        print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
    sys.exit(main())
