#!/usr/bin/env bash
# The GPU check of issue 15, item 6, for a machine with an NVIDIA GPU (CUDA 13, cuDNN 9,
# PyTorch; ONNX Runtime's CUDA build arrives through ../shared/tools/ort-gpu-pack, whose
# unpack step leaves /tmp/ortgpu/env.sh). Within about 8 minutes it runs:
#
#   1. parity: `classify --backend cuda` against `--backend ort-cpu` on LeNet (models/lenet-mnist
#      samples) and EfficientNet-Lite0 (models/efficientnet-lite0 samples): every probability
#      within --tolerance (1e-3, TF32 on, the config default) and the same top class;
#   2. `bench --backend cuda` at batch 1, 32, 256 and 1024 on both models;
#   3. the MNIST default run and --imagenet-generations (50) of configs/imagenet-cppn.toml
#      with --backend cuda (evaluations/s and stage times from their summary.json);
#   4. PyTorch eager on the same EfficientNet-Lite0 weights (the ONNX file's initialisers run
#      by torch.nn.functional, checked against ONNX Runtime first), host input and output;
#   5. gradients: gradient ascent's first step with its gradients on the backend under test
#      against the reference, on LeNet and (20 classes) EfficientNet-Lite0, then images x
#      steps per second (200 and 20 steps).
#
# It writes OUT/device-check.json and OUT/device-check.md. Exit status: 0 all checks passed,
# 1 a parity check failed, 2 bad arguments, 3 the backend under test cannot run here (the
# reason is in both files; nothing else is run), 4 a step failed (named in both files).
#
# `--backend ort-cpu` runs the same steps on the CPU against tract (the reference becomes
# tract), with `--quick` shrinking them: how the script is tested without a GPU.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: scripts/device-check.sh [options]
  --out DIR                  where device-check.json and device-check.md go (default: device-check)
  --binary PATH              the pareidolia binary (default: target/release/pareidolia)
  --ort-env FILE             a file to source for ORT_DYLIB_PATH and LD_LIBRARY_PATH
                             (default: /tmp/ortgpu/env.sh when it exists)
  --python PATH              python with torch and onnx for step 4 (default: python3)
  --backend NAME             backend under test: cuda (default) or ort-cpu
  --tolerance X              largest allowed probability difference (default: 1e-3)
  --bench-seconds S          seconds per bench batch size (default: 3)
  --imagenet-generations N   generations of the ImageNet CPPN run (default: 50; 0 skips it)
  --skip-torch               leave out step 4 (PyTorch)
  --quick                    small CPU-sized steps: bench batches 1,32 for 0.3 s, 3 MNIST
                             generations, no ImageNet run, PyTorch at batch 1 and 8
  -h, --help                 this text
EOF
}

fail_args() {
  echo "device-check: $1" >&2
  usage >&2
  exit 2
}

out=device-check
binary=target/release/pareidolia
ort_env=
python=python3
backend=cuda
tolerance=1e-3
bench_seconds=3
imagenet_generations=50
quick=0
skip_torch=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --quick) quick=1; shift ;;
    --skip-torch) skip_torch=1; shift ;;
    --out|--binary|--ort-env|--python|--backend|--tolerance|--bench-seconds|--imagenet-generations)
      [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || fail_args "$1 needs a value"
      case "$1" in
        --out) out=$2 ;;
        --binary) binary=$2 ;;
        --ort-env) ort_env=$2 ;;
        --python) python=$2 ;;
        --backend) backend=$2 ;;
        --tolerance) tolerance=$2 ;;
        --bench-seconds) bench_seconds=$2 ;;
        --imagenet-generations) imagenet_generations=$2 ;;
      esac
      shift 2 ;;
    *) fail_args "unknown argument \`$1\`" ;;
  esac
done
case "$backend" in
  cuda|ort-cpu) ;;
  *) fail_args "--backend must be cuda or ort-cpu, not \`$backend\`" ;;
esac
[[ "$tolerance" =~ ^[0-9.]+([eE]-?[0-9]+)?$ ]] || fail_args "--tolerance must be a number, not \`$tolerance\`"
[[ "$bench_seconds" =~ ^[0-9]*\.?[0-9]+$ ]] || fail_args "--bench-seconds must be a number of seconds, not \`$bench_seconds\`"
[[ "$imagenet_generations" =~ ^[0-9]+$ ]] || fail_args "--imagenet-generations must be a whole number, not \`$imagenet_generations\`"
[[ -x "$binary" ]] || fail_args "no pareidolia binary at $binary (cargo build --release --workspace, or --binary PATH)"
command -v "$python" >/dev/null || fail_args "no python at \`$python\` (--python PATH)"
if [[ -z "$ort_env" && -f /tmp/ortgpu/env.sh ]]; then ort_env=/tmp/ortgpu/env.sh; fi
if [[ -n "$ort_env" ]]; then
  [[ -f "$ort_env" ]] || fail_args "--ort-env $ort_env does not exist"
  # shellcheck disable=SC1090
  source "$ort_env"
fi
if [[ "$backend" == cuda ]]; then reference=ort-cpu; else reference=tract; fi
if [[ $quick == 1 ]]; then
  batches=1,32; bench_seconds=0.3; mnist_generations=3; imagenet_generations=0; torch_batches=1,8
  ascent_steps=5; imagenet_ascent_steps=0
else
  batches=1,32,256,1024; mnist_generations=200; torch_batches=1,32,256,1024
  ascent_steps=200; imagenet_ascent_steps=20
fi

binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out" || fail_args "cannot create --out $out"
out=$(cd "$out" && pwd)
work="$out/work"
rm -rf "$work" && mkdir -p "$work/steps"
started=$(date +%s)
cd "$root"

# Each step leaves work/steps/NAME.{rc,log} (and its own files); report() reads them all.
# LIMIT seconds bound each command of a step (`timeout`), so the whole check stays near 8 min.
step() {
  local name=$1 limit=$2; shift 2
  echo "device-check: $name" >&2
  LIMIT=$limit "$@" >"$work/steps/$name.log" 2>&1
  local rc=$?
  echo "$rc" >"$work/steps/$name.rc"
  return $rc
}

report() {
  STARTED=$started BACKEND=$backend REFERENCE=$reference TOLERANCE=$tolerance ORT_ENV=$ort_env \
  WORK=$work OUT=$out BINARY=$binary PYTHON_FOR_TORCH=$python QUICK=$quick \
  python3 - <<'PY'
import glob, json, os, platform, re, subprocess, time

work, out = os.environ["WORK"], os.environ["OUT"]
steps = {}
for rc_file in sorted(glob.glob(os.path.join(work, "steps", "*.rc"))):
    name = os.path.basename(rc_file)[:-3]
    log = open(os.path.join(work, "steps", name + ".log"), errors="replace").read()
    steps[name] = {"exit": int(open(rc_file).read().strip()), "log_tail": log[-1500:]}

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        return f"({e})"

result = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "seconds": round(time.time() - int(os.environ["STARTED"]), 1),
    "backend": os.environ["BACKEND"],
    "reference": os.environ["REFERENCE"],
    "tolerance": float(os.environ["TOLERANCE"]),
    "quick": os.environ["QUICK"] == "1",
    "machine": {
        "host": platform.node(),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "cores": os.cpu_count(),
        "gpu": sh("nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null") or None,
        "ort_dylib_path": os.environ.get("ORT_DYLIB_PATH"),
        "ort_env": os.environ.get("ORT_ENV") or None,
        "pareidolia": sh(f'"{os.environ["BINARY"]}" --version'),
    },
    "status": "passed",
}

probe = steps.get("probe")
if probe and probe["exit"] != 0:
    result["status"] = "refused"
    lines = [l for l in probe["log_tail"].splitlines() if l.strip()]
    result["refusal"] = next((l for l in lines if "error" in l.lower()), lines[-1] if lines else "no output")
else:
    parity = []
    for f in sorted(glob.glob(os.path.join(work, "parity-*.json"))):
        parity.append(json.load(open(f)))
    result["parity"] = parity
    result["gradients"] = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(work, "gradient-*.json")))]
    bench = {}
    for name, s in steps.items():
        if name.startswith("bench-"):
            rows = re.findall(r"batch\s+(\d+):\s+([\d.]+) images/s \(([\d.]+) ms", s["log_tail"])
            bench[name[len("bench-"):]] = [
                {"batch": int(b), "images_per_s": float(r), "ms_per_batch": float(m)} for b, r, m in rows
            ]
    result["bench"] = bench
    runs = {}
    for name in ["mnist", "imagenet-cppn"]:
        path = os.path.join(work, name, "summary.json")
        if os.path.exists(path):
            s = json.load(open(path))
            runs[name] = {k: s.get(k) for k in ["generations", "evaluations", "wall_time_s", "evaluations_per_s", "backend", "stage_times"]}
            runs[name]["median"] = s["stats"]["median"]
            runs[name]["min"] = s["stats"]["min"]
    result["runs"] = runs
    torch_file = os.path.join(work, "torch.json")
    result["pytorch"] = json.load(open(torch_file)) if os.path.exists(torch_file) else None
    failed = [n for n, s in steps.items() if s["exit"] != 0 and n != "torch"]
    if steps.get("torch", {}).get("exit", 0) not in (0,) and result["pytorch"] is None:
        result["pytorch"] = {"skipped": steps["torch"]["log_tail"].strip().splitlines()[-1:] or ["failed"]}
    if failed:
        result["status"] = "step failed"
        result["failed_steps"] = {n: steps[n]["log_tail"] for n in failed}
    elif any(not p["passed"] for p in parity + result["gradients"]):
        result["status"] = "parity failed"

json.dump(result, open(os.path.join(out, "device-check.json"), "w"), indent=2)

md = [f"# Device check ({result['date']})", "",
      f"- Backend under test: `{result['backend']}`, reference `{result['reference']}`, tolerance {result['tolerance']}",
      f"- Machine: {result['machine']['gpu'] or 'no NVIDIA GPU'}; {result['machine']['cores']} cores ({result['machine']['cpu']})",
      f"- ONNX Runtime: {result['machine']['ort_dylib_path'] or 'not set (found by pareidolia)'}",
      f"- {result['machine']['pareidolia']}; {result['seconds']} s in all",
      f"- **Status: {result['status']}**", ""]
if result["status"] == "refused":
    md += [f"The `{result['backend']}` backend cannot run here; nothing else was run:", "", "```", result["refusal"], "```", ""]
else:
    md += ["## Parity", "", "| model | images | largest difference | same top class | passed |", "|---|---|---|---|---|"]
    for p in result["parity"]:
        md.append(f"| {p['model']} | {p['images']} | {p['max_abs_diff']:.2e} | {p['same_argmax']}/{p['images']} | {'yes' if p['passed'] else '**no**'} |")
    md += ["", "## Gradients (gradient ascent: step 1 against the reference, then images x steps/s)", "",
           "| model | steps | largest difference after step 1 | images x steps / s | passed |", "|---|---|---|---|---|"]
    for g in result["gradients"]:
        md.append(f"| {g['model']} | {g['steps']} | {g['max_abs_diff_step1']:.2e} | {g['images_steps_per_s']:,.1f} | {'yes' if g['passed'] else '**no**'} |")
    md += ["", "## bench (images/s)", ""]
    for model, rows in result["bench"].items():
        md.append(f"- {model}: " + ", ".join(f"batch {r['batch']}: {r['images_per_s']:,.0f}" for r in rows))
    md += ["", "## Runs", "", "| run | generations | evaluations | wall time | evaluations/s | inference s | median | min |", "|---|---|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        md.append(f"| {name} | {r['generations']} | {r['evaluations']} | {r['wall_time_s']:.1f} s | {r['evaluations_per_s']:,.0f} | {r['stage_times']['inference_s']:.1f} | {r['median']:.4f} | {r['min']:.4f} |")
    md += ["", "## PyTorch eager (EfficientNet-Lite0, host input and output)", ""]
    t = result["pytorch"]
    if t and "rows" in t:
        md.append(f"- torch {t['torch']} on {t['device']}, TF32 {t['tf32']}, largest difference from ONNX Runtime CPU {t['max_abs_diff_vs_onnxruntime']}")
        md += [f"- batch {r['batch']}: {r['images_per_s']:,.1f} images/s ({r['ms_per_batch']:.2f} ms per batch)" for r in t["rows"]]
    else:
        md.append(f"- skipped: {t.get('skipped') if t else 'not run'}")
    if result.get("failed_steps"):
        md += ["", "## Failed steps", ""]
        for n, tail in result["failed_steps"].items():
            md += [f"### {n}", "", "```", tail.strip()[-800:], "```", ""]
open(os.path.join(out, "device-check.md"), "w").write("\n".join(md) + "\n")
print(result["status"])
PY
}

# A command under the step's time limit.
bounded() {
  timeout "${LIMIT:-600}" "$@"
}

finish() {
  local status
  status=$(report) || { echo "device-check: could not write the report" >&2; exit 4; }
  echo "device-check: $status; results in $out/device-check.json and $out/device-check.md" >&2
  case "$status" in
    passed) exit 0 ;;
    "parity failed") exit 1 ;;
    refused) exit 3 ;;
    *) exit 4 ;;
  esac
}

# 0. Can the backend under test run at all?
if ! step probe 120 bounded "$binary" bench --model builtin:lenet-mnist --backend "$backend" --batch 1 --seconds 0.1; then
  finish
fi

# 1. Parity against the reference backend.
parity() {
  local name=$1 model=$2; shift 2
  bounded "$binary" classify --model "$model" --json --backend "$reference" "$@" >"$work/$name-reference.jsonl" &&
  bounded "$binary" classify --model "$model" --json --backend "$backend" "$@" >"$work/$name-test.jsonl" &&
  TOL=$tolerance NAME=$name python3 - "$work/$name-reference.jsonl" "$work/$name-test.jsonl" >"$work/parity-$name.json" <<'PY'
import json, os, sys
ref = [json.loads(l) for l in open(sys.argv[1])]
got = [json.loads(l) for l in open(sys.argv[2])]
assert len(ref) == len(got) and ref, "both backends classify every image"
diff = max(abs(a - b) for r, g in zip(ref, got) for a, b in zip(r["probabilities"], g["probabilities"]))
argmax = lambda p: max(range(len(p)), key=p.__getitem__)
same = sum(argmax(r["probabilities"]) == argmax(g["probabilities"]) for r, g in zip(ref, got))
tol = float(os.environ["TOL"])
print(json.dumps({"model": os.environ["NAME"], "images": len(ref), "max_abs_diff": diff,
                  "same_argmax": same, "passed": diff <= tol and same == len(ref)}))
PY
}
step parity-lenet 120 parity lenet-mnist builtin:lenet-mnist models/lenet-mnist/samples/*.png
step parity-efficientnet-lite0 180 parity efficientnet-lite0 models/efficientnet-lite0/manifest.toml models/efficientnet-lite0/samples/*.png

# 2. Inference throughput.
step bench-lenet-mnist 120 bounded "$binary" bench --model builtin:lenet-mnist --backend "$backend" --batch "$batches" --seconds "$bench_seconds"
step bench-efficientnet-lite0 180 bounded "$binary" bench --model models/efficientnet-lite0/manifest.toml --backend "$backend" --batch "$batches" --seconds "$bench_seconds"

# 3. Whole runs.
step mnist 120 bounded "$binary" run --quiet --backend "$backend" --generations "$mnist_generations" --out "$work/mnist"
if [[ "$imagenet_generations" -gt 0 ]]; then
  step imagenet-cppn 240 bounded "$binary" run --quiet --config configs/imagenet-cppn.toml --backend "$backend" \
    --generations "$imagenet_generations" --out "$work/imagenet-cppn"
fi

# 4. PyTorch eager on the same weights (skipped, and said so, without torch).
export TORCH_BATCHES=$torch_batches WORK=$work SKIP_TORCH=$skip_torch
step torch 180 bounded "$python" - models/efficientnet-lite0/efficientnet-lite0.onnx <<'PY'
import json, os, sys, time
if os.environ["SKIP_TORCH"] == "1":
    sys.exit("skipped: --skip-torch")
try:
    import numpy as np, onnx, torch
    from onnx import numpy_helper
    import torch.nn.functional as F
except ImportError as e:
    sys.exit(f"skipped: {e}")

model = onnx.load(sys.argv[1])
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).to(device) for t in model.graph.initializer}
const = lambda name: weights[name].item() if name in weights else None
attrs = lambda node: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

def forward(x):
    values = {model.graph.input[0].name: x, **weights}
    for node in model.graph.node:
        a, i = attrs(node), [values[n] if n else None for n in node.input]
        op = node.op_type
        if op == "Conv":
            pads = a.get("pads", [0, 0, 0, 0])
            if pads[0] != pads[2] or pads[1] != pads[3]:
                i[0] = F.pad(i[0], (pads[1], pads[3], pads[0], pads[2])); pads = [0, 0, 0, 0]
            y = F.conv2d(i[0], i[1], i[2] if len(i) > 2 else None, a.get("strides", 1), pads[:2], a.get("dilations", 1), a.get("group", 1))
        elif op == "Clip":
            lo = const(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get("min")
            hi = const(node.input[2]) if len(node.input) > 2 and node.input[2] else a.get("max")
            y = torch.clamp(i[0], lo, hi)
        elif op == "Add":
            y = i[0] + i[1]
        elif op == "GlobalAveragePool":
            y = i[0].mean(dim=(2, 3), keepdim=True)
        elif op == "Flatten":
            y = torch.flatten(i[0], a.get("axis", 1))
        elif op == "Gemm":
            w = i[1].t() if a.get("transB", 0) else i[1]
            y = a.get("alpha", 1.0) * (i[0] @ w) + (a.get("beta", 1.0) * i[2] if len(i) > 2 else 0)
        else:
            sys.exit(f"skipped: operator {op} is not translated")
        values[node.output[0]] = y
    return values[model.graph.output[0].name]

shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
rng = np.random.default_rng(0)
probe = rng.standard_normal([4] + shape).astype(np.float32)
with torch.no_grad():
    ours = forward(torch.from_numpy(probe).to(device)).cpu().numpy()
diff = None
try:
    import onnxruntime as ort
    ref = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"]).run(None, {model.graph.input[0].name: probe})[0]
    soft = lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
    diff = float(np.abs(soft(ours) - soft(ref)).max())
except ImportError:
    pass
rows = []
with torch.no_grad():
    for batch in [int(b) for b in os.environ["TORCH_BATCHES"].split(",")]:
        host = torch.from_numpy(rng.standard_normal([batch] + shape).astype(np.float32))
        if device == "cuda":
            host = host.pin_memory()
        def once():
            y = forward(host.to(device, non_blocking=True)).cpu()
            return y
        for _ in range(3):
            once()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 2.0 or n < 3:
            once(); n += 1
        s = time.perf_counter() - start
        rows.append({"batch": batch, "images_per_s": n * batch / s, "ms_per_batch": 1e3 * s / n})
json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "tf32": True, "max_abs_diff_vs_onnxruntime": diff, "rows": rows},
          open(os.path.join(os.environ["WORK"], "torch.json"), "w"), indent=2)
PY

# 5. Gradients (issue 25): gradient ascent's first step with its gradients on the backend
#    under test against the reference (the ascent's gradients follow the model's backend:
#    on `cuda` the backward pass as an ONNX graph on the GPU, against the same graph on
#    ONNX Runtime's CPU; with `--backend ort-cpu`, the graph against the built-in evaluator):
#    the median, minimum and mean class probability after step 1 within --tolerance; then
#    images x steps per second from the run under test.
ascent_parity() {
  local name=$1 config=$2 steps=$3
  bounded "$binary" run --quiet --config "$config" --backend "$reference" --generations 1 \
    --out "$work/ascent-$name-reference" &&
  bounded "$binary" run --quiet --config "$config" --backend "$backend" --generations "$steps" \
    --out "$work/ascent-$name-test" &&
  TOL=$tolerance NAME=$name python3 - "$work/ascent-$name-reference" "$work/ascent-$name-test" \
    >"$work/gradient-$name.json" <<'PY'
import csv, json, os, sys
first = lambda run: next(r for r in csv.DictReader(open(os.path.join(run, "history.csv"))) if r["generation"] == "1")
ref, got = first(sys.argv[1]), first(sys.argv[2])
diff = max(abs(float(ref[k]) - float(got[k])) for k in ["median", "min", "mean"])
summary = json.load(open(os.path.join(sys.argv[2], "summary.json")))
print(json.dumps({"model": os.environ["NAME"], "steps": summary["ascent"]["steps"],
                  "images_steps_per_s": summary["ascent"]["images_steps_per_s"],
                  "max_abs_diff_step1": diff, "passed": diff <= float(os.environ["TOL"])}))
PY
}
step gradient-lenet 180 ascent_parity lenet configs/ascent/mnist-unregularised.toml "$ascent_steps"
if [[ "$imagenet_ascent_steps" -gt 0 ]]; then
  step gradient-efficientnet-lite0 300 ascent_parity efficientnet-lite0 configs/ascent/imagenet-unregularised.toml "$imagenet_ascent_steps"
fi

finish
