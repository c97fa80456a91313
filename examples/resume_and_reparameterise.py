"""Resuming: a second run reuses every step whose inputs did not change.

    python examples/resume_and_reparameterise.py [workdir]

Generates a small synthetic recording, sorts it into a phy folder (work/output), then changes
parameters: only the steps that read them, and the steps after them, run again. Kill the first run (Ctrl-C) and rerun to see it
continue at the step it was in.
"""
import sys
from pathlib import Path

from pykilosort import add_default_handler, load_context, make_synthetic_recording, run

if __name__ == "__main__":
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "resume_example")
    add_default_handler("INFO")
    rec = make_synthetic_recording(work / "rec.bin", n_channels=32, n_units=10, duration_s=20, seed=1)
    first = run(rec.bin_path, probe=rec.probe, dir_path=work)
    print("first run computed:", first.steps_run)
    again = run(rec.bin_path, probe=rec.probe, dir_path=work)
    print("unchanged rerun computed:", again.steps_run)          # []
    changed = run(rec.bin_path, probe=rec.probe, dir_path=work, AUCsplit=0.8)
    print("after AUCsplit=0.8 computed:", changed.steps_run)  # ['split_svd', 'split_amplitude', 'cutoff']
    changed = run(rec.bin_path, probe=rec.probe, dir_path=work, AUCsplit=0.8, nSkipCov=5)
    print("after nSkipCov=5 computed:", changed.steps_run)    # 'whitening' and every step after it
    ctx = load_context(work)
    print("whitening matrix:", ctx.intermediate.Wrot.shape, "; good units:",
          (ctx.cluster_labels == "good").sum(), "; phy folder:", work / "output")
