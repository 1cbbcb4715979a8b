#!/usr/bin/env bash
# GPU checks as one short script (`make gpu-check`): the `gpu`-marked tests (numpy vs cupy agreement), the
# Phase I solver benchmark on CuPy (ours vs cronos mode, same problem, same run), and `coala train` on a feature
# store with configs/gpu.yaml, which must run Phase I on the device without a backend setting.
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
# Only the test files that hold `gpu` tests: the device's image has no prefect/mlflow, which other test modules
# of tests/engine import at collection.
GPU_TEST_FILES=$(grep -l "mark.gpu\|marks=pytest.mark.gpu" tests/phase1/*.py tests/engine/*.py | grep -v conftest)
grep -q "marks=pytest.mark.gpu" tests/phase1/conftest.py && GPU_TEST_FILES="tests/phase1 $(echo "$GPU_TEST_FILES" | grep -v '^tests/phase1/')"
$PY -m pytest -q -m gpu -p no:cacheprovider $GPU_TEST_FILES 2>&1 | tee "$OUT/gpu_tests.log" || status=1
$PY benchmarks/solver.py --backend cupy --n "${GPU_BENCH_N:-50000}" --ref-iters "${GPU_BENCH_REF_ITERS:-3000}" \
  --cronos-iters "${GPU_BENCH_CRONOS_ITERS:-40}" --path-betas "${GPU_BENCH_PATH_BETAS:-6}" \
  --json "$OUT/solver_cupy.json" 2>&1 | tee "$OUT/solver_cupy.log" || status=1
# `coala train` on a feature store on the device, with no backend setting (phase1.backend: auto must pick cupy):
# a carried store (GPU_TRAIN_STORE + GPU_TRAIN_PAIRS, e.g. the bundled data's features made on the CPU and
# carried with the working tree) or, when none is given, a synthetic one of GPU_TRAIN_ROWS pairs x 576.
STORE=${GPU_TRAIN_STORE:-}
PAIRS=${GPU_TRAIN_PAIRS:-}
if [ -z "$STORE" ] || [ ! -e "$STORE" ]; then
  STORE="$OUT/train_store.zarr"; PAIRS="$OUT/train_pairs.parquet"
  $PY -c "import sys; sys.path.insert(0, 'benchmarks'); from memory import synthetic_store, synthetic_pairs; \
n = int(sys.argv[3]); synthetic_store(sys.argv[1], n, 576); synthetic_pairs(sys.argv[2], n)" \
    "$STORE" "$PAIRS" "${GPU_TRAIN_ROWS:-20000}" || status=1
fi
$PY -c "import sys; from coala_cli.main import app; sys.argv[0] = 'coala'; app()" train --features "$STORE" \
  --pairs "$PAIRS" --output "$OUT/head" --config configs/gpu.yaml 2>&1 | tee "$OUT/train_gpu.log" || status=1
$PY - "$OUT/head/head.json" <<'PY' 2>&1 | tee -a "$OUT/train_gpu.log" || status=1
import json, sys
meta = json.load(open(sys.argv[1]))
backend = meta["training"]["phase1_summary"].get("backend")
print("coala train: Phase I backend", backend, "validation accuracy", meta["metrics"].get("val_accuracy"))
sys.exit(0 if backend == "cupy" else 1)
PY
rm -rf "$OUT/train_store.zarr"
exit $status
