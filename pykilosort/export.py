"""Results on disk: the phy folder (rezToPhy.m of Kilosort2 v2.0 / v2.5.2), rez.mat, and
:func:`load_sorting` to read a phy folder back.

The phy files have the original's names, dtypes, shapes and memory order (npy-matlab writes
Fortran-ordered arrays, vectors as (n, 1)); spikes are sorted by time (stable), indices are
0-based. An export never leaves a folder that looks complete while it is not: ``params.py`` is
removed first, every file is written to a temporary folder and moved into place, params.py last.
"""
from __future__ import annotations

import ast
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .duplicates import template_amplitudes, unwhiten
from .errors import ContextError
from .utils import atomic_path, release_mapped_pages

logger = logging.getLogger(__name__)

__all__ = ["write_phy", "phy_arrays", "write_rez_mat", "load_sorting", "Sorting", "PHY_FILES",
           "st3_matrix", "wphy"]

PHY_FILES = ("spike_times.npy", "spike_templates.npy", "spike_clusters.npy", "amplitudes.npy",
             "templates.npy", "templates_ind.npy", "channel_map.npy", "channel_positions.npy",
             "template_features.npy", "template_feature_ind.npy", "pc_features.npy",
             "pc_feature_ind.npy", "whitening_mat.npy", "whitening_mat_inv.npy",
             "similar_templates.npy", "cluster_KSLabel.tsv", "cluster_group.tsv",
             "cluster_ContamPct.tsv", "cluster_Amplitude.tsv", "params.py")
# spikes per block when streaming features: the features' share of the export's peak memory is
# two blocks, 2 x _CHUNK x (bytes per spike; pc_features: 384) = 24 MiB for any recording longer
# than a block; 2**18 let it grow with the spike count up to ~200 MiB (issue 12's scaling)
_CHUNK = 2**15


def _column(x) -> np.ndarray:
    """A MATLAB column vector: shape (n, 1)."""
    return np.asarray(x).reshape(-1, 1)


def wphy(W: np.ndarray, nt0min: int) -> np.ndarray:
    """splitAllClusters' rez.Wphy: W (nt0, Nfilt, 3) padded in front with nt0min + 1 zeros, so
    that the trough is at the centre of phy's window."""
    W = np.asarray(W, np.float64)
    return np.concatenate([np.zeros((nt0min + 1,) + W.shape[1:]), W])


def phy_templates(*, W: np.ndarray, U: np.ndarray, nt0min: int) -> np.ndarray:
    """(Nfilt, nt0 + nt0min + 1, Nchan) float32: U_n Wphy_n^T."""
    return np.einsum("cnr,tnr->ntc", np.asarray(U, np.float32),
                     wphy(W, nt0min).astype(np.float32)).astype(np.float32)


def template_amplitudes_for_phy(*, templates, Wrot, scaleproc, spike_templates, amplitudes,
                                n_templates: int) -> np.ndarray:
    """rezToPhy's tempAmps: mean over each template's spikes of (unwhitened peak-to-peak
    amplitude of the template) x (the spike's scaling amplitude); 0 for templates without spikes."""
    amp, _ = template_amplitudes(unwhiten(templates, Wrot=Wrot, scaleproc=scaleproc))
    spike_amps = amp[spike_templates] * np.asarray(amplitudes, np.float64)
    counts = np.bincount(spike_templates, minlength=n_templates)
    sums = np.bincount(spike_templates, weights=spike_amps, minlength=n_templates)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


# ---------------------------------------------------------------------------------- writing
def _write_npy(path: Path, array: np.ndarray) -> None:
    """An .npy file as npy-matlab's writeNPY writes it: header fortran_order True (numpy's own
    np.save writes False for an (n, 1) array, which is both C- and Fortran-contiguous)."""
    array = np.asarray(array)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(array.dtype),
                                                 "fortran_order": True, "shape": array.shape})
        f.write(array.tobytes(order="F"))


def _write_features(path: Path, source, rows: np.ndarray) -> None:
    """``source[rows]`` (n, *trailing) float32, written Fortran-ordered block by block: each
    trailing index j (MATLAB's linear index over the trailing dimensions) is a contiguous run of
    n values, so a block of spikes is written as one slice per j."""
    n, trailing = rows.size, tuple(source.shape[1:])
    n_cols = int(np.prod(trailing))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": True,
                                                 "shape": (n,) + trailing})
        start = f.tell()
        f.truncate(start + 4 * n * n_cols)
        for a in range(0, n, _CHUNK):
            block = np.asarray(source[rows[a:a + _CHUNK]], np.float32)
            block = block.reshape(block.shape[0], *trailing)
            flat = block.reshape(block.shape[0], -1, order="F")   # MATLAB block(:, :)
            for j in range(n_cols):
                f.seek(start + 4 * (j * n + a))
                f.write(np.ascontiguousarray(flat[:, j]).tobytes())
            del block, flat  # freed before the next block is read: two blocks at most in memory
            release_mapped_pages(source)  # peak memory stays one block, whatever n


def _write_tsv(path: Path, column: str, values, fmt: str) -> None:
    """cluster_<column>.tsv with the original's CRLF line ends."""
    lines = [f"cluster_id\t{column}"] + [f"{j}\t{fmt % v}" for j, v in enumerate(values)]
    path.write_bytes("".join(line + "\r\n" for line in lines).encode())


def _sample_rate_text(fs: float) -> str:
    return f"{int(fs)}." if float(fs).is_integer() else repr(float(fs))


def _params_py(*, dat_path, n_channels: int, dtype: str, fs: float, hp_filtered: bool) -> str:
    paths = [Path(p).as_posix() for p in dat_path]
    dat = repr(paths[0]) if len(paths) == 1 else repr(paths)
    return (f"dat_path = {dat}\nn_channels_dat = {n_channels}\ndtype = {dtype!r}\noffset = 0\n"
            f"sample_rate = {_sample_rate_text(fs)}\nhp_filtered = {hp_filtered}")


def phy_arrays(ctx) -> dict:
    """Every array rezToPhy writes, keyed by file name (features excepted: streamed)."""
    p, it, d = ctx.params, ctx.intermediate, ctx.derived
    probe = ctx.probe_good
    st3 = np.asarray(it.st3)
    order = np.argsort(st3["time"], kind="stable")
    st3 = st3[order]
    templates = phy_templates(W=np.asarray(it.W), U=np.asarray(it.U), nt0min=d.nt0min)
    n_filt, n_chan = templates.shape[0], templates.shape[2]
    spike_templates = st3["template"].astype(np.uint32)
    # KS2.5 points phy at the drift-corrected, whitened proc file, hence no whitening to undo
    wrot = np.eye(n_chan) if d.ks25 else np.asarray(it.Wrot, np.float64)
    whitening = wrot / p.scaleproc
    amps = template_amplitudes_for_phy(templates=templates, Wrot=wrot, scaleproc=p.scaleproc,
                                       spike_templates=spike_templates.astype(np.int64),
                                       amplitudes=st3["amplitude"], n_templates=n_filt)
    return {
        "order": order,
        "spike_times.npy": _column(st3["time"].astype(np.uint64)),
        "spike_templates.npy": _column(spike_templates),
        "spike_clusters.npy": _column(spike_templates),
        "amplitudes.npy": _column(st3["amplitude"].astype(np.float64)),
        "templates.npy": templates,
        "templates_ind.npy": np.tile(np.arange(n_chan, dtype=np.float64), (n_filt, 1)),
        # v2.5.2 writes int32([1:Nchan]-1), a row: the proc file's channels
        "channel_map.npy": (np.arange(n_chan, dtype=np.int32)[None, :] if d.ks25 else
                            _column(probe.chanMap.astype(np.int32))),
        "channel_positions.npy": np.stack([probe.xc, probe.yc], axis=1).astype(np.float64),
        "template_feature_ind.npy": np.asarray(it.iNeigh).T.astype(np.uint32),
        "pc_feature_ind.npy": np.asarray(it.iNeighPC).T.astype(np.uint32),
        "whitening_mat.npy": whitening,
        "whitening_mat_inv.npy": np.linalg.inv(whitening),
        "similar_templates.npy": np.asarray(it.simScore, np.float32),
        "cluster_amplitude": amps,
    }


def write_phy(ctx, folder) -> Path:
    """rezToPhy(rez, folder): write the phy files of a finished run into ``folder``.

    ``folder`` may hold other files (the log): only the phy files are replaced. params.py is
    deleted first and written last, so an interrupted export never looks complete.
    """
    from .postprocess import spike_index

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.py").unlink(missing_ok=True)
    shutil.rmtree(folder / ".phy", ignore_errors=True)  # phy's cache of an older sorting
    tmp = folder / f".export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    arrays = phy_arrays(ctx)
    rows = spike_index(ctx)[arrays.pop("order")]
    amps = arrays.pop("cluster_amplitude")
    for name, array in arrays.items():
        _write_npy(tmp / name, array)
    it = ctx.intermediate
    _write_features(tmp / "template_features.npy", it.cProj, rows)
    _write_features(tmp / "pc_features.npy", it.cProjPC, rows)
    good = np.asarray(it.good, bool)
    _write_tsv(tmp / "cluster_KSLabel.tsv", "KSLabel", ["good" if g else "mua" for g in good], "%s")
    shutil.copyfile(tmp / "cluster_KSLabel.tsv", tmp / "cluster_group.tsv")
    _write_tsv(tmp / "cluster_ContamPct.tsv", "ContamPct",
               np.asarray(it.est_contam_rate, np.float64) * 100, "%.1f")
    _write_tsv(tmp / "cluster_Amplitude.tsv", "Amplitude", amps, "%.1f")
    (tmp / "params.py").write_text(_params_file_text(ctx))
    for name in PHY_FILES:  # params.py is last
        os.replace(tmp / name, folder / name)
    shutil.rmtree(tmp)
    logger.info("phy folder written: %s (%d spikes, %d clusters, %d good)", folder,
                arrays["spike_times.npy"].size, good.size, good.sum())
    return folder


def _params_file_text(ctx) -> str:
    p, d = ctx.params, ctx.derived
    if d.ks25:  # v2.5.2 shows phy the drift-corrected proc file
        return _params_py(dat_path=[ctx.intermediate.proc], n_channels=ctx.probe_good.Nchan,
                          dtype="int16", fs=p.fs, hp_filtered=True)
    return _params_py(dat_path=ctx.raw_data.paths, n_channels=ctx.raw_data.n_channels,
                      dtype=ctx.raw_data.dtype.name, fs=p.fs, hp_filtered=False)


# ---------------------------------------------------------------------------------- rez.mat
_ONE_BASED = ("iNeigh", "iNeighPC", "iorig")  # index arrays MATLAB holds 1-based
_REZ_FIELDS = ("W", "U", "mu", "dWU", "Wrot", "ccb", "ccbsort", "simScore", "good",
               "est_contam_rate", "Ths", "isplit", "W_a", "W_b", "U_a", "U_b", "muA", "nsp",
               "Wraw", "dshift", "yblk", "F", "F0", "F0m") + _ONE_BASED


def st3_matrix(st3: np.ndarray) -> np.ndarray:
    """(n, 5) float64 MATLAB st3: time, template (1-based), amplitude, vexp, batch (1-based)."""
    return np.stack([st3["time"], st3["template"] + 1.0, st3["amplitude"], st3["vexp"],
                     st3["batch"] + 1.0], axis=1).astype(np.float64)


def rez_struct(ctx) -> dict:
    """The final rez as MATLAB's main_kilosort.m saves it (cProj, cProjPC emptied), with
    MATLAB names and MATLAB's 1-based indices."""
    from .postprocess import spike_index

    p, it, d = ctx.params, ctx.intermediate, ctx.derived
    probe = ctx.probe_good
    st3 = np.asarray(it.st3)
    rows = spike_index(ctx)
    learn_st3 = np.asarray(ctx.checkpoint("learn", "st3"))
    rez = {k: np.asarray(it[k]) for k in _REZ_FIELDS if k in it}
    for k in _ONE_BASED:
        if k in rez:
            rez[k] = rez[k] + 1.0
    if "st0" in it:  # datashift2's detections: MATLAB's 1-based batch, no group column
        rez["st0"] = np.asarray(it.st0)[:, :6] + np.array([0, 0, 0, 0, 1.0, 0])
    final = st3_matrix(st3)
    order = np.lexsort(final.T[::-1])  # sortrows(rez.st3)
    rez.update(st3=final[order], st2=st3_matrix(learn_st3[rows])[order],
               cProj=np.zeros((0, 0)), cProjPC=np.zeros((0, 0)),
               Wphy=wphy(it.W, d.nt0min),
               xc=probe.xc, yc=probe.yc, xcoords=probe.xc, ycoords=probe.yc,
               connected=np.ones(probe.Nchan), istart=float(it.get("istart", -1)) + 1)
    ops = {k: (np.array(v, np.float64) if isinstance(v, tuple) else v)
           for k, v in p.items() if v is not None}
    ops.update(Nchan=probe.Nchan, NTbuff=d.NTbuff, Nbatch=d.Nbatch, nt0min=d.nt0min,
               chanMap=probe.chanMap + 1.0, kcoords=probe.kcoords, igood=np.asarray(it.igood, float),
               fbinary=[str(x) for x in ctx.raw_data.paths], fproc=str(it.get("proc", "")),
               wPCA=np.asarray(it.get("wPCA", [])), wTEMP=np.asarray(it.get("wTEMP", [])))
    rez["ops"] = ops
    return rez


def write_rez_mat(ctx, path) -> Path:
    """rez.mat (MATLAB v5 format, readable by MATLAB's load and scipy.io.loadmat)."""
    import scipy.io

    path = Path(path)
    with atomic_path(path) as tmp:
        scipy.io.savemat(tmp, {"rez": rez_struct(ctx)}, do_compression=True, oned_as="column")
    return path


# ---------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Sorting:
    """A sorting read back from a phy folder (:func:`load_sorting`)."""
    folder: Path
    sample_rate: float
    spike_times: np.ndarray       # (n,) int64 samples, ascending
    spike_clusters: np.ndarray    # (n,) int64 0-based cluster ids
    amplitudes: np.ndarray        # (n,) float64 template scaling amplitudes
    cluster_ids: np.ndarray       # (k,) int64: every cluster of the labels table
    labels: np.ndarray            # (k,) str 'good' / 'mua' (cluster_group.tsv: phy curation wins)
    contam_pct: np.ndarray        # (k,) float64
    templates: np.ndarray         # (Nfilt, nt, Nchan) float32, whitened
    params: dict

    def good_clusters(self) -> np.ndarray:
        return self.cluster_ids[self.labels == "good"]

    def spike_train(self, cluster: int) -> np.ndarray:
        return self.spike_times[self.spike_clusters == cluster]


def _read_params(path: Path) -> dict:
    """params.py as literals (no code is executed)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def _read_tsv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return np.array([int(r[0]) for r in rows], np.int64), np.array([r[1].strip() for r in rows])


def load_sorting(folder) -> Sorting:
    """Read the phy folder ``folder`` (written by pykilosort or Kilosort2)."""
    folder = Path(folder)
    missing = [n for n in PHY_FILES if not (folder / n).is_file()]
    if "params.py" in missing:
        raise ContextError(f"{folder} holds no finished sorting (params.py is missing: the export "
                           "did not run or was interrupted); run the sorter again to finish it.")
    if missing:
        raise ContextError(f"{folder} is incomplete: {missing} missing; rerun the export.")
    ids, labels = _read_tsv(folder / "cluster_group.tsv")
    cids, contam = _read_tsv(folder / "cluster_ContamPct.tsv")
    contam_by_id = dict(zip(cids, contam.astype(np.float64)))
    params = _read_params(folder / "params.py")
    clusters = np.load(folder / "spike_clusters.npy").ravel().astype(np.int64)
    return Sorting(folder=folder, sample_rate=float(params["sample_rate"]),
                   spike_times=np.load(folder / "spike_times.npy").ravel().astype(np.int64),
                   spike_clusters=clusters,
                   amplitudes=np.load(folder / "amplitudes.npy").ravel().astype(np.float64),
                   cluster_ids=ids, labels=labels,
                   contam_pct=np.array([contam_by_id.get(i, np.nan) for i in ids]),
                   templates=np.load(folder / "templates.npy", mmap_mode="r"), params=params)
