"""Test gating: GPU tests run only where CuPy sees a GPU; slow tests only with --runslow."""
import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    from pykilosort.backend import cuda_available

    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU visible to CuPy")
    have_gpu = None
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords:
            have_gpu = cuda_available() if have_gpu is None else have_gpu
            if not have_gpu:
                item.add_marker(skip_gpu)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def linear_probe(n, *, NchanTOT=None):
    from pykilosort.probes import Probe

    return Probe(NchanTOT=NchanTOT or n, chanMap=np.arange(n), xc=np.tile([0.0, 32.0], n)[:n],
                 yc=np.arange(n) * 20.0)


def write_noise_with_spikes(path, *, n_samples, n_channels, seed=0, n_spikes=2000, amp=150):
    """A small int16 recording: Gaussian noise plus negative 10-sample bumps on 3 channels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, n_channels)) * 20
    for t in rng.integers(100, n_samples - 100, n_spikes):
        ch = rng.integers(0, max(n_channels - 2, 1))
        x[t:t + 10, ch:ch + 3] -= amp
    x.astype(np.int16).tofile(path)
    return path
