#!/usr/bin/env bash
# One prepared run on a lent CUDA machine, well under 10 minutes: the CUDA tests, then benchmarks/gpu_checks.py
# (SAM/SGD step ratio, resident vs DataLoader ResNet-18 epoch, bf16 / channels-last / torch.compile smoke checks,
# the mnist-mlp paper budget's projected time, Hessian products on CUDA). Results go to $OUT (or /tmp/gpu-results):
# gpu_results.json, gpu_results.md, and the logs. Run from the repository root:  bash benchmarks/gpu.sh
# The machine's python3 must hold torch; missing pure-Python dependencies (pydantic, …) can come as wheels in
# .whl/ (installed into /tmp/site, put on PYTHONPATH). --cpu-dry-run runs the Python part on the CPU at toy sizes.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
DRY=""
if [[ "${1:-}" == "--cpu-dry-run" ]]; then DRY="--cpu-dry-run"; fi

if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/gpu_env.txt"

status=0
if [[ -z "$DRY" ]]; then
  # the CUDA subset of the tests (about a minute)
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$OUT/gpu_tests.txt" \
    || status=1
fi
# the measurements (each section fails alone; about 4 minutes on an H200)
timeout 420 "$PY" benchmarks/gpu_checks.py $DRY --out "$OUT" 2>&1 | tee "$OUT/gpu_checks.txt" || status=1
echo "results in $OUT (exit $status)"
exit $status
