"""Many recordings at once: one :func:`~pykilosort.main.run` per recording on a Dask cluster.

    from pykilosort import sort_many
    table = sort_many([{"dat_path": "m1/s1.bin", "probe": "neuropixels1", "output_dir": "out/m1s1"},
                       {"dat_path": "m1/s2.bin", "probe": "neuropixels1", "output_dir": "out/m1s2",
                        "params": {"Th": [9, 3]}}])

Each job is an ordinary ``run()`` in a Dask worker, so it resumes from its own checkpoints when it
is submitted again. A job that fails (bad file, bad probe, a worker killed under it) is a row of the
returned table with its error; it never costs another job its result. The table (status, wall
time, peak memory, units found, error) is written as ``sort_many.csv`` and ``sort_many.json``,
and each job's row as ``sort_job.json`` in its output folder. Submitting the same jobs again
reruns only those that failed or changed (another file, probe or parameter); the others are
reported as ``up to date`` without touching a worker.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import threading
import time
import traceback
from pathlib import Path

from .errors import ParameterError
from .utils import write_json_atomic, write_text_atomic

__all__ = ["sort_many", "read_jobs", "JOB_RECORD", "COLUMNS"]

logger = logging.getLogger("pykilosort")

JOB_RECORD = "sort_job.json"  # a job's row, in its output folder: what a resubmission checks
COLUMNS = ("name", "status", "wall_s", "peak_rss_mib", "n_good", "n_clusters", "n_spikes",
           "output_dir", "dat_path", "error", "fingerprint")
_JOB_KEYS = ("dat_path", "probe", "output_dir", "dir_path", "params", "device", "name")


def read_jobs(path) -> list[dict]:
    """Jobs from a table: CSV (header ``dat_path,probe,output_dir[,dir_path,device,name,params]``,
    ``params`` a JSON object such as ``{"Th": [9, 3]}``) or a JSON list of such objects."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise ParameterError(f"{path}: expected a JSON list of jobs, got {type(rows).__name__}.")
        return rows
    with open(path, newline="") as f:
        rows = [{k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
                for row in csv.DictReader(f)]
    for i, row in enumerate(rows, start=2):
        text = row.get("params") or "{}"
        try:
            row["params"] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParameterError(f"{path} line {i}: params must be a JSON object such as "
                                 f'{{"Th": [9, 3]}}, got {text!r} ({exc.msg}).') from None
        for key in ("dir_path", "device", "name", "probe"):
            if row.get(key) == "":
                row[key] = None
    return rows


def _normalise(jobs) -> list[dict]:
    if isinstance(jobs, (str, os.PathLike)):
        jobs = read_jobs(jobs)
    out, names = [], set()
    for i, job in enumerate(jobs):
        job = dict(job)
        unknown = set(job) - set(_JOB_KEYS)
        if unknown:
            raise ParameterError(f"job {i}: unknown field(s) {sorted(unknown)}; a job has "
                                 f"{', '.join(_JOB_KEYS)} (run() parameters go in 'params').")
        for key in ("dat_path", "output_dir"):
            if not job.get(key):
                raise ParameterError(f"job {i}: '{key}' is required (every job writes its "
                                     "results to its own output_dir).")
        # absolute: a worker's current folder need not be ours
        job["output_dir"] = str(Path(job["output_dir"]).absolute())
        dat = job["dat_path"]
        job["dat_path"] = ([str(Path(p).absolute()) for p in dat] if isinstance(dat, (list, tuple))
                           else str(Path(dat).absolute()))
        probe = job.get("probe")
        if isinstance(probe, (str, os.PathLike)) and Path(probe).suffix:
            job["probe"] = str(Path(probe).absolute())
        job["params"] = dict(job.get("params") or {})
        job["name"] = job.get("name") or Path(job["output_dir"]).name
        if job["name"] in names:
            raise ParameterError(f"job {i}: the name {job['name']!r} is used twice; give each job "
                                 "its own output_dir (or name).")
        names.add(job["name"])
        out.append(job)
    dirs = [j["output_dir"] for j in out]
    if len(set(dirs)) != len(dirs):
        raise ParameterError("two jobs share an output_dir; each recording needs its own.")
    return out


def _file_state(path) -> list:
    """What identifies a file's content cheaply: resolved path, size, modification time."""
    p = Path(path)
    if not p.exists():
        return [str(p), None, None]
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def fingerprint(job: dict) -> str:
    """Hash of what a job's result depends on: its files (size and time), probe, parameters,
    device and pykilosort's version. A changed fingerprint makes a finished job run again."""
    from . import __version__

    dat = job["dat_path"] if isinstance(job["dat_path"], (list, tuple)) else [job["dat_path"]]
    probe = job.get("probe")
    if isinstance(probe, (str, os.PathLike)) and Path(probe).suffix:
        probe_state = _file_state(probe)  # a probe file: its content may change
    elif hasattr(probe, "to_dict"):
        probe_state = probe.to_dict()  # a Probe: every coordinate (a repr would elide some)
    else:
        probe_state = repr(probe)  # a preset name, a dict, None
    state = {"dat": [_file_state(p) for p in dat], "probe": probe_state,
             "params": job["params"], "device": job.get("device") or "auto",
             "dir_path": job.get("dir_path"), "version": __version__}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=repr).encode()).hexdigest()[:16]


class _PeakRss:
    """Peak resident memory of this process while a job runs (a worker outlives its jobs, so
    the process's lifetime peak would carry one job's peak into the next)."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s, self.peak = interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def current() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: the process's lifetime peak is the best we have
            from .logs import peak_rss_mib  # ru_maxrss in the platform's unit; NaN on Windows

            mib = peak_rss_mib()
            return 0 if mib != mib else int(mib * 2**20)

    def _sample(self):
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.current())

    def __enter__(self):
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def run_job(job: dict, n_threads: int | None = None) -> dict:
    """One job, where it runs (a Dask worker): ``run()``, timed and measured; any exception is
    caught and becomes the row's error, so the job's failure stays its own. The row is also
    written to ``<output_dir>/sort_job.json``."""
    from .main import run

    row = {"name": job["name"], "dat_path": str(job["dat_path"]),
           "output_dir": job["output_dir"], "fingerprint": fingerprint(job), "error": ""}
    t0 = time.perf_counter()
    with _PeakRss() as rss:
        try:
            ctx = run(job["dat_path"], probe=job.get("probe"), dir_path=job.get("dir_path"),
                      output_dir=job["output_dir"], device=job.get("device") or "auto",
                      n_threads=n_threads, **job["params"])
            labels = ctx.cluster_labels
            row.update(status="ok", n_good=int((labels == "good").sum()),
                       n_clusters=int(labels.size), n_spikes=int(ctx.spike_times.size))
        except Exception as exc:  # the job's own failure: reported in its row
            log = getattr(exc, "pykilosort_log", None)
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}" + (
                f" (log: {log})" if log else ""), traceback=traceback.format_exc()[-4000:])
    row.update(wall_s=round(time.perf_counter() - t0, 2), peak_rss_mib=round(rss.peak / 2**20, 1))
    try:
        Path(job["output_dir"]).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(job["output_dir"]) / JOB_RECORD, row)
    except OSError as exc:  # an unwritable output folder is reported, not raised
        row["error"] += f" (and {JOB_RECORD} could not be written: {exc})"
    return row


def _up_to_date(job: dict) -> dict | None:
    """The job's previous row when it finished with this very fingerprint and its phy folder is
    still there; None when it must run."""
    out = Path(job["output_dir"])
    try:
        row = json.loads((out / JOB_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if row.get("status") != "ok" or row.get("fingerprint") != fingerprint(job):
        return None
    if not (out / "params.py").exists() or not (out / "spike_times.npy").exists():
        return None
    return {**row, "status": "up to date"}


def _local_client(n_workers: int):
    """Worker processes that each run one job at a time (the job's own threads do the work)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           memory_limit=0, dashboard_address=None)
    return Client(cluster), cluster


def _default_workers(n_jobs: int) -> int:
    # a sort uses every thread it is given: a few wide workers beat many narrow ones (memory)
    return max(1, min(n_jobs, (os.cpu_count() or 1) // 4 or 1))


def sort_many(jobs, *, client=None, n_workers: int | None = None, n_threads: int | None = None,
              summary_dir=None, gpu_per_job: bool = False, rerun: bool = False) -> list[dict]:
    """Sort many recordings, one ``run()`` per recording, on a Dask ``distributed`` cluster.

    Args:
        jobs: a list of dicts (``dat_path``, ``probe``, ``output_dir``; optional ``dir_path``,
            ``device``, ``name`` and ``params``, a dict of run() parameters), or the path of a
            CSV/JSON table of them (:func:`read_jobs`).
        client: a ``distributed.Client`` (for example on a ``dask_jobqueue.SLURMCluster``).
            None: a ``LocalCluster`` of ``n_workers`` processes, closed at the end.
        n_workers: workers of the local cluster (default: a quarter of the cores, at least 1,
            at most the number of jobs).
        n_threads: CPU threads each job uses (default: the local cluster's share of the cores,
            cores // n_workers; with a ``client``: all the worker's cores).
        summary_dir: where ``sort_many.csv`` and ``sort_many.json`` go (default: the folder
            that holds the output folders, when they share one; else the current folder).
        gpu_per_job: submit each job with ``resources={"GPU": 1}`` (workers started with
            ``--resources GPU=1``: one job per GPU at a time).
        rerun: run every job again, even those up to date (each still resumes from its
            checkpoints; pass ``params={"clear_context": ...}`` through run() to recompute).

    Returns:
        One row (dict, keys :data:`COLUMNS`) per job in the order given: status 'ok', 'failed'
        or 'up to date', wall time (s), peak memory of the job (MiB), good units, clusters,
        spikes, and the error of a failed job.
    """
    jobs = _normalise(jobs)
    rows: list[dict | None] = [None if rerun else _up_to_date(j) for j in jobs]
    todo = [i for i, r in enumerate(rows) if r is None]
    logger.info("sort_many: %d jobs, %d to run, %d up to date", len(jobs), len(todo),
                len(jobs) - len(todo))
    if todo:
        own = client is None
        if own:
            n_workers = n_workers or _default_workers(len(todo))
            n_threads = n_threads or max(1, (os.cpu_count() or 1) // n_workers)
            client, cluster = _local_client(n_workers)
        try:
            _run_on(client, jobs, todo, rows, n_threads=n_threads, gpu_per_job=gpu_per_job)
        finally:
            if own:
                client.close()
                cluster.close()
    _write_summary(rows, summary_dir or _common_parent(jobs))
    return rows


def _run_on(client, jobs, todo, rows, *, n_threads, gpu_per_job) -> None:
    from distributed import as_completed

    futures = {}
    for i in todo:
        job = jobs[i]
        key = f"pykilosort-{job['name']}-{fingerprint(job)}-{time.time_ns()}"
        fut = client.submit(run_job, job, n_threads, key=key, pure=False,
                            resources={"GPU": 1} if gpu_per_job else None)
        futures[fut] = i
    for done, fut in enumerate(as_completed(list(futures)), start=1):
        i = futures[fut]
        job = jobs[i]
        try:
            rows[i] = fut.result()
        except Exception as exc:  # run_job catches the job's own errors: this is Dask's
            why = (" (the worker running this job died: out of memory, killed, or its node "
                   "failed; submit the jobs again to resume it from its checkpoints)"
                   if type(exc).__name__ == "KilledWorker" else
                   " (raised by Dask or the worker's environment, not by the sort: for "
                   "example a worker without pykilosort)")
            rows[i] = {"name": job["name"], "status": "failed", "dat_path": str(job["dat_path"]),
                       "output_dir": job["output_dir"], "fingerprint": fingerprint(job),
                       "error": f"{type(exc).__name__}: {exc}{why}"}
        row = rows[i]
        logger.info("sort_many: [%d/%d] %s %s%s", done, len(futures), row["name"], row["status"],
                    f" ({row['error']})" if row["status"] == "failed" else
                    f" in {row.get('wall_s', 0):.0f} s, {row.get('n_good')} good units")


def _common_parent(jobs) -> Path:
    parents = {Path(j["output_dir"]).parent for j in jobs}
    return parents.pop() if len(parents) == 1 else Path.cwd()


def _write_summary(rows, folder) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = [{k: r.get(k, "") for k in COLUMNS} for r in rows]
    write_json_atomic(folder / "sort_many.json", table)
    lines = [",".join(COLUMNS)] + [",".join(_csv_cell(r[k]) for k in COLUMNS) for r in table]
    write_text_atomic(folder / "sort_many.csv", "\n".join(lines) + "\n")
    logger.info("sort_many: table of %d jobs in %s", len(rows), folder / "sort_many.csv")


def _csv_cell(value) -> str:
    text = "" if value is None else str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
