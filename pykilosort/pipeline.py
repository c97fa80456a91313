"""The pipeline as a table of steps, and the engine that runs or skips them.

A step's key hashes its name and version, the code version, the parameters it reads and the key of
the step before it (the first step chains from the raw data and probe). A step is skipped only when
the manifest holds the same key and its files are intact; so a changed parameter reruns the steps
that read it and every step after them, and nothing else.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from . import __version__
from .context import Context
from .errors import ParameterError
from .heap import release_free_memory
from .logs import peak_rss_mib, reset_peak_rss
from .params import _jsonable, params_reading

logger = logging.getLogger(__name__)

__all__ = ["Step", "step_key", "run_steps", "base_key", "load_checkpoints"]


@dataclass(frozen=True)
class Step:
    """One pipeline stage.

    name: identifier used by ``stop_after`` and in the manifest (and the params table's steps).
    func: ``func(ctx) -> {rez_name: array | Path | scalar}``; reads ``ctx.intermediate``.
    version: bump when the step's code changes its output, to invalidate old checkpoints.
    subfolder: save the step's arrays in ``<context>/<name>/`` (steps that update rez fields an
        earlier step wrote, such as st3 after merges, so both checkpoints stay intact).
    """

    name: str
    func: Callable[[Context], Mapping]
    doc: str = ""
    version: int = 1
    subfolder: bool = False


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def base_key(ctx: Context) -> str:
    """Key of the inputs: raw data identity, probe, and the parameters of reading the data."""
    io_params = {p: _jsonable(ctx.params[p]) for p in params_reading("io")}
    return _digest({"raw": ctx.raw_data.key(), "probe": ctx.probe.key(), "io": io_params})


def step_key(step: Step, ctx: Context, previous: str) -> str:
    params = {p: _jsonable(ctx.params[p]) for p in params_reading(step.name)}
    return _digest({"step": step.name, "version": step.version, "code": __version__,
                    "params": params, "previous": previous})


def run_steps(ctx: Context, steps: list[Step], *, stop_after: str | None = None) -> Context:
    """Run ``steps`` in order, skipping those whose checkpoint matches; stop after ``stop_after``."""
    names = [s.name for s in steps]
    if stop_after is not None and stop_after not in names:
        raise ParameterError(f"stop_after={stop_after!r} is not a step; steps are {names}.")
    previous = base_key(ctx)
    for step in steps:
        key = step_key(step, ctx, previous)
        if ctx.load_outputs(step.name, key):
            logger.info("step %-14s up to date (key %s): loaded from %s", step.name, key, ctx.path)
        else:
            _compute(ctx, step, key)
        previous = key
        if step.name == stop_after:
            logger.info("stopping after step %r as asked", stop_after)
            break
    return ctx


def load_checkpoints(ctx: Context, steps: list[Step]) -> tuple[list[str], list[str]]:
    """Load the checkpoints of ``steps`` as long as their keys chain from ``ctx``'s inputs and
    parameters (what run_steps would skip). Returns (loaded, stale): the steps loaded, and those
    the manifest holds that were not (other parameters or inputs, damaged, or after such a step).
    """
    previous, loaded = base_key(ctx), []
    for step in steps:
        key = step_key(step, ctx, previous)
        if not ctx.load_outputs(step.name, key):
            break
        loaded.append(step.name)
        previous = key
    stale = [name for name in ctx.read_manifest()["steps"] if name not in loaded]
    return loaded, stale


def _compute(ctx: Context, step: Step, key: str) -> None:
    logger.info("step %-14s running (key %s)", step.name, key)
    # the step's own peak, so that a run's log says which step needs the memory (Linux; elsewhere
    # the kernel keeps one lifetime peak, and each step reports the process's peak so far); the
    # memory the last step freed and the heap kept for its batches goes back first
    release_free_memory()
    own = reset_peak_rss()
    t0 = time.perf_counter()
    outputs = step.func(ctx)
    wall = time.perf_counter() - t0
    rss, process = peak_rss_mib(since_reset=True), peak_rss_mib()
    ctx.save_outputs(step.name, key, dict(outputs),
                     extra={"wall_s": round(wall, 3), "peak_rss_mib": round(rss, 1),
                            "peak_rss_scope": "step" if own else "process"},
                     subfolder=step.name if step.subfolder else None)
    ctx.steps_run.append(step.name)
    logger.info("step %-14s done in %.2f s, peak memory %.0f MiB %s (process %.0f MiB)", step.name,
                wall, rss, "in the step" if own else "so far", process)
