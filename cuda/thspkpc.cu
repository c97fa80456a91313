// thspkpc.cu: threshold crossings of the PC-projection norm, and their PC features
// (the semantics of Kilosort2's mexThSpkPC, used by extractPCbatch2 for batch reordering).
//
// All arrays are Fortran-ordered (column-major) as in MATLAB:
//   data (NT, Nchan)     whitened batch          W (nt0, nrank)      temporal PCs
//   iC   (nnear, Nchan)  0-based neighbours      conv, dmax (NT, Nchan)  scratch, zero-filled
//   feat (nrank*nnear, n_spikes)                 row k + nrank*j: PC k on neighbour j
//
// Pipeline (one launch each, in this order):
//   thspkpc_project_norm  conv[t,c] = sqrt(sum_k (sum_i W[i,k] data[t+i,c])^2), t < n_cov
//   thspkpc_window_max    dmax[t,c] = max(0, conv[t..t+nt0-1, c]) if above spk_th, else 0
//   thspkpc_find_peaks    for t < n_det and every channel c, with m = iC[0,c]: a spike (t, m) when
//                         no neighbour iC[j,c] has a larger dmax at t, dmax[t,m] > spk_th, and
//                         conv at t + nt0min - 1 reaches dmax[t,m] (to 1e-6, in double)
//   thspkpc_features     projections of data[st+nt0min-1 .. +nt0-1, iC[j,id]] on each PC
// The host sorts the spikes by (st, id) between the last two launches: the slots that the
// atomic counter hands out are in no defined order.
//
// Sums run in a fixed order with explicitly rounded float operations (no FMA contraction), so
// the results equal the numba twin bit for bit.

#ifndef THSPKPC_THREADS
#define THSPKPC_THREADS 256
#endif
#ifndef THSPKPC_NT0_MAX
#define THSPKPC_NT0_MAX 81
#endif
#ifndef THSPKPC_NRANK_MAX
#define THSPKPC_NRANK_MAX 3
#endif

// conv on samples [blockIdx.x * THREADS, ...) of channel blockIdx.y; samples >= n_cov stay zero
// (the caller chooses n_cov: the original leaves the tail of the batch beyond whole 1024-sample
// chunks unprocessed).
extern "C" __global__ void thspkpc_project_norm(const float* __restrict__ data,
                                                const float* __restrict__ W,
                                                float* __restrict__ conv,
                                                const long long NT, const int nt0,
                                                const int nrank, const long long n_cov)
{
    __shared__ float w_sh[THSPKPC_NT0_MAX * THSPKPC_NRANK_MAX];
    __shared__ float x_sh[THSPKPC_THREADS + THSPKPC_NT0_MAX - 1];
    if (nt0 > THSPKPC_NT0_MAX || nrank > THSPKPC_NRANK_MAX) return;  // host checks this too

    const long long t_first = (long long)blockIdx.x * THSPKPC_THREADS;
    const float* x = data + (long long)blockIdx.y * NT;
    for (int k = threadIdx.x; k < nt0 * nrank; k += blockDim.x) w_sh[k] = W[k];
    // the samples this block's outputs read, clipped at the end of the batch
    for (int k = threadIdx.x; k < THSPKPC_THREADS + nt0 - 1; k += blockDim.x) {
        const long long t = t_first + k;
        x_sh[k] = (t < NT) ? x[t] : 0.0f;
    }
    __syncthreads();

    const long long t = t_first + threadIdx.x;
    if (t >= n_cov) return;
    float norm2 = 0.0f;
    for (int k = 0; k < nrank; k++) {
        float y = 0.0f;
        for (int i = 0; i < nt0; i++)
            y = __fadd_rn(y, __fmul_rn(w_sh[i + nt0 * k], x_sh[threadIdx.x + i]));
        norm2 = __fadd_rn(norm2, __fmul_rn(y, y));
    }
    conv[t + (long long)blockIdx.y * NT] = sqrtf(norm2);
}

// dmax on samples < n_cov of channel blockIdx.y (the rest stays zero: conv is zero there).
extern "C" __global__ void thspkpc_window_max(const float* __restrict__ conv,
                                              float* __restrict__ dmax,
                                              const long long NT, const int nt0,
                                              const long long n_cov, const float spk_th)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_cov) return;
    const float* c = conv + (long long)blockIdx.y * NT + t;
    float y = 0.0f;
    for (int i = 0; i < nt0; i++) {
        const float v = c[i];
        if (v > y) y = v;  // NaN never wins, as with fmaxf
    }
    dmax[t + (long long)blockIdx.y * NT] = (y > spk_th) ? y : 0.0f;
}

// One thread per (sample t < n_det, channel c = blockIdx.y). Accepted spikes take a slot from
// *counter; slots past max_spikes are counted but not written, and the host reports the overflow.
extern "C" __global__ void thspkpc_find_peaks(const float* __restrict__ conv,
                                              const float* __restrict__ dmax,
                                              const int* __restrict__ iC,
                                              int* __restrict__ st, int* __restrict__ id,
                                              unsigned long long* counter,
                                              const long long NT, const int nnear,
                                              const int nt0min, const long long n_det,
                                              const float spk_th, const long long max_spikes)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_det) return;
    const int* near = iC + (long long)blockIdx.y * nnear;
    const int m = near[0];
    const float cf = dmax[t + NT * m];
    for (int j = 1; j < nnear; j++)
        if (dmax[t + NT * near[j]] > cf) return;  // a neighbour is larger: not this channel's
    if (!(cf > spk_th)) return;
    // the norm must peak nt0min-1 samples into the window (double, as the original compares)
    const double d = (double)conv[t + nt0min - 1 + NT * m];
    if (!(d > (double)cf - 1e-6)) return;
    const unsigned long long slot = atomicAdd(counter, 1ULL);
    if (slot < (unsigned long long)max_spikes) {
        st[slot] = (int)t;
        id[slot] = m;
    }
}

// One thread per feature value: spike n, neighbour j, PC k (k fastest, then j, then n: the
// memory order of feat).
extern "C" __global__ void thspkpc_features(const float* __restrict__ data,
                                            const float* __restrict__ W,
                                            const int* __restrict__ iC,
                                            const int* __restrict__ st,
                                            const int* __restrict__ id,
                                            float* __restrict__ feat,
                                            const long long NT, const int nt0, const int nrank,
                                            const int nnear, const int nt0min,
                                            const long long n_spikes)
{
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long per_spike = (long long)nrank * nnear;
    if (g >= per_spike * n_spikes) return;
    const long long n = g / per_spike;
    const int r = (int)(g - n * per_spike);
    const int k = r % nrank, j = r / nrank;
    const int chan = iC[j + (long long)nnear * id[n]];
    const float* x = data + (long long)chan * NT + st[n] + nt0min - 1;
    const float* w = W + (long long)nt0 * k;
    float acc = 0.0f;
    for (int i = 0; i < nt0; i++) acc = __fadd_rn(acc, __fmul_rn(x[i], w[i]));
    feat[g] = acc;
}
