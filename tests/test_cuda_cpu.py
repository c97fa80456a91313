"""The CPU executor of .cu kernels (tests/cuda_cpu) tested on its own: barriers, schedules, shared
memory poisoning, argument and launch checks, and the stand-in CuPy's strictness. These run where
the executor runs the gpu tests (no GPU); on a GPU machine they are skipped."""
import numpy as np
import pytest

from cuda_cpu import executor, plugin

pytestmark = pytest.mark.skipif(plugin.mode() != "executor",
                                reason="the CPU executor stands in only where no GPU is visible")

SOURCE = r"""
extern "C" __global__ void block_sum(const float* x, float* out, int n)
{
    __shared__ float partial[256];
    const int t = threadIdx.x;
    partial[t] = t < n ? x[t + blockIdx.x * n] : 0.0f;
    __syncthreads();
    for (int half = 128; half > 0; half /= 2) {
        if (t < half) partial[t] = __fadd_rn(partial[t], partial[t + half]);
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = partial[0];
}

extern "C" __global__ void last_writer(int* out)
{
    __shared__ int who;
    who = threadIdx.x;   // a race: the schedule decides which thread writes last
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = who;
}

extern "C" __global__ void read_unwritten(float* out)
{
    __shared__ float never_written[4];
    out[threadIdx.x] = never_written[threadIdx.x];
}

extern "C" __global__ void dynamic_copy(const double* x, double* out)
{
    extern __shared__ double buffer[];
    buffer[threadIdx.x] = 2.0 * x[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = buffer[blockDim.x - 1 - threadIdx.x];
}

extern "C" __global__ void divergent(int* out)
{
    if (threadIdx.x == 0) { __syncthreads(); }
    else { __syncthreads(); }
    out[threadIdx.x] = 1;
}

__global__ void counter(int* total)   // C++ linkage, as the original mex kernels are
{
    atomicAdd(total, 1);
}
"""


@pytest.fixture(scope="module")
def module():
    return executor.Module(SOURCE, name="selftest")


@pytest.fixture(autouse=True)
def forward_schedule():
    yield
    executor.configure(schedule="forward", poison=True)


def test_barriers_give_the_same_sum_under_every_schedule(module):
    import cupy

    x = np.random.default_rng(0).standard_normal((3, 200)).astype(np.float32)
    expected = None
    for schedule in ("forward", "reverse", "random:3"):
        executor.configure(schedule=schedule)
        out = cupy.zeros(3, np.float32)
        module.get_function("block_sum")((3,), (256,), (cupy.asarray(x), out, np.int32(200)))
        got = out.get()
        np.testing.assert_allclose(got, x.sum(axis=1, dtype=np.float64), rtol=1e-5)
        expected = got if expected is None else expected
        np.testing.assert_array_equal(got, expected)  # a race-free kernel: schedule-independent


def test_schedules_change_the_winner_of_a_race(module):
    import cupy

    winners = {}
    for schedule in ("forward", "reverse"):
        executor.configure(schedule=schedule)
        out = cupy.zeros(1, np.int32)
        module.get_function("last_writer")((1,), (64,), (out,))
        winners[schedule] = int(out.get()[0])
    assert winners == {"forward": 63, "reverse": 0}


def test_unwritten_shared_memory_reads_as_nan(module):
    import cupy

    out = cupy.zeros(4, np.float32)
    module.get_function("read_unwritten")((1,), (4,), (out,))
    assert np.isnan(out.get()).all()


def test_dynamic_shared_memory(module):
    import cupy

    x = np.arange(8.0)
    out = cupy.zeros(8, np.float64)
    module.get_function("dynamic_copy")((1,), (8,), (cupy.asarray(x), out), shared_mem=8 * 8)
    np.testing.assert_array_equal(out.get(), 2 * x[::-1])


def test_cpp_linkage_kernels_and_atomics(module):
    import cupy

    total = cupy.zeros(1, np.int32)
    module.get_function("counter")((5,), (96,), (total,))
    assert int(total.get()[0]) == 480


@pytest.mark.parametrize("args, words", [
    (lambda cp: (cp.zeros(3, np.float32), cp.zeros(3, np.float32), 200), "got i8"),
    (lambda cp: (np.zeros(3, np.float32), cp.zeros(3, np.float32), np.int32(2)), "host numpy array"),
    (lambda cp: (cp.zeros(3, np.float64), cp.zeros(3, np.float32), np.int32(2)), "array of float64"),
    (lambda cp: (cp.zeros(3, np.float32), cp.zeros(3, np.float32)), "takes 3 arguments"),
    (lambda cp: (cp.zeros((4, 4), np.float32)[:, 1], cp.zeros(3, np.float32), np.int32(2)),
     "non-contiguous"),
])
def test_arguments_are_checked_against_the_signature(module, args, words):
    import cupy

    with pytest.raises(executor.ArgumentError, match=words):
        module.get_function("block_sum")((1,), (256,), args(cupy))


def test_launches_a_gpu_would_refuse(module):
    import cupy

    out = cupy.zeros(2048, np.int32)
    with pytest.raises(executor.LaunchError, match="invalid launch configuration"):
        module.get_function("divergent")((1,), (2048,), (out,))
    with pytest.raises(executor.LaunchError, match="different __syncthreads"):
        module.get_function("divergent")((1,), (32,), (out,))
    with pytest.raises(AttributeError, match="no __global__ function 'nope'"):
        module.get_function("nope")


def test_stand_in_cupy_is_as_strict_as_cupy():
    import cupy

    dev = cupy.asfortranarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(dev)
    with pytest.raises(TypeError):
        dev + np.ones((2, 3))  # a host array in a device operation
    assert dev.flags.f_contiguous and dev.get().flags.c_contiguous  # get() copies to C order
    assert np.isnan(cupy.empty(4, np.float32).get()).all()  # fresh memory is not zeros
    assert type(dev.sum()).__module__ == "cupy"  # reductions stay on the device
    np.testing.assert_array_equal((dev * 2).get(), np.arange(6.0).reshape(2, 3) * 2)
