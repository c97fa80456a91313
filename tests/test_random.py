"""Random streams: the Octave-compatible stream reproduces Octave's rand and randperm exactly."""
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pykilosort.random import NumpyStream, OctaveStream, make_stream

REF = Path(__file__).resolve().parents[1] / "matlab_reference" / "data" / "octave_random.mat"


@pytest.fixture(scope="module")
def octave():
    assert REF.is_file(), f"{REF} is missing: run matlab_reference/run_all.sh"
    return scipy.io.loadmat(REF)


def test_rand_matches_octave_column_major(octave):
    for i, seed in enumerate(octave["seeds"].ravel()):
        np.testing.assert_array_equal(OctaveStream(int(seed)).rand(2, 3), octave["rand_2x3"][:, :, i])


@pytest.mark.parametrize("key, n, k", [("perm_10", 10, None), ("perm_100_5", 100, 5),
                                       ("perm_1000_64", 1000, 64)])
def test_randperm_matches_octave(octave, key, n, k):
    for i, seed in enumerate(octave["seeds"].ravel()):
        np.testing.assert_array_equal(OctaveStream(int(seed)).randperm(n, k) + 1, octave[key][i])


def test_successive_draws_share_the_stream(octave):
    s = OctaveStream(1)
    got = np.concatenate([s.rand(1, 3).ravel(), s.randperm(20, 4) + 1])
    np.testing.assert_array_equal(got, octave["sequence"].ravel())


@pytest.mark.parametrize("kind", ["octave", "numpy"])
def test_streams_are_deterministic_and_valid(kind):
    a, b = make_stream(kind, 5), make_stream(kind, 5)
    np.testing.assert_array_equal(a.randperm(50, 10), b.randperm(50, 10))
    p = make_stream(kind, 6).randperm(30)
    assert sorted(p.tolist()) == list(range(30)) and p.dtype == np.int64
    assert not np.array_equal(make_stream(kind, 7).randperm(30), p)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown random stream 'mt'"):
        make_stream("mt", 1)
    with pytest.raises(ValueError, match="k=11 must be between 0 and n=10"):
        OctaveStream(1).randperm(10, 11)
    assert isinstance(make_stream("numpy", 1), NumpyStream)
