"""Sort one SpikeGLX Neuropixels recording.

    python examples/sort_spikeglx.py /data/m1/rec_g0_t0.imec0.ap.bin [/scratch/m1]

The channel count (nSavedChans, 385 = 384 + sync) and the sampling rate come from the .meta file
beside the .bin; so does the probe geometry when no probe is given.
"""
import sys
from pathlib import Path

from pykilosort import add_default_handler, run

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    bin_path = Path(sys.argv[1])
    scratch = Path(sys.argv[2]) if len(sys.argv) > 2 else bin_path.parent
    add_default_handler("INFO")
    ctx = run(bin_path, dir_path=scratch, fshigh=150)
    print(f"{ctx.spike_times.size} spikes, {(ctx.cluster_labels == 'good').sum()} good of "
          f"{ctx.cluster_labels.size} clusters; open in phy: phy template-gui "
          f"{ctx.output_dir / 'params.py'}")
