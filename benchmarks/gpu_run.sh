#!/bin/bash
# One device session for the "cuda" backend: the GPU tests (each FAILED test named as it happens), where a
# step's time goes (cuda_probe.py), then the benchmark against cuDNN and the issue's targets on it
# (benchmarks/targets.py); each step has its own time limit
# (200 + 120 + 200 s by default, under the device's 600 s a command).
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
# -v: one line per finished test, so a failure is named even when the time limit cuts pytest off
timeout "${TEST_S:-200}" python3 -m pytest -v -rf -n "${WORKERS:-16}" -p no:cacheprovider tests/test_cuda.py tests/test_backends.py tests/test_torch.py -k "${TEST_K:-cuda}" > "$OUT/tests.log" 2>&1
echo "== tests: $(grep -c ' PASSED ' "$OUT/tests.log") passed, $(grep -c ' SKIPPED ' "$OUT/tests.log") skipped"
grep -E " (FAILED|ERROR) " "$OUT/tests.log" | head -20
if [ "${PROBE_S:-120}" != 0 ]; then
    timeout "${PROBE_S:-120}" python3 benchmarks/cuda_probe.py --json "$OUT/probe.json" > "$OUT/probe.log" 2>&1
    echo "== probe"; grep -v -e Warning -e "^{" "$OUT/probe.log" | tail -n 24
fi
# fastrnn bench on the grid of benchmarks/compare_cuda.py; it writes cuda-bench.{json,csv,md,*.png} to $OUT
if [ "${BENCH_S:-200}" != 0 ]; then
    timeout "${BENCH_S:-200}" python3 benchmarks/compare_cuda.py --out-dir "$OUT" --name cuda-bench -v --budget-s "${BUDGET_S:-170}" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
    echo "== bench"; grep "^|" "$OUT/cuda-bench.md" 2>/dev/null || grep -v Warning "$OUT/bench.log" | tail -n 30
    # last: where the run stands against the issue's targets (3x cuDNN at B <= 64, H <= 512, ...)
    [ -f "$OUT/cuda-bench.json" ] && echo "== targets" && python3 benchmarks/targets.py "$OUT/cuda-bench.json"
fi
