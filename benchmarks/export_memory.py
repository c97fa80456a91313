"""Peak resident memory of the export alone (phy folder + rez.mat) from a finished context, for
comparing two checkouts on the same context (issue 12, item 3; results/README.md "Scaling").

    python benchmarks/export_memory.py CODE_ROOT CONTEXT_DIR OUT_DIR

CODE_ROOT: the checkout whose pykilosort is imported (a git worktree of another commit, say);
CONTEXT_DIR: a run's dir_path after run(..., stop_after="cutoff"). Prints the spike count, the
resident memory with the context loaded and the peak through the export (ru_maxrss).
"""
import resource
import sys
import time

sys.path.insert(0, sys.argv[1])

import numpy as np  # noqa: E402

from pykilosort.context import load_context  # noqa: E402
from pykilosort.export import write_phy, write_rez_mat  # noqa: E402

ctx = load_context(sys.argv[2])
n = np.asarray(ctx.intermediate.st3).size
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
write_phy(ctx, sys.argv[3])
write_rez_mat(ctx, sys.argv[3] + "/rez.mat")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{sys.argv[1]}: spikes {n}, RSS with the context loaded {before:.0f} MiB, peak {peak:.0f} MiB, "
      f"export {time.perf_counter() - t0:.1f} s")
