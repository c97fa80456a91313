"""Post-processing and the phy export against the original Kilosort2 v2.0 and v2.5.2 under Octave.

``ks2_postprocess_reference.m`` ran the original find_merges, splitAllClusters, set_cutoff,
(get_good_units) and rezToPhy on two saved rez:

- ``pp``: our learn output on rec32pp, perturbed to hold a neuron split over two templates and
  two neurons in one template (matlab_reference/postprocess_input.py), so merges and splits happen;
- ``rec32``: the capture run's rez (the original v2.0 pipeline on rec32, tests/test_matlab_pipeline).

Our step functions run on the same rez with ``matlab_compat=True`` and must give the same merges,
splits, cutoffs, labels and phy files (see matlab_reference/README.md for the tolerances).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io

from pykilosort import postprocess
from pykilosort.correlograms import ccg
from pykilosort.export import PHY_FILES, write_phy
from pykilosort.params import resolve_params
from pykilosort.probes import Probe
from pykilosort.utils import Bunch

from conftest import REFERENCE_DATA

DATA = REFERENCE_DATA
REL = {"W": 1e-5, "U": 1e-6, "mu": 1e-6, "dWU": 1e-6, "simScore": 1e-6}  # measured: README
_DTYPES = {"double": np.float64, "single": np.float32, "uint32": np.uint32, "uint64": np.uint64,
           "int32": np.int32, "logical": np.bool_}
VERSIONS = {"2.0": "ks2", "2.5.2": "ks25"}
CASES = [("pp", "ks2_postprocess_input.mat"), ("rec32", "ks2_capture_rez_rec32.mat")]


def _load(name):
    path = DATA / name
    assert path.is_file(), f"reference {path} is missing: run matlab_reference/run_all.sh"
    return scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)


def _field(s, name):
    return np.asarray(getattr(s, name))


def _fake_ctx(rez, *, ks25: bool, compat: bool = True):
    """A Context stand-in holding a MATLAB rez (0-based, records) for our step functions."""
    ops = rez.ops[0, 0]
    scalar = lambda k: float(_field(ops, k).item())  # noqa: E731
    params = resolve_params(fs=scalar("fs"), Th=_field(ops, "Th").ravel().tolist(),
                            AUCsplit=scalar("AUCsplit"), sigmaMask=scalar("sigmaMask"),
                            nt0=int(scalar("nt0")), scaleproc=scalar("scaleproc"),
                            matlab_compat=compat, drift_correction=ks25)
    st3 = _field(rez, "st3")
    records = np.empty(st3.shape[0], [("time", np.int64), ("template", np.int32),
                                      ("amplitude", np.float32), ("vexp", np.float32),
                                      ("batch", np.int32)])
    records["time"], records["template"] = st3[:, 0], st3[:, 1] - 1
    records["amplitude"], records["vexp"], records["batch"] = st3[:, 2], st3[:, 3], st3[:, 4] - 1
    xc, yc = _field(rez, "xc").ravel(), _field(rez, "yc").ravel()
    chan_map = _field(ops, "chanMap").ravel().astype(np.int64) - 1
    probe = Probe(NchanTOT=int(scalar("NchanTOT")), chanMap=chan_map, xc=xc, yc=yc)
    it = Bunch(st3=records, cProj=_field(rez, "cProj"), cProjPC=_field(rez, "cProjPC"),
               dWU=_field(rez, "dWU"), W=_field(rez, "W"), U=_field(rez, "U"),
               mu=_field(rez, "mu").ravel(), simScore=_field(rez, "simScore"),
               iNeigh=_field(rez, "iNeigh") - 1, iNeighPC=_field(rez, "iNeighPC") - 1,
               Wrot=_field(rez, "Wrot"), wPCA=_field(ops, "wPCA"), proc=Path("temp_wh.dat"))
    fbinary = str(np.asarray(ops.fbinary).item())
    return SimpleNamespace(params=params, intermediate=it, probe_good=probe,
                           derived=SimpleNamespace(nt0min=int(scalar("nt0min")), ks25=ks25),
                           raw_data=SimpleNamespace(paths=[Path(fbinary)], n_channels=probe.NchanTOT,
                                                    dtype=np.dtype("int16")))


def _run_steps(ctx, steps) -> dict:
    """Run our step functions in order, as the pipeline does; returns each step's outputs."""
    outputs = {}
    for name in steps:
        out = getattr(postprocess, f"{name}_step")(ctx)
        ctx.intermediate.update(out)
        outputs[name] = out
    return outputs


def _steps(version):
    if version == "2.0":
        return ["merges", "split_svd", "split_amplitude", "cutoff"]
    return ["merges", "split_svd", "cutoff", "good_units"]


@pytest.fixture(scope="module", params=[(c, v) for c in CASES for v in VERSIONS])
def case(request, tmp_path_factory):
    (tag, input_name), version = request.param
    rez = _load(input_name)["rez"][0, 0]
    ref = _load(f"{VERSIONS[version]}_post_{tag}.mat")
    ctx = _fake_ctx(rez, ks25=version == "2.5.2")
    outputs = _run_steps(ctx, _steps(version))
    phy = write_phy(ctx, tmp_path_factory.mktemp("phy"))
    return SimpleNamespace(tag=tag, version=version, rez=rez, ref=ref, ctx=ctx, out=outputs,
                           phy=phy, ref_phy=DATA / f"{VERSIONS[version]}_phy_{tag}")


def test_ccg_identical(case):
    """ccg's counts and scores, bit for bit (erf agrees too on these inputs)."""
    c = case.ref["ccg"][0, 0]
    st3 = _field(case.rez, "st3")
    fs = float(_field(case.rez.ops[0, 0], "fs").item())
    for i, (a, b) in enumerate(_field(c, "pairs").astype(int)):
        r = ccg(st3[st3[:, 1] == a, 0] / fs, st3[st3[:, 1] == b, 0] / fs)
        np.testing.assert_array_equal(r.K, _field(c, "K")[:, i])
        np.testing.assert_array_equal(r.Qi, _field(c, "Qi")[:, i])
        np.testing.assert_array_equal(r.Ri, _field(c, "Ri")[:, i])
        assert (r.Q00, r.Q01) == (_field(c, "Q00")[0, i], _field(c, "Q01")[0, i])


def test_merges_identical(case):
    ours = case.out["merges"]["st3"]["template"] + 1
    np.testing.assert_array_equal(ours, case.ref["merges_st3"][:, 1])
    if case.tag == "pp":  # the merge bait (a neuron dealt to two templates) is merged back
        assert len(case.out["merges"]["merges"]) >= 1


def _compare_split(ours: dict, ref, what: str):
    np.testing.assert_array_equal(ours["st3"]["template"] + 1, _field(ref, "st3")[:, 1], what)
    for name, rel in REL.items():
        a, b = np.asarray(ours[name], np.float64), _field(ref, name).astype(np.float64)
        b = b.reshape(a.shape) if b.size == a.size else b
        assert a.shape == b.shape, f"{what} {name}: {a.shape} vs {b.shape}"
        assert np.abs(a - b).max() <= rel * np.abs(b).max(), f"{what} {name}"
    assert_same_order_up_to_ties(ours["iNeigh"] + 1, _field(ref, "iNeigh"),
                                 np.asarray(ours["simScore"]), what + " iNeigh", one_based=True)
    np.testing.assert_array_equal(ours["iNeighPC"] + 1, _field(ref, "iNeighPC"), what)
    np.testing.assert_array_equal(ours["isplit"], _field(ref, "isplit").astype(bool), what)


def assert_same_order_up_to_ties(ours, ref, sim, what: str, *, one_based: bool, rtol=1e-6):
    """ours, ref: (k, n) template indices, column j sorted by sim[:, j] (descending): equal, except
    that templates whose similarities to j are equal within rtol (x the column's largest) may
    trade places. Such near-ties fall either way with the last bits of the similarities, which
    numpy's and BLAS's kernels round differently on different CPUs (AMD EPYC against the Intel
    Xeon that made the reference: two neighbours swapped)."""
    ours, ref = np.asarray(ours, np.int64), np.asarray(ref, np.int64)
    assert ours.shape == ref.shape, f"{what}: {ours.shape} vs {ref.shape}"
    off = 1 if one_based else 0
    for j in np.flatnonzero((ours != ref).any(axis=0)):
        col = sim[:, j]
        a, b = col[ours[:, j] - off], col[ref[:, j] - off]
        tol = rtol * np.abs(col).max()
        assert np.abs(a - b).max() <= tol, (
            f"{what}: column {j} orders {ours[:, j].tolist()} vs {ref[:, j].tolist()}, not a tie")


def test_order_up_to_ties_accepts_only_swaps_of_equal_similarities():
    sim = np.array([[1.0, 0.5], [0.7, 1.0], [0.7 + 1e-9, 0.2]])  # sim[:, j]: similarity to j
    ref = np.array([[0, 1], [2, 0], [1, 2]])                      # column j sorted by sim[:, j]
    assert_same_order_up_to_ties(ref.copy(), ref, sim, "same", one_based=False)
    tie = np.array([[0, 1], [1, 0], [2, 2]])                      # 1 and 2 tie for column 0
    assert_same_order_up_to_ties(tie, ref, sim, "tie", one_based=False)
    wrong = np.array([[0, 0], [2, 1], [1, 2]])                    # column 1: 0.5 and 1.0 swapped
    with pytest.raises(AssertionError, match="not a tie"):
        assert_same_order_up_to_ties(wrong, ref, sim, "wrong", one_based=False)


def test_splits_identical(case):
    _compare_split(case.out["split_svd"], case.ref["split_svd"][0, 0], "split_svd")
    if case.version == "2.0":
        _compare_split(case.out["split_amplitude"], case.ref["split_amplitude"][0, 0],
                       "split_amplitude")
    if case.tag == "pp":  # the split bait (two neurons in one template) is split
        assert len(case.out["split_svd"]["splits"]) >= 1


def test_amplitude_split_alone_identical(case):
    """splitAllClusters(rez, 0) right after the merges, where it has clusters to split."""
    ctx = _fake_ctx(case.rez, ks25=case.version == "2.5.2")
    ctx.intermediate.update(case.out["merges"])
    ours = postprocess.split_amplitude_step(ctx)
    _compare_split(ours, case.ref["split_mean_only"][0, 0], "split_mean_only")
    if case.tag == "pp":
        assert len(ours["splits"]) >= 1


def test_cutoff_identical(case):
    ref = case.ref["cutoff"][0, 0]
    ours = case.out["cutoff"]
    st3 = _field(ref, "st3")
    np.testing.assert_array_equal(ours["st3"]["time"], st3[:, 0])
    np.testing.assert_array_equal(ours["st3"]["template"] + 1, st3[:, 1])
    np.testing.assert_array_equal(ours["good"], _field(ref, "good").ravel() > 0)
    np.testing.assert_array_equal(ours["Ths"], _field(ref, "Ths").ravel())
    np.testing.assert_allclose(ours["est_contam_rate"], _field(ref, "est_contam_rate").ravel(),
                               rtol=1e-12, atol=0)
    if case.version == "2.5.2":
        np.testing.assert_array_equal(case.out["good_units"]["good"],
                                      case.ref["good_units"].ravel() > 0)


def _npy_vs_reference(path: Path, ref_mat: Path):
    r = scipy.io.loadmat(ref_mat)
    ours = np.load(path)
    expected_dtype = _DTYPES[str(r["cls"][0])]
    assert ours.dtype == expected_dtype, f"{path.name}: {ours.dtype} vs MATLAB {r['cls'][0]}"
    assert ours.shape == tuple(r["sz"].ravel().astype(int)), f"{path.name}: shape"
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        _, fortran, _ = np.lib.format.read_array_header_1_0(f)
    assert fortran, f"{path.name}: npy-matlab writes Fortran order"
    if "sha256" in r:
        digest = hashlib.sha256(np.asfortranarray(ours).tobytes(order="F")).hexdigest()
        assert digest == str(r["sha256"][0]), f"{path.name}: content differs"
        return
    theirs = r["value"].reshape(ours.shape)
    if ours.dtype.kind == "f":
        scale = max(np.abs(theirs).max(), 1e-30)
        assert np.abs(ours - theirs).max() <= 1e-5 * scale, f"{path.name}: values differ"
    else:
        np.testing.assert_array_equal(ours, theirs, path.name)


def test_phy_files_identical(case):
    """Every file rezToPhy writes: npy dtype, shape, order and values; tsv text; params.py."""
    for name in PHY_FILES:
        ours, ref = case.phy / name, case.ref_phy / name
        if name == "template_feature_ind.npy":  # iNeigh': near-ties may swap (see above)
            theirs = scipy.io.loadmat(str(ref) + ".mat")["value"]
            sim = np.load(case.phy / "similar_templates.npy").astype(np.float64)
            assert_same_order_up_to_ties(np.load(ours).T, theirs.T, sim, name, one_based=False)
        elif name.endswith(".npy"):
            _npy_vs_reference(ours, Path(str(ref) + ".mat"))
        elif name == "params.py":
            theirs = ref.read_text().splitlines()
            mine = ours.read_text().splitlines()
            assert mine[1:] == theirs[1:], "params.py"
            assert Path(eval(mine[0].split("=", 1)[1])).name == Path(eval(theirs[0].split("=", 1)[1])).name
        else:
            assert ours.read_bytes() == ref.read_bytes(), name


# ------------------------------------------------------------------ the whole pipeline
@pytest.fixture(scope="module")
def compat_run(inputs, tmp_path_factory):
    """Our pipeline front to back on rec32 as the capture run (NT, Octave random stream)."""
    from pykilosort import run
    from pykilosort.probes import load_probe

    nt = int(_load("ks2_pipeline_rec32.mat")["NT"].item())
    return run(inputs / "rec32.bin", probe=load_probe(inputs / "rec32_chanMap.mat"),
               dir_path=tmp_path_factory.mktemp("compat"), NT=nt, matlab_compat=True,
               random_stream="octave", device="cpu")


def test_whole_pipeline_ends_with_the_original_sorting(compat_run):
    """raw file -> phy folder with matlab_compat=True gives the spikes, clusters and labels the
    original's post-processing gave on its own rez of the same recording."""
    ref = _load("ks2_post_rec32.mat")
    cutoff = ref["cutoff"][0, 0]
    st3 = np.asarray(compat_run.intermediate.st3)
    np.testing.assert_array_equal(st3["time"], _field(cutoff, "st3")[:, 0])
    np.testing.assert_array_equal(st3["template"] + 1, _field(cutoff, "st3")[:, 1])
    np.testing.assert_array_equal(compat_run.intermediate.good, _field(cutoff, "good").ravel() > 0)
    phy = DATA / "ks2_phy_rec32"
    for name in ("spike_times.npy", "spike_clusters.npy"):
        theirs = scipy.io.loadmat(phy / f"{name}.mat")["value"]
        np.testing.assert_array_equal(np.load(compat_run.output_dir / name), theirs, name)
    for name in ("cluster_KSLabel.tsv", "cluster_group.tsv"):
        assert (compat_run.output_dir / name).read_bytes() == (phy / name).read_bytes(), name
