"""The runnable examples end in a phy folder (compare_to_matlab.py is tested with the MATLAB
references, sort_from_spikeinterface.py's calls by test_spikeinterface_sorter.py)."""
import os
import subprocess
import sys

from pykilosort import load_sorting

from conftest import ROOT


def test_resume_example_reruns_only_what_changed(tmp_path):
    work = tmp_path / "resume"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "resume_and_reparameterise.py"),
                           str(work)], capture_output=True, text=True,
                          env={**os.environ, "PYKILOSORT_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
    assert "'export'" not in lines["first run computed"]
    assert lines["first run computed"].strip().endswith("'split_amplitude', 'cutoff']")
    assert lines["unchanged rerun computed"].strip() == "[]"
    assert lines["after AUCsplit=0.8 computed"].strip() == "['split_svd', 'split_amplitude', 'cutoff']"
    assert lines["after nSkipCov=5 computed"].strip().startswith("['whitening', 'preprocess'")
    assert load_sorting(work / "output").spike_times.size > 0
