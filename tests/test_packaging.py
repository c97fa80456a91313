"""Packaging: the wheel ships every .cu file; importing pykilosort never imports CuPy."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("pykilosort", "cuda"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("pykilosort-*.whl")
    return whl


def test_wheel_contains_every_cuda_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = sorted(p.name for p in (ROOT / "cuda").glob("*.cu"))
    assert sources, "no .cu files in cuda/"
    missing = [s for s in sources if f"pykilosort/cuda/{s}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert "pykilosort/probes/core.py" in names and "pykilosort/kernels/lfilter.py" in names


def test_installed_wheel_finds_kernels_via_importlib_resources(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    code = ("from pykilosort.kernels.registry import cuda_files; import pykilosort; "
            "print(pykilosort.__file__); print(*[p.name for p in cuda_files()])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    first, files = proc.stdout.splitlines()
    assert first.startswith(str(target)) and "lfilter.cu" in files.split()


def test_import_does_not_import_cupy():
    code = ("import sys, pykilosort; pykilosort.run; pykilosort.Probe; import pykilosort.kernels; "
            "print('cupy' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_readme_commands_exist_in_makefile():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme and f"\n{target}:" in makefile
