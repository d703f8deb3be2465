#!/usr/bin/env bash
# The whole GPU run in one device call: ONNX Runtime with CUDA, the CUDA tests (tests/gpu), the GPU
# benchmark (`ortgen bench --device cuda`, float16 packages, transformers float16 as the baseline).
# Writes under $OUT: env.txt, gpu-tests.txt, bench-<model>/bench.{json,md} per model, run.log.
#
# Before it (docs/gpu.md): the onnxruntime-gpu wheel joined at /tmp/ort.whl on the same warm machine
# (../shared/device/prepare-ort-gpu.sh, one carried part per call) and .gpu-wheels/ carried
# (scripts/gpu/fetch-wheels.sh). Then, from the repository root:
#   bash scripts/gpu/run.sh [MODELS] [WORKLOADS]      (defaults: biogpt-base,biogpt-large  W1,W2,W3,C1,C3)
# ORTGEN_GPU_DRY_RUN=1 runs the same stages on the CPU with tiny models (checks this script anywhere).
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder the results go to}"
models=${1:-biogpt-base,biogpt-large}
workloads=${2:-W1,W2,W3,C1,C3}
dry=${ORTGEN_GPU_DRY_RUN:-}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
export PYTHONUNBUFFERED=1
site=/tmp/ortgen-gpu-site
started=$(date +%s)
stage() { echo "== $(( $(date +%s) - started ))s: $*"; }

if [ -z "$dry" ]; then
  stage "installing onnxruntime-gpu and the carried wheels into $site"
  wheel=$(ls /tmp/onnxruntime_gpu-*.whl 2>/dev/null | head -1)
  if [ -z "$wheel" ]; then
    [ -f /tmp/ort.whl ] || { echo "no /tmp/ort.whl: join the onnxruntime-gpu wheel first (docs/gpu.md)"; exit 2; }
    wheel=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
    cp /tmp/ort.whl "$wheel"
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheel" .gpu-wheels/*.whl || exit 2
  export PYTHONPATH="$site:$PWD/src:$PWD"
  device=cuda
  bench_extra=(--repeats 3)
else
  stage "dry run on the CPU"
  export PYTHONPATH="$PWD/src:$PWD"
  device=cpu
  bench_extra=(--quick --repeats 1)
fi

stage "environment"
{
  python3 -c "import onnxruntime as o, torch, transformers; print('onnxruntime', o.__version__, o.get_available_providers()); print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''); print('transformers', transformers.__version__)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  git log -1 --format='ortgen commit %H' 2>/dev/null || true
} | tee "$OUT/env.txt"
if [ -z "$dry" ] && ! python3 -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
  echo "onnxruntime has no CUDAExecutionProvider here: stopping"; exit 2
fi

stage "CUDA tests (tests/gpu)"
timeout 240 python3 -m pytest -q -s -p no:cacheprovider -m gpu tests/gpu -o addopts="" 2>&1 | tee "$OUT/gpu-tests.txt"
tests_status=${PIPESTATUS[0]}

# one bench run per model, each writing its own report as soon as it is done, so that a model the
# time runs out on costs only its own results; no plots (the device returns at most 8 files)
deadline=$(( $(date +%s) + ${ORTGEN_GPU_BENCH_SECONDS:-420} ))
bench_status=0
for model in ${models//,/ }; do
  left=$(( deadline - $(date +%s) ))
  if [ "$left" -le 30 ]; then echo "no time left for $model"; bench_status=1; break; fi
  stage "benchmark: $model, $workloads (${left}s left)"
  timeout "$left" python3 -m ortgen bench --device "$device" --models "$model" --workloads "$workloads" \
    --weights float16 --systems transformers,ortgen-graph,ortgen-engine --no-memory \
    --workdir /tmp/ortgen-bench-work --out "$OUT/bench-$model" "${bench_extra[@]}" || bench_status=1
  rm -f "$OUT/bench-$model/bench.png"
done

stage "done: tests exit $tests_status, bench exit $bench_status"
[ "$tests_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
