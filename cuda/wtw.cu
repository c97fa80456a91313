// wtw.cu: cross-correlations of temporal template components at every lag, weighted by their
// spatial products (the semantics of Kilosort2's mexWtW2, summed over rank pairs by getMeWtW).
//
// Fortran-ordered arrays as in MATLAB: W1, W2 (nt0, Nfilt); UtU (Nfilt, Nfilt);
// out (Nfilt, Nfilt, 2*nt0-1) with
//   out[a, b, l] = UtU[a, b] * sum_t W1[t, a] * W2[t + nt0-1-l, b]
// over the t that keep both indices in [0, nt0): lag l = nt0-1 is the zero shift, l < nt0-1
// slides W2 later. The sum runs over increasing t with explicitly rounded float operations (no
// FMA contraction), so the result equals the numba twin bit for bit. With accumulate != 0 the
// product is added to out (getMeWtW's WtW = WtW + wtw0, one float32 rounding per addition).
//
// Launch: block (WTW_TILE, WTW_TILE), grid (ceil(Nfilt/TILE), ceil(Nfilt/TILE)); thread (x, y)
// of block (bx, by) computes a = bx*TILE + x, b = by*TILE + y over all lags.

#ifndef WTW_TILE
#define WTW_TILE 32
#endif
#ifndef WTW_NT0_MAX
#define WTW_NT0_MAX 81
#endif

extern "C" __global__ void wtw_cross_correlations(const float* __restrict__ W1,
                                                  const float* __restrict__ W2,
                                                  const float* __restrict__ UtU,
                                                  float* __restrict__ out,
                                                  const int nt0, const long long nfilt,
                                                  const int accumulate)
{
    // the TILE columns of W1 and of W2 that this block pairs, one column after another
    __shared__ float w1_sh[WTW_TILE * WTW_NT0_MAX];
    __shared__ float w2_sh[WTW_TILE * WTW_NT0_MAX];
    if (nt0 > WTW_NT0_MAX) return;  // the host sizes WTW_NT0_MAX to fit

    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long a0 = (long long)blockIdx.x * WTW_TILE, b0 = (long long)blockIdx.y * WTW_TILE;
    // ty picks the column, tx strides over time: consecutive threads read consecutive samples
    for (int t = tx; t < nt0; t += WTW_TILE) {
        if (a0 + ty < nfilt) w1_sh[t + nt0 * ty] = W1[t + nt0 * (a0 + ty)];
        if (b0 + ty < nfilt) w2_sh[t + nt0 * ty] = W2[t + nt0 * (b0 + ty)];
    }
    __syncthreads();

    const long long a = a0 + tx, b = b0 + ty;
    if (a >= nfilt || b >= nfilt) return;
    const float* w1 = w1_sh + nt0 * tx;
    const float* w2 = w2_sh + nt0 * ty;
    const float u = UtU[a + nfilt * b];
    const long long lag_stride = nfilt * nfilt;
    float* o = out + a + nfilt * b;
    for (int l = 0; l < 2 * nt0 - 1; l++) {
        const int shift = nt0 - 1 - l;
        const int t_lo = shift >= 0 ? 0 : -shift;
        const int t_hi = shift >= 0 ? nt0 - shift : nt0;
        float acc = 0.0f;
        for (int t = t_lo; t < t_hi; t++)
            acc = __fadd_rn(acc, __fmul_rn(w1[t], w2[t + shift]));
        const float v = __fmul_rn(acc, u);
        o[l * lag_stride] = accumulate ? __fadd_rn(o[l * lag_stride], v) : v;
    }
}
