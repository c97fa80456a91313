"""Slow, literal reference for spikedetector3 (Kilosort 2.5's CUDA/spikedetector3.cu), small data.

Each __global__ of the original becomes a Python loop over its blocks, with the launch geometry of
its host code (Conv1D<<<Nchan, 1024>>>, sumChannels<<<(NT/1024, NchanUp), 1024>>>,
max1D<<<NchanUp, 1024>>>, maxChannels<<<(NT/1024, NchanUp), 1024>>>) and its loop bounds; the
threads of a block are numpy lanes (elementwise float32 numpy arithmetic rounds every product and
sum separately, as the port does; nvcc would fuse y += w*x into an FMA). One stand-in: CUDA's expf
(within 2 ulp) is modelled by the correctly rounded exp of the float32 argument.

Arrays are indexed [t, channel, rank] instead of the original's column-major offsets. Spikes are
returned in the order of this emulation's atomicAdd calls; the counter is the original's.
"""
import numpy as np

NTHREADS = 1024  # the original's Nthreads
MAXFR = 10000    # the original's maxFR
NSIZES = 5       # the original's nsizes
f32, f64 = np.float32, np.float64


def conv1d(data, W):
    """Conv1D: per channel (block), 1024-sample tiles while a tile plus nt0 samples fits."""
    NT, nchan = data.shape
    nt0, nrank = W.shape
    dfilt = np.zeros((NT, nchan, nrank), f32)  # cudaMemset 0
    tid = np.arange(NTHREADS)
    for bid in range(nchan):
        tid0 = 0
        while tid0 < NT - NTHREADS - nt0 + 1:
            sdata = data[tid0:tid0 + NTHREADS + nt0, bid]  # the tile and its nt0 extra samples
            for nid in range(nrank):
                y = np.zeros(NTHREADS, f32)
                for i in range(nt0):
                    y = y + W[i, nid] * sdata[i + tid]
                dfilt[tid0 + tid, bid, nid] = y
            tid0 += NTHREADS
    return dfilt


def footprints(dist_col, sig):
    """sumChannels' shared sA of one block: sA[k + nsizes*j] for thread tid = k + nsizes*j."""
    sigma = f32(sig)
    sA = np.zeros(NSIZES * dist_col.size, f32)
    for tid in range(NSIZES * dist_col.size):
        d2 = f32(dist_col[tid // NSIZES])
        k = tid % NSIZES
        # - (d2 * d2) / ((1+k)*(1+k)*sigma*sigma): an int times float, then float products
        denom = f32(f32(f32((1 + k) * (1 + k)) * sigma) * sigma)
        sA[tid] = f32(np.exp(f64(f32(-(d2 * d2) / denom))))
    return sA


def sum_channels(dfilt, iC, dist, v2, sig):
    """sumChannels with d_iC and d_dist as its iC2 / dist: (datasum, kkmax), grid-stride over t."""
    NT, nchan, nrank = dfilt.shape
    nnear, nup = iC.shape
    datasum = np.zeros((NT, nup), f32)   # MX_GPU_INITIALIZE_VALUES
    kkmax = np.zeros((NT, nup), np.int32)
    nblocks = NT // NTHREADS
    for bidx in range(nblocks):
        for bidy in range(nup):
            sA = footprints(dist[:, bidy], sig)
            tid0 = bidx * NTHREADS + np.arange(NTHREADS)
            while True:
                t_ = tid0[tid0 < NT]
                if t_.size == 0:
                    break
                cmax = np.zeros(t_.size, f32)
                kmax = np.zeros(t_.size, np.int32)
                for t in range(nrank):
                    a = np.zeros((NSIZES, t_.size), f32)
                    for j in range(nnear):  # Nsum = NchanNear
                        ichan = iC[j, bidy]
                        for k in range(NSIZES):
                            a[k] = a[k] + sA[k + NSIZES * j] * dfilt[t_, ichan, t]
                    for k in range(NSIZES):
                        a[k] = np.fmax(a[k], f32(0))
                        score = a[k] * a[k] / v2[k, bidy]
                        better = score > cmax
                        cmax = np.where(better, score, cmax)
                        kmax = np.where(better, t + k * nrank, kmax)
                datasum[t_, bidy] = cmax
                kkmax[t_, bidy] = kmax
                tid0 = tid0 + NTHREADS * nblocks
    return datasum, kkmax


def max1d(dout, nt0, nt0min, spk_th):
    """max1D: per centre (block), the same tiles as Conv1D; dmax[tid0 + nt0min + tid]."""
    NT, nup = dout.shape
    spkth = f32(spk_th)
    dmax = np.zeros((NT, nup), f32)  # cudaMemset 0
    tid = np.arange(NTHREADS)
    for bid in range(nup):
        tid0 = 0
        while tid0 < NT - NTHREADS - nt0 + 1:
            sdata = dout[tid0:tid0 + NTHREADS + nt0, bid]
            y = np.zeros(NTHREADS, f32)
            for i in range(2 * nt0min):
                y = np.fmax(y, sdata[tid + i])
            hit = y > spkth * spkth
            dmax[tid0 + nt0min + tid[hit], bid] = y[hit]
            tid0 += NTHREADS
    return dmax


def max_channels(dout, dmax, iC, iC2, dist2, kkmax, dfilt, nt0, nt0min, spk_th):
    """maxChannels: (st (4, n) int32, cF (NchanNear, n) float32, counter) in atomic order."""
    NT, nup = dout.shape
    nrank = dfilt.shape[2]
    nnear, nnearup = iC.shape[0], iC2.shape[0]
    spkth = f32(spk_th)
    st, cF, counter = [], [], 0
    nblocks = NT // NTHREADS
    for bid in range(nblocks):
        for bidy in range(nup):
            i = bidy
            tid0 = bid * NTHREADS + np.arange(NTHREADS)
            while True:
                t_ = tid0[tid0 < NT - nt0 - nt0min]
                if t_.size == 0:
                    break
                Cf = dmax[t_, i].astype(f64)
                flag = np.ones(t_.size, bool)
                for j in range(1, nnearup):  # a lane that broke out stays False
                    if dist2[j, i] < 100.:
                        flag &= ~(dmax[t_, iC2[j, i]].astype(f64) > Cf)
                hit = flag & (Cf > f64(spkth * spkth))
                d = dout[t_, i].astype(f64)
                hit &= d > Cf - 1e-6
                for lane in np.flatnonzero(hit):
                    if counter < MAXFR:
                        tt = t_[lane]
                        kk = kkmax[tt, i]
                        st.append((tt, i, int(np.sqrt(d[lane])), kk))  # C truncation
                        cF.append([dfilt[tt, iC[j, i], kk % nrank] for j in range(nnear)])
                    counter += 1
                tid0 = tid0 + NTHREADS * nblocks
    st = np.array(st, np.int32).reshape(-1, 4).T
    cF = np.array(cF, f32).reshape(-1, nnear).T
    return st, cF, counter


def spikedetector3(data, W, iC, dist, v2, iC2, dist2, *, nt0min, spk_th, sig):
    """The whole mex: dict of dout, kkmax, st (4, n), cF (NchanNear, n), counter."""
    data, W = np.asarray(data, f32), np.asarray(W, f32)
    dist, v2, dist2 = np.asarray(dist, f32), np.asarray(v2, f32), np.asarray(dist2, f32)
    nt0 = W.shape[0]
    dfilt = conv1d(data, W)
    dout, kkmax = sum_channels(dfilt, iC, dist, v2, sig)
    dmax = max1d(dout, nt0, nt0min, spk_th)
    st, cF, counter = max_channels(dout, dmax, iC, iC2, dist2, kkmax, dfilt, nt0, nt0min, spk_th)
    return dict(dout=dout, kkmax=kkmax, st=st, cF=cF, counter=counter, dfilt=dfilt, dmax=dmax)
