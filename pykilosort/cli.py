"""Command line: ``pykilosort run | demo | info``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import KilosortError, ParameterError

__all__ = ["main", "parse_param"]


def parse_param(text: str) -> tuple[str, object]:
    """``'k=v'`` -> (k, v) with v parsed as JSON when it can be (numbers, lists, true/null)."""
    if "=" not in text:
        raise ParameterError(f"--param expects NAME=VALUE, got {text!r} (e.g. --param fshigh=300).")
    key, value = text.split("=", 1)
    literals = {"True": True, "False": False, "None": None, "inf": float("inf")}
    if value in literals:
        return key.strip(), literals[value]
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def _cmd_run(args) -> int:
    from .main import run

    params = dict(parse_param(p) for p in args.param)
    if args.n_channels is not None:
        params["NchanTOT"] = args.n_channels
    ctx = run(args.files, probe=args.probe, dir_path=args.dir, output_dir=args.output,
              device=args.device, stop_after=args.stop_after, clear_context=args.clear_context,
              n_threads=args.threads, **params)
    print(f"done: {ctx.path}  (ran: {', '.join(ctx.steps_run) or 'nothing, all up to date'})")
    return 0


def _cmd_demo(args) -> int:
    from .main import run
    from .synthetic import load_or_make_synthetic_recording

    out = Path(args.output)
    rec = load_or_make_synthetic_recording(out / "synthetic.bin", n_channels=args.channels,
                                   n_units=args.units, duration_s=args.duration, seed=args.seed)
    print(f"synthetic recording: {rec.bin_path} ({args.channels} channels, {args.units} units, "
          f"{args.duration:g} s)")
    ctx = run(rec.bin_path, probe=rec.probe, dir_path=out, device=args.device,
              n_threads=args.threads, NT=args.nt)
    print(f"results and log in {out / 'output'}; intermediates in {ctx.path}")
    print(f"ran: {', '.join(ctx.steps_run) or 'nothing, all up to date'}")
    return 0


def _cmd_info(args) -> int:
    from . import __version__
    from .backend import cuda_available, get_backend
    from .kernels.registry import cuda_files, cuda_module, nvcc_compile, registered

    print(f"pykilosort {__version__}")
    for mod in ("numpy", "scipy", "numba", "probeinterface", "cupy"):
        try:
            print(f"  {mod:15s} {__import__(mod).__version__}")
        except Exception:
            print(f"  {mod:15s} not installed")
    print(f"device (auto): {get_backend('auto').describe()}")
    print(f"kernels: {registered()}")
    for path in cuda_files():
        if cuda_available():
            try:
                cuda_module(path.name)
                status = "compiles (CuPy NVRTC)"
            except Exception as exc:  # report every kernel, do not stop at the first
                status = f"FAILS: {exc}"
        else:
            ok, log = nvcc_compile(path)
            status = "compiles (nvcc --ptx)" if ok else f"FAILS: {log.splitlines()[0] if log else ''}"
        print(f"  {path.name:20s} {status}")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pykilosort", description="Kilosort2 spike sorting in Python.")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="sort one recording (several files are concatenated in time)")
    r.add_argument("files", nargs="+", help="raw binary file(s)")
    r.add_argument("--probe", help="preset name, chanMap .mat, .prb, .json or SpikeGLX .meta")
    r.add_argument("--n-channels", type=int, help="channels saved in the file (NchanTOT)")
    r.add_argument("--output", help="results folder (default: DIR/output)")
    r.add_argument("--dir", help="folder for intermediates (default: the data's folder)")
    r.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="Kilosort2 parameter, repeatable (e.g. --param fshigh=300 --param Th=[10,4])")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--stop-after", help="last step to run")
    r.add_argument("--clear-context", action="store_true", help="recompute every step")
    r.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser("demo", help="sort a built-in synthetic recording")
    d.add_argument("--output", default="pykilosort_demo", help="folder for data and results")
    d.add_argument("--channels", type=int, default=32)
    d.add_argument("--units", type=int, default=16)
    d.add_argument("--duration", type=float, default=20.0, help="seconds")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--nt", type=int, default=64 * 1024 + 64, help="batch length NT")
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d.add_argument("--threads", type=int)
    d.set_defaults(func=_cmd_demo)

    i = sub.add_parser("info", help="versions, device, and whether each CUDA kernel compiles")
    i.set_defaults(func=_cmd_info)
    return ap


def main(argv=None) -> int:
    from .logs import add_default_handler

    args = _parser().parse_args(argv)
    if args.command != "info":
        add_default_handler("INFO")
    try:
        return args.func(args)
    except KilosortError as exc:
        print(f"pykilosort: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
