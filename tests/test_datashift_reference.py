"""Our proc-file registration (datashift.shift_matrix + shift_batch) against Kilosort 2.5.2's
shift_batch_on_disk2 run under GNU Octave over a whole proc file.

matlab_reference/shift_input.py wrote ks25_shift_input.mat: a proc file of our pipeline (rec32,
KS2.5 geometry, 7 batches of NT = 1984, the last padded) and seeded drifts (rigid: one value per
batch; non-rigid: 9 block centres); ks25_shift_reference.m registered it with the original, batch
after batch as datashift2's loop does (dprev from zeros), into ks25_shift.mat. Measured: M within
2e-15 relative, per-channel makima drifts within 9e-15 um, the registered proc file identical but
for 1 sample in 888832 (one step, a float32 sum landing on a .5 tie in one summation order and not
in the other).
"""
import numpy as np
import pytest

from pykilosort import datashift
from pykilosort.makima import makima

from conftest import load_reference

CASES = {"rigid": ("dshift_rigid", "yblk_rigid"), "nonrigid": ("dshift", "yblk")}


_load = load_reference


@pytest.fixture(scope="module")
def ref():
    return _load("ks25_shift_input.mat"), _load("ks25_shift.mat")


def _geometry(inp: dict) -> dict:
    return dict(NT=int(inp["NT"].item()), ntbuff=int(inp["ntbuff"].item()),
                Nbatch=int(inp["Nbatch"].item()))


def _drift(inp: dict, case: str):
    dshift_key, yblk_key = CASES[case]
    return inp[dshift_key], inp[yblk_key].ravel()


def _our_matrix(inp: dict, *, shifts, ysamp) -> np.ndarray:
    return datashift.shift_matrix(xc=inp["xc"].ravel(), yc=inp["yc"].ravel(), shifts=shifts,
                                  ysamp=ysamp, sig=float(inp["sig"].item()))


def _register(inp: dict, *, case: str) -> np.ndarray:
    """Our registration of the whole proc file, batch by batch with the dprev chain."""
    g = _geometry(inp)
    NT, ntb = g["NT"], g["ntbuff"]
    dshift, yblk = _drift(inp, case)
    proc = inp["proc"]
    dprev = np.zeros((ntb, proc.shape[1]), np.float32)  # datashift2: gpuArray.zeros(ntbuff, Nchan)
    out = []
    for b in range(g["Nbatch"]):
        M = _our_matrix(inp, shifts=dshift[b], ysamp=yblk)
        # NT + ntbuff samples from the batch start, NT for the last (the file ends there)
        batch = proc[b * NT:(b + 1) * NT + ntb]
        shifted, dprev = datashift.shift_batch(batch=batch, M=M, dprev=dprev, NT=NT, ntbuff=ntb)
        out.append(shifted)
    return np.concatenate(out)


def test_fixture_is_a_real_registration(ref):
    """The drifts move the data: the original's output differs from its input by many steps
    (so agreement below is not agreement on an identity), and the last batch has no tail."""
    inp, out = ref
    g = _geometry(inp)
    assert inp["proc"].shape[0] == g["NT"] * g["Nbatch"] and g["Nbatch"] >= 3
    assert np.abs(inp["dshift"]).max() > 10 and np.abs(inp["dshift_rigid"]).max() > 10
    for case in CASES:
        moved = out[f"proc_{case}"].astype(np.int32) - inp["proc"]
        assert np.mean(moved != 0) > 0.5


def test_makima_drifts_per_channel_equal_octave(ref):
    """shift_batch_on_disk2's interp1(yblk, dshift, yc, 'makima', 'extrap') (the shims_makima
    stand-in under Octave) against pykilosort.makima, and against scipy's makima as a third,
    independent implementation. Measured: 8.9e-15 and 1.4e-14 um."""
    from scipy.interpolate import Akima1DInterpolator

    inp, out = ref
    dshift, yblk = _drift(inp, "nonrigid")
    yc = inp["yc"].ravel()
    theirs = out["shifts_nonrigid"]
    assert yc.min() < yblk.min() and yc.max() > yblk.max()   # the 'extrap' ends are exercised
    for b in range(_geometry(inp)["Nbatch"]):
        ours = makima(x=yblk, y=dshift[b], xq=yc)
        np.testing.assert_allclose(ours, theirs[:, b], rtol=0, atol=1e-12)
        scipy_makima = Akima1DInterpolator(yblk, dshift[b], method="makima", extrapolate=True)
        np.testing.assert_allclose(scipy_makima(yc), theirs[:, b], rtol=0, atol=1e-12)
    # rigid: no interpolation, every channel moves by the batch's one value
    np.testing.assert_array_equal(out["shifts_rigid"],
                                  np.broadcast_to(inp["dshift_rigid"].T, out["shifts_rigid"].shape))


@pytest.mark.parametrize("case", CASES)
def test_kriging_matrix_equals_octave(ref, case):
    """M = Kyx / (Kxx + .01 I) of every batch. Measured: 1.9e-15 of max|M| (double precision;
    LAPACK solves in another order)."""
    inp, out = ref
    dshift, yblk = _drift(inp, case)
    for b in range(_geometry(inp)["Nbatch"]):
        theirs = out[f"M_{case}"][:, :, b]
        ours = _our_matrix(inp, shifts=dshift[b], ysamp=yblk)
        assert np.abs(ours - theirs).max() <= 1e-12 * np.abs(theirs).max(), (case, b)


@pytest.mark.parametrize("case", CASES)
def test_registered_proc_file_equals_octave(ref, case):
    """The whole registered proc file: within one int16 step, and differing on at most 1e-4 of
    the samples (float32 sums of 32 products in another order can put a value on the other side
    of a rounding boundary). Measured: rigid 1 sample of 444416 (1-based batch 5, sample 1951,
    channel 9: exactly -279.5 in numpy's float32 order, hence -280; -279 from Octave), non-rigid
    identical."""
    inp, out = ref
    theirs = out[f"proc_{case}"].astype(np.int32)
    ours = _register(inp, case=case).astype(np.int32)
    assert ours.shape == theirs.shape
    diff = np.abs(ours - theirs)
    where = np.argwhere(diff > 1)[:5]
    assert diff.max() <= 1, f"{case}: {diff.max()} steps at (sample, channel) {where.tolist()}"
    assert np.mean(diff != 0) <= 1e-4, f"{case}: {np.mean(diff != 0):.2e} of samples differ"
