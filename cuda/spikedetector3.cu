// spikedetector3.cu: spikes found by generic rank-one templates (the computation of Kilosort 2.5's
// spikedetector3 mex), single precision. See pykilosort/kernels/spikedetector.py for the stages.
//
// All arrays are column-major (MATLAB order); indices are 0-based.
//   data   (NT, n_chan)             batch                                     data[t + NT*c]
//   W      (nt0, n_rank)            temporal prototypes                       W[i + nt0*r]
//   dfilt  (NT, n_chan, n_rank)     dfilt[t, c, r] = sum_i W[i, r] * data[t + i, c]  (t < n_conv)
//   iC     (n_near, n_up)           channels around each centre
//   sA     (SD_NSIZES, n_near, n_up) footprint weights (computed on the host)
//   v2     (SD_NSIZES, n_up)        squared norms of the footprints
//   dout, kkmax (NT, n_up)          best score per sample and centre, and its r + k*n_rank
//   dmax   (NT, n_up)               window max of dout where above th2, else 0
//   iC2, dist2 (n_near_up, n_up)    centres around each centre (itself first) and distances
//
// The sample ranges each stage covers (n_conv, n_score, n_peak) are computed on the host: they
// reproduce the original's launch geometry, quirks included, so these kernels stay free of it and
// give the same results for any block size. Products, sums and quotients use the round-to-nearest
// intrinsics so that nvcc cannot contract them into FMAs: every value then equals the CPU twin's
// bit for bit. Centres (or channels) run on the grid's y dimension.

#ifndef SD_NSIZES
#define SD_NSIZES 5   // footprint widths: the rows of v2
#endif

// dfilt for t < n_conv (a correlation, summed in order of i). Grid (ceil(n_conv / blockDim.x),
// n_chan). W and the window of data are read through the caches: no shared-memory limits.
extern "C" __global__ void sd_filter(const float* __restrict__ data,
                                     const float* __restrict__ W,
                                     float* __restrict__ dfilt,
                                     const int NT, const int n_chan, const int nt0,
                                     const int n_rank, const int n_conv)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int c = blockIdx.y;
    if (t >= n_conv) return;
    const float* x = data + (long long)NT * c + t;
    for (int r = 0; r < n_rank; r++) {
        float y = 0.0f;
        for (int i = 0; i < nt0; i++)
            y = __fadd_rn(y, __fmul_rn(W[i + nt0 * r], x[i]));
        dfilt[t + (long long)NT * (c + (long long)n_chan * r)] = y;
    }
}

// dout[t, u], kkmax[t, u] for t < n_score: the largest max(a, 0)^2 / v2[k, u] over ranks r, then
// sizes k, of the footprint sums a[k] = sum_j sA[k, j, u] * dfilt[t, iC[j, u], r] (in order of j).
// A score replaces the best only when strictly greater (starting from 0, label 0).
// Grid (ceil(n_score / blockDim.x), n_up).
extern "C" __global__ void sd_scores(const float* __restrict__ dfilt,
                                     const int* __restrict__ iC,
                                     const float* __restrict__ sA,
                                     const float* __restrict__ v2,
                                     float* __restrict__ dout,
                                     int* __restrict__ kkmax,
                                     const int NT, const int n_chan, const int n_near,
                                     const int n_rank, const int n_score)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int u = blockIdx.y;
    if (t >= n_score) return;
    const float* w = sA + (long long)SD_NSIZES * n_near * u;
    float best = 0.0f;
    int kbest = 0;
    for (int r = 0; r < n_rank; r++) {
        float a[SD_NSIZES];
        for (int k = 0; k < SD_NSIZES; k++) a[k] = 0.0f;
        for (int j = 0; j < n_near; j++) {
            const long long ch = iC[j + (long long)n_near * u];
            const float x = dfilt[t + (long long)NT * (ch + (long long)n_chan * r)];
            for (int k = 0; k < SD_NSIZES; k++)
                a[k] = __fadd_rn(a[k], __fmul_rn(w[k + SD_NSIZES * j], x));
        }
        for (int k = 0; k < SD_NSIZES; k++) {
            const float ak = a[k] > 0.0f ? a[k] : 0.0f;  // fmax(a, 0): NaN becomes 0
            const float score = __fdiv_rn(__fmul_rn(ak, ak), v2[k + SD_NSIZES * (long long)u]);
            if (score > best) {
                best = score;
                kbest = r + k * n_rank;
            }
        }
    }
    dout[t + (long long)NT * u] = best;
    kkmax[t + (long long)NT * u] = kbest;
}

// dmax[t + half, u] = max(0, dout[t : t + 2*half, u]) for t < n_conv, written only where it
// exceeds th2 (dmax must hold zeros). Grid (ceil(n_conv / blockDim.x), n_up).
extern "C" __global__ void sd_window_max(const float* __restrict__ dout,
                                         float* __restrict__ dmax,
                                         const int NT, const int half, const int n_conv,
                                         const float th2)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int u = blockIdx.y;
    if (t >= n_conv) return;
    const float* x = dout + (long long)NT * u + t;
    float y = 0.0f;
    for (int i = 0; i < 2 * half; i++)
        if (x[i] > y) y = x[i];
    if (y > th2) dmax[t + half + (long long)NT * u] = y;
}

// Spikes: (t, u), t < n_peak, with dmax[t, u] > th2, not exceeded at t by any centre iC2[j, u]
// (j >= 1) closer than 100 um, and dout[t, u] > dmax[t, u] - 1e-6 (in double). Appended in
// atomic (arbitrary) order; counter keeps counting past capacity so that the host can grow the
// buffer and search again. Grid (ceil(n_peak / blockDim.x), n_up).
extern "C" __global__ void sd_local_maxima(const float* __restrict__ dmax,
                                           const float* __restrict__ dout,
                                           const int* __restrict__ iC2,
                                           const float* __restrict__ dist2,
                                           int* __restrict__ times, int* __restrict__ centres,
                                           int* __restrict__ counter,
                                           const int NT, const int n_near_up, const int n_peak,
                                           const float th2, const int capacity)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int u = blockIdx.y;
    if (t >= n_peak) return;
    const float cf = dmax[t + (long long)NT * u];
    if (!(cf > th2)) return;  // first: dmax is mostly 0 (the original tests it after the loop)
    for (int j = 1; j < n_near_up; j++) {
        const long long jj = j + (long long)n_near_up * u;
        if (dist2[jj] < 100.0f && dmax[t + (long long)NT * iC2[jj]] > cf) return;
    }
    if ((double)dout[t + (long long)NT * u] > (double)cf - 1e-6) {
        const int k = atomicAdd(counter, 1);
        if (k < capacity) {
            times[k] = t;
            centres[k] = u;
        }
    }
}

// Per spike s: amplitude (int) sqrt(double(dout)) (saturated as CUDA's conversion does), kk, and
// the features dfilt[t, iC[j, u], kk % n_rank] (features (n_near, n_spikes)). One thread a spike.
extern "C" __global__ void sd_spike_outputs(const float* __restrict__ dfilt,
                                            const float* __restrict__ dout,
                                            const int* __restrict__ kkmax,
                                            const int* __restrict__ iC,
                                            const int* __restrict__ times,
                                            const int* __restrict__ centres,
                                            int* __restrict__ amplitudes, int* __restrict__ kk,
                                            float* __restrict__ features,
                                            const int NT, const int n_chan, const int n_near,
                                            const int n_rank, const int n_spikes)
{
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= n_spikes) return;
    const long long at = times[s] + (long long)NT * centres[s];
    const double root = sqrt((double)dout[at]);  // dout >= 0
    amplitudes[s] = root < 2147483647.0 ? (int)root : 2147483647;
    const int label = kkmax[at];
    kk[s] = label;
    const int r = label % n_rank;
    for (int j = 0; j < n_near; j++) {
        const long long ch = iC[j + (long long)n_near * centres[s]];
        features[j + (long long)n_near * s] =
            dfilt[times[s] + (long long)NT * (ch + (long long)n_chan * r)];
    }
}
