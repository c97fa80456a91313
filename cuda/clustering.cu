// clustering.cu: one k-means step on PC projections of threshold crossings (the work of
// Kilosort2's mexClustering2, called 10x per batch by clusterSingleBatches).
//
// Arrays are column-major (MATLAB layout), indices 0-based:
//   uproj  (n_rank*n_near, n_spikes)  projections of each spike on its n_near neighbour channels
//   W      (n_rank*n_chan, n_filt)    unit-norm cluster templates on all channels
//   mu     (n_filt)                   template norms
//   call   (n_spikes)                 centre channel of each spike
//   match  (n_chan, n_filt)           match[c, f]: template f's best channel is a neighbour of c
//   iC     (n_near, n_chan)           neighbour channels of each channel (distinct in a column)
//
// Every floating-point operation uses an explicit round-to-nearest intrinsic so that nvcc cannot
// fuse a multiply and an add into an FMA: the results are then bit-identical to the numba twin,
// which evaluates the same operations in the same order in single precision.

#ifndef CLUSTER_THREADS
#define CLUSTER_THREADS 256   // threads per block of cluster_assign
#endif

#ifndef CLUSTER_AVG_THREADS
#define CLUSTER_AVG_THREADS 64  // threads per block of cluster_average (size of its id buffer)
#endif

// The matching cost of a spike against one template: with c = max(0, projection) + lam/mu,
// cost = c^2 / (1 + lam/mu^2) - lam. A template with mu == 0 (an emptied cluster) gets NaN,
// which never wins the comparison in cluster_assign: dead clusters stay dead.
__device__ float spike_cost(const float* up, const float* w, const int* near, const int n_rank,
                            const int n_near, const float m, const float lam)
{
    float xsum = 0.0f;
    for (int k = 0; k < n_near; k++) {
        const float* wc = w + (long long)n_rank * near[k];
        for (int j = 0; j < n_rank; j++)
            xsum = __fadd_rn(xsum, __fmul_rn(up[j + n_rank * k], wc[j]));
    }
    const float ci = __fadd_rn(xsum > 0.0f ? xsum : 0.0f, __fdiv_rn(lam, m));
    const float shrink = __fadd_rn(1.0f, __fdiv_rn(lam, __fmul_rn(m, m)));
    return __fsub_rn(__fdiv_rn(__fmul_rn(ci, ci), shrink), lam);
}

// One thread per spike: the matching template of largest cost, which must be > 0; the first
// one wins ties (templates are visited in index order). Spikes that beat no template get the
// label `unassigned` (0 in the original, which thereby adds them to template 0) and dx = 0.
// With want_cost != 0, cost (n_spikes, n_filt) receives every (spike, template) cost, NaN where
// match is false (the original leaves those entries uninitialised).
extern "C" __global__ void cluster_assign(const float* __restrict__ uproj,
                                          const float* __restrict__ W,
                                          const float* __restrict__ mu,
                                          const int* __restrict__ call,
                                          const bool* __restrict__ match,
                                          const int* __restrict__ iC,
                                          float* cost, const int want_cost,
                                          int* iclust, float* dx,
                                          const long long n_spikes, const int n_filt,
                                          const int n_rank, const int n_near, const int n_chan,
                                          const float lam, const int unassigned)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long s = (long long)blockIdx.x * blockDim.x + threadIdx.x; s < n_spikes; s += stride) {
        const int ch = call[s];
        const int* near = iC + (long long)n_near * ch;
        const float* up = uproj + (long long)n_rank * n_near * s;
        float best = 0.0f;
        int id = unassigned;
        for (int f = 0; f < n_filt; f++) {
            float c = __int_as_float(0x7fc00000);  // NaN: not computed
            if (match[ch + (long long)n_chan * f]) {
                c = spike_cost(up, W + (long long)n_rank * n_chan * f, near, n_rank, n_near,
                               mu[f], lam);
                if (c > best) {
                    best = c;
                    id = f;
                }
            }
            if (want_cost) cost[s + n_spikes * f] = c;
        }
        iclust[s] = id;
        dx[s] = best;
    }
}

// One block per template f: sums the projections of its spikes into dWU[:, f] (zeroed by the
// caller) on the channels they live on, and counts them into nsp[f]. Every element receives
// its additions in increasing spike order, as in the original's one-thread-per-template loop,
// so the single-precision sum is reproducible. The block's threads split one spike's
// n_rank*n_near additions (distinct channels, so distinct elements) and synchronise before the
// next spike, which may add to the same elements through other threads. Launch with exactly
// CLUSTER_AVG_THREADS threads per block (the size of the shared id buffer).
extern "C" __global__ void cluster_average(const float* __restrict__ uproj,
                                           const int* __restrict__ call,
                                           const int* __restrict__ iC,
                                           const int* __restrict__ iclust,
                                           float* dWU, int* nsp,
                                           const long long n_spikes, const int n_rank,
                                           const int n_near, const int n_chan)
{
    __shared__ int ids[CLUSTER_AVG_THREADS];
    const int f = blockIdx.x;
    const int n_feat = n_rank * n_near;
    float* wu = dWU + (long long)n_rank * n_chan * f;
    int count = 0;
    for (long long base = 0; base < n_spikes; base += CLUSTER_AVG_THREADS) {
        const long long i = base + threadIdx.x;
        ids[threadIdx.x] = i < n_spikes ? iclust[i] : -1;  // -1 never equals f >= 0
        __syncthreads();
        for (int q = 0; q < CLUSTER_AVG_THREADS; q++) {
            if (ids[q] != f) continue;  // same shared value for the whole block
            const long long s = base + q;
            const int* near = iC + (long long)n_near * call[s];
            const float* up = uproj + (long long)n_feat * s;
            for (int e = threadIdx.x; e < n_feat; e += blockDim.x) {
                const int k = e / n_rank;
                float* dst = wu + (e - k * n_rank) + n_rank * near[k];
                *dst = __fadd_rn(*dst, up[e]);
            }
            count++;
            __syncthreads();
        }
        __syncthreads();  // everyone is done with ids before it is overwritten
    }
    if (threadIdx.x == 0) nsp[f] = count;
}
