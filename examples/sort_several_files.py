"""Sort several recordings of one session as one, concatenated in time in the order given.

    python examples/sort_several_files.py --probe neuropixels1 --n-channels 385 a.bin b.bin c.bin
"""
import argparse

from pykilosort import add_default_handler, run

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--probe", required=True)
    ap.add_argument("--n-channels", type=int, required=True)
    ap.add_argument("--dir", default=None, help="folder for intermediates and output/")
    args = ap.parse_args()
    add_default_handler("INFO")
    ctx = run(args.files, probe=args.probe, n_channels=args.n_channels, dir_path=args.dir)
    print(f"{ctx.raw_data}: {ctx.spike_times.size} spikes; phy folder {ctx.output_dir}")
