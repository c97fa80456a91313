// lfilter.cu: IIR filtering along time for many channels at once (single precision).
//
// Direct form II transposed, the same recurrence as MATLAB filter() and scipy.signal.lfilter:
//   y[t]   = z[0] + b[0] x[t]
//   z[k]   = z[k+1] - a[k+1] y[t] + b[k+1] x[t]     (k = 0 .. order-2, Octave's order)
//   z[o-1] = b[o] x[t] - a[o] y[t]
// with a[0] == 1 (coefficients are normalised on the host). One thread filters one channel; the
// strides (in elements) let the same kernel read channel-fastest data (coalesced across threads)
// or time-fastest data. reverse != 0 runs from the last sample to the first, which is what
// MATLAB's gpufilter does with flipud(filter(b, a, flipud(x))). x and y may be the same buffer.

#ifndef LFILTER_MAX_ORDER
#define LFILTER_MAX_ORDER 8
#endif

extern "C" __global__ void lfilter_f32(const float* __restrict__ x, float* y,
                                       const float* __restrict__ b, const float* __restrict__ a,
                                       const int order, const long long n_time,
                                       const long long n_chan,
                                       const long long x_stride_t, const long long x_stride_c,
                                       const long long y_stride_t, const long long y_stride_c,
                                       const int reverse)
{
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_chan || order > LFILTER_MAX_ORDER) return;

    float bb[LFILTER_MAX_ORDER + 1], aa[LFILTER_MAX_ORDER + 1], z[LFILTER_MAX_ORDER + 1];
    for (int k = 0; k <= order; k++) { bb[k] = b[k]; aa[k] = a[k]; z[k] = 0.0f; }

    const float* xc = x + c * x_stride_c;
    float* yc = y + c * y_stride_c;
    for (long long i = 0; i < n_time; i++) {
        const long long t = reverse ? n_time - 1 - i : i;
        const float xi = xc[t * x_stride_t];
        const float yi = z[0] + bb[0] * xi;
        for (int k = 0; k < order - 1; k++)
            z[k] = z[k + 1] - aa[k + 1] * yi + bb[k + 1] * xi;
        if (order > 0) z[order - 1] = bb[order] * xi - aa[order] * yi;
        yc[t * y_stride_t] = yi;
    }
}
