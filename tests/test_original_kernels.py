"""The ORIGINAL Kilosort2 v2.0 mex kernels, compiled for the CPU from a user's checkout, against
our ``call_mex`` (the numba twins behind the mex calling convention).

Set KILOSORT2_CHECKOUT to a Kilosort v2.0 checkout (the folder holding CUDA/mexMPnu8.cu), and
KILOSORT25_CHECKOUT to a Kilosort 2.5 one for spikedetector3; without them these tests are skipped. No Kilosort source is stored in this repository: the .cu
files are read from the checkout, translated (matlab_reference/original_kernels/translate.py)
and run on the CUDA-on-CPU executor; each mexFunction's host sequence is replayed in Python.

Tolerances: identical, except where the original's own order of operations is not the twin's
and the test says why. The executor evaluates the kernels' float operations in C++ order
without contraction (no FMA) and the twins reproduce that order, so the captured calls (all in
stable mode) must agree bit for bit; spikes the original returns in its atomics order are
compared as sets (compare.align). In fast mode the original sums dWU0 in discovery order, ours
in time order: dWU0 within 1e-12 of max|dWU0| and identical once the original sums in time order.
The full-size batches and the FMA build are in compare.py (minutes), not here.
"""
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "matlab_reference"))

from original_kernels import compare, quicksort, synthetic, translate  # noqa: E402
from original_kernels.executor import ExecutorUnavailable, executor  # noqa: E402
from original_kernels.hosts import run_mexSVDsmall2  # noqa: E402

CHECKOUT = os.environ.get("KILOSORT2_CHECKOUT", "")
CAPTURED = sorted(p.stem for p in compare.MEX_DATA.glob("mex*.mat"))


def _skip_reason(checkout=CHECKOUT, env="KILOSORT2_CHECKOUT", version="v2.0",
                 marker="mexMPnu8.cu", what="kernels"):
    """Why the original-kernel tests cannot run here (None: they can)."""
    if not checkout:
        return (f"{env} is not set: point it at a Kilosort {version} checkout (the folder "
                f"holding CUDA/{marker}) to compare the original {what} with call_mex")
    if not (Path(checkout) / "CUDA" / marker).is_file():
        return f"{env}={checkout} has no CUDA/{marker}"
    if shutil.which("g++") is None:
        return "no g++: the CUDA-on-CPU executor compiles the kernels with g++"
    try:
        executor()
    except ExecutorUnavailable as e:
        return str(e)
    return None


needs_checkout = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


# ------------------------------------------------------------------ translation
@needs_checkout
@pytest.mark.parametrize("mex", translate.MEX_FILES)
def test_translation_keeps_lines_and_only_kernels(mex):
    text = translate.source_path(CHECKOUT, mex).read_text()
    code = translate.kernels_only(text, mex)
    assert code.count("\n") == text.count("\n")  # compiler lines = the original's lines
    live = translate._without_comments(code)
    assert "mexFunction" not in live and "<<<" not in live and "cudaMalloc" not in live
    names = translate.kernel_names(code)
    assert names and len(names) == len(set(names))
    assert len(names) == translate._without_comments(text).count("__global__")


@needs_checkout
def test_lockstep_barrier_is_needed_and_sufficient():
    """mexSVDsmall2's reNormalize sums sS[0..Nrank-1] in thread 0 without a barrier after
    threads 1.. wrote them (warp lockstep on a GPU). Run one thread at a time without the
    inserted barrier, thread 0 reads unwritten (poisoned) shared memory: mu is NaN. With it,
    mu is the value the GPU gives (test_captured_call_identical checks it against ours)."""
    _, args = compare.load_captured("mexSVDsmall2_1")
    bad = run_mexSVDsmall2(CHECKOUT, args, lockstep=False).outputs[2]
    good = run_mexSVDsmall2(CHECKOUT, args).outputs[2]
    assert np.isnan(bad).all() and np.isfinite(good).all()


# ------------------------------------------------------------------ captured MATLAB calls
@needs_checkout
@pytest.mark.parametrize("stem", CAPTURED)
def test_captured_call_identical(stem):
    name, args = compare.load_captured(stem)
    row = compare.compare_case(compare.Case(stem, name, args, "captured"), CHECKOUT)
    assert not row["rejected_launches"]
    if "spikes" in row:
        sp = row["spikes"]
        assert sp["orig"] == sp["ours"] == sp.get("common", sp["orig"]) > 0, sp
    for out, d in row["outputs"].items():
        assert d["exact"], f"{stem} {out}: {d}"
        assert d["nan_orig"] == d["nan_ours"] == 0, f"{stem} {out}: NaN (read of unwritten memory?)"
    assert compare.verdict(row) == "identical"


# ------------------------------------------------------------------ fast mode
@needs_checkout
def test_fast_mode_differs_only_by_the_dwu_summation_order():
    """A small batch in fast mode (float atomics; dWU0 summed in discovery order): everything
    identical but dWU0, which is identical once the original sums in time order."""
    call = synthetic.mpnu8_call(NT=8 * 1024 + 64, nchan=16, nfilt=24, n_spikes=300, stable=False,
                                n_rounds=12)
    row = compare.compare_case(compare.Case("fast", call.name, call.args, "synthetic"), CHECKOUT)
    sp = row["spikes"]
    assert sp["orig"] == sp["ours"] == sp["common"] > 200
    assert row["rounds_with_spikes"] >= 2 and not row["same_order"]  # several rounds: orders differ
    for out, d in row["outputs"].items():
        if out != "dWU0":
            assert d["exact"], f"{out}: {d}"
    d = row["outputs"]["dWU0"]
    assert d["exact"] or d["rel"] <= compare.FAST_DWU_REL
    if not d["exact"]:
        assert row["dWU0_time_ordered"]["exact"]
    assert not compare.verdict(row).startswith("FINDING")


# ------------------------------------------------------------------ Kilosort 2.5: spikedetector3
CHECKOUT_KS25 = os.environ.get("KILOSORT25_CHECKOUT", "")


def _skip_reason_ks25():
    return _skip_reason(CHECKOUT_KS25, "KILOSORT25_CHECKOUT", "2.5", "spikedetector3.cu",
                        "detector")


@pytest.mark.skipif(_skip_reason_ks25() is not None, reason=_skip_reason_ks25() or "")
@pytest.mark.parametrize("nt", [synthetic.NT_KS25_SHORT, synthetic.NT_KS25_NO_BLOCKS])
def test_spikedetector3_short_batches_identical(nt):
    """Short batches (a partial tile and a tail; < 1024 samples: no score block launched) of a
    64-channel probe: every output identical in the unfused build, spikes as sets."""
    call = synthetic.spikedetector3_call(NT=nt, n_spikes=40)
    row = compare.compare_case(compare.Case("short", call.name, call.args, "synthetic"),
                               CHECKOUT_KS25)
    assert compare.verdict(row) == "identical", row
    sp = row["spikes"]
    assert sp["orig"] == sp["ours"] == sp["common"]
    assert sp["orig"] > 10 if nt > 1024 else sp["orig"] == 0


# ------------------------------------------------------------------ host-side quicksort
def test_host_quicksort_sorts_and_keeps_pairs():
    """cdp_simple_quicksort redone on the host (no checkout needed): sorted values, idx a
    permutation that carries each value, and both paths (partition, selection sort) taken."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 40, 300).astype(np.uint32)  # many ties, as spike times across rounds
    before = data.copy()
    idx = np.arange(300, dtype=np.uint32)
    quicksort.cdp_simple_quicksort(data, idx, 0, 299, 0, max_depth=16, insertion_sort=32)
    assert np.all(np.diff(data.astype(int)) >= 0)
    assert np.array_equal(np.sort(idx), np.arange(300)) and np.array_equal(before[idx], data)
    small = np.array([5, 3, 3, 1], np.uint32)
    sidx = np.arange(4, dtype=np.uint32)
    quicksort.selection_sort(small, sidx, 0, 3)
    assert small.tolist() == [1, 3, 3, 5] and sidx.tolist() == [3, 1, 2, 0]
