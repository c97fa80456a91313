"""Full-size synthetic mex calls (arguments in MATLAB's convention, Params first).

mexMPnu8 on a batch of v2.0's size (NT = 64*1024 + ntbuff = 65600) with 32 channels and 128
rank-3 templates of 61 samples, Params laid out as trackAndSort.m builds them (v2.0, lines
71-81): [NT Nfilt Th nInnerIter nt0 Nnearest Nrank lam pm Nchan NchanNear nt0min flag Nsum
NrankPC Th_average useStableMode]. The "holes" batch has NT = 64*1024 - 64, for which the
original's 1024-thread geometry leaves ~900 start times unexamined (MouseLand/Kilosort#594), and
has extra spikes planted there.

Kilosort 2.5's spikedetector3 (standalone_detector.m) on a batch of v2.5's size (NT = 65472 +
ntbuff = 65536) of a 64-channel Neuropixels-like probe, the detector geometry of
pykilosort.detector.setup_detector, and on short batches (a partial tile; fewer than 1024
samples, where the original launches no score or spike block).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pykilosort.kernels.mpnu8 import scan_ranges
from pykilosort.neighbours import get_closest_channels

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
# shared with the kernel tests
from template_problems import generic_temporal_templates, random_templates  # noqa: E402

NT_V20 = 64 * 1024 + 64    # ops.NT of v2.0's configFile384.m (64*1024 + ntbuff)
NT_HOLES = 64 * 1024 - 64  # the batch size of MouseLand/Kilosort#594


@dataclass
class SyntheticCall:
    name: str          # the mex
    args: list         # MATLAB arguments, Params first
    notes: dict = field(default_factory=dict)


def _add_spikes(data, kw, spikes):
    nt0 = kw["W"].shape[0]
    for t, f, a in spikes:
        data[t:t + nt0] += a * np.einsum("tk,ck->tc", kw["W"][:, f], kw["U"][:, f])


def mpnu8_call(*, seed=11, NT=NT_V20, nchan=32, nfilt=128, nt0=61, nrank=3, n_spikes=1100,
               noise=1.0, th=6.0, th_average=8.0, lam=10.0, n_rounds=60, stable=True,
               features=2, hole_spikes=0) -> SyntheticCall:
    """A mexMPnu8 call on noise plus ``n_spikes`` template spikes at random times (overlaps
    included), plus ``hole_spikes`` large spikes at start times the 1024-thread geometry does
    not examine (notes['hole'] = that range, notes['hole_st'] = their start times)."""
    rng = np.random.default_rng(seed)
    nnear = min(nchan, 32)  # NchanNear = Nnearest = min(Nchan, 32) in v2.0
    kw = random_templates(rng, nchan=nchan, nfilt=nfilt, nt0=nt0, nnear=nnear, nrank=nrank)
    data = noise * rng.standard_normal((NT, nchan))
    spikes = [(int(rng.integers(0, NT - nt0)), int(f), float(kw["mu"][f] * rng.uniform(0.6, 1.4)))
              for f in rng.integers(0, nfilt, n_spikes)]
    r = scan_ranges(NT=NT, nt0=nt0)
    hole = (r.conv_end, r.score_end)  # start times never convolved by the first timeFilter
    hole_st = []
    if hole_spikes:
        hole_st = list(np.linspace(hole[0] + 2 * nt0, hole[1] - 2 * nt0, hole_spikes).astype(int))
        spikes += [(t, int(f), 1.2 * float(kw["mu"][f])) for t, f in
                   zip(hole_st, rng.integers(0, nfilt, hole_spikes))]
    _add_spikes(data, kw, spikes)
    data = np.asfortranarray(data, np.float32)
    iList = np.argsort(-kw["overlap"], axis=0, kind="stable")[:nnear].astype(np.int32)
    pm = np.exp(-1 / 20)
    params = np.array([[NT, nfilt, th, n_rounds, nt0, nnear, nrank, lam, pm, nchan, nnear, 20,
                        features, min(nchan, 7), 3, th_average, 1.0 if stable else 0.0]])
    col = lambda a: np.asarray(a).reshape(-1, 1)  # noqa: E731  (MATLAB column vectors)
    args = [params, data, kw["U"], kw["W"], col(kw["mu"]), kw["iC"], col(kw["iW"]),
            kw["UtU"].astype(np.uint8), iList, kw["wPCA"]]
    notes = {"planted": len(spikes), "hole": hole, "hole_st": hole_st}
    return SyntheticCall("mexMPnu8", args, notes)


def _batch(seed=5, NT=NT_V20, nchan=32, nfilt=64, nt0=61, n_spikes=900):
    """(data, templates) of a whitened-like batch for the detection mex files."""
    rng = np.random.default_rng(seed)
    kw = random_templates(rng, nchan=nchan, nfilt=nfilt, nt0=nt0, nnear=min(nchan, 32), nrank=3)
    data = rng.standard_normal((NT, nchan))
    _add_spikes(data, kw, [(int(rng.integers(0, NT - nt0)), int(f), float(kw["mu"][f]))
                           for f in rng.integers(0, nfilt, n_spikes)])
    return np.asfortranarray(data, np.float32), kw, rng


def _closest(nchan, n):
    xc, yc = np.tile([0.0, 32.0], nchan)[:nchan], np.arange(nchan) * 20.0
    return get_closest_channels(xc=xc, yc=yc, sigma_mask=30.0, n_closest=n)[0].astype(np.int32)


def thspkpc_call(seed=5) -> SyntheticCall:
    """extractPCbatch2.m: Params = [NT Nchan NchanNear nt0 nt0min spkTh NrankPC], NchanNear 17."""
    data, kw, rng = _batch(seed)
    nchan, nnear, nt0 = data.shape[1], 17, 61
    wPCA = np.linalg.qr(kw["W"][:, :8, 0])[0][:, :3].astype(np.float32)
    params = np.array([[data.shape[0], nchan, nnear, nt0, 20, 8.0, 3]], np.float64)
    return SyntheticCall("mexThSpkPC", [params, data, wPCA, _closest(nchan, nnear)])


def getspikes2_call(seed=6) -> SyntheticCall:
    """learnTemplates.m, first batch: wTEMP (nt0, 6), NchanNear 32, Th(1), Nsum 7, NrankPC 6."""
    data, kw, rng = _batch(seed)
    nchan, nt0 = data.shape[1], 61
    wTEMP = np.linalg.qr(kw["W"][:, :12, 0])[0][:, :6].astype(np.float32)
    params = np.array([[data.shape[0], 0, 8.0, 60, nt0, 32, 3, 10.0, np.exp(-1 / 20), nchan, 32,
                        20, 0, 7, 6, 8.0, 1]], np.float64)
    return SyntheticCall("mexGetSpikes2", [params, data, wTEMP, _closest(nchan, 32)])


def svdsmall2_call(seed=7, nfilt=128) -> SyntheticCall:
    """learnTemplates.m: dWU (nt0, Nchan, Nfilt) double sums of snippets, W (nt0, Nfilt, 3)."""
    from pykilosort.upsampling import get_kernels

    rng = np.random.default_rng(seed)
    nchan, nt0 = 32, 61
    kw = random_templates(rng, nchan=nchan, nfilt=nfilt, nt0=nt0, nnear=32, nrank=3)
    wave = np.einsum("tfk,cfk->tcf", kw["W"].astype(np.float64), kw["U"].astype(np.float64))
    dWU = np.asfortranarray(wave * kw["mu"] * 30 + rng.standard_normal(wave.shape) * 3)
    W0 = np.asfortranarray(kw["W"].astype(np.float64) + 0.1 * rng.standard_normal(kw["W"].shape))
    Ka, Kb = get_kernels(nt0=nt0, nt0min=20)
    params = np.array([[65600, nfilt, 10, 60, nt0, 32, 3, 10, np.exp(-1 / 20), nchan, 32, 20, 0,
                        7, 6, 10, 1]], np.float64)
    return SyntheticCall("mexSVDsmall2", [params, dWU, W0, _closest(nchan, 32),
                                          kw["iW"].reshape(-1, 1), Ka, Kb])


def wtw2_call(seed=8, nfilt=128) -> SyntheticCall:
    """getMeWtW.m: Params = [1 Nfilt 0 0 0 0 0 0 0 nt0], UtU as single."""
    rng = np.random.default_rng(seed)
    kw = random_templates(rng, nchan=32, nfilt=nfilt, nt0=61, nnear=32, nrank=3)
    params = np.array([[1, nfilt, 0, 0, 0, 0, 0, 0, 0, 61]], np.float64)
    W1, W2 = (np.asfortranarray(kw["W"][:, :, k]) for k in (0, 1))
    return SyntheticCall("mexWtW2", [params, W1, W2, kw["UtU"].astype(np.float32)])


def _clusters(rng, nchan, nfilt, nrankpc=3, nnear=17):
    iC = _closest(nchan, nnear)
    heights = rng.integers(0, nchan, nfilt)  # Wheights: main channel of each cluster
    W = np.zeros((nrankpc, nchan, nfilt), np.float32)
    for f, h in enumerate(heights):
        W[:, iC[:, h], f] = rng.standard_normal((nrankpc, nnear))
    W /= np.sqrt((W ** 2).sum((0, 1)))
    mu = rng.uniform(5, 15, nfilt).astype(np.float32)
    iMatch = (np.abs(iC[:, :, None] - heights[None, None, :]).min(0) < 0.1)  # (Nchan, Nfilt)
    return iC, heights, W, mu, iMatch


def clustering2_call(seed=9, nspikes=6000, nfilt=64) -> SyntheticCall:
    """clusterSingleBatches.m: uproj (NrankPC*NchanNear, Nspikes), W (NrankPC*Nchan, Nfilt)."""
    rng = np.random.default_rng(seed)
    nchan, nnear = 32, 17
    iC, heights, W, mu, iMatch = _clusters(rng, nchan, nfilt, nnear=nnear)
    call = rng.integers(0, nchan, nspikes).astype(np.int32)
    uproj = (rng.standard_normal((3 * nnear, nspikes)) * 4).astype(np.float32)
    params = np.array([[nspikes, 3, nfilt, 0, 3 * nchan, 10.0, nnear, nchan]], np.float64)
    return SyntheticCall("mexClustering2", [params, uproj, W.reshape(3 * nchan, nfilt, order="F"),
                                            mu.reshape(1, -1), call.reshape(-1, 1),
                                            iMatch.astype(np.uint8), iC])


def distances2_call(seed=10, nfilt=64, nbatch=40) -> SyntheticCall:
    """clusterSingleBatches.m: Ws (NrankPC, NchanNear, Nfilt, Nbatch), Params(1) = Nfilt*Nbatch."""
    rng = np.random.default_rng(seed)
    nchan, nnear = 32, 17
    iC, heights, W, mu, iMatch = _clusters(rng, nchan, nfilt, nnear=nnear)
    Whs = rng.integers(0, nchan, (nfilt, nbatch)).astype(np.int32)
    Ws = rng.standard_normal((3, nnear, nfilt, nbatch)).astype(np.float32)
    Ws /= np.sqrt((Ws ** 2).sum((0, 1)))
    mus = rng.uniform(5, 15, (nfilt, nbatch)).astype(np.float32)
    params = np.array([[nfilt * nbatch, 3, nfilt, 0, 3, 0, nnear, nchan]], np.float64)
    return SyntheticCall("mexDistances2", [params, np.asfortranarray(Ws), W,
                                           iMatch.astype(np.uint8), iC, Whs, mus, mu.reshape(-1, 1)])


# ------------------------------------------------------------------ Kilosort 2.5: spikedetector3
# v2.5.2: configFile384.m's ops.NT = 64*1024 - ntbuff (65472); get_batch reads NT + ntbuff
NT_KS25 = 64 * 1024 - 64 + 64
NT_KS25_SHORT = 4 * 1024 + 64 + 300  # a partial last tile and a tail past the filtered range
NT_KS25_NO_BLOCKS = 1000  # < 1024: sumChannels / maxChannels get a 0-block grid (not launched)


def _unit_spikes(rng, xc, yc, NT, nt0, n_spikes, amp):
    """(data (NT, Nchan) float64 of rank-one spikes, their count): each spike a temporal shape
    (not one of the detector's prototypes: real spikes never match them exactly) at a random time
    times exp(-d / lambda) of the 3-D distance from a random point near the probe, peak channel
    amplitude uniform in ``amp``."""
    shapes = generic_temporal_templates(rng, nt0, 8).astype(np.float64)
    shapes /= -shapes.min(0)  # trough -1
    data = np.zeros((NT, xc.size))
    for _ in range(n_spikes):
        x, y = rng.uniform(xc.min() - 10, xc.max() + 10), rng.uniform(yc.min(), yc.max())
        d = np.sqrt((xc - x) ** 2 + (yc - y) ** 2 + rng.uniform(5, 25) ** 2)
        gain = np.exp(-d / rng.uniform(14, 20))
        gain *= rng.uniform(*amp) / gain.max()
        t = int(rng.integers(0, NT - nt0))
        data[t:t + nt0] += np.outer(shapes[:, rng.integers(shapes.shape[1])], gain)
    return data


def spikedetector3_call(*, seed=12, NT=NT_KS25, nchan=64, n_spikes=500, nt0=61, nrank=6,
                        nt0min=20, spk_th=8.0, sig=10.0, amp=(6.0, 30.0)) -> SyntheticCall:
    """standalone_detector.m (v2.5.2) on one whitened-like batch: unit-variance noise plus
    ``n_spikes`` spikes on a Neuropixels-like probe (pykilosort.synthetic.synthetic_probe), the
    detector geometry of setup_detector (iC, dist, iC2, dist2, v2 as the MATLAB code builds
    them), wTEMP-like prototypes (nt0 x 6). datashift2.m's spkTh = 8, nt0min 20, sig 10."""
    from pykilosort.detector import setup_detector
    from pykilosort.synthetic import synthetic_probe

    rng = np.random.default_rng(seed)
    probe = synthetic_probe(n_channels=nchan)
    det = setup_detector(xc=probe.xc, yc=probe.yc, sig=sig)
    wTEMP = generic_temporal_templates(rng, nt0, nrank)
    data = rng.standard_normal((NT, nchan)) + _unit_spikes(rng, np.asarray(probe.xc),
                                                           np.asarray(probe.yc), NT, nt0,
                                                           n_spikes, amp)
    n_near, n_up = det.iC.shape
    params = np.array([[NT, nchan, nt0, n_near, nrank, nt0min, spk_th, n_up, det.iC2.shape[0],
                        sig]], np.float64)
    args = [params, np.asfortranarray(data, np.float32), wTEMP, det.iC, det.dist, det.v2,
            det.iC2, det.dist2]
    return SyntheticCall("spikedetector3", args, {"planted": n_spikes, "NchanUp": n_up})
