"""Shared by the benchmarks: the machine a result was measured on, and measured child processes."""
import json
import os
import platform
import subprocess
import sys
import tempfile


def run_json_child(code: str, *args: str, python: str | None = None) -> dict:
    """Run ``code`` in a fresh Python process (``python``, default this one) with ``args`` and a
    scratch folder appended; return the JSON object it prints last (fresh processes give honest
    peak-memory figures)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([python or sys.executable, "-c", code, *map(str, args), tmp],
                              capture_output=True,
                              text=True, env={"PYKILOSORT_PROGRESS": "0", "PATH": "/usr/bin:/bin"})
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "processor": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        info["cpu_model"] = names[0] if names else ""
        with open("/proc/meminfo") as f:
            info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        import numba

        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    try:
        from pykilosort.backend import cuda_available, get_backend

        info["gpu"] = get_backend("cuda").describe() if cuda_available() else None
    except Exception as exc:  # noqa: BLE001 - a description must not fail the benchmark
        info["gpu"] = f"unknown ({exc})"
    return info


def write_result(benchmark: str, rows: list, out) -> dict:
    """The benchmark's result (rows, machine, time); written as JSON to ``out`` when given."""
    import time

    result = {"benchmark": benchmark, "machine": describe(), "rows": rows,
              "when": time.strftime("%Y-%m-%d %H:%M")}
    if out:
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result
