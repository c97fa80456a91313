"""pytest integration (hooks imported by tests/conftest.py).

Where a real CuPy sees a GPU, ``gpu``-marked tests run on it. Elsewhere they run on the CPU
executor: the stand-in ``cupy`` goes first on sys.path, and each gpu test runs once per schedule
of PYKILOSORT_CUDA_CPU_SCHEDULES (default "forward,random:7"), with the stand-in's GPU visible
only during that test. PYKILOSORT_CUDA_CPU=0 turns the executor off (gpu tests are then skipped),
=1 uses it even where a GPU exists.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from . import executor

FAKE_CUPY = Path(__file__).resolve().parent / "fake_cupy"
_state = {"mode": None, "why": ""}


def mode() -> str | None:
    """'gpu', 'executor', or None (gpu tests skipped; ``why()`` says why)."""
    return _state["mode"]


def why() -> str:
    return _state["why"]


def _real_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _use_stand_in() -> None:
    for name in [m for m in sys.modules if m == "cupy" or m.startswith(("cupy.", "cupyx"))]:
        del sys.modules[name]  # a real CuPy without a GPU was imported by the probe
    sys.path.insert(0, str(FAKE_CUPY))
    import cupy

    assert cupy.__version__.endswith("cuda-cpu"), cupy.__file__
    _reset_backend_probe()


def _reset_backend_probe() -> None:
    from pykilosort.backend import _cuda_probe

    _cuda_probe.cache_clear()


def pytest_configure(config):
    choice = os.environ.get("PYKILOSORT_CUDA_CPU", "auto")
    if choice != "1" and _real_gpu():
        _state.update(mode="gpu")
        return
    if choice == "0":
        _state.update(mode=None, why="no CUDA GPU visible to CuPy (PYKILOSORT_CUDA_CPU=0)")
        return
    reason = executor.available()
    if reason:
        _state.update(mode=None, why=f"no CUDA GPU, and the CPU executor cannot run: {reason}")
        return
    _use_stand_in()
    _state.update(mode="executor")


def pytest_report_header(config):
    return {"gpu": "gpu tests: on the GPU",
            "executor": "gpu tests: .cu kernels on the CPU executor (tests/cuda_cpu), schedules "
                        + ", ".join(_schedules()),
            None: f"gpu tests: skipped ({why()})"}[mode()]


def _schedules() -> list[str]:
    return os.environ.get("PYKILOSORT_CUDA_CPU_SCHEDULES", "forward,random:7").split(",")


def pytest_generate_tests(metafunc):
    """Each gpu test once per schedule; ``@pytest.mark.gpu(once=True)`` marks a test too slow on
    the executor for more than the first schedule (end-to-end runs, full-size batches)."""
    marker = metafunc.definition.get_closest_marker("gpu")
    if mode() == "executor" and marker is not None:
        schedules = _schedules()[:1] if marker.kwargs.get("once") else _schedules()
        metafunc.fixturenames.append("cuda_cpu_schedule")
        metafunc.parametrize("cuda_cpu_schedule", schedules)


@pytest.fixture(autouse=True)
def cuda_cpu_gpu(request):
    """For a gpu test on the executor: its GPU visible, under the test's schedule."""
    callspec = getattr(request.node, "callspec", None)
    schedule = callspec.params.get("cuda_cpu_schedule") if callspec else None
    if schedule is None:
        yield None
        return
    import cupy

    executor.configure(schedule=schedule)
    cupy._visible = True
    _reset_backend_probe()
    try:
        yield schedule
    finally:
        cupy._visible = False
        executor.configure(schedule="forward")
        _reset_backend_probe()
