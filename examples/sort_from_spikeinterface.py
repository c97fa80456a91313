"""Sort a SpikeInterface recording with pykilosort and score it against its ground truth.

    python examples/sort_from_spikeinterface.py [workdir] [--duration 60] [--channels 32]

``register()`` makes ``run_sorter("pykilosort", ...)`` run this package (SpikeInterface's own
``pykilosort`` wrapper targets another fork and fails in 0.105). Any recording works: one that is
not a flat binary file is written to ``<folder>/sorter_output/recording.dat`` first. The phy folder
is ``<folder>/sorter_output/output``.
"""
import argparse
from pathlib import Path

import spikeinterface.full as si

from pykilosort.spikeinterface_sorter import register

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("workdir", nargs="?", default="si_example")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--units", type=int, default=10)
    args = ap.parse_args()
    register()
    recording, truth = si.generate_ground_truth_recording(
        durations=[args.duration], num_channels=args.channels, num_units=args.units, seed=0)
    sorting = si.run_sorter("pykilosort", recording, folder=Path(args.workdir) / "pykilosort",
                            remove_existing_folder=True, device="auto")
    comparison = si.compare_sorter_to_ground_truth(truth, sorting, exhaustive_gt=True)
    print(comparison.get_performance()[["accuracy", "recall", "precision"]].round(3))
    print(f"{comparison.count_well_detected_units(0.8)} of {args.units} units with accuracy >= 0.8; "
          f"{comparison.count_false_positive_units()} false-positive, "
          f"{comparison.count_redundant_units()} redundant units; "
          f"phy folder: {Path(args.workdir) / 'pykilosort' / 'sorter_output' / 'output'}")
