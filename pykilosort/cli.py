"""Command line: ``pykilosort run | run-many | demo | info``."""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import traceback
from pathlib import Path

from .errors import KilosortError, ParameterError

__all__ = ["main", "parse_param"]

_INF_TOKEN = re.compile(r"(?<![\w.\"])([-+]?)inf(?:inity)?(?![\w\"])", re.IGNORECASE)


def parse_param(text: str) -> tuple[str, object]:
    """``'k=v'`` -> (k, v) with v parsed as JSON when it can be (numbers, lists, true/null)."""
    if "=" not in text:
        raise ParameterError(f"--param expects NAME=VALUE, got {text!r} (e.g. --param fshigh=300).")
    key, value = text.split("=", 1)
    literals = {"True": True, "False": False, "None": None, "inf": float("inf")}
    if value in literals:
        return key.strip(), literals[value]
    for text in (value, _INF_TOKEN.sub(lambda m: m.group(1).lstrip("+") + "Infinity", value)):
        try:  # JSON, then JSON with MATLAB/Python's inf spelled as JSON's Infinity ([0,inf])
            return key.strip(), json.loads(text)
        except json.JSONDecodeError:
            pass
    return key.strip(), value


def _cmd_run(args) -> int:
    from .main import run

    params = dict(parse_param(p) for p in args.param)
    if args.n_channels is not None:
        params["NchanTOT"] = args.n_channels
    ctx = run(args.files, probe=args.probe, dir_path=args.dir, output_dir=args.output,
              device=args.device, stop_after=args.stop_after, clear_context=args.clear_context,
              n_threads=args.threads, **params)
    print(f"ran: {', '.join(ctx.steps_run) or 'nothing, all up to date'}")
    if args.stop_after in (None, "export"):
        print(f"phy folder: {ctx.output_dir}  ({ctx.spike_times.size} spikes, "
              f"{(ctx.cluster_labels == 'good').sum()} good of {ctx.cluster_labels.size} clusters)")
    else:
        print(f"intermediates: {ctx.path}")
    return 0


def _cmd_run_many(args) -> int:
    from .many import COLUMNS, sort_many

    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    try:
        rows = sort_many(args.table, client=client, n_workers=args.workers,
                         n_threads=args.threads, summary_dir=args.summary, rerun=args.rerun,
                         gpu_per_job=args.gpu_per_job)
    finally:
        if client is not None:
            client.close()
    shown = ("name", "status", "wall_s", "peak_rss_mib", "n_good", "error")
    print("\t".join(shown))
    for row in rows:
        print("\t".join(str(row.get(k, "")) for k in shown))
    failed = sum(r["status"] == "failed" for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} jobs sorted ({failed} failed); table: "
          f"sort_many.csv ({', '.join(COLUMNS[:6])}, ...)")
    return 1 if failed else 0


def accuracy_table(rec, ctx) -> str:
    """Per ground-truth unit: its best cluster, label and accuracy, and a summary line."""
    from .evaluate import compare_to_ground_truth

    c = compare_to_ground_truth(true_times=rec.spike_times, true_units=rec.spike_clusters,
                                times=ctx.spike_times, clusters=ctx.spike_clusters, fs=rec.fs)
    labels = ctx.cluster_labels
    acc, recall, precision = c.accuracy, c.recall(), c.precision()
    lines = [f"{'unit':>4} {'SNR':>5} {'spikes':>6} {'cluster':>7} {'label':>5} {'spikes':>6} "
             f"{'accuracy':>8} {'recall':>6} {'precision':>9}"]
    for u in range(c.best.size):
        b = c.best[u]
        found = (f"{b:>7d} {labels[b]:>5} {c.n_sorted[b]:>6d}" if b >= 0 else
                 f"{'-':>7} {'':>5} {'':>6}")
        lines.append(f"{u:>4d} {rec.snr[u]:>5.1f} {c.n_true[u]:>6d} {found} {acc[u]:>8.3f} "
                     f"{recall[u]:>6.3f} {precision[u]:>9.3f}")
    lines.append(f"{(acc >= 0.8).sum()} of {c.best.size} units found with accuracy >= 0.8; "
                 f"{c.false_positive_clusters().size} false-positive and "
                 f"{c.redundant_clusters().size} redundant clusters (of {c.n_sorted.size})")
    return "\n".join(lines)


def _cmd_demo(args) -> int:
    from .main import run
    from .synthetic import load_or_make_synthetic_recording

    out = Path(args.output)
    drift = None if args.drift == "none" else args.drift
    name = "synthetic.bin" if drift is None else f"synthetic_{drift}.bin"
    rec = load_or_make_synthetic_recording(out / name, n_channels=args.channels,
                                           n_units=args.units, duration_s=args.duration,
                                           seed=args.seed, drift=drift)
    print(f"synthetic recording: {rec.bin_path} ({args.channels} channels, {args.units} units, "
          f"{args.duration:g} s{'' if drift is None else f', {drift} drift'})")
    ctx = run(rec.bin_path, probe=rec.probe, dir_path=out if drift is None else out / drift,
              device=args.device, n_threads=args.threads, NT=args.nt,
              drift_correction=drift is not None)
    print(f"ran: {', '.join(ctx.steps_run) or 'nothing, all up to date'}")
    print(f"phy folder and log: {ctx.output_dir}   (phy template-gui {ctx.output_dir / 'params.py'})")
    print(f"intermediates: {ctx.path}")
    print("\nagainst the ground truth (spikes matched within 0.4 ms):")
    print(accuracy_table(rec, ctx))
    if drift is not None:
        print(drift_summary(rec, ctx))
    return 0


def drift_summary(rec, ctx) -> str:
    """How the datashift estimate follows the recording's imposed drift (rigid part)."""
    import numpy as np

    from .drift import batch_centre_times

    dshift = np.asarray(ctx.intermediate.dshift)
    tb = batch_centre_times(ctx, dshift.shape[0])
    imposed = np.interp(tb, rec.drift_times, rec.drift.mean(axis=1))
    est = -dshift.mean(axis=1)  # dshift undoes the displacement, up to a constant
    est, imposed = est - est.mean(), imposed - imposed.mean()
    r = np.corrcoef(est, imposed)[0, 1] if imposed.std() > 0 else float("nan")
    rms = np.sqrt(np.mean((est - imposed) ** 2))
    return (f"\ndrift estimate vs imposed (mean over depth): r = {r:.3f}, rms error {rms:.1f} um "
            f"(figure: {ctx.output_dir / 'drift.png'})")


def _cmd_info(args) -> int:
    from . import __version__
    from .backend import cuda_available, get_backend
    from .kernels.registry import registered

    print(f"pykilosort {__version__}")
    for mod in ("numpy", "scipy", "numba", "probeinterface", "cupy"):
        try:
            print(f"  {mod:15s} {__import__(mod).__version__}")
        except Exception:
            print(f"  {mod:15s} not installed")
    gpu = cuda_available()
    print(f"device (auto): {get_backend('auto').describe()}")
    print(f"\n{'kernel':30s} {'CPU':12s} CUDA")
    for name, devices in registered().items():
        cpu = "numba twin" if "cpu" in devices else "-"
        cuda = ("-" if "cuda" not in devices else "ready (GPU present)" if gpu else
                "available with a GPU")
        print(f"{name:30s} {cpu:12s} {cuda}")
    print(f"\n{'CUDA source':30s} status")
    for path, status in _cuda_sources_status(gpu):
        print(f"{path:30s} {status}")
    return 0


def _cuda_sources_status(gpu: bool) -> list[tuple[str, str]]:
    """Whether each .cu compiles: with CuPy on a GPU, else with nvcc, else not checked (the CPU
    path does not need them)."""
    import shutil

    from .kernels.registry import cuda_files, cuda_module, nvcc_compile

    rows = []
    for path in cuda_files():
        if gpu:
            try:
                cuda_module(path.name)
                status = "compiles (CuPy NVRTC)"
            except Exception as exc:  # report every kernel, do not stop at the first
                status = f"FAILS to compile: {exc}"
        elif shutil.which("nvcc") is None:
            status = "not checked: no GPU and no nvcc (not needed on the CPU)"
        else:
            ok, log = nvcc_compile(path)
            status = ("compiles (nvcc --ptx)" if ok else
                      f"FAILS to compile (nvcc): {log.splitlines()[0] if log else ''}")
        rows.append((path.name, status))
    return rows


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .main import step_names

    ap = argparse.ArgumentParser(prog="pykilosort", description="Kilosort2 spike sorting in Python.")
    ap.add_argument("--version", action="version", version=f"pykilosort {__version__}")
    ap.add_argument("--debug", action="store_true",
                    help="print debug messages and the traceback of an error")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="sort one recording into a phy folder (several files are "
                                   "concatenated in time)")
    r.add_argument("files", nargs="+", help="raw binary file(s)")
    r.add_argument("--probe", help="preset name, chanMap .mat, .prb, .json or SpikeGLX .meta")
    r.add_argument("--n-channels", type=int, help="channels saved in the file (NchanTOT)")
    r.add_argument("--output", help="results folder (default: DIR/output)")
    r.add_argument("--dir", help="folder for intermediates (default: the data's folder)")
    r.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="Kilosort2 parameter, repeatable (e.g. --param fshigh=300 --param Th=[10,4])")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--stop-after", metavar="STEP",
                   help="last step to run: " + ", ".join(step_names()) + " (default: export)")
    r.add_argument("--clear-context", action="store_true", help="recompute every step")
    r.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    r.set_defaults(func=_cmd_run)

    m = sub.add_parser("run-many", help="sort the recordings of a table on a Dask cluster, one "
                                        "job per recording (exit code 1 if any failed)")
    m.add_argument("table", help="CSV with columns dat_path,probe,output_dir[,dir_path,device,"
                                 "name,params] (params: a JSON object), or a JSON list of jobs")
    m.add_argument("--workers", type=int, help="processes of the local cluster (default: a "
                                               "quarter of the cores)")
    m.add_argument("--threads", type=int, help="CPU threads per job")
    m.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local "
                                       "cluster)")
    m.add_argument("--summary", help="folder of sort_many.csv/.json (default: the output "
                                     "folders' parent)")
    m.add_argument("--rerun", action="store_true", help="run the jobs that are up to date too")
    m.add_argument("--gpu-per-job", action="store_true",
                   help="one GPU per job (workers started with --resources GPU=1)")
    m.set_defaults(func=_cmd_run_many)

    d = sub.add_parser("demo", help="sort a built-in synthetic recording")
    d.add_argument("--output", default="pykilosort_demo", help="folder for data and results")
    d.add_argument("--channels", type=int, default=32)
    d.add_argument("--units", type=int, default=16)
    d.add_argument("--duration", type=float, default=30.0, help="seconds")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--nt", type=int, default=64 * 1024 + 64, help="batch length NT")
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d.add_argument("--drift", default="none", choices=["none", "rigid", "nonrigid"],
                   help="make the probe drift (20 um) and sort with Kilosort 2.5's drift "
                        "correction")
    d.add_argument("--threads", type=int)
    d.set_defaults(func=_cmd_demo)

    i = sub.add_parser("info", help="versions, device, and whether each CUDA kernel compiles")
    i.set_defaults(func=_cmd_info)
    return ap


def main(argv=None) -> int:
    """Exit codes: 0 done, 2 bad input (the message says what and how to fix it), 1 a failure of
    pykilosort itself. Tracebacks go to the run's log file, and to the console with --debug."""
    from .logs import add_default_handler

    args = _parser().parse_args(argv)
    level = "DEBUG" if args.debug else "INFO"
    handler = add_default_handler(level) if args.command != "info" else None
    try:
        return args.func(args)
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        log = getattr(exc, "pykilosort_log", None)
        where = f" (traceback in {log})" if log and not args.debug else ""
        if isinstance(exc, KilosortError):
            print(f"pykilosort: error: {exc}{where}", file=sys.stderr)
            return 2
        print(f"pykilosort: internal error: {type(exc).__name__}: {exc}{where}. Please report it "
              "with the log file; --debug prints the traceback.", file=sys.stderr)
        return 1
    finally:
        if handler is not None:  # main() may be called again in one process (tests, notebooks)
            logging.getLogger("pykilosort").removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
