"""pykilosort packaging. The CUDA sources in top-level cuda/ ship as the package pykilosort.cuda."""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "pykilosort/__init__.py").read_text()).group(1)

setup(
    name="pykilosort",
    version=VERSION,
    description="A faithful Python port of the Kilosort2 spike sorter (CUDA via CuPy, or CPU via numba)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-2.0-only",
    python_requires=">=3.10",
    packages=["pykilosort", "pykilosort.kernels", "pykilosort.probes", "pykilosort.cuda"],
    package_dir={"pykilosort.cuda": "cuda"},
    package_data={"pykilosort.cuda": ["*.cu"]},
    include_package_data=True,
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "numba>=0.59",
        "tqdm>=4.60",
        "probeinterface>=0.2.20",
        "threadpoolctl>=3.1",  # one BLAS thread during a sort: results independent of it
    ],
    extras_require={
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=14"],
        # phylib and SpikeInterface (with pandas, for its Kilosort reader): the tests check that
        # both open our phy folders, and run pykilosort as a SpikeInterface sorter
        "test": ["pytest>=7", "pytest-timeout", "wheel", "matplotlib", "phylib>=2.4",
                 "spikeinterface>=0.101", "pandas", "distributed>=2024.1"],
        "spikeinterface": ["spikeinterface>=0.101", "pandas"],
        "dask": ["distributed>=2024.1"],
        "bench": ["spikeinterface>=0.101", "pandas", "psutil", "matplotlib"],
    },
    entry_points={"console_scripts": ["pykilosort = pykilosort.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
        "Intended Audience :: Science/Research",
    ],
)
