// mpnu8.cu: Kilosort2's template-matching pursuit (the semantics of mexMPnu8), one batch.
//
// The host (pykilosort/kernels/mpnu8.py) runs: mp_space_filter, mp_time_filter, mp_best_filter,
// then for each round mp_cleanup (new spikes), optional mp_template_features, mp_subtract_*,
// mp_space_update_*, mp_time_update, mp_best_update; then mp_to_single_rz (stable mode),
// mp_pc_features and mp_average_snips.
//
// All arrays are column-major (MATLAB/Fortran order), indices 0-based:
//   data, resid (NT, Nchan); U (Nchan, Nfilt, Nrank); W (nt0, Nfilt, Nrank); mu (Nfilt);
//   iC (Nnear, Nchan); iW (Nfilt); UtU (Nfilt, Nfilt) bytes; iList (Nnearest, Nfilt);
//   wPCA (nt0, Nrank); dprod (NT, Nfilt, Nrank); conv (NT, Nfilt); err, ftype (NT);
//   spike buffers st, id, amp, vexp (capacity); feat (Nnearest, capacity);
//   featPC (Nnear, Nrank, n); dWU (nt0, Nchan, Nfilt) double.
// Sums run in the same order as the numba twin (ranks outer, then channels or lags), and every
// product is rounded before it is added (__fmul_rn / __fadd_rn: nvcc never fuses those into
// FMAs, which the original's build did), so the kernels reproduce the twin bit for bit; only
// atomics of spikes whose windows collide (tied scores) may add in another order.

#ifndef MP_THREADS       // threads per block of mp_time_filter (its shared tile is sized by it)
#define MP_THREADS 256
#endif
#ifndef MP_NT0_MAX       // longest template (samples)
#define MP_NT0_MAX 81
#endif
#ifndef MP_NRANK_MAX     // largest rank of the templates
#define MP_NRANK_MAX 3
#endif
#ifndef MP_NEAR_MAX      // most channels in a template's neighbourhood (NchanNear)
#define MP_NEAR_MAX 32
#endif

typedef long long i64;

// x + a * b with the product rounded first (no FMA), in float and in double
__device__ __forceinline__ float madd(float x, float a, float b)
{
    return __fadd_rn(x, __fmul_rn(a, b));
}
__device__ __forceinline__ double madd(double x, double a, double b)
{
    return __dadd_rn(x, __dmul_rn(a, b));
}

// ------------------------------------------------------------------ shared helpers
// A template's neighbourhood channels iC[:, iW[f]] and its spatial components there, into
// shared memory. tid/nthreads: the flat thread index and count of the block.
__device__ void load_spatial(const float* U, const int* iC, const int* iW, int f, int Nchan,
                             int Nnear, int Nfilt, int Nrank, int tid, int nthreads,
                             float* sU, int* sChan)
{
    for (int i = tid; i < Nnear; i += nthreads) sChan[i] = iC[i + (i64)Nnear * iW[f]];
    __syncthreads();
    for (int j = tid; j < Nnear * Nrank; j += nthreads) {
        const int i = j % Nnear, k = j / Nnear;
        sU[j] = U[sChan[i] + (i64)Nchan * (f + (i64)Nfilt * k)];
    }
    __syncthreads();
}

// dprod[t, f, k] = sum_i sU[i, k] * data[t, sChan[i]] (float32; double data rounded to float).
template <typename T>
__device__ void project_sample(const T* data, const float* sU, const int* sChan, int t, int f,
                               int NT, int Nnear, int Nfilt, int Nrank, float* dprod)
{
    for (int k = 0; k < Nrank; k++) {
        float x = 0.0f;
        for (int i = 0; i < Nnear; i++)
            x = madd(x, sU[i + Nnear * k], (float)data[t + (i64)NT * sChan[i]]);
        dprod[t + (i64)NT * (f + (i64)Nfilt * k)] = x;
    }
}

// Score of start time t: the best template i of Cf = (max(conv, 0) + lam mu)^2 / (1 + lam)
// - lam mu^2, a template winning only if Cf > best + 1e-6 compared in double.
__device__ void score_sample(const float* conv, const float* mu, int t, int NT, int Nfilt,
                             float lam, float* err, int* ftype)
{
    const float a = 1.0f + lam;
    float best = 0.0f;
    int ibest = 0;
    for (int i = 0; i < Nfilt; i++) {
        const float lm = __fmul_rn(lam, mu[i]);
        const float b = __fadd_rn(fmaxf(conv[t + (i64)NT * i], 0.0f), lm);
        const float cf = __fsub_rn(__fdiv_rn(__fmul_rn(b, b), a), __fmul_rn(lm, mu[i]));
        if ((double)cf > (double)best + 1e-6) {
            best = cf;
            ibest = i;
        }
    }
    err[t] = best;
    ftype[t] = ibest;
}

__device__ void add_double(double* address, double value)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 600
    unsigned long long* p = (unsigned long long*)address;
    unsigned long long old = *p, assumed;
    do {
        assumed = old;
        old = atomicCAS(p, assumed, __double_as_longlong(value + __longlong_as_double(assumed)));
    } while (assumed != old);
#else
    atomicAdd(address, value);
#endif
}

// ------------------------------------------------------------------ first pass
// grid (ceil(NT / blockDim.x), Nfilt): one thread per sample of one template.
extern "C" __global__ void mp_space_filter(const float* data, const float* U, const int* iC,
                                           const int* iW, float* dprod, int NT, int Nchan,
                                           int Nnear, int Nfilt, int Nrank)
{
    __shared__ float sU[MP_NEAR_MAX * MP_NRANK_MAX];
    __shared__ int sChan[MP_NEAR_MAX];
    const int f = blockIdx.y;
    load_spatial(U, iC, iW, f, Nchan, Nnear, Nfilt, Nrank, threadIdx.x, blockDim.x, sU, sChan);
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < NT) project_sample(data, sU, sChan, t, f, NT, Nnear, Nfilt, Nrank, dprod);
}

// grid (ceil(t_end / MP_THREADS), Nfilt), MP_THREADS threads: conv[t, f] for t < t_end,
// sum over ranks k then lags i of W[i, f, k] * dprod[t + i, f, k].
extern "C" __global__ void mp_time_filter(const float* dprod, const float* W, float* conv,
                                          int NT, int Nfilt, int Nrank, int nt0, int t_end)
{
    __shared__ float sW[MP_NT0_MAX * MP_NRANK_MAX];
    __shared__ float sD[(MP_THREADS + MP_NT0_MAX) * MP_NRANK_MAX];
    const int f = blockIdx.y, tid = threadIdx.x;
    const int t0 = blockIdx.x * MP_THREADS, span = MP_THREADS + nt0;
    for (int j = tid; j < nt0 * Nrank; j += blockDim.x)
        sW[j] = W[j % nt0 + (i64)nt0 * (f + (i64)Nfilt * (j / nt0))];
    for (int j = tid; j < span * Nrank; j += blockDim.x) {
        const int t = t0 + j % span, k = j / span;
        sD[j] = t < NT ? dprod[t + (i64)NT * (f + (i64)Nfilt * k)] : 0.0f;
    }
    __syncthreads();
    const int t = t0 + tid;
    if (t >= t_end) return;
    float x = 0.0f;
    for (int k = 0; k < Nrank; k++)
        for (int i = 0; i < nt0; i++)
            x = madd(x, sW[i + nt0 * k], sD[tid + i + span * k]);
    conv[t + (i64)NT * f] = x;
}

// One thread per start time t in [t_begin, t_end).
extern "C" __global__ void mp_best_filter(const float* conv, const float* mu, float* err,
                                          int* ftype, int NT, int Nfilt, float lam,
                                          int t_begin, int t_end)
{
    const int t = t_begin + blockIdx.x * blockDim.x + threadIdx.x;
    if (t < t_end) score_sample(conv, mu, t, NT, Nfilt, lam, err, ftype);
}

// ------------------------------------------------------------------ one round
// One thread per candidate start time in [c_begin, c_end): a spike if err > th2 and no larger
// err within +-lockout samples (ties all kept). The counter keeps counting past the capacity so
// that the host sees the overflow; entries past it are not written.
extern "C" __global__ void mp_cleanup(const float* err, const int* ftype, const float* conv,
                                      int* st, int* id, float* amp, float* vexp, int* counter,
                                      int NT, int lockout, float th2, int c_begin, int c_end,
                                      int capacity)
{
    const int t = c_begin + blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= c_end) return;
    const float e = err[t];
    if (!(e > th2)) return;
    const int lo = max(t - lockout, 0), hi = min(t + lockout + 1, NT);
    for (int j = lo; j < hi; j++)
        if (err[j] > e) return;
    const int slot = atomicAdd(counter, 1);
    if (slot < capacity) {
        const int f = ftype[t];
        st[slot] = t;
        id[slot] = f;
        amp[slot] = conv[t + (i64)NT * f];
        vexp[slot] = sqrtf(e);
    }
}

// One thread per (new spike s in [n0, n1), neighbour j): the largest over lags -3..2 of
// (conv[st + lag, g] + lam / mu_g) / sqrt(lam / mu_g^2 + 1), floored at 0, g = iList[j, id].
extern "C" __global__ void mp_template_features(const float* conv, const float* mu,
                                                const int* iList, const int* st, const int* id,
                                                float* feat, int n0, int n1, int NT,
                                                int Nnearest, float lam)
{
    const i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (i64)(n1 - n0) * Nnearest) return;
    const int s = n0 + (int)(g / Nnearest), j = (int)(g % Nnearest);
    const int f = iList[j + (i64)Nnearest * id[s]];
    const float m = mu[f];
    const float shift = lam / m, scale = sqrtf(__fadd_rn(lam / __fmul_rn(m, m), 1.0f));
    float r = 0.0f;
    for (int lag = -3; lag < 3; lag++)
        r = fmaxf(r, __fadd_rn(conv[st[s] + lag + (i64)NT * f], shift) / scale);
    feat[j + (i64)Nnearest * s] = r;
}

// One block per new spike: resid[st + dt, c] -= amp * sum_k W[dt, f, k] U[c, f, k]. Spikes of
// one round are at least nt0 apart unless their scores tie, so the atomics rarely collide.
extern "C" __global__ void mp_subtract_f64(const int* st, const int* id, const float* amp,
                                           int n0, int n1, double* resid, const float* W,
                                           const float* U, int NT, int Nchan, int Nfilt,
                                           int Nrank, int nt0)
{
    const int s = n0 + blockIdx.x;
    if (s >= n1) return;
    const int f = id[s];
    const double y = (double)amp[s];
    for (int j = threadIdx.x; j < nt0 * Nchan; j += blockDim.x) {
        const int dt = j % nt0, c = j / nt0;
        double x = 0.0;
        for (int k = 0; k < Nrank; k++)
            x = madd(x, (double)W[dt + (i64)nt0 * (f + (i64)Nfilt * k)],
                     (double)U[c + (i64)Nchan * (f + (i64)Nfilt * k)]);
        add_double(&resid[st[s] + dt + (i64)NT * c], __dmul_rn(-y, x));
    }
}

extern "C" __global__ void mp_subtract_f32(const int* st, const int* id, const float* amp,
                                           int n0, int n1, float* resid, const float* W,
                                           const float* U, int NT, int Nchan, int Nfilt,
                                           int Nrank, int nt0)
{
    const int s = n0 + blockIdx.x;
    if (s >= n1) return;
    const int f = id[s];
    for (int j = threadIdx.x; j < nt0 * Nchan; j += blockDim.x) {
        const int dt = j % nt0, c = j / nt0;
        float x = 0.0f;
        for (int k = 0; k < Nrank; k++)
            x = madd(x, W[dt + (i64)nt0 * (f + (i64)Nfilt * k)],
                     U[c + (i64)Nchan * (f + (i64)Nfilt * k)]);
        atomicAdd(&resid[st[s] + dt + (i64)NT * c], __fmul_rn(-amp[s], x));
    }
}

// One block per template f, >= 2 nt0 - 1 threads: for each new spike whose template touches f
// (UtU[id, f]), recompute dprod[:, f, :] at t = st - nt0 + tid, tid < 2 nt0 - 1. Overlapping
// windows recompute the same values from the same data, so the order does not matter.
template <typename T>
__device__ void space_update(const T* resid, const float* U, const int* iC, const int* iW,
                             const unsigned char* UtU, float* dprod, const int* st,
                             const int* id, int n0, int n1, int NT, int Nchan, int Nnear,
                             int Nfilt, int Nrank, int nt0)
{
    __shared__ float sU[MP_NEAR_MAX * MP_NRANK_MAX];
    __shared__ int sChan[MP_NEAR_MAX];
    const int f = blockIdx.x, tid = threadIdx.x;
    load_spatial(U, iC, iW, f, Nchan, Nnear, Nfilt, Nrank, tid, blockDim.x, sU, sChan);
    if (tid >= 2 * nt0 - 1) return;
    for (int s = n0; s < n1; s++) {
        if (!UtU[id[s] + (i64)Nfilt * f]) continue;
        const int t = st[s] - nt0 + tid;
        if (t >= 0 && t < NT) project_sample(resid, sU, sChan, t, f, NT, Nnear, Nfilt, Nrank, dprod);
    }
}

extern "C" __global__ void mp_space_update_f32(const float* resid, const float* U, const int* iC,
                                               const int* iW, const unsigned char* UtU,
                                               float* dprod, const int* st, const int* id,
                                               int n0, int n1, int NT, int Nchan, int Nnear,
                                               int Nfilt, int Nrank, int nt0)
{
    space_update(resid, U, iC, iW, UtU, dprod, st, id, n0, n1, NT, Nchan, Nnear, Nfilt, Nrank, nt0);
}

extern "C" __global__ void mp_space_update_f64(const double* resid, const float* U, const int* iC,
                                               const int* iW, const unsigned char* UtU,
                                               float* dprod, const int* st, const int* id,
                                               int n0, int n1, int NT, int Nchan, int Nnear,
                                               int Nfilt, int Nrank, int nt0)
{
    space_update(resid, U, iC, iW, UtU, dprod, st, id, n0, n1, NT, Nchan, Nnear, Nfilt, Nrank, nt0);
}

// One block per template f: conv[t, f] again at t = st - nt0 + tid for touching spikes,
// 0 <= t < NT - nt0.
extern "C" __global__ void mp_time_update(const float* dprod, const float* W,
                                          const unsigned char* UtU, float* conv, const int* st,
                                          const int* id, int n0, int n1, int NT, int Nfilt,
                                          int Nrank, int nt0)
{
    __shared__ float sW[MP_NT0_MAX * MP_NRANK_MAX];
    const int f = blockIdx.x, tid = threadIdx.x;
    for (int j = tid; j < nt0 * Nrank; j += blockDim.x)
        sW[j] = W[j % nt0 + (i64)nt0 * (f + (i64)Nfilt * (j / nt0))];
    __syncthreads();
    if (tid >= 2 * nt0 - 1) return;
    for (int s = n0; s < n1; s++) {
        if (!UtU[id[s] + (i64)Nfilt * f]) continue;
        const int t = st[s] - nt0 + tid;
        if (t < 0 || t >= NT - nt0) continue;
        float x = 0.0f;
        for (int k = 0; k < Nrank; k++)
            for (int i = 0; i < nt0; i++)
                x = madd(x, sW[i + nt0 * k], dprod[t + i + (i64)NT * (f + (i64)Nfilt * k)]);
        conv[t + (i64)NT * f] = x;
    }
}

// One block per new spike: scores again at t = st - nt0 + tid, t_lo <= t < NT.
extern "C" __global__ void mp_best_update(const float* conv, const float* mu, float* err,
                                          int* ftype, const int* st, int n0, int n1, int NT,
                                          int Nfilt, float lam, int nt0, int t_lo)
{
    const int s = n0 + blockIdx.x, tid = threadIdx.x;
    if (s >= n1 || tid >= 2 * nt0 - 1) return;
    const int t = st[s] - nt0 + tid;
    if (t >= t_lo && t < NT) score_sample(conv, mu, t, NT, Nfilt, lam, err, ftype);
}

// ------------------------------------------------------------------ after the rounds
// Stable mode's residual back to single precision, rounded toward zero.
extern "C" __global__ void mp_to_single_rz(const double* src, float* dst, i64 n)
{
    for (i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (i64)gridDim.x * blockDim.x)
        dst[j] = __double2float_rz(src[j]);
}

// One block per template f, threads (Nnear, Nrank) = (channel slot i, PC p). order[seg[f] ..
// seg[f + 1]) lists f's spikes. featPC[i, p, s] = Y * amp + sum_t resid[st + t, ch_i] wPCA[t, p]
// with Y = sum_k (sum_t W[t, f, k] wPCA[t, p]) U[ch_i, f, k].
extern "C" __global__ void mp_pc_features(const float* resid, const float* W, const float* U,
                                          const int* iC, const int* iW, const float* wPCA,
                                          const int* st, const float* amp, const int* order,
                                          const int* seg, float* featPC, int NT, int Nchan,
                                          int Nnear, int Nfilt, int Nrank, int nt0)
{
    __shared__ float sU[MP_NEAR_MAX * MP_NRANK_MAX];
    __shared__ int sChan[MP_NEAR_MAX];
    __shared__ float sW[MP_NT0_MAX * MP_NRANK_MAX], sPCA[MP_NT0_MAX * MP_NRANK_MAX];
    const int f = blockIdx.x, i = threadIdx.x, p = threadIdx.y;
    const int tid = i + Nnear * p, nthreads = Nnear * Nrank;
    for (int j = tid; j < nt0 * Nrank; j += nthreads) {
        sW[j] = W[j % nt0 + (i64)nt0 * (f + (i64)Nfilt * (j / nt0))];
        sPCA[j] = wPCA[j];
    }
    load_spatial(U, iC, iW, f, Nchan, Nnear, Nfilt, Nrank, tid, nthreads, sU, sChan);
    float y = 0.0f;
    for (int k = 0; k < Nrank; k++) {
        float x = 0.0f;
        for (int t = 0; t < nt0; t++) x = madd(x, sW[t + nt0 * k], sPCA[t + nt0 * p]);
        y = madd(y, x, sU[i + Nnear * k]);
    }
    const float* row = resid + (i64)NT * sChan[i];
    for (int q = seg[f]; q < seg[f + 1]; q++) {
        const int s = order[q];
        float x = __fmul_rn(y, amp[s]);
        for (int t = 0; t < nt0; t++) x = madd(x, row[st[s] + t], sPCA[t + nt0 * p]);
        featPC[i + (i64)Nnear * (p + (i64)Nrank * s)] = x;
    }
}

// One block per template f: over its spikes in output order with vexp > th, nsp[f] counts them
// and dWU[dt, c, f] sums resid[st + dt, c] + amp * template[dt, c] in double (the template a
// double sum of the float products W U). Each thread owns its (dt, c) entries: deterministic.
extern "C" __global__ void mp_average_snips(const float* resid, const float* W, const float* U,
                                            const int* st, const float* amp, const float* vexp,
                                            const int* order, const int* seg, float th,
                                            double* dWU, int* nsp, int NT, int Nchan, int Nfilt,
                                            int Nrank, int nt0)
{
    const int f = blockIdx.x;
    if (threadIdx.x == 0) {
        int count = 0;
        for (int q = seg[f]; q < seg[f + 1]; q++) count += vexp[order[q]] > th;
        nsp[f] = count;
    }
    for (int j = threadIdx.x; j < nt0 * Nchan; j += blockDim.x) {
        const int dt = j % nt0, c = j / nt0;
        double x = 0.0;
        for (int k = 0; k < Nrank; k++)
            x = __dadd_rn(x, (double)__fmul_rn(W[dt + (i64)nt0 * (f + (i64)Nfilt * k)],
                                               U[c + (i64)Nchan * (f + (i64)Nfilt * k)]));
        double sum = 0.0;
        for (int q = seg[f]; q < seg[f + 1]; q++) {
            const int s = order[q];
            if (vexp[s] > th)
                sum = __dadd_rn(sum, madd((double)resid[st[s] + dt + (i64)NT * c], (double)amp[s], x));
        }
        dWU[j + (i64)nt0 * Nchan * f] = sum;
    }
}
