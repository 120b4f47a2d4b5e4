#!/usr/bin/env bash
# One prepared run on a lent CUDA machine, within 9 minutes of wall time including every internal timeout
# (install 45 s + CUDA tests 120 s + checks 360 s + summary 15 s = 540 s at most):
#   1. the Python dependencies other than torch, installed offline from .gpu-wheels/ (`make gpu-wheels` fills it;
#      only the modules the machine's python3 lacks are installed, into /tmp/site);
#   2. the CUDA tests (pytest -m cuda tests/test_cuda.py);
#   3. benchmarks/gpu_checks.py: SAM/SGD step ratio, resident data vs DataLoader, precision smoke checks, the
#      mnist-mlp projection one by one and with the ensemble, Hessian products, train_run under highest / tf32 /
#      bf16 / fp16+GradScaler, CUDA checkpoint save and resume, ensemble vs one-by-one, a pool with 2 runs on one GPU;
#   4. gpu_summary.json: environment, test counts, each section's status and the headline numbers.
# Results go to $OUT (or /tmp/gpu-results). The machine's python3 ($PYTHON) must hold torch with CUDA.
#   bash benchmarks/gpu.sh                 on the GPU machine, from anywhere
#   bash benchmarks/gpu.sh --cpu-dry-run   everything on the CPU at toy sizes (the tests run this)
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
DRY=""
if [[ "${1:-}" == "--cpu-dry-run" ]]; then DRY="--cpu-dry-run"; fi
WHEELS="${GPU_WHEELS:-.gpu-wheels}"
export PYTHONUNBUFFERED=1

# 1. dependencies: import name → wheel name, installed only when missing
missing=()
for pair in pydantic:pydantic yaml:PyYAML pandas:pandas tqdm:tqdm PIL:pillow pytest:pytest pytest_timeout:pytest-timeout; do
  "$PY" -c "import ${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if (( ${#missing[@]} )); then
  if [[ -d "$WHEELS" ]]; then
    timeout 45 "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-compile --no-cache-dir --target /tmp/site \
      "${missing[@]}" 2>&1 | tail -3 && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "missing ${missing[*]} and no $WHEELS/ (run: make gpu-wheels, and carry $WHEELS)"
  fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/gpu_env.txt"

status=0
# 2. the CUDA tests (skipped, one by one, without a GPU: the dry run checks that they collect)
timeout 120 "$PY" -m pytest -o addopts= -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$OUT/gpu_tests.txt" \
  || { [[ -n "$DRY" ]] || status=1; }
# 3. the measurements (each section fails alone; sections that would not fit are skipped)
timeout 360 "$PY" benchmarks/gpu_checks.py $DRY --budget-s 330 --out "$OUT" 2>&1 | tee "$OUT/gpu_checks.txt" || status=1
# 4. one summary
timeout 15 "$PY" benchmarks/gpu_summary.py "$OUT" $status | tee "$OUT/gpu_summary.txt" || status=1
echo "results in $OUT (exit $status)"
exit $status
