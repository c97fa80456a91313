"""``run()``: sort a recording (the signature SpikeInterface's pykilosort wrapper calls)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from .backend import get_backend, set_num_threads
from .context import Context
from .errors import ParameterError, ProbeError
from .io import RawData, find_meta, read_spikeglx_meta
from .logs import file_handler, log_environment
from .params import resolve_params
from .pipeline import Step, run_steps
from .preprocess import good_channels_step, preprocess_step, whitening_step
from .probes import Probe, load_probe
from .extract import learn_step
from .reorder import cluster_single_batches
from .utils import write_text_atomic

logger = logging.getLogger("pykilosort")

__all__ = ["run", "STEPS", "PLANNED_STEPS"]

STEPS = [
    Step("good_channels", good_channels_step, "get_good_channels: igood"),
    Step("whitening", whitening_step, "get_whitening_matrix: Wrot, CC"),
    Step("preprocess", preprocess_step, "preprocessDataSub: filtered, whitened int16 proc file"),
    Step("reorder", cluster_single_batches, "clusterSingleBatches: batch order iorig, ccb"),
    Step("learn", learn_step, "learnAndSolve8b: templates, then spikes st3 with features"),
]
# Kilosort2 steps not yet ported; named so that stop_after gives a precise message.
PLANNED_STEPS = ["datashift", "postprocess", "export"]


def run(dat_path, probe=None, dir_path=None, output_dir=None, device="auto", stop_after=None,
        clear_context=False, n_threads=None, **params) -> Context:
    """Sort ``dat_path`` (one binary file, or a list concatenated in time).

    Args:
        dat_path: raw binary file(s), sample-major, ``NchanTOT`` channels of ``dtype``.
        probe: a Probe, a preset name ('neuropixels1', ...), a chanMap .mat / .prb / probeinterface
            .json / SpikeGLX .meta path, or a Bunch/dict (SpikeInterface). None: the SpikeGLX .meta
            beside dat_path, if any.
        dir_path: folder for intermediates (``.kilosort/<recording>``); default: dat_path's folder.
        output_dir: folder for results and ``pykilosort.log``; default: ``dir_path/output``.
        device: 'auto' (CUDA if CuPy sees a GPU), 'cpu' or 'cuda'.
        stop_after: name of the last step to run (see ``pykilosort.main.STEPS``).
        clear_context: delete this recording's intermediates first (recompute everything).
        n_threads: CPU threads for numba loops (default: all cores).
        **params: Kilosort2 parameters (``pykilosort.params.PARAMS``), MATLAB ``ops`` names.

    Returns:
        The :class:`~pykilosort.context.Context`, with ``ctx.intermediate`` holding rez fields.
    """
    _check_stop_after(stop_after)
    paths = [dat_path] if isinstance(dat_path, (str, os.PathLike)) else list(dat_path)
    params = _resolve_with_meta(paths, params)
    probe = _resolve_probe(probe, paths, params)
    if params.NchanTOT is None:
        params = params.replace(NchanTOT=probe.NchanTOT)
    elif params.NchanTOT != probe.NchanTOT:
        raise ProbeError(f"n_channels/NchanTOT={params.NchanTOT} but the probe says NchanTOT="
                         f"{probe.NchanTOT}; they must agree (the file's channel count).")
    raw = RawData(paths, n_channels=params.NchanTOT, dtype=params.dtype)
    dir_path = Path(dir_path) if dir_path is not None else raw.paths[0].parent
    output_dir = Path(output_dir) if output_dir is not None else dir_path / "output"
    output_dir.mkdir(parents=True, exist_ok=True)

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
        write_text_atomic(output_dir / "params.json", params.to_json())
        ctx = Context(dir_path=dir_path, raw_data=raw, probe=probe, params=params, backend=backend)
        if clear_context:
            logger.info("clear_context=True: deleting %s", ctx.path)
            ctx.clear()
        ctx.write_inputs()
        run_steps(ctx, STEPS, stop_after=stop_after)
        _figures(ctx, output_dir)
        if stop_after is None:
            logger.info("the pipeline currently ends after %r (not yet ported: %s)", STEPS[-1].name,
                        ", ".join(PLANNED_STEPS))
        if not params.save_temp_files:
            logger.info("save_temp_files=False: deleting intermediates in %s", ctx.path)
            shutil.rmtree(ctx.path, ignore_errors=True)
        return ctx
    except Exception:
        logger.exception("run failed")
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous_level)


def _figures(ctx: Context, output_dir: Path) -> None:
    """Figures of the steps that ran (skipped quietly for steps that did not)."""
    from .plots import plot_reorder

    it = ctx.intermediate
    if "xs" in it:
        path = plot_reorder(ccb=it.ccb, ccbsort=it.ccbsort, xs=it.xs, iorig=it.iorig,
                            path=output_dir / "reorder.png")
        if path is not None:
            logger.info("batch reordering figure: %s", path)


def _check_stop_after(stop_after) -> None:
    names = [s.name for s in STEPS]
    if stop_after is None or stop_after in names:
        return
    if stop_after in PLANNED_STEPS:
        raise ParameterError(f"stop_after={stop_after!r}: that step is not ported yet; implemented "
                             f"steps are {names}.")
    raise ParameterError(f"stop_after={stop_after!r} is not a step; steps are "
                         f"{names + PLANNED_STEPS}.")


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
