"""Each numba twin against its slow, literal re-implementation of the CUDA code (tests/), on the
exact inputs the original MATLAB pipeline passed to the mex (matlab_reference/data/mex): real
shapes and real data, where the kernel tests use small synthetic ones."""
import numpy as np
import pytest

from pykilosort.kernels import (cluster_projections, detect_new_spikes, match_templates,
                                template_cross_correlations, template_distances, template_svd,
                                threshold_spike_pcs)
from pykilosort.kernels.svdsmall import alignment_sample

from naive_mpnu8 import mpnu8_naive
from test_kernel_clustering import mex_clustering2_reference
from test_kernel_distances import mex_distances2_reference
from test_kernel_getspikes import naive_mex_get_spikes2
from test_kernel_mpnu8 import _assert_equal_to_naive
from test_kernel_svdsmall import svd_reference
from test_kernel_thspkpc import _naive as thspkpc_naive
from test_kernel_wtw import _wtw_naive
from test_matlab_pipeline import FIXTURES, load_call


def _i32(a):
    return np.asarray(a).astype(np.int32)


def check_thspkpc(P, data, wPCA, iC):
    got = threshold_spike_pcs(data=data, wpca=wPCA, iC=_i32(iC), nt0min=int(P[4]), spk_th=P[5])
    feat, chans, times = thspkpc_naive(data, wPCA, _i32(iC), int(P[4]), P[5])
    for g, r in zip(got, (feat, chans, times)):
        np.testing.assert_array_equal(np.asarray(g), r)


def check_clustering(P, uproj, W, mu, call, iMatch, iC):
    kw = dict(uproj=uproj, W=W, mu=mu.ravel(), call=_i32(call).ravel(),
              iMatch=iMatch.astype(bool), iC=_i32(iC), lam=P[5])
    got = cluster_projections(**kw, return_costs=True)
    for name, g, r in zip(got._fields, got, mex_clustering2_reference(**kw)):
        np.testing.assert_array_equal(g, r, err_msg=name)


def check_distances(P, Ws, W, iMatch, iC, Whs, mus, mu):
    kw = dict(Ws=Ws, W=W, iMatch=iMatch.astype(bool), iC=_i32(iC), Wh=_i32(Whs), mus=mus,
              mu=mu.ravel())
    got = template_distances(**kw)
    iclust, ds = mex_distances2_reference(**kw)
    np.testing.assert_array_equal(got.iclust.ravel(order="F"), iclust)
    np.testing.assert_array_equal(got.ds.ravel(order="F"), ds)


def check_getspikes(P, data, wTEMP, iC):
    got = detect_new_spikes(data, templates=wTEMP, iC=_i32(iC), th=P[2], n_sum=int(P[13]))
    ref = naive_mex_get_spikes2(data, wTEMP, _i32(iC), P[2], int(P[13]))
    np.testing.assert_array_equal(got.snippets, ref["dWU"])
    np.testing.assert_array_equal(got.cmap, ref["cmap"])


def check_svd(P, dWU, W, iC, iW, Ka, Kb):
    nt0min = int(P[11])
    got = template_svd(dWU, W, iC=_i32(iC), iW=_i32(iW).ravel(), Ka=Ka, Kb=Kb, nt0min=nt0min)
    ref = svd_reference(dWU, W, _i32(iC), _i32(iW).ravel(), Ka, Kb, alignment_sample(nt0min))
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(np.asarray(g).ravel(), np.asarray(r).ravel())


def check_mpnu8(P, data, U, W, mu, iC, iW, UtU, iList, wPCA):
    feats = P[12]
    kw = dict(U=U, W=W, mu=mu.ravel(), iC=_i32(iC), iW=_i32(iW).ravel(), UtU=UtU.astype(bool),
              iList=_i32(iList) if feats > 1 else None, wPCA=wPCA, th=P[2], th_average=P[15],
              lam=P[7], n_rounds=int(P[3]), template_features=feats > 1, pc_features=feats > 0,
              stable_mode=P[16] > 0)
    _assert_equal_to_naive(match_templates(data, **kw), mpnu8_naive(data, **kw))


def check_wtw(P, W1, W2, UtU):
    got = template_cross_correlations(W1=W1, W2=W2, UtU=UtU)
    np.testing.assert_array_equal(got, _wtw_naive(W1, W2, UtU))


CHECKS = {"mexThSpkPC": check_thspkpc, "mexClustering2": check_clustering,
          "mexDistances2": check_distances, "mexGetSpikes2": check_getspikes,
          "mexSVDsmall2": check_svd, "mexMPnu8": check_mpnu8, "mexWtW2": check_wtw}


@pytest.mark.parametrize("stem", FIXTURES)
def test_twin_equals_literal_reference_on_captured_inputs(stem):
    name, args, _ = load_call(stem)
    CHECKS[name](np.asarray(args[0], np.float64).ravel(), *args[1:])
