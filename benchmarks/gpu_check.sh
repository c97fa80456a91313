#!/usr/bin/env bash
# The one prepared GPU check (about 8 minutes on an H200; see benchmarks/README.md):
#   1. the gpu-marked tests on the real device (every .cu kernel against its numba twin, the
#      captured MATLAB calls, run(device="cuda") against device="cpu");
#   2. benchmarks/gpu_check.py: a 384-channel, 60 s recording sorted on cuda and on cpu: per-step
#      x real time, peak GPU memory, spikes in common.
# Uses the machine's python3 (numpy, scipy, numba, cupy, pytest) with this checkout on
# PYTHONPATH: nothing is installed. Results go to $OUT (the device tool's folder) or
# benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
# Only pykilosort on the path, not the checkout: its top-level cuda/ folder would hide the
# `cuda` package CuPy imports (so pytest runs from tests/, and `python -m` adds that folder).
site=$(mktemp -d) && ln -s "$PWD/pykilosort" "$site/pykilosort"
export PYTHONPATH=$site PYKILOSORT_PROGRESS=0 PYTHONUNBUFFERED=1 PYKILOSORT_CUDA_CPU=0
(cd "$site" && python3 -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0") || { echo "no GPU"; exit 2; }
(cd tests && timeout ${GPU_TESTS_S:-210} python3 -m pytest -q -p no:cacheprovider -m gpu \
    test_kernel_*.py test_kernels_*.py test_matlab_pipeline.py test_cuda_path.py) 2>&1 \
    | tee "$out/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout ${GPU_BENCH_S:-280} python3 benchmarks/gpu_check.py --duration ${GPU_DURATION:-30} \
    --out "$out/gpu_check_$(date +%Y-%m-%d).json" 2>&1 | tee "$out/gpu_check.log"
exit $(( tests_rc || PIPESTATUS[0] ))
