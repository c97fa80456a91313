"""The Context: MATLAB's ``rez`` as an object whose intermediates live on disk.

``ctx.raw_data``, ``ctx.probe``, ``ctx.params`` are the inputs; ``ctx.intermediate`` holds rez-named
fields (Wrot, igood, iorig, st3, ...) as they are produced. Each step's outputs are saved under
``<dir_path>/.kilosort/<recording>/`` and recorded in ``manifest.json`` with the step's key and each
file's size and digest, so a later run can trust them, or detect that they are stale, truncated or
corrupted and recompute them.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .backend import CPU, Backend
from .errors import ContextError
from .io import RawData
from .params import Derived, Params, derive, params_from_json
from .probes import Probe
from .utils import Bunch, file_digest, save_npy_atomic, write_json_atomic

logger = logging.getLogger(__name__)

__all__ = ["Context", "load_context", "file_digest", "MANIFEST", "CONTEXT_DIRNAME"]

CONTEXT_DIRNAME = ".kilosort"
MANIFEST = "manifest.json"
INPUTS = "context.json"


class Context:
    """Inputs and intermediates of one sorting run (one recording).

    Args:
        dir_path: folder that holds ``.kilosort/<recording>/``.
        raw_data: the recording.
        probe: the full probe (all mapped channels); ``ctx.intermediate.igood`` selects channels.
        params: resolved parameters.
        backend: where the steps compute (default: CPU).
        output_dir: the folder of the phy files and the log (run()'s output_dir).
    """

    def __init__(self, *, dir_path, raw_data: RawData, probe: Probe, params: Params,
                 backend: Backend | None = None, output_dir=None, folder=None):
        self.dir_path = Path(dir_path)
        self.output_dir = None if output_dir is None else Path(output_dir)  # the phy folder
        self.backend = backend or CPU
        self.raw_data = raw_data
        self.probe = probe
        self.params = params
        self.path = Path(folder) if folder is not None else context_folder(self.dir_path, raw_data)
        self.intermediate = Bunch()
        self.steps_run: list[str] = []  # steps computed (not loaded) in this process, in order
        self.stale_steps: list[str] = []  # load_context: checkpoints left out (other params)
        make_writable_dir(self.path, what="the intermediates", param="dir_path (CLI --dir)")

    # ------------------------------------------------------------------ manifest
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"format": 1, "steps": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text())
            if not isinstance(manifest.get("steps"), dict):
                raise ValueError("no 'steps' table")
            return manifest
        except (ValueError, json.JSONDecodeError) as exc:
            logger.warning("manifest %s is unreadable (%s): every step will be recomputed",
                           self.manifest_path, exc)
            return {"format": 1, "steps": {}}

    def write_inputs(self) -> None:
        """Record what this context was built from, for :func:`load_context`."""
        write_json_atomic(self.path / INPUTS, {
            "raw_data": self.raw_data.describe(), "probe": self.probe.to_dict(),
            "params": json.loads(self.params.to_json()),
            "output_dir": None if self.output_dir is None else str(self.output_dir.resolve())})

    # ------------------------------------------------------------------ outputs
    def output_path(self, name: str, suffix: str = ".npy", *, subfolder: str | None = None) -> Path:
        folder = self.path if subfolder is None else self.path / subfolder
        return folder / f"{name}{suffix}"

    def save_outputs(self, step: str, key: str, outputs: dict[str, Any], *, extra: dict,
                     subfolder: str | None = None) -> None:
        """Save a step's outputs and record them in the manifest (outputs first, manifest last).

        ``outputs`` maps rez names to numpy arrays (saved as .npy, Fortran order for >= 2-D, like
        MATLAB), to paths of files the step already wrote atomically in the context folder (streams
        such as the proc file), or to JSON-able scalars (stored in the manifest). Arrays go to
        ``subfolder`` when given: post-processing steps update rez fields (st3, W, ...) that earlier
        steps also wrote, and each step's checkpoint must keep its own files.
        """
        record = {"key": key, "files": {}, "values": {}, **extra}
        for name, value in outputs.items():
            if isinstance(value, Path):
                path = value
            elif isinstance(value, np.ndarray):
                path = self.output_path(name, subfolder=subfolder)
                save_npy_atomic(path, value, fortran=value.ndim >= 2)
            else:
                record["values"][name] = value
                self.intermediate[name] = value
                continue
            record["files"][name] = {"file": path.relative_to(self.path).as_posix(),
                                     "size": path.stat().st_size, "digest": file_digest(path)}
            self.intermediate[name] = _load(path)
        manifest = self.read_manifest()
        manifest["steps"][step] = record
        write_json_atomic(self.manifest_path, manifest)

    def load_outputs(self, step: str, key: str) -> bool:
        """Load ``step``'s outputs if the manifest has them under ``key`` and they are intact.

        Returns False (after a warning for damaged files) when the step must be recomputed.
        """
        record = self.read_manifest()["steps"].get(step)
        if record is None or record.get("key") != key:
            return False
        loaded = {}
        for name, info in record["files"].items():
            path = self.path / info["file"]
            problem = _check_file(path, info)
            if problem is None:
                try:
                    loaded[name] = _load(path)
                except (ValueError, OSError, EOFError) as exc:
                    problem = f"unreadable ({exc})"
            if problem is not None:
                logger.warning("step %r: checkpoint %s is %s; recomputing the step", step, path.name,
                               problem)
                return False
        self.intermediate.update(loaded)
        self.intermediate.update(record["values"])
        return True

    def checkpoint(self, step: str, name: str):
        """Output ``name`` of ``step`` as that step saved it (``intermediate`` holds the latest
        value of each name: st3 after learn is replaced by st3 after each post-processing step)."""
        record = self.read_manifest()["steps"].get(step)
        if record is None or name not in record["files"]:
            if record is not None and name in record["values"]:
                return record["values"][name]
            raise ContextError(f"step {step!r} has no saved output {name!r} in {self.path}.")
        return _load(self.path / record["files"][name]["file"])

    # ------------------------------------------------------------------ the sorting
    def _final_st3(self) -> np.ndarray:
        if "good" not in self.intermediate:
            stale = (f" (checkpoints of other parameters were not loaded: {self.stale_steps})"
                     if self.stale_steps else "")
            raise ContextError("the run has not reached the cutoff step: no final sorting yet "
                               "(run without stop_after, or load_context a finished run)" + stale
                               + ".")
        st3 = np.asarray(self.intermediate.st3)
        return st3[np.argsort(st3["time"], kind="stable")]

    @property
    def spike_times(self) -> np.ndarray:
        """(n,) int64 spike samples of the final sorting, ascending (phy's spike_times)."""
        return self._final_st3()["time"].astype(np.int64)

    @property
    def spike_clusters(self) -> np.ndarray:
        """(n,) int64 0-based cluster of each spike, in the order of ``spike_times``."""
        return self._final_st3()["template"].astype(np.int64)

    @property
    def cluster_labels(self) -> np.ndarray:
        """(n_clusters,) 'good' or 'mua' (Kilosort's KSLabel) of clusters 0, 1, ..."""
        self._final_st3()
        return np.where(np.asarray(self.intermediate.good, bool), "good", "mua")

    def clear(self) -> None:
        """Delete every intermediate of this recording (``clear_context=True``)."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.intermediate = Bunch()

    # ------------------------------------------------------------------ rez-like views
    @property
    def derived(self) -> Derived:
        """NTbuff, Nbatch, tstart, tend, nt0min for this recording and these params."""
        return derive(self.params, n_samples=self.raw_data.n_samples)

    @property
    def probe_good(self) -> Probe:
        """The channels being sorted: connected, and good per ``intermediate.igood`` when known."""
        probe = self.probe.connected_only()
        igood = self.intermediate.get("igood")
        return probe if igood is None else probe.subset(np.asarray(igood, bool))

    def __repr__(self) -> str:
        fields = ", ".join(sorted(self.intermediate))
        return f"Context({self.raw_data!r}, {self.probe!r}, intermediate=[{fields}])"


def context_folder(dir_path: Path, raw: RawData) -> Path:
    """``<dir_path>/.kilosort/<name>``: the folder of this recording's intermediates.

    ``<name>`` is the file's stem; a second recording with the same stem (two Open Ephys
    ``continuous.dat`` in one dir_path) gets ``<stem>-2``, and so on. A folder belongs to the
    recording whose content fingerprint its context.json records, wherever that file now lies.
    """
    root = dir_path / CONTEXT_DIRNAME
    if root.is_dir():  # this recording's folder, under whatever name it was first sorted
        for folder in sorted(root.iterdir()):
            owner = _recorded_raw(folder) if folder.is_dir() else None
            if owner and same_recording(owner, raw):
                return folder
    for name in [raw.name] + [f"{raw.name}-{i}" for i in range(2, 1000)]:
        folder = root / name
        if _recorded_raw(folder) is None:
            if name != raw.name:
                logger.info("%s holds another recording named %r; this one's intermediates go "
                            "to %s", root / raw.name, raw.name, folder)
            return folder
    raise ContextError(f"{root} holds 999 recordings named {raw.name!r}; clean it up.")


def _recorded_raw(folder: Path) -> dict | None:
    """The raw-data description a context folder belongs to; None if the folder is free to use."""
    try:
        return json.loads((folder / INPUTS).read_text())["raw_data"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if not folder.is_dir() or not any(folder.iterdir()):
            return None
        logger.warning("%s is unreadable (%s): that folder is left alone", folder / INPUTS, exc)
        return {}


def same_recording(desc: dict, raw: RawData) -> bool:
    """Whether a recorded RawData.describe() is ``raw``: the same content (wherever it lies now),
    or the same files (whose content changed: the checkpoint keys then rerun everything)."""
    return (desc.get("fingerprint") == raw.fingerprint() or
            desc.get("paths") == [str(p) for p in raw.paths])


def make_writable_dir(folder: Path, *, what: str, param: str) -> None:
    """Create ``folder`` and check that files can be written in it, else say which parameter
    moves ``what`` elsewhere (raw data often lie on a read-only share)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ContextError(f"cannot write {what} to {folder} ({exc.strerror or exc}): choose a "
                           f"writable folder with {param}.") from exc


def _load(path: Path):
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return path


def _check_file(path: Path, info: dict) -> str | None:
    """None if ``path`` matches its manifest record, else a description of the problem."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != info["size"]:
        return f"truncated or resized ({size} bytes, expected {info['size']})"
    if file_digest(path) != info["digest"]:
        return "corrupted (content digest differs)"
    return None


def _find_context_dir(path: Path) -> Path:
    if (path / INPUTS).is_file():
        return path
    root = path / CONTEXT_DIRNAME
    if not root.is_dir() and (path / "output" / CONTEXT_DIRNAME).is_dir():
        root = path / "output" / CONTEXT_DIRNAME  # the data folder of a run without dir_path
    candidates = sorted(p.parent for p in root.glob(f"*/{INPUTS}")) if root.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ContextError(f"no pykilosort run found in {path}: expected {path}/{CONTEXT_DIRNAME}/"
                           f"<recording>/{INPUTS} (pass run()'s dir_path, or its output_dir when "
                           "no dir_path was given).")
    raise ContextError(f"{path} holds several recordings ({[c.name for c in candidates]}); pass "
                       f"one of the folders under {root}.")


def load_context(path) -> Context:
    """Open the context of a finished or interrupted run for inspection.

    ``path`` is the ``dir_path`` given to ``run()`` or a ``.kilosort/<recording>`` folder. Loaded
    (memory-mapped) are the outputs of the steps whose checkpoints chain from the inputs and
    parameters of the last run (context.json): outputs of older runs with other parameters are
    left out, with a warning. The raw data file need not exist any more.
    """
    from .main import pipeline_steps  # main imports this module
    from .pipeline import load_checkpoints

    folder = _find_context_dir(Path(path))
    try:
        inputs = json.loads((folder / INPUTS).read_text())
        raw = RawData.from_description(inputs["raw_data"])
        probe = Probe.from_dict(inputs["probe"])
        params = params_from_json(json.dumps(inputs["params"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ContextError(f"{folder / INPUTS} is unreadable ({exc}); rerun run().") from exc
    if not raw.available:
        logger.warning("raw data %s not found: results load, steps that read raw data cannot run",
                       raw.paths[0])
    ctx = Context(dir_path=folder.parent.parent, raw_data=raw, probe=probe, params=params,
                  output_dir=inputs.get("output_dir"), folder=folder)
    loaded, stale = load_checkpoints(ctx, pipeline_steps(params))
    if stale:
        logger.warning(
            "%s: the checkpoints of step(s) %s were not loaded: they do not follow from the "
            "parameters and inputs of the last run (context.json), being stale, damaged or of "
            "another parameter set; run() with these parameters recomputes them.",
            folder, ", ".join(stale))
    ctx.stale_steps = stale
    _warn_if_export_differs(ctx)
    return ctx


def _warn_if_export_differs(ctx: Context) -> None:
    """The phy folder holds the last export; say so when that was of other parameters."""
    exported = None if ctx.output_dir is None else ctx.output_dir / "params.json"
    if exported is None or not exported.is_file():
        return
    try:
        same = params_from_json(exported.read_text()) == ctx.params
    except (OSError, ValueError):
        same = False
    if not same:
        logger.warning("%s holds the export of other parameters than the last run's: run() with "
                       "these parameters to export them", ctx.output_dir)
