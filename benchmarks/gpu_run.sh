#!/bin/bash
# One device session for the "cuda" backend: GPU tests, then the benchmark against cuDNN; the table last.
#   bash benchmarks/gpu_run.sh            (on the GPU machine, from the repository root)
# The device image's numpy breaks numba.cuda: a carried numpy wheel (.whl/) is installed first.
set -u
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl && export PYTHONPATH=$PWD/.site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import numpy, numba, numba_cuda, cupy, torch; print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__)"
timeout "${TEST_S:-240}" python3 -m pytest -q -n "${WORKERS:-16}" -p no:cacheprovider tests/test_cuda.py tests/test_backends.py -k "${TEST_K:-cuda}" 2>&1 | tee "$OUT/tests.log" | tail -"${TEST_LINES:-30}"
# fastrnn bench on the grid of benchmarks/compare_cuda.py; it writes cuda-bench.{json,csv,md,*.png} to $OUT and
# prints each row as it finishes (-v) and the table at the end
timeout "${BENCH_S:-300}" python3 benchmarks/compare_cuda.py --out-dir "$OUT" --name cuda-bench --budget-s "${BUDGET_S:-200}" -v ${BENCH_ARGS:-}
