"""The Context: MATLAB's ``rez`` as an object whose intermediates live on disk.

``ctx.raw_data``, ``ctx.probe``, ``ctx.params`` are the inputs; ``ctx.intermediate`` holds rez-named
fields (Wrot, igood, iorig, st3, ...) as they are produced. Each step's outputs are saved under
``<dir_path>/.kilosort/<recording>/`` and recorded in ``manifest.json`` with the step's key and each
file's size and digest, so a later run can trust them, or detect that they are stale, truncated or
corrupted and recompute them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Backend
from .errors import ContextError
from .io import RawData
from .params import Derived, Params, derive, params_from_json
from .probes import Probe
from .utils import Bunch, save_npy_atomic, write_json_atomic

logger = logging.getLogger(__name__)

__all__ = ["Context", "load_context", "file_digest", "MANIFEST", "CONTEXT_DIRNAME"]

CONTEXT_DIRNAME = ".kilosort"
MANIFEST = "manifest.json"
INPUTS = "context.json"
_FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE_BLOCKS, _BLOCK = 64, 64 * 2**10


def file_digest(path: Path) -> str:
    """blake2b of a file: the whole file up to 64 MiB; beyond, 64 evenly spaced 64 KiB blocks.

    Large streams (the proc file) are sampled to keep checks fast; their size is checked exactly.
    """
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        else:
            for offset in np.linspace(0, size - _BLOCK, _SAMPLE_BLOCKS).astype(np.int64):
                f.seek(int(offset))
                h.update(f.read(_BLOCK))
    return h.hexdigest()


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
                 backend: Backend | None = None, output_dir=None):
        self.dir_path = Path(dir_path)
        self.output_dir = None if output_dir is None else Path(output_dir)  # the phy folder
        self.backend = backend or Backend("cpu")
        self.raw_data = raw_data
        self.probe = probe
        self.params = params
        self.path = self.dir_path / CONTEXT_DIRNAME / raw_data.name
        self.intermediate = Bunch()
        self.steps_run: list[str] = []  # steps computed (not loaded) in this process, in order
        self.path.mkdir(parents=True, exist_ok=True)

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
            raise ContextError("the run has not reached the cutoff step: no final sorting yet "
                               "(run without stop_after, or load_context a finished run).")
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
    candidates = sorted(p.parent for p in root.glob(f"*/{INPUTS}")) if root.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ContextError(f"no pykilosort run found in {path}: expected {path}/{CONTEXT_DIRNAME}/"
                           f"<recording>/{INPUTS} (is this the dir_path given to run()?).")
    raise ContextError(f"{path} holds several recordings ({[c.name for c in candidates]}); pass "
                       f"one of the folders under {root}.")


def load_context(path) -> Context:
    """Open the context of a finished or interrupted run for inspection.

    ``path`` is the ``dir_path`` given to ``run()`` or a ``.kilosort/<recording>`` folder. The
    intermediates of every step recorded in the manifest are loaded (memory-mapped).
    """
    folder = _find_context_dir(Path(path))
    try:
        inputs = json.loads((folder / INPUTS).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ContextError(f"{folder / INPUTS} is unreadable ({exc}); rerun run().") from exc
    raw = inputs["raw_data"]
    ctx = Context(dir_path=folder.parent.parent,
                  raw_data=RawData(raw["paths"], n_channels=raw["n_channels"], dtype=raw["dtype"]),
                  probe=Probe.from_dict(inputs["probe"]),
                  params=params_from_json(json.dumps(inputs["params"])),
                  output_dir=inputs.get("output_dir"))
    for step, record in ctx.read_manifest()["steps"].items():
        if not ctx.load_outputs(step, record["key"]):
            logger.warning("step %r of %s could not be loaded", step, folder)
    return ctx
