"""``run()``: sort a recording (the signature SpikeInterface's pykilosort wrapper calls)."""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .backend import get_backend, set_num_threads
from .context import Context, make_writable_dir, same_recording
from .drift import datashift_step
from .errors import ContextError, ParameterError, ProbeError
from .heap import reuse_freed_memory
from .io import RawData, expand_raw_paths, find_meta, read_spikeglx_meta
from .learn import learn_step
from .logs import file_handler, log_environment, peak_rss_mib, reset_peak_rss
from .params import Params, derive, resolve_params
from .pipeline import Step, run_steps
from .postprocess import (cutoff_step, duplicates_step, good_units_step, merges_step,
                          split_amplitude_step, split_svd_step)
from .preprocess import good_channels_step, preprocess_step, whitening_step
from .probes import Probe, load_probe
from .reorder import cluster_single_batches
from .utils import write_json_atomic, write_text_atomic

logger = logging.getLogger("pykilosort")

__all__ = ["run", "pipeline_steps", "step_names", "PLANNED_STEPS"]

_STEPS = {s.name: s for s in [
    Step("good_channels", good_channels_step, "get_good_channels: igood"),
    Step("whitening", whitening_step, "get_whitening_matrix: Wrot, CC"),
    Step("preprocess", preprocess_step, "preprocessDataSub: filtered, whitened int16 proc file"),
    Step("reorder", cluster_single_batches, "clusterSingleBatches: batch order iorig, ccb"),
    Step("datashift", datashift_step, "datashift2 (Kilosort 2.5): drift estimate dshift, "
         "drift-corrected proc file, batch order iorig"),
    Step("learn", learn_step, "learnAndSolve8b: templates, then spikes st3 with features"),
    Step("duplicates", duplicates_step, "remove_ks2_duplicate_spikes (remove_duplicate_spikes=True)",
         subfolder=True),
    Step("merges", merges_step, "find_merges(rez, 1)", subfolder=True),
    Step("split_svd", split_svd_step, "splitAllClusters(rez, 1)", subfolder=True),
    Step("split_amplitude", split_amplitude_step, "splitAllClusters(rez, 0) (Kilosort2 only)",
         subfolder=True),
    Step("cutoff", cutoff_step, "set_cutoff: good/mua, est_contam_rate", subfolder=True),
    Step("good_units", good_units_step, "get_good_units (Kilosort 2.5 only)", subfolder=True),
]}
RECORDING_FILE = "recording.json"  # in output_dir: which recording its results belong to
EXPORT = "export"  # not a checkpointed step: the phy folder and rez.mat, rewritten by every run
# Kilosort2 steps not yet ported; named so that stop_after gives a precise message.
PLANNED_STEPS: list[str] = []


def pipeline_steps(params: Params) -> list[Step]:
    """The steps of a run with ``params``, in order: Kilosort2 (main_kilosort.m of v2.0), or
    Kilosort 2.5 (drift_correction=True: datashift instead of reorder; no split_amplitude;
    get_good_units after the cutoff)."""
    names = ["good_channels", "whitening", "preprocess"]
    names += ["datashift" if params.drift_correction else "reorder", "learn"]
    names += ["duplicates"] if params.remove_duplicate_spikes else []
    names += ["merges", "split_svd"]
    names += ["cutoff", "good_units"] if params.drift_correction else ["split_amplitude", "cutoff"]
    return [_STEPS[n] for n in names]


def step_names(params: Params | None = None) -> list[str]:
    """Names ``stop_after`` accepts for ``params`` (every known step when params is None)."""
    steps = list(_STEPS) if params is None else [s.name for s in pipeline_steps(params)]
    return steps + [EXPORT]


def run(dat_path, probe=None, dir_path=None, output_dir=None, device="auto", stop_after=None,
        clear_context=False, n_threads=None, **params) -> Context:
    """Sort ``dat_path`` (one binary file, or a list concatenated in time).

    Args:
        dat_path: raw binary file(s), sample-major, ``NchanTOT`` channels of ``dtype``; a folder
            stands for the one raw file in it.
        probe: a Probe, a preset name ('neuropixels1', ...), a chanMap .mat / .prb / probeinterface
            .json / SpikeGLX .meta path, or a Bunch/dict (SpikeInterface). None: the SpikeGLX .meta
            beside dat_path, if any.
        dir_path: folder for intermediates (``.kilosort/<recording>``); default: output_dir.
        output_dir: folder for results and ``pykilosort.log``; default: ``dir_path/output``, or
            ``<dat_path's folder>/output`` without dir_path. It may hold one recording's results.
        device: 'auto' (CUDA if CuPy sees a GPU), 'cpu' or 'cuda'.
        stop_after: name of the last step to run (``pykilosort.main.step_names(params)``;
            'export', the default end, writes the phy folder and rez.mat to ``output_dir``).
        clear_context: delete this recording's intermediates first (recompute everything).
        n_threads: CPU threads for numba loops (default: all cores).
        **params: Kilosort2 parameters (``pykilosort.params.PARAMS``), MATLAB ``ops`` names.

    Returns:
        The :class:`~pykilosort.context.Context`: ``ctx.intermediate`` holds the rez fields;
        after a complete run ``ctx.spike_times``, ``ctx.spike_clusters`` and
        ``ctx.cluster_labels`` give the sorting, and ``ctx.output_dir`` holds the phy folder.
    """
    paths = expand_raw_paths(dat_path)
    gave_channels = any(params.get(k) is not None for k in ("NchanTOT", "n_channels"))
    params = _resolve_with_meta(paths, params)
    _check_stop_after(stop_after, params)
    probe = _resolve_probe(probe, paths, params)
    origin = _nchantot_origin(params, probe, paths, given=gave_channels)
    if params.NchanTOT is None:
        params = params.replace(NchanTOT=probe.NchanTOT)
    elif params.NchanTOT != probe.NchanTOT:
        raise ProbeError(f"n_channels/NchanTOT={params.NchanTOT} but the probe says NchanTOT="
                         f"{probe.NchanTOT}; they must agree (the file's channel count).")
    raw = RawData(paths, n_channels=params.NchanTOT, dtype=params.dtype,
                  drop_partial_sample=params.drop_partial_sample, n_channels_origin=origin)
    output_dir, dir_path = _resolve_folders(raw, dir_path=dir_path, output_dir=output_dir)
    make_writable_dir(output_dir, what="the results", param="output_dir (CLI --output)")
    claim_output_dir(output_dir, raw)

    handler = file_handler(output_dir / "pykilosort.log")
    logger.addHandler(handler)
    previous_level = logger.level
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        set_num_threads(n_threads)
        backend = get_backend(device)
        log_environment(logger, backend)
        logger.info("recording: %r", raw)
        logger.info("probe: %r", probe)
        logger.info("resolved params: %s", params.to_json().replace("\n", ""))
        warn_if_short(raw.n_samples, params)
        ctx = Context(dir_path=dir_path, raw_data=raw, probe=probe, params=params, backend=backend,
                      output_dir=output_dir)
        if clear_context:
            logger.info("clear_context=True: deleting %s", ctx.path)
            ctx.clear()
        ctx.write_inputs()
        # OpenBLAS's float32 results depend on its thread count (seen on AMD EPYC: amplitudes
        # 2e-6 apart between a worker with OPENBLAS_NUM_THREADS=1 and a plain run), so a sort
        # uses it on one thread wherever it runs; numba's loops do the parallel work
        with threadpool_limits(limits=1, user_api="blas"), reuse_freed_memory() as reuse:
            logger.info("freed memory kept for the next batches (glibc heap): %s%s", reuse,
                        "" if reuse else " (not glibc, or PYKILOSORT_MALLOC_REUSE=0)")
            steps = pipeline_steps(params)
            run_steps(ctx, steps, stop_after=None if stop_after == EXPORT else stop_after)
            _figures(ctx, output_dir)
            if stop_after in (None, EXPORT):
                _export(ctx, output_dir)
            elif not params.save_temp_files:
                logger.warning("save_temp_files=False is ignored: the run stopped after %r, "
                               "before the export, so the intermediates in %s are the only "
                               "results", stop_after, ctx.path)
        return ctx
    except Exception as exc:
        # the traceback goes to the log file only: consoles get the exception's message
        handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "run failed",
                                         (), sys.exc_info()))
        exc.pykilosort_log = handler.baseFilename  # the CLI points at it
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous_level)


def _resolve_folders(raw: RawData, *, dir_path, output_dir) -> tuple[Path, Path]:
    """(output_dir, dir_path): results default to ``dir_path/output`` (SpikeInterface's layout),
    or ``<data folder>/output`` without dir_path; intermediates default to the output folder."""
    if output_dir is None:
        base = Path(dir_path) if dir_path is not None else raw.paths[0].parent
        output_dir = base / "output"
    output_dir = Path(output_dir).expanduser()
    dir_path = Path(dir_path).expanduser() if dir_path is not None else output_dir
    return output_dir, dir_path


def _nchantot_origin(params: Params, probe: Probe, paths, *, given: bool) -> str:
    """Where NchanTOT comes from, for the error of a file size that does not fit it."""
    if given:
        return "as given"
    if params.NchanTOT is not None:
        return f"nSavedChans in {find_meta(paths[0]).name}"
    name = f"probe {probe.name!r}" if probe.name else "probe"
    if probe.NchanTOT_inferred:
        return (f"not given: inferred from the {name}, which does not state NchanTOT, as "
                f"max(chanMap)+1 with its {probe.chanMap.size} channels")
    return f"as the {name} states it"


def warn_if_short(n_samples: int, params: Params) -> None:
    """A recording shorter than one batch is sorted as one batch padded with its last sample;
    say so, with its length (steps that cannot work on it say what they need)."""
    d = derive(params, n_samples=n_samples)
    n, fs = d.tend - d.tstart, params.fs
    if n < params.NT:
        what = "the time range sorted" if d.tstart or d.tend < n_samples else "the recording"
        logger.warning(
            "%s is %.3g s (%d samples), shorter than one batch (NT=%d samples, %.2f s): it is "
            "sorted as one batch padded with its last sample, and templates are learned from its "
            "few spikes. Pass a smaller NT (a multiple of 32 above 4*ntbuff) for several batches.",
            what, n / fs, n, params.NT, params.NT / fs)


def claim_output_dir(output_dir: Path, raw: RawData) -> None:
    """Record which recording ``output_dir`` holds results of; refuse one that holds another's."""
    path = output_dir / RECORDING_FILE
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        owner = None
    except (OSError, ValueError) as exc:
        raise ContextError(f"{path} is unreadable ({exc}): delete it if {output_dir} holds "
                           "results of this recording.") from exc
    if owner is not None and not same_recording(owner, raw):
        raise ContextError(
            f"{output_dir} holds the results of another recording ({', '.join(owner['paths'])}); "
            f"sorting {raw.paths[0]} there would overwrite them. Pass another output_dir (CLI "
            f"--output), or delete {output_dir} to replace them.")
    write_json_atomic(path, raw.describe())


def _export(ctx: Context, output_dir: Path) -> None:
    """rezToPhy and rez.mat; then, with save_temp_files=False, the intermediates are deleted."""
    from .drift import write_drift_outputs
    from .export import write_phy, write_rez_mat

    own, t0 = reset_peak_rss(), time.perf_counter()
    write_phy(ctx, output_dir)
    write_drift_outputs(ctx, output_dir)
    write_rez_mat(ctx, output_dir / "rez.mat")
    write_text_atomic(output_dir / "params.json", ctx.params.to_json())
    logger.info("export done in %.2f s, peak memory %.0f MiB %s (process %.0f MiB)",
                time.perf_counter() - t0, peak_rss_mib(since_reset=True),
                "in the export" if own else "so far", peak_rss_mib())
    good = np.asarray(ctx.intermediate.good, bool)
    logger.info("sorting finished: %d spikes in %d clusters (%d good); phy folder %s",
                np.asarray(ctx.intermediate.st3).size, good.size, good.sum(), output_dir)
    if not ctx.params.save_temp_files:
        if ctx.derived.ks25:
            logger.warning("save_temp_files=False: the phy folder of a Kilosort 2.5 run points "
                           "at the proc file, which is now deleted (phy shows no traces)")
        logger.info("save_temp_files=False: deleting intermediates in %s", ctx.path)
        shutil.rmtree(ctx.path, ignore_errors=True)


def _figures(ctx: Context, output_dir: Path) -> None:
    """Figures of the steps that ran (skipped quietly for steps that did not)."""
    from .plots import plot_drift, plot_reorder

    it = ctx.intermediate
    if "xs" in it:
        path = plot_reorder(ccb=it.ccb, ccbsort=it.ccbsort, xs=it.xs, iorig=it.iorig,
                            path=output_dir / "reorder.png")
        if path is not None:
            logger.info("batch reordering figure: %s", path)
    if "dshift" in it:
        path = plot_drift(ctx, path=output_dir / "drift.png")
        if path is not None:
            logger.info("drift figure: %s", path)


def _check_stop_after(stop_after, params: Params) -> None:
    if stop_after is None or stop_after in step_names(params):
        return
    if stop_after in PLANNED_STEPS:
        raise ParameterError(f"stop_after={stop_after!r}: that step is not ported yet; steps are "
                             f"{step_names(params)}.")
    if stop_after in step_names():
        raise ParameterError(f"stop_after={stop_after!r}: this run (drift_correction="
                             f"{params.drift_correction}, remove_duplicate_spikes="
                             f"{params.remove_duplicate_spikes}) has no such step; its steps are "
                             f"{step_names(params)}.")
    raise ParameterError(f"stop_after={stop_after!r} is not a step; steps are "
                         f"{step_names(params)}.")


def _resolve_with_meta(paths, user: dict):
    """Resolve params; n_channels and fs default to the SpikeGLX .meta beside the first file."""
    meta_path = find_meta(paths[0])
    user = dict(user)
    if meta_path is not None:
        meta = read_spikeglx_meta(meta_path)
        given = set(user)
        if not given & {"NchanTOT", "n_channels"} and "nSavedChans" in meta:
            user["NchanTOT"] = int(meta["nSavedChans"])
        if not given & {"fs", "sample_rate"}:
            rate = meta.get("imSampRate") or meta.get("niSampRate")
            if rate:
                user["fs"] = float(rate)
    return resolve_params(user)


def _resolve_probe(probe, paths, params) -> Probe:
    if probe is None:
        meta = find_meta(paths[0])
        if meta is None:
            raise ProbeError("no probe given and no SpikeGLX .meta file beside the data: pass "
                             "probe=... (a preset such as 'neuropixels1', a Kilosort chanMap .mat, "
                             "a .prb or probeinterface .json file, or a Probe).")
        probe = meta
    return load_probe(probe, n_channels=params.NchanTOT)
