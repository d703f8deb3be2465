#!/usr/bin/env bash
# Downloads, here (where the package registry is reachable), the pure-Python wheels that
# scripts/gpu/run.sh installs on the lent GPU machine, which reaches no registry: ortgen's runtime
# dependencies its image may lack (sacremoses and what it imports) and pytest. Into .gpu-wheels/
# (git-ignored); carry that folder in the device call that runs scripts/gpu/run.sh.
# ONNX Runtime with CUDA comes separately: ../shared/device/prepare-ort-gpu.sh (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
  --platform any -d .gpu-wheels sacremoses click joblib pytest pluggy iniconfig packaging pygments
ls -1 .gpu-wheels
