#!/bin/bash
# Issue 28 item 3, ImageNet: EfficientNet-Lite0, CPPN (rgb: the CPPN differentiates rgb only;
# the paper's hsv otherwise), seed 1, the operator at its defaults for 150 generations, then
# evolution to the same forward-pass equivalents.
set -e
cd /work/main
B=/work/steer/pareidolia
mk() { # name generations gradient?
  sed -e 's/color_space = "hsv"/color_space = "rgb"/' -e "s/^generations = 5000/generations = $2/" \
      -e 's#"../models/#"/work/main/models/#' configs/imagenet-cppn.toml > /work/steer/imagenet/$1.toml
  if [ "$3" = 1 ]; then printf '\n[search.gradient]\n' >> /work/steer/imagenet/$1.toml; fi
}
mk operator 150 1
[ -f /work/steer/imagenet/operator/summary.json ] || nice -n 5 $B run --quiet --config /work/steer/imagenet/operator.toml --out /work/steer/imagenet/operator > /work/steer/imagenet/operator.log 2>&1
fe=$(tail -1 /work/steer/imagenet/operator/history.csv | awk -F, '{print $16}')
gens=$(( (fe - 400 + 399) / 400 ))
mk evolution $gens 0
[ -f /work/steer/imagenet/evolution/summary.json ] || nice -n 5 $B run --quiet --config /work/steer/imagenet/evolution.toml --out /work/steer/imagenet/evolution > /work/steer/imagenet/evolution.log 2>&1
echo done
