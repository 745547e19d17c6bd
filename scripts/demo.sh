#!/usr/bin/env bash
# The whole job on the 28 sample photos in examples/pets: set up, extract, fit both heads.
# Uses the ImageNet weights; if they cannot be downloaded (an offline machine), it says so
# and continues with random weights, whose accuracy means nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet -e .
# shellcheck disable=SC1091
. .venv/bin/activate
mkdir -p demo
store=demo/features.h5
if ! extract-features examples/pets -o "$store" 2> >(tee demo/extract.log >&2); then
  if grep -q "Could not get the ImageNet VGG16 weights" demo/extract.log; then
    echo "demo: ImageNet weights unavailable; continuing with RANDOM weights (--weights none)." \
         "Accuracy below is meaningless." >&2
    store=demo/features-random-weights.h5
    extract-features examples/pets -o "$store" --weights none
  else
    exit 1
  fi
fi
fit-head --features "$store" --model both -o demo/heads
