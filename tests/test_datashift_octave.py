"""Our datashift step against Kilosort 2.5.2's whole datashift2(rez, 1) run under GNU Octave.

matlab_reference/datashift_input.py made two drifting synthetic recordings (64 channels, 20 s,
rigid and non-rigid drift) and preprocessed them with our pipeline (matlab_compat, NT = 32704,
19 batches, the last one short and padded) into proc files; ks25_datashift_reference.m ran the
ORIGINAL datashift2 on copies of them with nblocks = 5 and 1, pykilosort's detect_generic_spikes
answering its spikedetector3 mex call (mexbridge/spikedetector3.m; the only piece of ours in the
reference), into ks25_datashift.mat. Here the same proc files are regenerated (their sha256 must
match the reference input's: otherwise the references are stale) and our datashift step
(matlab_compat=True, same parameters) runs on them; we compare the detector's temporal templates,
the detections, the histograms F, dshift, yblk, iorig and the registered proc file (per-batch
sha256, and a subsample: every batch's first 2*ntbuff samples and every 211th sample).
Measured agreement: see the tests' docstrings and matlab_reference/README.md.
"""
import hashlib
import sys

import numpy as np
import pytest
import scipy.io

from pykilosort import datashift

from conftest import REFERENCE_DATA, ROOT

sys.path.insert(0, str(ROOT / "matlab_reference"))
import datashift_input  # noqa: E402

RECORDINGS = ("rigid", "nonrigid")
NBLOCKS = (5, 1)
CASES = [(rec, nb) for rec in RECORDINGS for nb in NBLOCKS]
DD = 5.0            # datashift2's depth bin (um)
DEPTH_ATOL = 1e-4   # um: float32 centre of mass of 10 projections, summed in another order


def _load(name: str) -> dict:
    path = REFERENCE_DATA / name
    assert path.is_file(), f"reference {path} is missing: run matlab_reference/run_all.sh"
    return scipy.io.loadmat(path)


@pytest.fixture(scope="module")
def reference():
    return _load("ks25_datashift_input.mat"), _load("ks25_datashift.mat")


def _ours_on(rec: str, work, inp) -> dict:
    """Our proc file of ``rec`` (checked against the reference input), then our datashift step
    with each nblocks; the results the tests compare, read before the next run replaces them."""
    ctx = datashift_input.run_ours(rec, work, stop_after="preprocess")
    digest = datashift_input.sha256_file(ctx.intermediate.proc)
    expected = str(inp[rec]["proc_sha256"][0, 0][0])
    assert digest == expected, (f"{rec}: our proc file changed ({digest[:12]} vs the reference "
                                f"input's {expected[:12]}): the references are stale, rerun "
                                "matlab_reference/run_all.sh")
    out = {}
    for nb in NBLOCKS:
        ctx = datashift_input.run_ours(rec, work, stop_after="datashift", nblocks=nb)
        it = ctx.intermediate
        proc = np.fromfile(it.proc, np.int16).reshape(-1, ctx.probe_good.Nchan)
        out[nb] = {"st0": np.asarray(it.st0), "dshift": np.asarray(it.dshift),
                   "yblk": np.asarray(it.yblk), "iorig": np.asarray(it.iorig),
                   "wTEMP": np.asarray(it.wTEMP_detector), "proc": proc,
                   "ymin": float(np.min(ctx.probe_good.yc)), "NT": ctx.params.NT,
                   "genericSpkTh": ctx.params.genericSpkTh}
    return out


@pytest.fixture(scope="module")
def ours(reference, tmp_path_factory):
    inp, _ = reference
    work = tmp_path_factory.mktemp("datashift_octave")
    return {rec: _ours_on(rec, work, inp) for rec in RECORDINGS}


def _case(reference, ours, rec, nb):
    ref = reference[1][f"{rec}_nb{nb}"][0, 0]
    return {k: ref[k] for k in ref.dtype.names}, ours[rec][nb]


def _by_time_centre(t, c):
    return np.lexsort((c, t))


def test_fixture_is_a_real_drift(reference):
    """The recordings drift (the original's dshift spans > 10 um) and the registration moves
    the data (its first batches differ from the input proc file in most samples)."""
    _, out = reference
    for rec in RECORDINGS:
        d = out[f"{rec}_nb5"][0, 0]["dshift"]
        assert np.ptp(d) > 10, (rec, np.ptp(d))
    assert out["nonrigid_nb5"][0, 0]["dshift"].shape[1] == 9     # 2*5 - 1 blocks


@pytest.mark.parametrize("rec", RECORDINGS)
def test_detector_templates_equal_octave(reference, ours, rec):
    """extractTemplatesfromSnippets' wTEMP (k-means of isolated-peak snippets, in float32).
    Measured: within 1e-6 (both cases)."""
    ref, mine = _case(reference, ours, rec, 5)
    np.testing.assert_allclose(mine["wTEMP"], ref["wTEMP"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("rec,nb", CASES)
def test_detections_equal_octave(reference, ours, rec, nb):
    """st0 as sets: the same (time, centre) pairs, the same amplitudes, kk-free batch ids, and
    depths within DEPTH_ATOL (the original's single-precision sums in Octave's order)."""
    ref, mine = _case(reference, ours, rec, nb)
    r, m = ref["st0"], mine["st0"]
    assert r.shape[0] == m.shape[0], (r.shape, m.shape)
    r = r[_by_time_centre(r[:, 0], r[:, 5])]          # [time, depth, amp, kk, batch, centre]
    m = m[_by_time_centre(m[:, 0], m[:, 4])]          # [time, depth, amp, batch, centre, group]
    np.testing.assert_array_equal(m[:, 0], r[:, 0])
    np.testing.assert_array_equal(m[:, 4], r[:, 5])
    np.testing.assert_array_equal(m[:, 2], r[:, 2])
    np.testing.assert_array_equal(m[:, 3] + 1, r[:, 4])
    np.testing.assert_allclose(m[:, 1], r[:, 1], rtol=0, atol=DEPTH_ATOL)


@pytest.mark.parametrize("rec,nb", CASES)
def test_histograms_equal_octave(reference, ours, rec, nb):
    """F (depth bins x 20 amplitude bins x batches) from our detections: identical."""
    ref, mine = _case(reference, ours, rec, nb)
    st0 = mine["st0"]
    F, _ = datashift.drift_histograms(depths=st0[:, 1], amplitudes=st0[:, 2],
                                      batches=st0[:, 3].astype(np.int64),
                                      n_batches=ref["F"].shape[2], ymin=mine["ymin"],
                                      spk_th=mine["genericSpkTh"])
    assert F.shape == ref["F"].shape
    np.testing.assert_array_equal(F, ref["F"])


@pytest.mark.parametrize("rec,nb", CASES)
def test_drift_estimate_equals_octave(reference, ours, rec, nb):
    """dshift (um), yblk (um), iorig: dshift within 1e-9 um (double sums of single correlations),
    yblk, iorig identical."""
    ref, mine = _case(reference, ours, rec, nb)
    assert mine["dshift"].shape == ref["dshift"].shape
    np.testing.assert_allclose(mine["dshift"], ref["dshift"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(mine["yblk"].ravel(), ref["yblk"].ravel(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(mine["iorig"] + 1, ref["iorig"].ravel())


def _batch_digests(proc: np.ndarray, NT: int) -> list:
    return [hashlib.sha256(np.ascontiguousarray(proc[k * NT:(k + 1) * NT]).tobytes()).hexdigest()
            for k in range(proc.shape[0] // NT)]


@pytest.mark.parametrize("rec,nb", CASES)
def test_registered_proc_equals_octave(reference, ours, rec, nb):
    """The registered proc file: within one int16 step on the subsample, on at most 1e-4 of its
    samples (float32 sums of 64 products in another order can land a value on the other side of
    a .5 rounding boundary); and most whole batches bit-identical (sha256)."""
    ref, mine = _case(reference, ours, rec, nb)
    proc, NT = mine["proc"], mine["NT"]
    rows = ref["proc_rows"].ravel().astype(np.int64) - 1
    theirs = ref["proc_sub"].astype(np.int32)
    diff = np.abs(proc[rows].astype(np.int32) - theirs)
    where = np.argwhere(diff > 1)[:5]
    assert diff.max() <= 1, f"{rec} nb{nb}: {diff.max()} steps at (row, channel) {where.tolist()}"
    assert np.mean(diff != 0) <= 1e-4, f"{rec} nb{nb}: {np.mean(diff != 0):.2e} of samples differ"
    digests = [str(d).strip() for d in ref["proc_sha256"]]
    same = np.array(_batch_digests(proc, NT)) == np.array(digests)
    assert same.size == len(digests) and np.mean(same) >= 0.5, same
