// distances.cu: for every template of every batch, the nearest template of one primary batch
// (the work of Kilosort2's mexDistances2, called once per batch by clusterSingleBatches).
//
// Arrays are column-major (MATLAB layout), indices 0-based; n_total = templates of all batches:
//   Ws     (n_rank*n_near, n_total)   unit-norm templates on their n_near neighbour channels
//   Wh     (n_total)                  best channel of each template
//   mus    (n_total)                  template norms
//   W      (n_rank*n_chan, n_filt)    the primary batch's templates on all channels
//   mu     (n_filt)                   their norms
//   match  (n_chan, n_filt)           match[c, f]: primary template f's best channel is a neighbour of c
//   iC     (n_near, n_chan)           neighbour channels of each channel
//
// Explicit round-to-nearest intrinsics keep nvcc from fusing multiplies and adds into FMAs, so
// the results are bit-identical to the numba twin (same operations, same order, single precision).

#ifndef DIST_THREADS
#define DIST_THREADS 256  // threads per block of nearest_template
#endif

// Squared distance between the scaled templates mus*Ws and mu*W when their unit-norm shapes have
// inner product xsum: mu^2 + mus^2 - 2 mus mu xsum, evaluated left to right.
__device__ float scaled_distance(const float* ws, const float* w, const int* near, const int n_rank,
                                 const int n_near, const float ms, const float m)
{
    float xsum = 0.0f;
    for (int k = 0; k < n_near; k++) {
        const float* wc = w + (long long)n_rank * near[k];
        for (int j = 0; j < n_rank; j++)
            xsum = __fadd_rn(xsum, __fmul_rn(ws[j + n_rank * k], wc[j]));
    }
    const float sq = __fadd_rn(__fmul_rn(m, m), __fmul_rn(ms, ms));
    return __fsub_rn(sq, __fmul_rn(__fmul_rn(__fmul_rn(2.0f, ms), m), xsum));
}

// One thread per template t: among the primary templates that match its best channel, the one
// at the smallest squared distance, if it is below mus[t]^2 (the distance to a zero template);
// the first one wins ties. iclust[t] = that template, or `unmatched` (0 in Kilosort 2.0, -1 in
// 2.5) when none is closer; ds[t] = the distance found, or mus[t]^2.
extern "C" __global__ void nearest_template(const float* __restrict__ Ws,
                                            const float* __restrict__ W,
                                            const float* __restrict__ mus,
                                            const float* __restrict__ mu,
                                            const bool* __restrict__ match,
                                            const int* __restrict__ iC,
                                            const int* __restrict__ Wh,
                                            int* iclust, float* ds,
                                            const long long n_total, const int n_filt,
                                            const int n_rank, const int n_near, const int n_chan,
                                            const int unmatched)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n_total; t += stride) {
        const int ch = Wh[t];
        const int* near = iC + (long long)n_near * ch;
        const float* ws = Ws + (long long)n_rank * n_near * t;
        const float ms = mus[t];
        float best = __fmul_rn(ms, ms);
        int id = unmatched;
        for (int f = 0; f < n_filt; f++) {
            if (!match[ch + (long long)n_chan * f]) continue;
            const float d = scaled_distance(ws, W + (long long)n_rank * n_chan * f, near, n_rank,
                                            n_near, ms, mu[f]);
            if (d < best) {
                best = d;
                id = f;
            }
        }
        iclust[t] = id;
        ds[t] = best;
    }
}
