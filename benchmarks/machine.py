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


def _tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # the process ended while we looked
            children.setdefault(ppid, []).append(int(entry))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def _process_memory_bytes(pid: int) -> tuple[int, int]:
    """(resident, proportional) set size of one process; (0, 0) once it is gone. The
    proportional size divides each shared page among the processes that map it, so a sum over
    a parent and its forked workers counts every page once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            kib = dict(line.split()[:2] for line in f if line.startswith(("Rss:", "Pss:")))
        return int(kib["Rss:"]) * 1024, int(kib["Pss:"]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, 0


def _tree_memory_bytes(root: int) -> tuple[int, int]:
    """Summed (resident, proportional) set size of ``root`` and its descendants."""
    sizes = [_process_memory_bytes(pid) for pid in _tree_pids(root)]
    return sum(s[0] for s in sizes), sum(s[1] for s in sizes)


def run_limited(cmd: list[str], *, timeout_s: float, env: dict | None = None,
                sample_s: float = 0.25) -> dict:
    """Run ``cmd`` in its own process group under a wall-clock limit, sampling the resident
    memory of its whole process tree (sorters that fork workers are measured in full).

    Returns returncode (None on timeout), timed_out, wall_s (outer, start-up included),
    peak_tree_rss_mib (resident memory summed over the tree: pages shared by forked workers
    count once per process, an upper bound), peak_tree_pss_mib (proportional set size summed
    over the tree: each page counted once, the tree's true footprint), and the tails of stdout
    and stderr. A timed-out tree is killed."""
    import signal
    import time

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env,
                                start_new_session=True)
        peak, peak_pss, timed_out = 0, 0, False
        while proc.poll() is None:
            rss, pss = _tree_memory_bytes(proc.pid)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            if time.perf_counter() - t0 > timeout_s:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(sample_s)
        try:  # workers a finished sorter left behind must not run on into the next one
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {"returncode": None if timed_out else proc.returncode, "timed_out": timed_out,
            "outer_wall_s": wall, "peak_tree_rss_mib": peak / 2**20,
            "peak_tree_pss_mib": peak_pss / 2**20,
            "stdout_tail": stdout[-4000:], "stderr_tail": stderr[-4000:]}


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
