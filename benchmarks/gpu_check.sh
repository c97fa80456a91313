#!/usr/bin/env bash
# The one prepared GPU check (about 6 minutes on an H200; see benchmarks/README.md):
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
export PYTHONPATH=$PWD PYKILOSORT_PROGRESS=0 PYTHONUNBUFFERED=1 PYKILOSORT_CUDA_CPU=0
python3 -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0" || { echo "no GPU"; exit 2; }
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu -x --timeout 200 \
    tests/test_kernel_*.py tests/test_kernels_*.py tests/test_matlab_pipeline.py \
    tests/test_cuda_path.py 2>&1 | tee "$out/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 300 python3 benchmarks/gpu_check.py --out "$out/gpu_check_$(date +%Y-%m-%d).json" \
    2>&1 | tee "$out/gpu_check.log"
exit $(( tests_rc || PIPESTATUS[0] ))
