#!/usr/bin/env bash
# Regenerate every reference: inputs from our generator, then the original code under Octave.
#   matlab_reference/run_all.sh KILOSORT_V2_0_CHECKOUT KILOSORT_V2_5_2_CHECKOUT [WORK_DIR]
# Needs: octave, octave-signal (Debian packages), and pykilosort importable by python3 (or by
# $MEX_BRIDGE_PYTHON, which the mex stand-ins call).
set -euo pipefail
ks20=$(realpath "$1"); ks25=$(realpath "$2"); work=${3:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/recipe.py" "$work/inputs" > /dev/null
cp "$work/inputs/inputs.json" "$here/data/inputs.json"
octave --no-gui --quiet --eval "addpath('$here'); ks2_reference('$ks20', '$work/inputs', '$here/data')"
octave --no-gui --quiet --eval "addpath('$here'); ks25_reference('$ks25', '$work/inputs', '$here/data')"
octave --no-gui --quiet --eval "addpath('$here'); random_reference('$here/data')"
octave --no-gui --quiet --eval "addpath('$here'); ks2_templates_reference('$ks20', '$here/data')"
octave --no-gui --quiet --eval "addpath('$here'); ks25_align_reference('$ks25', '$here/data')"
# shift_batch_on_disk2 over a proc file our pipeline wrote (shift_input.py: rec32, seeded drifts);
# interp1's 'makima' from shims_makima/ (this driver only)
"${MEX_BRIDGE_PYTHON:-python3}" "$here/shift_input.py" "$work/shift" "$here/data/ks25_shift_input.mat"
octave --no-gui --quiet --eval "addpath('$here'); ks25_shift_reference('$ks25', '$here/data/ks25_shift_input.mat', '$here/data')"
# the whole datashift2 (v2.5.2) over proc files our pipeline wrote from two drifting recordings
# (datashift_input.py), our detect_generic_spikes answering spikedetector3 (~5 min)
"${MEX_BRIDGE_PYTHON:-python3}" "$here/datashift_input.py" "$work/datashift" "$here/data/ks25_datashift_input.mat"
MEX_BRIDGE_PYTHON=${MEX_BRIDGE_PYTHON:-python3} OPENBLAS_NUM_THREADS=1 octave --no-gui --quiet --eval \
  "addpath('$here'); ks25_datashift_reference('$ks25', '$here/data/ks25_datashift_input.mat', '$here/data')"
# the whole v2.0 pipeline with pykilosort's kernels standing in for the mex files (~4 min):
# captured mex calls in data/mex, final rez fields in data/ks2_pipeline_rec32.mat
# (one BLAS thread: OpenBLAS's threaded sums are not reproducible from run to run)
mkdir -p "$here/data/mex"
export OPENBLAS_NUM_THREADS=1
MEX_BRIDGE_PYTHON=${MEX_BRIDGE_PYTHON:-python3} MEX_CAPTURE_DIR="$here/data/mex" \
  octave --no-gui --quiet --eval "addpath('$here'); ks2_mex_capture('$ks20', '$work/inputs', '$here/data')"
# post-processing and rezToPhy (~3 min): on the capture run's rez, and on our learn output of
# rec32pp perturbed so that merges and splits happen (postprocess_input.py)
"${MEX_BRIDGE_PYTHON:-python3}" "$here/postprocess_input.py" "$work/pp" "$here/data/ks2_postprocess_input.mat"
for tag in rec32:ks2_capture_rez_rec32 pp:ks2_postprocess_input; do
  for v in "2.0:$ks20" "2.5.2:$ks25"; do
    MEX_BRIDGE_PYTHON=${MEX_BRIDGE_PYTHON:-python3} octave --no-gui --quiet --eval \
      "addpath('$here'); ks2_postprocess_reference('${v#*:}', '${v%%:*}', '$here/data/${tag#*:}.mat', '$here/data', '${tag%%:*}')"
  done
done
octave --version | head -1 > "$here/data/octave_version.txt"
echo "references written to $here/data"
