#!/usr/bin/env bash
# One lease on a lent GPU machine: the kernel tests compiled for the GPU, then the GPU benchmark
# sections. Usage (from the repository root): bash bench/gpu_session.sh [tests] [bench SECTIONS]
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import jax, sys; print('jax', jax.__version__, jax.devices(), sys.version.split()[0])"
while [ $# -gt 0 ]; do
  case "$1" in
    tests) timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels --devices=gpu \
             -x -k "gpu or not cpu" 2>&1 | tee "$OUT/tests.log" | tail -25; shift ;;
    bench) timeout 420 python3 bench/kernels.py --only "$2" 2>&1 | tee "$OUT/bench-${2//,/_}.log" \
             | grep -v "^\s*$"; cp bench/results/*.json "$OUT"/ 2>/dev/null; shift 2 ;;
    *) echo "unknown step $1"; shift ;;
  esac
done
