"""lfilter: numba twin vs scipy, CUDA vs twin, the registry, and nvcc compilation of every kernel."""
import numpy as np
import pytest
import scipy.signal

from pykilosort.errors import DeviceError
from pykilosort.kernels import lfilter
from pykilosort.kernels.registry import cuda_files, implementation, nvcc_compile, registered

from naive import lfilter_naive

HIGHPASS = scipy.signal.butter(3, 2 * 150 / 30000, "high")
BANDPASS = scipy.signal.butter(3, [2 * 300 / 30000, 2 * 6000 / 30000], "bandpass")
SHAPES = [(1, 1), (2, 3), (17, 1), (1000, 7), (4097, 33), (333, 129)]


def _scipy(x, b, a, reverse, dtype):
    """scipy.signal.lfilter in ``dtype`` with the float32-quantised coefficients our kernel uses
    (float64: exact arithmetic on the same filter; float32: scipy's own rounding)."""
    bb, aa = ((np.asarray(c, np.float64) / a[0]).astype(np.float32).astype(dtype) for c in (b, a))
    xx = np.asarray(x, dtype)
    if reverse:
        return scipy.signal.lfilter(bb, aa, xx[::-1], axis=0)[::-1]
    return scipy.signal.lfilter(bb, aa, xx, axis=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coeffs", [HIGHPASS, BANDPASS], ids=["highpass3", "bandpass6"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("order", ["C", "F"])
def test_twin_equals_naive_loop_exactly(rng, shape, coeffs, reverse, order):
    x = np.asarray(rng.standard_normal(shape) * 300, np.float32, order=order)
    y = lfilter(x, *coeffs, reverse=reverse)
    assert y.dtype == np.float32 and y.shape == shape
    np.testing.assert_array_equal(y, lfilter_naive(x, *coeffs, reverse=reverse))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coeffs", [HIGHPASS, BANDPASS], ids=["highpass3", "bandpass6"])
@pytest.mark.parametrize("reverse", [False, True])
def test_twin_as_accurate_as_scipy_float32(rng, shape, coeffs, reverse):
    """Against the float64 filter, our float32 error is no larger than scipy's own float32 error.

    The rounding of a float32 IIR filter whose poles sit near 1 (150 Hz at 30 kHz) reaches ~4e-4
    of the signal on 4000 samples, whatever the evaluation order: the bound is scipy's own float32
    error (measured: ours is 0.86-0.98x it on long signals), x1.5, plus a floor of 512 float32 eps
    of the signal (6e-5) for signals of a few samples, where one rounding decides the maximum
    (worst seen over 480 random draws: 211 eps).
    """
    x = np.asarray(rng.standard_normal(shape) * 300, np.float32)
    truth = _scipy(x, *coeffs, reverse, np.float64)
    scipy_err = np.abs(_scipy(x, *coeffs, reverse, np.float32) - truth).max()
    our_err = np.abs(lfilter(x, *coeffs, reverse=reverse) - truth).max()
    assert our_err <= 1.5 * scipy_err + 512 * np.finfo(np.float32).eps * np.abs(truth).max()


def _reference(x, b, a, reverse):
    return lfilter_naive(x, b, a, reverse=reverse)


def test_in_place_and_out(rng):
    x = np.asfortranarray(rng.standard_normal((500, 4)).astype(np.float32))
    expected = _reference(x, *HIGHPASS, False)
    out = np.empty_like(x)
    assert lfilter(x, *HIGHPASS, out=out) is out
    lfilter(x, *HIGHPASS, out=x)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(x, out)


def test_forward_backward_equals_flip_filter_flip(rng):
    x = rng.standard_normal((800, 3)).astype(np.float32)
    y = lfilter(lfilter(x, *HIGHPASS), *HIGHPASS, reverse=True)
    flipped = lfilter_naive(lfilter_naive(x, *HIGHPASS)[::-1].copy(), *HIGHPASS)[::-1]
    np.testing.assert_array_equal(y, flipped)


def test_unnormalised_and_fir_coefficients(rng):
    x = rng.standard_normal((300, 2)).astype(np.float32)
    np.testing.assert_array_equal(lfilter(x, [2.0, 1.0], [2.0, -0.5]),
                                  _reference(x, [2.0, 1.0], [2.0, -0.5], False))
    np.testing.assert_array_equal(lfilter(x, [0.25, 0.5, 0.25], [1.0]),
                                  _reference(x, [0.25, 0.5, 0.25], [1.0], False))


def test_bad_inputs():
    with pytest.raises(TypeError, match="float32"):
        lfilter(np.zeros((10, 2)), *HIGHPASS)
    with pytest.raises(ValueError, match="2-D"):
        lfilter(np.zeros(10, np.float32), *HIGHPASS)
    with pytest.raises(ValueError, match="a\\[0\\] must be non-zero"):
        lfilter(np.zeros((10, 2), np.float32), [1.0], [0.0, 1.0])


def test_registry_has_both_implementations():
    assert registered()["lfilter"] == ("cpu", "cuda")
    with pytest.raises(DeviceError, match="no cuda implementation"):
        implementation("no_such_kernel", "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coeffs", [HIGHPASS, BANDPASS], ids=["highpass3", "bandpass6"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("order", ["C", "F"])
def test_cuda_matches_twin(rng, shape, coeffs, reverse, order):
    """The kernel rounds each product and sum on its own (no FMA), in the twin's order: the two
    agree bit for bit (an FMA shifts the recurrence by up to ~1e-3 of the signal: poles near 1)."""
    import cupy

    x = np.asarray(rng.standard_normal(shape) * 300, np.float32, order=order)
    y_gpu = lfilter(cupy.asarray(x, order=order), *coeffs, reverse=reverse)
    assert y_gpu.flags.f_contiguous if order == "F" else y_gpu.flags.c_contiguous
    np.testing.assert_array_equal(y_gpu.get(), lfilter(x, *coeffs, reverse=reverse))


@pytest.mark.nvcc
@pytest.mark.parametrize("path", cuda_files(), ids=lambda p: p.name)
def test_kernel_compiles_with_nvcc(path):
    ok, log = nvcc_compile(path)
    assert ok, f"{path.name} does not compile:\n{log}"


@pytest.mark.nvcc
def test_nvcc_check_catches_a_broken_kernel(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }\n')
    ok, log = nvcc_compile(bad)
    assert not ok and "undefined_name" in log


def test_every_kernel_file_found():
    names = {p.name for p in cuda_files()}
    assert "lfilter.cu" in names


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order", ["C", "F"])
def test_forward_backward_in_one_call(rng, shape, order):
    from pykilosort.kernels import lfilter_forward_backward

    x = np.asarray(rng.standard_normal(shape) * 300, np.float32, order=order)
    expected = lfilter_naive(lfilter_naive(x, *HIGHPASS), *HIGHPASS, reverse=True)
    np.testing.assert_array_equal(lfilter_forward_backward(x, *HIGHPASS), expected)
    lfilter_forward_backward(x, *HIGHPASS, out=x)
    np.testing.assert_array_equal(x, expected)


@pytest.mark.gpu
@pytest.mark.parametrize("order", ["C", "F"])
def test_cuda_forward_backward_matches_twin(rng, order):
    import cupy

    from pykilosort.kernels import lfilter_forward_backward

    x = np.asarray(rng.standard_normal((4097, 33)) * 300, np.float32, order=order)
    y_gpu = lfilter_forward_backward(cupy.asarray(x, order=order), *HIGHPASS).get()
    np.testing.assert_array_equal(y_gpu, lfilter_forward_backward(x, *HIGHPASS))  # no FMA
