// svdsmall.cu: rank-k spatiotemporal decomposition of every template (mexSVDsmall2 of Kilosort2).
//
// Double precision throughout, like the original. All arrays are Fortran-ordered (MATLAB layout):
//   dWU (nt0, nchan, nfilt)   running-average templates
//   W   (nt0, nfilt, nrank)   temporal components: warm start on input, result on output (in place)
//   U   (nchan, nfilt, nrank) spatial components (output; zero-filled by the host beforehand)
//   mu  (nfilt)               template norms (output)
//   wtw (nt0, nt0, nfilt)     scratch: temporal Gram matrix of each template
//   nbr (nnear, ncol) int32   column c: the channels of neighbourhood c in ascending order, each
//                             once; repeats are -1 and skipped. Template f uses column iW[f].
//   Ka  (nup, nt0), Kb (nt0, nt0, nup): kriging kernels (upsampling.get_kernels).
// One block per template. A template is zero outside its neighbourhood (the original copies the
// neighbourhood channels into a zeroed array); sums over channels skip the zeros, which is exact
// because adding +0.0 to a sum that starts at +0.0 changes nothing.
//
// Products and sums use __dmul_rn/__dadd_rn so that nvcc cannot fuse them into FMAs: every sum is
// then the same sequence of roundings as the numba twin (pykilosort/kernels/svdsmall.py).

__device__ __forceinline__ double mul(const double a, const double b) { return __dmul_rn(a, b); }

// x + a * b with the product rounded first
__device__ __forceinline__ double madd(const double x, const double a, const double b)
{
    return __dadd_rn(x, __dmul_rn(a, b));
}

// wtw[i, j, f] = sum over the neighbourhood channels (ascending) of dWU[i, c, f] * dWU[j, c, f]
extern "C" __global__ void svd_wtw(const double* __restrict__ dWU, const int* __restrict__ nbr,
                                   const int* __restrict__ iW, double* __restrict__ wtw,
                                   const int nt0, const int nchan, const int nnear)
{
    const long long f = blockIdx.x;
    const double* d = dWU + f * nt0 * (long long)nchan;
    const int* chans = nbr + (long long)iW[f] * nnear;
    for (int e = threadIdx.x; e < nt0 * nt0; e += blockDim.x) {
        const int i = e % nt0, j = e / nt0;
        double x = 0.0;
        for (int n = 0; n < nnear; n++) {
            const int c = chans[n];
            if (c >= 0) x = madd(x, d[i + (long long)c * nt0], d[j + (long long)c * nt0]);
        }
        wtw[e + f * nt0 * nt0] = x;
    }
}

// Power iterations on wtw, one component after the other with deflation; thread t owns row t of
// wtw (it alone reads and writes it), the current vector v is shared. Then the first component is
// made negative at sample peak. Dynamic shared memory: nt0 * nrank + 1 doubles.
extern "C" __global__ void svd_power(double* __restrict__ wtw, double* __restrict__ W,
                                     const int nt0, const int nfilt, const int nrank,
                                     const int n_iter, const int peak)
{
    extern __shared__ double sh[];
    double* v = sh;                // (nt0, nrank)
    double* norm = sh + nt0 * nrank;
    const long long f = blockIdx.x;
    const int t0 = threadIdx.x;
    const bool active = t0 < nt0;
    double* row = wtw + f * nt0 * nt0 + t0;  // element (t0, t) is row[t * nt0]
    const long long wstride = (long long)nt0 * nfilt;

    for (int k = 0; k < nrank && active; k++) v[t0 + k * nt0] = W[t0 + f * nt0 + k * wstride];
    __syncthreads();

    for (int k = 0; k < nrank; k++) {
        double* vk = v + k * nt0;
        double x = 0.0;
        for (int i = 0; i < n_iter; i++) {
            x = 0.0;
            if (active)
                for (int t = 0; t < nt0; t++) x = madd(x, row[t * nt0], vk[t]);
            __syncthreads();
            if (i == n_iter - 1) break;  // the last product is kept unnormalised, for deflation
            if (active) vk[t0] = x;
            __syncthreads();
            if (t0 == 0) {
                double s = (double)1e-5f;  // the original's single-precision literal
                for (int t = 0; t < nt0; t++) s = madd(s, vk[t], vk[t]);
                norm[0] = sqrt(s);
            }
            __syncthreads();
            if (active) vk[t0] = x / norm[0];
            __syncthreads();
        }
        if (active)  // remove this component: wtw[t0, t] -= v[t] * (wtw v)[t0]
            for (int t = 0; t < nt0; t++) row[t * nt0] = __dsub_rn(row[t * nt0], mul(vk[t], x));
        __syncthreads();
    }

    const double sgn = copysign(1.0, v[peak]);
    __syncthreads();
    if (active) v[t0] = -v[t0] * sgn;
    __syncthreads();
    for (int k = 0; k < nrank && active; k++) W[t0 + f * nt0 + k * wstride] = v[t0 + k * nt0];
}

// U[c, f, k] = sum_t W[t, f, k] * dWU[t, c, f] on the neighbourhood. Elsewhere the original
// multiplies W by zeros: +0.0, or NaN when W[:, f, k] holds a NaN or an infinity.
extern "C" __global__ void svd_spatial(const double* __restrict__ dWU, const double* __restrict__ W,
                                       const int* __restrict__ nbr, const int* __restrict__ iW,
                                       double* __restrict__ U, const int nt0, const int nchan,
                                       const int nfilt, const int nrank, const int nnear)
{
    const long long f = blockIdx.x;
    const long long wstride = (long long)nt0 * nfilt, ustride = (long long)nchan * nfilt;
    const double* d = dWU + f * nt0 * (long long)nchan;
    const int* chans = nbr + (long long)iW[f] * nnear;

    for (int e = threadIdx.x; e < nchan * nrank; e += blockDim.x) {
        const int c = e % nchan, k = e / nchan;
        const double* w = W + f * nt0 + k * wstride;
        bool finite = true;
        for (int t = 0; t < nt0; t++) finite = finite && isfinite(w[t]);
        U[c + f * nchan + k * ustride] = finite ? 0.0 : __longlong_as_double(0x7ff8000000000000LL);
    }
    __syncthreads();  // the neighbourhood values below overwrite the fill
    for (int e = threadIdx.x; e < nnear * nrank; e += blockDim.x) {
        const int n = e % nnear, k = e / nnear, c = chans[n];
        if (c < 0) continue;
        const double* w = W + f * nt0 + k * wstride;
        double x = 0.0;
        for (int t = 0; t < nt0; t++) x = madd(x, w[t], d[t + (long long)c * nt0]);
        U[c + f * nchan + k * ustride] = x;
    }
}

// Normalise U by mu = sqrt(1e-7 + sum of its squared column norms); shift W circularly so that the
// largest |W[:, f, 0]| sits at sample peak; upsample 10x with Ka to find the sub-sample extremum,
// interpolate every component to it with Kb, and make the first component negative there.
// Dynamic shared memory: nt0 * nrank + nup + nrank + 1 doubles.
extern "C" __global__ void svd_normalise_align(const double* __restrict__ Ka,
                                               const double* __restrict__ Kb,
                                               double* __restrict__ W, double* __restrict__ U,
                                               double* __restrict__ mu, const int nt0,
                                               const int nchan, const int nfilt, const int nrank,
                                               const int nup, const int peak)
{
    extern __shared__ double sh[];
    double* ws = sh;                    // (nt0, nrank) shifted components
    double* up = ws + nt0 * nrank;      // (nup) upsampled first component
    double* s = up + nup;               // (nrank + 1) column norms, then mu
    __shared__ int ishift, iup;
    __shared__ double sgn;
    const long long f = blockIdx.x;
    const int tid = threadIdx.x;
    const long long wstride = (long long)nt0 * nfilt, ustride = (long long)nchan * nfilt;

    if (tid < nrank) {
        double x = 0.0;
        for (int c = 0; c < nchan; c++) {
            const double u = U[c + f * nchan + tid * ustride];
            x = madd(x, u, u);
        }
        s[tid] = sqrt(x);
    }
    __syncthreads();  // the original has none here and relies on warp lockstep
    if (tid == 0) {
        double x = (double)1e-7f;
        for (int k = 0; k < nrank; k++) x = madd(x, s[k], s[k]);
        s[nrank] = sqrt(x);
        mu[f] = s[nrank];
        double xmax = 0.0;
        int imax = 0;
        for (int t = 0; t < nt0; t++)  // first strict maximum; NaNs are never chosen
            if (fabs(W[t + f * nt0]) > xmax) { xmax = fabs(W[t + f * nt0]); imax = t; }
        ishift = imax - peak;
    }
    __syncthreads();
    for (int e = tid; e < nchan * nrank; e += blockDim.x) {
        const long long a = (e % nchan) + f * nchan + (e / nchan) * ustride;
        U[a] = U[a] / s[nrank];
    }
    if (tid < nt0)
        for (int k = 0; k < nrank; k++)
            ws[tid + k * nt0] = W[((tid + ishift) % nt0 + nt0) % nt0 + f * nt0 + k * wstride];
    __syncthreads();
    if (tid < nup) {
        double x = 0.0;
        for (int t = 0; t < nt0; t++) x = madd(x, Ka[tid + t * nup], ws[t]);
        up[tid] = x;
    }
    __syncthreads();
    if (tid == 0) {
        double xmax = 0.0, sg = 1.0;
        int imax = 0;
        for (int a = 0; a < nup; a++)
            if (fabs(up[a]) > xmax) { xmax = fabs(up[a]); imax = a; sg = copysign(1.0, up[a]); }
        iup = imax;
        sgn = sg;
    }
    __syncthreads();
    if (tid < nt0) {
        const double* kb = Kb + (long long)iup * nt0 * nt0 + tid;  // Kb[tid, t, iup] = kb[t * nt0]
        for (int k = 0; k < nrank; k++) {
            double x = 0.0;
            for (int t = 0; t < nt0; t++) x = madd(x, kb[t * nt0], ws[t + k * nt0]);
            if (k == 0) x = -x * sgn;
            W[tid + f * nt0 + k * wstride] = x;
        }
    }
}
