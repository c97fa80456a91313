"""call_mex('spikedetector3', ...): Kilosort 2.5's mex calling convention over
detect_generic_spikes, against the literal emulation of the original (naive_spikedetector)."""
import numpy as np
import pytest

import naive_spikedetector as naive
from pykilosort.kernels import mex
from pykilosort.kernels.mex import call_mex
from test_kernel_spikedetector import SIG, Geometry, _batch, _templates

NT0MIN, SPK_TH = 20, 8.0


def _problem(rng, NT=2 * 1024 + 64 + 300, nchan=8, nrank=6, n_near=6, n_near_up=26):
    geo = Geometry(nchan, n_near, n_near_up)
    w = _templates(rng, 61, nrank)
    data = _batch(rng, geo, w, NT, n_spikes=14)
    return geo, w, data


def _args(geo, w, data):
    """As standalone_detector.m passes them: Params (double row), iC-1 / iC2-1 int32 0-based."""
    params = np.array([[data.shape[0], data.shape[1], w.shape[0], geo.iC.shape[0], w.shape[1],
                        NT0MIN, SPK_TH, geo.n_up, geo.iC2.shape[0], SIG]])
    return [params, data, w, geo.iC, geo.dist, geo.v2, geo.iC2, geo.dist2]


def _reference(geo, w, data):
    return naive.spikedetector3(data, w, geo.iC, geo.dist, geo.v2, geo.iC2, geo.dist2,
                                nt0min=NT0MIN, spk_th=SPK_TH, sig=SIG)


def test_outputs_equal_the_original_emulation(rng):
    geo, w, data = _problem(rng)
    ref = _reference(geo, w, data)
    dout, kkmax, st, cF = call_mex("spikedetector3", _args(geo, w, data))
    assert ref["counter"] >= 2  # the case detects spikes
    assert dout.dtype == np.float32 and dout.shape == (data.shape[0], geo.n_up)
    assert kkmax.dtype == np.int32 and kkmax.shape == dout.shape
    assert st.dtype == np.int32 and st.shape == (4, ref["counter"])
    assert cF.dtype == np.float32 and cF.shape == (geo.iC.shape[0], ref["counter"])
    np.testing.assert_array_equal(dout, ref["dout"])
    np.testing.assert_array_equal(kkmax, ref["kkmax"])
    order = np.lexsort((ref["st"][1], ref["st"][0]))  # atomic order -> (time, centre), ours
    np.testing.assert_array_equal(st, ref["st"][:, order])
    np.testing.assert_array_equal(cF, ref["cF"][:, order])


def test_at_most_max_spikes_first_in_time_then_centre(rng, monkeypatch):
    """The maxFR cap keeps the first spikes in (time, centre) order (the original: an arbitrary
    atomic subset); lowered here so that a small batch reaches it."""
    assert mex.SPIKEDETECTOR3_MAX_SPIKES == naive.MAXFR == 10000
    geo, w, data = _problem(rng)
    ref = _reference(geo, w, data)
    monkeypatch.setattr(mex, "SPIKEDETECTOR3_MAX_SPIKES", 3)
    _, _, st, cF = call_mex("spikedetector3", _args(geo, w, data))
    assert ref["counter"] > 3
    order = np.lexsort((ref["st"][1], ref["st"][0]))[:3]
    np.testing.assert_array_equal(st, ref["st"][:, order])
    np.testing.assert_array_equal(cF, ref["cF"][:, order])


@pytest.mark.parametrize("entry,value", [(0, 2000), (3, 5), (7, 7), (8, 10)])
def test_params_that_disagree_with_the_arrays_are_refused(rng, entry, value):
    geo, w, data = _problem(rng)
    args = _args(geo, w, data)
    args[0] = args[0].copy()
    args[0][0, entry] = value
    with pytest.raises(ValueError, match=r"Params\(%d\)" % (entry + 1)):
        call_mex("spikedetector3", args)
