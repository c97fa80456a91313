#!/usr/bin/env bash
# The virtual environment of bench_peers.py: pykilosort (editable, from this checkout) and its
# peers at pinned versions. Kilosort4 runs on the CPU build of torch (never an unpinned torch:
# it pulls gigabytes of CUDA packages). On a GPU machine install a CUDA torch 2.13.0 instead.
#     benchmarks/peers_env.sh /path/to/venv
set -euo pipefail
venv=${1:?usage: benchmarks/peers_env.sh VENV}
root=$(cd "$(dirname "$0")/.." && pwd)
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e "$root"
"$venv/bin/pip" install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
  || "$venv/bin/pip" install -q "torch==2.13.0"
"$venv/bin/pip" install -q "spikeinterface==0.105.3" "kilosort==4.1.7" "mountainsort5==0.5.9" \
  "hdbscan==0.8.44" "psutil" "matplotlib" "pandas"
"$venv/bin/python" -c "import spikeinterface.sorters as ss; print('installed sorters:', ss.installed_sorters())"
