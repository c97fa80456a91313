// lfilter.cu: IIR filtering along time for many channels at once (single precision).
//
// Direct form II transposed, the recurrence of MATLAB/Octave filter() and scipy.signal.lfilter:
//   y[t]   = z[0] + b[0] x[t]
//   z[k]   = z[k+1] - a[k+1] y[t] + b[k+1] x[t]     (k = 0 .. order-2, Octave's order)
//   z[o-1] = b[o] x[t] - a[o] y[t]
// with a[0] == 1 (coefficients are normalised on the host). One thread filters one channel; the
// strides (in elements) let the same kernel read channel-fastest data (coalesced across threads)
// or time-fastest data. passes: 1 = forward, -1 = on the time-reversed signal, 2 = forward then
// reversed (MATLAB gpufilter's flipud(filter(b, a, flipud(filter(b, a, x))))). x may equal y.
// Arithmetic goes through __fmul_rn/__fadd_rn/__fsub_rn, so the result equals the numba twin's
// bit for bit (the PTX has no fma).

#ifndef LFILTER_MAX_ORDER
#define LFILTER_MAX_ORDER 8
#endif

__device__ void lfilter_pass(const float* x, float* y, const float* bb, const float* aa,
                             const int order, const long long n_time, const long long xs,
                             const long long ys, const bool reverse)
{
    float z[LFILTER_MAX_ORDER + 1];
    for (int k = 0; k <= order; k++) z[k] = 0.0f;
    for (long long i = 0; i < n_time; i++) {
        const long long t = reverse ? n_time - 1 - i : i;
        const float xi = x[t * xs];
        // Every product and sum rounded on its own, in the twin's order ((z - a y) + b x): nvcc
        // would otherwise fuse them into FMAs, and the poles near 1 let the difference grow.
        const float yi = __fadd_rn(z[0], __fmul_rn(bb[0], xi));
        for (int k = 0; k < order - 1; k++)
            z[k] = __fadd_rn(__fsub_rn(z[k + 1], __fmul_rn(aa[k + 1], yi)),
                             __fmul_rn(bb[k + 1], xi));
        if (order > 0) z[order - 1] = __fsub_rn(__fmul_rn(bb[order], xi), __fmul_rn(aa[order], yi));
        y[t * ys] = yi;
    }
}

extern "C" __global__ void lfilter_f32(const float* x, float* y,
                                       const float* __restrict__ b, const float* __restrict__ a,
                                       const int order, const long long n_time,
                                       const long long n_chan,
                                       const long long x_stride_t, const long long x_stride_c,
                                       const long long y_stride_t, const long long y_stride_c,
                                       const int passes)
{
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_chan || order > LFILTER_MAX_ORDER) return;

    float bb[LFILTER_MAX_ORDER + 1], aa[LFILTER_MAX_ORDER + 1];
    for (int k = 0; k <= order; k++) { bb[k] = b[k]; aa[k] = a[k]; }

    const float* xc = x + c * x_stride_c;
    float* yc = y + c * y_stride_c;
    lfilter_pass(xc, yc, bb, aa, order, n_time, x_stride_t, y_stride_t, passes == -1);
    if (passes == 2)  // the reverse pass reads the forward output in place
        lfilter_pass(yc, yc, bb, aa, order, n_time, y_stride_t, y_stride_t, true);
}
