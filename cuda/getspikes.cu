// getspikes.cu: detection of new spikes in a residual batch with generic temporal templates
// (the computation of Kilosort2's mexGetSpikes2), single precision.
//
// All arrays are column-major (MATLAB order); indices are 0-based.
//   data    (NT, n_chan)          batch                          data[t + NT*c]
//   W       (nt0, n_rank)         generic temporal templates     W[i + nt0*r]
//   proj    (NT, n_chan, n_rank)  proj[t, c, r] = sum_i W[i, r] * data[t + i, c]   (t < n_conv)
//   iC      (n_near, n_chan)      neighbour channels of each channel, nearest first
//   cmap    (NT, n_chan)          best score of channel c at t over ranks and neighbourhood sizes
//   err     (NT,)  ftype (NT,)    best score over channels and the channel that gave it
//
// The sample ranges each stage covers (n_conv, stride, [t_start, t_stop)) are computed on the host:
// they reproduce the original's launch geometry, quirks included, so these kernels stay free of it.
// Products, sums and quotients use the round-to-nearest intrinsics so that nvcc cannot contract
// them into FMAs: every score then equals the CPU twin's bit for bit, whatever the block size.

#ifndef GS_THREADS
#define GS_THREADS 256   // threads per block of getspikes_project (its shared tile is this long)
#endif
#ifndef GS_NT0_MAX
#define GS_NT0_MAX 81    // longest template the shared tiles of getspikes_project hold
#endif
#ifndef GS_NRANK_MAX
#define GS_NRANK_MAX 6   // most temporal templates getspikes_project holds in shared memory
#endif

// Projection of every channel on every temporal template (a correlation, not a flipped
// convolution). Grid (ceil(n_conv / GS_THREADS), n_chan), block GS_THREADS threads.
extern "C" __global__ void getspikes_project(const float* __restrict__ data,
                                             const float* __restrict__ W,
                                             float* __restrict__ proj,
                                             const int NT, const int n_chan, const int nt0,
                                             const int n_rank, const int n_conv)
{
    __shared__ float sW[GS_NT0_MAX * GS_NRANK_MAX];
    __shared__ float sx[GS_THREADS + GS_NT0_MAX];
    if (nt0 > GS_NT0_MAX || n_rank > GS_NRANK_MAX) return;  // the host never launches this

    const int c = blockIdx.y;
    const int t_first = blockIdx.x * GS_THREADS;
    const float* x = data + (long long)NT * c;
    for (int k = threadIdx.x; k < nt0 * n_rank; k += blockDim.x) sW[k] = W[k];
    for (int k = threadIdx.x; k < GS_THREADS + nt0 - 1; k += blockDim.x) {
        const int tk = t_first + k;
        sx[k] = tk < NT ? x[tk] : 0.0f;
    }
    __syncthreads();

    const int t = t_first + threadIdx.x;
    if (t >= n_conv) return;
    for (int r = 0; r < n_rank; r++) {
        float y = 0.0f;
        for (int i = 0; i < nt0; i++)  // summed in order of i, like the twin
            y = __fadd_rn(y, __fmul_rn(sW[i + nt0 * r], sx[threadIdx.x + i]));
        proj[t + (long long)NT * (c + (long long)n_chan * r)] = y;
    }
}

// cmap[t, c] = max over ranks r and sizes j of (sum of proj over the j+1 nearest channels)^2/(j+1).
// Beyond n_conv the projections were never computed (zero in the original), so the score is 0.
// Grid (ceil(NT / blockDim.x), n_chan).
extern "C" __global__ void getspikes_sum_channels(const float* __restrict__ proj,
                                                  const int* __restrict__ iC,
                                                  float* __restrict__ cmap,
                                                  const int NT, const int n_chan, const int n_near,
                                                  const int n_rank, const int n_sum,
                                                  const int n_conv)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int c = blockIdx.y;
    if (t >= NT) return;
    float best = 0.0f;
    if (t < n_conv) {
        for (int r = 0; r < n_rank; r++) {
            float acc = 0.0f;
            for (int j = 0; j < n_sum; j++) {
                const long long ch = iC[j + (long long)n_near * c];
                acc = __fadd_rn(acc, proj[t + (long long)NT * (ch + (long long)n_chan * r)]);
                const float score = __fdiv_rn(__fmul_rn(acc, acc), (float)(1 + j));
                if (score > best) best = score;
            }
        }
    }
    cmap[t + (long long)NT * c] = best;
}

// Best channel at each sample: the first channel whose score exceeds the best so far by more
// than 1e-6 (compared in double precision, as the original's double literal makes it). Thread r
// visits t = r, r + stride, ... and its running best is NOT reset from one t to the next: the
// original's quirk, which lets samples t >= stride inherit the best of sample t - stride.
extern "C" __global__ void getspikes_best_channel(const float* __restrict__ cmap,
                                                  float* __restrict__ err,
                                                  int* __restrict__ ftype,
                                                  const int NT, const int n_chan, const int stride)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= stride) return;
    float best = 0.0f;
    int ibest = 0;
    for (int t = r; t < NT; t += stride) {
        for (int c = 0; c < n_chan; c++) {
            const float v = cmap[t + (long long)NT * c];
            if ((double)v > (double)best + 1e-6) {
                best = v;
                ibest = c;
            }
        }
        err[t] = best;
        ftype[t] = ibest;
    }
}

// Samples t in [t_start, t_stop) whose score exceeds th2 and is not exceeded within +-lockout.
// Appended in atomic (arbitrary) order: the host sorts them by time. counter keeps counting past
// capacity so the host can report an overflow instead of keeping an arbitrary subset.
extern "C" __global__ void getspikes_local_peaks(const float* __restrict__ err,
                                                 const int* __restrict__ ftype,
                                                 int* __restrict__ times, int* __restrict__ chans,
                                                 float* __restrict__ heights,
                                                 int* __restrict__ counter,
                                                 const int t_start, const int t_stop,
                                                 const int lockout, const float th2,
                                                 const int capacity)
{
    const int t = t_start + blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= t_stop) return;
    const float e = err[t];
    if (!(e > th2)) return;
    for (int j = -lockout; j <= lockout; j++)
        if (err[t + j] > e) return;
    const int k = atomicAdd(counter, 1);
    if (k < capacity) {
        times[k] = t;
        chans[k] = ftype[t];
        heights[k] = e;
    }
}

// keep[k]: no other candidate of the whole batch on a channel less than chan_range away has a
// strictly larger height (equal heights keep both).
extern "C" __global__ void getspikes_keep_highest(const int* __restrict__ chans,
                                                  const float* __restrict__ heights,
                                                  bool* __restrict__ keep,
                                                  const int n, const int chan_range)
{
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    const float h = heights[k];
    const int ch = chans[k];
    bool highest = true;
    for (int m = 0; m < n; m++) {
        const int d = chans[m] - ch;
        if (d < chan_range && -d < chan_range && h < heights[m]) {
            highest = false;
            break;
        }
    }
    keep[k] = highest;
}

// snips (nt0, n_chan, n_spikes): snips[i, c, k] = data[times[k] + i, c]. One thread per element.
extern "C" __global__ void getspikes_extract(const float* __restrict__ data,
                                             const int* __restrict__ times,
                                             float* __restrict__ snips,
                                             const int NT, const int n_chan, const int nt0,
                                             const int n_spikes)
{
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)nt0 * n_chan * n_spikes) return;
    const int i = (int)(idx % nt0);
    const long long rest = idx / nt0;
    const int c = (int)(rest % n_chan);
    const int k = (int)(rest / n_chan);
    snips[idx] = data[times[k] + i + (long long)NT * c];
}
