#!/usr/bin/env bash
# GPU checks as one short script (`make gpu-check`): the `gpu`-marked tests (numpy vs cupy agreement) and the
# Phase I solver benchmark on CuPy (ours vs cronos mode, same problem, same run).
# On a lent device machine without the project's environment, wheels carried in .whl/ are installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
if [ -d .whl ] && ! $PY -c "import pydantic, zarr" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import cupy; print('cupy', cupy.__version__, 'cuda available:', cupy.cuda.is_available())"
status=0
$PY -m pytest -q -m gpu -p no:cacheprovider tests/phase1 2>&1 | tee "$OUT/gpu_tests.log" || status=1
$PY benchmarks/solver.py --backend cupy --n "${GPU_BENCH_N:-50000}" --ref-iters "${GPU_BENCH_REF_ITERS:-3000}" \
  --cronos-iters "${GPU_BENCH_CRONOS_ITERS:-40}" --path-betas "${GPU_BENCH_PATH_BETAS:-6}" \
  --json "$OUT/solver_cupy.json" 2>&1 | tee "$OUT/solver_cupy.log" || status=1
exit $status
